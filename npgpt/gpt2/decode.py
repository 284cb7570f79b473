"""One sampled token through GPT-2 against the key/value cache: the decoding fast path beside gpt.py.

generate.py's forward_cached runs the model's own forward, which works on (B, T, C) and (B, H, T, D) arrays
of any T and builds every layer's backward cache.  A sampled token is one position, so the same equations
fit on rows (B, C) with no caches, no head split or merge, and a fifth fewer NumPy calls.  Decoding one
sequence is bound by reading the weights; the calls around them were a third of a token's time.
The MLP's output weights are read from (C, 4C) copies (transposed_proj), whose long rows BLAS streams
1.5-2x as fast in a one-row product.  tests/test_decode.py holds this step to forward_cached (float64 to
1e-12) on random models.
Derivation: docs/generate.md ("The one-token step").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .config import GPTConfig
from ..layers.gelu import _squash
from ..layers.layernorm import _layernorm_forward
from ..layers.softmax import _softmax_forward

Array = npt.NDArray[np.floating]


def _decode_step(params: Mapping[str, Array], config: GPTConfig, tokens: npt.NDArray[np.integer],
                 k: Sequence[Array], v: Sequence[Array], t: int, proj_t: Sequence[Array]) -> Array:
    """Logits (B, V) for tokens (B,) at position t, each layer's cached keys and values k[i], v[i]
    (B, H, block_size, D) filled up to t and given this position's; proj_t from transposed_proj.  The
    eval-mode forward of model.md on one position; generate.py's decode_step checks the arguments.
    See docs/generate.md.
    """
    B, C, H = tokens.shape[0], config.n_embd, config.n_head
    D = C // H
    scale = 1.0 / math.sqrt(D)  # Python floats keep float32 float32
    x = params["wte.weight"][tokens] + params["wpe.weight"][t]  # (B, C)
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, _ = _layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"])  # (B, C) cache dropped
        qkv = h @ params[p + "attn.c_attn.weight"]  # (B, 3C)
        qkv += params[p + "attn.c_attn.bias"]
        k[i][:, :, t] = qkv[:, C:2 * C].reshape(B, H, D)  # append this position's keys and values
        v[i][:, :, t] = qkv[:, 2 * C:].reshape(B, H, D)
        q = qkv[:, :C].reshape(B, H, 1, D) * scale  # (B, H, 1, D)
        att = q @ k[i][:, :, :t + 1].swapaxes(-1, -2)  # (B, H, 1, t+1) one query sees every key: no mask
        att, _ = _softmax_forward(att)  # (B, H, 1, t+1) rows sum to 1
        y = (att @ v[i][:, :, :t + 1]).reshape(B, C)  # (B, H, 1, D) -> (B, C) heads side by side
        a = y @ params[p + "attn.c_proj.weight"]  # (B, C)
        a += params[p + "attn.c_proj.bias"]
        x += a  # (B, C) first residual add, in place on this step's own array
        h, _ = _layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"])  # (B, C)
        f = h @ params[p + "mlp.c_fc.weight"]  # (B, 4C)
        f += params[p + "mlp.c_fc.bias"]
        f *= _squash(f, "tanh")  # (B, 4C) GELU(f) = f sigmoid(2u) (gelu.py's kernel), in place
        m = f @ proj_t[i].T  # (B, C) mlp.c_proj.weight, read along the (C, 4C) copy's rows
        m += params[p + "mlp.c_proj.bias"]
        x += m  # (B, C) second residual add
    xf, _ = _layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])  # (B, C)
    return xf @ params["wte.weight"].T  # (B, V) tied LM head


def transposed_proj(params: Mapping[str, Array], config: GPTConfig) -> list[Array]:
    """Each layer's mlp.c_proj.weight (4C, C) as a contiguous (C, 4C) copy, for _decode_step.

    BLAS streams W 1.5-2x as fast in a one-row product f @ W along the copy's 4C-long rows as along W's C-long
    ones (docs/generate.md); the block's other three weights already have the long rows.
    """
    return [np.ascontiguousarray(params[f"h.{i}.mlp.c_proj.weight"].T) for i in range(config.n_layer)]  # (C, 4C)

