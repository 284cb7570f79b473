"""Training a small mixture of experts from the command line's config (--arch moe, --n-experts, --top-k,
--aux-loss-coef): the flags' checks and refusals, the aux loss and expert shares in the progress line and at
each evaluation, the expert-load plot beside the loss curve, and a resume that keeps the load history."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from npgpt.training import TrainConfig, train
from npgpt.training.plot import plot_expert_load

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(arch="moe", n_experts=4, top_k=2, aux_loss_coef=0.02, n_layer=1, n_head=2, n_embd=16, lr_decay_iters=8,
                block_size=16, batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, log_interval=1,
                sample_len=0, warmup_iters=1, out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


def test_moe_config_carries_the_flags(tmp_path):
    config = tiny(tmp_path).model_config(50)
    assert (config.moe_family, config.num_experts, config.num_experts_per_tok) == ("mixtral", 4, 2)
    assert config.router_aux_loss_coef == 0.02 and config.output_router_logits
    defaults = TrainConfig(arch="moe").model_config(50)
    assert (defaults.num_experts, defaults.num_experts_per_tok, defaults.router_aux_loss_coef) == (8, 2, 0.01)


@pytest.mark.parametrize("kw, match", [
    ({"arch": "llama"}, "^n_experts: only --arch moe has experts"),
    ({"arch": "gpt2", "n_experts": None}, "^top_k: only --arch moe has experts"),
    ({"top_k": 5}, "^top_k: expected at most n_experts=4, got 5"),
    ({"n_experts": 0}, "^n_experts: expected a positive integer"),
    ({"aux_loss_coef": -0.1}, "^aux_loss_coef: expected a finite number >= 0"),
    ({"aux_loss_coef": float("nan")}, "^aux_loss_coef:"),
])
def test_bad_moe_flags_are_one_line(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match) as info:
        tiny(tmp_path, **kw)
    assert "\n" not in str(info.value)


def test_training_reports_the_load_and_plots_it(tmp_path):
    lines: list[str] = []
    result = train(text=TEXT, cfg=tiny(tmp_path), log=lines.append, live=False)
    steps = [ln for ln in lines if ln.startswith("iter ")]
    evals = [ln for ln in lines if ln.startswith("eval at iter")]
    assert steps and all("| aux " in ln and "| experts " in ln for ln in steps)
    assert len(evals) == 3 and all("| aux " in ln and "| experts " in ln for ln in evals)
    shares = [float(v) for v in steps[-1].split("| experts ")[1].rstrip(" %").split()]
    assert len(shares) == 4 and abs(sum(shares) - 100) <= 2  # percentages, rounded
    svg = tmp_path / "run" / "expert_load.svg"
    assert svg.is_file() and result.plot_path is not None
    root = ET.fromstring(svg.read_text())
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 4
    resumed = train(text=TEXT, cfg=tiny(tmp_path, max_iters=8, resume=True), log=lines.append, live=False)
    assert resumed.final_val_loss is not None
    from npgpt.training.checkpoint import load_checkpoint  # the history holds one row per step
    meta = load_checkpoint(tmp_path / "run" / "ckpt.npz").meta
    load = meta["history"]["expert_load"]
    assert len(load) == 8 and all(abs(sum(r) - 1.0) < 1e-9 for r in load)


def test_dense_runs_have_no_load_plot(tmp_path):
    lines: list[str] = []
    cfg = TrainConfig(arch="llama", n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=2,
                      eval_interval=2, eval_iters=1, sample_len=0, out_dir=str(tmp_path / "run"))
    train(text=TEXT, cfg=cfg, log=lines.append, live=False)
    assert not any("| experts " in ln for ln in lines)
    assert not (tmp_path / "run" / "expert_load.svg").exists()


def test_plot_expert_load_draws_each_expert(tmp_path):
    rng = np.random.default_rng(0)
    load = rng.dirichlet(np.ones(3), size=250).tolist()
    out = plot_expert_load(tmp_path / "load", load)
    assert out.suffix == ".svg"
    root = ET.fromstring(out.read_text())
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 3
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


def test_an_moe_model_saves_as_mixtral(tmp_path):
    """--arch moe's model is a Mixtral: save_pretrained writes model_type mixtral, from_pretrained reads the same
    model back, and (live) transformers loads it to our float32 logits."""
    import json

    from npgpt.llama import Llama
    from npgpt.llama.pretrained import from_pretrained, save_pretrained
    config = tiny(tmp_path).model_config(30)
    model = Llama(config, seed=1, dtype=np.float32)
    save_pretrained(model, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "mixtral"
    back = from_pretrained(tmp_path / "hf")
    assert back.config == config and np.array_equal(back.flat_params, model.flat_params)
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    hf = tr.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    idx = np.array([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(idx)).logits.numpy()
    ours = model.forward(idx)[0]
    assert np.max(np.abs(ours - theirs)) <= 2e-5 * np.max(np.abs(theirs))
