"""The benchmark scripts still run: each one, on the smallest inputs its options allow, in a subprocess.

Nothing here is timed. The scripts import pygpt's internals (Function classes, kernels, presets), and a
change there (7bc64df) once broke bench_kernels.py for a day without any test noticing. Each run writes
its JSON into a temporary directory (PYGPT_BENCH_OUT), never over the measured files in benchmarks/, and
the test reads the rows back: every implementation the run names must have produced a positive time.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pygpt import backend

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

needs_native = pytest.mark.skipif(backend.native is None, reason="the kernel benchmarks time pygpt._C")


def needs(*modules: str) -> None:
    """The peers are test extras (pip install -e ".[test]"): without one, its script cannot run."""
    for name in modules:
        pytest.importorskip(name)


def run_bench(tmp_path, script: str, *args: str, timeout: int = 300) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYGPT_BENCH_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1, f"{script} wrote {written}"
    payload = json.loads(written[0].read_text())
    assert payload["machine"]["cores"] == os.cpu_count()
    return payload


def test_common_helpers(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("pygpt_bench_common", BENCH / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setenv("PYGPT_BENCH_OUT", str(tmp_path))
    path = common.write_json("x.json", {"a": 1})
    assert path == tmp_path / "x.json" and json.loads(path.read_text()) == {"a": 1}
    info = common.machine()
    assert info["cores"] == os.cpu_count() and info["cpu"]
    if Path("/proc/cpuinfo").exists() and "flags" in Path("/proc/cpuinfo").read_text():
        assert isinstance(info["cpu_family"], int) and isinstance(info["simd"], list)


@needs_native
def test_bench_kernels(tmp_path):
    needs("torch")
    out = run_bench(tmp_path, "bench_kernels.py", "--repeats", "1", "--rows", "16", "--channels", "8",
                    "--vocab", "50", "--adam-n", "1000", "--dropout-n", "1000")
    kernels = [r["kernel"] for r in out["rows"]]
    for name in ("layer_norm fwd (16×8)", "layer_norm bwd (16×8)", "layer_norm bwd (64×8)",
                 "cross_entropy bwd (16×50)", "embedding bwd (16 ids → 50×8)"):
        assert name in kernels
    for row in out["rows"]:
        for impl in ("native", "native op", "numpy op", "torch"):
            assert row[f"{impl}_s"] > 0, (row["kernel"], impl)


@needs_native
def test_bench_gelu(tmp_path):
    needs("torch")
    out = run_bench(tmp_path, "bench_gelu.py", "--sizes", "1", "--repeats", "1")
    names = {r["name"] for r in out["results"]}
    assert {"np.copyto", "pygpt fwd tanh", "pygpt bwd tanh", "pygpt fwd none", "pygpt bwd none",
            "torch fwd tanh out="} <= names
    assert all(r["gbps"] > 0 for r in out["results"])


@needs_native
def test_bench_attention(tmp_path):
    needs("torch")
    out = run_bench(tmp_path, "bench_attention.py", "--T", "8,33", "--repeats", "1", "--mem-T", "64",
                    "--ref-max-T", "33")
    rows = {(r["name"], r["T"], r["dropout"]) for r in out["results"]}
    for T in (8, 33):
        for p in (0.0, 0.1):
            for name in ("pygpt fwd", "pygpt fwd+bwd", "torch fwd+bwd", "numpy ref fwd+bwd"):
                assert (name, T, p) in rows
    assert all(r["seconds"] > 0 for r in out["results"])
    peaks = out["peak_extra_bytes"]
    assert isinstance(peaks["pygpt"], int) and isinstance(peaks["torch"], int), peaks  # None: the child failed


def test_bench_train_and_faults(tmp_path):
    needs("torch", "transformers")
    out = run_bench(tmp_path / "train", "bench_train.py", "--configs", "tiny", "--steps", "1", "--rounds", "1")
    (row,) = out["rows"]
    assert row["config"] == "tiny" and row["pygpt"]["step_s"] > 0 and row["torch"]["step_s"] > 0
    assert row["ratio"] == pytest.approx(row["torch"]["step_s"] / row["pygpt"]["step_s"], rel=1e-6)
    out = run_bench(tmp_path / "faults", "bench_faults.py", "--config", "tiny", "--steps", "1")
    ops = {(r["op"], r["phase"]) for r in out["ops"]}
    assert {("linear", "fwd"), ("linear", "bwd"), ("optimizer", "step")} <= ops


def test_bench_ops_and_lstm(tmp_path):
    needs("torch")
    out = run_bench(tmp_path / "ops", "bench_ops.py", "--repeats", "3")
    assert out["rows"] and all(r["pygpt_fwd_bwd_us"] > 0 for r in out["rows"])
    out = run_bench(tmp_path / "lstm", "bench_lstm.py", "--batch", "2", "--steps", "3", "--hidden", "8",
                    "--repeats", "1")
    assert len(out["ms"]) == 3 and all(v > 0 for v in out["ms"].values())


@needs_native
def test_bench_packed_attention_and_openblas_idle(tmp_path):
    out = run_bench(tmp_path / "packed", "bench_packed_attention.py", "--config", "tiny", "--rounds", "1")
    assert out["median_packed"] > 0 and out["median_composed"] > 0
    from pygpt import openblas

    if openblas.library() is None:
        pytest.skip("NumPy's BLAS here is not a pthreads OpenBLAS that pygpt.openblas can find")
    out = run_bench(tmp_path / "idle", "bench_openblas_idle.py", "--configs", "tiny", "--rounds", "1",
                    "--steps", "1")
    assert set(out["configs"]["tiny"]["ratios"]) == {"28", "16", "4"}


@needs_native
def test_bench_bpe_quick(tmp_path):
    needs("tiktoken")
    out = run_bench(tmp_path, "bench_bpe.py", "--quick")
    assert 256 < out["train"]["pygpt"]["n_vocab"] <= 32000  # merges stop where no pair repeats
    assert out["goals"]["trainer >= 1x HF"] is None  # --quick skips HF's trainer: not run, not missed
    assert {"encode >= 3x tiktoken", "no worst case > 3x English per byte"} <= set(out["goals"])
