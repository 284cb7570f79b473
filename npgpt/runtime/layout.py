"""Where every parameter lives in one flat buffer: names, shapes, order, offsets, and which are decayed.

A ParamLayout is built once (GPT builds one from param_shapes) and handed to everything that works on whole
buffers: the model's params and grads, AdamW's moments, the gradient accumulator.  `FlatTensors` is a
frozen dict of views into one buffer that carries its layout, so the fast path is declared, not guessed:
AdamW compares layouts and raises when they differ.  See docs/optim.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating]


@dataclass(frozen=True)
class ParamLayout:
    """names: the tensors in their public order (a dict's order); order: their order inside the buffer;
    decayed: the names AdamW applies weight decay to.  offsets, sizes and decay_runs are derived."""

    shapes: Mapping[str, tuple[int, ...]]
    order: tuple[str, ...]
    decayed: frozenset[str]
    offsets: Mapping[str, int] = field(init=False, compare=False)
    size: int = field(init=False, compare=False)  # P: the buffer's length

    def __post_init__(self) -> None:
        shapes = {k: tuple(int(d) for d in s) for k, s in self.shapes.items()}
        if sorted(self.order) != sorted(shapes):
            raise ValueError(f"order: expected each of the {len(shapes)} names exactly once, got {list(self.order)}")
        if not self.decayed <= set(shapes):
            raise ValueError(f"decayed: unknown names {sorted(self.decayed - set(shapes))}")
        offsets, pos = {}, 0
        for k in self.order:
            offsets[k] = pos
            pos += int(np.prod(shapes[k], dtype=np.int64))
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "order", tuple(self.order))
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "size", pos)

    @classmethod
    def matrices_first(cls, shapes: Mapping[str, tuple[int, ...]]) -> ParamLayout:
        """GPT-2's layout: the 2-D matrices (the decayed ones) first, then biases and LayerNorm weights, so
        weight decay touches one contiguous slice of the buffer."""
        order = [k for k in shapes if len(shapes[k]) == 2] + [k for k in shapes if len(shapes[k]) != 2]
        return cls(shapes, tuple(order), frozenset(k for k in shapes if len(shapes[k]) == 2))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    def slot(self, name: str) -> slice:
        """name's slice of the buffer."""
        start = self.offsets[name]
        return slice(start, start + int(np.prod(self.shapes[name], dtype=np.int64)))

    def decay_runs(self) -> list[slice]:
        """The decayed tensors' slices, merged into as few contiguous runs as possible."""
        runs: list[slice] = []
        for k in self.order:
            if k not in self.decayed:
                continue
            s = self.slot(k)
            if runs and runs[-1].stop == s.start:
                runs[-1] = slice(runs[-1].start, s.stop)
            else:
                runs.append(s)
        return runs

    def views(self, buffer: np.ndarray) -> FlatTensors:
        """Views of buffer (1-D, length size) keyed and ordered like shapes."""
        return FlatTensors(self, buffer)

    def zeros(self, dtype: npt.DTypeLike) -> FlatTensors:
        """A new zeroed buffer in this layout, as its views."""
        return FlatTensors(self, np.zeros(self.size, dtype=dtype))  # (P,)


class FlatTensors(dict[str, np.ndarray]):
    """A dict of named views into one 1-D buffer laid out by `layout` (`.buffer` is the buffer).

    The values are writable arrays (update them in place: p[...] = ...); the dict itself is frozen, since
    re-pointing an entry at another array would silently cut it off from the buffer.
    """

    def __init__(self, layout: ParamLayout, buffer: np.ndarray) -> None:
        if not isinstance(buffer, np.ndarray) or buffer.ndim != 1 or buffer.size != layout.size \
                or not buffer.flags.c_contiguous:
            raise ValueError(f"buffer: expected a contiguous 1-D array of {layout.size} elements, got "
                             f"{getattr(buffer, 'shape', type(buffer).__name__)}")
        super().__init__((k, buffer[layout.slot(k)].reshape(s)) for k, s in layout.shapes.items())
        self.layout = layout
        self.buffer = buffer

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if value is not dict.get(self, name):  # `d[k] += x` stores back the same array: that is fine
            self._frozen()

    def _frozen(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FlatTensors: entries are views into one buffer; write into them (p[...] = x) instead")

    __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _frozen

    def __reduce__(self) -> tuple[Any, ...]:
        """copy, deepcopy and pickle give a plain dict: a copy is no longer in the buffer."""
        return dict, (dict(self),)

    def __repr__(self) -> str:
        return f"FlatTensors({len(self)} tensors, {self.layout.size} {self.buffer.dtype} elements)"
