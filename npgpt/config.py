"""GPTConfig: the hyperparameters that fix a GPT-2-architecture model's shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ._checks import is_real


@dataclass(frozen=True)
class GPTConfig:
    """Model shapes.  The defaults are GPT-2 small (124M); n_embd must be divisible by n_head."""

    vocab_size: int = 50257  # V: number of token ids (GPT-2's BPE vocabulary)
    block_size: int = 1024  # longest sequence the model reads (rows of the position embedding)
    n_layer: int = 12  # number of transformer blocks
    n_head: int = 12  # attention heads per block; head size D = n_embd // n_head
    n_embd: int = 768  # C: width of the residual stream
    dropout: float = 0.0  # drop probability on embeddings and residual branches, training only

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:  # a Python int (JSON-able; not a bool, not a NumPy int)
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")

    @property
    def head_size(self) -> int:
        """D = n_embd // n_head."""
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Build from a dict of these field names (unknown or missing keys are an error; dropout may be omitted)."""
        fields = set(cls.__dataclass_fields__)
        extra, missing = set(d) - fields, fields - set(d) - {"dropout"}
        if extra or missing:
            raise ValueError(f"config: unexpected keys {sorted(extra)}, missing keys {sorted(missing)}")
        return cls(**d)
