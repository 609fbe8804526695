"""NumPy's OpenBLAS: let its idle worker threads sleep soon after each call.

OpenBLAS's pthreads server keeps its worker threads spinning (a `sched_yield` loop) for
2^OPENBLAS_THREAD_TIMEOUT time-stamp ticks after every multi-threaded call, 2^28 by default (~0.13 s at
2 GHz), so that a following call starts without a wake-up. In a training step the following call is
often one of pygpt's native kernels, whose own threads then share the cores with spinning BLAS
workers: GPT-2's attention forward right after its qkv GEMM took 54–72 ms instead of 37 on two
cores. pygpt therefore sets the timeout to 2^16 ticks (~33 µs: back-to-back GEMMs still find the
workers awake) when its native kernels are loaded. Measured per training step, same process,
alternating settings (2 cores, `python benchmarks/bench_openblas_idle.py`), 2^28 time ÷ 2^16 time in
two runs: GPT-2 124M at 1 × 1024 1.07 and 1.07, small-50k 1.08 and 1.04, small 1.10 and 1.11, tiny
1.18 and 1.10. 2^4 (sleep at once) measured the same within the noise.

OpenBLAS reads the variable when it starts its threads, which happened when NumPy was imported, so
`set_thread_timeout` re-reads the environment (`openblas_read_env`) and stops the thread pool
(`blas_thread_shutdown_`, what OpenBLAS's own fork handler calls); the next multi-threaded call starts
a new pool with the new timeout. Both are exported by every OpenBLAS build but are not part of its
documented API, so everything here is best effort: it acts only on a pthreads OpenBLAS that exports
them, and does nothing where NumPy uses another BLAS or an OpenMP build of OpenBLAS.

A user's own OPENBLAS_THREAD_TIMEOUT wins: with the variable set at import, pygpt changes nothing
(OPENBLAS_THREAD_TIMEOUT=28 restores OpenBLAS's default). Stopping the pool must not race a BLAS call
in another thread, so pygpt does it once, while being imported.
"""
from __future__ import annotations

import ctypes
import os

DEFAULT_EXPONENT = 16  # 2^16 ticks: ~33 µs at 2 GHz
_ENV = "OPENBLAS_THREAD_TIMEOUT"

# name prefixes/suffixes of the public functions: plain OpenBLAS, NumPy's scipy-openblas (64-bit ints)
_PARALLEL_NAMES = ("openblas_get_parallel", "scipy_openblas_get_parallel64_", "scipy_openblas_get_parallel")


def _loaded_openblas_paths() -> list[str]:
    """Paths of the shared libraries mapped into this process whose file name mentions openblas."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and "openblas" in os.path.basename(parts[-1]).lower():
                    if parts[-1] not in paths:
                        paths.append(parts[-1])
    except OSError:  # not Linux
        pass
    return paths


def library():
    """NumPy's OpenBLAS as a ctypes library, if it is a pthreads build that exports what
    `set_thread_timeout` needs; else None."""
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
        except OSError:
            continue
        parallel = next((getattr(lib, n) for n in _PARALLEL_NAMES if hasattr(lib, n)), None)
        needed = ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_")
        if parallel is None or not all(hasattr(lib, n) for n in needed):
            continue
        if parallel() != 1:  # 0 sequential, 2 OpenMP: no spinning pool of its own
            continue
        return lib
    return None


def thread_timeout() -> int | None:
    """The exponent OpenBLAS's pool uses (0 when OPENBLAS_THREAD_TIMEOUT was unset when it last read
    its environment: the built-in 28), or None without a suitable OpenBLAS."""
    lib = library()
    return None if lib is None else int(lib.openblas_thread_timeout())


def set_thread_timeout(exponent: int) -> bool:
    """Make idle OpenBLAS workers sleep after 2^exponent ticks (4 <= exponent <= 30, OpenBLAS's own
    bounds). Restarts OpenBLAS's thread pool: call it while no other thread is inside a BLAS call.
    Returns False (and changes nothing) without a pthreads OpenBLAS."""
    if isinstance(exponent, bool) or not isinstance(exponent, int) or not 4 <= exponent <= 30:
        raise ValueError(f"set_thread_timeout: exponent must be an int in [4, 30], got {exponent!r}")
    lib = library()
    if lib is None:
        return False
    before = os.environ.get(_ENV)
    os.environ[_ENV] = str(exponent)
    try:
        lib.openblas_read_env()
    finally:  # OpenBLAS keeps the value it read; child processes should not inherit ours
        if before is None:
            del os.environ[_ENV]
        else:
            os.environ[_ENV] = before
    lib.blas_thread_shutdown_()
    return int(lib.openblas_thread_timeout()) == exponent


def apply_default() -> bool:
    """What `import pygpt` does when the native kernels are loaded: the 2^16 timeout, unless the user
    set OPENBLAS_THREAD_TIMEOUT."""
    if _ENV in os.environ:
        return False
    return set_thread_timeout(DEFAULT_EXPONENT)
