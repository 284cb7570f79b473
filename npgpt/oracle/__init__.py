"""Golden files for testing other implementations against npgpt, and a checker for them.

dump_cases(out_dir, ...) writes one `.npz` per registered case (inputs, upstream gradient, output, every
gradient; `gpt_train.npz` and `llama_train.npz` are whole models: logits, loss, every parameter gradient, ten
AdamW steps).  The files hold only numeric arrays and one JSON string (key `meta`), so any .npy reader can parse them.
check_path(path, against=None, ...) recomputes every case from its stored inputs with npgpt (or, with
`against`, compares two dumps key by key) and returns a Report with the worst error of every tensor.

The package, by job: case.py (what a case is), registry.py (CASE_MODULES: the case modules, one per model
family, e.g. gpt2_cases.py), fileformat.py (the .npz layout, meta, tolerances), dump.py, check.py, and
__main__.py (`python -m npgpt.oracle dump --out DIR`, `python -m npgpt.oracle check DIR`).
File layout, conventions, tolerances and how to add cases: docs/oracle.md
"""

from .case import DEFAULT_SHAPES, OracleError, Sizes
from .case import sizes as _sizes
from .check import Report, TensorResult, check_path, compare_arrays
from .dump import case_rng as _case_rng
from .dump import dump_cases
from .fileformat import FINAL_TOLERANCES, FORMAT, FORMAT_VERSION, TOLERANCES, default_tolerance, load_case
from .registry import CASE_MODULES, CASE_NAMES

__all__ = [
    "dump_cases", "check_path", "load_case", "compare_arrays", "default_tolerance",
    "Report", "TensorResult", "OracleError", "Sizes",
    "CASE_NAMES", "CASE_MODULES", "DEFAULT_SHAPES", "TOLERANCES", "FINAL_TOLERANCES", "FORMAT", "FORMAT_VERSION",
    "_case_rng", "_sizes",
]
