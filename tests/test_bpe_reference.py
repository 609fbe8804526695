"""The reference byte-level BPE tokenizer against its peers.

Peers (test-only extras, all offline):
  * tiktoken: an ``Encoding`` built by hand from the shipped ``gpt2.tiktoken`` ranks (never
    ``tiktoken.get_encoding``, which downloads);
  * the ``regex`` module: ``regex.findall`` with GPT-2's pattern, for the pre-tokenizer;
  * HF ``tokenizers``: the ByteLevel BPE trainer, for training.

Unicode versions: the pre-tokenizer classifies with the standard library's ``unicodedata``
(14.0.0 on Python 3.11); ``regex`` (2026.x) ships Unicode 18.0 and tiktoken's Rust regex a
version in between.  Every code point on which they disagree is unassigned (Cn) in Python's
tables -- letters and digits added later, OTHER for us.  When written, with regex 2026.11.15
and tiktoken 0.14.0: 26,872 code points differ from ``regex`` (26,416 letters, 456 numbers) and
9,392 from tiktoken; none of them is assigned in Unicode 14.0.  Comparisons on text therefore
draw from code points assigned in 14.0 (hypothesis' own tables are Python's), and
``test_every_code_point_*`` check the whole code space.

Training tie-breaks: ours is "most frequent pair, then the smallest (left id, right id)" with
bytes 0..255 in byte order and merged tokens numbered in creation order.  HF's trainer uses the
same rule (its ``Merge`` ordering: count, then the smaller pair) but numbers the 256 bytes in the
order of their printable stand-ins (``bytes_to_unicode``: '!'..'~', '¡'..'¬', '®'..'ÿ', then the
68 others, the space among them), so the two break ties differently whenever a tie compares
bytes from different groups -- typically any tie involving a space.  On a corpus whose bytes are
all printable stand-ins for themselves (printable ASCII, no spaces) both numberings order the
bytes alike and the merge sequences must be identical, ties included; with spaces we compare on
a corpus that a naive trainer shows to have no ties at all.
"""
from __future__ import annotations

import base64
import importlib
import json
import random
import re
import time
import unicodedata
from collections import Counter
from importlib import resources

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pygpt.tokenizer import BPETokenizer, pretokenize  # noqa: E402
from pygpt.tokenizer import bpe as bpe_mod  # noqa: E402
# the package exports the function ``pretokenize``, which shadows the submodule's name
pt_mod = importlib.import_module("pygpt.tokenizer.pretokenize")

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"

ENGLISH = (
    "It was the best of times, it was the worst of times; it was the age of wisdom, it was the "
    "age of foolishness. We'd walked 3.5 miles (about 5.6 km) before noon, and they're sure "
    "it'll rain again by 4pm -- don't you think?  The committee's report, published in 1998, "
    "listed 12,400 cases: 67% were resolved within a week,\nwhile the rest took months.\n\n"
    "\tIndented lines, trailing spaces   \nand  double  spaces  are common in real text.  "
    "E-mail me at someone@example.com or visit https://example.org/path?q=1&x=2 for more.\n"
    "\"Quoted speech,\" she said, 'and single quotes' aren't contractions... OK? OK!\n"
)

# Edge cases from DESIGN.md and friends.
EDGE_CASES = [
    "", " ", "  ", "\n", "a\n\n b", "a\n\nb", "a \n b", "a  b", "a   b", "a \t b", "a\t\tb",
    "a\r\n\r\nb", "trailing   ", "  leading", " \n", "\n ", "x \u00a0y", "x\u00a0 y", "x\u3000y",
    "x\u2028\u2029y", "x\x1cy", "x\x1f\x1f y", "x\x85y", "x\u200by", "x\u1680 y", "\x0b\x0c",
    "don't", "DON'T", "I'M", "I'm", "we'LL", "we'll", "they've", "they're", "he'd", "it's",
    "It'S", "'s", "''s", "!'s", " 's", "'", "'l", "'lL", "x'ss", "rock'n'roll", "'ve'll're",
    "123", " 123", "1,234.5", "2²", "Ⅻ century", "٣٤٥", "x1y2", "v1.2.3", "¼ cup",
    "naïve café", "e\u0301", " e\u0301\u0301x", "\u0301", "Ελληνικά κείμενο", "русский текст",
    "中文字符测试", "日本語のテキスト", "한국어", "عربي", "עברית", "हिन्दी", "ภาษาไทย",
    "😀", " 😀😀", "👩‍👩‍👧", "🇫🇷", "a😀b", "<|endoftext|>", "<|endoftext", "|>",
    " !!!", "   !!!", "a  !", "\t!", "....", "--", "$$$ 100", "\x00\x01", "\x7f",
]

