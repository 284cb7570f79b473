"""npgpt/oracle/attention_cases.py: every attention oracle case is well formed, its stored arrays are what the
pairs compute (dense against tiled, finite differences on the combined case), and float32 obeys the
baseline tolerance rule documented in docs/oracle.md."""

import numpy as np
import pytest
from helpers import gradcheck

from npgpt.oracle.attention_cases import CASES, VARIANTS, _run_sdpa
from npgpt.oracle.case import sizes
from npgpt.oracle.dump import case_rng
from npgpt.oracle.registry import CASE_NAMES

SIZES = sizes({})
BY_NAME = {c.name: c for c in CASES}


def _stored(case, dtype):
    raw, args = case.make(case_rng(0, case.name), SIZES)
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in raw.items()}, args


def _baseline_rule(err, base, ref, dtype, k=2.0):
    """docs/oracle.md: max error <= k * (max error of npgpt in the same dtype) + 4 eps max|ref|."""
    return err <= k * base + 4 * np.finfo(dtype).eps * np.max(np.abs(ref), initial=0.0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_is_well_formed(case):
    """The stored keys are exactly in.<inputs>, dout, dlse; run returns outputs and grad.<grads>, in the stored
    dtype, without NaN, in both dtypes."""
    for dtype in ("float64", "float32"):
        a, args = _stored(case, dtype)
        assert set(a) == {f"in.{n}" for n in case.inputs} | {"dout", "dlse"}
        r = case.run(a, args)
        assert set(r) == set(case.outputs) | {f"grad.{g}" for g in case.grads}
        for key, val in r.items():
            assert val.dtype == np.dtype(dtype), key
            assert not np.any(np.isnan(val)), key
            if key.startswith("grad."):
                assert val.shape == a[f"in.{key[5:]}"].shape, key


def test_registered():
    """Every attention case is in the oracle's registry (so `python -m npgpt.oracle dump` writes it)."""
    assert {c.name for c in CASES} <= set(CASE_NAMES)


def test_every_option_has_a_case():
    """Each sdpa option appears in at least one variant; the fully-masked-row cases do produce -inf rows."""
    used = {key for v in VARIANTS.values() for key in v}
    assert {"causal", "G", "tk", "tq", "dv", "padding", "segments", "window", "sinks", "softcap", "bias",
            "scale", "dropout", "tiled"} <= used
    for name in ("sdpa_rows_before_first_key", "sdpa_key_padding"):
        a, args = _stored(BY_NAME[name], "float64")
        assert np.any(np.isneginf(BY_NAME[name].run(a, args)["lse"]))


@pytest.mark.parametrize("case", [c for c in CASES if c.run is _run_sdpa], ids=lambda c: c.name)
def test_dense_and_tiled_agree_on_every_case(case):
    """Recomputing each sdpa case with the other pair (tiled with 2 x 2 blocks, or dense) gives the same out,
    lse and gradients to float64 round-off."""
    a, args = _stored(case, "float64")
    other = dict(args)
    if "block_q" in other:
        del other["block_q"], other["block_k"]
    else:
        other["block_q"] = other["block_k"] = 2
    r, r2 = case.run(a, args), case.run(a, other)
    for key in r:
        np.testing.assert_allclose(r2[key], r[key], rtol=1e-12, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("name", ["sdpa_everything", "merge_attention", "sdpa_qkv"])
def test_gradients_by_finite_differences(name):
    """The stored gradients of the combined cases match finite differences of sum(out dout) + sum(lse dlse)."""
    case = BY_NAME[name]
    a, args = _stored(case, "float64")
    n_out = int(np.prod(a["dout"].shape))

    def f(*xs):
        b = dict(a, **{f"in.{g}": x for g, x in zip(case.grads, xs)})
        r = case.run(b, args)
        lse = np.where(np.isneginf(r["lse"]), 0.0, r["lse"])
        return np.concatenate([r["out"].ravel(), lse.ravel()]), r

    def g(d, r):
        assert np.array_equal(d[:n_out], a["dout"].ravel()) and np.array_equal(d[n_out:], a["dlse"].ravel())
        return tuple(r[f"grad.{gname}"] for gname in case.grads)

    dout = np.concatenate([a["dout"].ravel(), a["dlse"].ravel()])
    gradcheck(f"oracle_{name}", f, g, [a[f"in.{gname}"] for gname in case.grads], names=list(case.grads),
              rng=np.random.default_rng(0), dout=dout)


@pytest.mark.parametrize("case", [c for c in CASES if c.run is _run_sdpa], ids=lambda c: c.name)
def test_float32_baseline_rule(case):
    """The tiled pair in float32 passes the rule with the dense float32 result as the baseline, and a kernel
    with a 1e-4 error in its scale fails it: the rule separates round-off from a bug."""
    a64, args = _stored(case, "float64")
    a32, _ = _stored(case, "float32")
    ref, base = case.run(a64, args), case.run(a32, args)
    other = dict(args, block_q=2, block_k=3) if "block_q" not in args else \
        {k: v for k, v in args.items() if k not in ("block_q", "block_k")}
    test = case.run(a32, other)
    wrong = case.run(a32, dict(args, scale=float(args.get("scale", a32["in.q"].shape[-1] ** -0.5)) * (1 + 1e-4)))
    caught = False
    for key in ref:
        fin = np.isfinite(ref[key])
        r = ref[key][fin]
        b_err = np.max(np.abs(base[key][fin] - r), initial=0.0)
        t_err = np.max(np.abs(test[key][fin] - r), initial=0.0)
        w_err = np.max(np.abs(wrong[key][fin] - r), initial=0.0)
        assert _baseline_rule(t_err, b_err, r, np.float32), (key, t_err, b_err)
        caught |= not _baseline_rule(w_err, b_err, r, np.float32)
    assert caught
