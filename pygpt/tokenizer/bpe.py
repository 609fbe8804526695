"""Reference byte-level BPE tokenizer (the GPT-2 scheme), pure Python.

This module is the oracle: the fast native encoder must give the same ids.  It is written to be
read, not to be fast.

Encoding a text
    1. Lone surrogates are repaired the way tiktoken does it: the text goes through UTF-16 with
       "surrogatepass", so a high+low surrogate pair becomes its astral character and a lone
       surrogate becomes U+FFFD.  (Python str can hold surrogates; UTF-8 cannot.)
    2. ``pretokenize`` (GPT-2 pattern) cuts the text into pieces.
    3. Each piece (its UTF-8 bytes) is merged on its own: if the whole piece is a token, that is
       the answer; otherwise start from single bytes and repeatedly merge the adjacent pair whose
       concatenation has the lowest rank, the leftmost one on equal ranks, until no adjacent pair
       concatenates to a token (the GPT-2/tiktoken rule).  O(n^2) per piece; pieces are cached.

Special tokens follow tiktoken's ``encode``: any disallowed special token text in the input
raises ValueError naming it (by default every special token is disallowed); allowed ones are
emitted as their id and cut the text into segments that are pre-tokenized separately (a segment
end acts as a text end).  Where several allowed special tokens match, the leftmost wins, and the
longest of those starting at the same position.

Training (``train_merges``) counts the pre-tokenized words once, keeps pair counts weighted by
word frequency with an index pair -> words containing it, and updates both incrementally for
the words touched by each merge.  The best pair comes from a lazy max-heap.

    Tie-break: the most frequent pair wins; among equally frequent pairs the one with the
    smallest (left id, right id) wins, ids being 0..255 for the single bytes in byte order and
    256, 257, ... for merged tokens in the order they were created.

Training stops when the vocabulary is full or when no pair occurs ``min_frequency`` (default 2)
times or more.  Special tokens get the ids after the last merged token.  HF ``tokenizers`` uses
the same rule but numbers the 256 bytes in GPT-2's printable-character order, so its tie-breaks
agree with ours only when the tied pairs' bytes are ordered alike in both numberings (see the
tests).  A trained tokenizer encodes with the rank rule above, like tiktoken; that is the same as
replaying the training merges in order except in contrived cases where a piece's bytes can be
joined into a token along a split the training never made.

Files
    ``.tiktoken``: one ``base64(token bytes) rank`` per line (``from_tiktoken_file``).
    GPT-2 ``encoder.json`` + ``vocab.bpe`` with the bytes <-> printable-unicode map
    (``from_gpt2_files``).
    pygpt's own JSON (``save``/``load``): ``{"format": "pygpt-bpe", "version": 1,
    "pattern": "gpt2", "ranks": [[base64, id], ...], "special_tokens": {text: id}}``.
"""
from __future__ import annotations

import base64
import binascii
import functools
import heapq
import json
import operator
import os
import sys
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import AbstractSet, Collection, Iterable, Literal, Mapping, Union

from .pretokenize import GPT2_PATTERN, pretokenize

__all__ = ["BPETokenizer", "bytes_to_unicode", "train_merges", "ENDOFTEXT", "FORMAT_NAME",
           "FORMAT_VERSION"]

ENDOFTEXT = "<|endoftext|>"
GPT2_EOT_ID = 50256
FORMAT_NAME = "pygpt-bpe"
FORMAT_VERSION = 1
PATTERNS = {"gpt2": GPT2_PATTERN}

_NO_RANK = sys.maxsize
_CACHE_MAX = 1 << 16

SpecialSet = Union[Literal["all"], AbstractSet[str], Collection[str]]


