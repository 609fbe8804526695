"""Token files (raw + JSON sidecar, memmap), the training sampler and evaluation batches."""
import json
import os

import numpy as np
import pytest

from pygpt.data.tokens import BatchSampler, TokenFile, iter_eval_batches, sidecar_path, write_token_file

# ----------------------------------------------------------------------------- token files


def test_roundtrip_uint16(tmp_path):
    ids = np.array([0, 1, 2, 65535, 50256, 7], dtype=np.int64)
    path = tmp_path / "train.bin"
    assert write_token_file(path, ids, vocab_size=65536) == 6
    assert path.stat().st_size == 12
    side = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "train.bin.json"
    assert side == {"format": "pygpt-tokens", "version": 1, "dtype": "uint16", "count": 6, "vocab_size": 65536}
    tf = TokenFile(path)
    assert len(tf) == 6 and tf.vocab_size == 65536 and tf.dtype == np.dtype("<u2")
    assert isinstance(tf.tokens, np.memmap) and not tf.tokens.flags.writeable
    np.testing.assert_array_equal(tf.tokens, ids)
    # raw little-endian data, readable without pygpt
    np.testing.assert_array_equal(np.fromfile(path, dtype="<u2"), ids)
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "train.bin.json"]


def test_roundtrip_uint32_and_meta(tmp_path):
    ids = [0, 65536, 100_000, 2**32 - 1]
    path = tmp_path / "big.bin"
    write_token_file(path, ids, vocab_size=2**32, meta={"tokenizer": "bpe-x"})
    tf = TokenFile(path)
    assert tf.dtype == np.dtype("<u4") and tf.vocab_size == 2**32 and len(tf) == 4
    assert tf.meta == {"tokenizer": "bpe-x"}
    assert path.stat().st_size == 16
    np.testing.assert_array_equal(tf.tokens, ids)
    # the dtype switch is exactly at 65536
    write_token_file(tmp_path / "a.bin", [5], vocab_size=65536)
    write_token_file(tmp_path / "b.bin", [5], vocab_size=65537)
    assert TokenFile(tmp_path / "a.bin").dtype.name == "uint16"
    assert TokenFile(tmp_path / "b.bin").dtype.name == "uint32"


def test_overwrite_and_empty(tmp_path):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(10), vocab_size=10)
    write_token_file(path, np.arange(3, dtype=np.uint8), vocab_size=300)
    np.testing.assert_array_equal(TokenFile(path).tokens, [0, 1, 2])
    write_token_file(path, [], vocab_size=10)
    tf = TokenFile(path)
    assert len(tf) == 0 and tf.tokens.shape == (0,)
    with TokenFile(path) as tf:
        assert len(tf) == 0


def test_write_validation(tmp_path):
    path = tmp_path / "t.bin"
    with pytest.raises(ValueError, match=r"token id 10 is outside \[0, vocab_size=10\)"):
        write_token_file(path, [1, 10], vocab_size=10)
    with pytest.raises(ValueError, match="token id -1"):
        write_token_file(path, [1, -1], vocab_size=10)
    with pytest.raises(TypeError, match="integers"):
        write_token_file(path, [1.0, 2.0], vocab_size=10)
    with pytest.raises(ValueError, match="1-D"):
        write_token_file(path, [[1, 2]], vocab_size=10)
    with pytest.raises(ValueError, match="vocab_size"):
        write_token_file(path, [1], vocab_size=0)
    with pytest.raises(ValueError, match="vocab_size"):
        write_token_file(path, [1], vocab_size=2**32 + 1)
    with pytest.raises(TypeError, match="vocab_size"):
        write_token_file(path, [1], vocab_size=10.0)
    with pytest.raises(TypeError):
        write_token_file(path, [1], vocab_size=10, meta={"x": object()})
    assert list(tmp_path.iterdir()) == []  # nothing written by a failed call


def _good(tmp_path, n=8, vocab=100):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(n) % vocab, vocab_size=vocab)
    return path, sidecar_path(path)


