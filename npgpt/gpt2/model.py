"""The GPT class: GPT-2's functional core (core.py) run by the family-free runtime (npgpt/runtime/model.py).

`model = GPT(config)`;  `logits, loss = model.forward(idx, targets)`;  `grads = model.backward()`.
Everything about buffers, batch slices and threads is the runtime's Model; this file only names GPT-2's core.
Walkthrough: docs/model.md
"""

from __future__ import annotations

from ..runtime.core import Core
from ..runtime.model import Model
from .config import GPTConfig
from .core import _write_grads, check_inputs, forward_for_runtime, init_params, param_shapes
from .generate import generate

__all__ = ["GPT", "CORE"]

# GPT-2's core as the runtime calls it: the loss counts every target (no ignore index)
CORE = Core(name="gpt2", config_class=GPTConfig, param_shapes=param_shapes, init_params=init_params,
            check_inputs=check_inputs, forward=forward_for_runtime, write_grads=_write_grads, ignore_index=None,
            generate=generate)


class GPT(Model):
    """A GPT-2-architecture model: `GPT(config, seed=0, dtype=np.float32, *, init=True, threads=None, layout=None)`.

    params in one buffer keyed by GPT-2's checkpoint names, forward/backward through gpt2/core.py, batch slices
    and threads from the runtime (npgpt/runtime/model.py).  See docs/model.md.
    """

    CORE = CORE
    config: GPTConfig
