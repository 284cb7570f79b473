"""Golden files for testing other implementations against npgpt, and a checker for them.

dump_cases(out_dir, ...) writes one `.npz` per layer pair (inputs, upstream gradient, output, every gradient)
plus `gpt_train.npz` (a whole model: logits, loss, every parameter gradient, ten AdamW steps).  The files hold
only numeric arrays and one JSON string (key `meta`), so any .npy reader can parse them.

check_path(path, against=None, ...) recomputes every case from its stored inputs with npgpt (or, with
`against`, compares two dumps key by key) and returns a Report with the worst error of every tensor.

Command line: `python -m npgpt.oracle dump --out DIR` and `python -m npgpt.oracle check DIR`.
File layout, conventions and tolerances: docs/oracle.md
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import layers as L
from ..config import GPTConfig
from ..model import GPT, init_params, param_shapes
from ..optim import AdamW

__all__ = [
    "dump_cases", "check_path", "load_case", "compare_arrays", "default_tolerance",
    "Report", "TensorResult", "OracleError",
    "CASE_NAMES", "DEFAULT_SHAPES", "TOLERANCES", "FINAL_TOLERANCES", "FORMAT", "FORMAT_VERSION",
]

FORMAT = "npgpt-oracle"
FORMAT_VERSION = 1

# the dump's default sizes: small, so a whole dump and its check take well under a second
DEFAULT_SHAPES: dict[str, int] = {"batch": 2, "seq": 5, "channels": 8, "heads": 2, "vocab": 11, "layers": 2}

# (rtol, atol) per dtype.  An element passes when |a - b| <= rtol * |b| + atol * M, M = max |b| over the tensor.
TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}
# the parameters after ten AdamW steps: m / sqrt(v) turns a tiny gradient's rounding into a visible step
FINAL_TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-8, 1e-10), "float32": (1e-3, 5e-3)}

DROPOUT_P = 0.25
TRAIN_STEPS = 10
ADAMW_HPARAMS: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}

Arrays = dict[str, np.ndarray]


class OracleError(ValueError):
    """A file or argument the oracle cannot use (unreadable, not a case file, inputs npgpt rejects)."""


# ----------------------------------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class _Sizes:
    B: int
    T: int
    C: int
    H: int
    V: int
    L: int

    @property
    def D(self) -> int:
        return self.C // self.H

    def as_dict(self) -> dict[str, int]:
        return {"B": self.B, "T": self.T, "C": self.C, "H": self.H, "D": self.D, "V": self.V, "L": self.L}


def _sizes(options: Mapping[str, Any]) -> _Sizes:
    unknown = set(options) - set(DEFAULT_SHAPES)
    if unknown:
        raise ValueError(f"shape_options: unknown option(s) {sorted(unknown)}; expected {list(DEFAULT_SHAPES)}")
    s = {**DEFAULT_SHAPES, **options}
    for name, value in s.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if s["channels"] % s["heads"]:
        raise ValueError(f"channels: expected a multiple of heads={s['heads']}, got {s['channels']}")
    return _Sizes(int(s["batch"]), int(s["seq"]), int(s["channels"]), int(s["heads"]), int(s["vocab"]),
                  int(s["layers"]))


# ----------------------------------------------------------------------------------------------------- cases
#
# Each case has a `make` (random float64 inputs, the upstream gradient, non-array arguments) and a `run`
# (npgpt's forward and backward on the stored inputs, in whatever dtype they are stored).  dump_cases calls
# both; check_path calls only `run`, on the arrays read back from the file.

@dataclass(frozen=True)
class _Case:
    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str
    inputs: tuple[str, ...]  # array arguments of the forward, in order: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs in the order the backward returns them: keys grad.<name>
    make: Callable[[np.random.Generator, _Sizes], tuple[Arrays, dict[str, Any]]]
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out",)  # keys computed by the forward besides the gradients


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale + shift


def _linear_params(rng: np.random.Generator, c_in: int, c_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight ~ N(0, 1/c_in) keeps activations O(1); the bias is small but never zero."""
    return _normal(rng, c_in, c_out, scale=1.0 / math.sqrt(c_in)), _normal(rng, c_out, scale=0.1)


