"""Hostile tokenizer files: thousands of mutated ``.tiktoken``, GPT-2 ``encoder.json`` + ``vocab.bpe``,
HF ``tokenizer.json`` and pygpt tokenizer files must either load or raise ValueError (UnicodeDecodeError
is one) -- never another exception, a hang or a crash.

A file that loads must give a working tokenizer: ``decode(encode(text)) == text`` for a sample with
every byte class, and its ids bounded by the vocabulary it holds (no allocation larger than the file
can justify: the C++ encoder refuses ids above 4 x count + 2**20). For ``.tiktoken`` files the C++
parser (``Tokenizer.from_tiktoken_file`` with the extension) is also checked against the pure-Python
reference parser: both refuse, or both load the same ranks and encode the sample alike; the one
documented difference is that the C++ side refuses ids >= 2**31 - 1 and too-sparse ids.

Each base file is a small vocabulary (256 bytes + 44 merges + ``<|endoftext|>``), so one example
costs about a millisecond; the counts below are hypothesis examples (all under a minute in all).
"""
from __future__ import annotations

import base64
import functools
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygpt.tokenizer import BPETokenizer, Tokenizer
from pygpt.tokenizer.bpe import ENDOFTEXT, bytes_to_unicode
from pygpt.tokenizer.fast import NATIVE_BPE

SAMPLE = "Hello world, it's 2024!\n\tcafé 😀 naïve  spaces\u00a0and\u3000日本語 x\x00y"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = ("the quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs. " * 4
        + "hello hello world world worlds words wordy")


@functools.lru_cache(maxsize=1)
def _base() -> dict:
    """The valid files (name -> bytes) every mutation starts from (not a fixture: hypothesis would
    print it with every failing example)."""
    ref = BPETokenizer.train([TEXT], vocab_size=301, special_tokens=[ENDOFTEXT])
    u = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(u[x] for x in b)

    ordered = sorted(ref.ranks.items(), key=lambda kv: kv[1])
    files = {"tiktoken": "".join(f"{base64.b64encode(t).decode()} {i}\n" for t, i in ordered).encode()}
    encoder = {s(t): i for t, i in ordered} | ref.special_tokens
    d = ref.decode_single_token_bytes
    merges = [(s(d(a)), s(d(b))) for a, b, _ in ref.merges()]
    files["encoder.json"] = json.dumps(encoder).encode()
    files["vocab.bpe"] = ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode()
    files["tokenizer.json"] = json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "normalizer": None,
        "added_tokens": [{"id": i, "content": t, "special": True} for t, i in ref.special_tokens.items()],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": {s(t): i for t, i in ordered},
                  "merges": [f"{a} {b}" for a, b in merges]},
    }).encode()
    files["pygpt.json"] = json.dumps({
        "format": "pygpt-bpe", "version": 1, "pattern": "gpt2", "name": "fuzz",
        "ranks": [[base64.b64encode(t).decode(), i] for t, i in ordered], "special_tokens": ref.special_tokens,
    }).encode()
    files["_ref"] = ref
    return files


# what the C++ encoder refuses beyond the reference's rules: ids >= 2**31 - 1, too sparse ids
LIMITS = r"too large|too sparse|2\*\*31|2\^31"


def _working(enc, where: str) -> None:
    """A loaded tokenizer round-trips the sample and holds no id it cannot justify."""
    ids = enc.encode_ordinary(SAMPLE)
    assert enc.decode(ids) == SAMPLE, where
    assert all(0 <= i < enc.n_vocab for i in ids), where
    specials = enc.special_tokens
    if specials:
        text = "a" + "b".join(specials) + "c"
        assert enc.decode(enc.encode(text, allowed_special="all")) == text, where
    if getattr(enc, "native", False):
        assert enc.n_vocab <= 4 * (len(enc.ranks) + len(specials)) + 2**20, where


def _load(loader, *paths):
    """(tokenizer, None), or (None, the ValueError) when the loader refused the file."""
    try:
        return loader(*paths), None
    except ValueError as e:
        return None, e


