"""Named pre-tokenizer patterns: every `pre` name llama.cpp knows, and the Split patterns of common tokenizer.json
files, with split_with (several patterns applied in sequence, as llama.cpp and a Sequence of Splits do).

    split_with(LLAMA_CPP_PRE["deepseek-v3"], "Hello 12345 世界")   # ['Hello', ' ', '123', '45', ' ', '世界']

LLAMA_CPP_PRE follows llama.cpp's src/llama-vocab.cpp (ggml-org/llama.cpp, 2026): the regex list its BPE
tokenizer applies for each `tokenizer.ggml.pre` name.  Where llama.cpp rewrote a tokenizer.json pattern for
std::regex and kept the original in a comment, the original is used here (llama.cpp's own code for those
patterns implements the original's meaning, e.g. (?i:'s|...) through unicode_tolower).  Two names have no
regex in llama.cpp, only C++: kimi-k2 (the Kimi K2 pattern, whose class intersections `&&[^\\p{Han}]` are
written as lookaheads here) and afmoe's digit rule (digits grouped in threes from the right, as a lookahead).
Guide: docs/tokenizers.md
"""

from __future__ import annotations

from collections.abc import Sequence

from .pattern import GPT2_PATTERN, compile_pattern

__all__ = ["LLAMA_CPP_PRE", "HF_PATTERNS", "LLAMA_CPP_TEXT_FLAGS", "split_with"]

_C = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"  # the case-insensitive contractions
_C_ADAPTED = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"  # llama.cpp's spelling of the same
_UP = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LO = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"

LLAMA3 = _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = _C + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
O200K = "|".join([
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UP}*{_LO}+{_C}?",
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UP}+{_LO}*{_C}?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
TEKKEN = "|".join([
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UP}*{_LO}+", rf"[^\r\n\p{{L}}\p{{N}}]?{_UP}+{_LO}*",
    r"\p{N}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
GPT2_LLAMA_CPP = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"  # no final |\s+
CL100K = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"
          r"|\s*[\r\n]|\s+(?!\S)|\s")
