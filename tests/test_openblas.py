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


@pytest.mark.parametrize("bad", [3, 31, -1, 16.0, True, "16", None])
def test_set_thread_timeout_rejects_bad_exponents(bad):
    with pytest.raises(ValueError, match="exponent must be an int in \\[4, 30\\]"):
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


@needs_openblas
def test_gemms_stay_exact_across_pool_restarts():
    """The restarted pool computes multi-threaded products correctly (vs a loop-based float64 einsum)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((384, 320))
    b = rng.standard_normal((320, 352))
    want = np.einsum("ik,kj->ij", a, b, optimize=False)  # no BLAS
    before, env_before = openblas.thread_timeout(), os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    try:
        for exponent in (4, 28, openblas.DEFAULT_EXPONENT):
            assert openblas.set_thread_timeout(exponent)
            assert openblas.thread_timeout() == exponent
            np.testing.assert_allclose(a @ b, want, rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(a.astype(np.float32) @ b.astype(np.float32), want, rtol=2e-4, atol=2e-4)
    finally:
        if before:
            openblas.set_thread_timeout(before)
    assert os.environ.get("OPENBLAS_THREAD_TIMEOUT") == env_before  # the variable is only borrowed
