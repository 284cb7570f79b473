"""The one list of layer pairs (npgpt/layers/registry.py, plus each family's PAIRS) against everything that
derives from it or must mirror it: exports, files, derivation pages, tests, oracle cases, and the families."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import npgpt
from npgpt import families
from npgpt.families import all_pairs
from npgpt.layers.registry import PAIRS
from npgpt.oracle.registry import CASES

ROOT = Path(__file__).resolve().parents[1]
NOT_PAIRS = {"__init__", "registry", "reductions", "topk"}  # modules of npgpt/layers that hold no pair


@pytest.mark.parametrize("pair", all_pairs(), ids=lambda p: p.name)
def test_each_pair_has_its_functions_file_page_and_test(pair):
    module = importlib.import_module(pair.module_name)
    assert callable(getattr(module, pair.forward))
    if pair.backward:
        assert callable(getattr(module, pair.backward)) and pair.grads
    else:  # forward only (a form held equal to another pair's forward): no backward, so no gradients
        assert pair.grads == () and not hasattr(module, pair.forward.replace("_forward", "_backward"))
    assert (ROOT / "docs" / pair.doc_path).is_file()
    assert (ROOT / "tests" / f"test_{pair.name}.py").is_file()


def test_mla_gradient_names_follow_its_parameter_list():
    """registry.py spells mla's gradients out (it imports nothing); they must follow MLA_PARAM_NAMES, the
    order of the dict mla_backward returns (the seeded-error plugin flattens it in that order)."""
    from npgpt.layers.mla import MLA_PARAM_NAMES

    (pair,) = [p for p in PAIRS if p.name == "mla"]
    assert pair.grads == ("dx", *(f"d[{n}]" for n in MLA_PARAM_NAMES))


def test_every_layer_module_is_registered_and_exported():
    files = {p.stem for p in (ROOT / "npgpt" / "layers").glob("*.py")} - NOT_PAIRS
    assert files == {p.name for p in PAIRS}
    for p in PAIRS:
        assert getattr(npgpt.layers, p.forward) is getattr(npgpt, p.forward)
        assert p.forward in npgpt.layers.__all__ and (not p.backward or p.backward in npgpt.layers.__all__)


def test_the_oracle_covers_every_pair():
    """Each pair's forward is the forward of at least one golden-file case (attention_chunks is the chunked
    schedule of sdpa's own call, covered through the models' cases)."""
    covered = {str(c.forward).rsplit(".", 1)[-1] for c in CASES.values()}
    missing = [p.name for p in all_pairs() if p.forward not in covered and p.name != "attention_chunks"]
    assert not missing, f"pairs without an oracle case: {missing}"


def test_pair_names_are_unique():
    names = [p.name for p in all_pairs()]
    assert len(names) == len(set(names))


def test_every_family_is_complete():
    for name, f in families.FAMILIES.items():
        assert f.name == name and f.core.name == name and f.core.config_class is f.config_class
        assert f.hf_model_types and all(families.model_types()[t] is f for t in f.hf_model_types)
        assert families.family_of(f.config_class.__new__(f.config_class)) is f