R50K = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"
_NOHAN_UP = r"(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])"
_NOHAN_LO = r"(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])"
KIMI_K2 = "|".join([
    r"[\p{Han}]+",
    rf"[^\r\n\p{{L}}\p{{N}}]?{_NOHAN_UP}*{_NOHAN_LO}+{_C}?",
    rf"[^\r\n\p{{L}}\p{{N}}]?{_NOHAN_UP}+{_NOHAN_LO}*{_C}?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
DEEPSEEK_V3 = (
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
)
STARCODER = (r"\p{N}", GPT2_LLAMA_CPP)
FINNISH = r" ?[^(\s|.,!?…。，、।۔،)]+"
SPM_LINES = r"[^\n]+|[\n]+"  # gemma4 / sarvam: SentencePiece-style BPE, only newlines are split off

_PRE_GROUPS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("default", ""), (r"[\p{P}\$\+<=>\^~\|]+", GPT2_LLAMA_CPP, r"\p{N}+", r"[0-9][0-9][0-9]")),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
      "dbrx", "smaug-bpe", "glm4", "chatglm-bpe"), (LLAMA3,)),
    (("jais-2",), (_C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                   + "".join(rf"|\s{{{n}}}(?!\S)" for n in (512, 256, 128, 64, 32, 16, 8, 4))
                   + r"|\s{1,2}(?!\S)|\s{1}",)),
    (("deepseek-llm",), (
        "[\r\n]",
        r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌ"
        r"ῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲"
        r"𑢠-𑣟𞤀-𞥃]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}+")),
    (("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"), DEEPSEEK_V3),
    (("spark2_5",), (
        r"\p{N}{1,3}",
        r"[一-龥぀-ゟ゠-ヿ]+",
        r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+"
        r"|[\r\n]|\s+(?!\S)|\s+",
        r"\p{N}")),
    (("youtu",), (
        r"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
        rf"[^\r\n\p{{L}}\p{{N}}]?{_UP}*{_LO}+{_C_ADAPTED}?|[^\r\n\p{{L}}\p{{N}}]?{_UP}+{_LO}*{_C_ADAPTED}?"
        r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")),
    (("deepseek-coder",), ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}")),
    (("falcon",), (r"[\p{P}\$\+<=>\^~\|`]+", GPT2_LLAMA_CPP, r"[0-9][0-9][0-9]")),
    (("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"), STARCODER),
    (("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
      "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion",
      "granite-docling"), (GPT2_LLAMA_CPP,)),
    (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"), (QWEN2,)),
    (("qwen35",), (QWEN35,)),
    (("poro-chat", "bloom", "gpt3-finnish"), (FINNISH,)),
    (("viking",), (FINNISH, r"\p{N}")),
    (("tekken",), (TEKKEN,)),
    (("chameleon",), (
        r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )", r"\p{N}",
        r"[\p{P}!-/:-@\[-`{-~]", GPT2_LLAMA_CPP)),
    (("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), (O200K,)),
    (("granite-embed-multi-97m",), (
        r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+" + _C_ADAPTED
        + r"?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*" + _C_ADAPTED
        + r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    (("tiny_aya", "cohere2moe"), (r"\d{1,3}(?=(?:\d{3})*\b)", O200K)),
    (("kimi-k2",), (KIMI_K2,)),
    (("superbpe",), (r"\p{N}+", r"(?=(\d{3})+(?!\d))")),
    (("bailingmoe", "bailingmoe2", "llada-moe"), (
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",)),
    (("seed-coder",), (
        _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    (("ufakzeka",), (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    (("grok-2",), (QWEN2,)),
    (("afmoe",), (
        r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))",
        r"[一-鿿㐀-䶿\uf900-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
        DEEPSEEK_V3[2])),
    (("laguna",), (SPM_LINES, QWEN2.replace(_C, _C_ADAPTED))),
    (("exaone-moe",), (
        _C + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]"
        r"|\s+(?!\S)|\s+",)),
    (("gemma4", "granite-embed-multi-311m", "sarvam-moe"), (SPM_LINES,)),
    (("minicpm5",), (r"\p{N}{1,3}", _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                                         r"|\s+(?!\S)|\s+")),
    (("whitespace",), (r"\S+",)),
]

# every `tokenizer.ggml.pre` name llama.cpp accepts -> the patterns its BPE tokenizer applies, in order
LLAMA_CPP_PRE: dict[str, tuple[str, ...]] = {name: pats for names, pats in _PRE_GROUPS for name in names}

# what else llama.cpp does for a `pre` name, beyond the patterns (from the same switch in llama-vocab.cpp):
# ignore_merges (a piece that is a whole token is that token), no_byte_encode (raw UTF-8 pieces, SentencePiece
# style, spaces escaped as U+2581), drop_whitespace (the whitespace pre-tokenizer drops it), add_bos default.
LLAMA_CPP_TEXT_FLAGS: dict[str, frozenset[str]] = {
    **{n: frozenset({"ignore_merges", "add_bos"}) for n in _PRE_GROUPS[1][0][:9]},
    "tekken": frozenset({"ignore_merges", "add_bos"}),
    "chameleon": frozenset({"add_bos"}),
    "minicpm5": frozenset({"ignore_merges"}),
    "youtu": frozenset({"ignore_merges"}),
    "granite-embed-multi-97m": frozenset({"ignore_merges"}),
    "gemma4": frozenset({"no_byte_encode", "escape_whitespace", "add_bos"}),
    "granite-embed-multi-311m": frozenset({"no_byte_encode", "escape_whitespace", "add_bos"}),
    "sarvam-moe": frozenset({"no_byte_encode", "escape_whitespace"}),
    "whitespace": frozenset({"no_byte_encode", "drop_whitespace"}),
}

# the Split patterns of common tokenizer.json / tiktoken files, by a short name
HF_PATTERNS: dict[str, str] = {
    "gpt2": GPT2_PATTERN,
    "r50k": R50K,  # tiktoken 0.14's spelling of GPT-2's (possessive; the same pieces)
    "cl100k": CL100K,  # tiktoken 0.14's cl100k_base
    "llama3": LLAMA3,  # Llama 3's tokenizer.json: cl100k in the older, non-possessive spelling
    "o200k": O200K,  # tiktoken's o200k_base, Llama 4, GPT-4o style
    "qwen2": QWEN2,  # Qwen2 / Qwen2.5 / Qwen3
    "qwen35": QWEN35,
    "tekken": TEKKEN,  # Mistral's Tekken
    "kimi-k2": KIMI_K2,
    "deepseek-v3-digits": DEEPSEEK_V3[0],
    "deepseek-v3-cjk": DEEPSEEK_V3[1],
    "deepseek-v3": DEEPSEEK_V3[2],
}


def split_with(patterns: str | Sequence[str], text: str) -> list[str]:
    """text cut by each pattern in turn: every piece so far is cut into the pattern's matches and the stretches
    between them (empty pieces dropped), as llama.cpp's unicode_regex_split and a Sequence of Hugging Face
    `Split(behavior="isolated")` do.  One pattern whose matches tile the text gives exactly its findall."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    pieces = [text] if text else []
    for source in patterns:
        pat = compile_pattern(source)
        out: list[str] = []
        for piece in pieces:
            start = 0
            for a, b in pat.spans(piece):
                if a > start:
                    out.append(piece[start:a])
                if b > a:
                    out.append(piece[a:b])
                start = b
            if start < len(piece):
                out.append(piece[start:])
        pieces = out
    return pieces
