"""``pygpt.Tokenizer`` (the C++ BPE) against the pure-Python reference and tiktoken.

Skipped when the extension is not built, unless ``PYGPT_REQUIRE_NATIVE=1`` (then it fails).
Peers are test-only and offline: tiktoken's ``Encoding`` is built by hand from the shipped ranks
(never ``tiktoken.get_encoding``); HF ``tokenizers`` builds its BPE from the same vocabulary.

Every code point (``test_every_code_point_*``), cheaply:
  * the compiled class table equals the reference's ``char_class`` on all 0x110000 code points;
  * the C++ pieces of ``"a" + ch + "b " + ch + " " + ch + "'s\\n"`` for every code point equal the
    reference's: the reference pre-tokenizer depends on a non-ASCII character only through its
    class, so its pieces for one representative per class, with the character substituted, are
    its pieces for every member (the 128 ASCII characters are run through it directly);
  * ids equal tiktoken's on those contexts for every code point assigned in Unicode 14.0, and
    for the unassigned ones (where tiktoken's newer tables may class a character as a letter or
    digit) ids of ``" " + ch`` equal tiktoken's byte-level merge of exactly the reference pieces.
The byte-level merge itself is the reference's (test_bpe_reference checks reference == tiktoken,
and the hypothesis tests below check C++ == reference, random vocabularies included).
"""
from __future__ import annotations

import base64
import importlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from pygpt import backend

_NATIVE_OK = backend.native is not None and hasattr(backend.native, "BPE")
if not _NATIVE_OK:
    if os.environ.get("PYGPT_REQUIRE_NATIVE", "0") not in ("", "0"):
        raise RuntimeError(f"PYGPT_REQUIRE_NATIVE=1 but pygpt._C.BPE is missing: {backend.info()['native_reason']}")
    pytest.skip("pygpt._C (C++ BPE) not built", allow_module_level=True)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pygpt  # noqa: E402
from pygpt.tokenizer import BPETokenizer, Tokenizer, pretokenize  # noqa: E402
from pygpt.tokenizer import bpe as bpe_mod  # noqa: E402

pt_mod = importlib.import_module("pygpt.tokenizer.pretokenize")
C = backend.native
ROOT = Path(__file__).resolve().parent.parent

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TRICKY = [
    "a", "Z", "s", "d", "m", "t", "l", "v", "r", "e", "S", "T", "L", "V", "R", "E", "é", "ß",
    "\u0301", "\u0903", "0", "7", "²", "Ⅻ", "٣", "'", "'s", "'ll", "'ve", "'re", "'T",
    " ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680",
    "\u2000", "\u200a", "\u200b", "\u2028", "\u202f", "\u3000", "!", ".", "-", "\"", "😀", "中",
    "\x00", "\ufeff", "_",
]
tricky_text = st.lists(st.sampled_from(TRICKY), max_size=60).map("".join)
assigned_text = st.text(st.characters(blacklist_categories=("Cs", "Cn")), max_size=80)
any_text = st.text(max_size=80)  # surrogates included

ENGLISH = (
    "It was the best of times, it was the worst of times; we'd walked 3.5 miles (about 5.6 km) "
    "before noon, and they're sure it'll rain again by 4pm -- don't you think?\n\n\tIndented, "
    "trailing spaces   \nand  double  spaces. E-mail someone@example.com or https://example.org/?q=1\n"
)


def _shipped_ranks() -> dict[bytes, int]:
    data = resources.files("pygpt.tokenizer").joinpath("gpt2.tiktoken").read_bytes()
    out = {}
    for line in data.splitlines():
        if line:
            tok, rank = line.split()
            out[base64.b64decode(tok)] = int(rank)
    return out


