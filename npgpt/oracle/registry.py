"""The oracle's case registry: every case of every model family, by name.

Each model family keeps its cases in its own module, npgpt/oracle/<family>_cases.py, which exports `CASES`:
a sequence of records with the fields of case.Case (name, forward, backward, inputs, grads, make, run,
outputs; case modules may define their own NamedTuple with those fields).  To register a family, add its
module's name to CASE_MODULES: the registry imports each module in that order and `dump` writes their cases
in that order.  Names must be unique across modules.  The protocol in prose: docs/oracle.md ("Adding cases").
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CASE_MODULES", "CASES", "CASE_NAMES", "get_case"]

CASE_MODULES: tuple[str, ...] = ("gpt2_cases", "attention_cases", "llama_cases", "mla_cases", "decoder_cases",
                                 "moe_cases")

_FIELDS = ("name", "forward", "backward", "inputs", "grads", "make", "run", "outputs")


def _load(modules: tuple[str, ...]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for module_name in modules:
        module = importlib.import_module(f"{__package__}.{module_name}")
        for case in module.CASES:
            missing = [f for f in _FIELDS if not hasattr(case, f)]
            if missing:
                raise TypeError(f"{module_name}.CASES: {case!r} lacks the field(s) {missing}")
            if case.name in cases:
                raise ValueError(f"{module_name}.CASES: case name {case.name!r} is already registered")
            cases[case.name] = case
    return cases


CASES: dict[str, Any] = _load(CASE_MODULES)  # name -> case record, in registration order
CASE_NAMES: tuple[str, ...] = tuple(CASES)


def get_case(name: str) -> Any:
    """The registered case called name (KeyError if none)."""
    return CASES[name]
