"""The configurable decoder with a sparse mixture of experts in its MLP slot (config.moe_family): one layer's
gradients (dx, every parameter, the router logits' upstream gradient) and the whole core's loss with the
load-balancing term, against central differences in float64; the grouped and the clear MoE pairs equal; the
one-token decoding step equal to forward_cached; dense layers kept where a family keeps them; and the config's
one-line refusals.  Inputs are drawn away from router ties: a draw whose top-K choice moves under the finite
differences' steps is rejected (the choice is piecewise constant, docs/derivations/moe.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import seeds
from hypothesis import assume, given
from hypothesis import strategies as st

from npgpt.llama import LlamaConfig, LlamaKVCache, forward_cached, param_shapes
from npgpt.llama import block
from npgpt.llama.core import _llama_forward, layer_tables, llama_backward, llama_forward
from npgpt.llama.decode import _decode_step, decode_weights

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
H = 1e-5  # finite-difference step (QK-norm of small heads curves sharply: larger steps truncate)
TOL = 1e-7  # relative error of a directional derivative (fourth order, float64: ~1e-10)


def moe_config(family: str = "mixtral", **kw) -> LlamaConfig:
    """A tiny model of the family: 2 layers, 4 experts, top-2, the aux loss on with a coefficient that matters."""
    extra = {"qwen2_moe": {"shared_expert_intermediate_size": 5}, "qwen3_moe": {"qk_norm": "head"}}.get(family, {})
    base = {"vocab_size": 7, "block_size": 8, "n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 6,
            "head_dim": 4, "intermediate_size": 5, "moe_intermediate_size": 3, "rms_norm_eps": 1e-5,
            "moe_family": family, "num_experts": 4, "num_experts_per_tok": 2, "output_router_logits": True,
            "router_aux_loss_coef": 0.3, **extra}
    return LlamaConfig(**{**base, **kw})


def noisy_params(config: LlamaConfig, seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    """N(0, 1/fan_in) matrices (router rows larger, so routing is decisive), norm weights 1 + noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in param_shapes(config).items():
        if len(s) == 1:
            v = 1.0 + 0.3 * rng.standard_normal(s)
        else:
            v = rng.standard_normal(s) / math.sqrt(s[-1]) * (3.0 if k.endswith("gate.weight") else 1.0)
        out[k] = v.astype(dtype)
    return out


def choices(cache) -> list:
    """Every sparse layer's chosen experts (N, K)."""
    return [c.mlp.indices.copy() for c in cache.layers if c.router_logits is not None]


def derivative(f, shift) -> float:
    """d/dt f(shift(t)) at t = 0, fourth-order central difference with step H."""
    return (-f(shift(2 * H)) + 8 * f(shift(H)) - 8 * f(shift(-H)) + f(shift(-2 * H))) / (12 * H)


