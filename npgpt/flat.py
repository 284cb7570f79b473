"""One contiguous buffer behind many named tensors (kept for callers of `pack`; the layout lives in layout.py).

Parameters, gradients and AdamW moments each live in one 1-D buffer; the dicts the rest of the code uses
hold views into it.  Whole-model operations (AdamW, clipping, zeroing) then run as a few vectorised passes
over one array instead of a Python loop over ~16 tensors per layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .layout import FlatTensors, ParamLayout


def pack(shapes: Mapping[str, tuple[int, ...]], dtype: npt.DTypeLike,
         order: list[str] | None = None) -> tuple[np.ndarray, FlatTensors]:
    """A zeroed 1-D buffer and a read-only dict (keyed and ordered like `shapes`) of views into it.

    `order` sets the layout inside the buffer (default: the order of `shapes`); 2-D tensors are the decayed
    ones.  Prefer ParamLayout directly: `layout.zeros(dtype)`.
    """
    order = list(shapes) if order is None else order
    layout = ParamLayout(shapes, tuple(order), frozenset(k for k in shapes if len(shapes[k]) == 2))
    views = layout.zeros(dtype)
    return views.buffer, views
