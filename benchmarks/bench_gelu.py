"""GELU bandwidth: pygpt._C forward/backward vs a plain copy and vs PyTorch, float32, same process.

GELU is memory-bound, so the figure of merit is bytes moved per second:
    copy      2 n 4 bytes  (read src, write dst)
    forward   2 n 4 bytes  (read x, write y)
    backward  3 n 4 bytes  (read x, dy; write dx)
Each row is the median of --repeats timed calls after one warm-up call, on preallocated buffers;
the cases take turns (one call each per round), so noise from other tenants hits all rows alike
(torch "alloc" rows are the usual allocating calls: F.gelu and autograd, which fault fresh memory in).
All kernels use the same thread count (pygpt._C.num_threads(), torch.set_num_threads); np.copyto is
NumPy's single-threaded memcpy, torch copy_ is multi-threaded. "np.exp" (NumPy's SIMD exp, one thread)
shows what one exponential per element costs on this CPU: GELU needs one, so where np.exp runs below
copy speed GELU is compute-bound, not memory-bound. "fresh out" allocates the output per call, as the
op does inside a model (the difference to the preallocated row is page faults).

    python benchmarks/bench_gelu.py [--sizes 1,2,4,8,16] [--repeats 15] [--threads N]

Prints a table (GB/s) and writes benchmarks/bench_gelu.json next to this file.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

from pygpt import backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, time_interleaved, write_json  # noqa: E402

MiB = 1 << 20


def cases(n: int, threads: int):
    """Yield (name, bytes moved, callable) for one size n."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)  # (n,)
    dy = rng.standard_normal(n, dtype=np.float32)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    b2, b3 = 2 * 4 * n, 3 * 4 * n

    yield "np.copyto", b2, lambda: np.copyto(y, x)
    yield "np.exp (1 thread)", b2, lambda: np.exp(x, out=y)  # what one exponential per element costs here
    C = backend.native
    if C is not None:
        for approx in ("tanh", "none"):
            yield f"pygpt fwd {approx}", b2, lambda a=approx: C.gelu_forward(x, y, a)
            yield f"pygpt bwd {approx}", b3, lambda a=approx: C.gelu_backward(x, dy, dx, a)
        # as the op runs inside a model: a fresh output each call (page faults included)
        yield "pygpt fwd tanh, fresh out", b2, lambda: C.gelu_forward(x, np.empty_like(x), "tanh")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    ty, tdx = torch.from_numpy(y), torch.from_numpy(dx)
    yield "torch copy_", b2, lambda: ty.copy_(tx)
    aten = torch.ops.aten
    for approx in ("tanh", "none"):
        yield f"torch fwd {approx} out=", b2, lambda a=approx: aten.gelu.out(tx, approximate=a, out=ty)
        yield f"torch bwd {approx} out=", b3, lambda a=approx: aten.gelu_backward.grad_input(
            tdy, tx, approximate=a, grad_input=tdx
        )
    yield "torch fwd tanh alloc", b2, lambda: torch.nn.functional.gelu(tx, approximate="tanh")
    xg = tx.clone().requires_grad_(True)
    yg = torch.nn.functional.gelu(xg, approximate="tanh")
    yield "torch bwd tanh autograd", b3, lambda: torch.autograd.grad(yg, xg, tdy, retain_graph=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,2,4,8,16", help="sizes in Mi elements (comma-separated)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (default: pygpt's current count)")
    ap.add_argument("--out", default="bench_gelu.json", help="JSON file name (written next to this script)")
    args = ap.parse_args()

    C = backend.native
    if C is None:
        print(f"note: pygpt._C missing ({backend._NATIVE_ERROR}); only the peers are measured")
    threads = args.threads or (C.num_threads() if C is not None else os.cpu_count() or 1)
    if C is not None:
        C.set_num_threads(threads)
    sizes = [int(float(s) * MiB) for s in args.sizes.split(",")]

    results = []  # one dict per (name, n)
    for n in sizes:
        named = list(cases(n, threads))
        timed = time_interleaved({name: fn for name, _, fn in named}, args.repeats)
        for name, nbytes, _ in named:
            sec = timed[name][0]  # median
            results.append({"name": name, "n": n, "bytes": nbytes, "seconds": sec, "gbps": nbytes / sec / 1e9})

    names = list(dict.fromkeys(r["name"] for r in results))
    by = {(r["name"], r["n"]): r for r in results}
    copy_ref = {n: by[("np.copyto", n)]["gbps"] for n in sizes}
    head = f"{'GB/s (float32)':<26}" + "".join(f"{n // MiB:>7}M" for n in sizes) + f"{'ms @' + str(sizes[-1] // MiB) + 'M':>11}" + f"{'vs copy':>9}"
    print(f"GELU bandwidth, {threads} thread(s), {machine()['cpu']}, median of {args.repeats}")
    print(head)
    print("-" * len(head))
    for name in names:
        row = f"{name:<26}" + "".join(f"{by[(name, n)]['gbps']:>8.2f}" for n in sizes)
        last = by[(name, sizes[-1])]
        row += f"{last['seconds'] * 1e3:>11.2f}{last['gbps'] / copy_ref[sizes[-1]]:>9.2f}"
        print(row)

    info = {
        "machine": {**machine(), "platform": platform.platform()},
        "threads": threads,
        "repeats": args.repeats,
        "numpy": np.__version__,
        "native_build": C.build_info() if C is not None else None,
        "bytes_moved": {"copy": "2*4*n", "forward": "2*4*n", "backward": "3*4*n"},
        "results": results,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    print(f"wrote {write_json(args.out, info)}")


if __name__ == "__main__":
    main()
