"""Token files and batches.

File format (written by :func:`write_token_file`, read by :class:`TokenFile`)
    ``PATH``       the token ids, raw little-endian ``uint16`` (when ``vocab_size <= 65536``) or
                   ``uint32``; no header, so ``np.memmap(PATH, dtype="<u2")`` reads it directly.
    ``PATH.json``  the sidecar: ``{"format": "pygpt-tokens", "version": 1, "dtype": "uint16",
                   "count": N, "vocab_size": V, "meta": {...}}`` (``meta``: optional free JSON,
                   e.g. the tokenizer's name).
    Both are written to temporary files in the same folder and moved into place with
    ``os.replace`` (data first, then sidecar), so a reader never sees a half-written file; a data
    file that does not match its sidecar is reported, never read as garbage. No pickle.

Batches
    :class:`BatchSampler` draws ``batch_size`` random windows of ``context + 1`` consecutive tokens:
    ``x = window[:-1]``, ``y = window[1:]`` (int64, shape ``(B, T)``). Its RNG state is plain JSON
    data (:meth:`BatchSampler.state_dict`), so a resumed run draws exactly the same batches.
    :func:`iter_eval_batches` gives fixed, non-overlapping windows for validation loss.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["BatchSampler", "TokenFile", "iter_eval_batches", "sidecar_path", "write_token_file"]

_FORMAT = "pygpt-tokens"
_VERSION = 1
_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_MAX_VOCAB = {"uint16": 1 << 16, "uint32": 1 << 32}


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a token file: ``PATH + ".json"``."""
    return Path(os.fspath(path) + ".json")


def _dtype_name_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= _MAX_VOCAB["uint16"] else "uint32"


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def write_token_file(path: str | os.PathLike, ids, vocab_size: int, meta: dict | None = None) -> int:
    """Write token ids to ``path`` (raw) and ``path.json`` (sidecar). Returns the token count.

    ``ids``: a 1-D sequence or array of integers in ``[0, vocab_size)``. The data type is uint16
    when ``vocab_size <= 65536``, else uint32 (``vocab_size`` up to 2**32).
    """
    if isinstance(vocab_size, (bool, np.bool_)) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    vocab_size = int(vocab_size)
    if not 1 <= vocab_size <= _MAX_VOCAB["uint32"]:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    arr = np.asarray(ids)
    if arr.size == 0:
        arr = arr.astype(np.int64).reshape(0)
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside [0, vocab_size={vocab_size})")
    name = _dtype_name_for(vocab_size)
    data = np.ascontiguousarray(arr, dtype=_DTYPES[name])
    side = {
        "format": _FORMAT,
        "version": _VERSION,
        "dtype": name,
        "count": int(data.size),
        "vocab_size": vocab_size,
    }
    if meta is not None:
        json.dumps(meta)  # fail before writing anything if it is not JSON data
        side["meta"] = meta
    path = Path(path)
    _write_atomic(path, lambda f: f.write(data.tobytes()))
    text = json.dumps(side, indent=1, sort_keys=True) + "\n"
    _write_atomic(sidecar_path(path), lambda f: f.write(text.encode("utf-8")))
    return int(data.size)