def _layernorm_params(rng: np.random.Generator, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight 1 + noise, bias noise: the identity initialisation would hide a swapped dw and db."""
    return _normal(rng, c, scale=0.1, shift=1.0), _normal(rng, c, scale=0.1)


def _pair(forward: Callable[..., Any], backward: Callable[..., Any], names: tuple[str, ...],
          grads: tuple[str, ...], **kw_from_args: str) -> Callable[[Arrays, dict[str, Any]], Arrays]:
    """`run` for a pair whose forward takes the arrays `names` positionally plus keyword options from args."""
    def run(a: Arrays, args: dict[str, Any]) -> Arrays:
        kwargs = {k: args[v] for k, v in kw_from_args.items()}
        out, cache = forward(*(a[f"in.{n}"] for n in names), **kwargs)
        g = backward(a["dout"], cache)
        g = g if isinstance(g, tuple) else (g,)
        return {"out": out, **{f"grad.{n}": gi for n, gi in zip(grads, g)}}
    return run


def _make_embedding(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    idx = rng.integers(0, s.V, size=(s.B, s.T))
    idx.reshape(-1)[-1] = idx.reshape(-1)[0]  # at least one row read twice: the backward must add, not assign
    return {"in.idx": idx, "in.w": _normal(rng, s.V, s.C), "dout": _normal(rng, s.B, s.T, s.C)}, {}


def _make_linear(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    w, b = _linear_params(rng, s.C, 3 * s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w": w, "in.b": b, "dout": _normal(rng, s.B, s.T, 3 * s.C)}, {}


def _make_layernorm(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    x = _normal(rng, s.B, s.T, s.C, scale=2.0) + _normal(rng, s.B, s.T, 1)  # rows with their own mean
    w, b = _layernorm_params(rng, s.C)
    return {"in.x": x, "in.w": w, "in.b": b, "dout": _normal(rng, s.B, s.T, s.C)}, {"eps": 1e-5}


def _make_gelu(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, 4 * s.C, scale=2.0), "dout": _normal(rng, s.B, s.T, 4 * s.C)}, {}


def _make_softmax(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, s.V, scale=2.0), "dout": _normal(rng, s.B, s.T, s.V)}, {}


def _make_attention(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    shape = (s.B, s.H, s.T, s.D)
    return {"in.q": _normal(rng, *shape), "in.k": _normal(rng, *shape), "in.v": _normal(rng, *shape),
            "dout": _normal(rng, *shape)}, {}


def _make_split_heads(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, s.C), "dout": _normal(rng, s.B, s.H, s.T, s.D)}, {"n_head": s.H}


def _make_merge_heads(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.H, s.T, s.D), "dout": _normal(rng, s.B, s.T, s.C)}, {}


def _make_dropout(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    rng_seed = int(rng.integers(0, 2**63 - 1))
    return {"in.x": _normal(rng, s.B, s.T, s.C), "dout": _normal(rng, s.B, s.T, s.C)}, \
        {"p": DROPOUT_P, "train": True, "rng": {"kind": "numpy.random.default_rng", "seed": rng_seed}}


def _run_dropout(a: Arrays, args: dict[str, Any]) -> Arrays:
    rng = np.random.default_rng(args["rng"]["seed"])
    out, cache = L.dropout_forward(a["in.x"], args["p"], rng, args["train"])
    keep = np.zeros(a["in.x"].shape, np.uint8) if cache.scaled_mask is None else (cache.scaled_mask != 0)
    return {"keep": keep.astype(np.uint8), "out": out, "grad.x": L.dropout_backward(a["dout"], cache)}


def _make_cross_entropy(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.logits": _normal(rng, s.B, s.T, s.V, scale=2.0), "in.targets": rng.integers(0, s.V, (s.B, s.T)),
            "dout": np.asarray(rng.uniform(0.5, 2.0))}, {}


def _make_mlp(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    w_fc, b_fc = _linear_params(rng, s.C, 4 * s.C)
    w_proj, b_proj = _linear_params(rng, 4 * s.C, s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w_fc": w_fc, "in.b_fc": b_fc, "in.w_proj": w_proj,
            "in.b_proj": b_proj, "dout": _normal(rng, s.B, s.T, s.C)}, {"approximate": "tanh"}


def _make_self_attention(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    w_attn, b_attn = _linear_params(rng, s.C, 3 * s.C)
    w_proj, b_proj = _linear_params(rng, s.C, s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w_attn": w_attn, "in.b_attn": b_attn, "in.w_proj": w_proj,
            "in.b_proj": b_proj, "dout": _normal(rng, s.B, s.T, s.C)}, {"n_head": s.H}


def _block_param_arrays(rng: np.random.Generator, C: int) -> Arrays:
    p: Arrays = {}
    p["ln_1.weight"], p["ln_1.bias"] = _layernorm_params(rng, C)
    p["attn.c_attn.weight"], p["attn.c_attn.bias"] = _linear_params(rng, C, 3 * C)
    p["attn.c_proj.weight"], p["attn.c_proj.bias"] = _linear_params(rng, C, C)
    p["ln_2.weight"], p["ln_2.bias"] = _layernorm_params(rng, C)
    p["mlp.c_fc.weight"], p["mlp.c_fc.bias"] = _linear_params(rng, C, 4 * C)
    p["mlp.c_proj.weight"], p["mlp.c_proj.bias"] = _linear_params(rng, 4 * C, C)
    return {n: p[n] for n in L.BLOCK_PARAM_NAMES}


def _make_block(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    x = _normal(rng, s.B, s.T, s.C)
    p = _block_param_arrays(rng, s.C)
    return {"in.x": x, **{f"in.p.{n}": a for n, a in p.items()}, "dout": _normal(rng, s.B, s.T, s.C)}, \
        {"n_head": s.H, "dropout": 0.0, "train": False}


def _run_block(a: Arrays, args: dict[str, Any]) -> Arrays:
    p = {n: a[f"in.p.{n}"] for n in L.BLOCK_PARAM_NAMES}
    out, cache = L.block_forward(a["in.x"], p, args["n_head"], args["dropout"], None, args["train"])
    dx, g = L.block_backward(a["dout"], cache)
    return {"out": out, "grad.x": dx, **{f"grad.p.{n}": g[n] for n in L.BLOCK_PARAM_NAMES}}


def _make_gpt_train(rng: np.random.Generator, s: _Sizes) -> tuple[Arrays, dict[str, Any]]:
    config = GPTConfig(vocab_size=s.V, block_size=s.T, n_layer=s.L, n_head=s.H, n_embd=s.C, dropout=0.0)
    params = {k: np.zeros(shape) for k, shape in param_shapes(config).items()}
    init_params(config, rng, params)  # GPT-2's initialisation, then noise where it would be degenerate
    for name, p in params.items():
        if name.endswith(".bias"):
            p += _normal(rng, *p.shape, scale=0.02)
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p += _normal(rng, *p.shape, scale=0.1)
    arrays: Arrays = {f"param.{k}": v for k, v in params.items()}
    arrays["idx"] = rng.integers(0, s.V, (s.B, s.T))
    arrays["targets"] = rng.integers(0, s.V, (s.B, s.T))
    adamw = {**ADAMW_HPARAMS, "betas": list(ADAMW_HPARAMS["betas"]), "steps": TRAIN_STEPS,
             "lr_schedule": "constant", "grad_clip": None, "weight_decay_applies_to": "2-D parameters",
             "bias_correction": True}
    return arrays, {"config": config.to_dict(), "param_names": list(params), "adamw": adamw, "train": True}


def _run_gpt_train(a: Arrays, args: dict[str, Any]) -> Arrays:
    config = GPTConfig.from_dict(args["config"])
    names = args["param_names"]
    if names != list(param_shapes(config)):
        raise OracleError("meta.param_names: does not match the parameters of meta.config")
    dtype = a[f"param.{names[0]}"].dtype
    model = GPT(config, seed=0, dtype=dtype)
    for k in names:
        src = a[f"param.{k}"]
        if src.shape != model.params[k].shape or src.dtype != dtype:
            raise OracleError(f"param.{k}: expected {dtype} {model.params[k].shape}, got {src.dtype} {src.shape}")
        model.params[k][...] = src
    hp = args["adamw"]
    if hp.get("grad_clip") is not None or hp.get("lr_schedule", "constant") != "constant":
        raise OracleError("meta.adamw: only a constant lr without clipping is supported")
    opt = AdamW(model.params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                weight_decay=hp["weight_decay"])
    result: Arrays = {}
    losses = []
    for step in range(int(hp["steps"])):
        logits, loss = model.forward(a["idx"], a["targets"])
        grads = model.backward()
        if step == 0:
            result["logits"] = logits
            result["loss"] = np.array(loss)
            result.update({f"grad.{k}": grads[k].copy() for k in names})
        losses.append(loss)
        opt.step(grads)
    result["train.losses"] = np.array(losses, dtype=dtype)
    result.update({f"final.{k}": model.params[k].copy() for k in names})
    return result


_CASES: dict[str, _Case] = {}


def _register(case: _Case) -> None:
    _CASES[case.name] = case


_register(_Case("embedding", "npgpt.layers.embedding_forward", "npgpt.layers.embedding_backward",
                ("idx", "w"), ("w",), _make_embedding,
                _pair(L.embedding_forward, L.embedding_backward, ("idx", "w"), ("w",))))
_register(_Case("linear", "npgpt.layers.linear_forward", "npgpt.layers.linear_backward",
                ("x", "w", "b"), ("x", "w", "b"), _make_linear,
                _pair(L.linear_forward, L.linear_backward, ("x", "w", "b"), ("x", "w", "b"))))
_register(_Case("layernorm", "npgpt.layers.layernorm_forward", "npgpt.layers.layernorm_backward",
                ("x", "w", "b"), ("x", "w", "b"), _make_layernorm,
                _pair(L.layernorm_forward, L.layernorm_backward, ("x", "w", "b"), ("x", "w", "b"), eps="eps")))
for _form in ("tanh", "erf"):
    _register(_Case(f"gelu_{_form}", "npgpt.layers.gelu_forward", "npgpt.layers.gelu_backward",
                    ("x",), ("x",),
                    (lambda form: lambda rng, s: (_make_gelu(rng, s)[0], {"approximate": form}))(_form),
                    _pair(L.gelu_forward, L.gelu_backward, ("x",), ("x",), approximate="approximate")))
_register(_Case("softmax", "npgpt.layers.softmax_forward", "npgpt.layers.softmax_backward",
                ("x",), ("x",), _make_softmax, _pair(L.softmax_forward, L.softmax_backward, ("x",), ("x",))))
_register(_Case("attention", "npgpt.layers.attention_forward", "npgpt.layers.attention_backward",
                ("q", "k", "v"), ("q", "k", "v"), _make_attention,
                _pair(L.attention_forward, L.attention_backward, ("q", "k", "v"), ("q", "k", "v"))))
_register(_Case("split_heads", "npgpt.layers.split_heads_forward", "npgpt.layers.split_heads_backward",
                ("x",), ("x",), _make_split_heads,
                _pair(L.split_heads_forward, L.split_heads_backward, ("x",), ("x",), n_head="n_head")))
_register(_Case("merge_heads", "npgpt.layers.merge_heads_forward", "npgpt.layers.merge_heads_backward",
                ("x",), ("x",), _make_merge_heads,
                _pair(L.merge_heads_forward, L.merge_heads_backward, ("x",), ("x",))))
_register(_Case("dropout", "npgpt.layers.dropout_forward", "npgpt.layers.dropout_backward",
                ("x",), ("x",), _make_dropout, _run_dropout, outputs=("keep", "out")))
_register(_Case("cross_entropy", "npgpt.layers.cross_entropy_forward", "npgpt.layers.cross_entropy_backward",
                ("logits", "targets"), ("logits",), _make_cross_entropy,
                _pair(L.cross_entropy_forward, L.cross_entropy_backward, ("logits", "targets"), ("logits",))))
_register(_Case("mlp", "npgpt.layers.mlp_forward", "npgpt.layers.mlp_backward",
                ("x", "w_fc", "b_fc", "w_proj", "b_proj"), ("x", "w_fc", "b_fc", "w_proj", "b_proj"), _make_mlp,
                _pair(L.mlp_forward, L.mlp_backward, ("x", "w_fc", "b_fc", "w_proj", "b_proj"),
                      ("x", "w_fc", "b_fc", "w_proj", "b_proj"), approximate="approximate")))
_register(_Case("self_attention", "npgpt.layers.self_attention_forward", "npgpt.layers.self_attention_backward",
                ("x", "w_attn", "b_attn", "w_proj", "b_proj"), ("x", "w_attn", "b_attn", "w_proj", "b_proj"),
                _make_self_attention,
                _pair(L.self_attention_forward, L.self_attention_backward,
                      ("x", "w_attn", "b_attn", "w_proj", "b_proj"), ("x", "w_attn", "b_attn", "w_proj", "b_proj"),
                      n_head="n_head")))
_BLOCK_INPUTS = ("x", *(f"p.{n}" for n in L.BLOCK_PARAM_NAMES))
_register(_Case("block", "npgpt.layers.block_forward", "npgpt.layers.block_backward",
                _BLOCK_INPUTS, _BLOCK_INPUTS, _make_block, _run_block))
_register(_Case("gpt_train", "npgpt.gpt_forward", "npgpt.gpt_backward", (), (), _make_gpt_train, _run_gpt_train,
                outputs=()))

CASE_NAMES: tuple[str, ...] = tuple(_CASES)


# ------------------------------------------------------------------------------------------------ file format

def _le_contiguous(a: np.ndarray) -> np.ndarray:
    """C order, little-endian: the only layout a dump contains."""
    a = np.asarray(a)
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    return np.array(a, dtype=dtype, order="C")  # not ascontiguousarray: that turns a 0-d array into 1-d


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed zip of .npy (format 1.0) members, in the given key order, with fixed timestamps so
    the same seed gives byte-identical files."""
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, _le_contiguous(arr), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)


