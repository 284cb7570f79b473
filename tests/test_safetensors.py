"""npgpt.io.safetensors: round trips for every dtype, the exact byte layout, atomic writes, and a ValueError
(one line, naming the file and the problem) for every kind of malformed file."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from npgpt.io.safetensors import (
    MAX_HEADER_BYTES,
    SafetensorsFile,
    bf16_to_float32,
    float32_to_bf16,
    load_metadata,
    load_safetensors,
    save_safetensors,
)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def raw_file(path, header, data: bytes = b"", length: int | None = None) -> str:
    """Write a safetensors file by hand: header (dict -> JSON, or raw bytes), then data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if length is None else length
    with open(path, "wb") as f:
        f.write(n.to_bytes(8, "little") + h + data)
    return str(path)


def valid_file(tmp_path) -> str:
    rng = np.random.default_rng(0)
    tensors = {"w": rng.normal(size=(5, 7)).astype(np.float32), "b": rng.normal(size=(7,)),
               "ids": np.arange(6, dtype=np.int64).reshape(2, 3), "h": rng.normal(size=(3,)).astype(np.float16)}
    p = str(tmp_path / "valid.safetensors")
    save_safetensors(p, tensors, {"format": "pt"})
    return p


def expect_error(path, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        load_safetensors(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- round trips

ALL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
              np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype(tmp_path, dtype):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        x = rng.normal(size=(3, 4, 5)).astype(dtype)
        x[0, 0, :3] = [np.inf, -np.inf, -0.0]
    elif np.dtype(dtype).kind == "b":
        x = rng.random((3, 4, 5)) < 0.5
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, size=(3, 4, 5), dtype=dtype, endpoint=True)
    tensors = {"x": x, "scalar": x.reshape(-1)[:1].reshape(()), "empty": x[:0], "strided": x[:, ::2, 1]}
    p = tmp_path / "t.safetensors"
    save_safetensors(p, tensors)
    out = load_safetensors(p)
    assert list(out) and set(out) == set(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == np.dtype(dtype) and out[k].shape == v.shape
        assert np.array_equal(out[k], v)
        assert out[k].flags.writeable and out[k].flags.c_contiguous


def test_bf16_round_trip_exact(tmp_path):
    # values with at most 8 significant bits are exactly representable in bfloat16
    rng = np.random.default_rng(2)
    x = (rng.integers(-255, 256, size=(4, 6)) * 2.0 ** rng.integers(-20, 20, size=(4, 6))).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 0.0, -0.0]
    p = tmp_path / "bf.safetensors"
    save_safetensors(p, {"x": x, "y": x.astype(np.float64)}, dtypes={"x": "BF16", "y": "BF16"})
    with SafetensorsFile(p) as f:
        assert f.info("x").dtype == "BF16" and f.info("x").end - f.info("x").begin == x.size * 2
    out = load_safetensors(p)
    assert out["x"].dtype == np.float32 and out["y"].dtype == np.float32
    assert np.array_equal(out["x"], x) and np.array_equal(out["y"], x)
    assert np.array_equal(np.signbit(out["x"]), np.signbit(x))


def test_bf16_rounding_is_nearest_even():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)  # bfloat16 spacing just above 1
    x = np.array([one + ulp / 2, one + 3 * ulp / 2, one + ulp / 2 + 2.0 ** -20, np.nan, 3.0e38],
                 dtype=np.float32)
    y = bf16_to_float32(float32_to_bf16(x))
    assert y[0] == one  # tie -> even (1.0)
    assert y[1] == one + 2 * ulp  # tie -> even (1 + 2 ulp)
    assert y[2] == one + ulp  # above the tie -> up
    assert np.isnan(y[3])
    assert np.isfinite(y[4]) and abs(y[4] / np.float32(3.0e38) - 1) < 2.0 ** -8
    big = np.array([np.finfo(np.float32).max], dtype=np.float32)
    assert np.isinf(bf16_to_float32(float32_to_bf16(big))[0])  # rounds past the largest bfloat16


def test_f16_conversion_on_save(tmp_path):
    x = np.array([1.0, 0.5, -2.0, 1.0 + 2.0 ** -10], dtype=np.float32)
    p = tmp_path / "h.safetensors"
    save_safetensors(p, {"x": x}, dtypes={"x": "F16"})
    out = load_safetensors(p)["x"]
    assert out.dtype == np.float16 and np.array_equal(out, x)
    with pytest.raises(ValueError, match="overflow F16"):
        save_safetensors(p, {"x": np.array([1e6], np.float32)}, dtypes={"x": "F16"})
    with pytest.raises(ValueError, match="only float arrays"):
        save_safetensors(p, {"x": np.arange(3)}, dtypes={"x": "BF16"})
    with pytest.raises(ValueError, match="not among the tensors"):
        save_safetensors(p, {"x": x}, dtypes={"y": "F16"})


