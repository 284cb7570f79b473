"""llm.c's model and debug_state files: bit-exact round trips, the layout checked against an independent
reader written here, one-line errors for wrong magic/version/size, and (with gcc and llm.c's source in
../shared/peers/llm.c) llm.c itself computing the same loss, logits and gradients from npgpt's files."""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt.gpt2.llmc import (
    padded_vocab,
    read_debug_state,
    read_model,
    read_model_config,
    read_tokenizer,
    write_debug_state,
    write_model,
    write_tokenizer,
)
from npgpt.gpt2 import gpt_forward

CFG = GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=8)
LLMC = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "llm.c"
if not LLMC.is_dir():
    LLMC = Path("/work/shared/peers/llm.c")


def model32(seed: int = 0, cfg: GPTConfig = CFG) -> GPT:
    m = GPT(cfg, seed=seed, threads=1)
    rng = np.random.default_rng(seed + 7)
    for p in m.params.values():
        p[...] = rng.normal(0.0, 0.3, size=p.shape).astype(np.float32)
    return m.eval()


def batch(seed: int = 1, B: int = 2, T: int = 8, V: int = CFG.vocab_size):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))


def one_line(fn, *args, match):
    with pytest.raises(ValueError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)


def test_model_round_trip_is_bit_exact(tmp_path):
    m = model32()
    write_model(tmp_path / "m.bin", m)
    back = read_model(tmp_path / "m.bin")
    assert back.config == CFG
    for k, v in m.params.items():
        assert back.params[k].tobytes() == v.tobytes(), k
    assert read_model_config(tmp_path / "m.bin") == (CFG, 128)


def test_layout_matches_an_independent_reader(tmp_path):
    # read the file with struct and plain offsets, as a C reader would, and compare tensor by tensor
    m = model32(seed=2)
    Vp = 80
    write_model(tmp_path / "m.bin", m, padded_vocab_size=Vp)
    data = (tmp_path / "m.bin").read_bytes()
    header = struct.unpack("<256i", data[:1024])
    assert header[:8] == (20240326, 3, 16, 70, 2, 2, 8, 80) and not any(header[8:])
    C, L, T, V = 8, 2, 16, 70
    sizes = [("wte", Vp * C), ("wpe", T * C), ("ln1w", L * C), ("ln1b", L * C), ("qkvw", L * 3 * C * C),
             ("qkvb", L * 3 * C), ("attprojw", L * C * C), ("attprojb", L * C), ("ln2w", L * C), ("ln2b", L * C),
             ("fcw", L * 4 * C * C), ("fcb", L * 4 * C), ("fcprojw", L * C * 4 * C), ("fcprojb", L * C),
             ("lnfw", C), ("lnfb", C)]
    assert len(data) == 1024 + 4 * sum(n for _, n in sizes)
    t, off = {}, 1024
    for name, n in sizes:
        t[name] = struct.unpack(f"<{n}f", data[off:off + 4 * n])
        off += 4 * n
    p = m.params
    for v in range(Vp):
        for c in range(C):
            want = float(p["wte.weight"][v, c]) if v < V else 0.0
            assert t["wte"][v * C + c] == want
    for i in range(L):
        for o in range(3 * C):  # qkvw[l][o][c] = c_attn.weight[c][o]
            for c in range(C):
                assert t["qkvw"][i * 3 * C * C + o * C + c] == float(p[f"h.{i}.attn.c_attn.weight"][c, o])
        for o in range(C):  # fcprojw[l][o][k] = mlp.c_proj.weight[k][o]
            for k in range(4 * C):
                assert t["fcprojw"][i * C * 4 * C + o * 4 * C + k] == float(p[f"h.{i}.mlp.c_proj.weight"][k, o])
        for c in range(C):
            assert t["ln2b"][i * C + c] == float(p[f"h.{i}.ln_2.bias"][c])
    assert t["lnfb"] == tuple(float(x) for x in p["ln_f.bias"])


def test_debug_state_round_trip(tmp_path):
    m = model32(seed=3)
    x, y = batch()
    written = write_debug_state(tmp_path / "s.bin", m, x, y)
    st = read_debug_state(tmp_path / "s.bin", CFG)
    assert (st.x == x).all() and (st.y == y).all() and st.loss == written.loss
    logits, loss, _ = gpt_forward(m.params, CFG, x, y)
    assert st.logits.tobytes() == logits.astype(np.float32).tobytes()
    assert st.loss == float(np.float32(loss))
    for k, g in written.grads.items():
        assert st.grads[k].tobytes() == g.tobytes(), k
    size = (tmp_path / "s.bin").stat().st_size
    assert size == 1024 + 4 * (2 * 16 + 16 * 70 + 1 + (sum(v.size for v in m.params.values()) + 58 * 8))