def _write(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---- mutations

byte_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(b" \n\r\t=-0+9\\\"{}[],:")),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
)
line_mutation = st.one_of(
    st.tuples(st.just("dup_line"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("drop_line"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("swap_lines"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("number"), st.integers(0, 10**6),
              st.one_of(st.integers(-2**70, 2**70), st.sampled_from([2**31 - 2, 2**31 - 1, 2**31, 2**32, 2**64]))),
)


def _mutate(data: bytes, muts) -> bytes:
    data = bytearray(data)
    for kind, pos, val in muts:
        if kind == "flip" and data:
            data[pos % len(data)] ^= val
        elif kind == "truncate":
            del data[pos % (len(data) + 1):]
        elif kind == "insert":
            data.insert(pos % (len(data) + 1), val)
        elif kind == "delete" and data:
            p = pos % len(data)
            del data[p:p + val]
        elif kind in ("dup_line", "drop_line", "swap_lines"):
            lines = bytes(data).split(b"\n")
            i, j = pos % len(lines), val % len(lines)
            if kind == "dup_line":
                lines.insert(j, lines[i])
            elif kind == "drop_line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif kind == "number":
            spans = [m.span() for m in re.finditer(rb"\d+", bytes(data))]
            if spans:
                a, b = spans[pos % len(spans)]
                data[a:b] = str(val).encode()
    return bytes(data)


# ---- .tiktoken: the C++ parser against the reference parser


def _check_tiktoken(path) -> None:
    ref, ref_err = _load(BPETokenizer.from_tiktoken_file, path)
    fast, fast_err = _load(Tokenizer.from_tiktoken_file, path)
    if ref is not None:
        _working(ref, "reference")
    if fast is not None:
        _working(fast, "Tokenizer")
    if fast is None and ref is not None:  # only the C++ side's documented extra limits
        assert re.search(LIMITS, str(fast_err)), f"only the C++ parser refused: {fast_err}"
    elif fast is not None and ref is None:
        raise AssertionError(f"the C++ parser loaded a file the reference refuses: {ref_err}")
    elif fast is not None:
        assert fast.ranks == ref.ranks and fast.special_tokens == ref.special_tokens
        assert fast.encode_ordinary(SAMPLE) == ref.encode_ordinary(SAMPLE)


@settings(max_examples=700, **SETTINGS)
@given(muts=st.lists(st.one_of(byte_mutation, line_mutation), min_size=1, max_size=4))
def test_tiktoken_mutations(tmp_path, muts):
    _check_tiktoken(_write(tmp_path, "m.tiktoken", _mutate(_base()["tiktoken"], muts)))


@settings(max_examples=150, **SETTINGS)
@given(lines=st.lists(st.tuples(st.binary(min_size=0, max_size=6), st.integers(-5, 300)), max_size=12),
       junk=st.sampled_from(["", " ", "\t", "==", " extra", "\r"]))
def test_tiktoken_extra_lines(tmp_path, lines, junk):
    """Well-formed-looking lines appended to a valid file: duplicates, empty tokens, negative ranks."""
    extra = "".join(f"{base64.b64encode(t).decode()}{junk} {r}\n" for t, r in lines).encode()
    _check_tiktoken(_write(tmp_path, "x.tiktoken", _base()["tiktoken"] + extra))


# ---- JSON formats: byte mutations and lying fields

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    """Every path (tuple of keys / indices) in a JSON document, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _replace(doc, path, value, how):
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if how == "delete":
        del parent[path[-1]]
    elif how == "rename" and isinstance(parent, dict):
        parent[str(value)[:8]] = parent.pop(path[-1])
    else:
        parent[path[-1]] = value


def _lie(data: bytes, draw, value, how: str) -> bytes:
    """Replace, delete or rename one field of a JSON file; half the time one of the top two levels,
    where a few fields decide everything (most paths are vocabulary entries)."""
    doc = json.loads(data)
    paths = _paths(doc)
    top = [p for p in paths if len(p) <= 2]
    path = draw(st.sampled_from(top if draw(st.booleans()) else paths))
    _replace(doc, path, value, how)
    return json.dumps(doc).encode()


LOADERS = {
    "tokenizer.json": lambda p: Tokenizer.from_hf_json(p),
    "pygpt.json": lambda p: Tokenizer.load(p),
}


def _check_json(kind: str, path) -> None:
    enc, err = _load(LOADERS[kind], path)
    if enc is not None:
        _working(enc, kind)
    if kind == "pygpt.json":
        ref, ref_err = _load(BPETokenizer.load, path)
        if ref is not None:
            _working(ref, "BPETokenizer.load")
        if enc is None and ref is not None:
            assert re.search(LIMITS, str(err)), f"only Tokenizer.load refused: {err}"
        assert enc is None or ref is not None, f"only BPETokenizer.load refused: {ref_err}"


def _check_gpt2(enc_path, bpe_path) -> None:
    for loader in (Tokenizer.from_gpt2_files, BPETokenizer.from_gpt2_files):
        enc, _ = _load(loader, enc_path, bpe_path)
        if enc is not None:
            _working(enc, loader.__qualname__)


@settings(max_examples=400, **SETTINGS)
@given(kind=st.sampled_from(sorted(LOADERS)), muts=st.lists(byte_mutation, min_size=1, max_size=3))
def test_json_byte_mutations(tmp_path, kind, muts):
    _check_json(kind, _write(tmp_path, kind, _mutate(_base()[kind], muts)))


@settings(max_examples=600, **SETTINGS)
@given(data=st.data(), kind=st.sampled_from(sorted(LOADERS)), value=json_values,
       how=st.sampled_from(["replace", "replace", "delete", "rename"]))
def test_json_lying_fields(tmp_path, data, kind, value, how):
    _check_json(kind, _write(tmp_path, kind, _lie(_base()[kind], data.draw, value, how)))


@settings(max_examples=500, **SETTINGS)
@given(which=st.sampled_from(["encoder.json", "vocab.bpe"]),
       muts=st.lists(st.one_of(byte_mutation, line_mutation), min_size=1, max_size=3))
def test_gpt2_files_mutations(tmp_path, which, muts):
    files = {n: _base()[n] for n in ("encoder.json", "vocab.bpe")}
    files[which] = _mutate(files[which], muts)
    _check_gpt2(_write(tmp_path, "encoder.json", files["encoder.json"]),
                _write(tmp_path, "vocab.bpe", files["vocab.bpe"]))


@settings(max_examples=400, **SETTINGS)
@given(data=st.data(), value=json_values, how=st.sampled_from(["replace", "delete", "rename"]))
def test_gpt2_encoder_lying_fields(tmp_path, data, value, how):
    _check_gpt2(_write(tmp_path, "encoder.json", _lie(_base()["encoder.json"], data.draw, value, how)),
                _write(tmp_path, "vocab.bpe", _base()["vocab.bpe"]))


# ---- fixed hostile files


def test_base_files_load(tmp_path):
    ref = _base()["_ref"]
    for kind, loader in [("tiktoken", Tokenizer.from_tiktoken_file), ("tokenizer.json", Tokenizer.from_hf_json),
                         ("pygpt.json", Tokenizer.load)]:
        enc = loader(_write(tmp_path, kind, _base()[kind]))
        assert enc.ranks == ref.ranks, kind
        _working(enc, kind)
    enc = Tokenizer.from_gpt2_files(_write(tmp_path, "encoder.json", _base()["encoder.json"]),
                                    _write(tmp_path, "vocab.bpe", _base()["vocab.bpe"]))
    assert enc.ranks == ref.ranks and enc.special_tokens == ref.special_tokens


@pytest.mark.parametrize("kind", ["tokenizer.json", "pygpt.json", "encoder.json"])
@pytest.mark.parametrize("doc", [b"[" * 100_000, b'{"a":' * 100_000, b"\xff\xfe{}", b"", b"null", b"1e999999"])
def test_json_loaders_refuse_junk(tmp_path, kind, doc):
    """Deep nesting (RecursionError inside json), bad UTF-8, empty, wrong top-level type: ValueError."""
    p = _write(tmp_path, kind, doc)
    with pytest.raises(ValueError):
        if kind == "encoder.json":
            Tokenizer.from_gpt2_files(p, _write(tmp_path, "vocab.bpe", _base()["vocab.bpe"]))
        else:
            LOADERS[kind](p)


@pytest.mark.parametrize("token", [b"QUJD=", b"QUJD==", b"0IGo="])
def test_tiktoken_excess_padding_is_refused_by_both_parsers(tmp_path, token):
    """Found by test_tiktoken_mutations: base64.b64decode accepts '=' after a full quantum, the C++
    parser did not; the reference now refuses it too."""
    p = _write(tmp_path, "pad.tiktoken", _base()["tiktoken"] + token + b" 300\n")
    for loader in (BPETokenizer.from_tiktoken_file, Tokenizer.from_tiktoken_file):
        with pytest.raises(ValueError, match="invalid base64"):
            loader(p)


def test_tiktoken_huge_ids_are_refused_without_allocating(tmp_path):
    """A lying rank near 2**31 would make the C++ tables 2**31 entries long: refused as too sparse."""
    if not NATIVE_BPE:
        pytest.skip("the reference keeps ranks in a dict: nothing to allocate")
    p = _write(tmp_path, "h.tiktoken", _base()["tiktoken"] + b"enp6 2147483646\n")
    with pytest.raises(ValueError, match="too sparse"):
        Tokenizer.from_tiktoken_file(p)
    with pytest.raises(ValueError, match="too large"):
        Tokenizer.from_tiktoken_file(_write(tmp_path, "g.tiktoken", _base()["tiktoken"] + b"enp6 2147483647\n"))