@pytest.fixture(scope="module")
def fast() -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def ref() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def tk():
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(name="gpt2-test", pat_str=GPT2_PAT, mergeable_ranks=_shipped_ranks(),
                             special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def ref_classes() -> np.ndarray:
    """The reference class (0 L, 1 N, 2 S, 3 O) of every code point."""
    cc = pt_mod.char_class
    return np.frombuffer(bytes(cc(chr(c)) for c in range(0x110000)), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# API basics


def test_exports_and_info(fast):
    assert pygpt.Tokenizer is Tokenizer
    assert fast.native
    assert fast.n_vocab == 50257 and fast.eot_token == 50256
    assert fast.special_tokens == {EOT: 50256}
    assert fast.encode("hello world") == [31373, 995]
    assert fast.decode([31373, 995]) == "hello world"
    assert fast.decode_single_token_bytes(220) == b" "
    assert fast.decode_single_token_bytes(50256) == EOT.encode()
    assert fast.ranks == _shipped_ranks()
    assert "C++" in pygpt.info()["tokenizer"]
    assert C.bpe_unicode_version() == unicodedata.unidata_version == pt_mod.UNICODE_VERSION
    assert "native=True" in repr(fast)


def test_numpy_output(fast):
    ids = fast.encode_ordinary(ENGLISH, as_numpy=True)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.uint32 and ids.ndim == 1
    assert ids.tolist() == fast.encode_ordinary(ENGLISH)
    assert fast.encode(ENGLISH + EOT, allowed_special="all", as_numpy=True).tolist() == \
        fast.encode(ENGLISH + EOT, allowed_special="all")
    assert fast.encode_ordinary("", as_numpy=True).shape == (0,)
    assert fast.decode(ids) == ENGLISH
    assert fast.decode(ids.astype(np.int64)) == ENGLISH
    assert fast.decode(ids[::2].copy()) == fast.decode(fast.encode_ordinary(ENGLISH)[::2])


def test_fallback_without_native(tmp_path):
    code = ("import pygpt, json; t = pygpt.Tokenizer.gpt2(); "
            "print(json.dumps([t.native, t.encode('hello world'), t.decode([31373]), "
            "t.encode_batch(['a b', 'c']), t.encode_ordinary('x y', as_numpy=True).tolist(), "
            "pygpt.info()['tokenizer']]))")
    env = dict(os.environ, PYGPT_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    native, ids, text, batch, arr, note = json.loads(out.stdout)
    assert native is False and ids == [31373, 995] and text == "hello"
    assert batch == [[64, 275], [66]] and arr == [87, 331]
    assert "fallback" in note


# ---------------------------------------------------------------------------------------------
# every code point


def test_unicode_table_every_code_point(ref_classes):
    ours = np.frombuffer(C.bpe_char_classes(), dtype=np.uint8)
    differ = np.flatnonzero(ours != ref_classes)
    assert differ.size == 0, f"{differ.size} code points differ, first U+{int(differ[0]):04X}"
    # the committed table was generated from these classes
    import hashlib
    inc = (ROOT / "cpp" / "src" / "unicode_tables.inc").read_text()
    digest = re.search(r'PYGPT_UNICODE_CLASSES_SHA256 "([0-9a-f]+)"', inc).group(1)
    assert digest == hashlib.sha256(ref_classes.tobytes()).hexdigest()
    assert f'PYGPT_UNICODE_VERSION "{unicodedata.unidata_version}"' in inc


def _unit(ch: str) -> str:
    return f"a{ch}b {ch} {ch}'s\n"


def test_every_code_point_pieces_vs_reference(ref_classes):
    reps = {pt_mod.LETTER: "é", pt_mod.NUMBER: "٣", pt_mod.SPACE: "\u3000", pt_mod.OTHER: "\u0301"}
    templates = {}
    for k, rep in reps.items():
        assert ref_classes[ord(rep)] == k
        pieces = pretokenize(_unit(rep))
        assert "".join(pieces) == _unit(rep)
        templates[k] = np.array([len(p) for p in pieces], dtype=np.int32)
    codes = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(codes), 1 << 16):
        block = codes[start:start + (1 << 16)]
        text = "".join(_unit(chr(c)) for c in block)
        got = C.bpe_piece_lengths(text)
        want = np.concatenate([templates[k] for k in ref_classes[block].tolist()])
        if not np.array_equal(got, want):
            # find the first differing unit and show the reference's and our pieces for it
            for c in block:
                u = _unit(chr(c))
                assert C.bpe_pretokenize(u) == pretokenize(u), f"U+{c:04X}"
            raise AssertionError("piece lengths differ but no single unit does")
    for c in range(0x80):  # ASCII: the reference itself
        u = _unit(chr(c))
        assert C.bpe_pretokenize(u) == pretokenize(u), f"U+{c:04X}"
    # and a random sample straight through the reference, to check the template argument
    rng = random.Random(0)
    sample = "".join(_unit(chr(c)) for c in rng.sample(codes, 3000))
    assert C.bpe_pretokenize(sample) == pretokenize(sample)


def test_every_code_point_ids_vs_tiktoken(fast, tk):
    tiktoken = pytest.importorskip("tiktoken")
    assigned = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cs", "Cn")]
    unassigned = [c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cn"]
    text = "".join(_unit(chr(c)) for c in assigned)
    assert fast.encode_ordinary(text) == tk.encode_ordinary(text)
    # unassigned in 14.0: OTHER here, so " " + ch is one piece; tiktoken merges exactly those pieces
    text = "".join(" " + chr(c) for c in unassigned)
    by_piece = tiktoken.Encoding(name="pieces", pat_str=r" [^ ]+", mergeable_ranks=_shipped_ranks(),
                                 special_tokens={})
    assert fast.encode_ordinary(text) == by_piece.encode_ordinary(text)
    assert C.bpe_piece_lengths(text).tolist() == [2] * len(unassigned)


# ---------------------------------------------------------------------------------------------
# short strings, hypothesis, corpus, long runs


ALPHABET = [" ", "\u00a0", "\u3000", "\t", "\n", "\r", "'", "s", "t", "l", "v", "e", "A", "é", "7", "٣",
            "\u0301", ".", "😀"]
ALPHABET_SMALL = [" ", "\u00a0", "\n", "'", "s", "l", "e", "é", "7", "\u0301", ".", "😀"]


def test_exhaustive_short_strings(fast, tk):
    texts = ["".join(t) for n in range(1, 5) for t in itertools.product(ALPHABET, repeat=n)]
    ours = fast.encode_ordinary_batch(texts)
    theirs = [tk.encode_ordinary(t) for t in texts]  # (tiktoken's own batch is slower here)
    bad = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} strings differ from tiktoken, e.g. {bad[:5]!r}"
    bad = [t for t in texts if C.bpe_pretokenize(t) != pretokenize(t)]
    assert not bad, f"{len(bad)} strings split differently from the reference, e.g. {bad[:5]!r}"
    texts5 = ["".join(t) for t in itertools.product(ALPHABET_SMALL, repeat=5)]
    ours = fast.encode_ordinary_batch(texts5)
    theirs = [tk.encode_ordinary(t) for t in texts5]
    bad = [t for t, a, b in zip(texts5, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} length-5 strings differ from tiktoken, e.g. {bad[:5]!r}"


@settings(FAST, max_examples=500)
@given(tricky_text)
def test_tricky_text(fast, ref, tk, text):
    ids = fast.encode_ordinary(text)
    assert ids == tk.encode_ordinary(text) == ref.encode_ordinary(text)
    assert C.bpe_pretokenize(text) == pretokenize(text)
    assert fast.decode(ids) == text


@settings(FAST, max_examples=300)
@given(assigned_text)
def test_assigned_text(fast, ref, tk, text):
    assert fast.encode_ordinary(text) == tk.encode_ordinary(text) == ref.encode_ordinary(text)


@settings(FAST, max_examples=300)
@given(any_text)
def test_any_text_vs_reference_and_roundtrip(fast, ref, text):
    ids = fast.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    # the surrogate policy: repaired like tiktoken (pairs joined, lone ones -> U+FFFD)
    assert fast.decode(ids) == bpe_mod._repair_surrogates(text)
    assert fast.decode_bytes(ids) == bpe_mod._repair_surrogates(text).encode("utf-8")


@settings(FAST, max_examples=200)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_roundtrip_any_str(fast, text):
    assert fast.decode(fast.encode_ordinary(text)) == text
    assert fast.decode(fast.encode(text, disallowed_special=())) == text


def test_surrogate_policy(fast, ref, tk):
    for text in ["\ud800", "a\udfffb", "x\ud83d\ude00y", "\ude00\ud83d", "\ud83d", "\ud83d\ud83d\ude00"]:
        repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        assert fast.encode(text) == ref.encode(text) == tk.encode(text) == fast.encode(repaired)
    assert fast.decode(fast.encode("a\ud800b")) == "a\ufffdb"
    assert fast.decode(fast.encode("\ud83d\ude00")) == "😀"
    assert fast.encode_batch(["\ud800", "ok"]) == [fast.encode("\ufffd"), fast.encode("ok")]


def test_corpus_equals_tiktoken(fast, ref, tk):
    from pygpt.data.corpus import load_shakespeare, render_text

    text = render_text(load_shakespeare())
    ids = fast.encode_ordinary(text)
    assert ids == tk.encode_ordinary(text)
    assert fast.decode(ids) == text
    part = text[:150_000]
    assert fast.encode_ordinary(part) == ref.encode_ordinary(part)


def _random_letters(n: int, seed: int = 0, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(alphabet, k=n))


@pytest.mark.parametrize("name, text", [
    ("letter", "a" * 1_000_000),
    ("underscore", "_" * 1_000_000),
    ("digits", "7" * 1_000_000),
    ("random digits", _random_letters(300_000, 1, "0123456789")),
    ("emoji", "😀" * 250_000),
    ("random letters", _random_letters(1_000_000)),
    # small alphabets: many merges of one rank side by side (the monotone path gathers a merged
    # part's right pair one merge late, after the next merge may have absorbed its neighbour)
    ("random ab", _random_letters(200_000, 3, "ab")),
    ("random 01", _random_letters(200_000, 4, "01")),
    ("random punctuation", _random_letters(200_000, 5, "_-=.")),
    ("spaces", " " * 100_000),
    ("newlines", "\n" * 100_000),
    ("CJK", _random_letters(100_000, 2, "".join(map(chr, range(0x4E00, 0x4F00))))),
])
def test_long_runs(fast, tk, name, text):
    t0 = time.perf_counter()
    ids = fast.encode_ordinary(text)
    elapsed = time.perf_counter() - t0
    assert ids == tk.encode_ordinary(text)
    assert fast.decode(ids) == text
    assert elapsed < 2.0, f"{name}: {len(text.encode()) / elapsed / 1e6:.1f} MB/s"


def test_million_spaces(fast, tk):
    # tiktoken's regex overflows its stack on 10^6 spaces; the run is one piece of 10^6 spaces
    # (at the text end the whole run), and GPT-2 has no multi-space token, so it is 10^6 x " ".
    assert tk.encode_ordinary(" " * 100_000) == [220] * 100_000
    t0 = time.perf_counter()
    assert fast.encode_ordinary(" " * 1_000_000) == [220] * 1_000_000
    assert time.perf_counter() - t0 < 2.0
    assert fast.encode_ordinary("x" + " " * 999_999 + "y") == [87] + [220] * 999_998 + [331]


# ---------------------------------------------------------------------------------------------
# specials


def test_specials_default_and_allowed(fast, tk):
    text = "hello <|endoftext|> world"
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        fast.encode(text)
    ordinary = fast.encode_ordinary(text)
    assert ordinary == fast.encode(text, disallowed_special=()) == tk.encode_ordinary(text)
    assert 50256 not in ordinary
    text = "a\n\n<|endoftext|>b <|endoftext|><|endoftext|> c  <|endoftext|>"
    ids = fast.encode(text, allowed_special="all")
    assert ids == tk.encode(text, allowed_special="all") == fast.encode(text, allowed_special={EOT})
    assert ids.count(50256) == 4 and fast.decode(ids) == text
    assert fast.encode("a\n\n<|endoftext|>", allowed_special="all") == fast.encode_ordinary("a\n\n") + [50256]
    with pytest.raises(TypeError):
        fast.encode("x", allowed_special=EOT)
    with pytest.raises(ValueError, match=re.escape("<|nope|>")):
        fast.encode("x", allowed_special={"<|nope|>"})


def test_several_specials(ref):
    specials = {EOT: 50256, "<|fim|>": 50257, "<|fim|>x": 50258}
    enc = Tokenizer(ref.ranks, specials)
    r = BPETokenizer(ref.ranks, specials)
    assert enc.n_vocab == 50259
    text = "a<|fim|>xb<|fim|>c<|endoftext|>"
    with pytest.raises(ValueError, match=r"<\|fim\|>x"):  # leftmost, then longest, is named
        enc.encode(text)
    assert enc.encode(text, allowed_special="all") == r.encode(text, allowed_special="all") == (
        enc.encode_ordinary("a") + [50258] + enc.encode_ordinary("b") + [50257] + enc.encode_ordinary("c") + [50256])
    with pytest.raises(ValueError, match="endoftext"):
        enc.encode("a<|fim|>c<|endoftext|>", allowed_special={"<|fim|>"})
    assert enc.encode("a<|fim|>c<|endoftext|>", allowed_special={"<|fim|>"}, disallowed_special=()) == \
        r.encode("a<|fim|>c<|endoftext|>", allowed_special={"<|fim|>"}, disallowed_special=())


@settings(FAST, max_examples=300)
@given(st.lists(st.sampled_from(TRICKY + [EOT, "<|", "|>", "endoftext"]), max_size=30).map("".join))
def test_specials_match_tiktoken_and_reference(fast, ref, tk, text):
    for kw in ({"allowed_special": "all"}, {"disallowed_special": ()}):
        assert fast.encode(text, **kw) == tk.encode(text, **kw) == ref.encode(text, **kw)
    if EOT in text:
        with pytest.raises(ValueError):
            fast.encode(text)
    else:
        assert fast.encode(text) == ref.encode(text)


# ---------------------------------------------------------------------------------------------
# batches


def test_encode_batch_order_and_equality(fast):
    rng = random.Random(3)
    words = ENGLISH.split() + ["😀", "中文", "\n\n", "  ", EOT]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 400))) for _ in range(200)]
    texts += ["", "x" * 100_000, (ENGLISH + EOT) * 700]  # the last one is encoded in parts
    singles = [fast.encode(t, allowed_special="all") for t in texts]
    for threads in (None, 1, 2, 3):
        assert fast.encode_batch(texts, allowed_special="all", num_threads=threads) == singles
    arrays = fast.encode_batch(texts, allowed_special="all", as_numpy=True)
    assert [a.tolist() for a in arrays] == singles
    assert fast.encode_ordinary_batch(texts) == [fast.encode_ordinary(t) for t in texts]
    # the first failing text (input order) is reported
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        fast.encode_batch(["fine", "bad " + EOT, "also bad " + EOT])
    with pytest.raises(TypeError):
        fast.encode_batch("not a list")
    with pytest.raises(TypeError):
        fast.encode_ordinary_batch(["ok", b"bytes"])
    assert fast.encode_batch([]) == []
    assert fast.decode_batch(singles[:3]) == texts[:3]


