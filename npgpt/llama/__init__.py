"""A Llama-style model family (RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases) built from the
layer pairs, with parameters keyed by Hugging Face's LlamaForCausalLM names.  Walkthrough: docs/llama.md"""

from .block import LAYER_PARAM_NAMES, LlamaLayerCache, llama_layer_backward, llama_layer_forward
from .config import LlamaConfig
from .model import (
    Llama,
    LlamaCache,
    LlamaKVCache,
    forward_cached,
    generate,
    init_params,
    llama_backward,
    llama_forward,
    param_shapes,
)

__all__ = [
    "LAYER_PARAM_NAMES",
    "Llama",
    "LlamaCache",
    "LlamaConfig",
    "LlamaKVCache",
    "LlamaLayerCache",
    "forward_cached",
    "generate",
    "init_params",
    "llama_backward",
    "llama_forward",
    "llama_layer_backward",
    "llama_layer_forward",
    "param_shapes",
]