def test_bad_files(tmp_path):
    m = model32()
    good = tmp_path / "m.bin"
    write_model(good, m)
    data = bytearray(good.read_bytes())
    bad = tmp_path / "bad.bin"
    one_line(read_model, tmp_path / "none.bin", match="no such file")
    bad.write_bytes(bytes(data[:100]))
    one_line(read_model, bad, match="shorter than llm.c's 1024-byte header")
    bad.write_bytes(struct.pack("<i", 1234) + bytes(data[4:]))
    one_line(read_model, bad, match=r"not an llm.c model file \(magic 1234, expected 20240326\)")
    bad.write_bytes(bytes(data[:4]) + struct.pack("<i", 5) + bytes(data[8:]))
    one_line(read_model, bad, match="version 5 is not supported .version 5 is bfloat16.; only version 3")
    bad.write_bytes(bytes(data[:-4]))
    one_line(read_model, bad, match=r"bytes, expected \d+ for the header's shapes .* \(truncated\?\)")
    bad.write_bytes(bytes(data) + b"\0\0\0\0")
    one_line(read_model, bad, match="bytes, expected")
    bad.write_bytes(bytes(data[:20]) + struct.pack("<i", 3) + bytes(data[24:]))  # NH=3 does not divide C=8
    one_line(read_model, bad, match="bad header .n_embd: expected a multiple of n_head=3")
    one_line(read_debug_state, good, CFG, match="not an llm.c debug_state file .magic 20240326, expected 20240327")
    x, y = batch()
    write_debug_state(tmp_path / "s.bin", m, x, y)
    other = GPTConfig(vocab_size=70, block_size=16, n_layer=1, n_head=2, n_embd=8)
    one_line(read_debug_state, tmp_path / "s.bin", other, match="bytes, expected .* for B=2, T=8 and this model")


_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
# Each reader in a child process whose address space is capped at 2 GiB: a reader that reads an endless file
# to its end dies there of MemoryError (a traceback) instead of eating the machine's memory.
_BOUNDED = r"""
import resource, sys, threading
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from npgpt import GPTConfig
from npgpt.gpt2 import llmc
path, reader = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:  # a FIFO: a valid model header, then zeros without end
    def feed():
        try:
            with open(path, "wb") as f:
                f.write(bytes.fromhex(sys.argv[3]))
                while True:
                    f.write(bytes(1 << 20))
        except (BrokenPipeError, ValueError):
            pass
    threading.Thread(target=feed, daemon=True).start()
args = (GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=8),) if reader == "read_debug_state" \
    else ()
try:
    getattr(llmc, reader)(path, *args)
except ValueError as e:
    print(e)
"""


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="POSIX devices")
@pytest.mark.parametrize("reader", ["read_model", "read_model_config", "read_debug_state", "read_tokenizer"])
def test_an_endless_file_is_refused_from_its_header(reader):
    """Issue 42, item 8: read_model("/dev/zero") read the whole "file" before checking the 1024-byte header."""
    proc = subprocess.run([sys.executable, "-c", _BOUNDED, "/dev/zero", reader], capture_output=True, text=True,
                          timeout=120, env=_ENV)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    what = {"read_model": "model", "read_model_config": "model", "read_debug_state": "debug_state",
            "read_tokenizer": "tokenizer"}[reader]
    assert proc.stdout.startswith(f"/dev/zero: not an llm.c {what} file (magic 0, expected "), proc.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_pipe_longer_than_its_header_says_is_cut(tmp_path):
    """A valid header followed by zeros without end (a FIFO): read only as far as the header's sizes."""
    write_model(tmp_path / "m.bin", model32())
    header = (tmp_path / "m.bin").read_bytes()[:1024]
    want = (tmp_path / "m.bin").stat().st_size
    os.mkfifo(tmp_path / "fifo")
    proc = subprocess.run([sys.executable, "-c", _BOUNDED, tmp_path / "fifo", "read_model", header.hex()],
                          capture_output=True, text=True, timeout=120,
                          env=_ENV)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"{tmp_path / 'fifo'}: not a regular file, and longer than the {want} bytes "
                                   f"its header calls for (a device or an endless pipe?)")


def test_write_errors_leave_the_old_file(tmp_path):
    m = model32()
    write_model(tmp_path / "m.bin", m)
    before = (tmp_path / "m.bin").read_bytes()
    with pytest.raises(ValueError, match="padded_vocab_size: expected an integer >= vocab_size=70"):
        write_model(tmp_path / "m.bin", m, padded_vocab_size=60)
    with pytest.raises(ValueError, match="targets: token id 70 is out of range"):
        write_debug_state(tmp_path / "m.bin", m, np.zeros((1, 2), np.int64), np.full((1, 2), 70))
    assert (tmp_path / "m.bin").read_bytes() == before
    assert padded_vocab(50257) == 50304


