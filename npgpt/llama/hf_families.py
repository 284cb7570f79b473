"""Hugging Face families as adapters of the one configurable decoder: a config mapping, a weight-name map and
the load-time splits of fused tensors, one HFFamily record per family.

`FAMILIES["qwen3"].config_from_hf(d, where)` -> LlamaConfig, refusing with one line (naming the file and the
field) every field npgpt does not implement; `config_to_hf(config, dtype)` -> the config.json transformers reads
back as the same config; `weights_from_hf(get, names, config)` -> {canonical name: array};
`weights_to_hf(params, config)` -> {HF name: array}.  `family_for(d, where)` picks the record by model_type.
The road from GPT-2 to these families, field by field: docs/families.md
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import HIDDEN_ACTS, LlamaConfig, block_style
from .core import param_shapes

Array = npt.NDArray[np.floating]
FusedSpec = list[tuple[str, tuple[str, ...], str]]  # (HF in-layer name, canonical in-layer names, Rule kind)

# Keys every family reads and ignores: bookkeeping that does not change the math.  Dropout probabilities are
# here too: HF evaluates without dropout and npgpt's decoder trains without it (docs/families.md says so).
IGNORED = frozenset({
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "initializer_range", "_name_or_path",
    "name_or_path", "id2label", "label2id", "problem_type", "output_hidden_states", "output_attentions",
    "return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "tokenizer_class",
    "classifier_dropout", "attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "auto_map",
    "attention_probs_dropout_prob", "hidden_dropout_prob",
    "add_cross_attention", "tie_encoder_decoder", "prefix", "task_specific_params", "finetuning_task",
    "cross_attention_hidden_size", "pruned_heads", "torchscript", "use_return_dict", "tf_legacy_loss",
    "use_bfloat16", "bad_words_ids", "begin_suppress_tokens", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "_attn_implementation_autoset", "_commit_hash", "pretraining_tp", "gradient_checkpointing",
})
# special token ids: save_pretrained writes a loaded checkpoint's back, and null for a model made here (the
# families' own defaults are token ids of vocabularies a small model may not have)
TOKEN_IDS_NONE: dict[str, Any] = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
# tensors some checkpoints store that are buffers, not parameters (their suffixes)
BUFFER_SUFFIXES = (".rotary_emb.inv_freq", ".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")


class _Fields:
    """A config.json dict being read: every key taken is remembered; finish() refuses the ones left over."""

    def __init__(self, d: Mapping[str, Any], where: str, family: str, defaults: Mapping[str, Any]) -> None:
        self.d, self.where, self.family, self.defaults = dict(d), where, family, defaults
        self.used: set[str] = set()
        self.rope_field = "rope_parameters"  # where this config keeps its rope settings (for error messages)

    def bad(self, msg: str) -> ValueError:
        return ValueError(f"{self.where}: {msg}")

    def has(self, key: str) -> bool:
        return self.d.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The value (null counts as absent), else the family's default for it, else `default`."""
        self.used.add(key)
        value = self.d.get(key)
        if value is None:
            return self.defaults.get(key, default)
        return value

    def nullable(self, key: str, default: Any = None) -> Any:
        """The value, where an explicit null means None (a softcap or window switched off); absent: default."""
        self.used.add(key)
        return self.d[key] if key in self.d else default

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.bad(f"{key}: expected true or false, got {value!r}")
        return value

    def refuse_if(self, key: str, supported: Callable[[Any], bool], why: str, default: Any = None) -> Any:
        """Read `key`; a value npgpt does not implement is a one-line refusal naming the field."""
        value = self.get(key, default)
        if not supported(value):
            raise self.bad(f"{key} {value!r} is not supported by npgpt ({why})")
        return value

    def finish(self, ignored: Iterable[str] = ()) -> None:
        extra = sorted(set(self.d) - self.used - IGNORED - set(ignored))
        if extra:
            raise self.bad(f"{extra[0]}: a {self.family} config field npgpt does not implement"
                           + (f" (also {', '.join(extra[1:4])}{', ...' if len(extra) > 4 else ''})"
                              if len(extra) > 1 else ""))


