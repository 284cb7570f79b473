"""What an oracle case is: the record every case module exports, and the sizes cases are built from.

A case has a `make(rng, sizes) -> (arrays, args)`: random float64 inputs (keys `in.<name>`, or `param.<name>`
and `idx`/`targets` for a whole model), the upstream gradient(s) (`dout`, and `dlse` for a second output),
and the JSON-able non-array arguments; and a `run(arrays, args) -> arrays`: npgpt's forward and backward on
the stored arrays, in whatever dtype they are stored, returning the outputs and `grad.<name>` keys.
dump_cases calls both; check_path calls only `run`, on the arrays read back from a file.
The registry of case modules: registry.py.  The protocol in prose: docs/oracle.md ("Adding cases").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import positive_int
from ..optim import AdamW

__all__ = ["Case", "Sizes", "sizes", "DEFAULT_SHAPES", "Arrays", "OracleError"]

Arrays = dict[str, np.ndarray]

class OracleError(ValueError):
    """A file or argument the oracle cannot use (unreadable, not a case file, inputs npgpt rejects).
    A case's run raises it for stored inputs it cannot use; the checker prefixes the file's path."""


# the dump's default sizes: small, so a whole dump and its check take well under a second
DEFAULT_SHAPES: dict[str, int] = {"batch": 2, "seq": 5, "channels": 8, "heads": 2, "vocab": 11, "layers": 2}


@dataclass(frozen=True)
class Sizes:
    """The sizes every case is built from (dump_cases' shape options): B, T, C, H, V, L and D = C // H."""

    B: int
    T: int
    C: int
    H: int
    V: int
    L: int

    @property
    def D(self) -> int:
        return self.C // self.H

    def as_dict(self) -> dict[str, int]:
        return {"B": self.B, "T": self.T, "C": self.C, "H": self.H, "D": self.D, "V": self.V, "L": self.L}


def sizes(options: Mapping[str, Any]) -> Sizes:
    """Sizes from shape options (batch, seq, channels, heads, vocab, layers; the rest from DEFAULT_SHAPES)."""
    unknown = set(options) - set(DEFAULT_SHAPES)
    if unknown:
        raise ValueError(f"shape_options: unknown option(s) {sorted(unknown)}; expected {list(DEFAULT_SHAPES)}")
    s = {**DEFAULT_SHAPES, **options}
    for name, value in s.items():
        positive_int(name, value)
    if s["vocab"] < 2:  # one token: every softmax over the vocabulary is 1, every cross-entropy 0
        raise ValueError(f"vocab: expected at least 2, got {s['vocab']} (with one token every cross-entropy is 0 "
                         f"and its gradients vanish: the cases would be degenerate)")
    if s["channels"] % s["heads"]:
        raise ValueError(f"channels: expected a multiple of heads={s['heads']}, got {s['channels']}")
    return Sizes(int(s["batch"]), int(s["seq"]), int(s["channels"]), int(s["heads"]), int(s["vocab"]),
                  int(s["layers"]))


@dataclass(frozen=True)
class Case:
    """One oracle case.  Any record with these fields will do (case modules may define their own)."""

    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str
    inputs: tuple[str, ...]  # array arguments of the forward, in order: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs in the order the backward returns them: keys grad.<name>
    make: Callable[[np.random.Generator, Sizes], tuple[Arrays, dict[str, Any]]]
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out",)  # keys computed by the forward besides the gradients


def run_training(model: Any, a: Arrays, args: Mapping[str, Any], names: list[str]) -> Arrays:
    """A whole-model training case, for any family's model (GPT, Llama): copy the case's `param.<name>`
    arrays into model.params, take args["adamw"]["steps"] AdamW steps on in.idx / in.targets, and return
    the first step's logits, loss and `grad.<name>`, every step's loss and the `final.<name>` parameters."""
    dtype = model.dtype
    for k in names:
        src = a[f"param.{k}"]
        if src.shape != model.params[k].shape or src.dtype != dtype:
            raise OracleError(f"param.{k}: expected {dtype} {model.params[k].shape}, got {src.dtype} {src.shape}")
        model.params[k][...] = src
    hp = args["adamw"]
    if hp.get("grad_clip") is not None or hp.get("lr_schedule", "constant") != "constant":
        raise OracleError("meta.adamw: only a constant lr without clipping is supported")
    opt = AdamW(model.params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"])
    result: Arrays = {}
    losses = []
    for step in range(int(hp["steps"])):
        logits, loss = model.forward(a["idx"], a["targets"])  # (B, T, V), 0-d
        grads = model.backward()
        if step == 0:
            result["logits"] = logits
            result["loss"] = np.array(loss)
            result.update({f"grad.{k}": grads[k].copy() for k in names})
        losses.append(loss)
        opt.step(grads)
    result["train.losses"] = np.array(losses, dtype=dtype)
    result.update({f"final.{k}": model.params[k].copy() for k in names})
    return result