class TokenFile:
    """A token file opened read-only as a memory map.

    ``.tokens`` (1-D ``np.memmap``, or an empty array for 0 tokens), ``len()``, ``.vocab_size``,
    ``.dtype``, ``.meta``, ``.path``. The sidecar is validated on open: format and version, a known
    dtype that can hold ``vocab_size`` ids, and a data file of exactly ``count * itemsize`` bytes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        side_path = sidecar_path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"token file not found: {str(self.path)!r}")
        if not side_path.is_file():
            raise FileNotFoundError(
                f"token file sidecar not found: {str(side_path)!r} "
                f"(expected next to {self.path.name}; write_token_file creates it)"
            )
        try:
            side = json.loads(side_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{side_path}: not a valid JSON sidecar ({e})") from None
        if not isinstance(side, dict):
            raise ValueError(f"{side_path}: sidecar must be a JSON object, got {type(side).__name__}")
        if side.get("format") != _FORMAT or side.get("version") != _VERSION:
            raise ValueError(
                f"{side_path}: expected format {_FORMAT!r} version {_VERSION}, "
                f"got format {side.get('format')!r} version {side.get('version')!r}"
            )
        name = side.get("dtype")
        if name not in _DTYPES:
            raise ValueError(f"{side_path}: unknown dtype {name!r} (expected one of {sorted(_DTYPES)})")
        count, vocab = side.get("count"), side.get("vocab_size")
        for key, v, lo in (("count", count, 0), ("vocab_size", vocab, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{side_path}: {key} must be an integer >= {lo}, got {v!r}")
        if vocab > _MAX_VOCAB[name]:
            raise ValueError(f"{side_path}: vocab_size {vocab} does not fit in {name}")
        dtype = _DTYPES[name]
        size = self.path.stat().st_size
        if size != count * dtype.itemsize:
            raise ValueError(
                f"{self.path}: size mismatch: the sidecar says {count} {name} tokens = "
                f"{count * dtype.itemsize} bytes, the file has {size} bytes"
            )
        self.dtype = dtype
        self.vocab_size = vocab
        self.meta = side.get("meta", {})
        if count == 0:
            self.tokens = np.empty(0, dtype=dtype)
        else:
            self.tokens = np.memmap(self.path, dtype=dtype, mode="r", shape=(count,))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return (
            f"TokenFile({str(self.path)!r}, count={len(self)}, dtype={self.dtype.name}, "
            f"vocab_size={self.vocab_size})"
        )

    def close(self) -> None:
        """Drop the memory map (it is unmapped once no array refers to it)."""
        self.tokens = np.empty(0, dtype=self.dtype)

    def __enter__(self) -> TokenFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_tokens(tokens) -> np.ndarray:
    if isinstance(tokens, TokenFile):
        tokens = tokens.tokens
    if not isinstance(tokens, np.ndarray):
        tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and tokens.dtype.kind not in "iu":
        raise TypeError(f"tokens must be integers, got dtype {tokens.dtype}")
    return tokens


def _check_sizes(n: int, batch_size: int, context: int) -> None:
    for key, v in (("batch_size", batch_size), ("context", context)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    if n < context + 1:
        raise ValueError(
            f"token stream too short: {n} tokens, need at least context + 1 = {context + 1} "
            "(one window of inputs plus the next-token target)"
        )


_JSON_SAFE_INT = (1 << 53) - 1


def _state_to_json(state: dict) -> dict:
    """numpy bit-generator state -> JSON data (ints over 53 bits become hex strings)."""

    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(int(v)) > _JSON_SAFE_INT:
            return {"hex": format(int(v), "x")}
        return v

    return conv(state)


def _state_from_json(state: dict) -> dict:
    def conv(v):
        if isinstance(v, dict):
            if set(v) == {"hex"}:
                return int(v["hex"], 16)
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(state)


class BatchSampler:
    """Random contiguous training windows from a token stream.

    ``next(sampler)`` / ``sampler.sample()`` returns ``(x, y)``, int64 arrays of shape
    ``(batch_size, context)``: each row is ``tokens[s : s + context]`` and ``y`` the same window
    shifted by one (``tokens[s + 1 : s + context + 1]``), with the starts ``s`` drawn uniformly
    from ``[0, len(tokens) - context - 1]`` by a PCG64 generator seeded with ``seed``.
    """

    def __init__(self, tokens, batch_size: int, context: int, seed: int = 0):
        self.tokens = _as_tokens(tokens)
        _check_sizes(len(self.tokens), batch_size, context)
        self.batch_size = int(batch_size)
        self.context = int(context)
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.batches_drawn = 0

    def starts(self) -> np.ndarray:
        """Draw the next batch's window starts (advances the RNG)."""
        return self._rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.starts()
        T = self.context
        buf = np.empty((self.batch_size, T + 1), dtype=np.int64)
        for i, s in enumerate(starts):
            buf[i] = self.tokens[s : s + T + 1]
        self.batches_drawn += 1
        return buf[:, :-1].copy(), buf[:, 1:].copy()

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sample()

    def state_dict(self) -> dict:
        """The sampler's position as JSON-serialisable data (no integers wider than 53 bits)."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "context": self.context,
            "n_tokens": len(self.tokens),
            "batches_drawn": self.batches_drawn,
            "rng": _state_to_json(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: the following batches are the ones the saved sampler
        would have drawn next. The batch size, context and stream length must match; a malformed
        state raises ValueError."""
        if not isinstance(state, dict):
            raise ValueError(f"sampler state must be a dict, got {type(state).__name__}")
        for key in ("batch_size", "context", "n_tokens"):
            mine = len(self.tokens) if key == "n_tokens" else getattr(self, key)
            if state.get(key) != mine:
                raise ValueError(f"sampler state is for {key}={state.get(key)!r}, this sampler has {key}={mine}")
        rng_state = state.get("rng")
        if not isinstance(rng_state, dict):
            raise ValueError(f"sampler state 'rng' must be a dict (a PCG64 state), got {type(rng_state).__name__}")
        rng_state = _state_from_json(rng_state)
        if rng_state.get("bit_generator") != "PCG64":
            raise ValueError(f"sampler state has bit generator {rng_state.get('bit_generator')!r}, expected 'PCG64'")
        seed, drawn = state.get("seed", self.seed), state.get("batches_drawn", 0)
        for key, v in (("seed", seed), ("batches_drawn", drawn)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"sampler state {key!r} must be a non-negative integer, got {v!r:.100}")
        probe = np.random.PCG64()
        try:  # numpy checks the state's layout; nothing here changes unless it is valid
            probe.state = rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"sampler state 'rng' is not a valid PCG64 state ({exc})") from None
        self._rng.bit_generator.state = probe.state
        self.seed = seed
        self.batches_drawn = drawn