def test_metadata_round_trip(tmp_path):
    p = tmp_path / "m.safetensors"
    save_safetensors(p, {"a": np.zeros(2, np.float32)}, {"format": "pt", "note": "héllo ✓"})
    assert load_metadata(p) == {"format": "pt", "note": "héllo ✓"}
    save_safetensors(p, {"a": np.zeros(2, np.float32)})
    assert load_metadata(p) == {}
    save_safetensors(p, {}, {"only": "metadata"})
    assert load_safetensors(p) == {} and load_metadata(p) == {"only": "metadata"}


def test_big_endian_input_is_stored_little_endian(tmp_path):
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    p = tmp_path / "be.safetensors"
    save_safetensors(p, {"x": x})
    out = load_safetensors(p)["x"]
    assert out.dtype == np.dtype("=f4") and np.array_equal(out, x)
    assert read_bytes(p)[-4:] == np.float32(5.0).astype("<f4").tobytes()


def test_byte_layout(tmp_path):
    tensors = {"z_half": np.ones(3, np.float16), "a_f32": np.ones(5, np.float32), "m_f64": np.ones(1),
               "flag": np.array([True])}
    p = tmp_path / "layout.safetensors"
    save_safetensors(p, tensors, {"format": "pt"})
    b = read_bytes(p)
    n = int.from_bytes(b[:8], "little")
    assert n % 8 == 0 and b[8:8 + n].rstrip(b" ").endswith(b"}")  # padded with spaces
    header = json.loads(b[8:8 + n])
    assert header.pop("__metadata__") == {"format": "pt"}
    offsets = {k: v["data_offsets"] for k, v in header.items()}
    # largest element size first, then name: every tensor is aligned to its element size
    assert list(header) == ["m_f64", "a_f32", "z_half", "flag"]
    assert offsets == {"m_f64": [0, 8], "a_f32": [8, 28], "z_half": [28, 34], "flag": [34, 35]}
    assert len(b) == 8 + n + 35
    assert {k: v["dtype"] for k, v in header.items()} == {"m_f64": "F64", "a_f32": "F32", "z_half": "F16",
                                                          "flag": "BOOL"}
    # deterministic: the same tensors in another order give the same bytes
    q = tmp_path / "layout2.safetensors"
    save_safetensors(q, dict(reversed(list(tensors.items()))), {"format": "pt"})
    assert read_bytes(q) == b


def test_hand_written_little_endian_file(tmp_path):
    data = (np.array([1.0, -2.5], "<f4").tobytes() + np.array([0x3F80, 0xC020], "<u2").tobytes()
            + bytes([0, 1, 2]))
    header = {"f": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
              "t": {"dtype": "BOOL", "shape": [3], "data_offsets": [12, 15]}}
    p = raw_file(tmp_path / "hand.safetensors", header, data)
    out = load_safetensors(p)
    assert out["f"].tolist() == [1.0, -2.5]
    assert out["b"].dtype == np.float32 and out["b"].tolist() == [1.0, -2.5]
    assert out["t"].tolist() == [False, True, True]  # any nonzero byte is True


def test_loaded_arrays_are_independent_copies(tmp_path):
    p = valid_file(tmp_path)
    a = load_safetensors(p)
    a["w"][...] = 0.0
    assert np.any(load_safetensors(p)["w"] != 0.0)


def test_read_into(tmp_path):
    p = valid_file(tmp_path)
    ref = load_safetensors(p)
    with SafetensorsFile(p) as f:
        out32 = np.empty((5, 7), np.float32)
        f.read_into("w", out32)  # same dtype: read straight in
        assert np.array_equal(out32, ref["w"])
        out64 = np.empty((5, 7), np.float64)
        f.read_into("w", out64)  # converted
        assert np.array_equal(out64, ref["w"])
        view = np.zeros((10, 7), np.float32)[::2]  # not contiguous
        f.read_into("w", view)
        assert np.array_equal(view, ref["w"])
        with pytest.raises(ValueError, match="shape"):
            f.read_into("w", np.empty((7, 5), np.float32))
        with pytest.raises(ValueError, match="no tensor named 'nope'"):
            f.get("nope")


# ------------------------------------------------------------------------------------------ interop


def test_reads_and_writes_the_reference_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(3)
    tensors = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(2,)),
               "c": rng.normal(size=(5,)).astype(np.float16), "i": np.arange(4, dtype=np.int32),
               "m": np.array([True, False])}
    theirs = tmp_path / "theirs.safetensors"
    st.save_file(tensors, str(theirs), metadata={"format": "np"})
    got = load_safetensors(theirs)
    assert load_metadata(theirs) == {"format": "np"}
    assert all(np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in tensors.items())
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, tensors, {"format": "np"})
    back = st.load_file(str(ours))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


