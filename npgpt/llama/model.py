"""The Llama class: the family's functional core (core.py) run by the family-free runtime (npgpt/runtime/model.py).

`Llama(config)` has GPT's interface: `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`;
params/grads are FlatTensors keyed by HF's names; generate().  This file only names the family's core.
Walkthrough: docs/llama.md
"""

from __future__ import annotations

from ..runtime.core import Core
from ..runtime.model import Model
from .config import LlamaConfig
from .core import IGNORE_INDEX, _write_grads, check_inputs, forward_for_runtime, init_params, param_shapes, \
    router_stats
from .generate import generate

__all__ = ["Llama", "CORE"]

# the family's core as the runtime calls it: the loss skips targets equal to -100, as HF's does
CORE = Core(name="llama", config_class=LlamaConfig, param_shapes=param_shapes, init_params=init_params,
            check_inputs=check_inputs, forward=forward_for_runtime, write_grads=_write_grads,
            ignore_index=IGNORE_INDEX, generate=generate, stats=router_stats)


class Llama(Model):
    """A Llama-style model: `Llama(config, seed=0, dtype=np.float32, *, init=True, threads=None, layout=None)`.

    params in one buffer keyed by HF's names, forward/backward through llama/core.py, batch slices and threads
    from the runtime (npgpt/runtime/model.py).  See docs/llama.md.
    """

    CORE = CORE
    config: LlamaConfig
