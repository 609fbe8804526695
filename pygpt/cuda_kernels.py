"""The CUDA kernels of ``pygpt._C.cuda`` for CuPy arrays: the GPU side of functional.py's native path.

functional.py asks ``usable(*arrays)`` (or ``attention_ok(q, k, v)``) the way it asks ``_native_ok`` for
NumPy arrays; when True it calls the functions here, which allocate the outputs with CuPy and launch
the kernel on CuPy's current stream (``cupy.cuda.get_current_stream().ptr``). Otherwise the CuPy
reference expressions in functional.py run; they stay the oracle.

The kernels are there when the extension was built with nvcc (``_C.build_info()["cuda_kernels"]``).
``PYGPT_NO_CUDA_KERNELS=1`` hides them (read at import, like ``PYGPT_NO_NATIVE``); tests switch them
with ``set_enabled``. Float32 and float64 for GELU, LayerNorm, cross-entropy, dropout and Adam;
attention is float32 only (float64 CuPy attention runs the reference).
"""
from __future__ import annotations

import os

import numpy as np

from . import backend

__all__ = [
    "adam_update", "attention_backward", "attention_forward", "attention_ok", "cross_entropy_backward",
    "cross_entropy_forward", "dropout", "enabled", "gelu_backward", "gelu_forward", "info", "is_cupy",
    "layer_norm_backward", "layer_norm_forward", "set_enabled", "usable",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _load():
    if os.environ.get("PYGPT_NO_CUDA_KERNELS", "0") not in ("", "0"):
        return None, "disabled by PYGPT_NO_CUDA_KERNELS=1"
    native = backend.native
    if native is None:
        return None, f"pygpt._C is not available ({backend._NATIVE_ERROR})"
    mod = getattr(native, "cuda", None)
    if mod is None:
        return None, "pygpt._C was built without CUDA kernels (nvcc was not found at build time)"
    return mod, None


_kernels, _reason = _load()
_enabled = _kernels is not None


def enabled() -> bool:
    """True when the CUDA kernels are compiled in and not disabled."""
    return _enabled


def set_enabled(flag: bool) -> bool:
    """Switch the CUDA kernels on or off (tests, benchmarks); returns the previous state."""
    global _enabled
    previous = _enabled
    _enabled = bool(flag) and _kernels is not None
    return previous


def info() -> dict:
    """Compiled kernels and architectures, whether they are in use, and why not."""
    build = backend.native.build_info() if backend.native is not None else {}
    return {
        "enabled": _enabled,
        "reason": _reason if _kernels is None else (None if _enabled else "disabled by set_enabled(False)"),
        "kernels": list(build.get("cuda_kernels", [])),
        "architectures": list(build.get("cuda_architectures", [])),
        "devices": _kernels.device_count() if _kernels is not None else 0,
    }


def is_cupy(a) -> bool:
    t = type(a)
    return t.__name__ == "ndarray" and t.__module__.startswith("cupy")


def _cp():
    return backend.cupy_module()


def _stream() -> int:
    return _cp().cuda.get_current_stream().ptr


def _on_current_device(arrays) -> bool:
    dev = _cp().cuda.runtime.getDevice()
    return all(a.device.id == dev for a in arrays)


def usable(*arrays, contiguous: bool = True) -> bool:
    """The CUDA kernels can serve these arrays: CuPy, one float dtype (float32/float64), on the current
    device, and C-contiguous (unless contiguous=False: the caller copies)."""
    if not _enabled or not arrays:
        return False
    if not all(is_cupy(a) for a in arrays):
        return False
    dt = arrays[0].dtype
    if dt not in _FLOATS or any(a.dtype != dt for a in arrays):
        return False
    if contiguous and not all(a.flags.c_contiguous for a in arrays):
        return False
    return _on_current_device(arrays)


# ----------------------------------------------------------------------------------------- GELU
def gelu_forward(x, approximate: str):
    out = _cp().empty_like(x)
    _kernels.gelu_forward(x, out, approximate, stream=_stream())
    return out


def gelu_backward(x, g, approximate: str):
    cp = _cp()
    g = cp.ascontiguousarray(g, dtype=x.dtype)
    dx = cp.empty_like(x)
    _kernels.gelu_backward(x, g, dx, approximate, stream=_stream())
    return dx


# ----------------------------------------------------------------------------------------- LayerNorm
def layer_norm_forward(x, w, b, eps: float):
    """(out, mean, rstd); mean and rstd have shape x.shape[:-1]."""
    cp = _cp()
    out = cp.empty_like(x)
    mean = cp.empty(x.shape[:-1], dtype=x.dtype)
    rstd = cp.empty(x.shape[:-1], dtype=x.dtype)
    _kernels.layer_norm_forward(x, w, b, out, mean, rstd, float(eps), stream=_stream())
    return out, mean, rstd


def layer_norm_backward(x, w, mean, rstd, g, needs_grad=(True, True, True)):
    """(dx, dw, db), None where needs_grad is False."""
    cp = _cp()
    g = cp.ascontiguousarray(g, dtype=x.dtype)
    gx = cp.empty_like(x) if needs_grad[0] else None
    gw = cp.empty_like(w) if needs_grad[1] else None
    gb = cp.empty_like(w) if needs_grad[2] else None
    ws = None
    if gw is not None or gb is not None:
        C = x.shape[-1]
        nbytes = _kernels.layer_norm_backward_workspace_size(x.size // C, C)
        if nbytes:
            ws = cp.empty(nbytes, dtype=cp.uint8)
    _kernels.layer_norm_backward(x, w, mean, rstd, g, gx, gw, gb, workspace=ws, stream=_stream())
    return gx, gw, gb


# ----------------------------------------------------------------------------------------- cross-entropy
def cross_entropy_forward(z, targets, ignore_index: int):
    """z (N, V) contiguous, targets (N,) -> (loss (N,), lse (N,), targets as contiguous int64)."""
    cp = _cp()
    t = cp.ascontiguousarray(targets, dtype=cp.int64)
    loss = cp.empty(t.shape, dtype=z.dtype)
    lse = cp.empty(t.shape, dtype=z.dtype)
    _kernels.cross_entropy_forward(z, t, loss, lse, int(ignore_index), stream=_stream())
    return loss, lse, t


def cross_entropy_backward(z, t, lse, grad, row_scale, ignore_index: int):
    """(softmax(z) − onehot(t)) · row_scale[:, None] into `grad` (a new array when None; may be z).

    row_scale: a CuPy array (N,) or a scalar (a 0-d CuPy array is broadcast on the device, no sync)."""
    cp = _cp()
    if grad is None:
        grad = cp.empty_like(z)
    rs = cp.empty(z.shape[0], dtype=z.dtype)
    rs[...] = row_scale
    _kernels.cross_entropy_backward(z, t, lse, grad, 1.0, rs, int(ignore_index), stream=_stream())
    return grad


# ----------------------------------------------------------------------------------------- dropout, Adam
def dropout(x, key: int, threshold: int, scale: float):
    """x · (keep ? scale : 0) with pygpt.random's mask (bit-identical to the CPU kernel and NumPy)."""
    cp = _cp()
    x = cp.ascontiguousarray(x)
    out = cp.empty_like(x)
    _kernels.dropout(x, out, int(key), int(threshold), float(scale), stream=_stream())
    return out


def adam_update(p, g, m, v, **coef) -> None:
    """One Adam/AdamW step in place (coefficients as pygpt._C.adam_update; bit-identical to it)."""
    _kernels.adam_update(p, g, m, v, stream=_stream(), **coef)


# ----------------------------------------------------------------------------------------- attention
def attention_ok(q, k, v) -> bool:
    """The fused CUDA kernel serves CuPy float32 q, k, v with head dim 1..256 (any sequence length)."""
    return (_enabled and is_cupy(q) and is_cupy(k) and is_cupy(v) and q.dtype == k.dtype == v.dtype == np.float32
            and 1 <= q.shape[-1] <= 256 and _on_current_device((q, k, v)))


def _view(a):
    """`a` itself when the kernel can read it through its strides (views of a packed projection), else a copy."""
    ok = (a.dtype == np.float32 and a.data.ptr % 4 == 0 and (a.shape[-1] <= 1 or a.strides[-1] == 4)
          and all(st >= 0 and st % 4 == 0 or n <= 1 for st, n in zip(a.strides, a.shape)))
    return a if ok else _cp().ascontiguousarray(a, dtype=np.float32)


def attention_forward(q, k, v, causal: bool, key_mask, dropout_p: float, dropout_key: int):
    """(out, lse, q, k, v, key_mask) with out a (B, H, Tq, d) view of a (B, Tq, H, d) array and q, k, v,
    key_mask the arrays the kernel read (saved for the backward)."""
    cp = _cp()
    q, k, v = _view(q), _view(k), _view(v)
    B, H, Tq, d = q.shape
    out = cp.empty((B, Tq, H, d), dtype=cp.float32).transpose(0, 2, 1, 3)  # heads merge without a copy
    lse = cp.empty((B, H, Tq), dtype=cp.float32)
    mask = None if key_mask is None else cp.ascontiguousarray(key_mask, dtype=cp.bool_)
    _kernels.attention_forward(q, k, v, out, lse, bool(causal), mask, float(dropout_p), int(dropout_key),
                               stream=_stream())
    return out, lse, q, k, v, mask


def attention_backward(q, k, v, out, lse, g, causal: bool, key_mask, dropout_p: float, dropout_key: int):
    """(dq, dk, dv) from the forward's saved arrays and the output gradient g."""
    cp = _cp()
    g = _view(g)
    B, H, Tq, _ = q.shape
    gq, gk, gv = cp.empty(q.shape, cp.float32), cp.empty(k.shape, cp.float32), cp.empty(v.shape, cp.float32)
    nbytes = _kernels.attention_backward_workspace_size(B, H, Tq)
    ws = cp.empty(nbytes, dtype=cp.uint8) if nbytes else None
    _kernels.attention_backward(q, k, v, out, lse, g, gq, gk, gv, bool(causal), key_mask, float(dropout_p),
                                int(dropout_key), workspace=ws, stream=_stream())
    return gq, gk, gv
