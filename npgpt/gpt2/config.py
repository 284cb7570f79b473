"""GPTConfig: the hyperparameters that fix a GPT-2-architecture model's shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._checks import is_real


@dataclass(frozen=True)
class GPTConfig:
    """Model shapes.  The defaults are GPT-2 small (124M); n_embd must be divisible by n_head."""

    vocab_size: int = 50257  # V: number of token ids (GPT-2's BPE vocabulary)
    block_size: int = 1024  # longest sequence the model reads (rows of the position embedding)
    n_layer: int = 12  # number of transformer blocks
    n_head: int = 12  # attention heads per block; head size D = n_embd // n_head
    n_embd: int = 768  # C: width of the residual stream
    dropout: float = 0.0  # drop probability on embeddings and residual branches, training only
    attention_block: int | None = None  # None: dense attention (GPT-2's fast path); an int: the tiled pair
    # (layers/sdpa_tiled.py) with blocks of that many queries and keys, memory linear in T instead of T^2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:  # a Python int (JSON-able; not a bool, not a NumPy int)
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.attention_block is not None and (type(self.attention_block) is not int or self.attention_block < 1):
            raise ValueError(f"attention_block: expected None or a positive integer, got {self.attention_block!r}")

    @property
    def head_size(self) -> int:
        """D = n_embd // n_head."""
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; attention_block only when set (so dense configs keep their old form)."""
        d = asdict(self)
        if d["attention_block"] is None:
            del d["attention_block"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Build from a dict of these field names (unknown or missing keys are an error; dropout and
        attention_block may be omitted)."""
        fields = set(cls.__dataclass_fields__)
        extra, missing = set(d) - fields, fields - set(d) - {"dropout", "attention_block"}
        if extra or missing:
            raise ValueError(f"config: unexpected keys {sorted(extra)}, missing keys {sorted(missing)}")
        return cls(**d)


def training_config(*, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                    dropout: float = 0.0, n_kv_head: int | None = None,
                    intermediate_size: int | None = None) -> GPTConfig:
    """The GPTConfig `npgpt train --arch gpt2` builds from the run's widths (families.arch_config).
    GPT-2 has no separate key/value heads or MLP width: giving either is a one-line error."""
    for name, value in (("n_kv_head", n_kv_head), ("intermediate_size", intermediate_size)):
        if value is not None:
            raise ValueError(f"{name}: only the llama arch has it (--arch llama); got {value} for arch "
                             f"'gpt2'")
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     dropout=dropout)