def _edit_sidecar(side, **changes):
    d = json.loads(side.read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    side.write_text(json.dumps(d))


def test_sidecar_validation(tmp_path):
    path, side = _good(tmp_path)
    with pytest.raises(FileNotFoundError, match="token file not found"):
        TokenFile(tmp_path / "other.bin")
    os.rename(side, tmp_path / "moved.json")
    with pytest.raises(FileNotFoundError, match=r"sidecar not found: .*t\.bin\.json"):
        TokenFile(path)
    os.rename(tmp_path / "moved.json", side)

    side.write_text("{not json")
    with pytest.raises(ValueError, match=r"t\.bin\.json: not a valid JSON sidecar"):
        TokenFile(path)
    side.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        TokenFile(path)

    cases = [
        ({"dtype": "float32"}, r"unknown dtype 'float32'"),
        ({"dtype": None}, r"unknown dtype None"),
        ({"format": "other"}, "expected format 'pygpt-tokens'"),
        ({"version": 2}, "version 1"),
        ({"count": -1}, "count must be an integer"),
        ({"count": "8"}, "count must be an integer"),
        ({"count": 9}, r"size mismatch: the sidecar says 9 uint16 tokens = 18 bytes, the file has 16 bytes"),
        ({"vocab_size": 0}, "vocab_size must be an integer >= 1"),
        ({"vocab_size": 70000}, "vocab_size 70000 does not fit in uint16"),
        ({"dtype": "uint32"}, r"size mismatch: .* 32 bytes, the file has 16 bytes"),
    ]
    for change, msg in cases:
        path, side = _good(tmp_path)
        _edit_sidecar(side, **change)
        with pytest.raises(ValueError, match=msg):
            TokenFile(path)

    path, side = _good(tmp_path)
    with open(path, "ab") as f:  # truncated/extended data file
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"t\.bin: size mismatch"):
        TokenFile(path)


# ----------------------------------------------------------------------------- sampler


def test_sampler_windows_are_contiguous_slices():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 50000, size=5000).astype(np.uint16)
    s = BatchSampler(tokens, batch_size=8, context=32, seed=3)
    for _ in range(20):
        x, y = s.sample()
        assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
        for row_x, row_y in zip(x, y, strict=True):
            # find the window in the stream: a real contiguous slice
            starts = [i for i in np.flatnonzero(tokens == row_x[0]) if i + 33 <= len(tokens)
                      and np.array_equal(tokens[i : i + 32], row_x)]
            assert starts, "window not found in stream"
            i = starts[0]
            np.testing.assert_array_equal(tokens[i + 1 : i + 33], row_y)


def test_sampler_starts_cover_the_whole_range():
    tokens = np.arange(12)  # windows of 4 + 1: starts 0..7
    s = BatchSampler(tokens, batch_size=64, context=4, seed=0)
    seen = set()
    for _ in range(10):
        x, y = next(s)
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(4))
        np.testing.assert_array_equal(y, x + 1)
        seen |= set(x[:, 0].tolist())
    assert seen == set(range(8))
    # the shortest legal stream: exactly one window
    x, y = BatchSampler(np.arange(5), 3, 4, seed=0).sample()
    np.testing.assert_array_equal(x, [[0, 1, 2, 3]] * 3)
    np.testing.assert_array_equal(y, [[1, 2, 3, 4]] * 3)


def test_sampler_determinism_and_seed():
    tokens = np.arange(10_000) % 997
    a = BatchSampler(tokens, 4, 16, seed=7)
    b = BatchSampler(tokens, 4, 16, seed=7)
    c = BatchSampler(tokens, 4, 16, seed=8)
    for _ in range(5):
        xa, ya = a.sample()
        xb, yb = b.sample()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.sample()[0], c.sample()[0])