# A tricky alphabet: letters that make contractions, upper case, marks, numbers of every kind,
# all sorts of whitespace (and things that look like it), punctuation, emoji, CJK.
TRICKY = [
    "a", "Z", "s", "d", "m", "t", "l", "v", "r", "e", "S", "T", "L", "V", "R", "E", "é", "ß",
    "\u0301", "\u0903", "0", "7", "²", "Ⅻ", "٣", "'", "'s", "'ll", "'ve", "'re", "'T",
    " ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680",
    "\u2000", "\u200a", "\u200b", "\u2028", "\u202f", "\u3000", "!", ".", "-", "\"", "😀", "中",
    "\x00", "\ufeff",
]
tricky_text = st.lists(st.sampled_from(TRICKY), max_size=40).map("".join)
# Any code point assigned in Python's Unicode tables (hypothesis uses unicodedata too).
assigned_text = st.text(st.characters(blacklist_categories=("Cs", "Cn")), max_size=60)


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.gpt2()


def _read_ranks_independently() -> dict[bytes, int]:
    data = resources.files("pygpt.tokenizer").joinpath("gpt2.tiktoken").read_bytes()
    ranks = {}
    for line in data.splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


@pytest.fixture(scope="module")
def tk():
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(name="gpt2-test", pat_str=GPT2_PAT,
                             mergeable_ranks=_read_ranks_independently(),
                             special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def rx():
    regex = pytest.importorskip("regex")
    return regex.compile(GPT2_PAT)


# ---------------------------------------------------------------------------------------------
# pre-tokenizer


def test_pattern_constant():
    assert pt_mod.GPT2_PATTERN == GPT2_PAT
    assert pt_mod.UNICODE_VERSION == unicodedata.unidata_version


@pytest.mark.parametrize("text, pieces", [
    ("a\n\n b", ["a", "\n\n", " b"]),
    ("a\n\nb", ["a", "\n", "\n", "b"]),
    ("a  b", ["a", " ", " b"]),
    ("a \n b", ["a", " \n", " b"]),
    ("a\t b", ["a", "\t", " b"]),
    ("a \tb", ["a", " ", "\t", "b"]),
    ("end  ", ["end", "  "]),
    ("x\x1cy", ["x", "\x1c", "y"]),           # U+001C is not White_Space: "other"
    ("x \x1c", ["x", " \x1c"]),
    ("x\u00a0y", ["x", "\u00a0", "y"]),       # NBSP is whitespace but not a prefix
    ("don't", ["don", "'t"]),
    ("DON'T", ["DON", "'", "T"]),              # contractions are case-sensitive
    ("we'll've", ["we", "'ll", "'ve"]),
    ("!'s", ["!'", "s"]),                      # a punctuation run swallows the apostrophe
    (" 's", [" '", "s"]),
    ("e\u0301", ["e", "\u0301"]),             # a combining mark is not a letter
    ("Ⅻ²٣7", ["Ⅻ²٣7"]),                       # Nl, No, Nd are all \p{N}
    (" 12ab", [" 12", "ab"]),
    ("", []),
])
def test_pretokenize_literal(text, pieces):
    assert pretokenize(text) == pieces


def test_pretokenize_rejects_bytes():
    with pytest.raises(TypeError):
        pretokenize(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", EDGE_CASES + [ENGLISH])
def test_pretokenize_matches_regex_cases(rx, text):
    assert pretokenize(text) == rx.findall(text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tricky_text)
def test_pretokenize_matches_regex_tricky(rx, text):
    pieces = pretokenize(text)
    assert pieces == rx.findall(text)
    assert "".join(pieces) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assigned_text)
def test_pretokenize_matches_regex_assigned(rx, text):
    assert pretokenize(text) == rx.findall(text)


@pytest.fixture(scope="module")
def our_classes() -> str:
    """Our class of every code point, one letter each: L, N, W (White_Space) or O."""
    letter = {pt_mod.LETTER: "L", pt_mod.NUMBER: "N", pt_mod.SPACE: "W", pt_mod.OTHER: "O"}
    return "".join([letter[pt_mod.char_class(chr(c))] for c in range(0x110000)])


def _peer_classes(letters: set[int], numbers: set[int], spaces: set[int]) -> str:
    out = ["O"] * 0x110000
    for cls, members in (("N", numbers), ("L", letters), ("W", spaces)):  # later wins
        for c in members:
            out[c] = cls
    return "".join(out)


def test_white_space_set():
    ws = sorted(ord(c) for c in pt_mod.WHITE_SPACE)
    assert len(ws) == 25
    assert ws[:6] == [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20]
    assert 0x1C not in ws and 0x1F not in ws and 0x200B not in ws
    # str.isspace disagrees exactly on U+001C..U+001F
    isspace = sorted(c for c in range(0x110000) if chr(c).isspace())
    assert sorted(set(isspace) - set(ws)) == [0x1C, 0x1D, 0x1E, 0x1F]
    assert set(ws) <= set(isspace)


def test_every_code_point_vs_regex(our_classes):
    regex = pytest.importorskip("regex")
    everything = "".join(chr(c) for c in range(0x110000))
    peer = _peer_classes(*(set(map(ord, regex.findall(p, everything)))
                           for p in (r"\p{L}", r"\p{N}", r"\s")))
    differ = [c for c, (ours, theirs) in enumerate(zip(our_classes, peer)) if ours != theirs]
    # Only code points unassigned in our (older) Unicode tables may differ, and only as
    # "letter/number there, other here".
    assert all(unicodedata.category(chr(c)) == "Cn" for c in differ)
    assert all(our_classes[c] == "O" and peer[c] in "LN" for c in differ)
    assert len(differ) < 60_000  # 26,872 with regex 2026.11.15 (Unicode 18.0) vs Python 3.11
    print(f"\nUnicode {unicodedata.unidata_version} vs regex {regex.__version__}: "
          f"{len(differ)} code points differ (all unassigned in {unicodedata.unidata_version})")


def test_every_code_point_vs_tiktoken(our_classes):
    tiktoken = pytest.importorskip("tiktoken")
    byte_ranks = {bytes([b]): b for b in range(256)}
    no_surrogates = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)

    def matched(pattern: str) -> set[int]:
        # Characters a pattern does not match are skipped by tiktoken's findall, so the bytes
        # that come back are exactly the characters in the class.
        enc = tiktoken.Encoding(name="probe", pat_str=pattern, mergeable_ranks=byte_ranks,
                                special_tokens={})
        return set(map(ord, bytes(enc.encode_ordinary(no_surrogates)).decode("utf-8")))

    letters, numbers, spaces = matched(r"\p{L}"), matched(r"\p{N}"), matched(r"\s")
    assert spaces == {ord(c) for c in pt_mod.WHITE_SPACE}
    peer = _peer_classes(letters, numbers, spaces)
    differ = [c for c, (ours, theirs) in enumerate(zip(our_classes, peer))
              if ours != theirs and not 0xD800 <= c <= 0xDFFF]
    assert all(unicodedata.category(chr(c)) == "Cn" for c in differ)
    assert all(our_classes[c] == "O" and peer[c] in "LN" for c in differ)
    assert len(differ) < 60_000  # 9,392 with tiktoken 0.14.0
    print(f"\nUnicode {unicodedata.unidata_version} vs tiktoken {tiktoken.__version__}: "
          f"{len(differ)} code points differ")


