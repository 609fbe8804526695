"""Helper for the tests that compare pygpt._C's CPU variants (cpp/src/cpu_dispatch.h).

PYGPT_ISA caps the variant when the library loads, so each variant runs in its own child process. The
child prints the variant it got (`build_info()["simd"]`) and a digest of its results; every variant
this CPU runs must print the same digest.
"""
import os
import subprocess
import sys

import pytest


def assert_variants_bit_identical(child_code: str) -> None:
    runs = {}  # variant name -> digest
    for isa in ("baseline", "avx2", "avx512"):
        env = dict(os.environ, PYGPT_ISA=isa, PYTHONPATH=os.pathsep.join(sys.path))
        res = subprocess.run([sys.executable, "-c", child_code], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        simd, digest = res.stdout.split()
        runs[simd] = digest
    if len(runs) < 2:
        pytest.skip(f"only one CPU variant here: {sorted(runs)}")
    assert len(set(runs.values())) == 1, runs
