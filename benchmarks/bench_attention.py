"""Fused causal attention, forward + backward: pygpt._C against PyTorch's CPU SDPA, same process.

Shape: B=4, H=12, d=64, causal, float32, T in --T. FLOP count (causal, multiply-add = 2 FLOPs):
    forward   4·B·H·T²·d / 2        (q kᵀ and P v over the lower triangle)
    backward  2.5 × forward         (q kᵀ recomputed, dO vᵀ, dV, dK, dQ)
so fwd+bwd = 3.5 × forward. GFLOP/s use these counts for every implementation.

Rows (each timed as the median of --repeats interleaved runs after one warm-up; min in the JSON):
    pygpt        F.scaled_dot_product_attention + backward through pygpt's autograd (allocates outputs)
    torch        torch.nn.functional.scaled_dot_product_attention(is_causal=True) + backward
                 (its fused CPU flash kernel without dropout; with dropout_p > 0 it falls back to the
                 unfused math path, which materialises the (T, T) probabilities)
    numpy ref    pygpt's NumPy reference (attention_reference + its backward), T <= --ref-max-T
with and without attention dropout 0.1. "fwd" columns run without gradients (torch.no_grad / pygpt no_grad).
Peak extra memory at --mem-T: each implementation's fwd+bwd in a fresh subprocess, as the growth
of the resident-set high-water mark (VmHWM, reset just before the call; ru_maxrss where it cannot
be reset) over the resident set with the inputs allocated and one small warm-up call done.

    python benchmarks/bench_attention.py [--T 128,256,512,1024,2048] [--repeats 5] [--threads N]
                                         [--mem-T 4096 | --mem-T 0] [--ref-max-T 512]

Prints a table and writes benchmarks/bench_attention.json next to this file.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, time_interleaved, write_json  # noqa: E402

import pygpt.functional as F  # noqa: E402
from pygpt import Tensor, backend, no_grad  # noqa: E402
from pygpt.random import Generator  # noqa: E402

B, H, D = 4, 12, 64


def flops_forward(T: int) -> float:
    return 4.0 * B * H * T * T * D / 2


def make_inputs(T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4)]  # q, k, v, dout


# ------------------------------------------------------------------ the runners
def pygpt_runner(T: int, p: float, grad: bool, reference: bool = False):
    q, k, v, g = make_inputs(T)
    gen = Generator(1)
    qt, kt, vt = (Tensor(a, requires_grad=True) for a in (q, k, v))

    def run():
        saved = F._attention_native_ok
        if reference:
            F._attention_native_ok = lambda *a: False
        try:
            if grad:
                for t in (qt, kt, vt):
                    t.grad = None
                y = F.scaled_dot_product_attention(qt, kt, vt, causal=True, dropout_p=p, generator=gen)
                y.backward(g)
            else:
                with no_grad():
                    F.scaled_dot_product_attention(qt, kt, vt, causal=True, dropout_p=p, generator=gen)
        finally:
            F._attention_native_ok = saved

    return run


def torch_runner(T: int, p: float, grad: bool):
    import torch

    q, k, v, g = make_inputs(T)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(grad) for a in (q, k, v))
    tg = torch.from_numpy(g)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run():
        if grad:
            for t in (tq, tk, tv):
                t.grad = None
            sdpa(tq, tk, tv, is_causal=True, dropout_p=p).backward(tg)
        else:
            with torch.no_grad():
                sdpa(tq, tk, tv, is_causal=True, dropout_p=p)

    return run


# ------------------------------------------------------------------ peak memory (subprocess)
_MEM_CHILD = r"""
import resource, sys, numpy as np

def status(field):  # kB from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def mark():
    # Reset the high-water mark to the current resident set (Linux: "5" > clear_refs), so that
    # peaks from imports and warm-up do not hide the measured call's; else fall back to ru_maxrss.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS"), "VmHWM"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None

