"""LlamaConfig: the hyperparameters that fix a Llama-style model's shapes (HF LlamaConfig's defaults)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..layers.rope import rope_inv_freq
from .._checks import is_py_int, is_real

# HF hidden_act values -> the gated unit's activation (npgpt/layers/swiglu.py)
HIDDEN_ACTS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "gelu": "gelu"}


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
    rope_scaling: dict[str, Any] | None = None  # HF rope_scaling (linear, llama3); None = plain RoPE
    tie_word_embeddings: bool = False  # lm_head shares embed_tokens' weight (Llama 3.2 1B/3B do)
    hidden_act: str = "silu"  # the gate's activation: silu = SwiGLU

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
        if self.head_size % 2:
            raise ValueError(f"head_dim: RoPE rotates channel pairs, so the head dim must be even, "
                             f"got {self.head_size}")
        eps = self.rms_norm_eps
        if not is_real(eps) or not eps > 0:
            raise ValueError(f"rms_norm_eps: expected a positive number, got {eps!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"tie_word_embeddings: expected True or False, got {self.tie_word_embeddings!r}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act: expected one of {', '.join(HIDDEN_ACTS)}, got {self.hidden_act!r}")
        rope_inv_freq(self.head_size, self.rope_theta, self.rope_scaling)  # theta and rope_scaling errors

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
        return cls(**d)


def training_widths(n_head: int, n_embd: int, n_kv_head: int | None,
                    intermediate_size: int | None) -> tuple[int, int]:
    """A training run's llama widths with their defaults resolved: n_kv_head = n_head, intermediate_size =
    8 n_embd / 3 up to a multiple of 8."""
    return n_kv_head or n_head, intermediate_size or 8 * math.ceil(n_embd / 3)


def training_config(*, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                    dropout: float = 0.0, n_kv_head: int | None = None, intermediate_size: int | None = None,
                    **preset: Any) -> LlamaConfig:
    """The LlamaConfig `npgpt train --arch llama` (or a preset of the family) builds from the run's widths:
    RMSNorm eps 1e-5 and a tied head, as Llama 3.2's small models; `preset` sets further fields."""
    if dropout:
        raise ValueError(f"dropout: the llama arch has no dropout; expected 0, got {dropout}")
    n_kv_head, intermediate_size = training_widths(n_head, n_embd, n_kv_head, intermediate_size)
    fields = {"rms_norm_eps": 1e-5, "tie_word_embeddings": True, **preset}
    return LlamaConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_kv_head=n_kv_head, n_embd=n_embd, intermediate_size=intermediate_size, **fields)
