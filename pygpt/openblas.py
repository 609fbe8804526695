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
import operator
import os
import threading

DEFAULT_EXPONENT = 16  # 2^16 ticks: ~33 µs at 2 GHz
_ENV = "OPENBLAS_THREAD_TIMEOUT"

# names of the public "which threading" function: plain OpenBLAS, NumPy's scipy-openblas (64-bit ints)
_PARALLEL_NAMES = ("openblas_get_parallel", "scipy_openblas_get_parallel64_", "scipy_openblas_get_parallel")
_NEEDED = ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_")


def _loaded_openblas_paths() -> list[str]:
    """Paths of the shared libraries mapped into this process with openblas in their path (a file
    name like libscipy_openblas64_-….so, or a directory like Debian's …/openblas-pthread/libblas.so.3)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps", "rb") as maps:  # bytes: a mapped path need not be UTF-8
            for raw in maps:
                fields = raw.rstrip(b"\n").split(maxsplit=5)  # the path is the 6th field and may hold spaces
                if len(fields) < 6 or not fields[5].startswith(b"/"):
                    continue
                path = os.fsdecode(fields[5])
                if "openblas" in path.lower() and ".so" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:  # not Linux
        pass
    return paths


def libraries() -> list:
    """Every loaded OpenBLAS that is a pthreads build exporting what `set_thread_timeout` needs, as
    ctypes libraries (usually one: NumPy's; SciPy may bring a second)."""
    found = []
    for path in _loaded_openblas_paths():
        try:
            # RTLD_NOLOAD: only a library the process has already loaded (never a second copy);
            # PyDLL: calls keep the GIL, so no Python thread starts a BLAS call in between
            lib = ctypes.PyDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except (OSError, ValueError):  # not loaded, or a path ctypes cannot pass (UnicodeError)
            continue
        parallel = next((getattr(lib, n) for n in _PARALLEL_NAMES if hasattr(lib, n)), None)
        if parallel is None or not all(hasattr(lib, n) for n in _NEEDED):
            continue
        if parallel() != 1:  # 0 sequential, 2 OpenMP: no spinning pool of its own
            continue
        found.append(lib)
    return found


def library():
    """The first of `libraries()`, or None."""
    libs = libraries()
    return libs[0] if libs else None


def thread_timeout() -> int | None:
    """The exponent OpenBLAS read from OPENBLAS_THREAD_TIMEOUT when it last read its environment (0:
    unset, so its built-in 28; OpenBLAS clamps other values to [4, 30] when it starts its pool), or
    None without a pthreads OpenBLAS."""
    lib = library()
    return None if lib is None else int(lib.openblas_thread_timeout())


def set_thread_timeout(exponent: int) -> bool:
    """Make idle OpenBLAS workers sleep after 2^exponent ticks (4 <= exponent <= 30, OpenBLAS's own
    bounds), in every loaded pthreads OpenBLAS. Stops their thread pools, which the next multi-threaded
    call restarts: call it while no other thread is inside a BLAS call. Returns False (and changes
    nothing) without a pthreads OpenBLAS."""
    try:  # ints and NumPy integers; not bools, floats or strings
        value = None if isinstance(exponent, bool) else operator.index(exponent)
    except TypeError:
        value = None
    if value is None or not 4 <= value <= 30:
        raise ValueError(f"set_thread_timeout: exponent must be an int in [4, 30], got {exponent!r}")
    exponent = value
    libs = libraries()
    if not libs:
        return False
    before = os.environ.get(_ENV)
    os.environ[_ENV] = str(exponent)
    try:
        for lib in libs:
            lib.openblas_read_env()
    finally:  # OpenBLAS keeps the value it read; child processes should not inherit ours
        if before is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = before
    for lib in libs:
        lib.blas_thread_shutdown_()
    return all(int(lib.openblas_thread_timeout()) == exponent for lib in libs)


def apply_default() -> bool:
    """What `import pygpt` does when the native kernels are loaded: the 2^16 timeout, unless the user
    set OPENBLAS_THREAD_TIMEOUT, or the import runs outside the main thread (where another thread
    may be inside a BLAS call while the pool stops)."""
    if _ENV in os.environ or threading.current_thread() is not threading.main_thread():
        return False
    return set_thread_timeout(DEFAULT_EXPONENT)
