"""Shared helpers for the benchmark scripts: timing, machine description, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(runners: dict, repeats: int) -> dict:
    """{name: (median, min)} seconds of each callable: one warm-up call each (page faults, thread pool
    start), then `repeats` rounds in which every callable runs once, so a slow spell of this shared
    machine (memory bandwidth moves with the neighbours' load) hits the reference and the kernels alike
    instead of whichever case it happened to overlap."""
    for fn in runners.values():
        fn()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def machine() -> dict:
    """The CPU as /proc/cpuinfo names it, plus its family and model numbers and vector extensions: the
    hosts here say only "AMD EPYC", and a Zen 1 and a Zen 3 EPYC (family 23 model 1, family 25 model 1)
    differ 2-3x in vector throughput, which moves every compute-bound ratio."""
    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "python": platform.python_version()}
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if fields:
                    break  # end of the first processor's block
                continue
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        info["cpu"] = fields["model name"]
    for key, name in (("cpu family", "cpu_family"), ("model", "cpu_model")):
        if fields.get(key, "").isdigit():
            info[name] = int(fields[key])
    if "flags" in fields:
        flags = set(fields["flags"].split())
        info["simd"] = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    return info


def write_json(name: str, payload: dict) -> Path:
    """Writes benchmarks/<name>, or <$PYGPT_BENCH_OUT>/<name> where that is set (the smoke tests in
    tests/test_benchmarks.py, which must not overwrite the measured files)."""
    out_dir = os.environ.get("PYGPT_BENCH_OUT")
    path = Path(out_dir) / name if out_dir else Path(__file__).with_name(name)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