def _show(value: Any) -> str:
    """A config value as config.json spells it (for messages)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ------------------------------------------------------------------------------------------- shared readers

def _rope(f: _Fields, layer_type: str | None = None, theta_default: float | None = None
          ) -> tuple[float, dict[str, Any] | None, float]:
    """(theta, rope_scaling or None, partial_rotary_factor) from rope_parameters (transformers >= 5; with
    layer_type, its entry for that kind of layer) or the older rope_theta + rope_scaling (+ partial_rotary_factor,
    GPT-NeoX's rotary_pct / rotary_emb_base) spelling; both given must agree."""
    legacy_keys = ("rope_theta", "rope_scaling", "partial_rotary_factor", "rotary_pct", "rotary_emb_base")
    f.used.update(legacy_keys)
    legacy = {k: f.d[k] for k in legacy_keys if f.d.get(k) is not None}
    theta0 = legacy.get("rope_theta", legacy.get("rotary_emb_base", f.defaults.get("rope_theta", 10000.0)))
    partial0 = legacy.get("partial_rotary_factor", legacy.get("rotary_pct"))
    field_name = "rope_parameters"
    rope = f.get("rope_parameters")
    if rope is None:  # transformers < 5
        field_name = f.rope_field = "rope_scaling"
        scaling = legacy.get("rope_scaling") or {}
        if not isinstance(scaling, Mapping):
            raise f.bad(f"rope_scaling: expected a JSON object, got {_show(scaling)}")
        rope = {"rope_theta": theta0, **scaling}
        if partial0 is not None:
            rope["partial_rotary_factor"] = partial0
    elif not isinstance(rope, Mapping):
        raise f.bad(f"rope_parameters: expected a JSON object, got {_show(rope)}")
    elif layer_type is None and ("full_attention" in rope or "sliding_attention" in rope):
        return float(theta0), None, 1.0  # per layer type (Gemma 3): its reader asks for each type
    elif layer_type is not None:
        field_name = f"rope_parameters.{layer_type}"
        rope = rope.get(layer_type) or {}
        if not isinstance(rope, Mapping):
            raise f.bad(f"{field_name}: expected a JSON object, got {_show(rope)}")
    else:
        for key, value in legacy.items():  # transformers 5 folds these into rope_parameters: they must agree
            inner = {"rotary_pct": "partial_rotary_factor", "rotary_emb_base": "rope_theta"}.get(key, key)
            same = all(rope.get(k) == v for k, v in value.items()) if isinstance(value, Mapping) \
                else rope.get(inner, value if inner != "rope_theta" else None) == value
            if not same:
                raise f.bad(f"{key}={_show(value)} contradicts rope_parameters={_show(rope)}")
    rope = dict(rope)
    theta = rope.pop("rope_theta", theta0 if theta_default is None else theta_default)
    partial = rope.pop("partial_rotary_factor", partial0 if partial0 is not None
                       else f.defaults.get("partial_rotary_factor", 1.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    for key, value in (("rope_theta", theta), ("partial_rotary_factor", partial)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise f.bad(f"{field_name}.{key}: expected a number, got {_show(value)}")
    top = f.get("original_max_position_embeddings")  # Phi-3 keeps the pretraining length outside the rope dict
    if kind in ("llama3", "yarn", "longrope") and top is not None:
        rope["original_max_position_embeddings"] = top  # and transformers lets it win over the dict's
    plain = kind == "default" and set(rope) <= {"rope_type", "type"}
    return float(theta), (None if plain else rope), float(partial)


def _heads(f: _Fields) -> dict[str, Any]:
    """The shape fields every family shares (HF names -> LlamaConfig's)."""
    n_head = f.get("num_attention_heads")
    C = f.get("hidden_size")
    head_dim = f.get("head_dim")
    if isinstance(head_dim, int) and isinstance(n_head, int) and n_head and head_dim * n_head == C:
        head_dim = None  # the default, written out by newer transformers
    return {"vocab_size": f.get("vocab_size"), "block_size": f.get("max_position_embeddings"),
            "n_layer": f.get("num_hidden_layers"), "n_head": n_head,
            "n_kv_head": f.get("num_key_value_heads") or n_head, "n_embd": C, "head_dim": head_dim}


def _layer_types(f: _Fields, n_layer: int, window: int | None) -> tuple[str, ...] | None:
    """layer_types as a tuple (None when every layer is full attention); refuses unknown kinds and sliding
    layers without a window."""
    lt = f.get("layer_types")
    if lt is None:
        return None
    if not isinstance(lt, list) or len(lt) != n_layer:
        raise f.bad(f"layer_types: expected a list of {n_layer} (num_hidden_layers) entries, got {_show(lt)}")
    for t in lt:
        if t not in ("full_attention", "sliding_attention"):
            raise f.bad(f"layer_types: {_show(t)} is not supported by npgpt (full_attention, sliding_attention)")
    if "sliding_attention" in lt and window is None:
        raise f.bad("layer_types: names sliding_attention layers but the config gives them no sliding window")
    return tuple(lt) if "sliding_attention" in lt else None


def _qwen_window(f: _Fields, n_layer: int, slides: Callable[[int], bool] | None = None
                 ) -> tuple[int | None, tuple[str, ...] | None]:
    """Qwen2/Qwen3/SmolLM3: sliding_window only counts with use_sliding_window; layer_types (else Qwen's
    max_window_layers: layers from it on slide; SmolLM3's `slides`: the layers without RoPE) says which slide."""
    use = f.flag("use_sliding_window", False)
    window = f.nullable("sliding_window", 4096) if use else None  # transformers' default when the key is absent
    f.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise f.bad(f"sliding_window: expected a positive integer, got {_show(window)}")
    if f.has("layer_types"):
        f.get("max_window_layers")
        lt = f.get("layer_types")
        if isinstance(lt, list) and "sliding_attention" in lt and not use:
            raise f.bad("layer_types: names sliding_attention layers but use_sliding_window is false")
        return window, _layer_types(f, n_layer, window)
    if window is None:
        f.get("max_window_layers")
        return None, None
    first = f.get("max_window_layers", 28)
    slide = slides if slides is not None else (lambda i: i >= first)
    lt_derived = tuple("sliding_attention" if slide(i) else "full_attention" for i in range(n_layer))
    return window, lt_derived if "sliding_attention" in lt_derived else None


def _eps(f: _Fields, *keys: str) -> float:
    for key in keys:
        if f.has(key) or key in f.defaults:
            for other in keys:
                f.get(other)
            return float(f.get(key))
    raise f.bad(f"{keys[0]}: missing")


def _no(f: _Fields, key: str, why: str, default: Any = False) -> None:
    """A field npgpt implements only at its off value."""
    f.refuse_if(key, lambda v: v in (False, None, 0, 0.0), why, default)


# LlamaConfig's field -> the config.json key it comes from (for its errors, which name its own fields)
_HF_NAME = {"n_head": "num_attention_heads", "n_kv_head": "num_key_value_heads", "n_embd": "hidden_size",
            "n_layer": "num_hidden_layers", "block_size": "max_position_embeddings"}


def _make(f: _Fields, **kw: Any) -> LlamaConfig:
    """LlamaConfig(**kw), its own errors prefixed with the file (and the config.json key they come from)."""
    try:
        return LlamaConfig(**kw)
    except (ValueError, NotImplementedError) as e:
        msg = str(e).replace("\n", " ")
        head = msg.split(":", 1)[0]
        if head.startswith("rope_scaling"):
            msg = f.rope_field + msg[len("rope_scaling"):]
        elif head in _HF_NAME:
            msg += f" (config.json's {_HF_NAME[head]})"
        raise f.bad(msg) from None


# ------------------------------------------------------------------------------------------- config mappings

def _whole_head(f: _Fields, partial: float) -> None:
    """Families whose transformers model rotates every channel of a head: partial RoPE is not theirs."""
    if partial != 1.0:
        raise f.bad(f"partial_rotary_factor {partial!r} is not supported by npgpt for {f.family} (transformers' "
                    f"{f.family} rotates the whole head)")


def _llama_like(d: Mapping[str, Any], where: str, family: str, defaults: Mapping[str, Any],
                extra: Callable[[_Fields, dict[str, Any]], None] | None = None,
                ignored: Iterable[str] = (), partial_ok: bool = False) -> LlamaConfig:
    """The Llama-shaped families: shapes, RMSNorm eps, activation, rope, tying; `extra` adds the family's own."""
    f = _Fields(d, where, family, defaults)
    kw = _heads(f)
    kw["intermediate_size"] = f.get("intermediate_size")
    kw["rms_norm_eps"] = _eps(f, "rms_norm_eps")
    kw["tie_word_embeddings"] = f.flag("tie_word_embeddings", False)
    kw["hidden_act"] = f.get("hidden_act", "silu")
    if kw["hidden_act"] not in HIDDEN_ACTS and kw["hidden_act"] != "gelu":
        raise f.bad(f"hidden_act {kw['hidden_act']!r} is not supported (supported: {', '.join(HIDDEN_ACTS)})")
    theta, scaling, partial = _rope(f)
    if not partial_ok:
        _whole_head(f, partial)
    kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial)
    if extra is not None:
        extra(f, kw)
    f.finish(ignored)
    return _make(f, **kw)


def _biases(f: _Fields, kw: dict[str, Any], *, o: bool = True, mlp: bool = True) -> None:
    """attention_bias (q, k, v and, in these families, o) and mlp_bias."""
    att = f.flag("attention_bias", False)
    kw["attention_bias"] = att
    kw["o_bias"] = att and o
    if mlp:
        kw["mlp_bias"] = f.flag("mlp_bias", False)


def llama_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    return _llama_like(d, where, "llama", {**_LLAMA_DEFAULTS}, lambda f, kw: _biases(f, kw))


def mistral_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        kw["sliding_window"] = f.nullable("sliding_window", 4096)  # every layer slides; null: full attention
    return _llama_like(d, where, "mistral", {**_LLAMA_DEFAULTS, "num_key_value_heads": 8,
                                             "max_position_embeddings": 131072}, extra)


def qwen2_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        kw["attention_bias"] = True  # Qwen2: q, k, v always have biases, o_proj never
        kw["sliding_window"], kw["layer_types"] = _qwen_window(f, kw["n_layer"])
        if kw["layer_types"] is None:
            kw["sliding_window"] = None
    return _llama_like(d, where, "qwen2", {**_LLAMA_DEFAULTS}, extra)


def qwen3_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _biases(f, kw, mlp=False)
        kw["qk_norm"] = "head"
        kw["sliding_window"], kw["layer_types"] = _qwen_window(f, kw["n_layer"])
        if kw["layer_types"] is None:
            kw["sliding_window"] = None
    return _llama_like(d, where, "qwen3", {**_LLAMA_DEFAULTS}, extra)


def _moe_fields(f: _Fields, kw: dict[str, Any], family: str) -> None:
    """The mixture of experts' fields (Mixtral, Qwen2-MoE, Qwen3-MoE): experts, top-k, widths, the sparse
    layers, the load-balancing loss; Mixtral's router jitter only at 0 (it is noise in training)."""
    kw["moe_family"] = family
    # Mixtral: num_local_experts; Qwen2-MoE: num_experts; Qwen3-MoE's transformers 5 writes num_local_experts
    key = "num_local_experts" if f.has("num_local_experts") or family == "mixtral" else "num_experts"
    kw["num_experts"] = f.get(key)
    if f.has("num_experts") and f.has("num_local_experts") and f.get("num_experts") != f.get("num_local_experts"):
        raise f.bad(f"num_experts: {f.get('num_experts')} disagrees with num_local_experts "
                    f"{f.get('num_local_experts')}")
    f.used.update(("num_experts", "num_local_experts"))
    kw["num_experts_per_tok"] = f.get("num_experts_per_tok")
    kw["output_router_logits"] = f.flag("output_router_logits", False)
    kw["router_aux_loss_coef"] = float(f.get("router_aux_loss_coef", 0.001))
    if family == "mixtral":
        _no(f, "router_jitter_noise", "router noise is a training-time perturbation npgpt does not implement", 0.0)
        return
    kw["norm_topk_prob"] = f.flag("norm_topk_prob", False)
    kw["moe_intermediate_size"] = f.get("moe_intermediate_size")
    kw["decoder_sparse_step"] = f.get("decoder_sparse_step", 1)
    mo = f.get("mlp_only_layers", [])
    if not isinstance(mo, list):
        raise f.bad(f"mlp_only_layers: expected a list of layer indices, got {_show(mo)}")
    kw["mlp_only_layers"] = tuple(mo)
    if family == "qwen2_moe":
        kw["shared_expert_intermediate_size"] = f.get("shared_expert_intermediate_size")


def mixtral_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        kw["sliding_window"] = f.nullable("sliding_window", None)  # every layer slides; null: full attention
        _moe_fields(f, kw, "mixtral")
    return _llama_like(d, where, "mixtral", {**_LLAMA_DEFAULTS, "intermediate_size": 14336,
                                             "num_key_value_heads": 8, "num_local_experts": 8,
                                             "num_experts_per_tok": 2, "max_position_embeddings": 131072,
                                             "rms_norm_eps": 1e-5, "rope_theta": 1e6}, extra)


def qwen2_moe_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        kw["attention_bias"] = f.flag("qkv_bias", True)  # q, k, v biases (o_proj none)
        kw["sliding_window"], kw["layer_types"] = _qwen_window(f, kw["n_layer"])
        if kw["layer_types"] is None:
            kw["sliding_window"] = None
        _moe_fields(f, kw, "qwen2_moe")
    return _llama_like(d, where, "qwen2_moe", {**_LLAMA_DEFAULTS, "num_experts": 60, "num_local_experts": 60,
                                               "num_experts_per_tok": 4,
                                               "moe_intermediate_size": 1408, "intermediate_size": 5632,
                                               "shared_expert_intermediate_size": 5632}, extra)


def qwen3_moe_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _biases(f, kw, mlp=False)
        kw["qk_norm"] = "head"
        kw["sliding_window"], kw["layer_types"] = _qwen_window(f, kw["n_layer"])
        if kw["layer_types"] is None:
            kw["sliding_window"] = None
        _moe_fields(f, kw, "qwen3_moe")
    return _llama_like(d, where, "qwen3_moe", {**_LLAMA_DEFAULTS, "num_experts": 128, "num_local_experts": 128,
                                               "num_experts_per_tok": 8,
                                               "moe_intermediate_size": 768, "intermediate_size": 6144}, extra)


def _gemma_common(f: _Fields, kw: dict[str, Any]) -> None:
    kw["norm_offset"] = 1.0  # x_hat * (1 + w)
    kw["embedding_multiplier"] = math.sqrt(kw["n_embd"])  # sqrt(C), rounded to the dtype by the core
    _biases(f, kw, mlp=False)
    _no(f, "use_bidirectional_attention", "the decoder is causal")


def gemma_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _gemma_common(f, kw)
        if kw["hidden_act"] == "gelu":  # transformers: the legacy value meant the tanh approximation
            kw["hidden_act"] = "gelu_pytorch_tanh"
        act = f.get("hidden_activation")
        if act is not None and act != kw["hidden_act"]:
            raise f.bad(f"hidden_activation={_show(act)} contradicts hidden_act={_show(kw['hidden_act'])}")
    return _llama_like(d, where, "gemma", {**_GEMMA_DEFAULTS}, extra)


def _gemma2_like(f: _Fields, kw: dict[str, Any], version: int) -> None:
    _gemma_common(f, kw)
    kw["norm_placement"] = "sandwich"
    act = f.get("hidden_activation", "gelu_pytorch_tanh")
    f.get("hidden_act")  # transformers' Gemma 2/3 read hidden_activation only
    kw["hidden_act"] = act
    kw["attention_scale"] = float(f.get("query_pre_attn_scalar", 256)) ** -0.5
    kw["attn_logit_softcapping"] = f.nullable("attn_logit_softcapping", 50.0 if version == 2 else None)
    kw["final_logit_softcapping"] = f.nullable("final_logit_softcapping", 30.0 if version == 2 else None)
    window = f.nullable("sliding_window", 4096)
    n = kw["n_layer"]
    pattern = f.get("sliding_window_pattern", f.get("_sliding_window_pattern", 2 if version == 2 else 6))
    if f.has("layer_types"):
        lt = _layer_types(f, n, window)
    else:
        lt = tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n))
        lt = lt if "sliding_attention" in lt else None
    kw["layer_types"] = lt if lt is not None else tuple(["full_attention"] * n)
    kw["sliding_window"] = window


def gemma2_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    return _llama_like(d, where, "gemma2", {**_GEMMA_DEFAULTS},
                       lambda f, kw: _gemma2_like(f, kw, 2),
                       ignored=("cache_implementation", "sliding_window_size"))  # the latter: unread in 5.x


def gemma3_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _gemma2_like(f, kw, 3)
        kw["qk_norm"] = "head"
        rope = f.get("rope_parameters")
        if isinstance(rope, Mapping) and ("full_attention" in rope or "sliding_attention" in rope):
            theta, scaling, partial = _rope(f, "full_attention")
            local_theta, local_scaling, local_partial = _rope(  # a missing local base: transformers' 10 000
                f, "sliding_attention", float(f.get("rope_local_base_freq", 10000.0)))
            if local_scaling is not None:
                raise f.bad(f"rope_parameters.sliding_attention: rope_type "
                            f"{_show(local_scaling.get('rope_type'))} is not supported by npgpt (the local "
                            f"layers' RoPE has a base only)")
            _whole_head(f, partial)
            _whole_head(f, local_partial)
        else:  # transformers < 5: rope_theta (+ rope_scaling) global, rope_local_base_freq local
            theta, scaling, partial = kw["rope_theta"], kw["rope_scaling"], kw["partial_rotary_factor"]
            local_theta = float(f.get("rope_local_base_freq", 10000.0))
        kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial,
                  rope_local_theta=local_theta)
    return _llama_like(d, where, "gemma3_text", {**_GEMMA_DEFAULTS, "rope_theta": 1000000.0},
                       extra, ignored=("cache_implementation", "rope_local_base_freq"))