def test_bf16_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, size=1000),
                        [0.0, -0.0, np.inf, -np.inf, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8]]).astype(np.float32)
    tb = torch.from_numpy(x).to(torch.bfloat16)
    p = tmp_path / "torch_bf16.safetensors"
    st_torch.save_file({"x": tb}, str(p))
    ours = load_safetensors(p)["x"]
    assert np.array_equal(ours, tb.float().numpy())  # widening agrees with torch
    assert np.array_equal(float32_to_bf16(x), tb.view(torch.int16).numpy().view(np.uint16))  # rounding too
    q = tmp_path / "ours_bf16.safetensors"
    save_safetensors(q, {"x": x}, dtypes={"x": "BF16"})
    assert torch.equal(st_torch.load_file(str(q))["x"], tb)


# ------------------------------------------------------------------------------------------ bad files


def test_short_files(tmp_path):
    for n in range(8):
        p = tmp_path / f"short{n}.safetensors"
        p.write_bytes(b"\x10" * n)
        expect_error(p, f"file is {n} bytes, shorter than the 8-byte header length")


def test_header_length_too_large(tmp_path):
    p = raw_file(tmp_path / "big.safetensors", {}, length=1000)
    expect_error(p, "header length 1000 is larger than the rest of the file (2 bytes")
    p = raw_file(tmp_path / "absurd.safetensors", {}, length=2 ** 64 - 1)
    expect_error(p, f"header length {2 ** 64 - 1} is absurd (limit {MAX_HEADER_BYTES} bytes)")


