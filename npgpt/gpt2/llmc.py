"""llm.c's file formats: the GPT-2 model .bin (version 3, float32) and the debug_state .bin its tests read.

    write_model("gpt2.bin", model)                   # llm.c's gpt2_build_from_checkpoint loads it
    model = read_model("gpt2.bin")                    # a GPT with the same parameters, bit for bit
    write_debug_state("state.bin", model, x, y)       # inputs, targets, logits, loss and every gradient
    st = read_debug_state("state.bin", model.config)
    write_tokenizer("tok.bin", tok)                    # llm.c's decoder table (gpt2_tokenizer.bin)

Model file: 256 int32 header [20240326, 3, maxT, V, L, NH, C, Vp, 0...], then float32 parameters in llm.c's
order wte (Vp, C; rows V..Vp-1 zero), wpe (maxT, C), ln1w, ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C),
attprojw (L, C, C), attprojb, ln2w, ln2b (L, C), fcw (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C),
lnfw, lnfb (C).  Weights are (out, in): npgpt's (in, out) matrices transposed.  Debug state: 256 int32
[20240327, 2, B, T, 0...], x and y (B*T int32), logits (B*T*V float32, unpadded), loss (1 float32), then the
gradients in the model file's layout.  write_tokenizer/read_tokenizer: llm.c's
decoder table.  Every problem is a one-line ValueError.  Guide: docs/llmc.md
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt

from ..io.atomic import atomic_write
from .config import GPTConfig
from .core import gpt_backward, gpt_forward, param_shapes
from .model import GPT
from .._checks import is_py_int

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
STATE_MAGIC, STATE_VERSION = 20240327, 2
TOKENIZER_MAGIC, TOKENIZER_VERSION = 20240328, 2
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
# llm.c's 16 tensors: (its name, npgpt's per-layer name or global name, transposed?)
LAYER_TENSORS = (
    ("ln1w", "ln_1.weight", False), ("ln1b", "ln_1.bias", False),
    ("qkvw", "attn.c_attn.weight", True), ("qkvb", "attn.c_attn.bias", False),
    ("attprojw", "attn.c_proj.weight", True), ("attprojb", "attn.c_proj.bias", False),
    ("ln2w", "ln_2.weight", False), ("ln2b", "ln_2.bias", False),
    ("fcw", "mlp.c_fc.weight", True), ("fcb", "mlp.c_fc.bias", False),
    ("fcprojw", "mlp.c_proj.weight", True), ("fcprojb", "mlp.c_proj.bias", False),
)
Array = npt.NDArray[np.floating]


def padded_vocab(vocab_size: int, multiple: int = 128) -> int:
    """llm.c's padding: the vocabulary rounded up to a multiple of 128 (50257 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


def num_parameters(config: GPTConfig, Vp: int) -> int:
    """Floats in an llm.c model file (wte padded to Vp rows)."""
    return sum(int(np.prod(s)) for s in param_shapes(config).values()) + (Vp - config.vocab_size) * config.n_embd


def pack(params: Mapping[str, Array], config: GPTConfig, Vp: int) -> npt.NDArray[np.float32]:
    """npgpt parameters (or gradients) -> llm.c's flat float32 layout, (num_parameters,)."""
    C, L = config.n_embd, config.n_layer
    wte = np.zeros((Vp, C), dtype=np.float32)  # (Vp, C) rows past V stay zero
    wte[:config.vocab_size] = params["wte.weight"]
    chunks = [wte.ravel(), np.asarray(params["wpe.weight"], dtype=np.float32).ravel()]
    for _, name, transpose in LAYER_TENSORS:
        per_layer = [np.asarray(params[f"h.{i}.{name}"]) for i in range(L)]
        stacked = np.stack([p.T if transpose else p for p in per_layer])  # (L, out, in) or (L, n)
        chunks.append(stacked.astype(np.float32).ravel())
    chunks += [np.asarray(params["ln_f.weight"], dtype=np.float32).ravel(),
               np.asarray(params["ln_f.bias"], dtype=np.float32).ravel()]
    return np.concatenate(chunks)