def phi3_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        kw["sliding_window"] = f.get("sliding_window")  # every layer (Phi3Model's mask); null or absent: none
        scaling = kw["rope_scaling"]
        if scaling is not None and scaling.get("rope_type", scaling.get("type")) in ("su", "yarn", "longrope"):
            # transformers' Phi-3 reads the old names "su" and "yarn" as longrope, with the top-level
            # original_max_position_embeddings (its config class's default 4096 when absent)
            scaling = {k: v for k, v in scaling.items() if k != "type"}
            scaling["rope_type"] = "longrope"
            scaling["original_max_position_embeddings"] = f.get("original_max_position_embeddings", 4096)
            kw["rope_scaling"] = scaling
    return _llama_like(d, where, "phi3", {**_LLAMA_DEFAULTS, "rms_norm_eps": 1e-5}, extra, partial_ok=True)


def olmo2_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _biases(f, kw, mlp=False)
        kw["norm_placement"] = "post"
        kw["qk_norm"] = "full"
    return _llama_like(d, where, "olmo2", {**_LLAMA_DEFAULTS, "rms_norm_eps": 1e-5}, extra)


def smollm3_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _biases(f, kw)
        n = kw["n_layer"]
        nr = f.get("no_rope_layers")
        interval = f.get("no_rope_layer_interval", 4)
        if nr is None:
            nr = [int((i + 1) % interval != 0) for i in range(n)]
        if not isinstance(nr, list) or len(nr) != n or any(v not in (0, 1) for v in nr):
            raise f.bad(f"no_rope_layers: expected a list of {n} (num_hidden_layers) entries 0 or 1, got {_show(nr)}")
        kw["no_rope_layers"] = None if all(nr) else tuple(int(v) for v in nr)
        kw["sliding_window"], kw["layer_types"] = _qwen_window(f, n, lambda i: not nr[i])
        if kw["layer_types"] is None:
            kw["sliding_window"] = None
    return _llama_like(d, where, "smollm3", {**_LLAMA_DEFAULTS, "tie_word_embeddings": True}, extra)


