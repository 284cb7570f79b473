"""How much memory a training run will take, estimated before anything is allocated, and how much there is.

    need = training_bytes(n_params, n_layer, n_head, n_embd, block_size, vocab_size, batch_size, grad_accum)
    have = available_bytes()          # None where it cannot be read (not Linux)

The estimate (float32, 4 bytes a number), measured against peak RSS on the tiny, default and "baby" configs:
    parameters, their gradients, AdamW's m and v, its transient scratch, and the checkpoint's copy: 6 P
    (+1 P for the gradient accumulator when grad_accum > 1)
    the activations a forward keeps for backward, per token: n_layer (34 C + 3 H K) + 4 V + 4 C, and as much
    again for the backward's temporaries of the widest layer (with 3 H min(T, 64) for its attention: the
    backward holds one chunk's arrays at a time) and the logits.  K is the keys a query's rows of the attention
    arrays hold: T for one dense call, about T/2 once the queries run in chunks of 64 (T > 64).
Guide: docs/training.md ("Bad input")
"""

from __future__ import annotations

import os
from pathlib import Path

from ..layers.self_attention import QUERY_CHUNK

BYTES = 4  # float32


def keys_per_query(T: int) -> float:
    """K: the mean number of keys in a query's rows of the attention arrays (scores, probabilities), T for one
    dense call; by chunks of QUERY_CHUNK queries, chunk [a, b) holds b keys per row (attention_chunks.py)."""
    if T <= QUERY_CHUNK:
        return float(T)
    return sum((min(a + QUERY_CHUNK, T) - a) * min(a + QUERY_CHUNK, T) for a in range(0, T, QUERY_CHUNK)) / T


def training_bytes(n_params: int, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int,
                   batch_size: int, grad_accum: int = 1) -> int:
    """Estimated peak bytes of a float32 training step of this configuration (see the module docstring)."""
    state = (6 + (1 if grad_accum > 1 else 0)) * n_params
    tokens = batch_size * block_size
    per_token_layer = 34 * n_embd + round(3 * n_head * keys_per_query(block_size))
    kept = tokens * (n_layer * per_token_layer + 4 * vocab_size + 4 * n_embd)
    widest = 34 * n_embd + 3 * n_head * min(block_size, QUERY_CHUNK)  # one chunk's attention arrays at a time
    transient = tokens * (widest + 3 * vocab_size)
    return BYTES * (state + kept + transient)


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable of /proc/meminfo, lowered to the cgroup's limit minus
    its usage when one is set.  None when neither can be read."""
    have: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                have = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2, then v1
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = Path("/sys/fs/cgroup", limit_file).read_text().strip()
            usage = int(Path("/sys/fs/cgroup", usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < (1 << 60):
            room = max(0, int(limit) - usage)
            have = room if have is None else min(have, room)
        break
    override = os.environ.get("NPGPT_AVAILABLE_MEMORY")  # for tests and for users who know better
    if override:
        try:
            return int(float(override))
        except ValueError:
            pass
    return have
