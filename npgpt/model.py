"""GPT-2's architecture chained from the layer pairs: a functional core and a small class around it.

logits = ln_f(blocks(wte[idx] + wpe[:T])) @ wte.T        (the LM head is tied to the token embedding)
Functional: `logits, loss, cache = gpt_forward(params, config, idx, targets)`; `grads = gpt_backward(cache)`.
Class: `GPT(config)` owns params (views into one buffer), its grads, and a Generator for dropout.
Walkthrough: docs/model.md
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple, overload

import numpy as np
import numpy.typing as npt

from ._checks import token_ids
from .config import GPTConfig
from .flat import pack
from .parallel import batch_slices, default_threads, run_parallel
from .layers import (
    BLOCK_PARAM_NAMES,
    BlockCache,
    CrossEntropyCache,
    DropoutCache,
    EmbeddingCache,
    LayerNormCache,
    block_backward,
    block_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    layernorm_backward,
    layernorm_forward,
)

Array = npt.NDArray[np.floating]
Params = Mapping[str, Array]


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, exactly as in a GPT-2 checkpoint (the tied lm_head has no entry)."""
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(config.n_layer):
        block = {
            "ln_1.weight": (C,), "ln_1.bias": (C,),
            "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
            "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
            "ln_2.weight": (C,), "ln_2.bias": (C,),
            "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
            "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
        }
        shapes.update({f"h.{i}.{name}": block[name] for name in BLOCK_PARAM_NAMES})
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    return shapes


def buffer_order(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Layout inside the flat buffer: the 2-D matrices (weight-decayed) first, then biases and LayerNorm,
    so AdamW's decay touches one contiguous slice."""
    return [k for k in shapes if len(shapes[k]) == 2] + [k for k in shapes if len(shapes[k]) != 2]


def init_params(config: GPTConfig, rng: np.random.Generator, out: Mapping[str, Array]) -> None:
    """GPT-2 initialisation, written into `out`: weights ~ N(0, 0.02), residual projections (attn.c_proj,
    mlp.c_proj) ~ N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weight 1 and bias 0."""
    proj_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name, p in out.items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p[...] = 1.0
        elif name.endswith(".bias"):
            p[...] = 0.0
        else:
            std = proj_std if name.endswith("c_proj.weight") else 0.02
            p[...] = rng.normal(0.0, std, size=p.shape)


class GPTCache(NamedTuple):
    """Everything gpt_backward needs, layer by layer."""

    config: GPTConfig
    tok: EmbeddingCache  # token ids, for the scatter-add into wte
    drop: DropoutCache | None  # embedding dropout; None when it is off
    blocks: list[BlockCache]
    ln_f: LayerNormCache
    xf: Array  # (B, T, C) ln_f output: the LM head's input, needed for the head's part of dwte
    wte: Array  # (V, C) the tied weight: the head's backward needs it for dx
    ce: CrossEntropyCache | None  # None when no targets were given
    dtype: np.dtype


def gpt_forward(
    params: Params,
    config: GPTConfig,
    idx: npt.NDArray[np.integer],
    targets: npt.NDArray[np.integer] | None = None,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[Array, Array | None, GPTCache]:
    """logits (B, T, V), mean cross-entropy loss (0-d, or None without targets), and the cache.

    idx, targets (B, T) ints in [0, V) with T <= block_size.  Dropout only when train=True (drawn from rng).
    See docs/model.md.
    """
    token_ids("idx", idx, config.vocab_size)
    B, T = idx.shape
    if not 1 <= T <= config.block_size:
        raise ValueError(f"idx: sequence length {T} must be between 1 and block_size={config.block_size}")
    if targets is not None:
        token_ids("targets", targets, config.vocab_size)
        if targets.shape != idx.shape:
            raise ValueError(f"targets: expected shape {idx.shape} (same as idx), got {targets.shape}")
    wte, wpe = params["wte.weight"], params["wpe.weight"]
    p_drop = config.dropout if train else 0.0

    tok, tok_cache = embedding_forward(idx, wte)  # (B, T, C)
    x: Array = tok
    x += wpe[:T]  # (B, T, C) learned positions, broadcast over B; in place on the fresh embedding copy
    x, drop_cache = dropout_forward(x, p_drop, rng, train) if p_drop > 0.0 else (x, None)  # (B, T, C) off: no copy
    block_caches = []
    for i in range(config.n_layer):
        p = {name: params[f"h.{i}.{name}"] for name in BLOCK_PARAM_NAMES}
        x, c = block_forward(x, p, config.n_head, p_drop, rng, train)  # (B, T, C)
        block_caches.append(c)
    xf, ln_f_cache = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])  # (B, T, C)
    logits = xf @ wte.T  # (B, T, V) tied LM head, no bias
    loss, ce_cache = (None, None) if targets is None else cross_entropy_forward(logits, targets)
    cache = GPTCache(config, tok_cache, drop_cache, block_caches, ln_f_cache, xf, wte, ce_cache, wte.dtype)
    return logits, loss, cache


