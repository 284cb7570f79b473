"""GPT-2 as a model family: learned positions, LayerNorm with biases, GELU MLP, a head tied to the embedding.

config.py (GPTConfig) < block.py (one transformer block) < core.py (the functional model a learner reads top to
bottom) < decode.py (the one-token step) < generate.py (KV cache) < model.py (the GPT class, on the runtime)
< pretrained.py (Hugging Face GPT-2 directories) < llmc.py (llm.c's files).  Walkthrough: docs/model.md
"""

from ..layers.registry import Pair
from .block import BLOCK_PARAM_NAMES, BlockCache, block_backward, block_forward
from .config import GPTConfig
from .core import GPTCache, gpt_backward, gpt_forward, gpt_grads, init_params, param_shapes
from .generate import KVCache, decode_step, forward_cached, generate
from .model import GPT

# the family's composite pair, for the seeded-error check (layers/registry.py)
PAIRS: tuple[Pair, ...] = (
    Pair("block", "block_forward", "block_backward", ("dx", *(f"d[{n}]" for n in BLOCK_PARAM_NAMES)),
         module="npgpt.gpt2.block"),
)

__all__ = [
    "GPTConfig", "GPT", "GPTCache", "gpt_forward", "gpt_backward", "gpt_grads", "param_shapes", "init_params",
    "block_forward", "block_backward", "BlockCache", "BLOCK_PARAM_NAMES",
    "KVCache", "forward_cached", "decode_step", "generate", "PAIRS",
]
