"""The Hugging Face families through npgpt.llama.pretrained: parity with transformers on the committed
fixtures (float64 logits, loss, gradients, greedy generation; float32 against stock transformers), the
loader's formats (sharded, BF16, F16), save -> load round trips, live comparisons with transformers when it is
installed (every gradient; transformers loading our save), and the one-line refusals of bad directories."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from npgpt.llama import Llama, llama_backward, llama_forward
from npgpt.llama.pretrained import family_of_model, from_pretrained, save_pretrained
from npgpt.io.safetensors import load_safetensors, save_safetensors

ROOT = Path(__file__).parent / "fixtures" / "families"
NAMES = ["llama_bias_yarn", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2", "smollm3",
         "granite", "stablelm", "gpt_neox", "phi", "falcon"]
LOADERS = ["qwen2_sharded", "gemma3_bf16", "phi3_f16"]


def rel(a, b):
    """Largest absolute difference over the reference's largest magnitude (one number per tensor)."""
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


def expected(name):
    return np.load(ROOT / name / "expected.npz")


def hf_grads(model, grads):
    """npgpt's canonical gradients under the family's HF tensor names (fused tensors fused as HF stores them)."""
    return family_of_model(model).weights_to_hf(grads, model.config)


def load(name, dtype=np.float64):
    return from_pretrained(ROOT / name, dtype=dtype)


def parity(name):
    """(logits error, loss error, worst stored gradient error, greedy equal, float32 logits error) against the
    fixture: float64 with every float32 island of transformers made float64; float32 against stock."""
    e = expected(name)
    model = load(name)
    logits, loss, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = hf_grads(model, llama_backward(cache))
    stored = [k[len("float64.grad."):] for k in e.files if k.startswith("float64.grad.")]
    worst = max(rel(grads[k], e[f"float64.grad.{k}"]) for k in stored)
    greedy = model.generate(e["prompt"], e["float64.greedy"].shape[1] - e["prompt"].shape[1], temperature=0.0)
    model32 = load(name, np.float32)
    logits32, _, _ = llama_forward(model32.params, model32.config, e["idx"])
    return (rel(logits, e["float64.logits"]), rel(loss, e["float64.loss"]), worst,
            bool(np.array_equal(greedy, e["float64.greedy"])), rel(logits32, e["float32.logits"]))


# ------------------------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", NAMES)
def test_family_matches_transformers(name):
    """float64: logits and loss within 1e-12 relative, every stored gradient within 1e-11, greedy generation
    (KV-cached) token for token; float32: stock transformers' logits to float32 round-off."""
    logits_err, loss_err, grad_err, greedy_equal, err32 = parity(name)
    assert logits_err <= 1e-12 and loss_err <= 1e-12, (logits_err, loss_err)
    assert grad_err <= 1e-11, grad_err
    assert greedy_equal
    assert err32 <= 2e-5, err32


@pytest.mark.parametrize("name", NAMES)
def test_gradient_names_cover_the_checkpoint(name):
    """Every HF tensor of the checkpoint gets a gradient under its own name (fused tensors fused back)."""
    model = load(name)
    e = expected(name)
    _, _, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = hf_grads(model, llama_backward(cache))
    stored = set()
    for f in (ROOT / name).glob("*.safetensors"):
        stored |= set(load_safetensors(f))
    assert set(grads) == stored
    assert {k[len("float64.grad."):] for k in e.files if k.startswith("float64.grad.")} <= set(grads)


