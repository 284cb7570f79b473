"""Fine-tuning a Hugging Face GPT-2 directory: a tiny GPT-2 with the real GPT-2 tokenizer made at run time
(vocab 50257, n_embd 8, one layer), loaded with its tokenizer, trained (the loss falls), written, and read
back by npgpt and by transformers with the same logits and token ids; bad directories are one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tokenizer_fixtures import gpt2_tok

from npgpt import GPT, GPTConfig
from npgpt.training import finetune
from npgpt.families import load_dir as load_gpt2_dir, save_dir as save_gpt2_dir
from npgpt.gpt2.pretrained import save_pretrained
from npgpt.tokenizers import save_tokenizer

TINY = GPTConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=8)
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 12


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_gpt2")
    model = GPT(TINY, seed=0)
    rng = np.random.default_rng(0)
    for k, p in model.params.items():  # random, not the init, so every tensor matters
        p[...] = rng.normal(0.0, 0.5 if "ln_" not in k else 0.1, size=p.shape) + (1.0 if k.endswith("ln_1.weight")
                                                                                  else 0.0)
    save_pretrained(model, d)
    save_tokenizer(gpt2_tok(), d)
    return d


def test_load_gives_the_model_and_gpt2s_tokenizer(tiny_dir):
    model, tok = load_gpt2_dir(tiny_dir)
    assert model.config == TINY and tok == gpt2_tok()
    assert tok.encode("Hello world").tolist() == [15496, 995]


def test_finetune_lowers_the_loss_and_writes_a_loadable_directory(tiny_dir, tmp_path):
    lines = []
    r = finetune(tiny_dir, TEXT, tmp_path / "out", max_iters=30, lr=3e-2, warmup_iters=3, batch_size=4,
                 block_size=32, eval_iters=4, log=lines.append)
    assert r.val_loss_after < r.val_loss_before - 0.5
    assert r.train_loss_last < r.train_loss_first
    assert lines[0].startswith("data: <text>") and any(line.startswith("final: train loss") for line in lines)
    assert r.out_dir == str(tmp_path / "out" / "hf")  # the same loop as `npgpt train --init-from`
    assert (tmp_path / "out" / "ckpt.npz").is_file() and (tmp_path / "out" / "best.npz").is_file()
    model, tok = load_gpt2_dir(r.out_dir)
    for k, v in r.model.params.items():
        assert np.array_equal(model.params[k], v), k
    assert tok == gpt2_tok()
    cfg = json.loads((tmp_path / "out" / "hf" / "tokenizer_config.json").read_text())
    assert cfg["model_max_length"] == 64 and cfg["eos_token"] == "<|endoftext|>"


def test_transformers_loads_the_written_directory(tiny_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model, tok = load_gpt2_dir(tiny_dir)
    save_gpt2_dir(model, tok, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out")).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    text = "Speak, speak. 🎉 naïve"
    ids = tok.encode(text)
    assert hf_tok.encode(text) == ids.tolist()
    assert hf_tok.decode(ids.tolist()) == text
    with torch.no_grad():
        theirs = hf(torch.tensor(ids[None, :].astype(np.int64))).logits.numpy()
    ours, _ = model.forward(ids[None, :].astype(np.int64))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_directory_without_tokenizer_files(tiny_dir, tmp_path):
    d = tmp_path / "no_tok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / f, d / f)
    with pytest.raises(ValueError, match=r"no_tok: no tokenizer files \(expected tokenizer.json, or vocab.json"):
        load_gpt2_dir(d)
    with pytest.raises(ValueError, match="no_tok: no tokenizer files"):
        finetune(d, TEXT, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_family(tiny_dir, tmp_path):
    d = tmp_path / "mamba"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: model_type 'mamba' is not supported \(supported: "):
        load_gpt2_dir(d)


def test_bad_arguments(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="missing: no such file or directory"):
        load_gpt2_dir(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile: not a directory"):
        load_gpt2_dir(tmp_path / "afile")
    with pytest.raises(ValueError, match=r"block_size: 65 is larger than .*tiny_gpt2.*'s context length 64"):
        finetune(tiny_dir, TEXT, tmp_path / "o", block_size=65)
    with pytest.raises(ValueError, match="text too short: the training split .* has 1 tokens"):
        finetune(tiny_dir, "hello there", tmp_path / "o", block_size=32)
