"""Train a byte-level BPE on a text: GPT-2's pre-tokenizer, then repeatedly merge the most frequent pair.

    tok = train_bpe(text, vocab_size=512)          # 256 byte tokens + 256 merges (+ special tokens)
    save_tokenizer(tok, "out/tok")                  # vocab.json + merges.txt: tokenizers/transformers load it

The text is cut by GPT2_PATTERN and pieces never merge across a cut (as minbpe's RegexTokenizer).  Each step
merges the pair of adjacent tokens with the highest count over all pieces (each piece weighted by how often
it occurs); ties go to the pair that is smallest as (left id, right id).  Token ids: byte b is id b, merge k
makes id 256 + k, special tokens come last.  Guide: docs/tokenizers.md
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from .bpe import CHUNK, BPETokenizer, _chunks
from .byte_unicode import bytes_to_unicode
from .pattern import split_gpt2
from .._checks import is_py_int


def train_bpe(text: str, vocab_size: int, special_tokens: Sequence[str] = (),
              progress: Callable[[int, int], None] | None = None) -> BPETokenizer:
    """A BPETokenizer with vocab_size ids (256 bytes + vocab_size - 256 - len(special_tokens) merges +
    the special tokens).  Stops early (a smaller vocabulary) when no pair occurs twice any more.
    progress(merges done, merges wanted) is called every 64 merges."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    specials = list(dict.fromkeys(special_tokens))
    if not is_py_int(vocab_size) or vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size: expected an integer >= {256 + len(specials)} (256 bytes"
                         f"{' + the special tokens' if specials else ''}), got {vocab_size!r}")
    n_merges = vocab_size - 256 - len(specials)
    # unique pieces as lists of ids, with their counts
    counts: Counter[str] = Counter()
    for chunk in _chunks(text, CHUNK):  # chunked: never a list of every piece of a large text
        counts.update(split_gpt2(chunk))
    words: list[list[int]] = [list(p.encode("utf-8")) for p in counts]
    freq: list[int] = list(counts.values())
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> the words it occurs in
    for w, (ids, f) in enumerate(zip(words, freq)):
        for pair in zip(ids, ids[1:]):
            pair_count[pair] += f
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the count changed since it was pushed
        if -neg < 2:
            break  # nothing repeats: further merges would only memorise single pieces
        new_id = 256 + len(merges)
        merges.append(pair)
        token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
        changed: set[tuple[int, int]] = set()
        for w in sorted(where.pop(pair)):
            ids, f = words[w], freq[w]
            for p in zip(ids, ids[1:]):  # take this word's pairs out ...
                pair_count[p] -= f
                changed.add(p)
            merged: list[int] = []
            i = 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            words[w] = merged
            for p in zip(merged, merged[1:]):  # ... and put the merged word's pairs back
                pair_count[p] += f
                where[p].add(w)
                changed.add(p)
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)
        if progress is not None and len(merges) % 64 == 0:
            progress(len(merges), n_merges)
    return _as_tokenizer(token_bytes, merges, specials)


def _as_tokenizer(token_bytes: list[bytes], merges: list[tuple[int, int]], specials: list[str]) -> BPETokenizer:
    """Ids -> the byte-level strings of vocab.json.  Two merges can make the same bytes (different splits
    of one string in different pieces): the later one keeps the merge but reuses the first token's id."""
    table = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(table[x] for x in b)

    vocab: dict[str, int] = {}
    id_of: list[int] = []  # training id -> final id
    for b in token_bytes:
        s = spell(b)
        if s not in vocab:
            vocab[s] = len(vocab)
        id_of.append(vocab[s])
    rev = {i: s for s, i in vocab.items()}
    merge_pairs = [(rev[id_of[a]], rev[id_of[b]]) for a, b in merges]
    special_ids = {t: len(vocab) + k for k, t in enumerate(specials)}
    return BPETokenizer(vocab, list(dict.fromkeys(merge_pairs)), special_ids, where="train_bpe")