# ---------------------------------------------------------------------------------------------
# encoding against tiktoken


def test_gpt2_basics(gpt2):
    assert gpt2.n_vocab == 50257
    assert gpt2.eot_token == 50256
    assert len(gpt2.ranks) == 50256
    assert gpt2.encode("hello world") == [31373, 995]
    assert gpt2.decode([31373, 995]) == "hello world"
    assert gpt2.decode_single_token_bytes(220) == b" "
    assert gpt2.decode_single_token_bytes(50256) == EOT.encode()
    assert gpt2.ranks == _read_ranks_independently()


def test_english_paragraph(gpt2, tk):
    ids = gpt2.encode(ENGLISH)
    assert ids == tk.encode(ENGLISH)
    assert gpt2.decode(ids) == ENGLISH
    assert len(ids) < len(ENGLISH.encode()) / 3  # BPE actually merges


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_tiktoken(gpt2, tk, text):
    assert gpt2.encode_ordinary(text) == tk.encode_ordinary(text)


@pytest.mark.parametrize("text", [
    "I don't know, I DON'T know, I Don'T know", "you'll, YOU'LL, you'Ll", "we've WE'VE",
    "they're THEY'RE", "she'd SHE'D", "I'm I'M", "it's IT'S it'S", "'s's's", "''''ll",
    "0 1 12 123 1234 12345 123456 3.14159 -42 +7 1e10 0x1F 1,000,000 ½ ⅞ Ⅷ ⁴ ₂ ①",
    "ﬁ ﬂ Ǆ ǅ ǆ ß ẞ İ ı", "a\u0300\u0301\u0302 ế ệ", "क्षत्रिय", "👍🏽 👨‍💻 ❤️ 🏳️‍🌈",
    "\t\t\tx", "x\t\t\t", "x \t \t y", "\n\n\n\n", " \n \n ", "\r\n\r\n", "x\u3000\u3000y",
    "\u2003\u2003word", "x" + " " * 20 + "y", "x" + "\n" * 9 + "y",
])
def test_more_cases_match_tiktoken(gpt2, tk, text):
    assert gpt2.encode(text) == tk.encode(text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tricky_text)
