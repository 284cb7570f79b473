"""LlamaConfig: the hyperparameters of the configurable decoder (defaults: HF LlamaConfig's, plain Llama).

Besides the shapes, each field below the shapes selects one variant of the block or the model that a family
after Llama introduced (docs/families.md has the road): the norm's kind and placement, parallel residuals,
QK-norm, biases, partial and per-layer RoPE, sliding windows, softcaps, scales and multipliers, the MLP's kind.
Every default reproduces Llama exactly, so a config that sets none of them is today's Llama.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..layers.rope import rope_frequencies
from .._checks import is_py_int, is_real

# HF hidden_act values -> the gated unit's activation (npgpt/layers/swiglu.py)
HIDDEN_ACTS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "gelu": "gelu"}
NORM_KINDS = ("rmsnorm", "layernorm")
NORM_PLACEMENTS = ("pre", "post", "sandwich")  # Llama's pre-norm, OLMo 2's post-norm, Gemma 2/3's sandwich
QK_NORMS = (None, "head", "full")  # none; per head over D (Qwen3, Gemma 3); over the whole projection (OLMo 2)
MLP_KINDS = ("gated", "plain")  # down(act(gate) * up) (Llama) or down(act(up)) (GPT-NeoX, Phi-2, Falcon)
LAYER_TYPES = ("full_attention", "sliding_attention")


MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")  # moe_family's flavours (layers/moe.py's moe_spec)
MOE_IMPLS = ("grouped", "clear")
MOE_DEFAULTS: dict[str, Any] = {"n_experts": 8, "top_k": 2, "aux_loss_coef": 0.01}  # --arch moe's experts


BLOCK_STYLES = ("llama", "qwen3", "gemma3", "olmo2", "moe")  # block_style's names: training from scratch (--arch)


def block_style(name: str, n_layer: int, n_embd: int, head_dim: int, block_size: int) -> dict[str, Any]:
    """The LlamaConfig fields that give a new model the block of `name` (its shapes are the caller's):

    qwen3: per-head QK-norm, RoPE base 1e6.  gemma3: (1 + w) RMSNorms in a sandwich, per-head QK-norm, GeGLU,
    embeddings times sqrt(C), scale 1/sqrt(D), five sliding-window layers (W = block_size // 2, local RoPE
    base 1e4) per global one (base 1e6, the last layer always global as in Gemma 3's pattern of 6), tied
    head.  olmo2: post-norm with QK-norm over the whole projection, RoPE base 5e5.  moe: Mixtral's block, a
    mixture of SwiGLU experts in every MLP slot with the load-balancing loss on.  llama: none.
    """
    if name == "llama":
        return {}
    if name == "moe":
        return {"moe_family": "mixtral", "output_router_logits": True}
    if name == "qwen3":
        return {"qk_norm": "head", "rope_theta": 1e6}
    if name == "olmo2":
        return {"norm_placement": "post", "qk_norm": "full", "rope_theta": 5e5}
    if name == "gemma3":
        types = tuple("full_attention" if (i + 1) % 6 == 0 or i == n_layer - 1 else "sliding_attention"
                      for i in range(n_layer))
        return {"norm_offset": 1.0, "norm_placement": "sandwich", "qk_norm": "head",
                "hidden_act": "gelu_pytorch_tanh", "embedding_multiplier": math.sqrt(n_embd),
                "attention_scale": head_dim ** -0.5, "layer_types": types,
                "sliding_window": max(1, block_size // 2), "rope_theta": 1e6, "rope_local_theta": 1e4,
                "tie_word_embeddings": True}
    raise ValueError(f"arch: expected one of {', '.join(BLOCK_STYLES)}, got {name!r}")


@dataclass(frozen=True)
class LlamaConfig:
    """Model shapes.  The defaults are HF LlamaConfig's (Llama 2 7B's shapes)."""

    vocab_size: int = 32000  # V: number of token ids
    block_size: int = 2048  # longest sequence trained on (HF max_position_embeddings); RoPE itself has no table
    n_layer: int = 32  # decoder layers (HF num_hidden_layers)
    n_head: int = 32  # query heads Hq (HF num_attention_heads)
    n_kv_head: int = 32  # key/value heads Hkv, dividing n_head: GQA when smaller, MQA when 1
    n_embd: int = 4096  # C: residual width (HF hidden_size)
    intermediate_size: int = 11008  # F: gated MLP width
    head_dim: int | None = None  # D; None means n_embd // n_head
    rms_norm_eps: float = 1e-6  # eps of every RMSNorm
    rope_theta: float = 10000.0  # RoPE base
    rope_scaling: dict[str, Any] | None = None  # HF rope_scaling, any rope_type (layers/rope.py's
    # rope_frequencies: linear, dynamic, yarn, longrope, llama3); None = plain RoPE
    tie_word_embeddings: bool = False  # lm_head shares embed_tokens' weight (Llama 3.2 1B/3B do)
    hidden_act: str = "silu"  # the MLP's activation (HF names): silu = SwiGLU in a gated MLP
    # --- the variants after Llama (defaults = Llama) ---
    norm_kind: str = "rmsnorm"  # every norm of the model: "rmsnorm" or "layernorm" (GPT-NeoX, Phi-2, StableLM)
    norm_bias: bool = False  # LayerNorm's additive bias (its '.bias' parameters); only with layernorm
    norm_offset: float = 0.0  # RMSNorm scales by (offset + w): Gemma's 1.0
    norm_placement: str = "pre"  # "pre" (Llama), "post" (OLMo 2: norm the branch's output), "sandwich" (Gemma 2/3)
    parallel_residual: bool = False  # out = x + attn(n1(x)) + mlp(n2(x)) (GPT-NeoX, Phi-2, Falcon)
    parallel_shared_norm: bool = False  # the parallel branches read one norm (input_layernorm): Phi-2, Falcon-7B
    qk_norm: str | None = None  # RMSNorm of q and k before RoPE: None, "head" (over D) or "full" (over H D)
    attention_bias: bool = False  # q_proj, k_proj, v_proj have biases (Qwen2, GPT-NeoX, Phi-2)
    o_bias: bool = False  # o_proj has a bias (GPT-NeoX, Phi-2)
    mlp_bias: bool = False  # the MLP's projections have biases
    lm_head_bias: bool = False  # lm_head has a bias (Phi-2)
    partial_rotary_factor: float = 1.0  # RoPE rotates the first int(D * factor) channels of each head
    rope_local_theta: float | None = None  # RoPE base of the sliding-window layers (Gemma 3), without scaling
    rope_interleaved: bool = False  # rotate channel pairs (2i, 2i+1) instead of HF's (i, i + R/2)
    layer_types: tuple[str, ...] | None = None  # per layer "full_attention" / "sliding_attention"; None: every
    # layer sliding when sliding_window is set (Mistral), else full
    sliding_window: int | None = None  # W: query i sees keys i - W < j <= i in a sliding layer (HF's convention)
    no_rope_layers: tuple[int, ...] | None = None  # per layer 1 = RoPE, 0 = no positions (SmolLM3); None: all 1
    attn_logit_softcapping: float | None = None  # c: scores become c tanh(scores / c) (Gemma 2)
    final_logit_softcapping: float | None = None  # c: logits become c tanh(logits / c) (Gemma 2/3)
    attention_scale: float | None = None  # the scores' scale; None = 1/sqrt(D) (Gemma: query_pre_attn_scalar**-0.5)
    embedding_multiplier: float = 1.0  # embeddings times this (Gemma: sqrt(C), rounded to the dtype; Granite)
    residual_multiplier: float = 1.0  # each branch's output times this before its residual add (Granite)
    logits_scaling: float = 1.0  # the logits are divided by this (Granite)
    mlp_kind: str = "gated"  # "gated": down(act(gate) * up); "plain": down(act(up)), no gate_proj
    attention_sinks: bool = False  # one learned sink logit per query head in the softmax (gpt-oss)
    # --- a sparse mixture of experts in the MLP slot (layers/moe.py); moe_family None = a dense MLP ---
    moe_family: str | None = None  # the MoE's flavour (moe.py's moe_spec): mixtral, qwen2_moe, qwen3_moe
    num_experts: int = 8  # E: routed experts per MoE layer
    num_experts_per_tok: int = 2  # K: experts each token is sent to (top_k)
    norm_topk_prob: bool | None = None  # renormalise the K chosen weights to sum 1; None: the family's default
    moe_intermediate_size: int | None = None  # F of each expert; None: intermediate_size
    shared_expert_intermediate_size: int | None = None  # Qwen2-MoE's sigmoid-gated shared expert width (or None)
    decoder_sparse_step: int = 1  # layer i is sparse when (i + 1) % step == 0 (Qwen2/3-MoE), else dense
    mlp_only_layers: tuple[int, ...] = ()  # these layers keep a dense MLP (Qwen2/3-MoE)
    router_aux_loss_coef: float = 0.0  # the loss adds coef * load-balancing loss (with output_router_logits)
    output_router_logits: bool = False  # compute the load-balancing loss over every MoE layer's router logits
    moe_impl: str = "grouped"  # "grouped" (moe_grouped.py, fast) or "clear" (moe.py's loop): equal results

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size"):
            value = getattr(self, name)
            if not is_py_int(value) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head: expected a multiple of n_kv_head={self.n_kv_head}, got {self.n_head}")
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}")
        elif not is_py_int(self.head_dim) or self.head_dim < 1:
            raise ValueError(f"head_dim: expected a positive integer or None, got {self.head_dim!r}")
        eps = self.rms_norm_eps
        if not is_real(eps) or not eps > 0:
            raise ValueError(f"rms_norm_eps: expected a positive number, got {eps!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"tie_word_embeddings: expected True or False, got {self.tie_word_embeddings!r}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act: expected one of {', '.join(HIDDEN_ACTS)}, got {self.hidden_act!r}")
        self._check_variants()
        self._check_moe()
        rope_frequencies(self.rotary_dim, self.rope_theta, self.rope_scaling,
                         max_position_embeddings=self.block_size)  # theta and rope_scaling errors

    def _check_variants(self) -> None:
        """The post-Llama fields: each error names its field."""
        def choice(name: str, options: tuple[object, ...]) -> None:
            value = getattr(self, name)
            if value not in options or (value is not None and not isinstance(value, str)):
                raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")

        def flag(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")

        def number(name: str, optional: bool = False, positive: bool = True) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not is_real(value) or isinstance(value, bool) or not math.isfinite(value) \
                    or (positive and not value > 0):
                what = "a finite number > 0" if positive else "a finite number"
                raise ValueError(f"{name}: expected {what}{' or None' if optional else ''}, got {value!r}")

        choice("norm_kind", NORM_KINDS)
        choice("norm_placement", NORM_PLACEMENTS)
        choice("qk_norm", QK_NORMS)
        choice("mlp_kind", MLP_KINDS)
        for name in ("norm_bias", "parallel_residual", "parallel_shared_norm", "attention_bias", "o_bias",
                     "mlp_bias", "lm_head_bias", "rope_interleaved", "attention_sinks"):
            flag(name)
        number("norm_offset", positive=False)
        for name in ("embedding_multiplier", "residual_multiplier", "logits_scaling"):
            number(name)
        for name in ("attn_logit_softcapping", "final_logit_softcapping", "attention_scale"):
            number(name, optional=True)
        if self.norm_bias and self.norm_kind != "layernorm":
            raise ValueError("norm_bias: only a LayerNorm has a bias (set norm_kind='layernorm')")
        if self.norm_offset != 0.0 and self.norm_kind != "rmsnorm":
            raise ValueError(f"norm_offset: only an RMSNorm scales by (offset + w), got norm_kind="
                             f"{self.norm_kind!r}")
        if self.parallel_shared_norm and not self.parallel_residual:
            raise ValueError("parallel_shared_norm: needs parallel_residual=True")
        if self.parallel_residual and self.norm_placement != "pre":
            raise ValueError(f"parallel_residual: the parallel block is pre-norm, got norm_placement="
                             f"{self.norm_placement!r}")
        if self.qk_norm is not None and self.norm_kind != "rmsnorm":
            raise ValueError(f"qk_norm: is an RMSNorm of q and k (norm_kind='rmsnorm'), got norm_kind="
                             f"{self.norm_kind!r}")
        if self.mlp_kind == "plain" and self.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"hidden_act: a plain MLP is implemented with GELU (gelu, gelu_new, "
                             f"gelu_pytorch_tanh), got {self.hidden_act!r}")
        factor = self.partial_rotary_factor
        number("partial_rotary_factor")
        if factor == 1.0 and self.head_size % 2:
            raise ValueError(f"head_dim: RoPE rotates channel pairs, so the head dim must be even, "
                             f"got {self.head_size}")
        if factor > 1.0:
            raise ValueError(f"partial_rotary_factor: expected a fraction in (0, 1], got {factor!r}")
        R = self.rotary_dim
        if R < 2 or R % 2:
            raise ValueError(f"partial_rotary_factor: int(head_dim * factor) = {R} must be an even number >= 2")
        if self.rope_local_theta is not None:
            rope_frequencies(R, self.rope_local_theta, None)  # its errors name theta
            number("rope_local_theta")
        if self.sliding_window is not None and (not is_py_int(self.sliding_window) or self.sliding_window < 1):
            raise ValueError(f"sliding_window: expected a positive integer or None, got {self.sliding_window!r}")
        if self.layer_types is not None:
            lt = self.layer_types
            if not isinstance(lt, tuple) or len(lt) != self.n_layer or any(t not in LAYER_TYPES for t in lt):
                raise ValueError(f"layer_types: expected a tuple of {self.n_layer} (n_layer) entries from "
                                 f"{', '.join(LAYER_TYPES)}, got {lt!r}")
            if "sliding_attention" in lt and self.sliding_window is None:
                raise ValueError("layer_types: sliding_attention layers need a sliding_window")
        if self.no_rope_layers is not None:
            nr = self.no_rope_layers
            if not isinstance(nr, tuple) or len(nr) != self.n_layer or any(
                    not is_py_int(u) or u not in (0, 1) for u in nr):
                raise ValueError(f"no_rope_layers: expected a tuple of {self.n_layer} (n_layer) entries 0 or 1 "
                                 f"(1 = RoPE), got {nr!r}")

    def _check_moe(self) -> None:
        """The mixture-of-experts fields: each error names its field."""
        if self.moe_family is None:
            return
        if self.moe_family not in MOE_FAMILIES:
            raise ValueError(f"moe_family: expected None or one of {', '.join(MOE_FAMILIES)}, got "
                             f"{self.moe_family!r}")
        E, K = self.num_experts, self.num_experts_per_tok
        if not is_py_int(E) or E < 1:
            raise ValueError(f"num_experts: expected a positive integer, got {E!r}")
        if not is_py_int(K) or not 1 <= K <= E:
            raise ValueError(f"num_experts_per_tok: expected an integer in [1, num_experts={E}], got {K!r}")
        for name in ("moe_intermediate_size", "shared_expert_intermediate_size"):
            v = getattr(self, name)
            if v is not None and (not is_py_int(v) or v < 1):
                raise ValueError(f"{name}: expected a positive integer or None, got {v!r}")
        if self.moe_family == "qwen2_moe" and self.shared_expert_intermediate_size is None:
            raise ValueError("shared_expert_intermediate_size: qwen2_moe has a shared expert; expected its width")
        if self.moe_family != "qwen2_moe" and self.shared_expert_intermediate_size is not None:
            raise ValueError(f"shared_expert_intermediate_size: only qwen2_moe has a shared expert, got "
                             f"moe_family={self.moe_family!r}")
        if self.norm_topk_prob is not None and not isinstance(self.norm_topk_prob, bool):
            raise ValueError(f"norm_topk_prob: expected True, False or None, got {self.norm_topk_prob!r}")
        if not is_py_int(self.decoder_sparse_step) or self.decoder_sparse_step < 1:
            raise ValueError(f"decoder_sparse_step: expected a positive integer, got {self.decoder_sparse_step!r}")
        mo = self.mlp_only_layers
        if not isinstance(mo, tuple) or any(not is_py_int(i) or not 0 <= i < self.n_layer for i in mo):
            raise ValueError(f"mlp_only_layers: expected a tuple of layer indices in [0, {self.n_layer}), got {mo!r}")
        c = self.router_aux_loss_coef
        if not is_real(c) or isinstance(c, bool) or not math.isfinite(c) or c < 0:
            raise ValueError(f"router_aux_loss_coef: expected a finite number >= 0, got {c!r}")
        if not isinstance(self.output_router_logits, bool):
            raise ValueError(f"output_router_logits: expected True or False, got {self.output_router_logits!r}")
        if self.moe_impl not in MOE_IMPLS:
            raise ValueError(f"moe_impl: expected one of {', '.join(MOE_IMPLS)}, got {self.moe_impl!r}")
        if self.mlp_kind != "gated" or self.mlp_bias or self.activation != "silu":
            raise ValueError("moe_family: the experts are SwiGLU MLPs (mlp_kind='gated', hidden_act='silu', "
                             "no mlp_bias)")

    def is_moe_layer(self, i: int) -> bool:
        """Whether layer i's MLP slot holds the mixture of experts (Qwen2-MoE's rule: not in mlp_only_layers,
        and (i + 1) a multiple of decoder_sparse_step)."""
        return self.moe_family is not None and i not in self.mlp_only_layers \
            and (i + 1) % self.decoder_sparse_step == 0

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """The indices of the sparse layers, in order."""
        return tuple(i for i in range(self.n_layer) if self.is_moe_layer(i))

    @property
    def aux_loss_on(self) -> bool:
        """Whether the loss adds router_aux_loss_coef times the load-balancing loss (as MixtralForCausalLM)."""
        return self.output_router_logits and bool(self.moe_layers)

    @property
    def rotary_dim(self) -> int:
        """R: the rotated channels of each head, int(D * partial_rotary_factor) as HF computes it."""
        return int(self.head_size * self.partial_rotary_factor)

    def layer_window(self, i: int) -> int | None:
        """Layer i's sliding window W, or None for full attention."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return self.sliding_window  # Mistral: every layer slides
        return self.sliding_window if self.layer_types[i] == "sliding_attention" else None

    def layer_rope(self, i: int) -> bool:
        """Whether layer i rotates q and k (SmolLM3's no_rope_layers: 0 = no positions)."""
        return self.no_rope_layers is None or bool(self.no_rope_layers[i])

    @property
    def head_size(self) -> int:
        """D: head_dim, or n_embd // n_head."""
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @property
    def activation(self) -> str:
        """The gated unit's activation name in npgpt/layers/swiglu.py."""
        return HIDDEN_ACTS[self.hidden_act]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        """Build from a dict of these field names (unknown keys are an error; missing ones take the defaults)."""
        extra = set(d) - set(cls.__dataclass_fields__)
        if extra:
            raise ValueError(f"config: unexpected keys {sorted(extra)}")
        d = dict(d)
        for key in ("layer_types", "no_rope_layers", "mlp_only_layers"):  # JSON gives lists; the config keeps tuples
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def training_widths(n_head: int, n_embd: int, n_kv_head: int | None,
                    intermediate_size: int | None) -> tuple[int, int]:
    """A training run's llama widths with their defaults resolved: n_kv_head = n_head, intermediate_size =
    8 n_embd / 3 up to a multiple of 8."""
    return n_kv_head or n_head, intermediate_size or 8 * math.ceil(n_embd / 3)


