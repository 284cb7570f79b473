"""One contiguous buffer behind many named tensors.

Parameters, gradients and AdamW moments each live in one 1-D buffer; the dicts the rest of the code uses
hold views into it.  Whole-model operations (AdamW, clipping, zeroing) then run as a few vectorised passes
over one array instead of a Python loop over ~16 tensors per layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt


def pack(shapes: Mapping[str, tuple[int, ...]], dtype: npt.DTypeLike,
         order: list[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A zeroed 1-D buffer and a dict (keyed and ordered like `shapes`) of views into it.

    `order` sets the layout inside the buffer (default: the order of `shapes`).
    """
    order = list(shapes) if order is None else order
    sizes = {k: int(np.prod(shapes[k], dtype=np.int64)) for k in order}
    buf = np.zeros(sum(sizes.values()), dtype=dtype)  # (P,) every tensor back to back
    views, offset = {}, 0
    for k in order:
        views[k] = buf[offset:offset + sizes[k]].reshape(shapes[k])
        offset += sizes[k]
    return buf, {k: views[k] for k in shapes}


def span(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, slice]] | None:
    """If the arrays tile one contiguous buffer exactly (in some order), that buffer as a 1-D view and each
    key's slice of it; otherwise None."""
    if not arrays:
        return None
    items = list(arrays.items())
    dtype = items[0][1].dtype
    if any(a.dtype != dtype or not a.flags.c_contiguous for _, a in items):
        return None
    addr = {k: a.__array_interface__["data"][0] for k, a in items}
    keys = sorted(addr, key=addr.__getitem__)
    start, pos, slices = addr[keys[0]], 0, {}
    for k in keys:
        if addr[k] != start + pos * dtype.itemsize:
            return None
        slices[k] = slice(pos, pos + arrays[k].size)
        pos += arrays[k].size
    base = arrays[keys[0]]
    while base.base is not None and isinstance(base.base, np.ndarray):
        base = base.base
    if base.ndim != 1 or base.dtype != dtype:
        return None
    base_start = base.__array_interface__["data"][0]
    off = (start - base_start) // dtype.itemsize
    if off < 0 or off + pos > base.size:
        return None
    return base[off:off + pos], slices