# ---------------------------------------------------------------------------------------------
# random vocabularies (reachable or not, monotone or not) against the reference


@st.composite
def vocab_and_texts(draw):
    alphabet = b"abc d"
    n_tokens = draw(st.integers(0, 25))
    toks = draw(st.lists(st.binary(min_size=2, max_size=6).map(lambda b: bytes(alphabet[x % 5] for x in b)),
                         min_size=n_tokens, max_size=n_tokens, unique=True))
    ids = draw(st.permutations(list(range(256, 256 + len(toks) + 10))))[:len(toks)]
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update(dict(zip(toks, ids)))
    texts = draw(st.lists(st.text(st.sampled_from("abc d"), max_size=150), min_size=1, max_size=4))
    texts.append(draw(st.text(st.sampled_from("abc"), min_size=65, max_size=400)))  # one long piece
    return ranks, texts


@settings(FAST, max_examples=150)
@given(vocab_and_texts())
def test_random_vocabularies_vs_reference(data):
    # Reachable or unreachable tokens, pair ranks that go up or down: the short, the monotone
    # long and the general long merge paths all against the reference's rank rule.
    ranks, texts = data
    fast, r = Tokenizer(ranks), BPETokenizer(ranks)
    core = C.BPE(ranks)
    for text in texts + ["".join(texts) * 2]:
        assert fast.encode_ordinary(text) == r.encode_ordinary(text), text
    for piece in {p.encode() for t in texts for p in pretokenize(t)}:
        want = [ranks[piece]] if piece in ranks else [ranks[p] for p in bpe_mod._bpe(ranks, piece)]
        assert core.encode_piece(piece) == want  # whole piece first, like the reference