# --------------------------------------------------------------------------------------------
# helpers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from a byte to a printable character (used by encoder.json/vocab.bpe).

    The 188 bytes whose Latin-1 character is printable and not a space ('!'..'~', '¡'..'¬',
    '®'..'ÿ') stand for themselves; the other 68 bytes, in increasing order, are given the
    characters U+0100, U+0101, ... (so the space 0x20 is 'Ġ' U+0120).
    """
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    mapping: dict[int, str] = {}
    shifted = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(0x100 + shifted)
            shifted += 1
    return mapping


def _repair_surrogates(text: str) -> str:
    """Return ``text`` unchanged when it is valid UTF-8 material, else tiktoken's repair."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _bpe(ranks: Mapping[bytes, int], piece: bytes, limit: int = _NO_RANK) -> list[bytes]:
    """Merge the bytes of one piece by lowest rank (leftmost on ties); only ranks < limit count."""
    parts = [piece[i:i + 1] for i in range(len(piece))]

    def rank(i: int) -> int:
        r = ranks.get(parts[i] + parts[i + 1], _NO_RANK)
        return r if r < limit else _NO_RANK

    pair_ranks = [rank(i) for i in range(len(parts) - 1)]  # pair_ranks[i]: parts[i] + parts[i+1]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_RANK:
            break
        i = pair_ranks.index(best)  # the leftmost of the lowest
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i < len(parts) - 1:
            pair_ranks[i] = rank(i)
        if i > 0:
            pair_ranks[i - 1] = rank(i - 1)
    return parts


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every (a, b) in ``word``, left to right, non-overlapping, by ``new``."""
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_merges(word_counts: Mapping[bytes, int], n_merges: int,
                 min_frequency: int = 2) -> list[tuple[int, int, int]]:
    """The merges learned from word counts: a list of ``(left id, right id, new id)``.

    Ids 0..255 are the bytes; each merge creates the next id (256, 257, ...) unless the merged
    byte string already is a token, in which case that token's id is reused (the merge is
    recorded but the vocabulary does not grow; ``n_merges`` counts new tokens).  See the module
    docstring for the tie-break.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    words: list[list[int]] = []
    freqs: list[int] = []
    for w, f in word_counts.items():
        if f > 0 and len(w) >= 2:
            words.append(list(w))
            freqs.append(int(f))

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of words that (may) contain it
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(wi)
    # Lazy max-heap: an entry's count is >= the pair's true count; stale entries are refreshed
    # when popped.  Every increase of a count pushes a fresh entry.
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    token_id: dict[bytes, int] = {t: i for i, t in enumerate(vocab)}
    merges: list[tuple[int, int, int]] = []
    while len(vocab) < 256 + n_merges and heap:
        neg, a, b = heapq.heappop(heap)
        count = pair_counts.get((a, b), 0)
        if count != -neg:
            if count > 0:
                heapq.heappush(heap, (-count, a, b))
            continue
        if count < min_frequency:
            break
        merged = vocab[a] + vocab[b]
        new = token_id.get(merged)
        if new is None:
            new = len(vocab)
            vocab.append(merged)
            token_id[merged] = new
        merges.append((a, b, new))

        delta: dict[tuple[int, int], int] = {}
        for wi in where.pop((a, b), ()):
            w, f = words[wi], freqs[wi]
            nw = _merge_word(w, a, b, new)
            if len(nw) == len(w):
                continue  # stale index entry
            for pair in zip(w, w[1:]):
                delta[pair] = delta.get(pair, 0) - f
            for pair in zip(nw, nw[1:]):
                delta[pair] = delta.get(pair, 0) + f
                where.setdefault(pair, set()).add(wi)
            words[wi] = nw
        for pair, d in delta.items():
            if d == 0:
                continue
            c = pair_counts.get(pair, 0) + d
            if c > 0:
                pair_counts[pair] = c
            else:
                pair_counts.pop(pair, None)
            if d > 0:
                heapq.heappush(heap, (-c, pair[0], pair[1]))
    return merges


def _check_special_tokens(special_tokens: Mapping[str, int] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    seen: dict[int, str] = {}
    for tok, i in (special_tokens or {}).items():
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"special token must be a non-empty str, got {tok!r}")
        try:
            tok.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"special token {tok!r} is not valid UTF-8 text") from None
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"special token {tok!r} has invalid id {i!r}")
        if i in seen:
            raise ValueError(f"special tokens {seen[i]!r} and {tok!r} share id {i}")
        seen[i] = tok
        out[tok] = i
    return out


@functools.lru_cache(maxsize=1)
def _gpt2_ranks() -> dict[bytes, int]:
    """The packaged GPT-2 ranks, parsed once per process (each tokenizer copies them)."""
    data = resources.files(__package__).joinpath("gpt2.tiktoken").read_bytes()
    return BPETokenizer._parse_tiktoken(data, "gpt2.tiktoken")


# --------------------------------------------------------------------------------------------
# the tokenizer


