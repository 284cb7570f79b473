"""The configurable decoder (npgpt/llama/block.py, core.py) in each of its variants: finite differences of the
block (hypothesis over variants and shapes) and of the whole core (every parameter tensor), the KV-cached
decode equal to the full forward, and parity with transformers' own decoder layers in float64 (when
transformers is installed).  The parallel block and the post-norm / sandwich block are composites of existing
pairs: their gradient checks are here (and their seeded-error entry runs this file)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st

from npgpt.gradcheck import numerical_gradient
from npgpt.layers.rope import rope_frequencies, rope_tables
from npgpt.llama import Llama, LlamaConfig, LlamaKVCache, forward_cached, llama_backward, llama_forward, param_shapes
from npgpt.llama import block
from npgpt.llama.block import layer_param_shapes

# Each family's block style as config fields (tiny values chosen so no tanh saturates and every path matters)
VARIANTS: dict[str, dict] = {
    "llama": {},
    "llama_biases": {"attention_bias": True, "o_bias": True, "mlp_bias": True},
    "qwen2": {"attention_bias": True},
    "qwen3": {"qk_norm": "head"},
    "mistral": {"sliding_window": 2},
    "gemma": {"norm_offset": 1.0, "hidden_act": "gelu_pytorch_tanh", "embedding_multiplier": math.sqrt(8),
              "tie_word_embeddings": True},
    "gemma2": {"norm_offset": 1.0, "norm_placement": "sandwich", "hidden_act": "gelu_pytorch_tanh",
               "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0, "attention_scale": 0.4,
               "layer_types": ("sliding_attention", "full_attention"), "sliding_window": 2,
               "embedding_multiplier": math.sqrt(8)},
    "gemma3": {"norm_offset": 1.0, "norm_placement": "sandwich", "hidden_act": "gelu_pytorch_tanh",
               "qk_norm": "head", "attention_scale": 0.4, "rope_local_theta": 100.0,
               "rope_scaling": {"rope_type": "linear", "factor": 2.0},
               "layer_types": ("sliding_attention", "full_attention"), "sliding_window": 3},
    "olmo2": {"norm_placement": "post", "qk_norm": "full"},
    "gpt_neox": {"norm_kind": "layernorm", "norm_bias": True, "parallel_residual": True,
                 "partial_rotary_factor": 0.5, "attention_bias": True, "o_bias": True, "mlp_bias": True,
                 "mlp_kind": "plain", "hidden_act": "gelu"},
    "phi2": {"norm_kind": "layernorm", "norm_bias": True, "parallel_residual": True, "parallel_shared_norm": True,
             "partial_rotary_factor": 0.5, "attention_bias": True, "o_bias": True, "mlp_bias": True,
             "mlp_kind": "plain", "hidden_act": "gelu_new", "lm_head_bias": True},
    "falcon": {"norm_kind": "layernorm", "norm_bias": True, "parallel_residual": True,
               "parallel_shared_norm": True, "mlp_kind": "plain", "hidden_act": "gelu"},
    "stablelm": {"norm_kind": "layernorm", "norm_bias": True, "partial_rotary_factor": 0.5,
                 "attention_bias": True},
    "layernorm_no_bias": {"norm_kind": "layernorm"},
    "smollm3": {"no_rope_layers": (1, 0)},
    "granite": {"embedding_multiplier": 3.0, "residual_multiplier": 0.5, "attention_scale": 0.3,
                "logits_scaling": 2.0},
    "sinks": {"attention_sinks": True, "sliding_window": 3},
    "interleaved": {"rope_interleaved": True, "rope_theta": 500.0},
}


def tiny_config(variant: str = "llama", **kw) -> LlamaConfig:
    base = {"vocab_size": 7, "block_size": 12, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 8,
            "head_dim": 4, "intermediate_size": 12, "rms_norm_eps": 1e-5}
    return LlamaConfig(**{**base, **VARIANTS[variant], **kw})


def random_params(config: LlamaConfig, rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """Non-degenerate weights: N(0, 1/fan_in) matrices, norm weights 1 + noise (noise for Gemma's 1 + w),
    biases and sinks N(0, 0.3^2)."""
    out = {}
    for k, s in param_shapes(config).items():
        if k.endswith(".bias") or k.endswith("sinks"):
            v = 0.3 * rng.standard_normal(s)
        elif len(s) == 1:
            v = 1.0 - config.norm_offset + 0.2 * rng.standard_normal(s)
        else:
            v = rng.standard_normal(s) / math.sqrt(s[-1])
        out[k] = v.astype(dtype)
    return out


def rel(a, b):
    """Largest absolute difference over the reference's largest magnitude (one number per tensor)."""
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------- the block

def _layer_fns(config: LlamaConfig, names: list[str], cos, sin, window):
    """forward(x, *params) -> (out, cache) and backward(dout, cache) -> (dx, *grads) for check_layer, through
    the module's attributes (so a seeded error in the block reaches them)."""
    def forward(x, *ps):
        return block.llama_layer_forward(x, dict(zip(names, ps)), config, cos, sin, None, 0, window)

    def backward(dout, cache):
        dx, g = block.llama_layer_backward(dout, cache)
        assert list(g) == names
        return (dx, *(g[n] for n in names))
    return forward, backward


def _tables(config: LlamaConfig, layer: int, T: int):
    """Layer `layer`'s RoPE tables as the core makes them (None for a layer without RoPE)."""
    from npgpt.llama.core import layer_tables
    return layer_tables(config, 0, T, np.float64)[layer] or (None, None)


@given(variant=st.sampled_from(sorted(VARIANTS)), B=st.integers(1, 2), T=st.integers(1, 5),
       hkv=st.integers(1, 2), group=st.integers(1, 2), seed=seeds, layer=st.integers(0, 1))
def test_block_gradcheck(variant, B, T, hkv, group, seed, layer):
    """dx and every parameter of one decoder layer against finite differences, in every block style:
    pre-norm, post-norm (OLMo 2), sandwich (Gemma 2/3), parallel with two norms or one (GPT-NeoX, Phi-2),
    QK-norm per head and full, biases, partial / no / per-layer RoPE, windows, softcap, sinks, multipliers."""
    config = tiny_config(variant, n_head=hkv * group, n_kv_head=hkv)
    rng = np.random.default_rng(seed)
    shapes = layer_param_shapes(config)
    names = list(shapes)
    p = {k: v for k, v in random_params(config, rng).items() if k.startswith("model.layers.0.")}
    params = [p[f"model.layers.0.{n}"] for n in names]
    x = rng.standard_normal((B, T, config.n_embd))
    cos, sin = _tables(config, layer, T)
    fwd, bwd = _layer_fns(config, names, cos, sin, config.layer_window(layer))
    gradcheck("decoder_block", fwd, bwd, [x, *params], names=["x", *names], rng=rng)


@pytest.mark.parametrize("variant", ["llama", "qwen3", "gemma2", "olmo2", "gpt_neox", "phi2"])
def test_block_query_chunks_equal_one_call(variant, monkeypatch):
    """Past QUERY_CHUNK queries the attention runs by chunks (attention_chunks.py), with the layer's window
    and softcap: the same output and gradients as one sdpa call."""
    config = tiny_config(variant, sliding_window=3) if variant == "llama" else tiny_config(variant)
    rng = np.random.default_rng(4)
    names = list(layer_param_shapes(config))
    p = {k[len("model.layers.0."):]: v for k, v in random_params(config, rng).items()
         if k.startswith("model.layers.0.")}
    x = rng.standard_normal((2, 7, config.n_embd))
    cos, sin = _tables(config, 0, 7)
    window = config.layer_window(0)
    out, cache = block.llama_layer_forward(x, p, config, cos, sin, None, 0, window)
    dout = rng.standard_normal(out.shape)
    dx, g = block.llama_layer_backward(dout, cache)
    monkeypatch.setattr(block, "QUERY_CHUNK", 3)
    out_c, cache_c = block.llama_layer_forward(x, p, config, cos, sin, None, 0, window)
    assert len(cache_c.attn.chunks) == 3
    dx_c, g_c = block.llama_layer_backward(dout, cache_c)
    assert rel(out_c, out) <= 1e-14 and rel(dx_c, dx) <= 1e-13
    for n in names:
        assert rel(g_c[n], g[n]) <= 1e-13, n


def test_plain_llama_layer_has_llama_names():
    """With the defaults the layer's parameters are exactly LlamaDecoderLayer's, in LAYER_PARAM_NAMES order."""
    assert tuple(layer_param_shapes(tiny_config())) == block.LAYER_PARAM_NAMES


def test_gated_mlp_with_zero_biases_is_the_pair():
    """The MLP with biases (its own path) equals gated_mlp.py's pair when the biases are 0."""
    config = tiny_config("llama_biases")
    plain = tiny_config()
    rng = np.random.default_rng(2)
    p = {k[len("model.layers.0."):]: v for k, v in random_params(config, rng).items()
         if k.startswith("model.layers.0.")}
    p0 = {k: v for k, v in p.items() if not k.endswith(".bias")}
    pz = {k: (np.zeros_like(v) if k.endswith(".bias") else v) for k, v in p.items()}
    x = rng.standard_normal((2, 3, 8))
    cos, sin = _tables(config, 0, 3)
    a, ca = block.llama_layer_forward(x, pz, config, cos, sin)
    b, cb = block.llama_layer_forward(x, p0, plain, cos, sin)
    assert rel(a, b) <= 1e-15
    dout = rng.standard_normal(a.shape)
    ga, gb = block.llama_layer_backward(dout, ca)[1], block.llama_layer_backward(dout, cb)[1]
    for n in gb:
        assert rel(ga[n], gb[n]) <= 1e-14, n


def test_window_convention():
    """A window of W: query i sees keys i - W < j <= i (HF's sliding_window), so W = 1 sees only itself and
    a window >= T is full causal attention."""
    config = tiny_config("llama")
    rng = np.random.default_rng(0)
    p = {k[len("model.layers.0."):]: v for k, v in random_params(config, rng).items()
         if k.startswith("model.layers.0.")}
    x = rng.standard_normal((1, 5, 8))
    cos, sin = _tables(config, 0, 5)
    full, _ = block.llama_layer_forward(x, p, config, cos, sin)
    wide, _ = block.llama_layer_forward(x, p, config, cos, sin, window=5)
    assert np.array_equal(full, wide)
    _, c1 = block.llama_layer_forward(x, p, config, cos, sin, window=1)
    probs = c1.attn.probs  # (B, Hq, T, T)
    assert np.array_equal(probs[0, 0], np.eye(5))
    _, c2 = block.llama_layer_forward(x, p, config, cos, sin, window=2)
    seen = c2.attn.probs[0, 0] > 0
    assert np.array_equal(seen, np.eye(5, dtype=bool) | np.eye(5, k=-1, dtype=bool))


# ------------------------------------------------------------------------------------------- the core

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_core_finite_differences_every_tensor(variant):
    """Every parameter tensor of a tiny two-layer model in this variant against central differences of the
    loss (a -100 target included): each element of the vectors (norms, biases, sinks), and each matrix along
    three random directions (its elements one by one are the block test's and the embedding's).  Covers the
    embeddings' multiplier, the final norm, the head's bias, the final softcap, logits scaling, tied heads."""
    config = tiny_config(variant)
    rng = np.random.default_rng(7)
    params = random_params(config, rng)
    idx = rng.integers(0, 7, size=(2, 5))
    targets = rng.integers(0, 7, size=(2, 5))
    targets[1, 3] = -100
    _, _, cache = llama_forward(params, config, idx, targets)
    grads = llama_backward(cache)
    assert list(grads) == list(params)

    def loss_at(name, x):
        return float(llama_forward({**params, name: x}, config, idx, targets)[1])

    for name, p in params.items():
        if p.ndim == 1:
            num = numerical_gradient(lambda x, name=name: (llama_forward({**params, name: x}, config, idx,
                                                                          targets)[1], None),
                                     [p], 0, np.asarray(1.0), h=1e-5)
            err = np.max(np.abs(grads[name] - num) / np.maximum(np.abs(num), 1e-4))
            assert err <= 1e-6, name
            continue
        for _ in range(3):
            u = rng.standard_normal(p.shape)
            h = 1e-5
            num = (8 * (loss_at(name, p + h * u) - loss_at(name, p - h * u))
                   - (loss_at(name, p + 2 * h * u) - loss_at(name, p - 2 * h * u))) / (12 * h)  # O(h^4)
            ana = float(np.sum(grads[name] * u))
            assert abs(ana - num) <= 1e-7 * max(1.0, abs(num)), (name, ana, num)


@given(variant=st.sampled_from(sorted(VARIANTS)), B=st.integers(1, 2), T=st.integers(1, 6),
       hkv=st.integers(1, 2), group=st.integers(1, 2), n_layer=st.integers(1, 3), seed=seeds)
def test_core_directional_derivative(variant, B, T, hkv, group, n_layer, seed):
    """Hypothesis over variants and shapes: the loss's derivative along a random direction in every parameter
    at once equals <grads, direction> (fourth-order central difference)."""
    kw = {"n_head": hkv * group, "n_kv_head": hkv, "n_layer": n_layer}
    for key in ("layer_types", "no_rope_layers"):
        if key in VARIANTS[variant]:
            kw[key] = (VARIANTS[variant][key] * 2)[:n_layer]  # the variant's per-layer pattern, cut to n_layer
    config = tiny_config(variant, **kw)
    rng = np.random.default_rng(seed)
    params = random_params(config, rng)
    idx, targets = rng.integers(0, 7, size=(B, T)), rng.integers(0, 7, size=(B, T))
    _, _, cache = llama_forward(params, config, idx, targets)
    grads = llama_backward(cache)
    u = {k: rng.standard_normal(v.shape) for k, v in params.items()}

    def loss_at(h):
        return float(llama_forward({k: v + h * u[k] for k, v in params.items()}, config, idx, targets)[1])

    h = 1e-5
    num = (8 * (loss_at(h) - loss_at(-h)) - (loss_at(2 * h) - loss_at(-2 * h))) / (12 * h)
    ana = sum(float(np.sum(grads[k] * u[k])) for k in params)
    assert abs(ana - num) <= 1e-7 * max(1.0, abs(num))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_stays_float32(variant):
    config = tiny_config(variant)
    params = random_params(config, np.random.default_rng(1), np.float32)
    idx = np.array([[1, 2, 3, 4]])
    logits, loss, cache = llama_forward(params, config, idx, idx)
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    assert all(g.dtype == np.float32 for g in llama_backward(cache).values())


# ------------------------------------------------------------------------------------------- the KV decoder

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kv_cache_equals_full_forward(variant):
    """Prefill 3 tokens, then 1, 1, 3 and 1 through the cache (a window slides, no-RoPE and local-theta
    layers, sinks and softcaps all in play): the same logits as one full forward."""
    config = tiny_config(variant)
    rng = np.random.default_rng(3)
    params = random_params(config, rng)
    idx = rng.integers(0, 7, size=(2, 9))
    full, _, _ = llama_forward(params, config, idx)
    kv = LlamaKVCache(config, 2, np.dtype(np.float64))
    parts = [forward_cached(params, config, idx[:, a:b], kv) for a, b in ((0, 3), (3, 4), (4, 5), (5, 8), (8, 9))]
    assert rel(np.concatenate(parts, axis=1), full) <= 1e-13


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_generate_cached_equals_uncached(variant):
    """Greedy decoding through the one-token step equals decoding by full forwards, past block_size too."""
    config = tiny_config(variant, block_size=6)
    model = Llama(config, seed=1, dtype=np.float64)
    for name, v in random_params(config, np.random.default_rng(6)).items():
        model.params[name][...] = v
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = model.generate(prompt, 7, temperature=0.0)
    b = model.generate(prompt, 7, temperature=0.0, use_cache=False)
    assert np.array_equal(a, b)


def test_step_logits_equal_full_forward():
    """The one-token step's logits (through generate's cached path) equal the full forward's last row."""
    from npgpt.llama import decode
    from npgpt.llama.generate import _cached_logits
    for variant in sorted(VARIANTS):
        config = tiny_config(variant)
        params = random_params(config, np.random.default_rng(8))
        idx = np.random.default_rng(9).integers(0, 7, size=(2, 8))
        full, _, _ = llama_forward(params, config, idx)
        kv = LlamaKVCache(config, 2, np.dtype(np.float64))
        weights = decode.decode_weights(params, config)
        forward_cached(params, config, idx[:, :5], kv)
        for t in range(5, 8):
            step = _cached_logits(params, config, idx[:, t:t + 1], kv, weights)  # (B, 1, V)
            assert rel(step[:, 0], full[:, t]) <= 1e-13, (variant, t)


def test_rope_tables_per_layer():
    """Gemma 3: the sliding layers rotate by rope_local_theta unscaled, the global ones by rope_theta with
    rope_scaling; SmolLM3's no-RoPE layers get no tables."""
    from npgpt.llama.core import layer_tables
    config = tiny_config("gemma3")
    tables = layer_tables(config, 2, 3, np.float64)
    inv_local, _ = rope_frequencies(4, 100.0, None)
    inv_global, _ = rope_frequencies(4, 10000.0, {"rope_type": "linear", "factor": 2.0})
    for got, inv in ((tables[0], inv_local), (tables[1], inv_global)):
        want = rope_tables(np.arange(2, 5), inv, np.float64)
        assert got is not None and np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert layer_tables(tiny_config("smollm3"), 0, 3, np.float64)[1] is None


@pytest.mark.parametrize("kw, field", [
    ({"norm_kind": "batchnorm"}, "norm_kind"), ({"norm_bias": True}, "norm_bias"),
    ({"norm_placement": "middle"}, "norm_placement"), ({"qk_norm": "all"}, "qk_norm"),
    ({"parallel_shared_norm": True}, "parallel_shared_norm"),
    ({"parallel_residual": True, "norm_placement": "post"}, "parallel_residual"),
    ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
    ({"partial_rotary_factor": 0.1}, "partial_rotary_factor"),
    ({"layer_types": ("full_attention",)}, "layer_types"),
    ({"layer_types": ("sliding_attention", "full_attention")}, "layer_types"),
    ({"sliding_window": 0}, "sliding_window"), ({"no_rope_layers": (1, 2)}, "no_rope_layers"),
    ({"attn_logit_softcapping": -1.0}, "attn_logit_softcapping"),
    ({"attention_scale": float("nan")}, "attention_scale"),
    ({"embedding_multiplier": 0.0}, "embedding_multiplier"), ({"logits_scaling": "2"}, "logits_scaling"),
    ({"mlp_kind": "moe"}, "mlp_kind"), ({"mlp_kind": "plain"}, "hidden_act"), ({"o_bias": 1}, "o_bias"),
    ({"rope_local_theta": 0.5}, "theta"), ({"norm_kind": "layernorm", "norm_offset": 1.0}, "norm_offset"),
    ({"qk_norm": "head", "norm_kind": "layernorm"}, "qk_norm"), ({"attention_sinks": "yes"}, "attention_sinks"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        tiny_config(**kw)


def test_config_round_trips_through_dict():
    config = tiny_config("gemma3")
    d = config.to_dict()
    d["layer_types"] = list(d["layer_types"])  # as JSON gives it back
    assert LlamaConfig.from_dict(d) == config


# ------------------------------------------------------------------------------------------- live transformers

def _family_script():
    """tests/fixtures/make_families_fixtures.py (DEC-FAM's): the families' tiny HF configs, `build`, `fill`
    and `float64_everywhere` (transformers' float32 islands made float64)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "make_families_fixtures", Path(__file__).parent / "fixtures" / "make_families_fixtures.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    return mk


# block styles: a family of the fixture script, with config overrides for styles it does not build
LIVE_STYLES = {
    "qwen3": ("qwen3", {}), "gemma2": ("gemma2", {}), "gemma3": ("gemma3", {}), "olmo2": ("olmo2", {}),
    "gpt_neox": ("gpt_neox", {}), "phi2": ("phi", {}), "falcon": ("falcon", {}),
    "falcon_new_arch": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "bias": True}),
    "smollm3": ("smollm3", {}), "granite": ("granite", {}), "stablelm": ("stablelm", {}),
    "stablelm_parallel": ("stablelm", {"use_parallel_residual": True}),
    "mistral_window": ("mistral", {}), "qwen2": ("qwen2", {}), "gemma": ("gemma", {}), "phi3": ("phi3", {}),
    "llama_bias_yarn": ("llama_bias_yarn", {}),
}


def _hf_layers(model):
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AssertionError("no decoder layers found")


def _live_layer_errors(style, dtype):
    """Run each HF decoder layer of the style's tiny model alone (inputs captured from HF's own forward) and
    ours on the same input: per layer (output, dx, worst parameter gradient) relative errors.  float64: with
    transformers' float32 islands made float64; float32: stock transformers, weights rounded to float32."""
    import contextlib

    import torch
    import transformers

    from npgpt.llama.core import layer_params, layer_tables
    from npgpt.llama.hf_families import family_for
    mk = _family_script()
    family, overrides = LIVE_STYLES[style]
    cfg_cls, model_cls, kw = mk.FAMILIES[family]
    rng = np.random.default_rng(5)
    B, T = 2, 8
    errors = []
    with mk.float64_everywhere() if dtype == np.float64 else contextlib.nullcontext():
        hf_config = getattr(transformers, cfg_cls)(**{**mk.COMMON, **kw, **overrides})
        hf_config._attn_implementation = "eager"
        model = getattr(transformers, model_cls)(hf_config).to(torch.float64).eval()
        state = mk.fill(model, family, rng)
        model = model.to(getattr(torch, np.dtype(dtype).name))
        layers = _hf_layers(model)
        captured = []
        hooks = [layer.register_forward_pre_hook(lambda m, a, k, i=i: captured.append((i, a, k)), with_kwargs=True)
                 for i, layer in enumerate(layers)]
        with torch.no_grad():
            model(input_ids=torch.from_numpy(rng.integers(0, mk.V, size=(B, T))), use_cache=False)
        for h in hooks:
            h.remove()
        d = model.config.to_dict()
        fam = family_for(d, "config.json")
        config = fam.config_from_hf(d, "config.json")
        params = {k: v.astype(dtype) for k, v in fam.weights_from_hf(lambda n: state[n], state.keys(), config).items()}
        tables = layer_tables(config, 0, T, dtype)
        for i, args, kwargs in captured:
            kwargs = dict(kwargs)
            hs = args[0] if args else kwargs.pop("hidden_states")
            x = hs.detach().clone().requires_grad_(True)
            layers[i].zero_grad()
            out = layers[i](x, *args[1:], **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            dout = rng.standard_normal(tuple(out.shape)).astype(dtype)
            out.backward(torch.from_numpy(dout))
            cos, sin = tables[i] or (None, None)
            ours, cache = block.llama_layer_forward(x.detach().numpy(), layer_params(params, i, config), config,
                                                    cos, sin, window=config.layer_window(i))
            dx, g = block.llama_layer_backward(dout, cache)
            assert ours.dtype == dtype and dx.dtype == dtype
            full = {k: np.zeros(s, dtype) for k, s in param_shapes(config).items()}
            full.update({f"model.layers.{i}.{k}": v for k, v in g.items()})
            hf_grads = fam.weights_to_hf(full, config)  # fused tensors' gradients joined as HF stores them
            prefix = fam.layer_prefix.format(i=i)
            named = list(layers[i].named_parameters())
            assert named
            worst = max(rel(hf_grads[prefix + n], p.grad.numpy()) for n, p in named)
            errors.append((rel(ours, out.detach().numpy()), rel(dx, x.grad.numpy()), worst))
    return errors


@pytest.mark.parametrize("style", sorted(LIVE_STYLES))
def test_live_layers_equal_transformers_decoder_layers(style):
    """Each HF decoder layer of a tiny float64 model (every float32 island of transformers made float64) against
    ours on the same input: the output to 1e-12 and dx and every parameter's gradient to 1e-11 (relative to
    the tensor's largest element; measured ~1e-15).  The layer's own inputs -- hidden states, mask, RoPE
    tables -- are captured from HF's forward; the tables on our side come from core.layer_tables."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    for out, dx, grads in _live_layer_errors(style, np.float64):
        assert out <= 1e-12 and dx <= 1e-11 and grads <= 1e-11, (style, out, dx, grads)


@pytest.mark.parametrize("style", sorted(LIVE_STYLES))
def test_live_layers_float32_against_stock_transformers(style):
    """The same in float32 against stock transformers (nothing patched, weights rounded to float32): float32
    round-off (measured: output <= 6e-7, dx and gradients <= 1.4e-6 over the 17 styles)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    for out, dx, grads in _live_layer_errors(style, np.float32):
        assert out <= 1e-5 and dx <= 1e-5 and grads <= 1e-5, (style, out, dx, grads)
