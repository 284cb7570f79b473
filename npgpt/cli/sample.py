"""`npgpt sample`: text from a training checkpoint or a Hugging Face directory, streamed token by token.

Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from ..tokenizers import CharTokenizer, TextStream, encode_text, start_token
from .load import load_model_and_tokenizer



def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default="out/ckpt.npz", metavar="CHECKPOINT_OR_DIR",
                   help="a training checkpoint (default: out/ckpt.npz, the latest; out/best.npz is the best) or a "
                        "Hugging Face directory of any supported family")
    p.add_argument("--prompt", default=None,
                   help="text to continue (default: a newline, or the first token when the vocabulary has none)")
    p.add_argument("--num-samples", type=int, default=3, help="independent samples (default: 3)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate each (default: 500)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divide the logits by this; 0 picks the most likely token (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.epilog = "Docs: docs/training.md"


def _run_sample(a: argparse.Namespace) -> int:
    _check_sample_args(a)
    model, tok = load_model_and_tokenizer(a.ckpt, sampling=True)  # every id the model can draw must decode
    if a.prompt is None:  # no --prompt: one start token, not printed (as train's closing sample)
        prompt, skip = np.array([start_token(tok)], dtype=np.int64), 1  # (1,)
    else:
        where = tok.unknown(a.prompt) if isinstance(tok, CharTokenizer) else None
        if where:  # a character vocabulary: every unknown character at once
            raise ValueError(f"prompt: characters not in the checkpoint's vocabulary: {where}")
        prompt, skip = np.asarray(encode_text(tok, a.prompt), dtype=np.int64), 0  # (T,) special tokens' text too
    idx = np.tile(prompt, (a.num_samples, 1))  # (N, T): every sample starts from the prompt
    stream = TextStream(tok) if a.num_samples == 1 else None  # one sample: each token printed as it is drawn
    if stream is not None:
        print("---------- sample 1/1 ----------")
        stream.write(prompt[skip:])
    out = model.generate(idx, a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                         rng=np.random.default_rng(a.seed),
                         on_token=None if stream is None else stream.write,
                         vocab_limit=tok.vocab_size)  # (N, T + max_new_tokens): only ids the tokenizer has
    if stream is not None:
        stream.close()
    else:
        for i in range(a.num_samples):
            print(f"---------- sample {i + 1}/{a.num_samples} ----------")
            print(tok.decode(out[i, skip:]))
    print("-" * 36)
    return 0




def _check_sample_args(a: argparse.Namespace) -> None:
    if a.num_samples < 1:
        raise ValueError(f"--num-samples: expected a positive integer, got {a.num_samples}")
    if a.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens: expected an integer >= 0, got {a.max_new_tokens}")
    if not (math.isfinite(a.temperature) and a.temperature >= 0):
        raise ValueError(f"--temperature: expected a finite number >= 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise ValueError(f"--top-k: expected a positive integer, got {a.top_k}")
    if a.top_p is not None and not 0.0 < a.top_p <= 1.0:
        raise ValueError(f"--top-p: expected a number in (0, 1], got {a.top_p}")
    if a.prompt is not None and not a.prompt:
        raise ValueError("--prompt: expected at least one character")
    if a.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {a.seed}")
