"""npgpt.training.checkpoint: round trip, atomic writes, and a one-line ValueError for every unusable file."""

import json
import os

import numpy as np
import pytest

import npgpt.training.checkpoint as ckmod
from npgpt.training.checkpoint import FORMAT_NAME, FORMAT_VERSION, load_checkpoint, save_checkpoint
from npgpt.gpt2.config import GPTConfig
from npgpt.gpt2 import param_shapes

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def _arrays(cfg=CFG, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in param_shapes(cfg).items()} for _ in range(3)]


def _save(path, cfg=CFG, seed=0, meta=None):
    p, m, v = _arrays(cfg, seed)
    return save_checkpoint(path, p, m, v, cfg, meta if meta is not None else {"iteration": 3, "x": [1.5, None]})


def _one_line_error(path, pattern, **kw):
    with pytest.raises(ValueError, match=pattern) as e:
        load_checkpoint(path, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_round_trip(tmp_path):
    p, m, v = _arrays(dtype=np.float32)
    meta = {"iteration": 7, "history": [1.25, 2.5], "rng": {"state": 2**100 + 3}, "best": None}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.npz", p, m, v, CFG, meta)
    ck = load_checkpoint(path, config=CFG)
    assert ck.config == CFG
    for got, want in ((ck.params, p), (ck.adam_m, m), (ck.adam_v, v)):
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k])
    assert ck.meta["format"] == FORMAT_NAME and ck.meta["version"] == FORMAT_VERSION
    assert {k: ck.meta[k] for k in meta} == meta


def test_file_layout_needs_no_pickle(tmp_path):
    path = _save(tmp_path / "c.npz")
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        md = z["metadata"]
        assert md.dtype.kind == "U" and md.dtype != object  # a numpy unicode array
        meta = json.loads(str(md[()]))
    shapes = param_shapes(CFG)
    assert names == {"metadata"} | {f"{g}/{k}" for g in ("param", "adam_m", "adam_v") for k in shapes}
    assert meta["model_config"] == CFG.to_dict()


def test_failing_save_leaves_the_old_file_byte_identical(tmp_path, monkeypatch):
    path = _save(tmp_path / "ckpt.npz", seed=0)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        _save(path, seed=1)
    monkeypatch.undo()

    def half_write(f, **arrays):  # writes part of an archive, then dies
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckmod.np, "savez", half_write)
    with pytest.raises(KeyboardInterrupt):
        _save(path, seed=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary files left behind
    _save(path, seed=3)  # a good save does replace it
    assert path.read_bytes() != before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_unserialisable_meta_is_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        _save(tmp_path / "c.npz", meta={"loss": float("nan")})
    with pytest.raises(ValueError, match="written by save_checkpoint"):
        _save(tmp_path / "c.npz", meta={"format": "x"})
    assert not (tmp_path / "c.npz").exists()


def test_missing_file_and_directory(tmp_path):
    _one_line_error(tmp_path / "nope.npz", "no such checkpoint file")
    _one_line_error(tmp_path, "is a directory")


def test_corrupt_and_truncated(tmp_path):
    good = _save(tmp_path / "good.npz").read_bytes()
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    _one_line_error(tmp_path / "noise.npz", "not a readable .npz checkpoint")
    (tmp_path / "text.npz").write_text("hello, I am not an archive\n")
    _one_line_error(tmp_path / "text.npz", "not a readable .npz checkpoint")
    for cut in (10, len(good) // 2, len(good) - 30):
        (tmp_path / "cut.npz").write_bytes(good[:cut])
        _one_line_error(tmp_path / "cut.npz", "corrupt or truncated")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # damage inside an array's data: the zip CRC check fails
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    _one_line_error(tmp_path / "flip.npz", "corrupt or truncated")


def test_foreign_files_are_not_npgpt_checkpoints(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3), bias=np.ones(2))
    _one_line_error(tmp_path / "other.npz", r"not an npgpt checkpoint \(no 'metadata' entry\)")
    np.savez(tmp_path / "other2.npz", metadata=np.array(json.dumps({"format": "someone-else", "version": 1})))
    _one_line_error(tmp_path / "other2.npz", "not an npgpt checkpoint .*someone-else")
    np.savez(tmp_path / "other3.npz", metadata=np.arange(3))
    _one_line_error(tmp_path / "other3.npz", "not an npgpt checkpoint")
    np.savez(tmp_path / "other4.npz", metadata=np.array("{not json"))
    _one_line_error(tmp_path / "other4.npz", "not valid JSON")
    np.save(tmp_path / "array.npy", np.zeros(3))
    _one_line_error(tmp_path / "array.npy", "not an npgpt checkpoint")


def _rewrite(src, dst, drop=(), add=None, meta_update=None):
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files if k not in drop}
    if meta_update:
        meta = json.loads(str(d["metadata"][()]))
        meta.update(meta_update)
        d["metadata"] = np.array(json.dumps(meta))
    d.update(add or {})
    np.savez(dst, **d)
    return dst


def test_newer_version(tmp_path):
    src = _save(tmp_path / "c.npz")
    _one_line_error(_rewrite(src, tmp_path / "v2.npz", meta_update={"version": FORMAT_VERSION + 1}),
                    "format version 2 is newer")