def _meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    return np.array(json.dumps(meta, separators=(", ", ": ")), dtype="<U")  # 0-d, UTF-32LE in the .npy


def load_case(path: str | Path) -> tuple[Arrays, dict[str, Any] | None]:
    """Read every array of an .npz (no pickles) and parse its `meta` JSON (None when absent).

    Raises OracleError with a one-line message when the file cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise OracleError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise OracleError(f"{path}: cannot open ({e.strerror})") from None
    if magic == b"\x93NUMPY":
        raise OracleError(f"{path}: a single .npy array, not an .npz archive of a case")
    if not zipfile.is_zipfile(path):
        raise OracleError(f"{path}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zip, .npy header and pickle errors all mean the same thing here
        if isinstance(e, (KeyboardInterrupt, MemoryError)):
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        raise OracleError(f"{path}: cannot read as .npz ({reason})") from None
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub" and k != "meta":
            raise OracleError(f"{path}: key {k!r} has non-numeric dtype {a.dtype}")
    meta = None
    if "meta" in arrays:
        m = arrays.pop("meta")
        try:
            if m.dtype.kind != "U" or m.ndim != 0:
                raise ValueError(f"expected a 0-d unicode array, got {m.dtype} {m.shape}")
            meta = json.loads(str(m[()]))
            if not isinstance(meta, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            raise OracleError(f"{path}: unreadable meta ({' '.join(str(e).split())})") from None
    return arrays, meta


# -------------------------------------------------------------------------------------------------- dumping

def _case_rng(seed: int, name: str) -> np.random.Generator:
    """One stream per case, so adding a case never shifts the inputs of another."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def default_tolerance(dtype: str, key: str = "") -> tuple[float, float]:
    """(rtol, atol) for a tensor of a dump in `dtype`; keys starting with `final.` get the looser pair."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    return (FINAL_TOLERANCES if key.startswith("final.") else TOLERANCES)[dtype]


def _tolerance_meta(name: str, dtype: str) -> dict[str, Any]:
    rtol, atol = TOLERANCES[dtype]
    tol: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if name == "gpt_train":
        frtol, fatol = FINAL_TOLERANCES[dtype]
        tol["by_prefix"] = {"final.": {"rtol": frtol, "atol": fatol}}
    return tol


def dump_cases(out_dir: str | Path, dtype: str = "float64", seed: int = 0, **shape_options: int) -> list[Path]:
    """Write one golden file per case (CASE_NAMES) into out_dir and return their paths, in that order.

    dtype: "float64" or "float32" (inputs are drawn in float64 and rounded, so both dtypes see the same
    inputs up to rounding).  seed: a non-negative integer.  shape_options: batch, seq, channels, heads, vocab,
    layers (defaults DEFAULT_SHAPES).  Layout of each file: docs/oracle.md.
    """
    from .. import __version__

    dtype = str(np.dtype(dtype)) if isinstance(dtype, (type, np.dtype)) else dtype
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    s = _sizes(shape_options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, case in _CASES.items():
        raw, args = case.make(_case_rng(int(seed), name), s)
        stored = {k: (v.astype(dtype) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in raw.items()}
        try:
            computed = case.run(stored, args)
        except ValueError as e:
            raise ValueError(f"{name}: npgpt rejected the generated inputs: {e}") from e
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "case": name,
                "forward": case.forward, "backward": case.backward,
                "inputs": list(case.inputs), "grads": list(case.grads), "args": args, "dtype": dtype,
                "seed": int(seed), "sizes": s.as_dict(), "npgpt_version": __version__,
                "numpy_version": np.__version__, "tolerance": _tolerance_meta(name, dtype)}
        if name == "gpt_train":
            meta["optimizer"] = "npgpt.AdamW"
        arrays: dict[str, np.ndarray] = {"meta": _meta_array(meta)}
        arrays.update(stored)
        arrays.update(computed)
        path = out_dir / f"{name}.npz"
        _write_npz(path, arrays)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------- checking

@dataclass(frozen=True)
class TensorResult:
    """The comparison of one tensor: worst absolute and relative error and whether it is within tolerance."""

    file: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    note: str = ""  # why it failed when it is not an error size (missing key, shape mismatch, ...)

    def line(self, widths: tuple[int, int, int] = (0, 0, 0)) -> str:
        status = "ok" if self.ok else "FAIL"
        shape = "(" + ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        head = f"{self.file:<{widths[0]}}  {self.key:<{widths[1]}}  {shape:<{widths[2]}}  {self.dtype:<7}"
        if self.note:
            return f"{head}  {status}: {self.note}"
        exact = self.dtype.startswith(("int", "uint", "bool"))
        tol = "exact" if exact else f"rtol {self.rtol:.0e}, atol {self.atol:.0e}"
        return f"{head}  abs {self.max_abs:9.3e}  rel {self.max_rel:9.3e}  ({tol})  {status}"


@dataclass
class Report:
    """Result of check_path: one TensorResult per compared tensor.  `ok` and `exit_code` sum it up."""

    mode: str  # "recompute" or "against"
    reference: str = ""  # what the files were compared with, for the summary line
    files: list[str] = field(default_factory=list)
    results: list[TensorResult] = field(default_factory=list)

    @property
    def failures(self) -> list[TensorResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def result(self, file: str, key: str) -> TensorResult:
        for r in self.results:
            if r.file == file and r.key == key:
                return r
        raise KeyError(f"{file}:{key}")

    def lines(self) -> list[str]:
        widths = (max((len(r.file) for r in self.results), default=0),
                  max((len(r.key) for r in self.results), default=0),
                  max((len(str(r.shape)) for r in self.results), default=0))
        out = [r.line(widths) for r in self.results]
        n, nf = len(self.results), len(self.files)
        counted = f"{n} tensor{'s' * (n != 1)} in {nf} file{'s' * (nf != 1)}"
        ref = f" ({self.reference})" if self.reference else ""
        if self.ok:
            out.append(f"OK: {counted} within tolerance{ref}")
        else:
            names = ", ".join(f"{r.file}:{r.key}" for r in self.failures[:5])
            more = f" and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
            out.append(f"FAILED: {len(self.failures)} of {counted} above tolerance{ref}: {names}{more}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def compare_arrays(a: npt.ArrayLike, b: npt.ArrayLike, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max_abs, max_rel, ok) for `a` against the reference `b` (same shape).

    Element i passes when |a_i - b_i| <= rtol * |b_i| + atol * M, with M = max |b| (1 if b is all zero), so
    atol is in units of the tensor's own scale.  max_rel = max |a_i - b_i| / (|b_i| + (atol / rtol) M): it is
    <= rtol exactly when every element passes.  Integer arrays must be equal.  NaN equals only NaN.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"a: expected shape {b64.shape}, got {a64.shape}")
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a64 - b64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    max_abs = float(diff.max(initial=0.0))
    exact = np.asarray(a).dtype.kind in "iub" and np.asarray(b).dtype.kind in "iub"
    finite_b = np.abs(b64[np.isfinite(b64)])
    M = float(finite_b.max(initial=0.0)) or 1.0
    if exact:
        return max_abs, (0.0 if max_abs == 0 else math.inf), max_abs == 0
    absb = np.where(np.isfinite(b64), np.abs(b64), 0.0)
    ok = bool(np.all(diff <= rtol * absb + atol * M))
    denom = absb + (atol / rtol) * M if rtol > 0 else absb
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / denom)
    return max_abs, float(rel.max(initial=0.0)), ok


def _tol_from_meta(meta: dict[str, Any] | None, dtype: str, key: str) -> tuple[float, float]:
    tol = (meta or {}).get("tolerance")
    if isinstance(tol, dict) and "rtol" in tol and "atol" in tol:
        for prefix, t in (tol.get("by_prefix") or {}).items():
            if key.startswith(prefix):
                return float(t["rtol"]), float(t["atol"])
        return float(tol["rtol"]), float(tol["atol"])
    return default_tolerance(dtype if dtype in TOLERANCES else "float32", key)


def _float_dtype(arrays: Arrays, meta: dict[str, Any] | None) -> str:
    if meta and meta.get("dtype") in TOLERANCES:
        return str(meta["dtype"])
    kinds = {str(a.dtype) for a in arrays.values() if a.dtype.kind == "f"}
    return "float32" if "float32" in kinds or not kinds else "float64"


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise OracleError(f"{path}: no .npz files in this directory")
        return files
    if not path.exists():
        raise OracleError(f"{path}: no such file or directory")
    return [path]


def _recompute(path: Path, arrays: Arrays, meta: dict[str, Any] | None) -> tuple[Arrays, dict[str, Any]]:
    """npgpt's outputs for the stored inputs of one case file."""
    if meta is None:
        raise OracleError(f"{path}: no 'meta' key (not an npgpt oracle file)")
    name = meta.get("case")
    if meta.get("format") != FORMAT or name not in _CASES:
        raise OracleError(f"{path}: meta does not describe an npgpt oracle case (case={name!r})")
    dtype = meta.get("dtype")
    if dtype not in TOLERANCES:
        raise OracleError(f"{path}: meta.dtype must be 'float32' or 'float64', got {dtype!r}")
    for k, a in arrays.items():
        if a.dtype.kind == "f" and str(a.dtype) != dtype:
            raise OracleError(f"{path}: key {k!r} is {a.dtype}, but meta.dtype is {dtype}")
    case = _CASES[name]
    stored = {k: a for k, a in arrays.items() if k.startswith(("in.", "param.")) or k in ("dout", "idx", "targets")}
    if name == "gpt_train":
        needed = ["idx", "targets"] + [f"param.{n}" for n in meta.get("args", {}).get("param_names", [])]
    else:
        needed = [f"in.{n}" for n in case.inputs] + ["dout"]
    missing = [k for k in needed if k not in stored]
    if missing:
        raise OracleError(f"{path}: missing input key(s) {missing}")
    try:
        return case.run(stored, meta.get("args", {})), meta
    except OracleError as e:
        raise OracleError(f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise OracleError(f"{path}: npgpt rejected the stored inputs: {' '.join(str(e).split())}") from None


def check_path(path: str | Path, against: str | Path | None = None, rtol: float | None = None,
               atol: float | None = None) -> Report:
    """Check a case file, or every .npz in a directory.

    Without `against`: recompute each case from its stored inputs with npgpt and compare every output and
    gradient with the stored one.  With `against` (a file, or a directory holding files of the same names):
    compare the two dumps key by key, `against` being the reference.  rtol/atol override the tolerance of
    every tensor; by default each file's meta.tolerance (or the dtype's default) applies.
    Raises OracleError (one line) for a file that cannot be read or used.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    path = Path(path)
    files = _files(path)
    pairs: list[tuple[Path, Path | None]] = []
    if against is None:
        pairs = [(f, None) for f in files]
    else:
        against_path = Path(against)
        if against_path.is_dir():
            pairs = [(f, against_path / f.name) for f in files]
        elif path.is_dir():
            raise OracleError(f"{against_path}: expected a directory to compare with the directory {path}")
        else:
            pairs = [(files[0], against_path)]
        for _, ref_path in pairs:
            if ref_path is not None and not ref_path.exists():
                raise OracleError(f"{ref_path}: no such file (needed to compare with {path})")
    loaded = [(f, load_case(f), o, load_case(o) if o is not None else None) for f, o in pairs]

    from .. import __version__

    report = Report("recompute", f"recomputed with npgpt {__version__}") if against is None else \
        Report("against", f"compared with {against}")
    for f, (arrays, meta), o, other in loaded:
        report.files.append(f.name)
        if other is None:
            expected, meta = _recompute(f, arrays, meta)
            dtype = str(meta["dtype"])
            for k, want in expected.items():
                r, a = _tol(rtol, atol, meta, dtype, k)
                if k not in arrays:
                    report.results.append(TensorResult(f.name, k, np.shape(want), dtype, math.inf, math.inf,
                                                       r, a, False, "missing from the file"))
                    continue
                report.results.append(_result(f.name, k, arrays[k], np.asarray(want), r, a))
            known = set(expected) | {k for k in arrays if k.startswith(("in.", "param.")) or
                                          k in ("dout", "idx", "targets")}
            for k in arrays:
                if k not in known:
                    report.results.append(TensorResult(f.name, k, arrays[k].shape, str(arrays[k].dtype), math.inf,
                                                       math.inf, 0.0, 0.0, False, "key not in npgpt's layout"))
        else:
            o_arrays, o_meta = other
            assert o is not None  # `other` was loaded from it
            dt_f, dt_o = _float_dtype(arrays, meta), _float_dtype(o_arrays, o_meta)
            dtype = "float32" if "float32" in (dt_f, dt_o) else "float64"
            ref_meta = o_meta if dt_o == dtype else meta
            if meta and o_meta and meta.get("case") != o_meta.get("case"):
                report.results.append(TensorResult(f.name, "meta.case", (), "str", math.inf, math.inf, 0.0, 0.0,
                                                   False, f"{meta.get('case')!r} vs {o_meta.get('case')!r}"))
            for k in list(o_arrays) + [k for k in arrays if k not in o_arrays]:
                r, a = _tol(rtol, atol, ref_meta, dtype, k)
                if k not in arrays or k not in o_arrays:
                    where = o.name if k not in o_arrays else f.name
                    shape = (o_arrays[k] if k in o_arrays else arrays[k]).shape
                    report.results.append(TensorResult(f.name, k, shape, dtype, math.inf, math.inf, r, a, False,
                                                       f"missing from {where}"))
                    continue
                report.results.append(_result(f.name, k, arrays[k], o_arrays[k], r, a))
    return report


def _tol(rtol: float | None, atol: float | None, meta: dict[str, Any] | None, dtype: str,
         key: str) -> tuple[float, float]:
    r, a = _tol_from_meta(meta, dtype, key)
    return (r if rtol is None else float(rtol)), (a if atol is None else float(atol))


def _result(file: str, key: str, got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> TensorResult:
    dtype = str(got.dtype) if got.dtype == ref.dtype else f"{got.dtype}/{ref.dtype}"
    if got.shape != ref.shape:
        return TensorResult(file, key, ref.shape, dtype, math.inf, math.inf, rtol, atol, False,
                            f"shape {got.shape} vs {ref.shape}")
    max_abs, max_rel, ok = compare_arrays(got, ref, rtol, atol)
    return TensorResult(file, key, ref.shape, dtype, max_abs, max_rel, rtol, atol, ok)