# ---------------------------------------------------------------------------------------------
# training


HUG = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5


def test_train_by_hand():
    enc = Tokenizer.train(HUG, vocab_size=1000)
    assert enc.native
    new = [enc.decode_single_token_bytes(i) for i in range(256, enc.n_vocab)]
    assert new == [b"ug", b"un", b"hug", b"pun", b"pug", b"hugs", b"bun"]
    assert enc.encode("hugs bun") == [261, 32, 262]
    withsp = Tokenizer.train(HUG, vocab_size=1000, special_tokens=[EOT, "<|pad|>", EOT])
    assert withsp.special_tokens == {EOT: 263, "<|pad|>": 264} and withsp.eot_token == 263
    assert Tokenizer.train(HUG, vocab_size=259).n_vocab == 259
    assert Tokenizer.train([], vocab_size=300).n_vocab == 256
    with pytest.raises(ValueError):
        Tokenizer.train(HUG, vocab_size=256, special_tokens=[EOT])
    with pytest.raises(TypeError):
        Tokenizer.train([b"bytes"], vocab_size=300)
    with pytest.raises(ValueError):
        Tokenizer.train(HUG, vocab_size=300, min_frequency=0)


def _merges(enc) -> list:
    return enc.to_reference().merges()


@settings(FAST, max_examples=150)
@given(st.lists(st.text(st.sampled_from("ab c\n'sé!1"), max_size=40), max_size=30),
       st.integers(0, 60), st.integers(1, 3))
