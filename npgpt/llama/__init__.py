"""A Llama-style model family (RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases) built from the
layer pairs, with parameters keyed by Hugging Face's LlamaForCausalLM names.  Walkthrough: docs/llama.md

config.py (LlamaConfig) < block.py (one decoder layer) < core.py (the functional model) < generate.py (KV
cache) < model.py (the Llama class); pretrained.py reads and writes HF directories.
"""

from .block import LAYER_PARAM_NAMES, LlamaLayerCache, llama_layer_backward, llama_layer_forward
from .config import LlamaConfig
from .core import LlamaCache, init_params, llama_backward, llama_forward, llama_grads, param_shapes
from .generate import LlamaKVCache, forward_cached, generate
from .model import Llama

__all__ = [
    "LlamaConfig", "Llama", "LlamaCache", "LlamaKVCache", "LlamaLayerCache", "LAYER_PARAM_NAMES",
    "llama_forward", "llama_backward", "llama_grads", "llama_layer_forward", "llama_layer_backward",
    "param_shapes", "init_params", "forward_cached", "generate",
]
