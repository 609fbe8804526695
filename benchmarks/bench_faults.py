"""Where one pygpt training step spends its time and page faults, op by op.

Wraps every registered op's forward and backward (and the optimiser step) with wall-clock and
resource.getrusage counters (minor page faults, user and system CPU), runs --steps training steps of a
bench_train config after 2 warm-up steps, and prints per op: calls, milliseconds, faults and system
seconds per step, forward and backward apart. "python" is the step's time outside any op: graph
bookkeeping, argument checks, gradient accumulation into leaves. With --torch the same totals
(wall, faults, user/system CPU per step) are printed for the PyTorch eager step of bench_train.

    python benchmarks/bench_faults.py [--config small-50k] [--steps 3] [--torch] [--unfused]

Prints a table and writes benchmarks/bench_faults.json.
"""
from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict


import pygpt
from bench_train import CONFIGS, _cores, pygpt_step, random_batch, torch_step
from common import machine, table, write_json
from pygpt import autograd, optim

_stats = defaultdict(lambda: [0, 0.0, 0, 0.0])  # key -> [calls, seconds, minor faults, sys seconds]


def _counters():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_minflt, r.ru_stime


def _wrap(key, fn):
    def wrapped(*args, **kwargs):
        t0, f0, s0 = _counters()
        try:
            return fn(*args, **kwargs)
        finally:
            t1, f1, s1 = _counters()
            st = _stats[key]
            st[0] += 1
            st[1] += t1 - t0
            st[2] += f1 - f0
            st[3] += s1 - s0

    return wrapped


def instrument():
    for name, cls in autograd.OP_REGISTRY.items():
        if "forward" in cls.__dict__:
            cls.forward = _wrap((name, "fwd"), cls.forward)
        if "backward" in cls.__dict__:
            cls.backward = _wrap((name, "bwd"), cls.backward)
    optim.Optimizer.step = _wrap(("optimizer", "step"), optim.Optimizer.step)
    optim.Optimizer.zero_grad = _wrap(("optimizer", "zero_grad"), optim.Optimizer.zero_grad)


def measure(step, n):
    t0, f0, s0 = _counters()
    u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    for _ in range(n):
        step()
    t1, f1, s1 = _counters()
    u1 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    return {"wall_s": (t1 - t0) / n, "minor_faults": (f1 - f0) / n, "user_s": (u1 - u0) / n, "sys_s": (s1 - s0) / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="small-50k", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="also measure the PyTorch eager step's totals")
    ap.add_argument("--unfused", action="store_true", help="pygpt builds the (B, T, V) logits (return_logits=True)")
    args = ap.parse_args()
    c = CONFIGS[args.config]
    x, y = random_batch(c)

    step = pygpt_step(c, x, y, fused=not args.unfused)
    for _ in range(2):
        step()
    plain = measure(step, args.steps)  # uninstrumented totals
    instrument()
    _stats.clear()
    total = measure(step, args.steps)
    n = args.steps
    rows, recs = [], []
    op_time = 0.0
    for (op, phase), (calls, sec, flt, sys_s) in sorted(_stats.items(), key=lambda kv: -kv[1][1]):
        if phase != "zero_grad":
            op_time += sec
        recs.append({"op": op, "phase": phase, "calls": calls / n, "ms": sec / n * 1e3, "minor_faults": flt / n,
                     "sys_s": sys_s / n})
        rows.append([op, phase, f"{calls / n:.0f}", f"{sec / n * 1e3:.1f}", f"{100 * sec / n / total['wall_s']:.1f}%",
                     f"{flt / n:,.0f}", f"{sys_s / n:.3f}"])
    py = total["wall_s"] - op_time / n
    rows.append(["python", "", "", f"{py * 1e3:.1f}", f"{100 * py / total['wall_s']:.1f}%", "", ""])
    print(f"pygpt step, {args.config}: {plain['wall_s'] * 1e3:.0f} ms uninstrumented, "
          f"{total['wall_s'] * 1e3:.0f} ms instrumented; per step {total['minor_faults']:,.0f} minor faults, "
          f"user {total['user_s']:.2f} s, sys {total['sys_s']:.2f} s")
    print(table(["op", "phase", "calls", "ms/step", "share", "faults/step", "sys s/step"], rows))
    out = {"machine": machine(), "native": pygpt.info()["native"], "config": args.config, "steps": n,
           "pygpt_uninstrumented": plain, "pygpt_instrumented": total, "ops": recs}
    if args.torch:
        import torch
        import transformers

        torch.set_num_threads(_cores())
        tstep = torch_step(torch, transformers, c, x, y)
        for _ in range(2):
            tstep()
        tt = measure(tstep, n)
        out["torch"] = tt
        print(f"torch step: {tt['wall_s'] * 1e3:.0f} ms; per step {tt['minor_faults']:,.0f} minor faults, "
              f"user {tt['user_s']:.2f} s, sys {tt['sys_s']:.2f} s")
    print(f"wrote {write_json('bench_faults.json', out)}")


if __name__ == "__main__":
    main()