def granite_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    def extra(f: _Fields, kw: dict[str, Any]) -> None:
        _biases(f, kw)
        kw["embedding_multiplier"] = float(f.get("embedding_multiplier", 1.0))
        kw["residual_multiplier"] = float(f.get("residual_multiplier", 1.0))
        kw["logits_scaling"] = float(f.get("logits_scaling", 1.0))
        kw["attention_scale"] = float(f.get("attention_multiplier", 1.0))
    return _llama_like(d, where, "granite", {**_LLAMA_DEFAULTS}, extra)


def stablelm_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    f = _Fields(d, where, "stablelm", {"partial_rotary_factor": 0.25, "layer_norm_eps": 1e-5})
    kw = _heads(f)
    kw.update(intermediate_size=f.get("intermediate_size"), rms_norm_eps=_eps(f, "layer_norm_eps"),
              tie_word_embeddings=f.flag("tie_word_embeddings", False), hidden_act=f.get("hidden_act", "silu"),
              norm_kind="layernorm", norm_bias=True, attention_bias=f.flag("use_qkv_bias", False))
    _no(f, "qk_layernorm", "StableLM's q/k LayerNorms keep one weight set per head, a QK-norm npgpt does "
                           "not have")
    parallel = f.flag("use_parallel_residual", False)
    kw.update(parallel_residual=parallel, parallel_shared_norm=parallel)
    theta, scaling, partial = _rope(f)
    kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial)
    f.finish()
    return _make(f, **kw)


def gpt_neox_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    f = _Fields(d, where, "gpt_neox", {"partial_rotary_factor": 0.25, "layer_norm_eps": 1e-5})
    kw = _heads(f)
    if f.has("num_key_value_heads") and kw["n_kv_head"] != kw["n_head"]:
        raise f.bad("num_key_value_heads: GPT-NeoX has one key/value head per query head")
    att = f.flag("attention_bias", True)
    kw.update(intermediate_size=f.get("intermediate_size"), rms_norm_eps=_eps(f, "layer_norm_eps"),
              tie_word_embeddings=f.flag("tie_word_embeddings", False), hidden_act=f.get("hidden_act", "gelu"),
              norm_kind="layernorm", norm_bias=True, attention_bias=att, o_bias=att, mlp_bias=True,
              mlp_kind="plain", parallel_residual=f.flag("use_parallel_residual", True))
    theta, scaling, partial = _rope(f)
    kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial)
    f.finish()
    return _make(f, **kw)


def phi_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    f = _Fields(d, where, "phi", {"partial_rotary_factor": 0.5, "layer_norm_eps": 1e-5})
    kw = _heads(f)
    kw.update(intermediate_size=f.get("intermediate_size"), rms_norm_eps=_eps(f, "layer_norm_eps"),
              tie_word_embeddings=f.flag("tie_word_embeddings", False),
              hidden_act=f.get("hidden_act", "gelu_new"), norm_kind="layernorm", norm_bias=True,
              attention_bias=True, o_bias=True, mlp_bias=True, mlp_kind="plain", lm_head_bias=True,
              parallel_residual=True, parallel_shared_norm=True)
    _no(f, "qk_layernorm", "Phi's q/k LayerNorms have biases, a QK-norm npgpt does not have")
    theta, scaling, partial = _rope(f)
    kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial)
    f.finish()
    return _make(f, **kw)


