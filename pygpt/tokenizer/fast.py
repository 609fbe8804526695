"""``pygpt.Tokenizer``: the fast byte-level BPE (GPT-2 scheme), backed by the C++ encoder.

>>> import pygpt
>>> enc = pygpt.Tokenizer.gpt2()                 # offline: the ranks ship with pygpt
>>> enc.encode("hello world")
[31373, 995]
>>> enc.decode([31373, 995])
'hello world'

Same results as the pure-Python reference :class:`pygpt.tokenizer.BPETokenizer` (and as tiktoken
for text made of code points assigned in Unicode 14.0, see below), much faster:

* ``encode_ordinary(text)`` / ``encode(text, allowed_special=..., disallowed_special=...)``:
  tiktoken's semantics for special tokens (a disallowed special token in the text raises
  ValueError naming it; allowed ones become their id and cut the text into segments, each
  pre-tokenized on its own).  ``as_numpy=True`` returns a ``uint32`` array without building a
  Python list.
* ``encode_batch(texts)`` / ``encode_ordinary_batch(texts)``: C++ threads, the GIL released,
  results in input order (``num_threads=None``: ``pygpt._C.num_threads()``).
* ``decode(ids, errors="replace")`` -> str, ``decode_bytes(ids)`` -> bytes,
  ``decode_single_token_bytes(id)``; ``ids`` may be any iterable of ints or an integer array.
* Constructors: ``gpt2()``, ``from_tiktoken_file``, ``from_gpt2_files`` (``encoder.json`` +
  ``vocab.bpe``), ``from_hf_json`` (HF ``tokenizer.json``: BPE model, ByteLevel pre-tokenizer),
  ``load`` / ``save`` (pygpt's JSON format, the same file as ``BPETokenizer.save``), ``train``.

Text policy: a ``str`` is encoded as its UTF-8 bytes.  Lone surrogates (possible in a Python str,
impossible in UTF-8) are repaired like tiktoken: a high+low surrogate pair becomes its character,
any other surrogate U+FFFD, so ``decode(encode(s)) == s`` for every str without lone surrogates.

Unicode: the pre-tokenizer's classes come from tables generated from Python's ``unicodedata``
(Unicode 14.0.0 on Python 3.11) by ``tools/gen_unicode_tables.py``, identical to the reference on
every code point.  tiktoken's regex tables are newer; the two differ only on code points that are
unassigned in Unicode 14.0 (letters and digits added since; "other" here), where ids can differ.

Without the compiled extension (``pygpt._C`` missing, or ``PYGPT_NO_NATIVE=1``) the class keeps
the same API on top of the pure-Python ``BPETokenizer`` (slower; ``Tokenizer.native`` is False and
``pygpt.info()["tokenizer"]`` says so).
"""
from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import AbstractSet, Callable, Collection, Iterable, Literal, Mapping, Sequence, Union

import numpy as np

from .. import backend
from .bpe import ENDOFTEXT, GPT2_EOT_ID, PATTERNS, BPETokenizer, _check_special_tokens, bytes_to_unicode

__all__ = ["Tokenizer", "NATIVE_BPE"]

_C = backend.native if backend.native is not None and hasattr(backend.native, "BPE") else None
NATIVE_BPE: bool = _C is not None

SpecialSet = Union[Literal["all"], AbstractSet[str], Collection[str]]
_NO_SPECIALS: frozenset = frozenset()
_TRAIN_BATCH_CHARS = 8 << 20  # texts are handed to the C++ counter in batches of about this size


@functools.lru_cache(maxsize=1)
def _gpt2_core():
    """The C++ encoder of the shipped GPT-2 ranks (immutable, so shared by every gpt2() call)."""
    shipped = resources.files(__package__).joinpath("gpt2.tiktoken")
    with resources.as_file(shipped) as path:
        return _C.BPE.from_tiktoken_file(str(path), {ENDOFTEXT: GPT2_EOT_ID})


def _check_ranks(ranks: Mapping[bytes, int]) -> None:
    """The reference's type checks, with its messages (the C++ side checks the rest)."""
    if not isinstance(ranks, Mapping):
        raise TypeError(f"ranks must be a mapping bytes -> int, got {type(ranks).__name__}")
    for tok, i in ranks.items():
        if not isinstance(tok, bytes) or not tok:
            raise ValueError(f"token must be non-empty bytes, got {tok!r}")
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"token {tok!r} has invalid rank {i!r}")


