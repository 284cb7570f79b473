"""pytest plugin for tests/seeded_errors.py: inject one small error into an npgpt function.

Load with `-p _seed_error_plugin` (tests/ on PYTHONPATH) and set

    NPGPT_SEED_ERROR="module:function:kind:arg"     e.g. "npgpt.layers.linear:linear_backward:scale:1"

kinds (arg is the index of the gradient among the backward's returned arrays, dicts flattened in key order):
    scale      multiply that whole gradient by 1.001
    elem_max   multiply its largest-magnitude element by 1.001
    elem_mid   multiply its element at flat index size // 2 by 1.001 (a no-op when that element is ~0:
               below 1e-6 times the gradient's largest element)
    out        multiply the forward output's largest-magnitude element by 1.001; arg picks the output when the
               forward returns several before its cache (the attention family's `out, lse, cache`: 0 or 1)
A gradient that is None in a call (an optional input that was not given, e.g. sdpa's dsinks without sinks) is
left alone and that call counts as a no-op; only finite elements are nudged (lse holds -inf for rows that see
no key).

At pytest_configure, npgpt and all of npgpt.layers are imported, then every attribute of every loaded npgpt module
that `is` the original function is replaced by the wrapper (so `from .linear import linear_forward` copies in
npgpt.layers, npgpt.layers.mlp, ... are covered too).
Hypothesis shrinking (and its explain phase) is switched off while an error is injected: whether the suite
goes red is decided by the generated examples, which stay exactly those of the active profile; shrinking would
only make the failure report nicer, at ~20 s per run.
If NPGPT_SEED_ERROR_STATS names a file, {"calls", "applied", "noop", "replaced"} is written there at the end:
`applied` counts calls whose result the wrapper actually changed.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import sys
from typing import Any

import numpy as np
import pytest

FACTOR = 1.001
NEGLIGIBLE = 1e-6  # elements smaller than this times the gradient's largest count as zero (rounding noise)
_stats = {"calls": 0, "applied": 0, "noop": 0, "replaced": []}


def _nudge(g: np.ndarray, kind: str) -> tuple[np.ndarray, bool]:
    """A copy of g with the chosen error applied, and whether it changed anything."""
    if g is None:  # an optional input's gradient, not computed in this call
        return g, False
    g = np.array(g, copy=True, order="C")
    if g.size == 0:
        return g, False
    flat = g.reshape(-1)  # a view, since g is a fresh C-ordered copy
    size = np.where(np.isfinite(flat), np.abs(flat), 0.0)  # -inf/inf entries cannot be nudged
    biggest = float(np.max(size))
    if kind == "scale":
        g *= FACTOR
        return g, biggest > 0.0
    i = int(np.argmax(size)) if kind in ("elem_max", "out") else flat.size // 2
    # An element at rounding level (e.g. the key-bias gradient, which softmax's shift invariance makes 0 up to
    # ~1e-17) is "zero for structural reasons": nudging it is not an error the tests can or should see.
    if not abs(float(flat[i])) > NEGLIGIBLE * biggest:
        return g, False
    flat[i] *= FACTOR
    return g, True


def _flatten(res: Any) -> tuple[list[np.ndarray], Any]:
    """The arrays of a backward result in order (tuples, dicts in key order), and a function rebuilding it."""
    if isinstance(res, dict):
        keys = list(res)
        return [res[k] for k in keys], lambda leaves: dict(zip(keys, leaves))
    if isinstance(res, tuple):
        parts = [_flatten(r) for r in res]
        sizes = [len(p[0]) for p in parts]

        def rebuild(leaves):
            out, at = [], 0
            for (_, rb), n in zip(parts, sizes):
                out.append(rb(leaves[at:at + n]))
                at += n
            return type(res)(*out) if hasattr(res, "_fields") else tuple(out)  # a NamedTuple stays one
        return [a for p in parts for a in p[0]], rebuild
    return [res], lambda leaves: leaves[0]


def _wrap(fn, kind: str, arg: int):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        res = fn(*args, **kwargs)
        _stats["calls"] += 1
        if kind == "out":
            *outs, cache = res
            if not 0 <= arg < len(outs):
                raise IndexError(f"seed error: {fn.__name__} returned {len(outs)} output(s), no index {arg}")
            outs[arg], changed = _nudge(outs[arg], kind)
            res = (*outs, cache)
        else:
            leaves, rebuild = _flatten(res)
            if not 0 <= arg < len(leaves):
                raise IndexError(f"seed error: {fn.__name__} returned {len(leaves)} gradient(s), no index {arg}")
            leaves = list(leaves)
            leaves[arg], changed = _nudge(leaves[arg], kind)
            res = rebuild(leaves)
        _stats["applied" if changed else "noop"] += 1
        return res
    wrapper.__wrapped_by_seed_error__ = True
    return wrapper


def _import_npgpt_layers() -> None:
    """Import npgpt and every npgpt.layers module, so that every copy of a layer function exists before the
    replacement.  (Modules imported later, e.g. a model, copy the already replaced attribute.)  Other npgpt
    modules are left alone: they may be mid-edit, slow to import, or have import-time effects."""
    import npgpt
    import npgpt.layers

    for info in pkgutil.walk_packages(npgpt.layers.__path__, prefix="npgpt.layers."):
        importlib.import_module(info.name)


def pytest_configure(config):
    spec = os.environ.get("NPGPT_SEED_ERROR")
    if not spec:
        return
    module_name, func_name, kind, arg = spec.split(":")
    if kind not in ("scale", "elem_max", "elem_mid", "out"):
        raise pytest.UsageError(f"NPGPT_SEED_ERROR: unknown kind {kind!r}")
    _import_npgpt_layers()
    original = getattr(importlib.import_module(module_name), func_name)
    wrapper = _wrap(original, kind, int(arg or 0))
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "npgpt" or name.startswith("npgpt.")):
            continue
        for attr, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, attr, wrapper)
                _stats["replaced"].append(f"{name}.{attr}")
    if not _stats["replaced"]:
        raise pytest.UsageError(f"NPGPT_SEED_ERROR: {module_name}.{func_name} not found in any npgpt module")
    _no_shrinking()


def _no_shrinking() -> None:
    """The active hypothesis profile (loaded by tests/conftest.py) minus the shrink and explain phases."""
    from hypothesis import Phase, settings

    active = settings.default
    settings.register_profile("seeded-errors", parent=active,
                              phases=[p for p in active.phases if p not in (Phase.shrink, Phase.explain)])
    settings.load_profile("seeded-errors")


def pytest_unconfigure(config):
    path = os.environ.get("NPGPT_SEED_ERROR_STATS")
    if path and os.environ.get("NPGPT_SEED_ERROR"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_stats, f)
