"""A plain-eager PyTorch GPT-2, built to match npgpt's architecture exactly, as the benchmarks' reference.

Architecture (the same as npgpt.GPT):
    x = wte[idx] + wpe[:T]                                  learned token and position embeddings
    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))            pre-LN blocks, n_layer of them
    logits = ln_f(x) @ wte.T                                LM head tied to wte, no bias
    attn: c_attn (C -> 3C, columns [q | k | v]), heads of size D = C / H, causal softmax(q k^T / sqrt(D)) v,
          c_proj (C -> C);  mlp: c_fc (C -> 4C), tanh GELU, c_proj (4C -> C);  biases everywhere, LayerNorm
          eps 1e-5, no dropout.
Init (GPT-2): weights and embeddings ~ N(0, 0.02), the two residual projections ~ N(0, 0.02 / sqrt(2 n_layer)),
biases 0, LayerNorm weight 1 / bias 0.

Attention has two formulations: "manual" (q @ k^T, additive causal mask, softmax, @ v: the same arithmetic
npgpt does) and "sdpa" (F.scaled_dot_product_attention(is_causal=True), PyTorch's fused kernel).
compile_model wraps either in torch.compile (inductor).

Parameter names follow npgpt's keys ("h.0.attn.c_attn.weight", ...) so copy_from_npgpt can map one onto the
other.  npgpt stores linear weights as (in, out); nn.Linear stores (out, in), so they are transposed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, attention: str) -> None:
        super().__init__()
        if attention not in ("manual", "sdpa"):
            raise ValueError(f"attention: expected 'manual' or 'sdpa', got {attention!r}")
        self.n_head, self.attention = n_head, attention
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """mask: (T, T) additive causal mask for "manual" attention (unused by "sdpa")."""
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, H, T, T)
            att = att + mask
            att = F.softmax(att, dim=-1)
            y = att @ v  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # merge heads
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, attention: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head, attention)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 attention: str = "manual", seed: int = 0) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, attention) for _ in range(n_layer))
        mask = None  # one (block_size, block_size) mask shared by every layer for "manual"; sdpa needs none
        if attention == "manual":
            mask = torch.full((block_size, block_size), float("-inf")).triu(1)  # 0 on and below the diagonal
        self.register_buffer("mask", mask, persistent=False)
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self._init_weights(n_layer, seed)

    @torch.no_grad()
    def _init_weights(self, n_layer: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, proj_std if name.endswith("c_proj.weight") else 0.02, generator=g)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size={self.block_size}")
        x = self.wte(idx) + self.wpe.weight[:T]  # (B, T, C)
        mask = None if self.mask is None else self.mask[:T, :T]  # (T, T)
        for block in self.h:
            x = block(x, mask)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)  # (B, T, V) tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def make_optimizer(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                   eps: float = 1e-8, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D parameters only (the matrices and embeddings, as npgpt does);
    `foreach` left at PyTorch's default."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, idx: torch.Tensor, targets: torch.Tensor,
               max_norm: float | None = None, forward: nn.Module | None = None) -> torch.Tensor:
    """One step: forward, backward, global-norm clip to max_norm (skipped when None), AdamW; returns the loss
    (before the update).  forward: what computes (logits, loss), e.g. compile_model(model); default model."""
    opt.zero_grad(set_to_none=True)
    _, loss = (model if forward is None else forward)(idx, targets)
    loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    return loss


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile with the inductor backend, default mode: the forward and the loss become one graph, and
    AOTAutograd traces the matching backward graph, which inductor compiles too (loss.backward() runs it).
    The optimizer is not compiled.  Compilation happens on the first call."""
    return torch.compile(model, backend="inductor")


def _is_linear_weight(name: str) -> bool:
    return name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


@torch.no_grad()
def copy_from_npgpt(model: TorchGPT, params: Mapping[str, object]) -> None:
    """Load npgpt's parameter dict (numpy arrays keyed like this model's parameters) into the model.
    Linear weights go from npgpt's (in, out) to nn.Linear's (out, in)."""
    own = dict(model.named_parameters())
    if set(own) != set(params):
        raise ValueError(f"parameter names differ: only in torch {sorted(set(own) - set(params))}, "
                         f"only in npgpt {sorted(set(params) - set(own))}")
    for name, p in own.items():
        src = torch.from_numpy(params[name].copy())
        if _is_linear_weight(name):
            src = src.T
        if tuple(src.shape) != tuple(p.shape):
            raise ValueError(f"{name}: npgpt shape {tuple(src.shape)} does not fit torch shape {tuple(p.shape)}")
        p.copy_(src)


def to_npgpt_layout(name: str, t: torch.Tensor) -> object:
    """A torch parameter or gradient as a numpy array in npgpt's layout (linear weights transposed back)."""
    a = t.detach()
    if _is_linear_weight(name):
        a = a.T
    return a.contiguous().numpy()