@pytest.mark.parametrize("name", LOADERS)
def test_loader_formats(name):
    """A sharded float32 checkpoint, a BF16 and an F16 one: the logits transformers computes (float64) from the
    same stored values."""
    e = expected(name)
    model = from_pretrained(ROOT / name, dtype=np.float64)
    logits, _, _ = llama_forward(model.params, model.config, e["idx"])
    assert rel(logits, e["float64.logits"]) <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_is_bit_exact(tmp_path, name):
    """save_pretrained writes the family's own config and names; from_pretrained reads back the same model."""
    model = load(name)
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == \
        json.loads((ROOT / name / "config.json").read_text())["model_type"]
    assert set(load_safetensors(tmp_path / "model.safetensors")) == \
        set(load_safetensors(ROOT / name / "model.safetensors"))
    back = from_pretrained(tmp_path, dtype=np.float64)
    assert back.config == model.config
    assert np.array_equal(back.flat_params, model.flat_params)


def test_save_sharded_and_in_bfloat16_float16(tmp_path):
    """max_shard_bytes cuts the weights into indexed shards; dtype stores them rounded (BF16, F16); a later save
    into the same directory replaces the earlier weight files; float16 overflow is refused before writing."""
    from npgpt.io.safetensors import bf16_to_float32, float32_to_bf16
    model = load("phi3")
    save_pretrained(model, tmp_path, max_shard_bytes=40_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert np.array_equal(from_pretrained(tmp_path, dtype=np.float64).flat_params, model.flat_params)
    save_pretrained(model, tmp_path, dtype="bfloat16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    back = from_pretrained(tmp_path, dtype=np.float32)
    want = bf16_to_float32(float32_to_bf16(model.flat_params.astype(np.float32)))
    assert np.array_equal(back.flat_params, want)
    save_pretrained(model, tmp_path / "f16", dtype=np.float16)
    assert np.array_equal(from_pretrained(tmp_path / "f16", dtype=np.float32).flat_params,
                          model.flat_params.astype(np.float16).astype(np.float32))
    model.params["model.norm.weight"][0] = 1e5
    with pytest.raises(ValueError, match="^dtype: tensor 'model.norm.weight' has values beyond float16's range"):
        save_pretrained(model, tmp_path / "big", dtype="float16")
    assert not (tmp_path / "big").exists()
    for bad, match in (({"dtype": "int8"}, "^dtype: expected one of"), ({"max_shard_bytes": 0}, "^max_shard_bytes")):
        with pytest.raises(ValueError, match=match):
            save_pretrained(model, tmp_path / "bad", **bad)


def test_fresh_model_is_saved_as_the_family_its_config_says(tmp_path):
    """A model made from a LlamaConfig (not loaded) is written as the first family that expresses its config."""
    config = load("qwen3").config
    save_pretrained(Llama(config, seed=1, dtype=np.float32), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen3"
    with pytest.raises(ValueError, match="^family: llama cannot express this model's config"):
        save_pretrained(Llama(config, seed=1, dtype=np.float32), tmp_path / "x", family="llama")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- bad input

_DROP = object()


def _copy(tmp_path, name="qwen3"):
    dst = tmp_path / name
    shutil.copytree(ROOT / name, dst)
    (dst / "expected.npz").unlink()
    return dst


def _edit_config(path, **changes):
    d = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    (path / "config.json").write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("name, changes, match", [
    ("qwen3", {"model_type": "mamba"}, "model_type is 'mamba', expected 'llama' or another family"),
    ("qwen3", {"model_type": "jamba"}, "model_type is 'jamba'"),
    ("qwen3", {"architectures": ["LlamaForCausalLM"]}, "architectures is"),
    ("qwen3", {"some_new_knob": 3}, "some_new_knob: a qwen3 config field npgpt does not implement"),
    ("qwen3", {"rope_parameters": {"rope_type": "su", "rope_theta": 1e4}}, "rope_parameters: rope_type 'su'"),
    ("qwen3", {"rope_parameters": _DROP, "rope_theta": 1e4, "rope_scaling": {"type": "su"}},
     "rope_scaling: rope_type 'su'"),
    ("qwen2", {"use_sliding_window": False}, "layer_types: names sliding_attention layers but use_sliding_window"),
    ("qwen2", {"layer_types": ["full_attention", "chunked_attention"]}, "layer_types: \"chunked_attention\""),
    ("mistral", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor 0.5 is not supported by npgpt for mistral"),
    ("gemma3", {"use_bidirectional_attention": True}, "use_bidirectional_attention True is not supported"),
    ("gemma3", {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                    "sliding_attention": {"rope_type": "linear", "factor": 2.0,
                                                          "rope_theta": 1e4}}},
     "rope_parameters.sliding_attention: rope_type \"linear\""),
    ("falcon", {"alibi": True}, "alibi True is not supported by npgpt"),
    ("stablelm", {"qk_layernorm": True}, "qk_layernorm True is not supported by npgpt"),
    ("phi", {"qk_layernorm": True}, "qk_layernorm True is not supported by npgpt"),
    ("olmo2", {"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
    ("gpt_neox", {"rope_theta": 500.0}, "rope_theta=500.0 contradicts rope_parameters"),
    ("qwen3", {"num_key_value_heads": 3}, "n_head: expected a multiple of n_kv_head=3, got 4 \\(config.json's "
                                           "num_attention_heads\\)"),
    ("qwen3", {"num_hidden_layers": 1, "layer_types": _DROP}, "unexpected tensor"),
    ("qwen3", {"vocab_size": 97}, "has shape"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path, name, changes, match):
    path = _edit_config(_copy(tmp_path, name), **changes)
    with pytest.raises(ValueError, match=match) as info:
        from_pretrained(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_and_misshapen_tensors(tmp_path):
    path = _copy(tmp_path)
    tensors = load_safetensors(path / "model.safetensors")
    k_norm = "model.layers.1.self_attn.k_norm.weight"
    save_safetensors(path / "model.safetensors", {k: v for k, v in tensors.items() if k != k_norm})
    with pytest.raises(ValueError, match=rf"missing tensor\(s\) \['{k_norm}'\]"):
        from_pretrained(path)
    save_safetensors(path / "model.safetensors", {**tensors, k_norm: np.ones(5)})
    with pytest.raises(ValueError, match=rf"model.safetensors: tensor '{k_norm}' has shape \(5,\), expected \(12,\)"):
        from_pretrained(path)


def test_nan_weights_are_refused_naming_file_and_tensor(tmp_path):
    path = _copy(tmp_path)
    tensors = load_safetensors(path / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"][3, 4] = np.nan
    save_safetensors(path / "model.safetensors", tensors)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has NaN"):
        from_pretrained(path)


def test_shard_index_naming_a_missing_file(tmp_path):
    path = _copy(tmp_path, "qwen2_sharded")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ValueError, match=rf"model.safetensors.index.json: shard '{shard.name}' is not a file"):
        from_pretrained(path)


def test_reads_says_which_directories_this_loader_takes(tmp_path):
    from npgpt.llama.pretrained import reads
    assert all(reads(ROOT / name) for name in NAMES + LOADERS)
    assert not reads(Path(__file__).parent / "fixtures" / "tiny_gpt2")
    assert not reads(tmp_path) and not reads(tmp_path / "nothing")


def test_no_weights_and_no_config(tmp_path):
    path = _copy(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors and no model.safetensors.index.json"):
        from_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        from_pretrained(path)


def test_tied_config_with_a_different_stored_head_is_untied_as_transformers_does(tmp_path):
    """tie_word_embeddings true but a stored lm_head.weight unlike the embedding: transformers 5 keeps both
    (untied); an equal one is dropped and the model stays tied."""
    path = _copy(tmp_path)
    tensors = load_safetensors(path / "model.safetensors")
    head = np.random.default_rng(0).standard_normal(tensors["model.embed_tokens.weight"].shape)
    save_safetensors(path / "model.safetensors", {**tensors, "lm_head.weight": head})
    model = from_pretrained(path, dtype=np.float64)
    assert not model.config.tie_word_embeddings
    assert np.array_equal(model.params["lm_head.weight"], head)
    save_safetensors(path / "model.safetensors", {**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"]})
    assert from_pretrained(path, dtype=np.float64).config.tie_word_embeddings


# ------------------------------------------------------------------------------------------- live transformers

def _fixture_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_families_fixtures",
                                                  Path(__file__).parent / "fixtures" / "make_families_fixtures.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    return mk


def _hf_load(torch, tr, path, mk):
    with mk.float64_everywhere():
        hf = tr.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64, attn_implementation="eager")
    return hf.eval()


@pytest.mark.parametrize("name", NAMES)
def test_live_every_gradient(name):
    """Live: every parameter's gradient (not only the stored subset) against transformers made float64 end to
    end, within 1e-11 relative."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    mk = _fixture_script()
    e = expected(name)
    hf = _hf_load(torch, tr, ROOT / name, mk)
    with mk.float64_everywhere():
        ref = mk.run(hf, e["idx"], e["targets"])
    model = load(name)
    _, loss, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = hf_grads(model, llama_backward(cache))
    fam = family_of_model(model)
    ref_grads = {fam.aliases.get(k[5:], k[5:]): v for k, v in ref.items() if k.startswith("grad.")}
    assert set(ref_grads) == set(grads)
    for k, g in grads.items():
        assert rel(g, ref_grads[k]) <= 1e-11, k
    assert rel(loss, ref["loss"]) <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_live_transformers_loads_our_save(tmp_path, name):
    """Live: what save_pretrained writes (from a model loaded and from one trained a step) transformers loads
    to our logits: float64 to 1e-12, float32 stock to round-off."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    mk = _fixture_script()
    e = expected(name)
    model = load(name)
    rng = np.random.default_rng(5)
    for p in model.params.values():  # move every weight: the save must carry each one to its place
        p += 0.01 * rng.standard_normal(p.shape)
    save_pretrained(model, tmp_path)
    ours, _, _ = llama_forward(model.params, model.config, e["idx"])
    hf = _hf_load(torch, tr, tmp_path, mk)
    with mk.float64_everywhere(), torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(e["idx"])).logits.numpy()
    assert rel(ours, theirs) <= 1e-12
    model32 = from_pretrained(tmp_path, dtype=np.float32)
    save_pretrained(model32, tmp_path / "f32")
    hf32 = tr.AutoModelForCausalLM.from_pretrained(tmp_path / "f32", dtype=torch.float32,
                                                   attn_implementation="eager")
    with torch.no_grad():
        theirs32 = hf32(input_ids=torch.from_numpy(e["idx"])).logits.numpy()
    ours32, _, _ = llama_forward(model32.params, model32.config, e["idx"])
    assert rel(ours32, theirs32) <= 2e-5
    assert math.isfinite(rel(ours32, ours))


# ------------------------------------------------------------------------------------------- the parity table

def _live_worst_gradient(name):
    """The worst relative error over every gradient against live transformers (float64 end to end)."""
    import torch
    import transformers as tr
    mk = _fixture_script()
    e = expected(name)
    hf = _hf_load(torch, tr, ROOT / name, mk)
    with mk.float64_everywhere():
        ref = mk.run(hf, e["idx"], e["targets"])
    model = load(name)
    _, _, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = hf_grads(model, llama_backward(cache))
    aliases = family_of_model(model).aliases
    return max(rel(g, ref["grad." + next((a for a, b in aliases.items() if b == k), k)]) for k, g in grads.items())


if __name__ == "__main__":  # python tests/test_families.py: the table docs/families.md quotes
    try:
        import torch  # noqa: F401
        live = True
    except ImportError:
        live = False
    print("| family | logits | loss | worst gradient | greedy equal | float32 logits vs stock |")
    print("|---|---|---|---|---|---|")
    for name in NAMES:
        lg, ls, gr, eq, f32 = parity(name)
        if live:
            gr = max(gr, _live_worst_gradient(name))
        print(f"| {name} | {lg:.1e} | {ls:.1e} | {gr:.1e}{'' if live else ' (stored)'} | {'yes' if eq else 'NO'} "
              f"| {f32:.1e} |")


# ------------------------------------------------------------------------------------------- live variants

VARIANTS = {  # other settings of the families, built by transformers live: (fixture family, config changes)
    "falcon_40b": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "num_ln_in_parallel_attn": 2,
                              "bias": True}),
    "falcon_new_one_norm": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2,
                                       "num_ln_in_parallel_attn": 1}),
    "falcon_mha_parallel": ("falcon", {"multi_query": False, "tie_word_embeddings": False}),
    "falcon_sequential_mq": ("falcon", {"parallel_attn": False}),
    "falcon_sequential_mha": ("falcon", {"parallel_attn": False, "multi_query": False}),
    "gpt_neox_sequential": ("gpt_neox", {"use_parallel_residual": False, "attention_bias": False}),
    "stablelm_parallel": ("stablelm", {"use_parallel_residual": True, "use_qkv_bias": False}),
    "phi3_window_longrope": ("phi3", {"sliding_window": 3, "original_max_position_embeddings": 16,
                                      "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                                          "partial_rotary_factor": 0.75,
                                                          "short_factor": [1.0, 1.5, 2.0],
                                                          "long_factor": [2.0, 3.0, 4.0]}}),
    "smollm3_windows": ("smollm3", {"use_sliding_window": True, "sliding_window": 3, "layer_types": None}),
    "granite_biases": ("granite", {"attention_bias": True, "mlp_bias": True}),
    "olmo2_biases": ("olmo2", {"attention_bias": True}),
    "gemma2_no_softcaps": ("gemma2", {"attn_logit_softcapping": None, "final_logit_softcapping": None}),
    "gemma3_plain_rope": ("gemma3", {"rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
    "mistral_no_window": ("mistral", {"sliding_window": None}),
    "qwen3_biases_windows": ("qwen3", {"attention_bias": True, "use_sliding_window": True, "sliding_window": 3,
                                       "max_window_layers": 1, "layer_types": None}),
    "llama_dynamic": ("llama_bias_yarn", {"attention_bias": False, "mlp_bias": True, "max_position_embeddings": 8,
                                          "rope_parameters": {"rope_type": "dynamic", "factor": 2.0,
                                                              "rope_theta": 1e4}}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_live_family_variants(tmp_path, variant):
    """Live: transformers builds the variant (float64 end to end, random non-degenerate weights) and saves it;
    npgpt loads it to the same logits and loss (1e-12) and gradients (1e-11), and saves what transformers reads
    back to the same logits."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    mk = _fixture_script()
    family, changes = VARIANTS[variant]
    cfg_cls, model_cls, kw = mk.FAMILIES[family]
    kw = {**kw, **changes}
    rng = np.random.default_rng(sum(map(ord, variant)))
    idx, targets = rng.integers(0, mk.V, size=(2, 8)), rng.integers(0, mk.V, size=(2, 8))
    with mk.float64_everywhere():
        config = getattr(tr, cfg_cls)(**{**mk.COMMON, **{k: v for k, v in kw.items() if v is not None or
                                                          k not in ("layer_types",)}})
        config._attn_implementation = "eager"
        hf = getattr(tr, model_cls)(config).to(torch.float64).eval()
        mk.fill(hf, family, rng)
        ref = mk.run(hf, idx, targets)
    mk.save_dir(hf, str(tmp_path / "hf"))
    model = from_pretrained(tmp_path / "hf", dtype=np.float64)
    logits, loss, cache = llama_forward(model.params, model.config, idx, targets)
    assert rel(logits, ref["logits"]) <= 1e-12 and rel(loss, ref["loss"]) <= 1e-12
    grads = hf_grads(model, llama_backward(cache))
    aliases = family_of_model(model).aliases
    for k, g in grads.items():
        assert rel(g, ref["grad." + next((a for a, b in aliases.items() if b == k), k)]) <= 1e-11, k
    save_pretrained(model, tmp_path / "ours")
    back = _hf_load(torch, tr, tmp_path / "ours", mk)
    with mk.float64_everywhere(), torch.no_grad():
        theirs = back(input_ids=torch.from_numpy(idx)).logits.numpy()
    assert rel(logits, theirs) <= 1e-12


# ------------------------------------------------------------------------------------------- older spellings

HUB_STYLE = {  # config.json as transformers 4.x wrote them for released models (shapes shrunk)
    "pythia": ({"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
                "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 128, "layer_norm_eps": 1e-05,
                "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 4,
                "num_hidden_layers": 2, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
                "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
                "use_parallel_residual": True, "vocab_size": 96},
               {"partial_rotary_factor": 0.25, "rope_theta": 10000.0, "parallel_residual": True, "mlp_kind": "plain"}),
    "phi2": ({"architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50256,
              "embd_pdrop": 0.0, "eos_token_id": 50256, "hidden_act": "gelu_new", "hidden_size": 64,
              "initializer_range": 0.02, "intermediate_size": 128, "layer_norm_eps": 1e-05,
              "max_position_embeddings": 2048, "model_type": "phi", "num_attention_heads": 4, "num_hidden_layers": 2,
              "num_key_value_heads": 4, "partial_rotary_factor": 0.4, "qk_layernorm": False, "resid_pdrop": 0.1,
              "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16",
              "transformers_version": "4.37.0", "use_cache": True, "vocab_size": 96},
             {"partial_rotary_factor": 0.4, "lm_head_bias": True, "parallel_shared_norm": True}),
    "falcon7b": ({"alibi": False, "apply_residual_connection_post_layernorm": False,
                  "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": False, "bos_token_id": 11,
                  "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 32, "initializer_range": 0.02,
                  "layer_norm_epsilon": 1e-05, "model_type": "falcon", "multi_query": True,
                  "new_decoder_architecture": False, "num_attention_heads": 4, "num_hidden_layers": 2,
                  "parallel_attn": True, "torch_dtype": "bfloat16", "transformers_version": "4.27.4",
                  "use_cache": True, "vocab_size": 96},
                 {"n_kv_head": 1, "intermediate_size": 128, "tie_word_embeddings": True, "block_size": 2048}),
    "gemma3_1b": ({"architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                   "attn_logit_softcapping": None, "cache_implementation": "hybrid", "final_logit_softcapping": None,
                   "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 32,
                   "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 32768,
                   "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 7,
                   "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
                   "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
                   "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "use_cache": True,
                   "vocab_size": 96},
                  {"rope_theta": 1e6, "rope_local_theta": 1e4, "attention_scale": 1 / 16, "sliding_window": 512,
                   "layer_types": ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")}),
    "phi3_128k": ({"architectures": ["Phi3ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
                   "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": 4,
                   "num_hidden_layers": 2, "num_key_value_heads": 4, "original_max_position_embeddings": 4096,
                   "rms_norm_eps": 1e-05, "rope_scaling": {"long_factor": [1.0, 2.0, 3.0, 4.0],
                                                           "short_factor": [1.0, 1.5, 1.5, 2.0], "type": "su"},
                   "rope_theta": 10000.0, "sliding_window": 262144, "vocab_size": 96},
                  {"rope_scaling": {"long_factor": [1.0, 2.0, 3.0, 4.0], "short_factor": [1.0, 1.5, 1.5, 2.0],
                                    "rope_type": "longrope", "original_max_position_embeddings": 4096},
                   "sliding_window": 262144}),
    "smollm3": ({"architectures": ["SmolLM3ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
                 "model_type": "smollm3", "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 2,
                 "no_rope_layer_interval": 2, "use_sliding_window": True, "sliding_window": 3, "vocab_size": 96},
                {"no_rope_layers": (1, 0, 1, 0), "sliding_window": 3,
                 "layer_types": ("full_attention", "sliding_attention") * 2}),
}


@pytest.mark.parametrize("name", sorted(HUB_STYLE))
def test_older_config_spellings(name):
    """Released models' config.json in transformers 4's spelling (rotary_pct, rope_theta + rope_scaling, Phi-3's
    "su", Gemma 3's rope_local_base_freq and sliding_window_pattern, SmolLM3's intervals) map as transformers 5
    reads them."""
    from npgpt.llama.pretrained import config_from_hf
    d, want = HUB_STYLE[name]
    config = config_from_hf(d, "config.json")
    for key, value in want.items():
        assert getattr(config, key) == value, key


def test_live_tied_config_with_a_different_head_matches_transformers(tmp_path):
    """Live: the untied reading of a tied config with a different stored head is what transformers computes."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    mk = _fixture_script()
    path = _copy(tmp_path)
    tensors = load_safetensors(path / "model.safetensors")
    head = np.random.default_rng(1).standard_normal(tensors["model.embed_tokens.weight"].shape)
    save_safetensors(path / "model.safetensors", {**tensors, "lm_head.weight": head})
    idx = expected("qwen3")["idx"]
    ours, _, _ = llama_forward(from_pretrained(path, dtype=np.float64).params,
                               from_pretrained(path, dtype=np.float64).config, idx)
    hf = _hf_load(torch, tr, path, mk)
    with mk.float64_everywhere(), torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(idx)).logits.numpy()
    assert rel(ours, theirs) <= 1e-12


# ------------------------------------------------------------------------------------------- block styles

def _style(family):
    from npgpt.llama.hf_families import style_config
    kv = {"gpt_neox": 4, "falcon": 1}.get(family, 2)
    return style_config(family, vocab_size=11, block_size=8, n_layer=4, n_head=4, n_kv_head=kv, n_embd=32,
                        intermediate_size=24)


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "olmo2", "gemma2", "smollm3", "gpt_neox", "phi",
                                    "falcon", "stablelm", "granite", "mistral"])
def test_block_style_trains_and_saves_as_its_family(tmp_path, family):
    """A model in a family's block style (style_config, for --arch) trains with AdamW in float32 (a fixed
    batch's loss halves) and save_pretrained writes it as that family, read back bit-exactly."""
    from npgpt.optim import AdamW
    config = _style(family)
    model = Llama(config, seed=0, dtype=np.float32)
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, size=(4, 8)), rng.integers(0, 11, size=(4, 8))
    losses = []
    for _ in range(60):
        _, loss = model.forward(idx, targets)
        opt.step(model.backward())
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    save_pretrained(model, tmp_path)
    want = "llama" if family == "phi3" else family
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == want
    back = from_pretrained(tmp_path)
    assert np.array_equal(back.flat_params, model.flat_params)


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "olmo2", "gemma2", "smollm3", "phi", "falcon"])
def test_live_block_style_saves_what_transformers_reads(tmp_path, family):
    """Live: a fresh model in a family's style, saved, gives transformers our float32 logits."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    model = Llama(_style(family), seed=3, dtype=np.float32)
    save_pretrained(model, tmp_path)
    hf = tr.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")
    idx = np.array([[1, 2, 3, 4, 5, 6, 7, 8]])
    ours, _ = model.forward(idx)
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(idx)).logits.numpy()
    assert rel(ours, theirs) <= 2e-5


def test_live_transformers_loads_our_bfloat16_shards(tmp_path):
    """Live: a BF16, sharded save is what transformers loads (its float32 logits from the same rounded values)."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    model = load("gemma3")
    save_pretrained(model, tmp_path, dtype="bfloat16", max_shard_bytes=30_000)
    hf = tr.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")
    idx = expected("gemma3")["idx"]
    ours32 = from_pretrained(tmp_path, dtype=np.float32)
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(idx)).logits.numpy()
    assert rel(llama_forward(ours32.params, ours32.config, idx)[0], theirs) <= 2e-5