def test_trainer_equals_reference(texts, n_merges, min_frequency):
    ours = Tokenizer.train(texts, 256 + n_merges, min_frequency=min_frequency)
    theirs = BPETokenizer.train(texts, 256 + n_merges, min_frequency=min_frequency)
    assert ours.ranks == theirs.ranks


@settings(FAST, max_examples=150)
@given(st.dictionaries(st.lists(st.sampled_from(b"ab c"), min_size=1, max_size=9).map(bytes),
                       st.integers(1, 6), max_size=12),
       st.integers(0, 30), st.integers(1, 3))
def test_train_merges_equal_reference(word_counts, n_merges, min_frequency):
    counts = C.BPEWordCounts()
    for w, c in word_counts.items():
        counts.add(w, c)
    assert C.bpe_train_merges(counts, n_merges, min_frequency) == \
        [tuple(m) for m in bpe_mod.train_merges(word_counts, n_merges, min_frequency)]


def test_trainer_corpus_and_files(tmp_path):
    from pygpt.data.corpus import load_shakespeare, render_text

    plays = load_shakespeare()
    texts = [render_text([p]) for p in plays[:6]]
    ours = Tokenizer.train(texts, 1200, special_tokens=[EOT])
    theirs = BPETokenizer.train(texts, 1200, special_tokens=[EOT])
    assert ours.ranks == theirs.ranks and ours.special_tokens == theirs.special_tokens
    # files: each file is one text; 64-bit counts through the same path
    for i, t in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(t, encoding="utf-8")
    calls = []
    from_files = Tokenizer.train(files=sorted(tmp_path.glob("*.txt")), vocab_size=1200, special_tokens=[EOT],
                                 progress=lambda done, n: calls.append((done, n)))
    assert from_files.ranks == ours.ranks
    assert calls and calls[-1][1] == len(texts)
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte offset 3"):
        Tokenizer.train(files=[tmp_path / "bad.txt"], vocab_size=300)
    with pytest.raises(FileNotFoundError):
        Tokenizer.train(files=[tmp_path / "missing.txt"], vocab_size=300)


