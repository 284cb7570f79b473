"""npgpt.gpt2.pretrained: the committed tiny GPT-2 (written by transformers) reproduces transformers' logits;
save_pretrained -> from_pretrained is bit-exact; prefixed, lm_head- and buffer-laden, F16, BF16 and F64
checkpoints load; everything else fails with a one-line ValueError naming the problem."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt.gpt2.pretrained import from_pretrained, save_pretrained
from npgpt.io.safetensors import bf16_to_float32, float32_to_bf16, load_safetensors, save_safetensors

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = os.path.join(FIXTURES, "tiny_gpt2")
LOGITS = os.path.join(FIXTURES, "tiny_gpt2_logits.npz")
F32_TOL = 2e-5  # float32 logits of size ~10: a few float32 ulps of accumulated rounding
F64_TOL = 1e-11


@pytest.fixture(scope="module")
def ref():
    with np.load(LOGITS) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def fixture_tensors():
    """The committed checkpoint's tensors, keyed without the `transformer.` prefix transformers 5 writes."""
    t = load_safetensors(os.path.join(TINY, "model.safetensors"))
    return {k.removeprefix("transformer."): v for k, v in t.items()}


def write_ckpt(directory, tensors, config=None, dtypes=None):
    """A checkpoint directory: the fixture's config.json (or `config`) and these tensors."""
    os.makedirs(directory, exist_ok=True)
    if config is None:
        shutil.copy(os.path.join(TINY, "config.json"), directory)
    else:
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f)
    save_safetensors(os.path.join(directory, "model.safetensors"), tensors, {"format": "pt"}, dtypes=dtypes)
    return str(directory)


def fixture_config():
    with open(os.path.join(TINY, "config.json")) as f:
        return json.load(f)


def expect_error(path, *fragments, dtype=np.float32):
    with pytest.raises(ValueError) as info:
        from_pretrained(path, dtype=dtype)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ------------------------------------------------------------------------------ against transformers


@pytest.mark.parametrize("dtype, key, tol", [(np.float32, "logits_f32", F32_TOL),
                                             (np.float64, "logits_f64", F64_TOL)])
def test_fixture_reproduces_transformers_logits(ref, dtype, key, tol, record_property):
    model = from_pretrained(TINY, dtype=dtype)
    assert not model.training and model.dtype == np.dtype(dtype)
    assert model.config == GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=48, dropout=0.1)
    logits, _ = model(ref["ids"])
    assert logits.dtype == np.dtype(dtype)
    diff = float(np.abs(logits - ref[key]).max())
    record_property(f"max_abs_diff_{np.dtype(dtype).name}", diff)
    print(f"\n{np.dtype(dtype).name}: max |npgpt - transformers| = {diff:.3g} "
          f"(logits up to {np.abs(ref[key]).max():.3g}; fixture {ref['versions']})")
    assert diff < tol
    assert np.array_equal(logits.argmax(-1), ref[key].argmax(-1))


def test_fixture_is_not_degenerate(fixture_tensors, ref):
    for name, x in fixture_tensors.items():
        if name.endswith(".bias"):
            assert np.abs(x).max() > 0.05, name
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            assert np.abs(x - 1).max() > 0.1, name
    assert ref["logits_f32"].std() > 1.0  # logits spread, not near-uniform


