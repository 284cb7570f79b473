"""The Llama family: HF parity on the committed fixture, finite differences on every tensor, the KV cache,
training with AdamW, config errors, and live comparisons with transformers when it is installed."""

import math
from pathlib import Path

import numpy as np
import pytest

from npgpt.gradcheck import numerical_gradient
from npgpt.llama import (
    Llama,
    LlamaConfig,
    LlamaKVCache,
    forward_cached,
    llama_backward,
    llama_forward,
    param_shapes,
)
from npgpt.llama.pretrained import from_pretrained, save_pretrained
from npgpt.optim import AdamW

FIXTURE = Path(__file__).parent / "fixtures" / "llama"


def tiny_config(**kw):
    base = {"vocab_size": 7, "block_size": 8, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 8,
            "intermediate_size": 12, "rms_norm_eps": 1e-5}
    return LlamaConfig(**{**base, **kw})


def random_params(config, rng, dtype=np.float64):
    """Non-degenerate weights: N(0, 1/fan_in) matrices, norm weights 1 + noise."""
    return {k: (1.0 + 0.2 * rng.standard_normal(s) if len(s) == 1 else rng.standard_normal(s) / math.sqrt(s[-1]))
            .astype(dtype) for k, s in param_shapes(config).items()}


def rel(a, b):
    """Largest absolute difference over the reference's largest magnitude (one number per tensor)."""
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------- the HF fixture

@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_fixture_matches_transformers(dtype, tol):
    """Logits, loss and all 21 gradients equal transformers' LlamaForCausalLM (GQA, llama3 RoPE scaling, untied,
    two targets -100): float64 to <= 1e-12 relative (measured ~2e-15), float32 to float32 round-off (~1e-6)."""
    e = np.load(FIXTURE / "expected.npz")
    model = from_pretrained(FIXTURE, dtype=dtype)
    assert model.config.n_kv_head == 2 and model.config.rope_scaling["rope_type"] == "llama3"
    logits, loss, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = llama_backward(cache)
    assert logits.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads.values())
    hf = {k[len(dtype) + 6:] for k in e.files if k.startswith(f"{dtype}.grad.")}
    assert hf == set(grads) and len(grads) == 21
    assert rel(logits, e[f"{dtype}.logits"]) <= tol
    assert rel(loss, e[f"{dtype}.loss"]) <= tol
    for name, g in grads.items():
        assert rel(g, e[f"{dtype}.grad.{name}"]) <= tol, name


def test_class_backward_equals_functional_on_fixture():
    e = np.load(FIXTURE / "expected.npz")
    model = from_pretrained(FIXTURE, dtype=np.float64)
    _, loss = model.forward(e["idx"], e["targets"])
    grads = model.backward()
    assert float(loss) == pytest.approx(float(e["float64.loss"]), rel=1e-13)
    for name, g in grads.items():
        assert rel(g, e[f"float64.grad.{name}"]) <= 1e-12, name
    assert np.shares_memory(grads["model.norm.weight"], model.flat_grads)


# ------------------------------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("tied, n_kv_head", [(False, 2), (True, 1)])
def test_whole_model_finite_differences_every_tensor(tied, n_kv_head):
    """Every element of every parameter tensor of a tiny Llama (GQA untied, MQA tied) against central
    differences of the loss, with a -100 target (and linear RoPE scaling in the tied case)."""
    config = tiny_config(tie_word_embeddings=tied, n_kv_head=n_kv_head,
                         rope_scaling={"rope_type": "linear", "factor": 2.0} if tied else None)
    rng = np.random.default_rng(7)
    params = random_params(config, rng)
    idx = rng.integers(0, 7, size=(2, 5))
    targets = rng.integers(0, 7, size=(2, 5))
    targets[1, 3] = -100
    _, _, cache = llama_forward(params, config, idx, targets)
    grads = llama_backward(cache)
    assert set(grads) == set(params)
    worst = 0.0
    for name, p in params.items():
        def loss_of(x, name=name):
            return llama_forward({**params, name: x}, config, idx, targets)[1], None
        num = numerical_gradient(loss_of, [p], 0, np.asarray(1.0), h=1e-5)
        err = np.max(np.abs(grads[name] - num) / np.maximum(np.abs(num), 1e-4))
        worst = max(worst, float(err))
        assert err <= 1e-6, name
    assert worst > 0.0  # the check ran