def same_choices(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------- one layer


@given(family=st.sampled_from(FAMILIES), impl=st.sampled_from(["grouped", "clear"]), B=st.integers(1, 2),
       T=st.integers(1, 4), seed=seeds)
def test_moe_layer_directional_gradients(family, impl, B, T, seed):
    """dx and every parameter of a sparse layer, each along its own random direction, of
    L = <out, dout> + <router_logits, dz>: the drouter_logits path (the aux loss's) included."""
    config = moe_config(family, moe_impl=impl)
    rng = np.random.default_rng(seed)
    names = list(block.layer_param_shapes(config, 1))
    p = {n: v for n, v in ((n, noisy_params(config, seed)[f"model.layers.1.{n}"]) for n in names)}
    x = rng.standard_normal((B, T, config.n_embd))
    cos, sin = layer_tables(config, 0, T, np.float64)[1]  # type: ignore[misc]
    out, cache = block.llama_layer_forward(x, p, config, cos, sin, None, 0, None, 1)
    dout, dz = rng.standard_normal(out.shape), rng.standard_normal(cache.router_logits.shape)
    dx, grads = block.llama_layer_backward(dout, cache, dz)
    assert list(grads) == names
    base = cache.mlp.indices.copy()

    def f(x_, p_):
        o, c = block.llama_layer_forward(x_, p_, config, cos, sin, None, 0, None, 1)
        assume(np.array_equal(c.mlp.indices, base))  # a tie crossed: not a differentiable point
        return float(np.sum(o * dout) + np.sum(c.router_logits * dz))

    for name in [None, *names]:
        u = rng.standard_normal(x.shape if name is None else p[name].shape)
        if name is None:
            num = derivative(lambda x_: f(x_, p), lambda t, u=u: x + t * u)
            ana = float(np.sum(dx * u))
        else:
            num = derivative(lambda p_: f(x, p_), lambda t, n=name, u=u: {**p, n: p[n] + t * u})
            ana = float(np.sum(grads[name] * u))
        assert abs(num - ana) <= TOL * max(1.0, abs(ana)), (name, num, ana)


# ---------------------------------------------------------------------------------------------- the core


@given(family=st.sampled_from(FAMILIES), B=st.integers(1, 2), T=st.integers(1, 5), n_layer=st.integers(1, 3),
       coef=st.sampled_from([0.0, 0.3]), seed=seeds)
def test_core_gradients_with_aux_loss(family, B, T, n_layer, coef, seed):
    """Cross-entropy + coef * load-balancing loss: every parameter tensor's directional derivative, so the aux
    loss's gradient reaches each layer's router and the experts' reach the embeddings."""
    config = moe_config(family, n_layer=n_layer, router_aux_loss_coef=coef)
    params = noisy_params(config, seed)
    rng = np.random.default_rng(seed + 1)
    idx, tg = rng.integers(0, config.vocab_size, (B, T)), rng.integers(0, config.vocab_size, (B, T))
    _, loss, cache = llama_forward(params, config, idx, tg)
    assert cache.aux_loss is not None and loss is not None
    grads = llama_backward(cache)
    assert list(grads) == list(params)
    base = choices(cache)

    def f(p):
        _, lo, c = _llama_forward(p, config, idx, tg)
        assume(same_choices(choices(c), base))
        return float(lo)

    for name, g in grads.items():
        u = rng.standard_normal(g.shape)
        num = derivative(f, lambda t, n=name, u=u: {**params, n: params[n] + t * u})
        ana = float(np.sum(g * u))
        assert abs(num - ana) <= TOL * max(1.0, abs(ana)), (name, num, ana)


def test_aux_loss_added_only_when_asked():
    """loss = CE + coef * aux with output_router_logits; plain CE without it (aux not computed)."""
    on = moe_config("mixtral", router_aux_loss_coef=0.5)
    off = moe_config("mixtral", output_router_logits=False)
    params = noisy_params(on, 3)
    idx = np.array([[1, 2, 3, 4]])
    _, l_on, c_on = llama_forward(params, on, idx, idx)
    _, l_off, c_off = llama_forward(params, off, idx, idx)
    assert c_off.aux_loss is None and c_on.aux_loss is not None
    assert abs(float(l_on) - float(l_off) - 0.5 * float(c_on.aux_loss)) < 1e-13
    assert float(c_on.aux_loss) > 0.0
    _, _, c_none = llama_forward(params, on, idx)  # no targets: no loss, no aux
    assert c_none.aux is None


@given(family=st.sampled_from(FAMILIES), seed=seeds)
def test_grouped_equals_clear(family, seed):
    """moe_impl 'grouped' and 'clear' give the same loss and gradients (to round-off) through the model."""
    g, c = moe_config(family), moe_config(family, moe_impl="clear")
    params = noisy_params(g, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 7, (2, 5))
    _, lg, cg = llama_forward(params, g, idx, idx)
    _, lc, cc = llama_forward(params, c, idx, idx)
    assert abs(float(lg) - float(lc)) <= 1e-13
    gg, gc = llama_backward(cg), llama_backward(cc)
    for k in gg:
        assert np.allclose(gg[k], gc[k], rtol=0, atol=1e-13), k


def test_sparse_layers_follow_the_family_rules():
    """decoder_sparse_step and mlp_only_layers keep dense MLPs where Qwen2/3-MoE keep them."""
    config = moe_config("qwen3_moe", n_layer=4, decoder_sparse_step=2, mlp_only_layers=(3,))
    assert config.moe_layers == (1,)
    shapes = param_shapes(config)
    assert "model.layers.0.mlp.gate_proj.weight" in shapes and "model.layers.3.mlp.up_proj.weight" in shapes
    assert shapes["model.layers.1.mlp.experts.3.down_proj.weight"] == (6, 3)
    assert shapes["model.layers.1.mlp.gate.weight"] == (4, 6)
    mix = param_shapes(moe_config("mixtral"))
    assert mix["model.layers.0.block_sparse_moe.experts.0.w1.weight"] == (3, 6)
    qwen2 = param_shapes(moe_config("qwen2_moe"))
    assert qwen2["model.layers.0.mlp.shared_expert_gate.weight"] == (1, 6)
    assert qwen2["model.layers.0.mlp.shared_expert.up_proj.weight"] == (5, 6)


# ---------------------------------------------------------------------------------------------- decoding


@given(family=st.sampled_from(FAMILIES), B=st.integers(1, 3), prefill=st.integers(0, 3), seed=seeds)
def test_decode_step_equals_forward_cached(family, B, prefill, seed):
    """The one-token step runs the sparse layers through the same pair: logits equal to forward_cached."""
    config = moe_config(family, n_layer=3, mlp_only_layers=(1,))
    params = noisy_params(config, seed)
    seq = np.random.default_rng(seed).integers(0, config.vocab_size, size=(B, config.block_size))
    fast, ref = LlamaKVCache(config, B, np.float64), LlamaKVCache(config, B, np.float64)
    if prefill:
        forward_cached(params, config, seq[:, :prefill], fast)
        forward_cached(params, config, seq[:, :prefill], ref)
    weights = decode_weights(params, config)
    for t in range(prefill, config.block_size):
        logits = _decode_step(params, config, seq[:, t], fast.slots, fast.length, weights)
        fast.length += 1
        expected = forward_cached(params, config, seq[:, t:t + 1], ref)[:, 0]
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-12)