def test_entries_must_match_the_stored_config(tmp_path):
    src = _save(tmp_path / "c.npz")
    _one_line_error(_rewrite(src, tmp_path / "a.npz", drop=("param/h.1.ln_2.bias",)),
                    r"param entries do not match the model config \(missing h.1.ln_2.bias\)")
    _one_line_error(_rewrite(src, tmp_path / "b.npz", add={"adam_v/h.2.ln_1.bias": np.zeros(8, np.float32)}),
                    r"adam_v entries .*unexpected h.2.ln_1.bias")
    _one_line_error(_rewrite(src, tmp_path / "c2.npz", add={"param/wte.weight": np.zeros((12, 8), np.float32)}),
                    r"param/wte.weight: shape \(12, 8\) does not match the model config's \(11, 8\)")
    _one_line_error(_rewrite(src, tmp_path / "d.npz", add={"junk": np.zeros(1)}), "unexpected entries junk")
    other = GPTConfig(vocab_size=11, block_size=6, n_layer=3, n_head=2, n_embd=8)
    _one_line_error(_rewrite(src, tmp_path / "e.npz", meta_update={"model_config": other.to_dict()}),
                    "do not match the model config")


def test_requested_config_mismatch_names_the_fields(tmp_path):
    src = _save(tmp_path / "c.npz", meta={"train_config": {"lr": 0.001, "batch_size": 12, "seed": 1}})
    want = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=16)
    msg = _one_line_error(src, "different model", config=want)
    assert "n_embd (checkpoint 8, requested 16)" in msg and "n_layer" not in msg
    msg = _one_line_error(src, "different configuration", expect={"lr": 0.001, "batch_size": 24, "seed": 2})
    assert "batch_size (checkpoint 12, requested 24)" in msg and "seed (checkpoint 1, requested 2)" in msg
    assert "lr" not in msg
    load_checkpoint(src, config=CFG, expect={"lr": 0.001})  # matching: fine


@pytest.mark.parametrize("kind", ["random bytes", "a pickle", "an object array inside", "empty"])
def test_unreadable_files_never_suggest_allow_pickle(tmp_path, kind):
    """Whatever the bytes, the message is one line naming the path and never NumPy's allow_pickle advice."""
    import pickle
    p = tmp_path / "ckpt.npz"
    if kind == "random bytes":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "a pickle":
        p.write_bytes(pickle.dumps({"param/wte.weight": [1, 2, 3]}))
    elif kind == "an object array inside":
        np.savez(p, metadata=np.array(json.dumps({"format": FORMAT_NAME, "version": 1})),
                 **{"param/x": np.array([None], dtype=object)})
    else:
        p.write_bytes(b"")
    with pytest.raises(ValueError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg and "pickle" not in msg.lower()


def test_is_training_checkpoint(tmp_path):
    from npgpt.training.checkpoint import is_training_checkpoint
    path = _save(tmp_path / "ckpt.npz")
    assert is_training_checkpoint(path)
    np.savez(tmp_path / "case.npz", x=np.zeros(3))
    assert not is_training_checkpoint(tmp_path / "case.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert not is_training_checkpoint(tmp_path / "junk.npz") and not is_training_checkpoint(tmp_path / "none")


def test_non_finite_values_and_an_oversized_tokenizer_are_damage(tmp_path):
    """Training never saves NaN or inf, and its tokenizer never has more ids than the model: a file that does
    was damaged or edited, and loading (or stored_tokenizer) says so in one line, naming the entry."""
    from npgpt.training.checkpoint import stored_tokenizer
    from npgpt.tokenizers import CharTokenizer
    p, m, v = _arrays()
    v["h.1.mlp.c_fc.weight"][0, 3] = np.nan
    path = save_checkpoint(tmp_path / "nan.npz", p, m, v, CFG, {})
    _one_line_error(path, r"nan.npz: adam_v/h.1.mlp.c_fc.weight holds non-finite values \(NaN or inf\); the file "
                          r"is damaged$")
    tok = CharTokenizer("abcdefghijklmnop")  # 16 characters for an 11-token model
    path = _save(tmp_path / "tok.npz", meta={"tokenizer": tok.to_dict()})
    with pytest.raises(ValueError, match=r"tok.npz: its tokenizer has 16 tokens but the model's vocabulary only 11"):
        stored_tokenizer(path, load_checkpoint(path))
    path = _save(tmp_path / "ok.npz", meta={"tokenizer": CharTokenizer("abcdefghijk").to_dict()})
    assert stored_tokenizer(path, load_checkpoint(path)).vocab_size == 11


def test_a_tokenizer_smaller_than_the_model_is_refused_for_sampling(tmp_path):
    """Issue 42, item 12: a sample may draw any of the model's ids, so a tokenizer with fewer is refused when
    loading for sampling, naming the checkpoint (eval only encodes text, which such a tokenizer can)."""
    from npgpt.training.checkpoint import stored_tokenizer
    from npgpt.tokenizers import CharTokenizer
    path = _save(tmp_path / "few.npz", meta={"tokenizer": CharTokenizer("abcdefghij").to_dict()})
    ck = load_checkpoint(path)
    assert stored_tokenizer(path, ck).vocab_size == 10
    with pytest.raises(ValueError, match=r"few.npz: its tokenizer has 10 tokens but the model's vocabulary 11: a "
                                         r"sample could draw id 10, which no token stands for; the file was "
                                         r"edited or is damaged$"):
        stored_tokenizer(path, ck, sampling=True)