def falcon_config(d: Mapping[str, Any], where: str) -> LlamaConfig:
    f = _Fields(d, where, "falcon", {"layer_norm_epsilon": 1e-5})
    for new, old in (("num_hidden_layers", "n_layer"), ("num_attention_heads", "n_head")):
        if not f.has(new) and f.has(old):
            f.d[new] = f.d[old]
        f.get(old)
    _no(f, "alibi", "ALiBi position biases; npgpt's decoder has RoPE")
    _no(f, "apply_residual_connection_post_layernorm", "transformers' Falcon does not read it either; the "
        "residual is the layer's input")
    new_arch = f.flag("new_decoder_architecture", False)
    multi_query = f.flag("multi_query", True)
    parallel = f.flag("parallel_attn", True)
    bias = f.flag("bias", False)
    H = f.get("num_attention_heads")
    C = f.get("hidden_size")
    f.get("num_key_value_heads")  # transformers writes the derived count out; the flags above decide it
    if new_arch:
        kv = f.get("num_kv_heads", H)
        if not parallel:
            raise f.bad("parallel_attn=false with new_decoder_architecture=true: transformers' Falcon has no "
                        "norm for that MLP")
        n_ln = f.get("num_ln_in_parallel_attn", 2)
        if n_ln not in (1, 2):
            raise f.bad(f"num_ln_in_parallel_attn={_show(n_ln)} is not supported by npgpt (1 or 2)")
        shared = n_ln == 1
    else:
        f.get("num_kv_heads")
        f.get("num_ln_in_parallel_attn")
        kv = 1 if multi_query else H
        shared = parallel
    ffn = f.get("ffn_hidden_size")
    kw = {"vocab_size": f.get("vocab_size"), "block_size": f.get("max_position_embeddings", 2048),
          "n_layer": f.get("num_hidden_layers"), "n_head": H, "n_kv_head": kv, "n_embd": C,
          "intermediate_size": ffn if ffn is not None else 4 * C if isinstance(C, int) else C,
          "rms_norm_eps": _eps(f, "layer_norm_epsilon"), "tie_word_embeddings": f.flag("tie_word_embeddings", True),
          "hidden_act": f.get("activation", "gelu"), "norm_kind": "layernorm", "norm_bias": True,
          "attention_bias": bias, "o_bias": bias, "mlp_bias": bias, "mlp_kind": "plain",
          "parallel_residual": parallel, "parallel_shared_norm": parallel and shared}
    theta, scaling, partial = _rope(f)
    _whole_head(f, partial)
    kw.update(rope_theta=theta, rope_scaling=scaling, partial_rotary_factor=partial)
    f.finish()
    return _make(f, **kw)


# HF config classes' defaults for the keys a config.json may leave out (transformers 5.25)
_LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
}
_GEMMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
    "num_attention_heads": 16, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}


# ------------------------------------------------------------------------------------------- config.json out

def _rope_out(config: LlamaConfig) -> dict[str, Any]:
    """rope_parameters as transformers 5 writes them: type, theta, the scaling's fields, the partial factor."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    rope.update(dict(config.rope_scaling or {}))
    rope.pop("type", None)
    if config.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = float(config.partial_rotary_factor)
    return rope


def _base_out(config: LlamaConfig, arch: str, model_type: str, dtype: npt.DTypeLike) -> dict[str, Any]:
    return {"architectures": [arch], "model_type": model_type, "vocab_size": config.vocab_size,
            "max_position_embeddings": config.block_size, "num_hidden_layers": config.n_layer,
            "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
            "hidden_size": config.n_embd, "intermediate_size": config.intermediate_size,
            "head_dim": config.head_size, "tie_word_embeddings": config.tie_word_embeddings,
            "hidden_act": config.hidden_act, "rope_parameters": _rope_out(config), "attention_dropout": 0.0,
            "dtype": np.dtype(dtype).name, "torch_dtype": np.dtype(dtype).name, **TOKEN_IDS_NONE}


def _llama_like_out(arch: str, model_type: str, fields: Callable[[LlamaConfig], dict[str, Any]]
                    ) -> Callable[[LlamaConfig, npt.DTypeLike], dict[str, Any]]:
    def out(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
        d = _base_out(config, arch, model_type, dtype)
        d["rms_norm_eps"] = float(config.rms_norm_eps)
        d.update(fields(config))
        return d
    return out


def _window_out(config: LlamaConfig) -> dict[str, Any]:
    lt = config.layer_types
    return {"use_sliding_window": lt is not None, "sliding_window": config.sliding_window if lt else None,
            "layer_types": list(lt) if lt else ["full_attention"] * config.n_layer,
            "max_window_layers": config.n_layer if lt is None else next(
                (i for i, t in enumerate(lt) if t == "sliding_attention"), config.n_layer)}


def _moe_out(config: LlamaConfig) -> dict[str, Any]:
    """The mixture of experts' config.json fields, as each family spells them."""
    d: dict[str, Any] = {"num_experts_per_tok": config.num_experts_per_tok,
                         "output_router_logits": config.output_router_logits,
                         "router_aux_loss_coef": float(config.router_aux_loss_coef)}
    if config.moe_family == "mixtral":
        return {**d, "num_local_experts": config.num_experts, "router_jitter_noise": 0.0,
                "sliding_window": config.sliding_window}
    d.update({"num_experts": config.num_experts, "norm_topk_prob": bool(config.norm_topk_prob),
              "moe_intermediate_size": config.moe_intermediate_size or config.intermediate_size,
              "decoder_sparse_step": config.decoder_sparse_step, "mlp_only_layers": list(config.mlp_only_layers),
              **_window_out(config)})
    if config.moe_family == "qwen2_moe":
        d.update({"qkv_bias": config.attention_bias,
                  "shared_expert_intermediate_size": config.shared_expert_intermediate_size})
    else:
        d["attention_bias"] = config.attention_bias
    return d


def _gemma2_out(config: LlamaConfig) -> dict[str, Any]:
    scale = config.attention_scale if config.attention_scale is not None else config.head_size ** -0.5
    scalar = scale ** -2
    if abs(scalar - round(scalar)) > 1e-9 * scalar:  # transformers' Gemma 2/3 configs take an integer only
        raise ValueError(f"attention_scale: Gemma's query_pre_attn_scalar = scale^-2 = {scalar!r} is not an integer")
    return {"hidden_activation": config.hidden_act, "query_pre_attn_scalar": int(round(scalar)),
            "attn_logit_softcapping": config.attn_logit_softcapping,
            "final_logit_softcapping": config.final_logit_softcapping, "sliding_window": config.sliding_window,
            "layer_types": list(config.layer_types or ["full_attention"] * config.n_layer),
            "attention_bias": config.attention_bias}


def _gemma3_out(config: LlamaConfig) -> dict[str, Any]:
    d = _gemma2_out(config)
    local = {"rope_type": "default", "rope_theta": float(config.rope_local_theta or config.rope_theta)}
    if config.partial_rotary_factor != 1.0:
        local["partial_rotary_factor"] = float(config.partial_rotary_factor)
    d["rope_parameters"] = {"full_attention": _rope_out(config), "sliding_attention": local}
    d["use_bidirectional_attention"] = False
    return d


def _ln_out(config: LlamaConfig, arch: str, model_type: str, dtype: npt.DTypeLike, eps_key: str) -> dict[str, Any]:
    d = _base_out(config, arch, model_type, dtype)
    d[eps_key] = float(config.rms_norm_eps)
    return d


