#!/usr/bin/env python
"""Tokenizer speed, one core: npgpt's standard-library BPE, tiktoken and Hugging Face tokenizers side by side.

    taskset -c 0 python benchmarks/bench_tokenizer.py              # 6 inputs of 1 MB, 3 rounds, GPT-2's pattern
    python benchmarks/bench_tokenizer.py --runs 5 --pattern o200k    # another pre-tokenizer, GPT-2's ranks
    python benchmarks/bench_tokenizer.py --inputs english mixed --time wall

Every measurement is a fresh process that builds a fresh tokenizer (empty cache) from the same GPT-2 ranks
(tests/fixtures/gpt2_tokenizer/gpt2.tiktoken), reads its input and times one encode of it; the order of
(tokenizer, input) pairs is rotated every round.  Inputs, 1 MB each: English (Tiny Shakespeare), mixed
Unicode (a seeded mix of Latin, accented, Cyrillic, Greek, CJK, Hangul, Arabic, Hebrew, Devanagari, Thai,
emoji with ZWJ and skin tones, math letters, digits, punctuation), and 1 MB of one letter, of spaces, of
digits, of one emoji.  Printed: min-max CPU seconds (--time wall for wall-clock; the host is shared, and CPU
time is what a busy host leaves comparable), npgpt / tiktoken, npgpt against its own English time, and
whether the ids of the three agree.  Targets (docs/tokenizers.md): npgpt <= 2x tiktoken on English and
mixed, and no input over 3x npgpt's English.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time

import _benchutil as bu

TIKTOKEN_FILE = os.path.join(bu.ROOT, "tests", "fixtures", "gpt2_tokenizer", "gpt2.tiktoken")
INPUTS = ("english", "mixed", "letter", "spaces", "digits", "emoji")
IMPLS = ("npgpt", "tiktoken", "hf")
MB = 1_000_000


def make_text(name: str) -> str:
    """The 1 MB input `name` (deterministic)."""
    if name == "english":
        with open(os.path.join(bu.ROOT, "npgpt", "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
            return f.read(MB)
    if name == "mixed":
        rng = random.Random(41)
        words = ["the", "and", "naïve", "café", "Ünïcödé", "Москва", "привет", "ελληνικά", "東京", "日本語です",
                 "中文字符", "한국어", "مرحبا", "שלום", "हिन्दी", "ไทย", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "𝐀𝐁𝐂",
                 "123", "4567", "3.14", "ǅ", "e\u0301", "!?", "—", "«»", "(x)", "don't", "I'M"]
        seps = [" ", " ", " ", "\n", ", ", ". ", "\t", "  "]
        parts, n = [], 0
        while n < MB:
            w = rng.choice(words) + rng.choice(seps)
            parts.append(w)
            n += len(w.encode("utf-8"))
        return "".join(parts)
    one = {"letter": "a", "spaces": " ", "digits": "7", "emoji": "😀"}[name]
    return one * (MB // len(one.encode("utf-8")))


def child(impl: str, name: str, pattern: str) -> dict:
    """Build a fresh tokenizer, time one encode of the input; {"cpu": s, "wall": s, "n": ids, "digest": ...}."""
    bu.use_repo_npgpt()
    from npgpt.tokenizers.pretokenizers import HF_PATTERNS

    text = make_text(name)
    pat = HF_PATTERNS[pattern]
    if impl == "npgpt":
        from npgpt.tokenizers import BPETokenizer, load_tiktoken

        base = load_tiktoken(TIKTOKEN_FILE)
        tok = BPETokenizer(base.encoder, base.merges, base.special_tokens, pattern=pat)
        run = lambda: tok.encode_ordinary(text).tolist()  # noqa: E731
    elif impl == "tiktoken":
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        enc = tiktoken.Encoding(name="gpt2_local", pat_str=pat, mergeable_ranks=load_tiktoken_bpe(TIKTOKEN_FILE),
                                special_tokens={})
        run = lambda: enc.encode_ordinary(text)  # noqa: E731
    else:
        import tempfile

        import tokenizers
        from tokenizers.models import BPE
        from tokenizers.pre_tokenizers import ByteLevel, Sequence, Split

        from npgpt.tokenizers import load_tiktoken, save_tokenizer

        with tempfile.TemporaryDirectory() as d:
            save_tokenizer(load_tiktoken(TIKTOKEN_FILE), d)
            t = tokenizers.Tokenizer(BPE.from_file(f"{d}/vocab.json", f"{d}/merges.txt"))
        t.pre_tokenizer = Sequence([Split(tokenizers.Regex(pat), behavior="isolated"),
                                    ByteLevel(add_prefix_space=False, use_regex=False)])
        run = lambda: t.encode(text).ids  # noqa: E731
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        ids = run()
    except BaseException as e:  # tiktoken panics (a Rust stack overflow) on some long runs
        return {"error": f"{type(e).__name__}: {str(e)[:60]}"}
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    return {"cpu": cpu, "wall": wall, "n": len(ids), "digest": digest}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds (each a fresh process per tokenizer and input)")
    ap.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    ap.add_argument("--pattern", default="gpt2", help="a name in npgpt.tokenizers.pretokenizers.HF_PATTERNS")
    ap.add_argument("--time", default="cpu", choices=("cpu", "wall"))
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "INPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        bu.set_thread_env(1)
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        print(json.dumps(child(args.child[0], args.child[1], args.pattern)))
        return 0
    impls = [i for i in IMPLS if i == "npgpt" or importlib.util.find_spec("tokenizers" if i == "hf" else i)]
    env = bu.set_thread_env(1, dict(os.environ))
    env.update(RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    pairs = [(i, n) for n in args.inputs for i in impls]
    got: dict[tuple[str, str], list[dict]] = {p: [] for p in pairs}
    for r in range(args.runs):
        k = r % len(pairs)
        for impl, name in pairs[k:] + pairs[:k]:  # rotated: no pair always runs first or last
            out = subprocess.run([sys.executable, __file__, "--child", impl, name, "--pattern", args.pattern],
                                 env=env, capture_output=True, text=True, check=True)
            got[(impl, name)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    key = args.time
    print(f"bench_tokenizer: GPT-2 ranks, pattern {args.pattern!r}, {args.runs} fresh processes per cell, "
          f"{key} seconds min-max; host: {bu.cpu_model()}, affinity {sorted(os.sched_getaffinity(0))}")
    head = "".join(f"{i:>18s}" for i in impls)
    print(f"{'input (1 MB)':14s}{head}  {'npgpt/tiktoken':>15s}  {'npgpt/english':>14s}  ids")
    eng = min(x[key] for x in got[("npgpt", "english")]) if ("npgpt", "english") in got else None
    for name in args.inputs:
        cells, best = [], {}
        for i in impls:
            ts = [x[key] for x in got[(i, name)] if "error" not in x]
            if not ts:
                cells.append(f"{'fails':>17s} ")
                continue
            best[i] = min(ts)
            cells.append(f"{min(ts):8.3f}-{max(ts):<8.3f} ")
        ratio = f"{best['npgpt'] / best['tiktoken']:.2f}x" if "tiktoken" in best else "-"
        own = f"{best['npgpt'] / eng:.2f}x" if eng else "-"
        digests = {x["digest"] for i in impls for x in got[(i, name)][:1] if "error" not in x}
        print(f"{name:14s}{''.join(cells)}  {ratio:>15s}  {own:>14s}  {'equal' if len(digests) == 1 else 'DIFFER'}")
    for (i, name), xs in got.items():
        for x in xs[:1]:
            if "error" in x:
                print(f"  {i} on {name}: {x['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