def test_query_chunks_equal_one_attention_call(monkeypatch):
    """Past QUERY_CHUNK positions each layer runs its grouped-query attention by chunks of queries
    (attention_chunks.py): the loss and every gradient equal the single sdpa call's to rounding."""
    import npgpt.llama.block as block
    from npgpt.layers.attention_chunks import AttentionChunksCache
    from npgpt.layers.sdpa import SdpaCache

    config = tiny_config()
    rng = np.random.default_rng(11)
    params = random_params(config, rng)
    idx, targets = rng.integers(0, 7, size=(2, 7)), rng.integers(0, 7, size=(2, 7))
    _, loss, cache = llama_forward(params, config, idx, targets)
    assert isinstance(cache.layers[0].attn, SdpaCache)  # T = 7 <= 64: one call
    grads = llama_backward(cache)
    monkeypatch.setattr(block, "QUERY_CHUNK", 3)  # 64 in the model: a short T for the test
    _, loss_c, cache_c = llama_forward(params, config, idx, targets)
    assert isinstance(cache_c.layers[0].attn, AttentionChunksCache) and len(cache_c.layers[0].attn.chunks) == 3
    assert float(loss_c) == pytest.approx(float(loss), rel=1e-14)
    for name, g in llama_backward(cache_c).items():
        assert rel(g, grads[name]) <= 1e-13, name


# ------------------------------------------------------------------------------------------- generation

def test_kv_cache_equals_full_forward():
    """Prefill 3, then 1, then 2 tokens through the cache: the same logits as one full forward."""
    config = tiny_config()
    rng = np.random.default_rng(3)
    params = random_params(config, rng)
    idx = rng.integers(0, 7, size=(2, 6))
    full, _, _ = llama_forward(params, config, idx)
    kv = LlamaKVCache(config, 2, np.dtype(np.float64))
    parts = [forward_cached(params, config, idx[:, a:b], kv) for a, b in ((0, 3), (3, 4), (4, 6))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-13, atol=1e-13)
    assert kv.length == 6


def test_generate_cached_equals_uncached_past_the_window():
    """Greedy decoding with and without the cache agree, also after the window slides past block_size."""
    config = tiny_config()
    model = Llama(config, seed=1, dtype=np.float64)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = model.generate(prompt, 9, temperature=0.0)
    b = model.generate(prompt, 9, temperature=0.0, use_cache=False)
    assert a.shape == (2, 12) and np.array_equal(a, b)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(model.generate(prompt, 4, top_k=3, rng=rng_a),
                          model.generate(prompt, 4, top_k=3, rng=rng_b, use_cache=False))


# ------------------------------------------------------------------------------------------- training

def test_adamw_trains_it():
    """The class with npgpt's AdamW: a fixed batch's loss falls; float32 stays float32 throughout."""
    config = tiny_config(vocab_size=11)
    model = Llama(config, seed=0, dtype=np.float32)
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.0)
    assert opt.layout is not None  # the params are a FlatTensors: the vectorised path
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, size=(4, 8)), rng.integers(0, 11, size=(4, 8))
    losses = []
    for _ in range(30):
        _, loss = model.forward(idx, targets)
        opt.step(model.backward())
        losses.append(float(loss))
        assert loss.dtype == np.float32
    assert losses[-1] < 0.5 * losses[0]
    assert model.num_params() == sum(int(np.prod(s)) for s in param_shapes(config).values())


def test_all_targets_ignored_gives_zero_gradients():
    config = tiny_config()
    model = Llama(config, dtype=np.float64)
    _, loss = model.forward(np.zeros((1, 3), dtype=np.int64), np.full((1, 3), -100))
    assert float(loss) == 0.0
    assert not np.any(model.backward()["model.embed_tokens.weight"])


# ------------------------------------------------------------------------------------------- interop

def test_save_then_load_is_bit_exact(tmp_path):
    for dtype in (np.float32, np.float64):
        model = Llama(tiny_config(tie_word_embeddings=dtype == np.float32), seed=2, dtype=dtype)
        save_pretrained(model, tmp_path / np.dtype(dtype).name)
        back = from_pretrained(tmp_path / np.dtype(dtype).name, dtype=dtype)
        assert back.config == model.config
        assert np.array_equal(back.flat_params, model.flat_params)


def test_sharded_checkpoint(tmp_path):
    """A model.safetensors.index.json with its shards loads like the single file."""
    import json

    from npgpt.io.safetensors import save_safetensors
    model = Llama(tiny_config(), seed=4, dtype=np.float32)
    save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    names = list(model.params)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_safetensors(tmp_path / file, {k: model.params[k] for k in keys})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert np.array_equal(from_pretrained(tmp_path).flat_params, model.flat_params)


def _write_config(path, **changes):
    import json
    d = json.loads((FIXTURE / "config.json").read_text())
    d.update(changes)
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(d))
    (path / "model.safetensors").write_bytes((FIXTURE / "model.safetensors").read_bytes())
    return path


