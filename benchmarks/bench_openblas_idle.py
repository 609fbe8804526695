"""GPT training step under different OpenBLAS idle-spin timeouts, same process.

`import pygpt` sets NumPy's OpenBLAS thread timeout to 2^16 ticks (pygpt/openblas.py): with OpenBLAS's
default 2^28 its workers keep spinning ~0.13 s after each GEMM and steal the cores from pygpt's
kernels that follow. This script restarts OpenBLAS's pool with each exponent in turn
(`pygpt.openblas.set_thread_timeout`), times --steps steps per exponent per round, and reports each
exponent's median step time and the median over rounds of (time at the first exponent) ÷ (time at
this one): above 1 means faster than the first.

    python benchmarks/bench_openblas_idle.py [--configs tiny,small-50k,gpt2] [--exponents 28,16,4] [--rounds 3] [--steps 2]

Configs are bench_train.py's. Writes benchmarks/bench_openblas_idle.json next to this file.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench_train import CONFIGS, pygpt_step, random_batch
from common import machine, table, write_json

from pygpt import openblas


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,small-50k,gpt2")
    ap.add_argument("--exponents", default="28,16,4", help="the first is the reference")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per exponent per round")
    args = ap.parse_args()
    exps = [int(e) for e in args.exponents.split(",")]
    if openblas.library() is None:
        print("NumPy's BLAS is not a pthreads OpenBLAS: nothing to compare")
        return 1
    rows, out = [], {}
    for name in args.configs.split(","):
        c = CONFIGS[name]
        x, y = random_batch(c)
        step = pygpt_step(c, x, y)
        step()
        step()
        secs = {e: [] for e in exps}
        for _ in range(args.rounds):
            for e in exps:
                openblas.set_thread_timeout(e)
                step()  # the first step after a restart starts the new pool
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                secs[e].append((time.perf_counter() - t0) / args.steps)
        ref = secs[exps[0]]
        ratios = {e: [a / b for a, b in zip(ref, secs[e])] for e in exps}
        for e in exps:
            r = ratios[e]
            rows.append([name, f"2^{e}", f"{statistics.median(secs[e]) * 1e3:,.0f}",
                         f"{statistics.median(r):.3f} ({min(r):.3f}–{max(r):.3f})"])
        out[name] = {"seconds": {str(e): secs[e] for e in exps}, "ratios": {str(e): ratios[e] for e in exps}}
        print(table(["config", "timeout", "ms/step", f"2^{exps[0]} time ÷ this (rounds min–max)"], rows), flush=True)
    openblas.set_thread_timeout(openblas.DEFAULT_EXPONENT)
    path = write_json("bench_openblas_idle.json", {"machine": machine(), "rounds": args.rounds, "steps": args.steps,
                                                  "exponents": exps, "configs": out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