def gpt_backward(cache: GPTCache, out: Mapping[str, Array] | None = None, dloss: float = 1.0,
                 emit: Callable[[str, Array], None] | None = None) -> dict[str, Array]:
    """Gradient of dloss * (the mean loss) with respect to every parameter, keyed like params.

    Each gradient is handed on as soon as it is known: to emit(name, grad) if given, else written into
    out[name] (e.g. views of one flat buffer), else collected in a new dict.  Returns out, that dict, or {}
    with emit.
    See docs/model.md for where each gradient comes from.
    """
    if cache.ce is None:
        raise ValueError("cache: the forward was run without targets, so there is no loss to differentiate")
    config = cache.config
    collected: dict[str, Array] = {}
    streaming = emit is not None
    if emit is None:
        def emit(name: str, grad: Array) -> None:
            if out is None:
                collected[name] = grad
            else:
                out[name][...] = grad
    dlogits = cross_entropy_backward(dloss, cache.ce)  # (B, T, V)
    B, T, V = dlogits.shape
    C = config.n_embd
    dlogits2 = dlogits.reshape(-1, V)  # (B*T, V)
    dwte_head = dlogits2.T @ cache.xf.reshape(-1, C)  # (V, C) first source of dwte: the LM head
    dx: Array = (dlogits2 @ cache.wte).reshape(B, T, C)  # (B, T, C)
    dx, dw, db = layernorm_backward(dx, cache.ln_f)
    emit("ln_f.weight", dw)
    emit("ln_f.bias", db)
    for i in reversed(range(config.n_layer)):
        dx, block_grads = block_backward(dx, cache.blocks[i])  # (B, T, C)
        for name, grad in block_grads.items():
            emit(f"h.{i}.{name}", grad)
    if cache.drop is not None:
        dx = dropout_backward(dx, cache.drop)  # (B, T, C)
    dwpe = np.zeros((config.block_size, C), dtype=cache.dtype)  # (block_size, C)
    dwpe[:T] = dx.sum(axis=0)  # (T, C) every sequence in the batch used the same positions
    emit("wpe.weight", dwpe)
    dwte_tok = embedding_backward(dx, cache.tok)  # (V, C) second source of dwte: the token lookup
    dwte_head += dwte_tok  # (V, C) tied weight: its two uses add
    emit("wte.weight", dwte_head)
    if streaming:
        return {}  # everything went to emit
    if out is not None:
        return dict(out)
    return {k: collected[k] for k in param_shapes(config)}