@pytest.mark.parametrize("changes, match", [
    ({"model_type": "gpt2"}, "model_type is 'gpt2', expected 'llama'"),
    ({"architectures": ["MistralForCausalLM"]}, "architectures"),
    ({"rope_parameters": {"rope_type": "xpos", "rope_theta": 1e4, "factor": 2.0}},
     "rope_type 'xpos' is not supported"),
    ({"rope_parameters": None, "rope_scaling": {"type": "su", "factor": 2.0}},
     "rope_type 'su' is not supported"),
    ({"num_key_value_heads": 3}, "n_head: expected a multiple of n_kv_head=3"),
    ({"attention_bias": True}, r"missing tensor\(s\) \['model.layers.0.self_attn.k_proj.bias'"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"num_hidden_layers": 1}, "unexpected tensor"),
    ({"vocab_size": 51}, "has shape"),
])
def test_bad_checkpoints(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        from_pretrained(_write_config(tmp_path / "ckpt", **changes))


def test_gpt2_loader_refuses_a_llama_directory():
    from npgpt.gpt2.pretrained import from_pretrained as gpt2_from_pretrained
    with pytest.raises(ValueError, match="model_type is 'llama', expected 'gpt2'"):
        gpt2_from_pretrained(FIXTURE)


def test_llama_loader_refuses_a_gpt2_directory():
    with pytest.raises(ValueError, match="model_type is 'gpt2', expected 'llama'"):
        from_pretrained(Path(__file__).parent / "fixtures" / "tiny_gpt2")


@pytest.mark.parametrize("kw, match", [
    ({"n_head": 4, "n_kv_head": 3}, "^n_head: expected a multiple of n_kv_head=3"),
    ({"n_embd": 12, "n_head": 4, "n_kv_head": 4}, "^head_dim: RoPE rotates channel pairs"),
    ({"head_dim": 5}, "^head_dim:"),
    ({"n_embd": 10, "n_head": 4}, "^n_embd:"),
    ({"rope_scaling": {"rope_type": "xpos"}}, "^rope_scaling: rope_type 'xpos' is not supported"),
    ({"rope_theta": 0.5}, "^theta:"),
    ({"rms_norm_eps": 0.0}, "^rms_norm_eps:"),
    ({"hidden_act": "tanh"}, "^hidden_act:"),
    ({"n_kv_head": 0}, "^n_kv_head:"),
    ({"tie_word_embeddings": 1}, "^tie_word_embeddings:"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kw)


def test_bad_forward_inputs():
    config = tiny_config()
    params = random_params(config, np.random.default_rng(0))
    with pytest.raises(ValueError, match="^idx: sequence length 9"):
        llama_forward(params, config, np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="^targets: token id 7"):
        llama_forward(params, config, np.zeros((1, 3), dtype=np.int64), np.full((1, 3), 7))
    with pytest.raises(ValueError, match="^targets: expected shape"):
        llama_forward(params, config, np.zeros((1, 3), dtype=np.int64), np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="^config:"):
        Llama({"n_layer": 2})


# ------------------------------------------------------------------------------------------- live transformers

def _hf_model(torch, tr, config, params):
    from npgpt.llama.pretrained import config_to_hf
    d = config_to_hf(config, np.float64)
    for key in ("architectures", "model_type", "dtype", "torch_dtype", "rope_scaling", "rope_theta"):
        d.pop(key, None)
    hf = tr.LlamaForCausalLM(tr.LlamaConfig(**d)).to(torch.float64)
    state = {k: torch.from_numpy(v) for k, v in params.items()}
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    hf.load_state_dict(state, strict=False)
    return hf


@pytest.mark.parametrize("tied, n_kv_head, scaling", [(True, 1, None), (False, 4, {"rope_type": "linear",
                                                                                    "factor": 3.0})])
def test_live_float32_and_float64_against_transformers(tied, n_kv_head, scaling):
    """Live: tied MQA with plain RoPE and untied MHA with linear scaling.  float32: stock transformers to
    round-off.  float64: stock transformers lowers RMSNorm and RoPE to float32 (~1e-7 from ours); with those
    patched to float64 (as the fixture script does) every gradient agrees to 1e-12."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    config = tiny_config(tie_word_embeddings=tied, n_kv_head=n_kv_head, rope_scaling=scaling)
    rng = np.random.default_rng(11)
    params = random_params(config, rng)
    idx, targets = rng.integers(0, 7, size=(2, 6)), rng.integers(0, 7, size=(2, 6))

    def hf_run(dtype, inv_freq=None):
        model = _hf_model(torch, tr, config, params).to(dtype)  # fresh: a float32 round trip would round weights
        model.config._attn_implementation = "sdpa"
        if inv_freq is not None:
            model.model.rotary_emb.inv_freq = inv_freq
        model.zero_grad()
        logits = model(input_ids=torch.from_numpy(idx)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), torch.from_numpy(targets).reshape(-1))
        loss.backward()
        return logits.detach().numpy(), {k: p.grad.numpy().copy() for k, p in model.named_parameters()}

    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-5)):
        ref_logits, ref_grads = hf_run(getattr(torch, np.dtype(dtype).name))
        p = {k: v.astype(dtype) for k, v in params.items()}
        logits, _, cache = llama_forward(p, config, idx, targets)
        grads = llama_backward(cache)
        assert rel(logits, ref_logits) <= tol
        for name, g in grads.items():
            assert rel(g, ref_grads[name]) <= tol, name
        if dtype == np.float64:
            assert rel(logits, ref_logits) > 1e-12  # the float32 islands are visible in float64

    import importlib.util
    spec = importlib.util.spec_from_file_location("make_llama_fixture",
                                                  Path(__file__).parent / "fixtures" / "make_llama_fixture.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    from transformers.models.llama import modeling_llama as ml
    saved = ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward
    try:
        ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward = mk.rmsnorm_in_input_dtype, mk.rotary_in_float64
        from npgpt.layers.rope import rope_inv_freq
        ref_logits, ref_grads = hf_run(torch.float64,
                                       torch.from_numpy(rope_inv_freq(config.head_size, 10000.0, scaling)))
    finally:
        ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward = saved
    logits, _, cache = llama_forward(params, config, idx, targets)
    assert rel(logits, ref_logits) <= 1e-12
    for name, g in llama_backward(cache).items():
        assert rel(g, ref_grads[name]) <= 1e-12, name


def test_live_transformers_loads_our_save(tmp_path):
    """Live: LlamaForCausalLM.from_pretrained on our save_pretrained output gives our float32 logits."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    model = Llama(tiny_config(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 4}),
                  seed=3, dtype=np.float32)
    save_pretrained(model, tmp_path)
    hf = tr.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    idx = np.array([[1, 2, 3, 4, 5]])
    ours, _ = model.forward(idx)
    theirs = hf(input_ids=torch.from_numpy(idx)).logits.detach().numpy()
    assert rel(ours, theirs) <= 1e-5


# ------------------------------------------------------------------------------------------- the training loop

def test_train_loop_arch_llama_trains_resumes_and_samples(tmp_path):
    """npgpt.training.loop with arch="llama": GQA model built by the factory, checkpoint with its LlamaConfig, resume
    continues it bit-exactly, the sample comes from KV-cached generation."""
    from npgpt.training.checkpoint import load_checkpoint
    from npgpt.training.data import load_text
    from npgpt.training import TrainConfig, train
    text = load_text(Path(__file__).parents[1] / "npgpt" / "data" / "tinyshakespeare.txt")[:20000]
    kw = {"arch": "llama", "n_layer": 1, "n_head": 2, "n_kv_head": 1, "n_embd": 16, "block_size": 16,
          "batch_size": 2, "eval_interval": 3, "eval_iters": 1, "warmup_iters": 1, "sample_len": 5,
          "log_interval": 100, "lr_decay_iters": 6}
    full = train(text=text, cfg=TrainConfig(**kw, max_iters=6, out_dir=str(tmp_path / "a")), log=lambda s: None)
    assert isinstance(full.model, Llama) and full.model.config.n_kv_head == 1
    assert full.model.config.intermediate_size == 48  # 8 * ceil(16 / 3)
    assert math.isfinite(full.final_val_loss) and len(full.sample) >= 1
    ck = load_checkpoint(full.checkpoint_path)
    assert isinstance(ck.config, LlamaConfig) and ck.config == full.model.config
    train(text=text, cfg=TrainConfig(**kw, max_iters=3, out_dir=str(tmp_path / "b")), log=lambda s: None)
    resumed = train(text=text, cfg=TrainConfig(**kw, max_iters=6, out_dir=str(tmp_path / "b"), resume=True),
                    log=lambda s: None)
    assert resumed.step_losses == full.step_losses
    assert np.array_equal(resumed.model.flat_params, full.model.flat_params)


@pytest.mark.parametrize("kw, match", [
    ({"arch": "llama", "n_head": 4, "n_kv_head": 3}, "^n_head: expected a multiple of n_kv_head"),
    ({"arch": "llama", "n_kv_head": 0}, "^n_kv_head:"), ({"arch": "llama", "intermediate_size": -1},
                                                         "^intermediate_size:"),
    ({"n_kv_head": 2}, "^n_kv_head: only the llama arch"), ({"intermediate_size": 64}, "^intermediate_size: only"),
    ({"arch": "mamba"}, "^arch:"),
])
def test_train_config_llama_fields(kw, match):
    from npgpt.training import TrainConfig
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_llama_refuses_dropout(tmp_path):
    from npgpt.training import TrainConfig
    from npgpt.families import build_model
    with pytest.raises(ValueError, match="^dropout: the llama arch has no dropout"):
        build_model(TrainConfig(arch="llama", dropout=0.1, out_dir=str(tmp_path)), 65)