def unpack(flat: npt.NDArray[np.float32], config: GPTConfig, Vp: int) -> tuple[dict[str, Array], Array]:
    """llm.c's flat layout -> (npgpt-named float32 arrays, the padding rows of wte (Vp - V, C))."""
    C, L, V, T = config.n_embd, config.n_layer, config.vocab_size, config.block_size
    shapes = param_shapes(config)
    out: dict[str, Array] = {}
    pos = 0

    def take(n: int) -> npt.NDArray[np.float32]:
        nonlocal pos
        chunk = flat[pos:pos + n]
        pos += n
        return chunk

    wte = take(Vp * C).reshape(Vp, C)  # (Vp, C)
    out["wte.weight"], padding = wte[:V].copy(), wte[V:].copy()
    out["wpe.weight"] = take(T * C).reshape(T, C).copy()
    for _, name, transpose in LAYER_TENSORS:
        shape = shapes[f"h.0.{name}"]
        stored = shape[::-1] if transpose else shape  # (out, in) on disk
        block = take(L * int(np.prod(shape))).reshape(L, *stored)  # (L, *stored)
        for i in range(L):
            out[f"h.{i}.{name}"] = np.ascontiguousarray(block[i].T if transpose else block[i])
    out["ln_f.weight"] = take(C).copy()
    out["ln_f.bias"] = take(C).copy()
    assert pos == flat.size
    return {k: out[k] for k in shapes}, padding


def _write(path: str | os.PathLike[str], header: list[int], *arrays: np.ndarray) -> None:
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[:len(header)] = header

    def write(f: BinaryIO) -> None:
        f.write(h.tobytes())
        for a in arrays:
            f.write(np.ascontiguousarray(a).tobytes())

    atomic_write(path, write)


def write_model(path: str | os.PathLike[str], model: GPT, padded_vocab_size: int | None = None) -> None:
    """Write model as an llm.c version-3 (float32) checkpoint; padded_vocab_size defaults to V rounded up to
    a multiple of 128.  Written atomically: an existing file is replaced whole or not at all."""
    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a GPT, got {type(model).__name__}")
    c = model.config
    Vp = padded_vocab(c.vocab_size) if padded_vocab_size is None else padded_vocab_size
    if not is_py_int(Vp) or Vp < c.vocab_size:
        raise ValueError(f"padded_vocab_size: expected an integer >= vocab_size={c.vocab_size}, got {Vp!r}")
    header = [MODEL_MAGIC, MODEL_VERSION, c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd, Vp]
    _write(path, header, pack(model.params, c, Vp).astype("<f4"))


def _read_header(path: str | os.PathLike[str], magic: int, what: str,
                 total: Callable[[npt.NDArray[np.int32]], int] | None = None) -> tuple[bytes, npt.NDArray[np.int32]]:
    """(the file's bytes, its 256-int header).  The header is read and its magic checked first, so /dev/zero
    or another kind of file is refused before the rest is read.  A regular file is then read to its end; a
    pipe or device only as far as total(header), the bytes the header calls for (one more is an error)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES:
                raise ValueError(f"{p}: {len(head)} bytes is shorter than llm.c's {HEADER_BYTES}-byte header "
                                 f"(not an llm.c {what} file, or truncated)")
            header = np.frombuffer(head, dtype="<i4")
            if int(header[0]) != magic:
                raise ValueError(f"{p}: not an llm.c {what} file (magic {int(header[0])}, expected {magic})")
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode) or total is None:
                return head + f.read(), header
            want = total(header)  # checks the header's fields first
            rest = f.read(want - HEADER_BYTES + 1)
            if HEADER_BYTES + len(rest) > want:
                raise ValueError(f"{p}: not a regular file, and longer than the {want} bytes its header calls for "
                                 f"(a device or an endless pipe?)")
            return head + rest, header
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, expected an llm.c {what} file") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None


def read_model_config(path: str | os.PathLike[str]) -> tuple[GPTConfig, int]:
    """(GPTConfig, padded vocab size) from a model file's header, with its size checked."""
    p = os.fspath(path)
    data, h = _read_header(p, MODEL_MAGIC, "model", lambda h: _model_bytes(p, h))
    return _model_config(p, h, len(data))


