"""Our safetensors reader/writer: round trips, compatibility with the safetensors package, and
validation of lying headers."""
import json
import struct

import numpy as np
import pytest

from pygpt.safetensors import SafetensorsError, load_file, save_file


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b": np.arange(5, dtype=np.int64),
        "scalar": np.array(2.5, dtype=np.float64),
        "empty": np.zeros((0, 3), dtype=np.float16),
        "mask": np.array([True, False]),
    }


def test_round_trip_and_metadata(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file(_tensors(), p, metadata={"k": "v"})
    got, meta = load_file(p)
    assert meta == {"k": "v"}
    for k, v in _tensors().items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed away


def test_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    t = {k: v for k, v in _tensors().items() if k != "empty"}
    save_file(t, ours)
    for k, v in st.load_file(str(ours)).items():
        np.testing.assert_array_equal(v, t[k])
    st.save_file(t, str(theirs), metadata={"m": "1"})
    got, meta = load_file(theirs)
    assert meta == {"m": "1"}
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v)


def _write_raw(path, header: dict, data: bytes, n=None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + data)


@pytest.mark.parametrize("header,data,match", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
    ({"x": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "non-negative"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "cover 4 of the 8"),
    ({"x": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 8]}}, b"\0" * 8, "needs"),
    ({"x": [1, 2]}, b"", "exactly dtype"),
])
def test_lying_headers_are_rejected(tmp_path, header, data, match):
    p = tmp_path / "bad.safetensors"
    _write_raw(p, header, data)
    with pytest.raises(SafetensorsError, match=match):
        load_file(p)


def test_truncated_and_oversized_headers(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="too short"):
        load_file(p)
    _write_raw(p, {}, b"", n=2**40)
    with pytest.raises(SafetensorsError, match="exceeds"):
        load_file(p)
    _write_raw(p, {}, b"", n=1000)
    with pytest.raises(SafetensorsError, match="runs past the end"):
        load_file(p)
    p.write_bytes(struct.pack("<Q", 3) + b"[1]")
    with pytest.raises(SafetensorsError, match="JSON object"):
        load_file(p)
