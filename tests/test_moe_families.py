"""The mixture-of-experts Hugging Face families (Mixtral, Qwen2-MoE, Qwen3-MoE) through npgpt.llama.pretrained:
parity with transformers on the committed fixtures (tests/fixtures/make_moe_families_fixtures.py: float64
logits, loss with the load-balancing term, every gradient named as the files name it, one tensor per expert;
greedy generation; float32 against stock), save -> load round trips, transformers loading our save (live,
when installed), and the one-line refusals of bad configs and expert tensors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from npgpt.io.safetensors import load_safetensors, save_safetensors
from npgpt.llama import llama_backward, llama_forward
from npgpt.llama.pretrained import family_of_model, from_pretrained, save_pretrained

ROOT = Path(__file__).parent / "fixtures" / "moe_families"
NAMES = ["mixtral", "qwen2_moe", "qwen3_moe"]


def rel(a, b):
    """Largest absolute difference over the reference's largest magnitude (absolute for an all-zero reference:
    an expert no token chose has zero gradients)."""
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / max(float(np.max(np.abs(b))), 1.0e-300)) \
        if np.any(b) else float(np.max(np.abs(np.asarray(a, dtype=np.float64))))


def expected(name):
    return np.load(ROOT / name / "expected.npz")


def load(name, dtype=np.float64):
    return from_pretrained(ROOT / name, dtype=dtype)


def parity(name):
    """(logits error, loss error, worst gradient error, greedy equal, float32 logits error) against the fixture."""
    e = expected(name)
    model = load(name)
    logits, loss, cache = llama_forward(model.params, model.config, e["idx"], e["targets"])
    grads = family_of_model(model).weights_to_hf(llama_backward(cache), model.config)
    stored = [k[len("float64.grad."):] for k in e.files if k.startswith("float64.grad.")]
    assert set(stored) == set(grads)  # every tensor of the checkpoint, under its file name
    worst = max(rel(grads[k], e[f"float64.grad.{k}"]) for k in stored)
    assert cache.aux_loss is not None and rel(cache.aux_loss, e["float64.aux_loss"]) <= 1e-12
    greedy = model.generate(e["prompt"], e["float64.greedy"].shape[1] - e["prompt"].shape[1], temperature=0.0)
    model32 = load(name, np.float32)
    logits32, _, _ = llama_forward(model32.params, model32.config, e["idx"])
    return (rel(logits, e["float64.logits"]), rel(loss, e["float64.loss"]), worst,
            bool(np.array_equal(greedy, e["float64.greedy"])), rel(logits32, e["float32.logits"]))


@pytest.mark.parametrize("name", NAMES)
def test_family_matches_transformers(name):
    logits, loss, grad, greedy, f32 = parity(name)
    assert logits <= 1e-12 and loss <= 1e-12
    assert grad <= 1e-11
    assert greedy
    assert f32 <= 2e-5


def test_configs_read_as_the_families_route():
    mix, q2, q3 = (load(n).config for n in NAMES)
    assert (mix.moe_family, mix.num_experts, mix.num_experts_per_tok, mix.moe_layers) == ("mixtral", 4, 2, (0, 1))
    assert (q2.norm_topk_prob, q2.shared_expert_intermediate_size, q2.moe_layers) == (False, 10, (0, 2))
    assert q2.attention_bias and not q2.o_bias
    assert (q3.norm_topk_prob, q3.qk_norm, q3.moe_intermediate_size) == (True, "head", 8)
    assert all(c.output_router_logits and c.router_aux_loss_coef == 0.05 for c in (mix, q2, q3))


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_is_bit_exact(tmp_path, name):
    model = load(name)
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == name
    assert set(load_safetensors(tmp_path / "model.safetensors")) == \
        set(load_safetensors(ROOT / name / "model.safetensors"))
    back = from_pretrained(tmp_path, dtype=np.float64)
    assert back.config == model.config
    assert np.array_equal(back.flat_params, model.flat_params)


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(ROOT / name, dst)
    (dst / "expected.npz").unlink()
    return dst


def _edit_config(path, **changes):
    d = json.loads((path / "config.json").read_text())
    d.update(changes)
    (path / "config.json").write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("name, changes, match", [
    ("mixtral", {"num_experts_per_tok": 5}, "num_experts_per_tok: expected an integer in \\[1, num_experts=4\\]"),
    ("mixtral", {"num_local_experts": 0}, "num_experts: expected a positive integer"),
    ("mixtral", {"router_jitter_noise": 0.1}, "router_jitter_noise 0.1 is not supported"),
    ("qwen2_moe", {"mlp_only_layers": [9]}, "mlp_only_layers: expected a tuple of layer indices"),
    ("qwen2_moe", {"num_local_experts": 5}, "num_experts: 4 disagrees with num_local_experts 5"),
    ("qwen3_moe", {"router_aux_loss_coef": -1}, "router_aux_loss_coef: expected a finite number >= 0"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path, name, changes, match):
    path = _edit_config(_copy(tmp_path, name), **changes)
    with pytest.raises(ValueError, match=match) as info:
        from_pretrained(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_expert_tensors_that_disagree_in_shape(tmp_path):
    path = _copy(tmp_path, "mixtral")
    tensors = load_safetensors(path / "model.safetensors")
    w1 = "model.layers.1.block_sparse_moe.experts.2.w1.weight"
    save_safetensors(path / "model.safetensors", {**tensors, w1: np.ones((9, 16))})
    with pytest.raises(ValueError, match=rf"tensor '{w1}' has shape \(9, 16\), expected \(8, 16\)"):
        from_pretrained(path)
    save_safetensors(path / "model.safetensors", {k: v for k, v in tensors.items() if k != w1})
    with pytest.raises(ValueError, match=rf"missing tensor\(s\) \['{w1}'\]"):
        from_pretrained(path)


def _fixture_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_families_fixtures",
                                                  Path(__file__).parent / "fixtures" / "make_families_fixtures.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    return mk


@pytest.mark.parametrize("name", NAMES)
def test_live_transformers_loads_our_save(tmp_path, name):
    """Live: what save_pretrained writes (every weight moved) transformers loads to our logits: float64 (its
    float32 islands made float64, experts in eager mode) to 1e-12, float32 stock to round-off."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    mk = _fixture_script()
    e = expected(name)
    model = load(name)
    rng = np.random.default_rng(5)
    for p in model.params.values():
        p += 0.01 * rng.standard_normal(p.shape)
    save_pretrained(model, tmp_path)
    ours, _, _ = llama_forward(model.params, model.config, e["idx"])
    with mk.float64_everywhere():
        hf = tr.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64, attn_implementation="eager",
                                                     experts_implementation="eager").eval()
        with torch.no_grad():
            theirs = hf(input_ids=torch.from_numpy(e["idx"])).logits.numpy()
    assert rel(ours, theirs) <= 1e-12
    model32 = from_pretrained(tmp_path, dtype=np.float32)
    save_pretrained(model32, tmp_path / "f32")
    hf32 = tr.AutoModelForCausalLM.from_pretrained(tmp_path / "f32", dtype=torch.float32).eval()
    with torch.no_grad():
        theirs32 = hf32(input_ids=torch.from_numpy(e["idx"])).logits.numpy()
    ours32, _, _ = llama_forward(model32.params, model32.config, e["idx"])
    assert rel(ours32, theirs32) <= 2e-5


def test_parity_table(capsys):
    """Prints the table docs/families.md quotes (pytest -s shows it)."""
    rows = [(n, *parity(n)) for n in NAMES]
    with capsys.disabled():
        print("\nfamily      logits    loss      worst grad  greedy  float32")
        for n, lg, ls, g, gr, f in rows:
            print(f"{n:<11} {lg:.1e}   {ls:.1e}   {g:.1e}     {'equal' if gr else 'DIFF'}   {f:.1e}")