def _model_bytes(p: str, h: npt.NDArray[np.int32]) -> int:
    """The size of a model file with header h (checked)."""
    config, Vp = _model_config(p, h, None)
    return HEADER_BYTES + 4 * num_parameters(config, Vp)


def _model_config(p: str, h: npt.NDArray[np.int32], size: int | None) -> tuple[GPTConfig, int]:
    version = int(h[1])
    if version != MODEL_VERSION:
        extra = " (version 5 is bfloat16)" if version == 5 else ""
        raise ValueError(f"{p}: llm.c model version {version} is not supported{extra}; only version 3 (float32)")
    maxT, V, L, NH, C, Vp = (int(v) for v in h[2:8])
    try:
        config = GPTConfig(vocab_size=V, block_size=maxT, n_layer=L, n_head=NH, n_embd=C)
    except ValueError as e:
        raise ValueError(f"{p}: bad header ({e})") from None
    if Vp < V:
        raise ValueError(f"{p}: bad header (padded_vocab_size {Vp} < vocab_size {V})")
    want = HEADER_BYTES + 4 * num_parameters(config, Vp)
    if size is not None and size != want:
        raise ValueError(f"{p}: {size} bytes, expected {want} for the header's shapes (maxT={maxT}, V={V}, "
                         f"L={L}, NH={NH}, C={C}, Vp={Vp}){' (truncated?)' if size < want else ''}")
    return config, Vp


