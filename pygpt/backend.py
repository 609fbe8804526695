"""Array backends and native-kernel discovery.

`xp` is NumPy on the CPU and CuPy on CUDA. Everything else in pygpt asks this module which array
library owns an array (`get_xp`) and whether the compiled extension `pygpt._C` is present
(`native`). Setting ``PYGPT_NO_NATIVE=1`` hides the extension so the pure NumPy reference runs.
"""
from __future__ import annotations

import os

import numpy as np

_NATIVE_ERROR: str | None = None
native = None
if os.environ.get("PYGPT_NO_NATIVE", "0") not in ("", "0"):
    _NATIVE_ERROR = "disabled by PYGPT_NO_NATIVE=1"
else:
    try:
        from . import _C as native  # type: ignore[no-redef]
    except ImportError as exc:  # pure-Python install or a build without a compiler
        native = None
        _NATIVE_ERROR = f"pygpt._C could not be imported ({exc}); using the NumPy reference"

_cupy = None
_CUPY_ERROR: str | None = None


def cupy_module():
    """Return the cupy module, or raise RuntimeError saying why CUDA is unavailable."""
    global _cupy, _CUPY_ERROR
    if _cupy is not None:
        return _cupy
    if _CUPY_ERROR is None:
        try:
            import cupy  # noqa: PLC0415

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy found no CUDA device")
            _cupy = cupy
            return cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _CUPY_ERROR = f"{type(exc).__name__}: {exc}"
    raise RuntimeError(
        "device 'cuda' needs CuPy and a CUDA GPU (pip install 'pygpt[cuda]'); "
        f"it is not usable here: {_CUPY_ERROR}"
    )


def cuda_available() -> bool:
    try:
        cupy_module()
        return True
    except RuntimeError:
        return False


def get_xp(array):
    """The array module (numpy or cupy) that owns `array`."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    mod = type(array).__module__
    if mod.startswith("cupy"):
        return cupy_module()
    return np


def device_of(array) -> str:
    return "cpu" if get_xp(array) is np else "cuda"


def xp_for(device: str):
    """The array module for a device name ('cpu' or 'cuda')."""
    if device == "cpu":
        return np
    if device == "cuda":
        return cupy_module()
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def to_numpy(array) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):
        return array.get()
    return np.asarray(array)


def use_native(array) -> bool:
    """True when the C++ CPU kernels can serve this array (NumPy, float32/float64)."""
    return native is not None and isinstance(array, np.ndarray) and array.dtype in (np.float32, np.float64)


def _openblas_timeout():
    from . import openblas

    try:
        return openblas.thread_timeout()
    except Exception:  # best effort, see pygpt/openblas.py
        return None


def info() -> dict:
    """What this installation can do: version, native extension, CUDA."""
    from . import __version__

    out = {
        "version": __version__,
        "numpy": np.__version__,
        "native": native is not None,
        "native_reason": _NATIVE_ERROR,
        "native_build": native.build_info() if native is not None else None,
        "openblas_thread_timeout": _openblas_timeout(),
        "tokenizer": "C++ BPE (pygpt._C.BPE)" if native is not None and hasattr(native, "BPE") else "pure-Python BPETokenizer fallback (slower; build pygpt._C for the C++ encoder)",
    }
    try:
        cupy = cupy_module()
        out["cuda"] = True
        out["cupy"] = cupy.__version__
    except RuntimeError as exc:
        out["cuda"] = False
        out["cuda_reason"] = str(exc)
    return out