class GPT:
    """A GPT-2-architecture model: params in one buffer, forward/backward through the functional core.

    init=False leaves the parameters zero (for loaders that fill them).  threads > 1 splits each batch across
    that many worker threads (data parallel, npgpt/parallel.py); the default is one per core in float32 and 1
    in float64, so float64 results are exactly those of the functional core.

    `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`.  See docs/model.md.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, dtype: npt.DTypeLike = np.float32, *,
                 init: bool = True, threads: int | None = None) -> None:
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config: expected a GPTConfig, got {type(config).__name__}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        shapes = param_shapes(config)
        order = buffer_order(shapes)
        # one contiguous buffer each for params and grads; the dicts hold views (AdamW runs on the buffers)
        self.flat_params, self.params = pack(shapes, dtype, order)
        self.flat_grads, self.grads = pack(shapes, dtype, order)
        self.rng = np.random.default_rng(seed)  # dropout draws; seeded so runs repeat
        if init:  # from_pretrained passes init=False: it overwrites every entry anyway
            init_params(config, np.random.default_rng(seed), self.params)
        self.training = True
        if threads is None:
            threads = default_threads() if dtype == np.float32 else 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        self.threads = threads
        self._cache: list[tuple[GPTCache, float]] | None = None  # (cache, share of the batch) per slice

    def num_params(self) -> int:
        """Number of parameters (the tied head counted once)."""
        return int(self.flat_params.size)

    def train(self, mode: bool = True) -> GPT:
        self.training = mode
        return self

    def eval(self) -> GPT:
        return self.train(False)

    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: npt.NDArray[np.integer]) -> tuple[Array, Array]: ...
    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: None = None) -> tuple[Array, None]: ...

    def forward(self, idx: npt.NDArray[np.integer],
                targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None]:
        """logits (B, T, V) and the mean loss (None without targets); keeps the cache for backward().

        With threads > 1 the batch is cut into slices run concurrently; the loss is their size-weighted mean.
        """
        B = idx.shape[0] if isinstance(idx, np.ndarray) and idx.ndim == 2 else 1
        slices = batch_slices(B, self.threads)
        if len(slices) == 1:
            logits, loss, cache = gpt_forward(self.params, self.config, idx, targets,
                                              train=self.training, rng=self.rng)
            self._cache = [(cache, 1.0)]
            return logits, loss
        token_ids("idx", idx, self.config.vocab_size)  # check once, up front, with the whole batch's shapes
        if targets is not None and (not isinstance(targets, np.ndarray) or targets.shape != idx.shape):
            raise ValueError(f"targets: expected shape {idx.shape} (same as idx), got "
                             f"{getattr(targets, 'shape', type(targets).__name__)}")
        # each slice draws dropout from its own Generator, seeded from self.rng: deterministic despite threads
        seeds = self.rng.integers(2**63, size=len(slices)) if self.training and self.config.dropout > 0 else None
        results = run_parallel([functools.partial(
            gpt_forward, self.params, self.config, idx[s], None if targets is None else targets[s],
            train=self.training, rng=None if seeds is None else np.random.default_rng(int(seeds[i])))
            for i, s in enumerate(slices)])
        shares = [(s.stop - s.start) / B for s in slices]  # d(mean loss)/d(slice's mean loss)
        self._cache = [(cache, share) for (_, _, cache), share in zip(results, shares)]
        logits = np.concatenate([r[0] for r in results])  # (B, T, V)
        if targets is None:
            return logits, None
        total = sum(share * float(r[1]) for r, share in zip(results, shares))  # type: ignore[arg-type]
        return logits, np.asarray(total, dtype=self.dtype)

    __call__ = forward

    def backward(self) -> dict[str, Array]:
        """Gradients of the last forward's loss, written into self.grads (views of self.flat_grads)."""
        if self._cache is None:
            raise ValueError("backward: call forward(idx, targets) first")
        caches, self._cache = self._cache, None  # drop our reference: activations are freed as we go
        if len(caches) == 1:
            gpt_backward(caches[0][0], out=self.grads)
            return self.grads
        # the batch's mean loss is sum_i share_i * (slice i's mean loss): slice i's backward starts from
        # dloss = share_i, and the slices' gradients add where they meet (every parameter)
        n = len(caches)
        arrived: dict[str, list[Array | None]] = {}  # per tensor, the slices' gradients that are in so far
        lock = threading.Lock()

        def adder(i: int) -> Callable[[str, Array], None]:
            def add(name: str, grad: Array) -> None:
                with lock:  # held for bookkeeping only, never for arithmetic, so slices rarely wait on it
                    got = arrived.setdefault(name, [None] * n)
                    got[i] = grad
                    if any(g is None for g in got):
                        return  # a later slice will sum this tensor
                    del arrived[name]
                grads = [g for g in got if g is not None]  # all of them, by the check above
                # the last slice to arrive sums them all, always in slice order: the same bits on every run
                np.add(grads[0], grads[1], out=self.grads[name])
                for g in grads[2:]:
                    self.grads[name] += g
            return add

        run_parallel([functools.partial(gpt_backward, cache, None, share, adder(i))
                      for i, (cache, share) in enumerate(caches)])
        return self.grads

    def generate(self, idx: npt.NDArray[np.integer], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
        """Append max_new_tokens sampled tokens to idx (B, T); see npgpt.generate.generate."""
        from .generate import generate

        return generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, rng=rng, use_cache=use_cache)