def test_generate_runs_an_moe_model():
    from npgpt.llama import generate
    config = moe_config("qwen2_moe")
    params = noisy_params(config, 5)
    idx = np.array([[1, 2]])
    cached = generate(params, config, idx, 5, temperature=0.0, use_cache=True)
    plain = generate(params, config, idx, 5, temperature=0.0, use_cache=False)
    assert np.array_equal(cached, plain)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("kw, field", [
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ({"num_experts": 0}, "num_experts"),
    ({"moe_family": "switch"}, "moe_family"),
    ({"moe_intermediate_size": 0}, "moe_intermediate_size"),
    ({"decoder_sparse_step": 0}, "decoder_sparse_step"),
    ({"mlp_only_layers": (7,)}, "mlp_only_layers"),
    ({"router_aux_loss_coef": -1.0}, "router_aux_loss_coef"),
    ({"router_aux_loss_coef": float("nan")}, "router_aux_loss_coef"),
    ({"output_router_logits": 1}, "output_router_logits"),
    ({"moe_impl": "fast"}, "moe_impl"),
    ({"norm_topk_prob": "yes"}, "norm_topk_prob"),
    ({"shared_expert_intermediate_size": 4}, "shared_expert_intermediate_size"),
    ({"hidden_act": "gelu"}, "moe_family"),
])
def test_bad_moe_config_names_the_field(kw, field):
    with pytest.raises(ValueError) as err:
        moe_config("mixtral", **kw)
    assert str(err.value).startswith(field + ":") and "\n" not in str(err.value)


def test_qwen2_moe_needs_its_shared_expert():
    with pytest.raises(ValueError, match="^shared_expert_intermediate_size:"):
        moe_config("qwen2_moe", shared_expert_intermediate_size=None)


def test_moe_config_round_trips_through_a_dict():
    config = moe_config("qwen3_moe", n_layer=3, mlp_only_layers=(0,))
    d = config.to_dict()
    d["mlp_only_layers"] = list(d["mlp_only_layers"])  # as JSON gives it
    assert LlamaConfig.from_dict(d) == config