def test_word_counts_threads_and_big_text():
    text = ENGLISH * 8000  # > 2 MiB: counted in ~1 MiB parts cut at safe points, on threads
    a, b = C.BPEWordCounts(), C.BPEWordCounts()
    a.add_texts([text], 1)
    b.add_texts([text, "x"], 2)
    want = Counter(p.encode() for p in C.bpe_pretokenize(text))
    assert dict(a.items()) == want and a.total == sum(want.values())
    want[b"x"] += 1
    assert dict(b.items()) == want and len(b) == len(want)


# ---------------------------------------------------------------------------------------------
# files


def test_tiktoken_file_and_save_load(tmp_path, fast):
    shipped = resources.files("pygpt.tokenizer").joinpath("gpt2.tiktoken")
    with resources.as_file(shipped) as p:
        enc = Tokenizer.from_tiktoken_file(p, special_tokens={EOT: 50256})
    assert enc.ranks == fast.ranks and enc.encode(ENGLISH) == fast.encode(ENGLISH)
    fast.save(tmp_path / "g.json")
    back = Tokenizer.load(tmp_path / "g.json")
    assert back.ranks == fast.ranks and back.special_tokens == fast.special_tokens
    assert BPETokenizer.load(tmp_path / "g.json").ranks == fast.ranks  # same format as the reference
    trained = Tokenizer.train([ENGLISH] * 5, 400, special_tokens=[EOT])
    trained.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json").encode(ENGLISH + EOT, allowed_special="all") == \
        trained.encode(ENGLISH + EOT, allowed_special="all")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["format"] == "pygpt-bpe" and doc["version"] == 1