class Tokenizer:
    """Byte-level BPE: ``ranks`` (token bytes -> id; the id is also the merge rank) plus
    ``special_tokens`` (text -> id).  See the module docstring for the whole API."""

    def __init__(self, ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None,
                 *, pattern: str = "gpt2", name: str = "bpe"):
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pre-tokenizer pattern {pattern!r}; known: {sorted(PATTERNS)}")
        if _C is None:
            self._init(None, BPETokenizer(ranks, special_tokens, pattern=pattern, name=name), pattern, name)
            return
        _check_ranks(ranks)
        specials = _check_special_tokens(special_tokens)
        self._init(_C.BPE(ranks, specials), None, pattern, name)

    def _init(self, core, ref: BPETokenizer | None, pattern: str, name: str) -> None:
        self._core = core  # pygpt._C.BPE, or None when falling back to the reference
        self._ref = ref
        self.name = name
        self.pattern = pattern
        self._ranks: dict[bytes, int] | None = None
        self._specials: dict[str, int] = dict(core.special_tokens()) if core is not None else dict(ref.special_tokens)
        self._default_disallowed = sorted(self._specials)

    @classmethod
    def _from_core(cls, core, name: str, pattern: str = "gpt2") -> "Tokenizer":
        self = cls.__new__(cls)
        self._init(core, None, pattern, name)
        return self

    @classmethod
    def _from_ref(cls, ref: BPETokenizer) -> "Tokenizer":
        if _C is None:
            self = cls.__new__(cls)
            self._init(None, ref, ref.pattern, ref.name)
            return self
        return cls(ref.ranks, ref.special_tokens, pattern=ref.pattern, name=ref.name)

    def __repr__(self) -> str:
        return (f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, specials={len(self._specials)}, "
                f"pattern={self.pattern!r}, native={self.native})")

    # ---- properties ------------------------------------------------------------------------

    @property
    def native(self) -> bool:
        """True when the C++ encoder serves this tokenizer (False: the pure-Python fallback)."""
        return self._core is not None

    @property
    def n_vocab(self) -> int:
        """One more than the largest id (ordinary or special), like tiktoken."""
        return self._core.n_vocab if self._core is not None else self._ref.n_vocab

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>``, or None when this tokenizer has no such special token."""
        return self._specials.get(ENDOFTEXT)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (a copy)."""
        return dict(self._specials)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._specials)

    @property
    def ranks(self) -> dict[bytes, int]:
        """Ordinary token bytes -> rank (built once from the C++ tables; do not modify it)."""
        if self._ref is not None:
            return self._ref.ranks
        if self._ranks is None:
            self._ranks = self._core.ranks()
        return self._ranks

    # ---- encoding --------------------------------------------------------------------------

    def _special_set(self, arg: SpecialSet, what: str) -> set[str]:
        if arg == "all":
            return set(self._specials)
        if isinstance(arg, str):
            raise TypeError(f"{what} must be 'all' or a set of special token strings, got {arg!r}")
        out = set(arg)
        unknown = sorted(t for t in out if t not in self._specials)
        if unknown:
            raise ValueError(f"{what}: not special tokens of this tokenizer: {unknown}")
        return out

    def _policy(self, allowed_special: SpecialSet, disallowed_special: SpecialSet) -> tuple[list[str], list[str]]:
        if allowed_special is _NO_SPECIALS and disallowed_special == "all":  # the default: fast path
            return [], self._default_disallowed
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self._specials) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        return sorted(allowed), sorted(disallowed)

    def encode_ordinary(self, text: str, *, as_numpy: bool = False):
        """Encode ignoring special tokens (their text is encoded as ordinary text).

        Returns a list of ints, or with ``as_numpy=True`` a ``numpy.uint32`` array.
        """
        if self._core is not None:
            return self._core.encode_ordinary(text, as_numpy)
        ids = self._ref.encode_ordinary(text)
        return np.asarray(ids, dtype=np.uint32) if as_numpy else ids

    def encode(self, text: str, *, allowed_special: SpecialSet = _NO_SPECIALS,
               disallowed_special: SpecialSet = "all", as_numpy: bool = False):
        """Encode with tiktoken's semantics for special tokens (see the module docstring)."""
        if self._core is not None:
            if allowed_special is _NO_SPECIALS and disallowed_special == "all":  # the default
                return self._core.encode(text, None, None, as_numpy)
            allowed, disallowed = self._policy(allowed_special, disallowed_special)
            return self._core.encode(text, allowed, disallowed, as_numpy)
        ids = self._ref.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        return np.asarray(ids, dtype=np.uint32) if as_numpy else ids

    @staticmethod
    def _texts(texts: Iterable[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("expected a list of str, got a str (wrap it in a list)")
        return list(texts)

    def encode_ordinary_batch(self, texts: Iterable[str], *, num_threads: int | None = None,
                              as_numpy: bool = False) -> list:
        """``[encode_ordinary(t) for t in texts]``, on C++ threads with the GIL released."""
        texts = self._texts(texts)
        if self._core is not None:
            return self._core.encode_batch(texts, None, None, num_threads or 0, as_numpy)
        return [self.encode_ordinary(t, as_numpy=as_numpy) for t in texts]

    def encode_batch(self, texts: Iterable[str], *, allowed_special: SpecialSet = _NO_SPECIALS,
                     disallowed_special: SpecialSet = "all", num_threads: int | None = None,
                     as_numpy: bool = False) -> list:
        """``[encode(t, ...) for t in texts]``, on C++ threads with the GIL released, in order.

        If several texts contain a disallowed special token, the first of them (in input order)
        is reported.
        """
        texts = self._texts(texts)
        if self._core is not None:
            allowed, disallowed = self._policy(allowed_special, disallowed_special)
            return self._core.encode_batch(texts, allowed, disallowed, num_threads or 0, as_numpy)
        return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special,
                            as_numpy=as_numpy) for t in texts]

    # ---- decoding --------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The concatenated bytes of ``ids`` (ValueError for an unknown id, TypeError for a non-int)."""
        if self._core is not None:
            return self._core.decode_bytes(ids)
        return self._ref.decode_bytes(ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """``decode_bytes(ids).decode("utf-8", errors)``: U+FFFD for a partial character by default."""
        if self._core is not None:
            return self._core.decode(ids, errors)
        return self._ref.decode(ids, errors)

    def decode_batch(self, batch: Iterable[Iterable[int]], errors: str = "replace") -> list[str]:
        return [self.decode(ids, errors) for ids in batch]

    def decode_single_token_bytes(self, token: int) -> bytes:
        if self._core is not None:
            return self._core.decode_single_token_bytes(token)
        return self._ref.decode_single_token_bytes(token)

    def token_byte_values(self) -> list[bytes]:
        """Every ordinary token's bytes, sorted by rank."""
        return [tok for tok, _ in sorted(self.ranks.items(), key=lambda kv: kv[1])]

    # ---- merges, conversion ----------------------------------------------------------------

    def merges(self) -> list[tuple[int, int, int]]:
        """``(left id, right id, merged id)`` for every multi-byte token, in rank order (see
        ``BPETokenizer.merges``)."""
        return self.to_reference().merges()

    def to_reference(self) -> BPETokenizer:
        """The same vocabulary as a pure-Python ``BPETokenizer`` (the oracle)."""
        if self._ref is not None:
            return self._ref
        return BPETokenizer(self.ranks, self._specials, pattern=self.pattern, name=self.name)

    @classmethod
    def from_reference(cls, ref: BPETokenizer) -> "Tokenizer":
        return cls._from_ref(ref)

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> "Tokenizer":
        """GPT-2's tokenizer from the ranks shipped in this package (no network)."""
        if _C is None:
            return cls._from_ref(BPETokenizer.gpt2())
        return cls._from_core(_gpt2_core(), "gpt2")

    @classmethod
    def from_tiktoken_file(cls, path: str | os.PathLike,
                           special_tokens: Mapping[str, int] | None = None) -> "Tokenizer":
        """Load a ``.tiktoken`` file (``base64(token bytes) rank`` per line; blank lines skipped).
        Errors name the file and line (ValueError); a missing file raises FileNotFoundError."""
        path = Path(path)
        if _C is None:
            return cls._from_ref(BPETokenizer.from_tiktoken_file(path, special_tokens))
        os.stat(path)  # FileNotFoundError / PermissionError, as Python reports them
        core = _C.BPE.from_tiktoken_file(str(path), _check_special_tokens(special_tokens))
        return cls._from_core(core, path.stem)

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike,
                        special_tokens: Iterable[str] | None = None) -> "Tokenizer":
        """OpenAI's GPT-2 ``encoder.json`` + ``vocab.bpe`` (parsed and checked by
        ``BPETokenizer.from_gpt2_files``)."""
        return cls._from_ref(BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe, special_tokens))

    @classmethod
    def from_hf_json(cls, path: str | os.PathLike) -> "Tokenizer":
        """An HF ``tokenizers`` ``tokenizer.json`` holding a byte-level BPE (GPT-2 style).

        Accepted: ``model.type == "BPE"`` (no dropout, no subword prefix/suffix), pre-tokenizer
        ``ByteLevel`` (``add_prefix_space`` false, ``use_regex`` true; alone or as the only
        member of a ``Sequence``), no normalizer.  ``model.vocab`` maps GPT-2 byte-alphabet
        strings to ids, ``model.merges`` lists the merges (``"a b"`` or ``["a", "b"]``); merged
        ids must increase in merge order, so that HF's merge order and the rank rule agree.
        ``added_tokens`` marked special become special tokens.  Anything else: ValueError.
        """
        src = str(path)
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # deep nesting: RecursionError
            raise ValueError(f"{src}: not a tokenizer.json file: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
            raise ValueError(f"{src}: not a tokenizer.json file (no 'model' object)")
        model = doc["model"]
        mtype = model.get("type", "BPE" if "merges" in model else None)
        if mtype != "BPE":
            raise ValueError(f"{src}: only BPE models are supported, got model type {mtype!r}")
        for key in ("dropout",):
            if model.get(key) not in (None, 0, 0.0):
                raise ValueError(f"{src}: BPE {key}={model.get(key)!r} is not supported")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key) not in (None, ""):
                raise ValueError(f"{src}: BPE {key}={model.get(key)!r} is not supported (byte-level BPE only)")
        norm = doc.get("normalizer")
        if norm is not None:
            kind = norm.get("type") if isinstance(norm, dict) else norm
            raise ValueError(f"{src}: a normalizer ({kind!r}) is not supported")
        pre = doc.get("pre_tokenizer")
        if isinstance(pre, dict) and pre.get("type") == "Sequence":
            members = pre.get("pretokenizers")
            pre = members[0] if isinstance(members, list) and len(members) == 1 else pre
        if not isinstance(pre, dict) or pre.get("type") != "ByteLevel":
            kind = pre.get("type") if isinstance(pre, dict) else pre
            raise ValueError(f"{src}: the pre-tokenizer must be ByteLevel (GPT-2 byte-level BPE), got {kind!r}")
        if pre.get("add_prefix_space", False):
            raise ValueError(f"{src}: ByteLevel add_prefix_space=true is not supported")
        if not pre.get("use_regex", True):
            raise ValueError(f"{src}: ByteLevel use_regex=false is not supported")
        vocab, merges = model.get("vocab"), model.get("merges")
        if not isinstance(vocab, dict) or not isinstance(merges, list):
            raise ValueError(f"{src}: model.vocab must be an object and model.merges a list")
        specials: dict[str, int] = {}
        added = doc.get("added_tokens") or []
        if not isinstance(added, list):
            raise ValueError(f"{src}: added_tokens must be a list, got {type(added).__name__}")
        for entry in added:
            if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
                raise ValueError(f"{src}: bad added_tokens entry {entry!r}")
            if entry.get("special", False):
                specials[entry["content"]] = entry.get("id", vocab.get(entry["content"]))
        pairs = []
        for k, m in enumerate(merges):
            if isinstance(m, str):
                parts = m.split(" ")
            elif isinstance(m, list):
                parts = m
            else:
                parts = []
            if len(parts) != 2 or not all(isinstance(x, str) and x for x in parts):
                raise ValueError(f"{src}: model.merges[{k}]: expected 'a b' or [a, b], got {m!r}")
            pairs.append((parts[0], parts[1]))
        ranks = _ranks_from_vocab_merges(vocab, pairs, specials, src)
        return cls(ranks, specials, name=Path(path).stem)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read pygpt's JSON format (written by ``save`` or ``BPETokenizer.save``); validated."""
        return cls._from_ref(BPETokenizer.load(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write pygpt's JSON format (atomically), readable by ``load`` and ``BPETokenizer.load``."""
        BPETokenizer.save(self, path)  # uses .pattern, .name, .ranks, .special_tokens

    @classmethod
    def train(cls, texts: Iterable[str] | str | None = None, vocab_size: int = 50257,
              special_tokens: Iterable[str] = (), min_frequency: int = 2, *,
              files: Sequence[str | os.PathLike] | None = None, num_threads: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> "Tokenizer":
        """Train a byte-level BPE on ``texts`` (an iterable of str; a str counts as one text)
        and/or ``files`` (UTF-8 files, each one text).

        ``vocab_size`` counts everything: 256 bytes + merged tokens + special tokens (the last
        ids, in the order given).  The merges equal ``BPETokenizer.train``'s (same algorithm and
        tie-break: most frequent pair, then the smallest (left id, right id)).  Pieces are
        counted on C++ threads; ``progress(chars_or_bytes_done, texts_done)`` is called after
        each batch of about 8M characters and after each file.
        """
        specials = list(dict.fromkeys(special_tokens))
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size {vocab_size} < 256 bytes + {len(specials)} specials")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        if isinstance(texts, str):
            texts = [texts]
        if _C is None:
            all_texts = list(texts or ())
            for f in files or ():
                all_texts.append(Path(f).read_text(encoding="utf-8"))
            return cls._from_ref(BPETokenizer.train(all_texts, vocab_size, specials, min_frequency))
        counts = _C.BPEWordCounts()
        nt = num_threads or 0
        batch: list[str] = []
        size = done = n_texts = 0
        for text in texts or ():
            if not isinstance(text, str):
                raise TypeError(f"expected str, got {type(text).__name__}")
            batch.append(text)
            size += len(text)
            if size >= _TRAIN_BATCH_CHARS:
                counts.add_texts(batch, nt)
                done, n_texts = done + size, n_texts + len(batch)
                batch, size = [], 0
                if progress:
                    progress(done, n_texts)
        if batch:
            counts.add_texts(batch, nt)
            done, n_texts = done + size, n_texts + len(batch)
            if progress:
                progress(done, n_texts)
        for f in files or ():
            os.stat(f)
            done += counts.add_file(os.fspath(f), nt)
            n_texts += 1
            if progress:
                progress(done, n_texts)
        core = _C.bpe_train(counts, vocab_size, specials, min_frequency)
        return cls._from_core(core, "trained")


def _ranks_from_vocab_merges(vocab: Mapping[str, int], merges: list[tuple[str, str]],
                             specials: Mapping[str, int], src: str) -> dict[bytes, int]:
    """Token bytes -> id from a GPT-2-alphabet vocabulary and its merges, with the checks of
    ``BPETokenizer.from_gpt2_files``: every non-special entry is a single byte or made by exactly
    one merge, both halves of each merge are tokens, merged ids increase in merge order."""
    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}

    def to_bytes(s: str, where: str) -> bytes:
        try:
            return bytes(byte_of[ch] for ch in s)
        except KeyError as e:
            raise ValueError(f"{where}: character {e.args[0]!r} is not in the GPT-2 byte alphabet") from None

    ranks: dict[bytes, int] = {}
    for s, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{src}: model.vocab: bad entry {s!r}: {i!r}")
        if s in specials:
            continue
        tok = to_bytes(s, f"{src}: model.vocab token {s!r}")
        if tok in ranks:
            raise ValueError(f"{src}: model.vocab: tokens map to the same bytes {tok!r}")
        ranks[tok] = i
    merged_seen: set[bytes] = set()
    last_id = -1
    for k, (sa, sb) in enumerate(merges):
        where = f"{src}: model.merges[{k}]"
        a, b = to_bytes(sa, where), to_bytes(sb, where)
        for part in (a, b, a + b):
            if part not in ranks:
                raise ValueError(f"{where}: {part!r} is not in the vocabulary")
        if a + b in merged_seen:
            raise ValueError(f"{where}: {a + b!r} is merged twice")
        if ranks[a + b] <= last_id or ranks[a + b] <= max(ranks[a], ranks[b]):
            raise ValueError(f"{where}: merged id {ranks[a + b]} does not increase with the merge order")
        merged_seen.add(a + b)
        last_id = ranks[a + b]
    for tok in ranks:
        if len(tok) > 1 and tok not in merged_seen:
            raise ValueError(f"{src}: token {tok!r} is produced by no merge")
    return ranks
