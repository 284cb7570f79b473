"""moe_forward / moe_backward: the clear MoE layer (router, experts, shared expert), HF checkpoint names."""

import os

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import CASES, case_inputs

from npgpt.layers.moe import moe_backward, moe_forward, moe_param_shapes, moe_spec, router_keys

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "moe")
names = st.sampled_from(sorted(CASES))
leads = st.sampled_from([(1,), (4,), (2, 3), (1, 5)])


def pack(forward, spec, params):
    """A (forward, backward) pair over arrays for check_layer: inputs x and the trainable parameters in order,
    output out and router_logits flattened together (so drouter_logits is checked too)."""
    corr = router_keys(spec)[2]
    keys = [k for k in params if k != corr]

    def fwd(x, *ws):
        p = dict(zip(keys, ws))
        if corr is not None:
            p[corr] = params[corr]
        out, z, cache = forward(x, p, spec)
        return np.concatenate([out.reshape(-1), z.reshape(-1)]), (cache, out.shape, z.shape)

    def bwd(d, c):
        cache, oshape, zshape = c
        n = int(np.prod(oshape))
        dx, g = BACKWARD[forward](d[:n].reshape(oshape), cache, d[n:].reshape(zshape))
        return (dx, *(g[k] for k in keys))

    return fwd, bwd, keys


BACKWARD = {moe_forward: moe_backward}


@given(name=names, lead=leads, seed=seeds)
def test_gradcheck(name, lead, seed):
    rng = np.random.default_rng(seed)
    spec, x, p, _ = case_inputs(name, rng, lead)
    fwd, bwd, keys = pack(moe_forward, spec, p)
    gradcheck("moe", fwd, bwd, [x, *(p[k] for k in keys)], names=["x", *keys], rng=rng)


def _fixture_names():
    return sorted(f[:-4] for f in os.listdir(FIXTURES) if f.endswith(".npz")) if os.path.isdir(FIXTURES) else []


@pytest.mark.parametrize("fixture", _fixture_names())
def test_matches_transformers_fixture(fixture):
    """Golden float64 outputs and gradients of transformers' block (tests/fixtures/make_moe_fixtures.py)."""
    check_against(np.load(os.path.join(FIXTURES, fixture + ".npz")), moe_forward, moe_backward)