def test_sampler_state_restore_json_roundtrip(tmp_path):
    tokens = np.arange(100_000) % 50257
    path = tmp_path / "t.bin"
    write_token_file(path, tokens, vocab_size=50257)
    tf = TokenFile(path)
    a = BatchSampler(tf, batch_size=5, context=64, seed=1234)  # a TokenFile is accepted
    for _ in range(7):
        a.sample()
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON data

    def ints(v):
        if isinstance(v, dict):
            return [i for x in v.values() for i in ints(x)]
        return [v] if isinstance(v, int) else []

    assert all(abs(i) < 2**53 for i in ints(state))  # safe in any JSON reader
    assert state["batches_drawn"] == 7
    expected = [a.sample() for _ in range(3)]
    b = BatchSampler(tf.tokens, batch_size=5, context=64, seed=0)  # a different seed
    b.load_state_dict(state)
    assert b.seed == 1234 and b.batches_drawn == 7
    for xe, ye in expected:
        x, y = b.sample()
        np.testing.assert_array_equal(x, xe)
        np.testing.assert_array_equal(y, ye)
    assert b.state_dict() == a.state_dict()


def test_sampler_state_mismatch():
    tokens = np.arange(1000)
    state = BatchSampler(tokens, 4, 8, seed=0).state_dict()
    with pytest.raises(ValueError, match="batch_size=4, this sampler has batch_size=2"):
        BatchSampler(tokens, 2, 8).load_state_dict(state)
    with pytest.raises(ValueError, match="context"):
        BatchSampler(tokens, 4, 16).load_state_dict(state)
    with pytest.raises(ValueError, match="n_tokens"):
        BatchSampler(tokens[:500], 4, 8).load_state_dict(state)


def test_sampler_too_short_and_bad_args():
    with pytest.raises(ValueError, match=r"too short: 8 tokens, need at least context \+ 1 = 9"):
        BatchSampler(np.arange(8), 2, 8)
    with pytest.raises(ValueError, match="too short: 0 tokens"):
        BatchSampler(np.arange(0), 2, 8)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(np.arange(100), 0, 8)
    with pytest.raises(ValueError, match="context"):
        BatchSampler(np.arange(100), 2, 0)
    with pytest.raises(ValueError, match="1-D"):
        BatchSampler(np.zeros((10, 10), dtype=np.int64), 2, 4)
    with pytest.raises(TypeError, match="integers"):
        BatchSampler(np.zeros(100), 2, 4)


# ----------------------------------------------------------------------------- evaluation


def test_eval_batches_non_overlapping_in_order():
    tokens = np.arange(23)  # (23 - 1) // 5 = 4 windows: starts 0, 5, 10, 15
    batches = list(iter_eval_batches(tokens, batch_size=3, context=5))
    assert [b[0].shape for b in batches] == [(3, 5), (1, 5)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], [0, 5, 10, 15])
    np.testing.assert_array_equal(x.ravel(), np.arange(20))  # every token exactly once, in order
    np.testing.assert_array_equal(y, x + 1)
    # deterministic: the same on every call
    again = list(iter_eval_batches(tokens, 3, 5))
    for (xa, ya), (xb, yb) in zip(batches, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_eval_batches_max_batches_spread():
    tokens = np.arange(1001)  # 100 windows of 10
    batches = list(iter_eval_batches(tokens, batch_size=4, context=10, max_batches=5))
    assert len(batches) == 5 and all(b[0].shape == (4, 10) for b in batches)
    starts = np.concatenate([b[0][:, 0] for b in batches])
    np.testing.assert_array_equal(starts, np.arange(20) * 50)  # windows 0, 5, 10, ... 95
    # more batches than exist: all windows once
    allb = list(iter_eval_batches(tokens, 4, 10, max_batches=1000))
    assert sum(len(b[0]) for b in allb) == 100


def test_eval_batches_errors_raise_at_call():
    with pytest.raises(ValueError, match="too short"):
        iter_eval_batches(np.arange(4), 2, 4)
    with pytest.raises(ValueError, match="max_batches"):
        iter_eval_batches(np.arange(100), 2, 4, max_batches=0)
    # the shortest legal stream
    (x, y), = list(iter_eval_batches(np.arange(5), 2, 4))
    np.testing.assert_array_equal(x, [[0, 1, 2, 3]])
    np.testing.assert_array_equal(y, [[1, 2, 3, 4]])