@pytest.mark.parametrize("where", ["length", "header", "header_end", "data", "data_end"])
def test_truncated_files(tmp_path, where):
    p = valid_file(tmp_path)
    b = read_bytes(p)
    n = int.from_bytes(b[:8], "little")
    cut = {"length": [1, 4, 7], "header": [8, 9, 8 + n // 2], "header_end": [8 + n - 1],
           "data": [8 + n + 1, 8 + n + (len(b) - 8 - n) // 2], "data_end": [len(b) - 1]}[where]
    for c in cut:
        q = tmp_path / f"cut{c}.safetensors"
        q.write_bytes(b[:c])
        msg = expect_error(q)
        if where in ("header", "header_end"):
            assert "header length" in msg and "larger than the rest of the file" in msg
        if where in ("data", "data_end"):
            assert "run past the end of the" in msg and "file truncated?" in msg


def test_bad_header_text(tmp_path):
    expect_error(raw_file(tmp_path / "a", b"\xff\xfe{}"), "header is not valid UTF-8")
    expect_error(raw_file(tmp_path / "b", b'{"a": '), "header is not valid JSON")
    expect_error(raw_file(tmp_path / "c", b"[1, 2]"), "header is not a JSON object (got list)")
    expect_error(raw_file(tmp_path / "d", b"null"), "header is not a JSON object (got NoneType)")
    expect_error(raw_file(tmp_path / "e", b"[" * 100_000), "header is not valid JSON")
    expect_error(raw_file(tmp_path / "f", b'{"x": 1, "x": 2}'), "header has the key 'x' twice")
    expect_error(raw_file(tmp_path / "g", b""), "header is not valid JSON")
    expect_error(raw_file(tmp_path / "h", {"__metadata__": {"a": 1}}), "__metadata__ must be an object")


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("field", ["dtype", "shape", "data_offsets"])
def test_missing_entry_field(tmp_path, field):
    e = entry()
    del e[field]
    expect_error(raw_file(tmp_path / "m", {"w": e}, bytes(8)), f"tensor 'w': missing '{field}'")


def test_malformed_entries(tmp_path):
    d8 = bytes(8)
    cases = [
        ({"w": [1, 2]}, "tensor 'w': expected an object"),
        ({"w": {**entry(), "extra": 1}}, "tensor 'w': unexpected field 'extra'"),
        ({"w": entry(dtype="C64")}, "tensor 'w': unknown dtype 'C64'"),
        ({"w": entry(dtype="f32")}, "unknown dtype 'f32'"),
        ({"w": entry(dtype=7)}, "unknown dtype 7"),
        ({"w": entry(shape=(-2,))}, "shape must be a list of non-negative integers"),
        ({"w": {**entry(), "shape": [True, 2]}}, "shape must be a list of non-negative integers"),
        ({"w": {**entry(), "shape": [2.0]}}, "shape must be a list of non-negative integers"),
        ({"w": {**entry(), "shape": 2}}, "shape must be a list"),
        ({"w": entry(offsets=(0, 8, 9))}, "data_offsets must be two non-negative integers"),
        ({"w": entry(offsets=(-1, 8))}, "data_offsets must be two non-negative integers"),
        ({"w": entry(offsets=(8, 0))}, "data_offsets [8, 0] end before they begin"),
        ({"w": entry(offsets=(0, 16))}, "data_offsets [0, 16] run past the end of the 8-byte data section"),
        ({"w": entry(shape=(3,))}, "header lies about sizes: shape [3] of F32 needs 12 bytes but "
                                   "data_offsets [0, 8] span 8"),
        ({"w": entry(dtype="F64")}, "header lies about sizes"),
    ]
    for i, (header, frag) in enumerate(cases):
        expect_error(raw_file(tmp_path / f"e{i}", header, d8), frag)


def test_overlaps_holes_and_trailing_bytes(tmp_path):
    overlap = {"a": entry(offsets=(0, 8)), "b": entry(shape=(1,), offsets=(4, 8))}
    expect_error(raw_file(tmp_path / "o", overlap, bytes(8)), "tensors 'a' and 'b' overlap")
    inside = {"a": entry(offsets=(0, 8)), "z": entry(shape=(0,), offsets=(4, 4))}
    expect_error(raw_file(tmp_path / "o2", inside, bytes(8)), "overlap")
    hole = {"a": entry(offsets=(0, 8)), "b": entry(offsets=(12, 20))}
    expect_error(raw_file(tmp_path / "h", hole, bytes(20)), "data section has a hole: bytes 8..12")
    expect_error(raw_file(tmp_path / "t", {"a": entry()}, bytes(11)), "3 trailing bytes after the last tensor")
    expect_error(raw_file(tmp_path / "t2", {}, bytes(1)), "1 trailing bytes")
    # zero-size tensors at the boundaries are fine, and whitespace after the JSON is allowed
    ok = {"a": entry(offsets=(0, 8)), "z": entry(shape=(0, 3), offsets=(8, 8)), "y": entry(shape=(0,),
                                                                                             offsets=(0, 0))}
    out = load_safetensors(raw_file(tmp_path / "ok", json.dumps(ok).encode() + b"    ", bytes(8)))
    assert out["z"].shape == (0, 3) and out["a"].tolist() == [0.0, 0.0]


def test_random_corruption_only_raises_value_error(tmp_path):
    p = valid_file(tmp_path)
    good = read_bytes(p)
    n = int.from_bytes(good[:8], "little")
    rng = np.random.default_rng(5)
    q = tmp_path / "fuzz.safetensors"
    for trial in range(400):
        b = bytearray(good)
        kind = trial % 4
        if kind == 0:  # flip bytes in the header (numbers, quotes, braces)
            for i in rng.integers(8, 8 + n, size=rng.integers(1, 4)):
                b[i] = int(rng.choice(list(b'0123456789"{}[],: -eE.')))
        elif kind == 1:  # random length field
            b[:8] = int(rng.integers(0, 2 ** 62)).to_bytes(8, "little")
        elif kind == 2:  # truncate or extend
            b = b[:rng.integers(0, len(b))] if rng.random() < 0.7 else b + bytes(int(rng.integers(1, 9)))
        else:  # garbage anywhere
            for i in rng.integers(0, len(b), size=4):
                b[i] = int(rng.integers(0, 256))
        q.write_bytes(bytes(b))
        try:
            load_safetensors(q)
        except ValueError as e:
            assert "\n" not in str(e) and str(q) in str(e)


# ------------------------------------------------------------------------------------------ writing


def test_failed_write_leaves_existing_file_untouched(tmp_path):
    p = valid_file(tmp_path)
    before = read_bytes(p)
    for bad, frag in [({"x": np.zeros(3, np.complex64)}, "dtype complex64 cannot be stored"),
                      ({"x": np.array(["a"])}, "cannot be stored"),
                      ({"x": [1.0, 2.0]}, "expected a numpy array, got list"),
                      ({"__metadata__": np.zeros(1)}, "invalid tensor name"),
                      ({"": np.zeros(1)}, "invalid tensor name")]:
        with pytest.raises(ValueError, match=frag):
            save_safetensors(p, {"ok": np.ones(2, np.float32), **bad})
    with pytest.raises(ValueError, match="metadata must map strings to strings"):
        save_safetensors(p, {"ok": np.ones(2)}, {"n": 1})  # type: ignore[dict-item]
    assert read_bytes(p) == before
    assert sorted(os.listdir(tmp_path)) == ["valid.safetensors"]  # no temporary files left behind


def test_failure_during_write_leaves_existing_file_untouched(tmp_path, monkeypatch):
    p = valid_file(tmp_path)
    before = read_bytes(p)

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_safetensors(p, {"x": np.ones(4, np.float32)})
    monkeypatch.undo()
    assert read_bytes(p) == before
    assert sorted(os.listdir(tmp_path)) == ["valid.safetensors"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "perm.safetensors"
        save_safetensors(p, {"x": np.ones(2)})
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    finally:
        os.umask(old)
