#!/usr/bin/env python
"""GPT-2 encoding speed: npgpt's standard-library BPE against tiktoken (when installed), side by side.

    python benchmarks/bench_tokenizer.py                  # Tiny Shakespeare (1.1 MB), 3 runs each
    python benchmarks/bench_tokenizer.py --runs 5 --text some.txt

Each npgpt run starts from a fresh tokenizer (empty word cache; the compiled pattern is shared by the
process, so its one-time build, about 0.3 s, is timed separately).  tiktoken's Encoding is built from the
same local gpt2.tiktoken file.  Both run on one thread; printed: min-max seconds over the runs, MB/s, and
whether the ids are equal.  Target: npgpt <= 2 s for Tiny Shakespeare.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import _benchutil as bu

TIKTOKEN_FILE = os.path.join(bu.ROOT, "tests", "fixtures", "gpt2_tokenizer", "gpt2.tiktoken")
TIKTOKEN_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TARGET_S = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", default=None, help="text file (default: the bundled Tiny Shakespeare)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    bu.set_thread_env(1)
    bu.use_repo_npgpt()
    from npgpt.training.data import bundled_corpus_path
    from npgpt.tokenizers import BPETokenizer, load_tiktoken
    from npgpt.tokenizers.pattern import gpt2_regex

    path = args.text or str(bundled_corpus_path())
    with open(path, encoding="utf-8") as f:
        text = f.read()
    mb = len(text.encode("utf-8")) / 1e6
    t0 = time.perf_counter()
    base = load_tiktoken(TIKTOKEN_FILE)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    gpt2_regex(astral=False)
    t_pattern = time.perf_counter() - t0
    times, ids = [], None
    for _ in range(args.runs):
        tok = BPETokenizer.from_dict(base.to_dict())  # an empty cache every run
        t0 = time.perf_counter()
        ids = tok.encode_ordinary(text).tolist()
        times.append(time.perf_counter() - t0)
    print(f"text: {path} ({mb:.2f} MB, {len(ids or [])} GPT-2 tokens)")
    print(f"npgpt: load gpt2.tiktoken {t_load:.2f} s, pattern build {t_pattern:.2f} s (once per process)")
    print(f"{'':10s} {'min s':>7s} {'max s':>7s} {'MB/s':>7s}")
    print(f"{'npgpt':10s} {min(times):7.3f} {max(times):7.3f} {mb / min(times):7.2f}")
    verdict = "meets" if min(times) + t_pattern <= TARGET_S else "MISSES"
    if importlib.util.find_spec("tiktoken") is not None:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        enc = tiktoken.Encoding(name="gpt2_local", pat_str=TIKTOKEN_PATTERN,
                                mergeable_ranks=load_tiktoken_bpe(TIKTOKEN_FILE),
                                special_tokens={"<|endoftext|>": 50256})
        tt = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            ref = enc.encode_ordinary(text)
            tt.append(time.perf_counter() - t0)
        print(f"{'tiktoken':10s} {min(tt):7.3f} {max(tt):7.3f} {mb / min(tt):7.2f}   "
              f"(npgpt / tiktoken = {min(times) / min(tt):.1f}x)")
        print(f"ids equal: {ref == ids}")
    else:
        print("tiktoken: not installed")
    print(f"target: npgpt first encode incl. pattern build <= {TARGET_S} s: {verdict} "
          f"({min(times) + t_pattern:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