def read_model(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> GPT:
    """A GPT (eval mode) from an llm.c version-3 model file; the padding rows of wte are dropped."""
    p = os.fspath(path)
    data, h = _read_header(p, MODEL_MAGIC, "model", lambda h: _model_bytes(p, h))
    config, Vp = _model_config(p, h, len(data))
    flat = np.frombuffer(data, dtype="<f4", offset=HEADER_BYTES)  # (num_parameters,)
    params, _ = unpack(flat, config, Vp)
    model = GPT(config, dtype=dtype, init=False)
    for k, v in params.items():
        model.params[k][...] = v
    return model.eval()


class DebugState(NamedTuple):
    x: npt.NDArray[np.int32]  # (B, T) inputs
    y: npt.NDArray[np.int32]  # (B, T) targets
    logits: npt.NDArray[np.float32]  # (B, T, V)
    loss: float  # mean cross-entropy
    grads: dict[str, npt.NDArray[np.float32]]  # npgpt names, npgpt layout


def write_debug_state(path: str | os.PathLike[str], model: GPT, x: npt.NDArray[np.integer],
                      y: npt.NDArray[np.integer], padded_vocab_size: int | None = None) -> DebugState:
    """Run model forward and backward on (x, y) (B, T) in the model's dtype, without dropout, and write
    llm.c's debug_state file: what its test_gpt2.c compares against.  Returns what was written."""
    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a GPT, got {type(model).__name__}")
    c = model.config
    Vp = padded_vocab(c.vocab_size) if padded_vocab_size is None else padded_vocab_size
    logits, loss, cache = gpt_forward(model.params, c, x, y)  # checks x and y
    assert loss is not None
    grads = gpt_backward(cache)
    B, T = x.shape
    _write(path, [STATE_MAGIC, STATE_VERSION, B, T], x.astype("<i4"), y.astype("<i4"), logits.astype("<f4"),
           np.array([loss], dtype="<f4"), pack(grads, c, Vp).astype("<f4"))
    return DebugState(x.astype(np.int32), y.astype(np.int32), logits.astype(np.float32), float(np.float32(loss)),
                      {k: np.asarray(v, dtype=np.float32) for k, v in grads.items()})


def read_debug_state(path: str | os.PathLike[str], config: GPTConfig, padded_vocab_size: int | None = None
                     ) -> DebugState:
    """Read a debug_state file written for a model of this config (llm.c's reader also needs the model)."""
    p = os.fspath(path)
    V = config.vocab_size
    Vp = padded_vocab(V) if padded_vocab_size is None else padded_vocab_size
    P = num_parameters(config, Vp)

    def state_bytes(h: npt.NDArray[np.int32]) -> int:
        if int(h[1]) != STATE_VERSION:
            raise ValueError(f"{p}: llm.c debug_state version {int(h[1])} is not supported; only version "
                             f"{STATE_VERSION}")
        B, T = int(h[2]), int(h[3])
        if B < 1 or T < 1:
            raise ValueError(f"{p}: bad header (B={B}, T={T})")
        return HEADER_BYTES + 4 * (2 * B * T + B * T * V + 1 + P)

    data, h = _read_header(p, STATE_MAGIC, "debug_state", state_bytes)
    want = state_bytes(h)
    B, T = int(h[2]), int(h[3])
    if len(data) != want:
        raise ValueError(f"{p}: {len(data)} bytes, expected {want} for B={B}, T={T} and this model "
                         f"({P} parameters){' (truncated?)' if len(data) < want else ''}")
    ints = np.frombuffer(data, dtype="<i4", count=2 * B * T, offset=HEADER_BYTES)
    floats = np.frombuffer(data, dtype="<f4", offset=HEADER_BYTES + 8 * B * T)
    logits = floats[:B * T * V].reshape(B, T, V).copy()
    loss = float(floats[B * T * V])
    grads, _ = unpack(floats[B * T * V + 1:], config, Vp)
    return DebugState(ints[:B * T].reshape(B, T).copy(), ints[B * T:].reshape(B, T).copy(), logits, loss,
                      {k: np.asarray(v, dtype=np.float32) for k, v in grads.items()})


def write_tokenizer(path: str | os.PathLike[str], tok: Any) -> None:
    """llm.c's tokenizer file (what its sampler decodes with): 256 uint32 [20240328, 2, V, eot, 0...], then
    per id one uint8 length and the token's bytes.  tok: a BPETokenizer (anything with vocab_size,
    token_bytes(i) and eot_token)."""
    V = int(tok.vocab_size)
    eot = tok.eot_token if tok.eot_token is not None else 0
    table = [tok.token_bytes(i) for i in range(V)]
    for i, b in enumerate(table):
        if not 1 <= len(b) <= 255:
            raise ValueError(f"tok: token {i} has {len(b)} bytes; llm.c's file stores 1 to 255")
    h = np.zeros(HEADER_INTS, dtype="<u4")
    h[:4] = [TOKENIZER_MAGIC, TOKENIZER_VERSION, V, eot]
    body = b"".join(bytes([len(b)]) + b for b in table)

    def write(f: BinaryIO) -> None:
        f.write(h.tobytes())
        f.write(body)

    atomic_write(path, write)


def read_tokenizer(path: str | os.PathLike[str]) -> tuple[list[bytes], int]:
    """(token bytes by id, eot id) from llm.c's tokenizer file (versions 1 and 2)."""
    p = os.fspath(path)
    data, h = _read_header(p, TOKENIZER_MAGIC, "tokenizer", lambda h: HEADER_BYTES + 256 * max(int(h[2]), 0))
    version, V = int(h[1]), int(h[2])
    if version not in (1, 2):
        raise ValueError(f"{p}: llm.c tokenizer version {version} is not supported; only 1 and 2")
    eot = 50256 if version == 1 else int(h[3])
    table, pos = [], HEADER_BYTES
    for i in range(V):
        n = data[pos] if pos < len(data) else 0
        if n == 0 or pos + 1 + n > len(data):
            raise ValueError(f"{p}: token {i} of {V} is cut off or empty (truncated file?)")
        table.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    if pos != len(data):
        raise ValueError(f"{p}: {len(data) - pos} bytes after the last of {V} tokens")
    return table, eot