def check_against(f, forward, backward):
    spec = CASES[str(f["case"])][1]
    params = {k[2:]: f[k] for k in f.files if k.startswith("p:")}
    out, z, cache = forward(f["x"], params, spec)
    dx, g = backward(f["dout"], cache)
    np.testing.assert_allclose(out, f["out"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(z, f["router_logits"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, f["dx"], rtol=1e-11, atol=1e-13)
    want = sorted(k[2:] for k in f.files if k.startswith("g:"))
    assert sorted(g) == want
    for k in want:
        np.testing.assert_allclose(g[k], f["g:" + k], rtol=1e-11, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_transformers_live(name):
    """Live: transformers' sparse block in float64 (float32 islands made float64), output, router logits, dx and
    every parameter's gradient under the files' names."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from moe_hf import hf_block, run_hf
    rng = np.random.default_rng(11)
    spec, x, p, Fs = case_inputs(name, rng, (2, 7), C=6, F=5, margin=1e-6)
    block = hf_block(CASES[name][0], spec, p, 6, 5, Fs)
    dout = rng.standard_normal(x.shape)
    ref = run_hf(block, spec, 5, x, dout)
    out, z, cache = moe_forward(x, p, spec)
    dx, g = moe_backward(dout, cache)
    np.testing.assert_allclose(out, ref["out"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(z, ref["router_logits"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, ref["dx"], rtol=1e-11, atol=1e-13)
    assert sorted(f"d[{k}]" for k in g) == sorted(k for k in ref if k.startswith("d["))
    for k, v in g.items():
        np.testing.assert_allclose(v, ref[f"d[{k}]"], rtol=1e-11, atol=1e-13, err_msg=k)


def test_checkpoint_names():
    """The parameter names are the files' own (transformers' save_pretrained writes one tensor per expert)."""
    s = moe_param_shapes(moe_spec("mixtral", 2, 1), 4, 3)
    assert list(s) == ["block_sparse_moe.gate.weight", "block_sparse_moe.experts.0.w1.weight",
                       "block_sparse_moe.experts.0.w3.weight", "block_sparse_moe.experts.0.w2.weight",
                       "block_sparse_moe.experts.1.w1.weight", "block_sparse_moe.experts.1.w3.weight",
                       "block_sparse_moe.experts.1.w2.weight"]
    assert s["block_sparse_moe.experts.0.w2.weight"] == (4, 3)
    s = moe_param_shapes(moe_spec("qwen2_moe", 2, 1), 4, 3, 5)
    assert s["mlp.shared_expert_gate.weight"] == (1, 4) and s["mlp.shared_expert.down_proj.weight"] == (4, 5)
    s = moe_param_shapes(moe_spec("gpt_oss", 2, 1), 4, 3)
    assert s == {"mlp.router.weight": (2, 4), "mlp.router.bias": (2,), "mlp.experts.gate_up_proj": (2, 4, 6),
                 "mlp.experts.gate_up_proj_bias": (2, 6), "mlp.experts.down_proj": (2, 3, 4),
                 "mlp.experts.down_proj_bias": (2, 4)}
    s = moe_param_shapes(moe_spec("deepseek_v3", 4, 1), 4, 3, 6)
    assert s["mlp.gate.e_score_correction_bias"] == (4,) and s["mlp.shared_experts.up_proj.weight"] == (6, 4)


def test_idle_expert_gets_zero_gradient():
    """An expert no token chose contributes nothing and gets exact-zero gradients (present in the dict)."""
    rng = np.random.default_rng(0)
    spec, x, p, _ = case_inputs("mixtral", rng, (3,))
    x = np.abs(x) + 0.1  # positive inputs
    w = np.abs(p["block_sparse_moe.gate.weight"])  # (4, C) experts 0-2: positive logits
    w[3] = -1.0  # expert 3: a negative logit, always last
    p = {**p, "block_sparse_moe.gate.weight": w}
    out, z, cache = moe_forward(x, p, spec)
    assert not (cache.indices == 3).any()
    _, g = moe_backward(rng.standard_normal(out.shape), cache)
    for k in ("w1", "w2", "w3"):
        assert (g[f"block_sparse_moe.experts.3.{k}.weight"] == 0).all()


@given(name=names, seed=seeds)
def test_inputs_unmodified(name, seed):
    rng = np.random.default_rng(seed)
    spec, x, p, _ = case_inputs(name, rng)
    forward_backward_pure(lambda xx, pp: (lambda o, z, c: (o, c))(*moe_forward(xx, pp, spec)), moe_backward,
                          [x, p], rng)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32(name):
    rng = np.random.default_rng(1)
    spec, x, p, _ = case_inputs(name, rng)
    assert_float32_throughout(lambda xx, pp: (lambda o, z, c: (o, c))(*moe_forward(xx, pp, spec)), moe_backward,
                              [x, p], rng)


_spec, _x, _p, _ = case_inputs("qwen2_moe", np.random.default_rng(2))
_ds, _dx, _dp, _ = case_inputs("deepseek_v3", np.random.default_rng(3))


def _with(p, key, value):
    q = dict(p)
    q[key] = value
    return q


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: moe_forward(_x, _p, _spec._replace(top_k=5)), "^top_k:", id="top_k>E"),
    pytest.param(lambda: moe_forward(_x, _p, _spec._replace(n_experts=0)), "^n_experts:", id="E=0"),
    pytest.param(lambda: moe_forward(_dx, _dp, _ds._replace(n_group=3)), "^n_group:", id="n_group"),
    pytest.param(lambda: moe_forward(_dx, _dp, _ds._replace(topk_group=5)), "^topk_group:", id="topk_group"),
    pytest.param(lambda: moe_forward(_x, _p, _spec._replace(n_group=2)), "^n_group:", id="groups-not-deepseek"),
    pytest.param(lambda: moe_forward(_x, _p, _spec._replace(router="sinkhorn")), "^router:", id="router"),
    pytest.param(lambda: moe_forward(_x, _p, _spec._replace(expert="gpt_oss")), "^names:", id="expert-names"),
    pytest.param(lambda: moe_forward(np.where(_x > 0, np.nan, _x), _p, _spec), "^router_logits:", id="nan-x"),
    pytest.param(lambda: moe_forward(_x, _with(_p, "mlp.experts.2.up_proj.weight", np.ones((3, 3))), _spec),
                 r"^mlp\.experts\.2\.up_proj\.weight:", id="expert-shape"),
    pytest.param(lambda: moe_forward(_x, _with(_p, "mlp.experts.1.down_proj.weight", np.ones((2, 2))), _spec),
                 r"^mlp\.experts\.1\.down_proj\.weight:", id="expert-down-shape"),
    pytest.param(lambda: moe_forward(_x, {k: v for k, v in _p.items() if "experts.3." not in k}, _spec),
                 "^params: missing", id="missing-expert"),
    pytest.param(lambda: moe_forward(_x, _with(_p, "mlp.gate.weight", _p["mlp.gate.weight"].astype(np.float32)),
                                     _spec), r"^mlp\.gate\.weight:", id="dtype"),
    pytest.param(lambda: moe_forward(_x, _p, "mixtral"), "^spec:", id="spec"),
    pytest.param(lambda: moe_spec("switch", 4, 1), "^family:", id="family"),
    pytest.param(lambda: moe_backward(_x[:1], moe_forward(_x, _p, _spec)[2]), "^dout:", id="dout"),
    pytest.param(lambda: moe_backward(_x, moe_forward(_x, _p, _spec)[2], np.ones((2, 2))), "^drouter_logits:",
                 id="drouter_logits"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v3"])
def test_names_match_saved_checkpoint(family, tmp_path):
    """Live: a tiny model of the family saved by transformers' save_pretrained; its layer-0 MoE tensors are exactly
    moe_param_shapes' names and shapes (per-expert tensors in the file, though transformers 5 stacks them in
    memory; gpt-oss stacked in both)."""
    pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    safetensors = pytest.importorskip("safetensors")
    C, F, Fs, E, K = 8, 6, 10, 4, 2
    common = dict(hidden_size=C, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, vocab_size=16,
                  num_experts_per_tok=K)
    cfg = {"mixtral": lambda: tr.MixtralConfig(intermediate_size=F, num_local_experts=E, **common),
           "qwen2_moe": lambda: tr.Qwen2MoeConfig(moe_intermediate_size=F, shared_expert_intermediate_size=Fs,
                                                  num_experts=E, **common),
           "qwen3_moe": lambda: tr.Qwen3MoeConfig(moe_intermediate_size=F, num_experts=E, **common),
           "gpt_oss": lambda: tr.GptOssConfig(intermediate_size=F, num_local_experts=E, head_dim=4, **common),
           "deepseek_v3": lambda: tr.DeepseekV3Config(moe_intermediate_size=F, n_routed_experts=E, n_shared_experts=2,
                                                      n_group=2, topk_group=1, first_k_dense_replace=0,
                                                      q_lora_rank=4, kv_lora_rank=4, qk_rope_head_dim=2,
                                                      qk_nope_head_dim=2, v_head_dim=2, **common)}[family]()
    tr.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    spec = moe_spec(family, E, K, **({"n_group": 2} if family == "deepseek_v3" else {}))
    want = moe_param_shapes(spec, C, F, {"qwen2_moe": Fs, "deepseek_v3": 2 * F}.get(family))
    got = {}
    for f in tmp_path.glob("*.safetensors"):
        with safetensors.safe_open(str(f), "np") as st_:
            for k in st_.keys():
                if k.startswith("model.layers.0.") and k[len("model.layers.0."):].startswith(spec.prefix):
                    got[k[len("model.layers.0."):]] = tuple(st_.get_slice(k).get_shape())
    assert got == want
