"""The Llama family and the configurable decoder: one LlamaConfig, one block, one core, one KV decoder, which
plain Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention) and every dense family after it run through
(norm kinds and placements, parallel blocks, QK-norm, biases, partial / per-layer / no RoPE, windows, softcaps,
sinks, multipliers, plain or gated MLPs).  Parameters keyed by Hugging Face's Llama names; other checkpoints'
names map onto them in hf_families.py.  Walkthrough: docs/llama.md; the families: docs/families.md

config.py (LlamaConfig, block_style) < block.py (one decoder layer) < core.py (the functional model)
< decode.py (the one-token step) < generate.py (KV cache) < model.py (the Llama class) < hf_families.py
(one HFFamily adapter per Hugging Face family) < pretrained.py (reads and writes their directories).
"""

from ..layers.registry import Pair
from .block import (LAYER_PARAM_NAMES, LlamaLayerCache, layer_param_shapes, llama_layer_backward, llama_layer_forward,
                    norm_slots)
from .config import LlamaConfig, block_style
from .core import LlamaCache, init_params, llama_backward, llama_forward, llama_grads, param_shapes
from .generate import LlamaKVCache, forward_cached, generate
from .model import Llama
from .hf_families import style_config

# the family's composite pair, for the seeded-error check (layers/registry.py): one decoder layer in any block
# style.  Its gradients are dx, then the parameters' by position in the returned dict: the smallest variant
# (a parallel block with one shared LayerNorm and no projection biases) has 8.  Its derivation is docs/llama.md.
PAIRS: tuple[Pair, ...] = (
    Pair("decoder_block", "llama_layer_forward", "llama_layer_backward", ("dx", *(f"d[{i}]" for i in range(8))),
         module="npgpt.llama.block", doc="llama.md"),
)

__all__ = [
    "LlamaConfig", "Llama", "LlamaCache", "LlamaKVCache", "LlamaLayerCache", "LAYER_PARAM_NAMES",
    "llama_forward", "llama_backward", "llama_grads", "llama_layer_forward", "llama_layer_backward",
    "param_shapes", "init_params", "forward_cached", "generate",
    "block_style", "style_config", "norm_slots", "layer_param_shapes", "PAIRS",
]