def iter_eval_batches(
    tokens, batch_size: int, context: int, max_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic validation batches: non-overlapping windows, the same on every call.

    Window ``k`` starts at ``k * context`` (its ``x`` is ``tokens[k*T : (k+1)*T]``, its ``y`` the
    same shifted by one), for ``k < (len(tokens) - 1) // context``: every token after the first is a
    target exactly once. With ``max_batches``, ``max_batches * batch_size`` windows are chosen
    evenly spread over the whole stream (not just its beginning). Windows are yielded in order,
    ``batch_size`` at a time; the last batch may be smaller. int64 arrays of shape ``(b, context)``.
    """
    tokens = _as_tokens(tokens)
    _check_sizes(len(tokens), batch_size, context)
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer)) or max_batches < 1
    ):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    T = int(context)
    n_windows = (len(tokens) - 1) // T
    k = n_windows if max_batches is None else min(n_windows, int(max_batches) * int(batch_size))
    # k evenly spread, distinct, increasing window indices (all of them when k == n_windows)
    picks = (np.arange(k, dtype=np.int64) * n_windows) // k
    return _eval_batches(tokens, picks, int(batch_size), T)  # errors above raise at the call


def _eval_batches(tokens: np.ndarray, picks: np.ndarray, batch_size: int, T: int):
    k = len(picks)
    for b0 in range(0, k, batch_size):
        rows = picks[b0 : b0 + batch_size]
        buf = np.empty((len(rows), T + 1), dtype=np.int64)
        for i, w in enumerate(rows):
            s = int(w) * T
            buf[i] = tokens[s : s + T + 1]
        yield buf[:, :-1].copy(), buf[:, 1:].copy()
