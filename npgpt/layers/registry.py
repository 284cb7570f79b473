"""Every layer pair, once: the list the exports, the oracle's coverage check and the seeded-error check read.

A Pair names its module (npgpt/layers/<name>.py, or a family's block), its forward and backward, the
backward's gradients in return order and the forward's outputs before its cache.  A forward-only layer (a
faster form held equal to another pair's forward, e.g. mla_absorbed) has backward "", no gradients, and may
share that pair's derivation page.  Adding a pair: its file, its page docs/derivations/<name>.md (or `doc`),
its test tests/test_<name>.py, its export in layers/__init__.py, and one line here (a family's composite block
goes in its own package's PAIRS).  Guide: docs/architecture.md
"""

from __future__ import annotations

from typing import NamedTuple


class Pair(NamedTuple):
    """One forward/backward pair, as tests/seeded_errors.py and the registry checks see it."""

    name: str  # the file's name: npgpt/layers/<name>.py, docs/derivations/<name>.md, tests/test_<name>.py
    forward: str  # the forward's function name
    backward: str  # the backward's function name; "" for a forward-only layer (no gradients)
    grads: tuple[str, ...]  # the backward's gradients, in return order
    outputs: tuple[str, ...] = ("out",)  # the forward's outputs before its cache
    module: str = ""  # the module's full name; "" means npgpt.layers.<name>
    doc: str = ""  # its derivation page, a path under docs/; "" means derivations/<name>.md

    @property
    def module_name(self) -> str:
        return self.module or f"npgpt.layers.{self.name}"

    @property
    def doc_path(self) -> str:
        """The derivation page's path under docs/."""
        return self.doc or f"derivations/{self.name}.md"


def _pair(name: str, grads: tuple[str, ...], outputs: tuple[str, ...] = ("out",)) -> Pair:
    return Pair(name, f"{name}_forward", f"{name}_backward", grads, outputs)


def _forward_only(name: str, doc: str, outputs: tuple[str, ...] = ("out",)) -> Pair:
    return Pair(name, f"{name}_forward", "", (), outputs, doc=doc)


# mla's parameters, in the order of mla.MLA_PARAM_NAMES (test_registry checks the two agree): mla_backward
# returns (dx, {name: gradient or None}), None where the config lacks the parameter
_MLA_PARAMS = tuple("self_attn." + n for n in (
    "q_proj.weight", "q_a_proj.weight", "q_a_proj.bias", "q_a_layernorm.weight", "q_b_proj.weight",
    "kv_a_proj_with_mqa.weight", "kv_a_proj_with_mqa.bias", "kv_a_layernorm.weight", "kv_b_proj.weight",
    "o_proj.weight", "o_proj.bias"))


# moe's backward returns (dx, {name: gradient}), the names and their number depending on the MoESpec (E experts
# each with its own tensors, or gpt-oss's four stacked ones; a shared expert or not).  The seeded-error plugin
# flattens that dict in moe_param_shapes' order, so only positions every spec has are named here: dx, the router
# weight, then the next five parameters (gpt-oss: router bias and its four stacked expert tensors; the others:
# expert 0's three tensors and expert 1's first two).  tests/moe_cases.py's smallest spec (gpt_oss) has 6.
_MOE_GRADS = ("dx", "d[router.weight]", *(f"d[param {i}]" for i in range(2, 7)))


PAIRS: tuple[Pair, ...] = (
    _pair("embedding", ("dw",)),
    _pair("linear", ("dx", "dw", "db")),
    _pair("layernorm", ("dx", "dw", "db")),
    _pair("gelu", ("dx",)),
    _pair("softmax", ("dx",)),
    _pair("attention", ("dq", "dk", "dv")),
    _pair("attention_chunks", ("dq", "dk", "dv")),
    _pair("split_heads", ("dx",)),
    _pair("merge_heads", ("dx",)),
    _pair("dropout", ("dx",)),
    _pair("cross_entropy", ("dlogits",)),
    _pair("mlp", ("dx", "dw_fc", "db_fc", "dw_proj", "db_proj")),
    _pair("self_attention", ("dx", "dw_attn", "db_attn", "dw_proj", "db_proj")),
    _pair("rmsnorm", ("dx", "dw")),
    _pair("rope", ("dx",)),
    _pair("swiglu", ("dgate", "dup")),
    _pair("gated_mlp", ("dx", "dw_gate", "dw_up", "dw_down")),
    _pair("repeat_kv", ("dx",)),
    _pair("sdpa", ("dq", "dk", "dv", "dsinks", "dbias"), ("out", "lse")),
    _pair("sdpa_tiled", ("dq", "dk", "dv", "dsinks", "dbias"), ("out", "lse")),
    _pair("merge_attention", ("dout1", "dlse1", "dout2", "dlse2"), ("out", "lse")),
    _pair("sdpa_qkv", ("dqkv", "dsinks", "dbias"), ("out", "lse")),
    _pair("mla", ("dx", *(f"d[{n}]" for n in _MLA_PARAMS))),
    _forward_only("mla_absorbed", doc="derivations/mla.md"),  # derived in mla.md, "The absorbed form"
    _pair("softcap", ("dx",)),
    # routers: (weights, indices, cache); the integer indices are a choice, not an output an error can nudge
    _pair("router_softmax_topk", ("dlogits",), ("weights",)),
    _pair("router_topk_softmax", ("dlogits",), ("weights",)),
    _pair("router_deepseek", ("dlogits",), ("weights",)),
    _pair("moe", _MOE_GRADS, ("out", "router_logits")),
    Pair("moe_grouped", "moe_grouped_forward", "moe_grouped_backward", _MOE_GRADS, ("out", "router_logits"),
         doc="derivations/moe.md"),  # derived in moe.md, "The grouped version"
    _pair("load_balancing_loss", ("drouter_logits",), ("loss",)),
    _pair("router_z_loss", ("drouter_logits",), ("loss",)),
)