WRAPPER = r"""
#define TESTING
#include "train_gpt2.c"
float npgpt_forward_backward(const char* path, int* x, int* y, int B, int T, float* logits, float* grads) {
    GPT2 model;
    gpt2_build_from_checkpoint(&model, path);
    gpt2_forward(&model, x, y, B, T);
    memcpy(logits, model.acts.logits, sizeof(float) * B * T * model.config.padded_vocab_size);
    gpt2_zero_grad(&model);
    gpt2_backward(&model);
    memcpy(grads, model.grads_memory, sizeof(float) * model.num_parameters);
    float loss = model.mean_loss;
    gpt2_free(&model);
    return loss;
}
int npgpt_decode(const char* path, int id, char* out, int* eot) {
    Tokenizer t;
    tokenizer_init(&t, path);
    if (!t.init_ok) return -1;
    strcpy(out, tokenizer_decode(&t, id));
    *eot = t.eot_token;
    int v = t.vocab_size;
    tokenizer_free(&t);
    return v;
}
"""


@pytest.fixture(scope="module")
def llmc_lib(tmp_path_factory):
    if not (LLMC / "train_gpt2.c").is_file():
        pytest.skip(f"llm.c source not found at {LLMC}")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not available")
    d = tmp_path_factory.mktemp("llmc")
    (d / "wrapper.c").write_text(WRAPPER)
    lib = d / "libllmc.so"
    r = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-fopenmp", f"-I{LLMC}", "-o", str(lib),
                        str(d / "wrapper.c"), "-lm"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"could not build llm.c: {r.stderr.strip().splitlines()[-1:]}")
    so = ctypes.CDLL(str(lib))
    so.npgpt_forward_backward.restype = ctypes.c_float
    return so


def test_llmc_computes_npgpts_loss_logits_and_gradients(tmp_path, llmc_lib):
    m = model32(seed=5)
    x, y = batch(seed=9, B=2, T=8)
    write_model(tmp_path / "m.bin", m)
    st = write_debug_state(tmp_path / "s.bin", m, x, y)
    Vp = 128
    xi, yi = np.ascontiguousarray(x, np.int32), np.ascontiguousarray(y, np.int32)
    logits = np.zeros((2, 8, Vp), np.float32)
    n_params = (os.path.getsize(tmp_path / "m.bin") - 1024) // 4
    grads = np.zeros(n_params, np.float32)
    ptr = lambda a, t: a.ctypes.data_as(ctypes.POINTER(t))  # noqa: E731
    loss = llmc_lib.npgpt_forward_backward(str(tmp_path / "m.bin").encode(), ptr(xi, ctypes.c_int),
                                           ptr(yi, ctypes.c_int), 2, 8, ptr(logits, ctypes.c_float),
                                           ptr(grads, ctypes.c_float))
    # float32 round-off: both sum the same terms in different orders
    assert loss == pytest.approx(st.loss, rel=1e-5)
    np.testing.assert_allclose(logits[..., :70], st.logits, rtol=1e-4, atol=1e-5)
    # llm.c's gradients, in its own layout, against the debug_state file npgpt wrote
    from npgpt.gpt2.llmc import unpack

    theirs, pad = unpack(grads, CFG, Vp)
    assert not pad.any()  # llm.c never touches the padding rows' gradient
    for k, g in st.grads.items():
        np.testing.assert_allclose(theirs[k], g, rtol=1e-3, atol=1e-5, err_msg=k)


def test_tokenizer_file_round_trip_and_errors(tmp_path):
    from tokenizer_fixtures import gpt2_tok

    tok = gpt2_tok()
    write_tokenizer(tmp_path / "t.bin", tok)
    table, eot = read_tokenizer(tmp_path / "t.bin")
    assert eot == 50256 and len(table) == 50257
    assert table == [tok.token_bytes(i) for i in range(50257)]
    data = (tmp_path / "t.bin").read_bytes()
    assert struct.unpack("<4I", data[:16]) == (20240328, 2, 50257, 50256)
    (tmp_path / "cut.bin").write_bytes(data[:-3])
    one_line(read_tokenizer, tmp_path / "cut.bin", match="token 50256 of 50257 is cut off or empty")
    one_line(read_tokenizer, tmp_path / "nope.bin", match="no such file")


def test_llmc_decodes_npgpts_tokenizer_file(tmp_path, llmc_lib):
    from tokenizer_fixtures import gpt2_tok

    tok = gpt2_tok()
    write_tokenizer(tmp_path / "t.bin", tok)
    buf = ctypes.create_string_buffer(512)
    eot = ctypes.c_int(0)
    for i in (262, 15496, 995, 50256, 100):
        v = llmc_lib.npgpt_decode(str(tmp_path / "t.bin").encode(), i, buf, ctypes.byref(eot))
        assert v == 50257 and eot.value == 50256
        assert buf.value == tok.token_bytes(i)