def test_tricky_text_matches_tiktoken(gpt2, tk, text):
    assert gpt2.encode_ordinary(text) == tk.encode_ordinary(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assigned_text)
def test_assigned_text_matches_tiktoken(gpt2, tk, text):
    assert gpt2.encode_ordinary(text) == tk.encode_ordinary(text)


def test_long_piece_without_spaces(gpt2, tk):
    text = "abcdefghij" * 300 + "😀" * 100 + "1234567890" * 100
    assert gpt2.encode(text) == tk.encode(text)


def test_surrogate_policy(gpt2, tk):
    # Lone surrogates become U+FFFD; a surrogate pair becomes its character (as tiktoken does).
    for text in ["\ud800", "a\udfffb", "x\ud83d\ude00y", "\ude00\ud83d", "\ud83d"]:
        repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        assert gpt2.encode(text) == gpt2.encode(repaired) == tk.encode(text)
    assert gpt2.decode(gpt2.encode("a\ud800b")) == "a\ufffdb"
    assert gpt2.decode(gpt2.encode("\ud83d\ude00")) == "😀"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | tricky_text)
def test_roundtrip(gpt2, text):
    ids = gpt2.encode_ordinary(text)
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")


def test_decode_partial_utf8(gpt2):
    ids = gpt2.encode("😀")
    assert len(ids) > 1
    assert gpt2.decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        gpt2.decode(ids[:1], errors="strict")


def test_invalid_inputs(gpt2):
    for bad in [b"bytes", None, 3, ["a"]]:
        with pytest.raises(TypeError):
            gpt2.encode(bad)
        with pytest.raises(TypeError):
            gpt2.encode_ordinary(bad)
    for bad_id in [-1, 50257, 10**9]:
        with pytest.raises(ValueError, match=str(bad_id)):
            gpt2.decode([1, bad_id, 2])
        with pytest.raises(ValueError, match=str(bad_id)):
            gpt2.decode_single_token_bytes(bad_id)
    with pytest.raises(TypeError):
        gpt2.decode([1.0])
    np = pytest.importorskip("numpy")
    assert gpt2.decode(np.array([31373, 995], dtype=np.uint16)) == "hello world"


# ---------------------------------------------------------------------------------------------
# special tokens


def test_special_disallowed_by_default(gpt2, tk):
    text = "hello <|endoftext|> world"
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        gpt2.encode(text)
    with pytest.raises(ValueError):
        tk.encode(text)
    # encode_ordinary and disallowed_special=() encode it as text
    ordinary = gpt2.encode_ordinary(text)
    assert ordinary == gpt2.encode(text, disallowed_special=()) == tk.encode_ordinary(text)
    assert 50256 not in ordinary


def test_special_allowed(gpt2, tk):
    text = "a\n\n<|endoftext|>b <|endoftext|><|endoftext|> c  <|endoftext|>"
    ids = gpt2.encode(text, allowed_special="all")
    assert ids == tk.encode(text, allowed_special="all")
    assert ids == gpt2.encode(text, allowed_special={EOT})
    assert ids.count(50256) == 4
    assert gpt2.decode(ids) == text
    # a segment end acts as a text end: "\n\n" before the special stays one piece
    assert gpt2.encode("a\n\n<|endoftext|>", allowed_special="all") == \
        gpt2.encode_ordinary("a\n\n") + [50256]


