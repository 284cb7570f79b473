"""npgpt/oracle/llama_cases.py: every case builds and runs in float64 and float32 and has its keys; float32
agrees with float64 to the oracle's float32 tolerance; the training case matches the model's own backward."""

from types import SimpleNamespace

import numpy as np
import pytest

from npgpt.llama import LlamaConfig, llama_backward, llama_forward
from npgpt.oracle.llama_cases import CASES

SIZES = SimpleNamespace(B=2, T=5, C=8, H=2, D=4, V=11, L=2)
NAMES = [c.name for c in CASES]


def _f32(a):
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in a.items()}


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_case_runs_in_both_dtypes(case):
    arrays, args = case.make(np.random.default_rng(0), SIZES)
    assert all(f"in.{n}" in arrays for n in case.inputs)
    r64 = case.run(arrays, args)
    assert set(case.outputs) <= set(r64) and all(f"grad.{g}" in r64 for g in case.grads)
    for g in case.grads:
        assert r64[f"grad.{g}"].shape == arrays[f"in.{g}"].shape
    r32 = case.run(_f32(arrays), args)
    for k, v in r64.items():
        assert r32[k].dtype == (np.float32 if v.dtype == np.float64 else v.dtype), k
        scale = max(float(np.max(np.abs(v))), 1e-30)
        assert float(np.max(np.abs(r32[k] - v))) <= 1e-3 * scale, k  # float32 round-off (AdamW steps amplify)
    again = case.run(arrays, args)
    assert all(np.array_equal(again[k], r64[k]) for k in r64)  # deterministic


def test_names_are_unique_and_cover_every_pair():
    assert len(set(NAMES)) == len(NAMES)
    layers = {c.forward.rsplit(".", 1)[-1] for c in CASES}
    assert layers == {"rmsnorm_forward", "rope_forward", "swiglu_forward", "gated_mlp_forward", "repeat_kv_forward",
                      "cross_entropy_forward", "llama_forward"}


def test_llama_train_step_is_the_model_and_learns():
    case = CASES[NAMES.index("llama_train")]
    arrays, args = case.make(np.random.default_rng(1), SIZES)
    result = case.run(arrays, args)
    config = LlamaConfig.from_dict(args["config"])
    assert config.n_kv_head < config.n_head  # GQA
    params = {k: arrays[f"param.{k}"] for k in args["param_names"]}
    logits, loss, cache = llama_forward(params, config, arrays["idx"], arrays["targets"])
    assert np.array_equal(result["logits"], logits) and float(result["loss"]) == float(loss)
    for k, g in llama_backward(cache).items():
        assert np.array_equal(result[f"grad.{k}"], g), k
    losses = result["train.losses"]
    assert losses[-1] < losses[0]
    assert not np.array_equal(result["final.model.norm.weight"], params["model.norm.weight"])