def test_generate_from_loaded_model(ref):
    model = from_pretrained(TINY)
    out = model.generate(ref["ids"][:, :5], 10, temperature=1.0, top_k=5, rng=np.random.default_rng(0))
    assert out.shape == (2, 15) and np.array_equal(out[:, :5], ref["ids"][:, :5])
    # greedy generation agrees with the argmax of transformers' logits on its first step
    greedy = model.generate(ref["ids"][:, :20], 1, top_k=1)
    assert np.array_equal(greedy[:, -1], ref["logits_f64"][:, -1].argmax(-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saved_directory_loads_in_transformers(tmp_path, ref, dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = from_pretrained(TINY, dtype=dtype)
    save_pretrained(model, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    hf = hf.double() if dtype == np.float64 else hf.float()
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ref["ids"])).logits.numpy()
    ours, _ = model(ref["ids"])
    assert np.abs(ours - theirs).max() < (F32_TOL if dtype == np.float32 else F64_TOL)
    # transformers read every parameter (nothing left at its random init): same values
    sd = {k.removeprefix("transformer."): v.double().numpy() for k, v in hf.state_dict().items()}
    for k, p in model.params.items():
        assert np.array_equal(sd[k], p.astype(np.float64)), k
    assert np.array_equal(sd["lm_head.weight"], sd["wte.weight"])


# -------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    model = GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=3, n_head=2, n_embd=8, dropout=0.2), seed=3,
                dtype=dtype)
    model.flat_params[...] = np.random.default_rng(0).normal(size=model.flat_params.shape)  # nothing at init
    save_pretrained(model, tmp_path / "a" / "b")  # creates the directories
    back = from_pretrained(tmp_path / "a" / "b", dtype=dtype)
    assert back.config == model.config and back.dtype == model.dtype
    assert list(back.params) == list(model.params)
    for k in model.params:
        assert np.array_equal(back.params[k], model.params[k]), k
    assert np.array_equal(back.flat_params, model.flat_params)
    with open(tmp_path / "a" / "b" / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["n_positions"], cfg["n_ctx"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == (16, 16, 8, 3, 2)
    assert cfg["resid_pdrop"] == 0.2 and cfg["tie_word_embeddings"] is True
    assert cfg["activation_function"] == "gelu_new" and cfg["layer_norm_epsilon"] == 1e-5
    st = load_safetensors(tmp_path / "a" / "b" / "model.safetensors")
    assert set(st) == set(model.params)  # GPT-2 names, no prefix, no lm_head
    assert all(v.dtype == np.dtype(dtype) for v in st.values())


def test_float64_checkpoint_into_float32_model(tmp_path):
    model = from_pretrained(TINY, dtype=np.float64)
    save_pretrained(model, tmp_path)
    m32 = from_pretrained(tmp_path, dtype=np.float32)
    ref32 = from_pretrained(TINY, dtype=np.float32)
    for k in m32.params:
        assert np.array_equal(m32.params[k], ref32.params[k]), k  # F32 -> f64 -> f32 is exact


# ----------------------------------------------------------------------------- checkpoint variants


def hub_style(tensors, T=32, n_layer=2, masked_bias=True, lm_head=True, prefix=""):
    """The layout of the real hub file (no prefix, causal-mask buffers), optionally prefixed, with lm_head."""
    out = {prefix + k: v for k, v in tensors.items()}
    for i in range(n_layer):
        out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        if masked_bias:
            out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    if lm_head:
        out["lm_head.weight"] = tensors["wte.weight"].copy()
    return out


@pytest.mark.parametrize("prefix", ["", "transformer."])
@pytest.mark.parametrize("masked_bias", [False, True])
def test_prefix_lm_head_and_buffers_load(tmp_path, fixture_tensors, ref, prefix, masked_bias):
    d = write_ckpt(tmp_path, hub_style(fixture_tensors, masked_bias=masked_bias, prefix=prefix))
    model = from_pretrained(d, dtype=np.float64)
    logits, _ = model(ref["ids"])
    assert np.abs(logits - ref["logits_f64"]).max() < F64_TOL


def test_bool_mask_buffers_load(tmp_path, fixture_tensors):
    t = hub_style(fixture_tensors, lm_head=False)
    t["h.0.attn.bias"] = t["h.0.attn.bias"].astype(bool)  # newer transformers keep the mask as bool
    from_pretrained(write_ckpt(tmp_path, t))


@pytest.mark.parametrize("st_dtype", ["F16", "BF16", "F64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reduced_and_wider_precision_load(tmp_path, fixture_tensors, ref, st_dtype, dtype):
    t = hub_style(fixture_tensors)
    d = write_ckpt(tmp_path, t, dtypes={k: st_dtype for k in t if k == "lm_head.weight" or k in fixture_tensors})
    model = from_pretrained(d, dtype=dtype)
    for k, p in model.params.items():
        x = fixture_tensors[k]
        want = {"F16": x.astype(np.float16), "BF16": bf16_to_float32(float32_to_bf16(x)), "F64": x}[st_dtype]
        assert np.array_equal(p, want.astype(dtype)), k
    logits, _ = model(ref["ids"])
    tol = {"F16": 0.05, "BF16": 0.3, "F64": F32_TOL if dtype == np.float32 else F64_TOL}[st_dtype]
    assert np.abs(logits - ref["logits_f64"]).max() < tol


# ------------------------------------------------------------------------------------- bad checkpoints


def test_lm_head_that_differs_is_refused(tmp_path, fixture_tensors):
    t = hub_style(fixture_tensors)
    t["lm_head.weight"][3, 5] += 1e-3
    expect_error(write_ckpt(tmp_path, t), "model.safetensors", "'lm_head.weight' differs from 'wte.weight'",
                 "tied")
    t["lm_head.weight"] = t["lm_head.weight"][:, :4]
    expect_error(write_ckpt(tmp_path, t), "'lm_head.weight' is F32 (97, 4), expected a float tensor")


def test_non_finite_weights_are_damage(tmp_path, fixture_tensors):
    """Issue 42, item 9: a NaN (or inf) in a weight is a damaged file, named with its tensor, not a training
    run that "diverges" at step 1 (as a BF16 file would store it, too)."""
    t = dict(fixture_tensors)
    t["h.1.mlp.c_fc.weight"] = t["h.1.mlp.c_fc.weight"].copy()
    t["h.1.mlp.c_fc.weight"][2, 7] = np.nan
    expect_error(write_ckpt(tmp_path / "nan", t), "model.safetensors: tensor 'h.1.mlp.c_fc.weight' holds "
                 "non-finite values (NaN or inf); the file is damaged")
    t = {**fixture_tensors, "ln_f.bias": np.full_like(fixture_tensors["ln_f.bias"], np.inf)}
    expect_error(write_ckpt(tmp_path / "inf", t, dtypes={"ln_f.bias": "BF16"}),
                 "tensor 'ln_f.bias' holds non-finite values")


def test_missing_tensor_is_named(tmp_path, fixture_tensors):
    t = dict(fixture_tensors)
    del t["h.1.mlp.c_fc.bias"]
    expect_error(write_ckpt(tmp_path, t), "missing tensor(s) 'h.1.mlp.c_fc.bias'")
    t = {k: v for k, v in fixture_tensors.items() if not k.startswith("h.1.")}
    expect_error(write_ckpt(tmp_path, t), "missing tensor(s) 'h.1.attn.c_attn.bias', ", "and 7 more")


def test_unexpected_tensors_are_named(tmp_path, fixture_tensors):
    expect_error(write_ckpt(tmp_path, {**fixture_tensors, "h.0.attn.q_attn.weight": np.zeros((48, 48))}),
                 "unexpected tensor(s) 'h.0.attn.q_attn.weight'")
    # a third block's mask buffer or parameters do not belong to a 2-layer model
    expect_error(write_ckpt(tmp_path, {**fixture_tensors, "h.2.attn.bias": np.zeros((1, 1, 32, 32))}),
                 "unexpected tensor(s) 'h.2.attn.bias'", "n_layer=2")
    expect_error(write_ckpt(tmp_path, {**fixture_tensors, "transformer.lm_head.weight": np.zeros((97, 48))}),
                 "unexpected tensor(s) 'transformer.lm_head.weight'")


def test_attn_bias_parameter_is_not_mistaken_for_the_buffer(tmp_path, fixture_tensors):
    # h.N.attn.c_attn.bias is a parameter; dropping it must not be excused by the h.N.attn.bias buffer
    t = hub_style(fixture_tensors, lm_head=False)
    del t["h.0.attn.c_attn.bias"]
    expect_error(write_ckpt(tmp_path, t), "missing tensor(s) 'h.0.attn.c_attn.bias'")
    t = hub_style(fixture_tensors, lm_head=False)
    t["h.0.attn.bias"] = np.zeros(144, np.float32)  # a parameter-shaped tensor under the buffer's name
    expect_error(write_ckpt(tmp_path, t), "'h.0.attn.bias' has shape (144,)", "attention-mask buffer")


def test_wrong_shapes_and_dtypes_are_named(tmp_path, fixture_tensors):
    t = dict(fixture_tensors)
    t["h.0.attn.c_proj.weight"] = np.zeros((48, 40), np.float32)
    expect_error(write_ckpt(tmp_path, t), "'h.0.attn.c_proj.weight' has shape (48, 40), expected (48, 48)")
    t = dict(fixture_tensors)
    t["h.1.mlp.c_fc.weight"] = np.ascontiguousarray(t["h.1.mlp.c_fc.weight"].T)  # torch nn.Linear layout
    expect_error(write_ckpt(tmp_path, t), "'h.1.mlp.c_fc.weight' has shape (192, 48), expected (48, 192)",
                 "transposed?")
    t = dict(fixture_tensors)
    t["wpe.weight"] = np.zeros((32, 48), np.int32)
    expect_error(write_ckpt(tmp_path, t), "'wpe.weight' has dtype I32")


def test_duplicate_prefixed_and_plain_names(tmp_path, fixture_tensors):
    t = {**fixture_tensors, "transformer.ln_f.bias": fixture_tensors["ln_f.bias"]}
    expect_error(write_ckpt(tmp_path, t), "'ln_f.bias' appears twice")


@pytest.mark.parametrize("change, fragments", [
    ({"activation_function": "gelu"}, ["activation_function 'gelu' is not supported", "tanh"]),
    ({"activation_function": "relu"}, ["activation_function 'relu'"]),
    ({"layer_norm_epsilon": 1e-6}, ["layer_norm_epsilon is 1e-06", "1e-5"]),
    ({"tie_word_embeddings": False}, ["tie_word_embeddings is False"]),
    ({"n_inner": 100}, ["n_inner is 100"]),
    ({"scale_attn_by_inverse_layer_idx": True}, ["scale_attn_by_inverse_layer_idx"]),
    ({"add_cross_attention": True}, ["add_cross_attention"]),
    ({"model_type": "gpt_neo"}, ["model_type is 'gpt_neo'"]),
    ({"n_head": 5}, ["n_embd: expected a multiple of n_head=5"]),
    ({"n_positions": 0}, ["n_positions: expected a positive integer"]),
    ({"vocab_size": "97"}, ["vocab_size: expected a positive integer"]),
    ({"resid_pdrop": 1.5}, ["resid_pdrop: expected a probability"]),
    ({"n_embd": 64}, ["'wte.weight' has shape (97, 48), expected (97, 64)"]),
])
def test_bad_configs(tmp_path, fixture_tensors, change, fragments):
    d = write_ckpt(tmp_path, fixture_tensors, config={**fixture_config(), **change})
    expect_error(d, *fragments)


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"])
def test_tanh_gelu_variants_and_minimal_config(tmp_path, fixture_tensors, act):
    # the original gpt2 config.json has no tie_word_embeddings etc.: missing keys take GPT2Config defaults
    cfg = {"activation_function": act, "model_type": "gpt2", "n_ctx": 32, "n_embd": 48, "n_head": 4,
           "n_layer": 2, "n_positions": 32, "vocab_size": 97, "layer_norm_epsilon": 1e-05}
    model = from_pretrained(write_ckpt(tmp_path, fixture_tensors, config=cfg))
    assert model.config.block_size == 32 and model.config.dropout == 0.1


def test_bad_directories(tmp_path, fixture_tensors):
    expect_error(tmp_path / "nope", "not a directory")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "no config.json")
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(os.path.join(TINY, "config.json"), d)
    (d / "pytorch_model.bin").write_bytes(b"")
    expect_error(d, "no model.safetensors (found pytorch_model.bin; only a single model.safetensors")
    (d / "config.json").write_text("{not json")
    expect_error(d, "config.json: not valid UTF-8 JSON")
    (d / "config.json").write_text("[]")
    expect_error(d, "config.json: expected a JSON object")
    d = write_ckpt(tmp_path / "trunc", fixture_tensors)
    w = os.path.join(d, "model.safetensors")
    with open(w, "r+b") as f:
        f.truncate(os.path.getsize(w) - 3)
    expect_error(d, "model.safetensors", "file truncated?")


def test_bad_dtype(tmp_path):
    expect_error(TINY, "dtype: expected float32 or float64, got float16", dtype=np.float16)
    expect_error(TINY, "dtype: expected float32 or float64, got 'nonsense'", dtype="nonsense")


def test_save_pretrained_rejects_non_models(tmp_path):
    with pytest.raises(ValueError, match="model: expected a GPT"):
        save_pretrained({"wte.weight": np.zeros((2, 2))}, tmp_path)  # type: ignore[arg-type]