class BPETokenizer:
    """Byte-level BPE: ``ranks`` (token bytes -> id; the id is also the merge rank) plus
    ``special_tokens`` (text -> id)."""

    def __init__(self, ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None,
                 *, pattern: str = "gpt2", name: str = "bpe"):
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pre-tokenizer pattern {pattern!r}; known: {sorted(PATTERNS)}")
        decoder: dict[int, bytes] = {}
        for tok, i in ranks.items():
            if not isinstance(tok, bytes) or not tok:
                raise ValueError(f"token must be non-empty bytes, got {tok!r}")
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f"token {tok!r} has invalid rank {i!r}")
            if i in decoder:
                raise ValueError(f"tokens {decoder[i]!r} and {tok!r} share rank {i}")
            decoder[i] = tok
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"byte-level BPE needs all 256 single bytes; missing {len(missing)}, "
                             f"first 0x{missing[0]:02x}")
        specials = _check_special_tokens(special_tokens)
        for tok, i in specials.items():
            if i in decoder:
                raise ValueError(f"special token {tok!r} id {i} is also the rank of {decoder[i]!r}")

        self.name = name
        self.pattern = pattern
        self.ranks: dict[bytes, int] = dict(ranks)
        self.special_tokens: dict[str, int] = specials
        self._decoder = decoder
        self._special_decoder = {i: tok.encode("utf-8") for tok, i in specials.items()}
        self._n_vocab = max([*decoder, *self._special_decoder]) + 1
        self._cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return (f"BPETokenizer(name={self.name!r}, n_vocab={self.n_vocab}, "
                f"specials={len(self.special_tokens)}, pattern={self.pattern!r})")

    # ---- properties ------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """One more than the largest id (ordinary or special), like tiktoken."""
        return self._n_vocab

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>``, or None when this tokenizer has no such special token."""
        return self.special_tokens.get(ENDOFTEXT)

    # ---- encoding --------------------------------------------------------------------------

    @staticmethod
    def _text(text: object) -> str:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        return _repair_surrogates(text)

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            data = piece.encode("utf-8")
            r = self.ranks.get(data)
            ids = [r] if r is not None else [self.ranks[p] for p in _bpe(self.ranks, data)]
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def _encode_segment(self, text: str, out: list[int]) -> None:
        for piece in pretokenize(text):
            out.extend(self._encode_piece(piece))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ignoring special tokens (their text is encoded as ordinary text)."""
        text = self._text(text)
        out: list[int] = []
        self._encode_segment(text, out)
        return out

    def _special_set(self, arg: SpecialSet, what: str) -> set[str]:
        if arg == "all":
            return set(self.special_tokens)
        if isinstance(arg, str):
            raise TypeError(f"{what} must be 'all' or a set of special token strings, got {arg!r}")
        out = set(arg)
        unknown = sorted(t for t in out if t not in self.special_tokens)
        if unknown:
            raise ValueError(f"{what}: not special tokens of this tokenizer: {unknown}")
        return out

    def encode(self, text: str, *, allowed_special: SpecialSet = frozenset(),
               disallowed_special: SpecialSet = "all") -> list[int]:
        """Encode with tiktoken's semantics for special tokens (see the module docstring)."""
        text = self._text(text)
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            found = [(text.find(t), t) for t in disallowed]
            found = [(p, -len(t), t) for p, t in found if p >= 0]
            if found:
                tok = min(found)[2]
                raise ValueError(
                    f"encountered disallowed special token {tok!r} in the text; pass it in "
                    f"allowed_special to encode it as a special token, or disallowed_special=() "
                    f"to encode it as ordinary text")

        out: list[int] = []
        if not allowed:
            self._encode_segment(text, out)
            return out
        next_at = {t: text.find(t) for t in allowed}  # next occurrence of each allowed special
        start = 0
        while True:
            for t, p in next_at.items():
                if 0 <= p < start:
                    next_at[t] = text.find(t, start)
            hits = [(p, -len(t), t) for t, p in next_at.items() if p >= 0]
            if not hits:
                break
            pos, _, tok = min(hits)  # leftmost, then longest
            self._encode_segment(text[start:pos], out)
            out.append(self.special_tokens[tok])
            start = pos + len(tok)
        self._encode_segment(text[start:], out)
        return out

    # ---- decoding --------------------------------------------------------------------------

    def decode_single_token_bytes(self, token: int) -> bytes:
        try:
            i = operator.index(token)
        except TypeError:
            raise TypeError(f"token id must be an integer, got {type(token).__name__}") from None
        b = self._decoder.get(i)
        if b is None:
            b = self._special_decoder.get(i)
            if b is None:
                raise ValueError(f"invalid token id {token!r} (n_vocab={self.n_vocab})")
        return b

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join([self.decode_single_token_bytes(i) for i in ids])

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ---- merges ----------------------------------------------------------------------------

    def merges(self) -> list[tuple[int, int, int]]:
        """``(left id, right id, merged id)`` for every multi-byte token, in rank order.

        The pair of a token of rank r is what the merge rule makes of its bytes using only ranks
        below r; it must be exactly two tokens (true for GPT-2; ValueError otherwise).  For a
        trained vocabulary this is the training merge unless a byte string was reachable by two
        different splits (not seen in practice; the encoder only ever uses ranks).
        """
        out = []
        for tok, r in sorted(self.ranks.items(), key=lambda kv: kv[1]):
            if len(tok) == 1:
                continue
            parts = _bpe(self.ranks, tok, limit=r)
            if len(parts) != 2:
                raise ValueError(f"token {tok!r} (rank {r}) is not the merge of two lower-rank "
                                 f"tokens (merge rule gives {parts!r})")
            out.append((self.ranks[parts[0]], self.ranks[parts[1]], r))
        return out

    # ---- constructors ----------------------------------------------------------------------

    @staticmethod
    def _parse_tiktoken(data: bytes, source: str) -> dict[bytes, int]:
        ranks: dict[bytes, int] = {}
        line_of_rank: dict[int, int] = {}
        line_of_token: dict[bytes, int] = {}
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{source}:{lineno}: expected 'base64 rank', got {line[:80]!r}")
            b64, rank_text = fields
            try:
                if len(b64) % 4:  # b64decode ignores '=' after a full quantum ("QUJD=="); the C++ parser does not
                    raise ValueError("length not a multiple of 4")
                tok = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{source}:{lineno}: invalid base64 {b64[:80]!r}") from None
            if not tok:
                raise ValueError(f"{source}:{lineno}: empty token")
            if not rank_text.isdigit():
                raise ValueError(f"{source}:{lineno}: rank must be a non-negative integer, "
                                 f"got {rank_text[:80]!r}")
            rank = int(rank_text)
            if rank in line_of_rank:
                raise ValueError(f"{source}:{lineno}: duplicate rank {rank} "
                                 f"(first on line {line_of_rank[rank]})")
            if tok in line_of_token:
                raise ValueError(f"{source}:{lineno}: duplicate token {tok!r} "
                                 f"(first on line {line_of_token[tok]})")
            line_of_rank[rank] = lineno
            line_of_token[tok] = lineno
            ranks[tok] = rank
        return ranks

    @classmethod
    def from_tiktoken_file(cls, path: str | os.PathLike,
                           special_tokens: Mapping[str, int] | None = None) -> "BPETokenizer":
        """Load a ``.tiktoken`` file (``base64(token bytes) rank`` per line; blank lines skipped)."""
        path = Path(path)
        ranks = cls._parse_tiktoken(path.read_bytes(), str(path))
        return cls(ranks, special_tokens, name=path.stem)

    @classmethod
    def gpt2(cls) -> "BPETokenizer":
        """GPT-2's tokenizer from the ranks shipped in this package (no network)."""
        return cls(_gpt2_ranks(), {ENDOFTEXT: GPT2_EOT_ID}, name="gpt2")

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike,
                        special_tokens: Iterable[str] | None = None) -> "BPETokenizer":
        """Load OpenAI's GPT-2 ``encoder.json`` (token -> id) + ``vocab.bpe`` (the merges).

        Token strings are bytes written with ``bytes_to_unicode``.  ``special_tokens`` names the
        encoder entries that are special tokens (default: ``<|endoftext|>`` when present).
        Checks: every non-special entry is a single byte or the result of exactly one merge,
        both halves of every merge are tokens, and merged ids increase in file order (so that
        merging by lowest rank is merging in file order).
        """
        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        enc_path, bpe_path = str(encoder_json), str(vocab_bpe)

        def to_bytes(s: str, where: str) -> bytes:
            try:
                return bytes(byte_of[ch] for ch in s)
            except KeyError as e:
                raise ValueError(f"{where}: character {e.args[0]!r} is not in the GPT-2 "
                                 f"byte alphabet") from None

        try:
            encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, RecursionError) as e:  # deep nesting: RecursionError
            raise ValueError(f"{enc_path}: invalid JSON: {e}") from None
        if not isinstance(encoder, dict):
            raise ValueError(f"{enc_path}: expected a JSON object token -> id")
        names = ([ENDOFTEXT] if ENDOFTEXT in encoder else []) if special_tokens is None \
            else list(special_tokens)
        specials: dict[str, int] = {}
        for name in names:
            if name not in encoder:
                raise ValueError(f"{enc_path}: special token {name!r} not in the encoder")
            specials[name] = encoder[name]
        ranks: dict[bytes, int] = {}
        for s, i in encoder.items():
            if not isinstance(s, str) or isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"{enc_path}: bad entry {s!r}: {i!r}")
            if s in specials:
                continue
            tok = to_bytes(s, f"{enc_path}: token {s!r}")
            if tok in ranks:
                raise ValueError(f"{enc_path}: tokens map to the same bytes {tok!r}")
            ranks[tok] = i

        merged_seen: set[bytes] = set()
        last_id = -1
        for lineno, line in enumerate(Path(vocab_bpe).read_text(encoding="utf-8").splitlines(),
                                      start=1):
            if lineno == 1 and line.startswith("#version"):
                continue
            if not line.strip():
                continue
            halves = line.split(" ")
            if len(halves) != 2 or not halves[0] or not halves[1]:
                raise ValueError(f"{bpe_path}:{lineno}: expected two tokens separated by one "
                                 f"space, got {line[:80]!r}")
            a = to_bytes(halves[0], f"{bpe_path}:{lineno}")
            b = to_bytes(halves[1], f"{bpe_path}:{lineno}")
            for part in (a, b, a + b):
                if part not in ranks:
                    raise ValueError(f"{bpe_path}:{lineno}: {part!r} is not in the encoder")
            if a + b in merged_seen:
                raise ValueError(f"{bpe_path}:{lineno}: {a + b!r} is merged twice")
            if ranks[a + b] <= last_id or ranks[a + b] <= max(ranks[a], ranks[b]):
                raise ValueError(f"{bpe_path}:{lineno}: merged id {ranks[a + b]} does not "
                                 f"increase with the merge order")
            merged_seen.add(a + b)
            last_id = ranks[a + b]
        for tok in ranks:
            if len(tok) > 1 and tok not in merged_seen:
                raise ValueError(f"{enc_path}: token {tok!r} is produced by no merge")
        return cls(ranks, specials, name="gpt2-files")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (),
              min_frequency: int = 2) -> "BPETokenizer":
        """Train a byte-level BPE on ``texts`` (a str counts as one text).

        ``vocab_size`` counts everything: 256 bytes + merged tokens + special tokens.  The
        special tokens get the ids after the last merged token, in the order given.
        """
        specials = list(dict.fromkeys(special_tokens))
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size {vocab_size} < 256 bytes + {len(specials)} specials")
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[bytes] = Counter()
        for text in texts:
            text = cls._text(text)
            counts.update(piece.encode("utf-8") for piece in pretokenize(text))
        merges = train_merges(counts, vocab_size - 256 - len(specials), min_frequency)
        vocab = [bytes([i]) for i in range(256)]
        for a, b, new in merges:
            if new == len(vocab):
                vocab.append(vocab[a] + vocab[b])
        ranks = {tok: i for i, tok in enumerate(vocab)}
        return cls(ranks, {t: len(vocab) + k for k, t in enumerate(specials)}, name="trained")

    # ---- pygpt's own format ----------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write pygpt's JSON format (atomically: a temporary file, then a rename)."""
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "name": self.name,
            "ranks": [[base64.b64encode(tok).decode("ascii"), i]
                      for tok, i in sorted(self.ranks.items(), key=lambda kv: kv[1])],
            "special_tokens": dict(sorted(self.special_tokens.items(), key=lambda kv: kv[1])),
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a file written by ``save``; every field is validated (ValueError if wrong)."""
        src = str(path)
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # deep nesting: RecursionError
            raise ValueError(f"{src}: not a pygpt tokenizer file: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError(f"{src}: not a pygpt tokenizer file (format != {FORMAT_NAME!r})")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"{src}: unsupported version {doc.get('version')!r}")
        pattern = doc.get("pattern")
        if not isinstance(pattern, str) or pattern not in PATTERNS:
            raise ValueError(f"{src}: unknown pattern {pattern!r}")
        entries = doc.get("ranks")
        if not isinstance(entries, list):
            raise ValueError(f"{src}: 'ranks' must be a list of [base64, id]")
        ranks: dict[bytes, int] = {}
        for k, entry in enumerate(entries):
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                    or isinstance(entry[1], bool) or not isinstance(entry[1], int)):
                raise ValueError(f"{src}: ranks[{k}] must be [base64 str, int], got {entry!r}")
            try:
                tok = base64.b64decode(entry[0], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{src}: ranks[{k}]: invalid base64 {entry[0]!r}") from None
            if tok in ranks:
                raise ValueError(f"{src}: ranks[{k}]: duplicate token {tok!r}")
            ranks[tok] = entry[1]
        specials = doc.get("special_tokens", {})
        if not isinstance(specials, dict):
            raise ValueError(f"{src}: 'special_tokens' must be an object text -> id")
        name = doc.get("name", Path(path).stem)
        try:
            return cls(ranks, specials, pattern=pattern, name=str(name))
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from None