BYTE_LINES = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]


@pytest.mark.parametrize("bad_line, message", [
    ("YWI=", r":257: expected 'base64 rank'"),
    ("YWI= 256 extra", r":257: expected 'base64 rank'"),
    ("Y@I= 256", r":257: invalid base64"),
    ("YWI 256", r":257: invalid base64"),
    ("YWI= -3", r":257: rank must be"),
    ("YWI= x", r":257: rank must be"),
    ("YWI= 255", r":257: duplicate rank 255 \(first on line 256\)"),
    ("YQ== 256", r":257: duplicate token b'a' \(first on line 98\)"),
])
def test_corrupt_tiktoken_files(tmp_path, bad_line, message):
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(BYTE_LINES + [bad_line]) + "\n")
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_tiktoken_file(path)
    with pytest.raises(ValueError, match=message):  # the reference says the same
        BPETokenizer.from_tiktoken_file(path)


def test_bad_vocabularies(tmp_path):
    base = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="share rank 5"):
        Tokenizer({**base, b"ab": 5})
    with pytest.raises(ValueError, match="256 single bytes"):
        Tokenizer({k: v for k, v in base.items() if v != 7})
    with pytest.raises(ValueError, match="also the rank"):
        Tokenizer(base, {EOT: 3})
    with pytest.raises(ValueError, match="share id"):
        Tokenizer(base, {EOT: 300, "<x>": 300})
    with pytest.raises(ValueError, match="non-empty"):
        Tokenizer(base, {"": 300})
    with pytest.raises(ValueError, match="non-empty bytes"):
        Tokenizer({**base, b"": 300})
    with pytest.raises(ValueError, match="invalid rank"):
        Tokenizer({**base, b"ab": -1})
    with pytest.raises(ValueError, match="invalid rank"):
        Tokenizer({**base, b"ab": True})
    with pytest.raises(ValueError, match="too sparse"):
        Tokenizer({**base, b"ab": 2**30})
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_tiktoken_file(tmp_path / "missing.tiktoken")
    # pygpt JSON: the reference's validation
    good = Tokenizer.train(HUG, 300, special_tokens=[EOT])
    good.save(tmp_path / "ok.json")
    doc = json.loads((tmp_path / "ok.json").read_text())
    (tmp_path / "dup.json").write_text(json.dumps(dict(doc, ranks=doc["ranks"] + [["YWJj", 0]])))
    with pytest.raises(ValueError, match="share rank"):
        Tokenizer.load(tmp_path / "dup.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a pygpt tokenizer"):
        Tokenizer.load(tmp_path / "junk.json")


def test_bad_inputs(fast):
    for bad in [b"bytes", None, 3, ["a"]]:
        with pytest.raises(TypeError):
            fast.encode(bad)
        with pytest.raises(TypeError):
            fast.encode_ordinary(bad)
    for bad_id in [-1, 50257, 10**9, 2**70]:
        with pytest.raises(ValueError, match=str(bad_id)):
            fast.decode([1, bad_id, 2])
        with pytest.raises(ValueError, match=str(bad_id)):
            fast.decode_single_token_bytes(bad_id)
    with pytest.raises(ValueError, match="50257"):
        fast.decode(np.array([1, 50257], dtype=np.int64))
    with pytest.raises(TypeError):
        fast.decode([1.0])
    with pytest.raises(TypeError):
        fast.decode(np.array([1.0]))
    with pytest.raises(TypeError):
        fast.decode("123")
    with pytest.raises(TypeError):
        fast.decode_single_token_bytes("1")
    assert fast.decode(np.array([31373, 995], dtype=np.uint16)) == "hello world"
    assert fast.decode((i for i in [31373, 995])) == "hello world"
    assert fast.decode([np.int64(31373), True]) == fast.decode([31373, 1])
    ids = fast.encode("😀")
    assert fast.decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        fast.decode(ids[:1], errors="strict")


