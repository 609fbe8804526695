"""pygpt.openblas: the OpenBLAS idle-spin timeout that `import pygpt` sets (see that module)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pygpt import backend, openblas

needs_openblas = pytest.mark.skipif(openblas.library() is None,
                                    reason="NumPy's BLAS here is not a pthreads OpenBLAS")


@pytest.mark.parametrize("bad", [3, 31, -1, 16.0, True, "16", None, np.float32(16)])
def test_set_thread_timeout_rejects_bad_exponents(bad):
    with pytest.raises(ValueError, match="exponent must be an int in \\[4, 30\\], got"):
        openblas.set_thread_timeout(bad)


def _child(env_updates: dict) -> dict:
    """Import pygpt in a fresh interpreter; report the timeout and what the environment holds after."""
    code = ("import json, os, pygpt\n"
            "from pygpt import openblas\n"
            "print(json.dumps({'timeout': openblas.thread_timeout(), 'native': pygpt.backend.native is not None,"
            " 'env': os.environ.get('OPENBLAS_THREAD_TIMEOUT')}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "PYGPT_NO_NATIVE")}
    env.update(env_updates)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_openblas
@pytest.mark.skipif(backend.native is None, reason="pygpt._C not built: pygpt leaves OpenBLAS alone then")
def test_import_sets_the_short_timeout_without_leaking_the_variable():
    got = _child({})
    assert got == {"timeout": openblas.DEFAULT_EXPONENT, "native": True, "env": None}


@needs_openblas
def test_a_users_timeout_wins():
    got = _child({"OPENBLAS_THREAD_TIMEOUT": "20"})
    assert got["timeout"] == 20 and got["env"] == "20"


@needs_openblas
def test_no_native_kernels_leave_openblas_alone():
    got = _child({"PYGPT_NO_NATIVE": "1"})
    assert got["native"] is False
    assert got["timeout"] == 0  # 0: OPENBLAS_THREAD_TIMEOUT unset, OpenBLAS's built-in 2^28


def _threads() -> int:
    """Threads of this process."""
    return len(os.listdir("/proc/self/task"))


def _blas_threads() -> int:
    """OpenBLAS's thread count (1 where its getter is not found under either name)."""
    lib = openblas.library()
    for name in ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_"):
        if hasattr(lib, name):
            return int(getattr(lib, name)())
    return 1


@needs_openblas
def test_the_pool_stops_and_restarts_and_gemms_stay_exact():
    """set_thread_timeout stops OpenBLAS's workers (the process has fewer threads), the next
    multi-threaded product starts them again, and it computes correctly (vs a loop-based float64
    einsum, no BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((384, 320))
    b = rng.standard_normal((320, 352))
    want = np.einsum("ik,kj->ij", a, b, optimize=False)
    before, env_before = openblas.thread_timeout(), os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    try:
        for exponent in (4, 28, np.int64(openblas.DEFAULT_EXPONENT)):
            a @ b  # the pool is up (if OpenBLAS runs more than one thread at all)
            running = _threads()
            assert openblas.set_thread_timeout(exponent)
            assert openblas.thread_timeout() == exponent
            stopped = _threads()
            np.testing.assert_allclose(a @ b, want, rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(a.astype(np.float32) @ b.astype(np.float32), want, rtol=2e-4, atol=2e-4)
            restarted = _threads()
            assert stopped <= running and restarted == running
            if _blas_threads() > 1:
                assert stopped < running  # the workers were really stopped, and came back
    finally:
        openblas.set_thread_timeout(min(max(before or 28, 4), 30))  # 0 = unset: OpenBLAS's default 28
    assert os.environ.get("OPENBLAS_THREAD_TIMEOUT") == env_before  # the variable is only borrowed


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc/self/maps")
def test_odd_mapped_paths_are_read_and_never_loaded(tmp_path):
    """A mapped file whose path is not UTF-8 and holds a space (and says openblas) is listed, but
    only already-loaded libraries are ever opened: this plain file is skipped, no error."""
    import mmap

    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9 dir")
    os.mkdir(odd)
    path = os.path.join(odd, b"libfake_openblas.so")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 4096, access=mmap.ACCESS_READ):
        assert os.fsdecode(path) in openblas._loaded_openblas_paths()
        libs = openblas.libraries()
        assert all(getattr(lib, "_name", None) != os.fsdecode(path) for lib in libs)
        openblas.thread_timeout()  # no exception either
