"""The fast path, the same for every family: it takes a family's Core (core.py) and knows no family by name.

layout.py (one buffer behind named tensors) < parallel.py (cores, BLAS threads) < memory.py (glibc reuse)
< core.py (the Core record) < slice_worker.py (worker processes) < data_parallel.py (batch slices)
< model.py (the Model class every family's class is).  Walkthrough: docs/model.md
"""

from .core import Core
from .layout import FlatTensors, ParamLayout
from .model import SLICE_PARAMS, Model

__all__ = ["Core", "FlatTensors", "ParamLayout", "Model", "SLICE_PARAMS"]
