"""npgpt: a pure-NumPy GPT (GPT-2 architecture) with hand-written, finite-difference-checked backpropagation.

Layers: every forward/backward pair, as npgpt.<name> or npgpt.layers.<name>.
Model: GPTConfig, GPT, gpt_forward, gpt_backward; the Llama family: LlamaConfig, Llama (all of it: npgpt.llama).
Training: AdamW, clip_grad_norm, cosine_lr.  Testing other code against npgpt: `npgpt.gradcheck`.
The public API and its conventions: docs/oracle.md
"""

from . import gradcheck, layers
from .layers import *  # noqa: F403  every forward/backward pair and cache type, also as npgpt.<name>
from .layers import __all__ as _layer_names
from .config import GPTConfig
from .generate import KVCache, decode_step, forward_cached, generate, sample_next, top_k_filter, top_p_filter
from .gradcheck import check_layer, numerical_gradient, relative_error
from .gpt import GPTCache, gpt_backward, gpt_forward, gpt_grads, init_params, param_shapes
from .layout import FlatTensors, ParamLayout
from .llama import Llama, LlamaConfig
from .model import GPT
from .optim import AdamW, clip_grad_norm, cosine_lr
from .pretrained import from_pretrained, save_pretrained
from .safetensors import load_safetensors, save_safetensors

__version__ = "0.1.0"

__all__ = [
    "layers", "gradcheck",
    "GPTConfig", "GPT", "GPTCache", "gpt_forward", "gpt_backward", "gpt_grads", "param_shapes", "init_params",
    "ParamLayout", "FlatTensors",
    "LlamaConfig", "Llama",
    "AdamW", "clip_grad_norm", "cosine_lr",
    "from_pretrained", "save_pretrained", "load_safetensors", "save_safetensors",
    "generate", "sample_next", "top_k_filter", "top_p_filter", "KVCache", "forward_cached", "decode_step",
    "check_layer", "numerical_gradient", "relative_error",
    *_layer_names,
]