def stablelm_out(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    d = _ln_out(config, "StableLmForCausalLM", "stablelm", dtype, "layer_norm_eps")
    d.update(use_qkv_bias=config.attention_bias, qk_layernorm=False, use_parallel_residual=config.parallel_residual,
             hidden_dropout=0.0)
    d["rope_parameters"].setdefault("partial_rotary_factor", 1.0)
    return d


def gpt_neox_out(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    d = _ln_out(config, "GPTNeoXForCausalLM", "gpt_neox", dtype, "layer_norm_eps")
    d.update(attention_bias=config.attention_bias, use_parallel_residual=config.parallel_residual,
             hidden_dropout=0.0)
    d["rope_parameters"].setdefault("partial_rotary_factor", 1.0)
    for key in ("num_key_value_heads", "head_dim"):
        d.pop(key)
    return d


def phi_out(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    d = _ln_out(config, "PhiForCausalLM", "phi", dtype, "layer_norm_eps")
    d.update(qk_layernorm=False, resid_pdrop=0.0, embd_pdrop=0.0)
    d["rope_parameters"].setdefault("partial_rotary_factor", 1.0)
    return d


def falcon_out(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    H, kv = config.n_head, config.n_kv_head
    parallel, shared = config.parallel_residual, config.parallel_shared_norm
    new_arch = (parallel and not shared) or (parallel and kv not in (1, H))  # Falcon 40B/180B's layout
    if not parallel and kv not in (1, H):
        raise ValueError(f"n_kv_head: a sequential Falcon has 1 or n_head key/value heads, got {kv}")
    d = {"architectures": ["FalconForCausalLM"], "model_type": "falcon", "vocab_size": config.vocab_size,
         "max_position_embeddings": config.block_size, "num_hidden_layers": config.n_layer,
         "num_attention_heads": H, "hidden_size": config.n_embd, "ffn_hidden_size": config.intermediate_size,
         "layer_norm_epsilon": float(config.rms_norm_eps), "tie_word_embeddings": config.tie_word_embeddings,
         "activation": config.hidden_act, "rope_parameters": _rope_out(config), "alibi": False,
         "bias": config.attention_bias, "parallel_attn": parallel, "new_decoder_architecture": new_arch,
         "multi_query": kv == 1 and not new_arch, "num_kv_heads": kv, "attention_dropout": 0.0,
         "hidden_dropout": 0.0, "dtype": np.dtype(dtype).name, **TOKEN_IDS_NONE}
    if new_arch:
        d["num_ln_in_parallel_attn"] = 1 if shared else 2
    return d


# ------------------------------------------------------------------------------------------- weights

@dataclass(frozen=True)
class Rule:
    """One HF tensor and the canonical tensors it holds: "same" (one, renamed), "rows" (stacked along the
    first axis, e.g. Phi-3's qkv_proj = [q; k; v]) or "grouped" (query_key_value per key/value group: r query
    heads, then the group's key head and value head, each D rows: GPT-NeoX with r = 1, Falcon 40B)."""

    hf: str
    parts: tuple[str, ...]
    kind: str = "same"


@dataclass(frozen=True)
class HFFamily:
    """A Hugging Face family as an adapter: config mapping, weight-name map, load-time splits."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    config_from_hf: Callable[[Mapping[str, Any], str], LlamaConfig]
    config_to_hf: Callable[[LlamaConfig, npt.DTypeLike], dict[str, Any]]
    layer_prefix: str = "model.layers.{i}."  # the HF name of layer i's prefix
    top: Mapping[str, str] = field(default_factory=dict)  # canonical model-level name -> HF name (others same)
    rename: Mapping[str, str] = field(default_factory=dict)  # canonical in-layer name -> HF in-layer name
    fused: Callable[[LlamaConfig], FusedSpec] | None = None  # in-layer fused tensors: (HF name, parts, kind)
    aliases: Mapping[str, str] = field(default_factory=dict)  # other HF names accepted on load -> the HF name
    rename_for: Callable[[LlamaConfig], Mapping[str, str]] | None = None  # config-dependent in-layer renames

    def rules(self, config: LlamaConfig) -> list[Rule]:
        """Every HF tensor of this config, with the canonical tensors it holds."""
        shapes = param_shapes(config)
        rename = {**self.rename, **(self.rename_for(config) if self.rename_for else {})}
        rules: list[Rule] = []
        taken: set[str] = set()
        for i in range(config.n_layer):
            canon, hf = f"model.layers.{i}.", self.layer_prefix.format(i=i)
            for hf_name, parts, kind in (self.fused(config) if self.fused else []):
                names = tuple(canon + p for p in parts if canon + p in shapes)
                if names:
                    rules.append(Rule(hf + hf_name, names, kind))
                    taken.update(names)
        for name in shapes:
            if name in taken:
                continue
            if name.startswith("model.layers."):
                layer, rest = name[len("model.layers."):].split(".", 1)
                rules.append(Rule(self.layer_prefix.format(i=layer) + rename.get(rest, rest), (name,)))
            else:
                rules.append(Rule(self.top.get(name, name), (name,)))
        return rules

    def hf_shapes(self, config: LlamaConfig) -> dict[str, tuple[int, ...]]:
        """Every HF tensor's name and shape for this config."""
        shapes = param_shapes(config)
        out = {}
        for r in self.rules(config):
            first = shapes[r.parts[0]]
            out[r.hf] = first if r.kind == "same" else (sum(shapes[p][0] for p in r.parts), *first[1:])
        return out

    def weights_from_hf(self, get: Callable[[str], np.ndarray], names: Iterable[str],
                        config: LlamaConfig) -> dict[str, np.ndarray]:
        """{canonical name: array} from the HF tensors get(name) returns (names: those the checkpoint has)."""
        return dict(self.iter_weights_from_hf(get, names, config))

    def iter_weights_from_hf(self, get: Callable[[str], np.ndarray], names: Iterable[str],
                             config: LlamaConfig) -> Iterator[tuple[str, np.ndarray]]:
        """weights_from_hf one HF tensor at a time (a loader copies each part out before the next is read)."""
        have = set(names)
        for r in self.rules(config):
            hf = r.hf if r.hf in have else next((a for a, b in self.aliases.items() if b == r.hf and a in have), r.hf)
            yield from _split(r, get(hf), config).items()

    def weights_to_hf(self, params: Mapping[str, np.ndarray], config: LlamaConfig) -> dict[str, np.ndarray]:
        """{HF name: array} for save_pretrained: the canonical tensors renamed and fused as HF stores them."""
        return {r.hf: _join(r, [params[p] for p in r.parts], config) for r in self.rules(config)}


def _split(r: Rule, x: np.ndarray, config: LlamaConfig) -> dict[str, np.ndarray]:
    if r.kind == "same":
        return {r.parts[0]: x}
    shapes = param_shapes(config)
    if r.kind == "rows":
        out, start = {}, 0
        for p in r.parts:
            n = shapes[p][0]
            out[p] = x[start:start + n]
            start += n
        return out
    # grouped: (Hkv (r + 2) D, ...) -> per group [r query heads, key, value]
    Hkv, D = config.n_kv_head, config.head_size
    g = config.n_head // Hkv
    y = x.reshape(Hkv, g + 2, D, *x.shape[1:])  # (Hkv, r + 2, D, ...)
    q = y[:, :g].reshape(Hkv * g * D, *x.shape[1:])  # (Hq D, ...) group-major: head = group * r + j
    k = y[:, g].reshape(Hkv * D, *x.shape[1:])  # (Hkv D, ...)
    v = y[:, g + 1].reshape(Hkv * D, *x.shape[1:])  # (Hkv D, ...)
    return dict(zip(r.parts, (q, k, v)))


def _join(r: Rule, xs: list[np.ndarray], config: LlamaConfig) -> np.ndarray:
    if r.kind == "same":
        return xs[0]
    if r.kind == "rows":
        return np.concatenate(xs, axis=0)
    Hkv, D = config.n_kv_head, config.head_size
    g = config.n_head // Hkv
    q, k, v = xs
    rest = q.shape[1:]
    y = np.concatenate([q.reshape(Hkv, g, D, *rest), k.reshape(Hkv, 1, D, *rest), v.reshape(Hkv, 1, D, *rest)],
                       axis=1)  # (Hkv, r + 2, D, ...)
    return y.reshape(Hkv * (g + 2) * D, *rest)


def _phi3_fused(config: LlamaConfig) -> FusedSpec:
    return [("self_attn.qkv_proj.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                           "self_attn.v_proj.weight"), "rows"),
            ("mlp.gate_up_proj.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), "rows")]


def _qkv_fused(prefix: str, kind: Callable[[LlamaConfig], str]) -> Callable[[LlamaConfig], FusedSpec]:
    def fused(config: LlamaConfig) -> FusedSpec:
        k = kind(config)
        return [(f"{prefix}.query_key_value.{w}", tuple(f"self_attn.{p}_proj.{w}" for p in "qkv"), k)
                for w in ("weight", "bias")]
    return fused


def _falcon_kind(config: LlamaConfig) -> str:
    """Falcon-7B's multi-query layout stacks [all queries; key; value] (the grouped layout with one group);
    the others group per key/value head: [its r queries, key, value] (view(H, 3, D) when r = 1)."""
    return "rows" if config.n_kv_head == 1 else "grouped"


def _falcon_norms(config: LlamaConfig) -> dict[str, str]:
    """Falcon 40B's two parallel norms are ln_attn / ln_mlp; the others keep input/post_attention_layernorm."""
    if config.parallel_residual and not config.parallel_shared_norm:
        return {"input_layernorm.weight": "ln_attn.weight", "input_layernorm.bias": "ln_attn.bias",
                "post_attention_layernorm.weight": "ln_mlp.weight", "post_attention_layernorm.bias": "ln_mlp.bias"}
    return {}


FAMILIES: dict[str, HFFamily] = {}


def _register(fam: HFFamily) -> None:
    FAMILIES[fam.name] = fam


for _name, _arch, _cfg, _out in (
        ("llama", "LlamaForCausalLM", llama_config,  # + the rope in transformers 4's spelling too
         lambda c: {"attention_bias": c.attention_bias, "mlp_bias": c.mlp_bias, "rope_theta": float(c.rope_theta),
                    "rope_scaling": c.rope_scaling}),
        ("mistral", "MistralForCausalLM", mistral_config, lambda c: {"sliding_window": c.sliding_window}),
        ("qwen2", "Qwen2ForCausalLM", qwen2_config, _window_out),
        ("qwen3", "Qwen3ForCausalLM", qwen3_config, lambda c: {**_window_out(c), "attention_bias": c.attention_bias}),
        ("mixtral", "MixtralForCausalLM", mixtral_config, _moe_out),
        ("qwen2_moe", "Qwen2MoeForCausalLM", qwen2_moe_config, _moe_out),
        ("qwen3_moe", "Qwen3MoeForCausalLM", qwen3_moe_config, _moe_out),
        ("gemma", "GemmaForCausalLM", gemma_config, lambda c: {"attention_bias": c.attention_bias}),
        ("gemma2", "Gemma2ForCausalLM", gemma2_config, _gemma2_out),
        ("gemma3_text", "Gemma3ForCausalLM", gemma3_config, _gemma3_out),
        ("phi3", "Phi3ForCausalLM", phi3_config, lambda c: {
            "sliding_window": c.sliding_window, "original_max_position_embeddings":
            (c.rope_scaling or {}).get("original_max_position_embeddings", c.block_size)}),
        ("olmo2", "Olmo2ForCausalLM", olmo2_config, lambda c: {"attention_bias": c.attention_bias}),
        ("smollm3", "SmolLM3ForCausalLM", smollm3_config,
         lambda c: {**_window_out(c), "attention_bias": c.attention_bias, "mlp_bias": c.mlp_bias,
                    "no_rope_layers": list(c.no_rope_layers or [1] * c.n_layer)}),
        ("granite", "GraniteForCausalLM", granite_config,
         lambda c: {"attention_bias": c.attention_bias, "mlp_bias": c.mlp_bias,
                    "embedding_multiplier": c.embedding_multiplier, "residual_multiplier": c.residual_multiplier,
                    "logits_scaling": c.logits_scaling,
                    "attention_multiplier": c.attention_scale if c.attention_scale is not None
                    else c.head_size ** -0.5})):
    _register(HFFamily(_name, (_name,), (_arch,), _cfg, _llama_like_out(_arch, _name, _out),
                       fused=_phi3_fused if _name == "phi3" else None))

_register(HFFamily("stablelm", ("stablelm",), ("StableLmForCausalLM",), stablelm_config, stablelm_out))
_register(HFFamily(
    "gpt_neox", ("gpt_neox",), ("GPTNeoXForCausalLM",), gpt_neox_config, gpt_neox_out,
    layer_prefix="gpt_neox.layers.{i}.",
    top={"model.embed_tokens.weight": "gpt_neox.embed_in.weight", "model.norm.weight":
         "gpt_neox.final_layer_norm.weight", "model.norm.bias": "gpt_neox.final_layer_norm.bias",
         "lm_head.weight": "embed_out.weight"},
    rename={"self_attn.o_proj.weight": "attention.dense.weight", "self_attn.o_proj.bias": "attention.dense.bias",
            "mlp.up_proj.weight": "mlp.dense_h_to_4h.weight", "mlp.up_proj.bias": "mlp.dense_h_to_4h.bias",
            "mlp.down_proj.weight": "mlp.dense_4h_to_h.weight", "mlp.down_proj.bias": "mlp.dense_4h_to_h.bias"},
    fused=_qkv_fused("attention", lambda c: "grouped"), aliases={"lm_head.weight": "embed_out.weight"}))
_register(HFFamily(
    "phi", ("phi",), ("PhiForCausalLM",), phi_config, phi_out,
    top={"model.norm.weight": "model.final_layernorm.weight", "model.norm.bias": "model.final_layernorm.bias"},
    rename={"self_attn.o_proj.weight": "self_attn.dense.weight", "self_attn.o_proj.bias": "self_attn.dense.bias",
            "mlp.up_proj.weight": "mlp.fc1.weight", "mlp.up_proj.bias": "mlp.fc1.bias",
            "mlp.down_proj.weight": "mlp.fc2.weight", "mlp.down_proj.bias": "mlp.fc2.bias"}))
_register(HFFamily(
    "falcon", ("falcon",), ("FalconForCausalLM",), falcon_config, falcon_out, layer_prefix="transformer.h.{i}.",
    top={"model.embed_tokens.weight": "transformer.word_embeddings.weight", "model.norm.weight":
         "transformer.ln_f.weight", "model.norm.bias": "transformer.ln_f.bias"},
    rename={"self_attn.o_proj.weight": "self_attention.dense.weight", "self_attn.o_proj.bias":
            "self_attention.dense.bias", "mlp.up_proj.weight": "mlp.dense_h_to_4h.weight", "mlp.up_proj.bias":
            "mlp.dense_h_to_4h.bias", "mlp.down_proj.weight": "mlp.dense_4h_to_h.weight", "mlp.down_proj.bias":
            "mlp.dense_4h_to_h.bias"},
    fused=_qkv_fused("self_attention", _falcon_kind), rename_for=_falcon_norms))


def family_for(d: Mapping[str, Any], where: str) -> HFFamily:
    """The record for a config.json dict, by model_type (and architectures, when given)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    mt = d.get("model_type")
    fam = next((f for f in FAMILIES.values() if mt in f.model_types), None)
    if fam is None:
        known = ", ".join(m for f in FAMILIES.values() for m in f.model_types if m != "llama")
        raise ValueError(f"{where}: model_type is {mt!r}, expected 'llama' or another family npgpt reads "
                         f"({known})")
    archs = d.get("architectures")
    if archs is not None and not (isinstance(archs, list) and any(a in fam.architectures for a in archs)):
        raise ValueError(f"{where}: architectures is {archs!r}, expected {list(fam.architectures)} for "
                         f"model_type {mt!r}")
    return fam


def same_config(a: LlamaConfig, b: LlamaConfig) -> bool:
    """a == b, reading attention_scale None as the 1/sqrt(D) it means (Gemma and Granite write it out) and
    no_rope_layers of all 1 as None (RoPE everywhere)."""
    def explicit(c: LlamaConfig) -> LlamaConfig:
        if c.attention_scale is None:
            c = replace(c, attention_scale=c.head_size ** -0.5)
        if c.no_rope_layers is not None and all(c.no_rope_layers):
            c = replace(c, no_rope_layers=None)
        return c
    return explicit(a) == explicit(b)


def family_of(config: LlamaConfig) -> HFFamily:
    """The first family whose config.json says exactly this config (Llama first): for save_pretrained of a
    model made with --arch or LlamaConfig(...) rather than loaded."""
    for fam in FAMILIES.values():
        try:
            if same_config(fam.config_from_hf(fam.config_to_hf(config, np.float32), "config"), config):
                return fam
        except ValueError:
            continue
    raise ValueError("config: no Hugging Face family npgpt writes expresses this LlamaConfig "
                     "(see docs/families.md for which fields each family has)")


# ------------------------------------------------------------------------------------------- block styles

def style_config(family: str, **shapes: Any) -> LlamaConfig:
    """A LlamaConfig with the given shapes (vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd,
    intermediate_size, head_dim, ...) in the block style of a family, for training from scratch (--arch):
    the fields its transformers model fixes (norms, QK-norm, biases, RoPE layout, windows, multipliers), with
    the family's usual values where it has a knob; Llama, Qwen3, OLMo 2 and Gemma 3 are config.block_style's.
    save_pretrained writes it as that family."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    if family in ("qwen2_moe", "qwen3_moe"):
        raise ValueError(f"family: {family} has no from-scratch style yet (load one with from_pretrained)")
    n_layer = shapes.get("n_layer", LlamaConfig.n_layer)
    block = shapes.get("block_size", LlamaConfig.block_size)
    C = shapes.get("n_embd", LlamaConfig.n_embd)
    window = max(1, block // 4)
    layernorm: dict[str, Any] = {"norm_kind": "layernorm", "norm_bias": True}
    styles: dict[str, dict[str, Any]] = {
        "llama": {},
        "mistral": {"sliding_window": window},
        "qwen2": {"attention_bias": True},
        "qwen3": {"qk_norm": "head"},
        "gemma": {"norm_offset": 1.0, "embedding_multiplier": math.sqrt(C), "hidden_act": "gelu_pytorch_tanh",
                  "tie_word_embeddings": True},
        "gemma2": {"norm_offset": 1.0, "embedding_multiplier": math.sqrt(C), "hidden_act": "gelu_pytorch_tanh",
                   "tie_word_embeddings": True, "norm_placement": "sandwich", "attn_logit_softcapping": 50.0,
                   "final_logit_softcapping": 30.0, "sliding_window": window,
                   "layer_types": tuple("sliding_attention" if (i + 1) % 2 else "full_attention"
                                        for i in range(n_layer))},
        "gemma3_text": {"norm_offset": 1.0, "embedding_multiplier": math.sqrt(C), "hidden_act": "gelu_pytorch_tanh",
                        "tie_word_embeddings": True, "norm_placement": "sandwich", "qk_norm": "head",
                        "rope_theta": 1e6, "rope_local_theta": 1e4, "sliding_window": window,
                        "layer_types": tuple("sliding_attention" if (i + 1) % 6 else "full_attention"
                                             for i in range(n_layer))},
        "phi3": {},
        "olmo2": {"norm_placement": "post", "qk_norm": "full"},
        "smollm3": {"tie_word_embeddings": True,
                    "no_rope_layers": tuple(int((i + 1) % 4 != 0) for i in range(n_layer))},
        "granite": {"attention_scale": 1.0 / (C // shapes.get("n_head", LlamaConfig.n_head)),  # Granite 3.0 2B's
                    "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "logits_scaling": 8.0},
        "stablelm": {**layernorm, "partial_rotary_factor": 0.25, "attention_bias": True},
        "gpt_neox": {**layernorm, "parallel_residual": True, "partial_rotary_factor": 0.25, "attention_bias": True,
                     "o_bias": True, "mlp_bias": True, "mlp_kind": "plain", "hidden_act": "gelu"},
        "phi": {**layernorm, "parallel_residual": True, "parallel_shared_norm": True, "partial_rotary_factor": 0.5,
                "attention_bias": True, "o_bias": True, "mlp_bias": True, "mlp_kind": "plain",
                "lm_head_bias": True, "hidden_act": "gelu_new"},
        "falcon": {**layernorm, "parallel_residual": True, "parallel_shared_norm": True, "mlp_kind": "plain",
                   "hidden_act": "gelu", "tie_word_embeddings": True},
        "mixtral": {"moe_family": "mixtral", "num_experts": 4, "num_experts_per_tok": 2},
    }
    if family in ("llama", "qwen3", "olmo2", "gemma3_text"):  # the styles config.block_style defines (--arch)
        n_head = shapes.get("n_head", LlamaConfig.n_head)
        D = shapes.get("head_dim") or C // n_head
        styles[family] = block_style("gemma3" if family == "gemma3_text" else family, n_layer, C, D, block)
    style = styles[family]
    if style.get("layer_types") is not None and "sliding_attention" not in style["layer_types"]:
        style = {**style, "layer_types": None, "sliding_window": None}
    return LlamaConfig(**{**style, **shapes})