impl, T, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
B, H, D = 4, 12, 64
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4))
if impl == "pygpt":
    import pygpt.functional as F
    from pygpt import Tensor, backend
    backend.native.set_num_threads(threads)
    small = [Tensor(a[:, :, :64].copy(), requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*small, causal=True).backward(g[:, :, :64].copy())  # warm-up
    ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    before, hwm = mark()
    y = F.scaled_dot_product_attention(*ts, causal=True)
    y.backward(g)
else:
    import torch
    torch.set_num_threads(threads)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    small = [torch.from_numpy(a[:, :, :64].copy()).requires_grad_(True) for a in (q, k, v)]
    sdpa(*small, is_causal=True).backward(torch.from_numpy(g[:, :, :64].copy()))  # warm-up
    ts = [torch.from_numpy(a).requires_grad_(True) for a in (q, k, v)]
    before, hwm = mark()
    sdpa(*ts, is_causal=True).backward(torch.from_numpy(g))
after = status(hwm) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def peak_extra_bytes(impl: str, T: int, threads: int) -> int | None:
    try:
        res = subprocess.run([sys.executable, "-c", _MEM_CHILD, impl, str(T), str(threads)], capture_output=True,
                             text=True, timeout=1800, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        print(f"note: memory run for {impl} failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    return int(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default="128,256,512,1024,2048", help="sequence lengths (comma-separated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="threads for pygpt and torch (default: pygpt's count)")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--ref-max-T", type=int, default=512, help="largest T for the NumPy reference rows")
    ap.add_argument("--mem-T", type=int, default=4096, help="T of the peak-memory runs (0: skip)")
    ap.add_argument("--out", default="bench_attention.json", help="JSON file name (written next to this script)")
    args = ap.parse_args()

    C = backend.native
    if C is None:
        sys.exit(f"pygpt._C is required for this benchmark ({backend._NATIVE_ERROR})")
    threads = args.threads or C.num_threads()
    C.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        have_torch = True
    except ImportError:
        print("note: torch is not installed; only pygpt is measured")
        have_torch = False
    Ts = [int(t) for t in args.T.split(",")]

    results = []
    for T in Ts:
        fl = flops_forward(T)
        for p in (0.0, args.dropout):
            runners = {"pygpt fwd": pygpt_runner(T, p, False), "pygpt fwd+bwd": pygpt_runner(T, p, True)}
            if have_torch:
                runners["torch fwd"] = torch_runner(T, p, False)
                runners["torch fwd+bwd"] = torch_runner(T, p, True)
            if T <= args.ref_max_T:
                runners["numpy ref fwd+bwd"] = pygpt_runner(T, p, True, reference=True)
            for name, (med, best) in time_interleaved(runners, args.repeats).items():
                work = fl * (3.5 if name.endswith("fwd+bwd") else 1.0)
                results.append({"name": name, "T": T, "dropout": p, "seconds": med, "seconds_min": best,
                                "gflops": work / med / 1e9, "gflops_best": work / best / 1e9})
                print(f"  T={T:5d} p={p:.1f} {name:<18} {med * 1e3:9.1f} ms  {work / med / 1e9:6.1f} GFLOP/s",
                      flush=True)

    by = {(r["name"], r["T"], r["dropout"]): r for r in results}
    rows = []
    for T in Ts:
        for p in (0.0, args.dropout):
            get = lambda n: by.get((n, T, p))  # noqa: E731
            pf, pb, tf, tb, nr = (get(n) for n in ("pygpt fwd", "pygpt fwd+bwd", "torch fwd", "torch fwd+bwd",
                                                    "numpy ref fwd+bwd"))
            fmt = lambda r: f"{r['seconds'] * 1e3:.1f}" if r else "-"  # noqa: E731
            gf = lambda r: f"{r['gflops']:.1f}" if r else "-"  # noqa: E731
            ratio = lambda a, b: f"{b['seconds'] / a['seconds']:.2f}x" if a and b else "-"  # noqa: E731
            rows.append([T, p, fmt(pf), gf(pf), fmt(tf), ratio(pf, tf), fmt(pb), gf(pb), fmt(tb), gf(tb),
                         ratio(pb, tb), fmt(nr), ratio(pb, nr)])
    headers = ["T", "dropout", "pygpt fwd ms", "GF/s", "torch fwd ms", "speed-up", "pygpt f+b ms", "GF/s",
               "torch f+b ms", "GF/s", "speed-up", "numpy ref f+b ms", "speed-up"]
    print()
    print(f"Causal attention B={B} H={H} d={D} float32, {threads} thread(s), {machine()['cpu']}; "
          f"median of {args.repeats}; speed-up = other time / pygpt time")
    print(table(headers, rows))

    memory = {}
    if args.mem_T > 0:
        for impl in ("pygpt", "torch") if have_torch else ("pygpt",):
            memory[impl] = peak_extra_bytes(impl, args.mem_T, threads)
        inputs = 4 * B * H * args.mem_T * D * 4
        print(f"\nPeak extra memory, fwd+bwd at T={args.mem_T} (inputs q, k, v, dout: {inputs / 2**20:.0f} MiB; "
              f"outputs out + dq + dk + dv alone are {inputs / 2**20:.0f} MiB):")
        for impl, nbytes in memory.items():
            print(f"  {impl:<6} {'-' if nbytes is None else f'{nbytes / 2**20:.0f} MiB'}")

    payload = {
        "machine": machine(),
        "threads": threads,
        "repeats": args.repeats,
        "shape": {"B": B, "H": H, "d": D, "causal": True, "dtype": "float32"},
        "flops": {"forward": "4*B*H*T^2*d/2", "backward": "2.5 * forward", "fwd+bwd": "3.5 * forward"},
        "native_build": C.build_info(),
        "torch": __import__("torch").__version__ if have_torch else None,
        "results": results,
        "peak_extra_bytes": {"T": args.mem_T, **memory},
    }
    path = write_json(args.out, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