def test_special_argument_checks(gpt2):
    with pytest.raises(TypeError):
        gpt2.encode("x", allowed_special=EOT)  # a str that is not "all"
    with pytest.raises(ValueError, match=re.escape("<|nope|>")):
        gpt2.encode("x", allowed_special={"<|nope|>"})


def test_several_specials():
    enc = BPETokenizer.gpt2()
    specials = {EOT: 50256, "<|fim|>": 50257, "<|fim|>x": 50258}
    enc = BPETokenizer(enc.ranks, specials)
    assert enc.n_vocab == 50259
    text = "a<|fim|>xb<|fim|>c<|endoftext|>"
    with pytest.raises(ValueError, match=r"<\|fim\|>x"):  # leftmost, longest is named
        enc.encode(text)
    assert enc.encode(text, allowed_special="all") == (
        enc.encode_ordinary("a") + [50258] + enc.encode_ordinary("b") + [50257]
        + enc.encode_ordinary("c") + [50256])
    # only <|fim|> allowed, the others disallowed explicitly -> raises on <|endoftext|>
    with pytest.raises(ValueError, match="endoftext"):
        enc.encode("a<|fim|>c<|endoftext|>", allowed_special={"<|fim|>"})
    assert enc.encode("a<|fim|>c<|endoftext|>", allowed_special={"<|fim|>"},
                      disallowed_special=()) == (
        enc.encode_ordinary("a") + [50257] + enc.encode_ordinary("c<|endoftext|>"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TRICKY + [EOT, "<|", "|>", "endoftext"]), max_size=30).map("".join))
def test_specials_match_tiktoken(gpt2, tk, text):
    assert gpt2.encode(text, allowed_special="all") == tk.encode(text, allowed_special="all")
    assert gpt2.encode(text, disallowed_special=()) == tk.encode(text, disallowed_special=())


# ---------------------------------------------------------------------------------------------
# file formats