def training_config(*, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                    dropout: float = 0.0, n_kv_head: int | None = None, intermediate_size: int | None = None,
                    style: str = "llama", n_experts: int | None = None, top_k: int | None = None,
                    aux_loss_coef: float | None = None, **preset: Any) -> LlamaConfig:
    """The LlamaConfig `npgpt train --arch STYLE` builds from the run's widths: RMSNorm eps 1e-5 and a tied head,
    as Llama 3.2's small models, with the block of `style` (block_style: llama, qwen3, gemma3, olmo2, moe);
    `preset` sets further fields.  The moe style's experts: n_experts (default 8), top_k (2), and the
    load-balancing loss's coefficient aux_loss_coef (0.01); other styles refuse them."""
    if dropout:
        raise ValueError(f"dropout: the {style} arch has no dropout; expected 0, got {dropout}")
    moe = {"n_experts": n_experts, "top_k": top_k, "aux_loss_coef": aux_loss_coef}
    if style == "moe":
        preset = {"num_experts": MOE_DEFAULTS["n_experts"] if n_experts is None else n_experts,
                  "num_experts_per_tok": MOE_DEFAULTS["top_k"] if top_k is None else top_k,
                  "router_aux_loss_coef": MOE_DEFAULTS["aux_loss_coef"] if aux_loss_coef is None else aux_loss_coef,
                  **preset}
        E, K = preset["num_experts"], preset["num_experts_per_tok"]
        if is_py_int(E) and is_py_int(K) and E >= 1 and K > E:
            raise ValueError(f"top_k: expected at most n_experts={E}, got {K}")
    else:
        given = next((k for k, v in moe.items() if v is not None), None)
        if given is not None:
            raise ValueError(f"{given}: only --arch moe has experts (got the {style} arch)")
    n_kv_head, intermediate_size = training_widths(n_head, n_embd, n_kv_head, intermediate_size)
    if n_embd % n_head:
        raise ValueError(f"n_embd: expected a multiple of n_head={n_head}, got {n_embd}")
    fields = {"rms_norm_eps": 1e-5, "tie_word_embeddings": True,
              **block_style(style, n_layer, n_embd, n_embd // n_head, block_size), **preset}
    return LlamaConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_kv_head=n_kv_head, n_embd=n_embd, intermediate_size=intermediate_size, **fields)
