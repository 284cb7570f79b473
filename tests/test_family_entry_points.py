"""Every entry point for every dense family: a tiny model in each Hugging Face family adapter's block style
(style_config), saved with npgpt.save_pretrained and a byte-level BPE tokenizer, goes through `npgpt eval DIR`,
`npgpt sample --ckpt DIR` and `npgpt train --init-from DIR` (whose OUT/hf is a directory of the same family);
`npgpt train --arch` trains the Qwen3, Gemma 3 and OLMo 2 block styles from scratch and `npgpt sample` reads
their checkpoints; and a family directory with an unknown config field, a missing tensor or NaN weights is
refused through the CLI with exit 2 and one line.  In-process (npgpt.cli.main), tiny widths, two steps."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import npgpt
from npgpt.cli import main
from npgpt.io.safetensors import load_safetensors, save_safetensors
from npgpt.llama import Llama, style_config
from npgpt.llama import pretrained as llama_pretrained
from npgpt.llama.hf_families import FAMILIES
from npgpt.tokenizers import save_tokenizer, train_bpe

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 12
VOCAB = 304  # the model's vocabulary: the tokenizer's 300 ids and a few spare rows
TRAIN = ["--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--block-size", "8",
         "--sample-len", "0", "--warmup-iters", "1", "--log-interval", "1"]
WIDTHS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "16"]
SAVED_AS = {"phi3": "phi3"}  # Phi-3's block is Llama's: npgpt.save_pretrained would write it as llama


def family_config(family: str) -> npgpt.LlamaConfig:
    """Tiny widths any family's config.json can say (GPT-NeoX and Falcon: as many kv heads as query heads, the
    head size from the width; a quarter of 8 channels still rotates a pair); four layers, so that SmolLM3's
    fourth has no RoPE (with RoPE everywhere it would be Llama)."""
    return style_config(family, vocab_size=VOCAB, block_size=16, n_layer=4, n_head=2, n_kv_head=2, n_embd=16,
                        intermediate_size=32)


def model_type(d: Path) -> str:
    return str(json.loads((d / "config.json").read_text())["model_type"])


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXT, 300)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("text") / "text.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def make_dir(d: Path, family: str, tok) -> Path:
    model = Llama(family_config(family), seed=0, dtype=np.float32)
    if family in SAVED_AS:
        llama_pretrained.save_pretrained(model, d, family=SAVED_AS[family])
    else:
        npgpt.save_pretrained(model, d)
    save_tokenizer(tok, d, model_max_length=model.config.block_size)
    return d


def run(capsys, *args) -> tuple[int, str, str]:
    """npgpt's command line in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own exits
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# every adapter with a from-scratch style (style_config); Qwen2-MoE and Qwen3-MoE have none yet: their
# directories are read and written by tests/test_moe_families.py
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("qwen2_moe", "qwen3_moe")])
def test_every_entry_point_reads_the_family(tmp_path, capsys, monkeypatch, tokenizer, text_file, family):
    d = make_dir(tmp_path / family, family, tokenizer)
    saved_type = model_type(d)
    assert saved_type in FAMILIES[family].model_types, (family, saved_type)

    code, out, err = run(capsys, "eval", d, text_file)
    assert code == 0, err
    ppl = re.search(r"perplexity\D*([0-9.]+)", out)
    assert ppl and math.isfinite(float(ppl.group(1))) and float(ppl.group(1)) > 1.0, out

    code, out, err = run(capsys, "sample", "--ckpt", d, "--prompt", "it was", "--num-samples", "1",
                         "--max-new-tokens", "4", "--seed", "1")
    assert code == 0, err
    assert "sample 1/1" in out and "\nit was" in out, out

    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", text_file, "--init-from", d, "--out-dir", "ft", *TRAIN)
    assert code == 0, err
    hf = tmp_path / "ft" / "hf"
    assert model_type(hf) == saved_type
    tuned = npgpt.from_pretrained(hf)
    assert isinstance(tuned, Llama) and tuned.config == npgpt.from_pretrained(d).config
    assert not np.array_equal(tuned.flat_params, npgpt.from_pretrained(d).flat_params)  # it took its steps


@pytest.mark.parametrize("arch", ["qwen3", "gemma3", "olmo2"])
def test_training_from_scratch_with_arch_then_sample(tmp_path, capsys, monkeypatch, text_file, arch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", text_file, "--arch", arch, "--out-dir", arch, *WIDTHS, *TRAIN)
    assert code == 0, err
    ckpt = tmp_path / arch / "ckpt.npz"
    assert ckpt.is_file()
    code, out, err = run(capsys, "sample", "--ckpt", ckpt, "--prompt", "it", "--num-samples", "1",
                         "--max-new-tokens", "4")
    assert code == 0, err
    assert "sample 1/1" in out and "\nit" in out, out


def _rewrite_weights(d: Path, change) -> None:
    path = d / "model.safetensors"
    tensors = dict(load_safetensors(path))
    change(tensors)
    path.unlink()
    save_safetensors(path, tensors)


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "olmo2", "gpt_neox", "falcon"])
def test_bad_family_directory_is_one_line_exit_2(tmp_path, capsys, tokenizer, text_file, family):
    base = make_dir(tmp_path / "good", family, tokenizer)

    def broken(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in base.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d

    unknown = broken("unknown")
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["npgpt_surprise_field"] = 1
    (unknown / "config.json").write_text(json.dumps(cfg))
    err = one_line_error(*run(capsys, "eval", unknown, text_file))
    assert "config.json" in err and "npgpt_surprise_field" in err, err

    missing = broken("missing")
    gone: list[str] = []

    def drop(t: dict) -> None:
        gone.append(next(k for k in sorted(t) if ".1." in k))
        del t[gone[0]]
    _rewrite_weights(missing, drop)
    err = one_line_error(*run(capsys, "sample", "--ckpt", missing, "--max-new-tokens", "2"))
    assert str(missing) in err and gone[0] in err, err  # the directory (its weights may be sharded) and the tensor

    nan = broken("nan")
    poisoned: list[str] = []

    def poison(t: dict) -> None:
        poisoned.append(next(k for k in sorted(t) if ".0." in k and t[k].ndim == 2))
        w = np.array(t[poisoned[0]], copy=True)
        w.flat[3] = np.nan
        t[poisoned[0]] = w
    _rewrite_weights(nan, poison)
    err = one_line_error(*run(capsys, "train", text_file, "--init-from", nan, "--out-dir", tmp_path / "nan_out",
                              *TRAIN))
    assert "model.safetensors" in err and poisoned[0] in err, err
    assert not (tmp_path / "nan_out").exists()  # nothing written