def _write_tiktoken(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


BYTE_LINES = [f"{_b64(bytes([b]))} {b}" for b in range(256)]


def test_tiktoken_file_roundtrip(tmp_path, gpt2):
    lines = BYTE_LINES + [f"{_b64(b'ab')} 256", "", f"{_b64(b'abc')} 257"]
    enc = BPETokenizer.from_tiktoken_file(_write_tiktoken(tmp_path / "x.tiktoken", lines),
                                          special_tokens={EOT: 258})
    assert enc.ranks[b"abc"] == 257 and enc.n_vocab == 259
    assert enc.encode("abc abcab") == [257, 32, 257, 256]
    shipped = resources.files("pygpt.tokenizer").joinpath("gpt2.tiktoken")
    with resources.as_file(shipped) as p:
        assert BPETokenizer.from_tiktoken_file(p).ranks == gpt2.ranks


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
def test_tiktoken_file_errors(tmp_path, bad_line, message):
    path = _write_tiktoken(tmp_path / "bad.tiktoken", BYTE_LINES + [bad_line])
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_tiktoken_file(path)


def test_tiktoken_file_missing_byte(tmp_path):
    path = _write_tiktoken(tmp_path / "bad.tiktoken", BYTE_LINES[:100] + BYTE_LINES[101:])
    with pytest.raises(ValueError, match="256 single bytes"):
        BPETokenizer.from_tiktoken_file(path)


def test_special_colliding_with_rank(tmp_path):
    path = _write_tiktoken(tmp_path / "x.tiktoken", BYTE_LINES)
    with pytest.raises(ValueError, match="also the rank"):
        BPETokenizer.from_tiktoken_file(path, special_tokens={EOT: 5})


def test_bytes_to_unicode():
    m = bpe_mod.bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[0] == "Ā" and m[ord("!")] == "!"
    assert m[0xAD] == "Ń" and m[0xFF] == "ÿ"
    assert all(ch.isprintable() and not ch.isspace() for ch in m.values())


def _gpt2_files(tmp_path, enc: BPETokenizer, n: int):
    """encoder.json + vocab.bpe for the first n ranks of ``enc`` (plus <|endoftext|> = n)."""
    u = bpe_mod.bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(u[x] for x in b)

    sub = BPETokenizer({t: i for t, i in enc.ranks.items() if i < n})
    encoder = {s(t): i for t, i in sub.ranks.items()}
    encoder[EOT] = n
    d = sub.decode_single_token_bytes
    merges = ["#version: 0.2"] + [f"{s(d(a))} {s(d(b))}" for a, b, _ in sub.merges()]
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return tmp_path / "encoder.json", tmp_path / "vocab.bpe", sub


def test_gpt2_files_small(tmp_path, gpt2):
    ej, vb, sub = _gpt2_files(tmp_path, gpt2, 600)
    lines = vb.read_text(encoding="utf-8").splitlines()
    assert lines[1:7] == ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n"]  # GPT-2's first merges
    enc = BPETokenizer.from_gpt2_files(ej, vb)
    assert enc.ranks == sub.ranks and len(enc.ranks) == 600
    assert enc.special_tokens == {EOT: 600}
    text = "the cat sat on the mat, then it ran <|endoftext|>"
    assert enc.encode(text, allowed_special="all") == \
        sub.encode_ordinary(text[:-len(EOT)]) + [600]


def test_gpt2_files_full(tmp_path, gpt2):
    ej, vb, _ = _gpt2_files(tmp_path, gpt2, 50256)
    assert len(vb.read_text(encoding="utf-8").splitlines()) == 50001
    enc = BPETokenizer.from_gpt2_files(ej, vb)
    assert enc.ranks == gpt2.ranks and enc.special_tokens == gpt2.special_tokens


def test_gpt2_files_errors(tmp_path, gpt2):
    ej, vb, _ = _gpt2_files(tmp_path, gpt2, 300)
    good = vb.read_text(encoding="utf-8").splitlines()
    vb.write_text("\n".join(good[:5] + ["Ġt"] + good[5:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe:6: expected two tokens"):
        BPETokenizer.from_gpt2_files(ej, vb)
    vb.write_text("\n".join(good[:5] + good[6:]) + "\n", encoding="utf-8")  # drop "r e"
    with pytest.raises(ValueError, match=r"produced by no merge|not in the encoder"):
        BPETokenizer.from_gpt2_files(ej, vb)
    vb.write_text("\n".join([good[0], good[2], good[1]] + good[3:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe:3: merged id .* does not increase"):
        BPETokenizer.from_gpt2_files(ej, vb)
    vb.write_text("\n".join(good) + "\n", encoding="utf-8")
    encoder = json.loads(ej.read_text(encoding="utf-8"))
    encoder["\u4e2d"] = 9999  # not a GPT-2 byte character
    ej.write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match="byte alphabet"):
        BPETokenizer.from_gpt2_files(ej, vb)


# ---------------------------------------------------------------------------------------------
# training

HUG = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5


def _new_tokens(enc: BPETokenizer) -> list[bytes]:
    return [enc.decode_single_token_bytes(i) for i in range(256, len(enc.ranks))]


def test_train_by_hand():
    # Pair counts, worked out by hand:
    #   u g 20, p u 17, u n 16, h u 15, g s 5, b u 4          -> ug
    #   u n 16, h ug 15, p u 12, p ug 5, ug s 5, b u 4        -> un
    #   h ug 15, p un 12, p ug 5, ug s 5, b un 4              -> hug
    #   p un 12, p ug 5, hug s 5, b un 4                      -> pun
    #   p ug 5 = hug s 5: tie, (ord('p'), 256) < (258, ord('s')) -> pug
    #   hug s 5, b un 4                                       -> hugs, then bun
    enc = BPETokenizer.train(HUG, vocab_size=1000)
    assert _new_tokens(enc) == [b"ug", b"un", b"hug", b"pun", b"pug", b"hugs", b"bun"]
    u, g, n, h, p, s, b = map(ord, "ugnhpsb")
    assert enc.merges() == [(u, g, 256), (u, n, 257), (h, 256, 258), (p, 257, 259),
                            (p, 256, 260), (258, s, 261), (b, 257, 262)]
    assert enc.encode("hugs bun") == [261, 32, 262]
    assert enc.n_vocab == 263 and enc.special_tokens == {}
    # vocab_size caps the merges; min_frequency stops early; specials come after
    assert _new_tokens(BPETokenizer.train(HUG, vocab_size=259)) == [b"ug", b"un", b"hug"]
    assert _new_tokens(BPETokenizer.train(HUG, vocab_size=1000, min_frequency=5))[-1] == b"hugs"
    withsp = BPETokenizer.train(HUG, vocab_size=1000, special_tokens=[EOT, "<|pad|>"])
    assert withsp.special_tokens == {EOT: 263, "<|pad|>": 264} and withsp.eot_token == 263
    small = BPETokenizer.train(HUG, vocab_size=260, special_tokens=[EOT])
    assert _new_tokens(small) == [b"ug", b"un", b"hug"] and small.n_vocab == 260


def test_train_tie_and_spaces():
    # words: "aaab", " aab", " ab" (the pre-tokenizer keeps the spaces)
    # a a 3 (2 in aaab) = a b 3: tie -> (97, 97) first; then a b 2 -> ab; then every pair once.
    enc = BPETokenizer.train("aaab aab ab", vocab_size=1000)
    assert _new_tokens(enc) == [b"aa", b"ab"]
    assert enc.encode("aaab aab ab") == [256, 257, 32, 256, 98, 32, 257]


def test_train_argument_checks():
    with pytest.raises(ValueError):
        BPETokenizer.train(HUG, vocab_size=255)
    with pytest.raises(ValueError):
        BPETokenizer.train(HUG, vocab_size=256, special_tokens=[EOT])
    with pytest.raises(TypeError):
        BPETokenizer.train([b"bytes"], vocab_size=300)
    assert BPETokenizer.train([], vocab_size=300).n_vocab == 256


def _naive_train(word_counts: dict[bytes, int], n_merges: int, min_frequency: int = 2):
    """Recount every pair at every step.

    Returns (merges, index of the first step that had a tie, or None).
    """
    words = {tuple(w): c for w, c in word_counts.items()}
    vocab = [bytes([i]) for i in range(256)]
    merges, first_tie = [], None
    while len(vocab) < 256 + n_merges:
        counts: Counter = Counter()
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] += c
        if not counts:
            break
        best_count = max(counts.values())
        if best_count < min_frequency:
            break
        best = sorted(p for p, c in counts.items() if c == best_count)
        if len(best) > 1 and first_tie is None:
            first_tie = len(merges)
        a, b = best[0]
        merged = vocab[a] + vocab[b]
        new = vocab.index(merged) if merged in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(merged)
        merges.append((a, b, new))
        nwords: Counter = Counter()
        for w, c in words.items():
            nwords[tuple(bpe_mod._merge_word(list(w), a, b, new))] += c
        words = dict(nwords)
    return merges, first_tie


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.lists(st.sampled_from(b"ab c"), min_size=1, max_size=9).map(bytes),
                       st.integers(1, 6), max_size=12),
       st.integers(0, 30), st.integers(1, 3))
def test_incremental_training_equals_naive(word_counts, n_merges, min_frequency):
    expected, _ = _naive_train(word_counts, n_merges, min_frequency)
    assert bpe_mod.train_merges(word_counts, n_merges, min_frequency) == expected


def test_train_deterministic_and_roundtrip(tmp_path):
    texts = [ENGLISH] * 3 + [ENGLISH.upper(), "naïve café 😀 ünïcödé " * 4]
    a = BPETokenizer.train(texts, vocab_size=400, special_tokens=[EOT])
    b = BPETokenizer.train(list(reversed(texts)), vocab_size=400, special_tokens=[EOT])
    assert a.ranks == b.ranks and a.special_tokens == b.special_tokens
    assert a.n_vocab == 400
    for text in texts + ["unseen words: zyxw 12345 \x00\t\n"]:
        ids = a.encode_ordinary(text)
        assert a.decode(ids) == text
    assert len(a.encode(ENGLISH)) < 0.6 * len(ENGLISH.encode())
    # the merge rule reproduces the training merges
    assert [m for m in a.merges()] == [m for m in bpe_mod.train_merges(
        Counter(p.encode() for t in texts for p in pretokenize(t)), 400 - 256 - 1)]

    path = tmp_path / "tok.json"
    a.save(path)
    c = BPETokenizer.load(path)
    assert c.ranks == a.ranks and c.special_tokens == a.special_tokens
    assert c.encode(ENGLISH + EOT, allowed_special="all") == \
        a.encode(ENGLISH + EOT, allowed_special="all")
    doc = json.loads(path.read_text())
    assert doc["format"] == "pygpt-bpe" and doc["version"] == 1 and doc["pattern"] == "gpt2"


def test_save_load_gpt2(tmp_path, gpt2):
    gpt2.save(tmp_path / "gpt2.json")
    enc = BPETokenizer.load(tmp_path / "gpt2.json")
    assert enc.ranks == gpt2.ranks and enc.special_tokens == gpt2.special_tokens
    assert enc.encode(ENGLISH) == gpt2.encode(ENGLISH)


def test_load_validation(tmp_path):
    enc = BPETokenizer.train(HUG, vocab_size=300, special_tokens=[EOT])
    path = tmp_path / "t.json"
    enc.save(path)
    good = json.loads(path.read_text())

    def broken(**change):
        p = tmp_path / f"broken{len(list(tmp_path.iterdir()))}.json"
        p.write_text(json.dumps(dict(good, **change)))
        return p

    cases = [
        (broken(format="tiktoken"), "format"),
        (broken(version=2), "version"),
        (broken(pattern="cl100k"), "pattern"),
        (broken(ranks={"YQ==": 0}), "ranks"),
        (broken(ranks=good["ranks"] + [["!!!", 999]]), "base64"),
        (broken(ranks=good["ranks"] + [["YQ==", 999]]), "duplicate token"),
        (broken(ranks=good["ranks"] + [["YWJj", 0]]), "share rank"),
        (broken(ranks=good["ranks"][1:]), "256 single bytes"),
        (broken(ranks=good["ranks"] + [["YWJj", True]]), "ranks"),
        (broken(special_tokens={EOT: 3}), "also the rank"),
        (broken(special_tokens={"": 400}), "non-empty"),
    ]
    for p, message in cases:
        with pytest.raises(ValueError, match=message):
            BPETokenizer.load(p)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a pygpt tokenizer"):
        BPETokenizer.load(path)


def _hf_merges(texts, n_merges, min_frequency=2) -> list[tuple[bytes, bytes]]:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=256 + n_merges, min_frequency=min_frequency,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    byte_of = {ch: b for b, ch in bpe_mod.bytes_to_unicode().items()}
    out = []
    for m in json.loads(tok.to_str())["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        out.append((bytes(byte_of[c] for c in a), bytes(byte_of[c] for c in b)))
    return out


def _our_merges(texts, n_merges, min_frequency=2) -> list[tuple[bytes, bytes]]:
    enc = BPETokenizer.train(texts, vocab_size=256 + n_merges, min_frequency=min_frequency)
    d = enc.decode_single_token_bytes
    return [(d(a), d(b)) for a, b, _ in enc.merges()]


def test_hf_trainer_with_ties():
    assert _our_merges(HUG, 50) == _hf_merges(HUG, 50) == [
        (b"u", b"g"), (b"u", b"n"), (b"h", b"ug"), (b"p", b"un"), (b"p", b"ug"),
        (b"hug", b"s"), (b"b", b"un")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.sampled_from("abcxy!-9"), min_size=1, max_size=8), max_size=25),
       st.integers(1, 40))
def test_hf_trainer_printable_ascii(texts, n_merges):
    # no spaces: both trainers order the bytes alike, so even ties must agree
    assert _our_merges(texts, n_merges) == _hf_merges(texts, n_merges)


def test_hf_trainer_with_spaces_no_ties():
    rng = random.Random(1234)
    words = ENGLISH.split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    counts = Counter(p.encode() for t in texts for p in pretokenize(t))
    merges, first_tie = _naive_train(counts, 200)
    n = len(merges) if first_tie is None else first_tie  # the merges before the first tie
    assert n >= 20  # enough merges to be a meaningful comparison
    assert _our_merges(texts, n) == _hf_merges(texts, n)
    assert len(_our_merges(texts, n)) == n


# ---------------------------------------------------------------------------------------------
# speed


def test_encode_speed():
    rng = random.Random(0)
    words = ENGLISH.split() + [w.capitalize() for w in ENGLISH.split()]
    text = ""
    while len(text) < 200_000:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 20)))
        text += line + rng.choice([". ", ".\n", ", ", "\n\n", "; "])
    enc = BPETokenizer.gpt2()  # cold cache
    t0 = time.perf_counter()
    ids = enc.encode(text)
    elapsed = time.perf_counter() - t0
    assert enc.decode(ids) == text
    assert elapsed < 5.0, f"{len(text) / 1e3 / elapsed:.0f} KB/s"
