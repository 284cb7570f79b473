"""npgpt: GPTs in pure NumPy with hand-written, finite-difference-checked backpropagation.

Layers: every forward/backward pair, as npgpt.<name> or npgpt.layers.<name>.
Families: GPTConfig, GPT, gpt_forward, gpt_backward (all of GPT-2: npgpt.gpt2); LlamaConfig, Llama (npgpt.llama);
from_pretrained / save_pretrained read and write a Hugging Face directory of any family (npgpt.families).
Training: AdamW, clip_grad_norm, cosine_lr.  Testing other code against npgpt: `npgpt.gradcheck`.
The public API and its conventions: docs/oracle.md
"""

from . import families, gradcheck, layers
from .layers import *  # noqa: F403  every forward/backward pair and cache type, also as npgpt.<name>
from .layers import __all__ as _layer_names
from .gpt2.config import GPTConfig
from .gpt2.generate import KVCache, decode_step, forward_cached, generate
from .sampling import sample_next, top_k_filter, top_p_filter
from .gradcheck import check_layer, numerical_gradient, relative_error
from .gpt2.block import BLOCK_PARAM_NAMES, BlockCache, block_backward, block_forward
from .gpt2.core import GPTCache, gpt_backward, gpt_forward, gpt_grads, init_params, param_shapes
from .runtime.layout import FlatTensors, ParamLayout
from .llama import Llama, LlamaConfig
from .gpt2.model import GPT
from .optim import AdamW, clip_grad_norm, cosine_lr
from .families import from_pretrained, save_pretrained
from .io.safetensors import load_safetensors, save_safetensors

from ._version import __version__ as __version__

__all__ = [
    "layers", "gradcheck", "families",
    "GPTConfig", "GPT", "GPTCache", "gpt_forward", "gpt_backward", "gpt_grads", "param_shapes", "init_params",
    "block_forward", "block_backward", "BlockCache", "BLOCK_PARAM_NAMES",
    "ParamLayout", "FlatTensors",
    "LlamaConfig", "Llama",
    "AdamW", "clip_grad_norm", "cosine_lr",
    "from_pretrained", "save_pretrained", "load_safetensors", "save_safetensors",
    "generate", "sample_next", "top_k_filter", "top_p_filter", "KVCache", "forward_cached", "decode_step",
    "check_layer", "numerical_gradient", "relative_error",
    *_layer_names,
]
