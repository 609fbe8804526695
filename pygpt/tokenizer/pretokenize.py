"""GPT-2 pre-tokenizer: a hand-written scanner, no regular-expression engine.

It reproduces exactly what ``regex.findall`` returns for GPT-2's pattern::

    '(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

Every character falls into exactly one of four classes:

    LETTER   Unicode general category L* (Lu Ll Lt Lm Lo).  Marks (M*) are NOT letters.
    NUMBER   general category N* (Nd, Nl, No).
    SPACE    the 25 code points with the Unicode White_Space property (``\\s`` in the
             regex module, tiktoken and the Rust regex crate).  This is not ``str.isspace``:
             U+001C..U+001F are "other" here.
    OTHER    everything else (punctuation, symbols, marks, controls, unassigned, surrogates).

How the alternatives play out at a position ``i`` (the regex tries them in order and every
character matches one of them, so nothing is ever skipped):

1. ``'`` followed by ``s d m t`` or ``ll ve re`` (ASCII apostrophe, lower case only) is a piece.
2.-4. An optional U+0020 (only that space) then a maximal run of one class among LETTER,
   NUMBER, OTHER.  A space is taken as prefix only when the next character is not SPACE.
   A run of OTHER swallows apostrophes, so ``"!'s"`` is ``["!'", "s"]``.
5. ``\\s+(?!\\S)``: the maximal whitespace run, backtracked until the next character is not a
   non-space.  At the end of the text that is the whole run; otherwise the run minus its last
   character (and it fails for a run of one character).  The left-over last character then
   starts the next piece: a U+0020 becomes the prefix of the following word (rule 2-4),
   any other whitespace character is a piece of its own (rule 6).
6. ``\\s+``: reached only for a single whitespace character (not U+0020) before a non-space.

So ``"a\\n\\n b"`` -> ``["a", "\\n\\n", " b"]`` and ``"a\\n\\nb"`` -> ``["a", "\\n", "\\n", "b"]``.

Unicode version: categories come from the standard library's ``unicodedata``
(``unicodedata.unidata_version``: 14.0.0 on Python 3.11).  tiktoken and the ``regex`` module
ship newer tables; the only code points on which they disagree are ones unassigned in 14.0
(letters and numbers added later, which are OTHER here).  For text made of code points
assigned in Unicode 14.0 the pieces are identical; ``tests/test_bpe_reference.py`` checks every
code point.
"""
from __future__ import annotations

import unicodedata

__all__ = ["pretokenize", "char_class", "LETTER", "NUMBER", "SPACE", "OTHER",
           "WHITE_SPACE", "UNICODE_VERSION", "GPT2_PATTERN"]

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
UNICODE_VERSION = unicodedata.unidata_version

LETTER, NUMBER, SPACE, OTHER = 0, 1, 2, 3

# The Unicode White_Space property (PropList.txt): 25 code points, stable since Unicode 6.3.
WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]       # TAB LF VT FF CR
    + ["\u0020", "\u0085", "\u00a0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]  # EN QUAD .. HAIR SPACE
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)
assert len(WHITE_SPACE) == 25

_CONTRACTION_1 = frozenset("sdmt")
_CONTRACTION_2 = frozenset(["ll", "ve", "re"])

_class_cache: dict[str, int] = {}
_CLASS_CACHE_MAX = 1 << 16


def char_class(ch: str) -> int:
    """The class (LETTER, NUMBER, SPACE or OTHER) of one character."""
    k = _class_cache.get(ch)
    if k is not None:
        return k
    if ch in WHITE_SPACE:
        k = SPACE
    else:
        major = unicodedata.category(ch)[0]
        k = LETTER if major == "L" else NUMBER if major == "N" else OTHER
    if len(_class_cache) < _CLASS_CACHE_MAX:
        _class_cache[ch] = k
    return k


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2 pre-tokens (pieces that BPE then encodes one by one).

    ``"".join(pretokenize(text)) == text`` always holds.
    """
    if not isinstance(text, str):
        raise TypeError(f"pretokenize expects str, got {type(text).__name__}")
    n = len(text)
    cls = [char_class(ch) for ch in text]
    pieces: list[str] = []
    i = 0
    while i < n:
        ch = text[i]

        # 1. contractions: 's 'd 'm 't 'll 've 're
        if ch == "'" and i + 1 < n:
            if text[i + 1] in _CONTRACTION_1:
                pieces.append(text[i:i + 2])
                i += 2
                continue
            if text[i + 1:i + 3] in _CONTRACTION_2:
                pieces.append(text[i:i + 3])
                i += 3
                continue

        # 2.-4. optional U+0020, then a run of letters, numbers or "other"
        j = i
        if ch == " " and i + 1 < n and cls[i + 1] != SPACE:
            j = i + 1
        k = cls[j]
        if k != SPACE:
            j += 1
            while j < n and cls[j] == k:
                j += 1
            pieces.append(text[i:j])
            i = j
            continue

        # 5.-6. whitespace run; before a non-space it leaves its last character behind
        j = i + 1
        while j < n and cls[j] == SPACE:
            j += 1
        if j < n and j - i >= 2:
            j -= 1
        pieces.append(text[i:j])
        i = j
    return pieces
