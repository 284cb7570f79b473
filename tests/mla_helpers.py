"""Shared by tests/test_mla.py and tests/test_mla_absorbed.py: drawn MLA configs, parameters and RoPE tables."""

import math

import numpy as np
from helpers import rand
from hypothesis import strategies as st

from npgpt.layers.mla import MLAConfig, mla_param_shapes
from npgpt.layers.rope import rope_inv_freq, rope_tables

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "mscale": 1.0, "mscale_all_dim": 0.8,
        "original_max_position_embeddings": 64}


@st.composite
def configs(draw, min_rank=1):
    """Small MLA shapes: every rank and head size drawn separately, query latent or not, biases or not."""
    return MLAConfig(
        n_embd=draw(st.integers(2, 6)), n_head=draw(st.integers(1, 3)),
        kv_lora_rank=draw(st.integers(min_rank, 4)), qk_nope_head_dim=draw(st.integers(1, 3)),
        qk_rope_head_dim=draw(st.sampled_from([2, 4])), v_head_dim=draw(st.integers(1, 4)),
        q_lora_rank=draw(st.one_of(st.none(), st.integers(min_rank, 4))), attention_bias=draw(st.booleans()),
        rope_interleave=draw(st.booleans()), rope_scaling=draw(st.sampled_from([None, YARN])))


def make_params(rng, config, dtype=np.float64):
    """Non-degenerate parameters: O(1) activations, norm weights near but not at 1, nonzero biases."""
    p = {}
    for name, shape in mla_param_shapes(config).items():
        if name.endswith("layernorm.weight"):
            p[name] = 1.0 + 0.3 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            p[name] = rand(rng, *shape, scale=0.3)
        else:
            p[name] = rand(rng, *shape, scale=1.3 / math.sqrt(shape[1]))
    return {k: v.astype(dtype) for k, v in p.items()}


def make_tables(rng, config, T, offset=None, dtype=np.float64):
    """cos, sin (T, R/2) of positions offset .. offset + T - 1, times an attention factor like YaRN's."""
    offset = int(rng.integers(0, 50)) if offset is None else offset
    cos, sin = rope_tables(np.arange(offset, offset + T), rope_inv_freq(config.qk_rope_head_dim, 100.0), dtype)
    af = 1.0 if config.rope_scaling is None else 1.025
    return cos * af, sin * af
