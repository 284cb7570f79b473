"""The family registry (npgpt/families.py) end to end: one loader for every family's Hugging Face directory,
and every entry point (npgpt eval, npgpt sample, npgpt train --init-from, checkpoints) taking a Llama
directory as it takes a GPT-2 one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npgpt
from npgpt import families
from npgpt.llama import Llama, LlamaConfig
from npgpt.tokenizers import save_tokenizer, train_bpe

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune, "
        "or to take arms against a sea of troubles. ") * 30


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npgpt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny Llama directory with its own byte-level BPE tokenizer (vocab.json + merges.txt)."""
    d = tmp_path_factory.mktemp("llama")
    tok = train_bpe(TEXT, 300)
    config = LlamaConfig(vocab_size=304, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                         intermediate_size=48, tie_word_embeddings=False)
    model = Llama(config, seed=3, dtype=np.float32)
    npgpt.save_pretrained(model, d)
    save_tokenizer(tok, d, model_max_length=64)
    return d


def test_from_pretrained_reads_model_type(llama_dir):
    model = npgpt.from_pretrained(llama_dir)
    assert isinstance(model, Llama) and model.config.n_kv_head == 2 and not model.training
    gpt2 = npgpt.from_pretrained(ROOT / "tests" / "fixtures" / "tiny_gpt2")
    assert isinstance(gpt2, npgpt.GPT)


def test_unknown_family_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ValueError, match=r"^.*config.json: model_type 'mamba' is not supported \(supported: .*gpt2, "
                                         r".*llama.*\)$"):
        npgpt.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing: no such file or directory"):
        npgpt.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no config.json"):
        npgpt.from_pretrained(tmp_path / "empty")


def test_checkpoint_records_the_family(tmp_path):
    from npgpt.training.checkpoint import load_checkpoint, save_checkpoint

    config = LlamaConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_kv_head=2, n_embd=8, intermediate_size=16)
    m = Llama(config, dtype=np.float64, threads=1)
    zeros = {k: np.zeros_like(v) for k, v in m.params.items()}
    save_checkpoint(tmp_path / "c.npz", m.params, zeros, zeros, config, {})
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck.meta["model_family"] == "llama" and ck.config == config
    assert families.param_count(config) == m.num_params()


def test_eval_sample_and_init_from_take_a_llama_directory(llama_dir, tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    r = _cli("eval", str(llama_dir), "t.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "perplexity" in r.stdout
    r = _cli("sample", "--ckpt", str(llama_dir), "--prompt", "Whether", "--num-samples", "1",
             "--max-new-tokens", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("---------- sample 1/1 ----------\nWhether")
    r = _cli("train", "t.txt", "--init-from", str(llama_dir), "--max-iters", "3", "--eval-interval", "3",
             "--eval-iters", "1", "--batch-size", "2", "--block-size", "16", "--sample-len", "0", "--out-dir",
             "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model: gpt2" not in r.stdout
    tuned = npgpt.from_pretrained(tmp_path / "out" / "hf")  # the fine-tuned model, written as a Llama again
    assert isinstance(tuned, Llama)
    r = _cli("sample", "--ckpt", "out/ckpt.npz", "--num-samples", "1", "--max-new-tokens", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_arch_presets_build_through_the_registry():
    for arch, (family, _) in families.ARCHS.items():
        config = families.arch_config(arch, 50, {"block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8,
                                                  "dropout": 0.0, "n_kv_head": None, "intermediate_size": None})
        assert families.family_of(config).name == family
        model = families.build_model(config, threads=1)
        assert type(model) is families.family(family).model_class