def _gpt2_files(tmp_path, enc: BPETokenizer, n: int):
    u = bpe_mod.bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(u[x] for x in b)

    sub = BPETokenizer({t: i for t, i in enc.ranks.items() if i < n})
    encoder = {s(t): i for t, i in sub.ranks.items()}
    encoder[EOT] = n
    d = sub.decode_single_token_bytes
    merges = [(s(d(a)), s(d(b))) for a, b, _ in sub.merges()]
    return encoder, merges, sub


def test_gpt2_files_and_hf_json(tmp_path, ref):
    # the first 8000 GPT-2 ranks (the merges of all 50k take the reference a while to list)
    encoder, merges, sub = _gpt2_files(tmp_path, ref, 8000)
    want = Tokenizer(sub.ranks, {EOT: 8000})
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                        encoding="utf-8")
    enc = Tokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    assert enc.ranks == want.ranks and enc.special_tokens == want.special_tokens

    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {k: v for k, v in encoder.items() if k != EOT}
    hf = tokenizers.Tokenizer(models.BPE(vocab, merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([EOT])
    hf.save(str(tmp_path / "tokenizer.json"))
    enc = Tokenizer.from_hf_json(tmp_path / "tokenizer.json")
    assert enc.ranks == want.ranks and enc.special_tokens == want.special_tokens
    assert enc.encode_ordinary(ENGLISH) == hf.encode(ENGLISH).ids == want.encode_ordinary(ENGLISH)

    doc = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    cases = [
        (dict(doc, model={"type": "WordPiece", "vocab": {}}), "only BPE models"),
        (dict(doc, pre_tokenizer={"type": "Whitespace"}), "must be ByteLevel"),
        (dict(doc, pre_tokenizer=dict(doc["pre_tokenizer"], add_prefix_space=True)), "add_prefix_space"),
        (dict(doc, normalizer={"type": "NFC"}), "normalizer"),
        (dict(doc, model=dict(doc["model"], merges=doc["model"]["merges"][1:])), "produced by no merge|not in the"),
        (dict(doc, model=dict(doc["model"], vocab=dict(doc["model"]["vocab"], **{"中": 60000}))), "byte alphabet"),
    ]
    for k, (bad, message) in enumerate(cases):
        p = tmp_path / f"bad{k}.json"
        p.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            Tokenizer.from_hf_json(p)
    (tmp_path / "junk.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        Tokenizer.from_hf_json(tmp_path / "junk.json")


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_tokenize(tmp_path, capsys, fast):
    from pygpt.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(ENGLISH * 50, encoding="utf-8")
    assert main(["tokenize", "train", "--input", str(corpus), "--vocab-size", "400",
                 "--out", str(tmp_path / "tok.json")]) == 0
    tok = Tokenizer.load(tmp_path / "tok.json")
    want = BPETokenizer.train([ENGLISH * 50], 400, special_tokens=[EOT])  # stops early (min_frequency 2)
    assert tok.ranks == want.ranks and tok.eot_token == want.eot_token == tok.n_vocab - 1
    assert main(["tokenize", "encode", "--tokenizer", "gpt2", "--input", str(corpus),
                 "--out", str(tmp_path / "ids.bin")]) == 0
    from pygpt.data.tokens import TokenFile

    with TokenFile(tmp_path / "ids.bin") as tf:
        assert tf.tokens.tolist() == fast.encode_ordinary(ENGLISH * 50) and tf.vocab_size == 50257
    assert main(["tokenize", "decode", "--input", str(tmp_path / "ids.bin"), "--out", str(tmp_path / "back.txt")]) == 0
    assert (tmp_path / "back.txt").read_text(encoding="utf-8") == ENGLISH * 50
    capsys.readouterr()
    (tmp_path / "ids.txt").write_text("31373 995\n")
    assert main(["tokenize", "decode", "--input", str(tmp_path / "ids.txt")]) == 0
    assert capsys.readouterr().out == "hello world"
    (tmp_path / "eot.txt").write_text("a <|endoftext|>")
    assert main(["tokenize", "encode", "--input", str(tmp_path / "eot.txt")]) == 2  # disallowed
    assert main(["tokenize", "encode", "--input", str(tmp_path / "eot.txt"), "--allowed-special", "all"]) == 0
    assert capsys.readouterr().out.split()[-1] == "50256"
