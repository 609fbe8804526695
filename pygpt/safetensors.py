"""Reading and writing the safetensors layout, validated, without pickle.

File: 8-byte little-endian header length N, N bytes of JSON header, then the raw little-endian
tensor bytes. The header maps each name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the data section) plus an optional "__metadata__" of str -> str.

The reader checks everything before it allocates: header size bounded and inside the file, JSON
object, known dtypes, non-negative integer shapes, byte span = prod(shape) × itemsize, spans
inside the data section, no overlaps and no gaps. Writes go to a temporary file in the same
folder, are fsynced, then renamed over the target (atomic on POSIX).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

from .autograd import Tensor
from .backend import to_numpy

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message says what is wrong and where."""


def save_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write name -> array (NumPy or CuPy) atomically. Metadata values must be strings."""
    header: dict = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name, arr in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if isinstance(arr, Tensor):
            arr = arr.data
        a = to_numpy(arr)  # copies CuPy arrays to the host
        a = a if a.flags.c_contiguous else a.copy()  # (ascontiguousarray would make 0-d arrays 1-d)
        if a.dtype not in _CODES:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot store")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _CODES[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned
    atomic_write(path, [struct.pack("<Q", len(raw)), raw] + [a.reshape(-1).view(np.uint8) for a in arrays])


def atomic_write(path, chunks) -> None:
    """Write byte chunks to a temporary file beside `path`, fsync, rename over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_header(path) -> tuple[dict, dict, int]:
    """Parse and validate the header: returns (entries, metadata, data_start)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: file is {size} bytes, too short for the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} runs past the end of the {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: entry must have exactly dtype, shape, data_offsets")
        if not isinstance(e["dtype"], str) or e["dtype"] not in DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype {e['dtype']!r} (known: {sorted(DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise SafetensorsError(f"{where}: data_offsets must be [begin, end] integers, got {offs!r}")
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise SafetensorsError(f"{where}: data_offsets {offs} fall outside the {data_len}-byte data section")
        count = 1
        for s in shape:
            count *= s
        if count * np.dtype(DTYPES[e["dtype"]]).itemsize != end - begin:
            raise SafetensorsError(
                f"{where}: shape {shape} × {e['dtype']} needs {count * np.dtype(DTYPES[e['dtype']]).itemsize} bytes, "
                f"but data_offsets span {end - begin}"
            )
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            kind = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise SafetensorsError(f"{path}: tensor {name!r} at byte {begin} {kind} (expected {pos})")
        pos = end
    if pos != data_len:
        raise SafetensorsError(f"{path}: tensors cover {pos} of the {data_len} data bytes")
    return header, metadata, 8 + n


def load_file(path) -> tuple[dict, dict]:
    """Read (name -> NumPy array, metadata) after validating the header."""
    header, metadata, start = read_header(path)
    out = {}
    with open(os.fspath(path), "rb") as f:
        for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = e["data_offsets"]
            f.seek(start + begin)
            buf = f.read(end - begin)
            dt = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
            out[name] = np.frombuffer(buf, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(e["shape"])
    return out, metadata
