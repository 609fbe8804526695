"""The rest of the training step, kernel by kernel: pygpt native vs the NumPy reference vs PyTorch, same process.

One row per kernel and direction, at the shapes of the kernels issue's target config (4×256, ctx 256,
vocab 50257, batch 8: N = 2048 rows) unless stated. Columns:

    native        the pygpt._C kernel into preallocated buffers (what the kernel itself costs)
    native op     the pygpt.functional op with the native kernel (allocates its outputs, as in training)
    numpy op      the same op on its NumPy reference path (PYGPT_NO_NATIVE's behaviour)
    torch         the PyTorch eager equivalent (allocating, as autograd calls it), same thread count

Times are medians in ms; GB/s counts the bytes a single-pass kernel must move (listed per row); the
ratio columns are numpy op ÷ native op and torch ÷ native op (above 1: pygpt's native op is faster).
"flt" is minor page faults per call of the native op and of torch (fresh large buffers fault in).

    python benchmarks/bench_kernels.py [--repeats 7] [--rows 2048] [--vocab 50257] [--threads N]

Prints a table and writes benchmarks/bench_kernels.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np

import pygpt.functional as F
from common import machine, table, write_json
from pygpt import backend, optim
from pygpt.random import keep_threshold

_NATIVE = backend.native


def timed(fn, repeats: int):
    """(median seconds, minor page faults per call) over `repeats` calls after one warm-up call."""
    fn()
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / repeats
    return statistics.median(times), faults


def op(cls, native: bool, needs, *args, **kw):
    """A fresh Function instance run forward on the chosen path; returns (instance, output)."""
    backend.native = _NATIVE if native else None
    try:
        fn = cls()
        fn.needs_grad = needs
        fn.inputs = args  # as Function.apply records them (Embedding's backward looks at its table)
        out = fn.forward(*args, **kw)
    finally:
        backend.native = _NATIVE
    return fn, out


def op_backward(fn, g, native: bool):
    backend.native = _NATIVE if native else None
    try:
        return fn.backward(g)
    finally:
        backend.native = _NATIVE


def layer_norm_cases(rng, N, C, torch):
    """LayerNorm forward and backward rows on (N, C)."""
    f4, C_ = 4, backend.native
    x = (1 + rng.standard_normal((N, C))).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal((N, C)).astype(np.float32)
    y, mean, rstd = np.empty_like(x), np.empty(N, np.float32), np.empty(N, np.float32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(w)
    needs3 = (True, True, True)
    impl = {"native": lambda: C_.layer_norm_forward(x, w, b, y, mean, rstd),
            "native op": lambda: op(F.LayerNorm, True, needs3, x, w, b),
            "numpy op": lambda: op(F.LayerNorm, False, needs3, x, w, b)}
    if torch is not None:
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        impl["torch"] = lambda: torch.nn.functional.layer_norm(tx, (C,), tw, tb)
    yield f"layer_norm fwd ({N}×{C})", 2 * N * C * f4, impl
    C_.layer_norm_forward(x, w, b, y, mean, rstd)
    fn_n, _ = op(F.LayerNorm, True, needs3, x, w, b)
    fn_r, _ = op(F.LayerNorm, False, needs3, x, w, b)
    impl = {"native": lambda: C_.layer_norm_backward(x, w, mean, rstd, dy, dx, dw, db),
            "native op": lambda: op_backward(fn_n, dy, True),
            "numpy op": lambda: op_backward(fn_r, dy, False)}
    if torch is not None:
        _, tmean, trstd = torch.ops.aten.native_layer_norm(tx, (C,), tw, tb, 1e-5)
        tdy = torch.from_numpy(dy)
        impl["torch"] = lambda: torch.ops.aten.native_layer_norm_backward(tdy, tx, (C,), tmean, trstd, tw, tb,
                                                                          [True, True, True])
    yield f"layer_norm bwd ({N}×{C})", 3 * N * C * f4, impl


def cases(a, torch):
    """Yield (name, bytes, {impl: callable})."""
    rng = np.random.default_rng(0)
    N, C, V = a.rows, a.channels, a.vocab
    f4 = 4
    C_ = backend.native

    # ---- LayerNorm (N, C), and a small call (64 rows: a fine-tuning batch of a few short examples),
    # where the cost of waking the thread pool shows
    yield from layer_norm_cases(rng, N, C, torch)
    yield from layer_norm_cases(rng, 64, C, torch)

    # ---- cross-entropy (N, V)
    z = (3 * rng.standard_normal((N, V))).astype(np.float32)
    t = rng.integers(0, V, N)
    loss, lse = np.empty(N, np.float32), np.empty(N, np.float32)
    dz = np.empty_like(z)
    ce_kw = dict(ignore_index=-100, reduction="mean")
    impl = {"native": lambda: C_.cross_entropy_forward(z, t, loss, lse),
            "native op": lambda: op(F.CrossEntropy, True, (True, False), z, t, **ce_kw),
            "numpy op": lambda: op(F.CrossEntropy, False, (True, False), z, t, **ce_kw)}
    if torch is not None:
        tz, tt = torch.from_numpy(z), torch.from_numpy(t)
        impl["torch"] = lambda: torch.nn.functional.cross_entropy(tz, tt)
    yield f"cross_entropy fwd ({N}×{V})", N * V * f4, impl
    C_.cross_entropy_forward(z, t, loss, lse)
    fn_n, _ = op(F.CrossEntropy, True, (True, False), z, t, **ce_kw)
    fn_r, _ = op(F.CrossEntropy, False, (True, False), z, t, **ce_kw)
    one = np.array(1.0, np.float32)
    impl = {"native": lambda: C_.cross_entropy_backward(z, t, lse, dz, 1.0 / N),
            "native op": lambda: op_backward(fn_n, one, True),
            "numpy op": lambda: op_backward(fn_r, one, False)}
    if torch is not None:
        tzg = tz.clone().requires_grad_(True)
        tloss = torch.nn.functional.cross_entropy(tzg, tt)
        impl["torch"] = lambda: torch.autograd.grad(tloss, tzg, retain_graph=True)
    yield f"cross_entropy bwd ({N}×{V})", 2 * N * V * f4, impl

    # ---- embedding backward: N ids into (V, C)
    ids = rng.integers(0, V, N)
    g = rng.standard_normal((N, C)).astype(np.float32)
    gw = np.zeros((V, C), np.float32)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    fn_n, _ = op(F.Embedding, True, (True, False), wte, ids)
    fn_r, _ = op(F.Embedding, False, (True, False), wte, ids)
    impl = {"native": lambda: C_.embedding_backward(ids, g, gw),
            "native op": lambda: op_backward(fn_n, g, True),
            "numpy op": lambda: op_backward(fn_r, g, False)}
    if torch is not None:
        tg, tids = torch.from_numpy(g), torch.from_numpy(ids)
        impl["torch"] = lambda: torch.ops.aten.embedding_dense_backward(tg, tids, V, -1, False)
    yield f"embedding bwd ({N} ids → {V}×{C})", 3 * N * C * f4, impl

    # ---- dropout p = 0.1 on (n,)
    for n in (N * C, a.dropout_n):
        xd = rng.standard_normal(n).astype(np.float32)
        yd = np.empty_like(xd)
        key, thr, sc = 12345, keep_threshold(0.1), float(np.float32(1 / 0.9))
        impl = {"native": lambda xd=xd, yd=yd: C_.dropout(xd, yd, key, thr, sc),
                "native op": lambda xd=xd: op(F.Dropout, True, (True,), xd, 0.1, key),
                "numpy op": lambda xd=xd: op(F.Dropout, False, (True,), xd, 0.1, key)}
        if torch is not None:
            txd = torch.from_numpy(xd)
            impl["torch"] = lambda txd=txd: torch.nn.functional.dropout(txd, 0.1, training=True)
        yield f"dropout fwd p=0.1 ({n:,})", 2 * n * f4, impl

    # ---- AdamW over n parameters (one tensor)
    n = a.adam_n
    p0 = rng.standard_normal(n).astype(np.float32)
    ga = (rng.standard_normal(n) * 1e-2).astype(np.float32)

    def make_pygpt(native):
        class P:
            pass
        prm = P()
        prm.data, prm.grad = p0.copy(), ga
        opt = optim.AdamW([prm], lr=1e-4, weight_decay=0.01)

        def step():
            backend.native = _NATIVE if native else None
            try:
                opt.step()
            finally:
                backend.native = _NATIVE
        return step

    pn = p0.copy()
    m, v = np.zeros_like(pn), np.zeros_like(pn)
    impl = {"native": lambda: C_.adam_update(pn, ga, m, v, decay=1 - 1e-6, l2=0.0, one_minus_beta1=0.1, beta2=0.999,
                                             one_minus_beta2=0.001, bias_correction2_sqrt=0.5, eps=1e-8,
                                             step_size=1e-4),
            "native op": make_pygpt(True), "numpy op": make_pygpt(False)}
    if torch is not None:
        tp = torch.from_numpy(p0.copy()).requires_grad_(True)
        tp.grad = torch.from_numpy(ga)
        topt = torch.optim.AdamW([tp], lr=1e-4, weight_decay=0.01, foreach=False)
        impl["torch"] = topt.step
        tp2 = torch.from_numpy(p0.copy()).requires_grad_(True)
        tp2.grad = torch.from_numpy(ga)
        try:
            topt2 = torch.optim.AdamW([tp2], lr=1e-4, weight_decay=0.01, fused=True)
            topt2.step()
            impl["torch fused"] = topt2.step
        except (RuntimeError, TypeError):
            pass
    yield f"adamw step ({n:,} params)", 7 * n * f4, impl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rows", type=int, default=2048, help="N = batch × time (default 8 × 256)")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--adam-n", type=int, default=16_000_000, help="parameters in the AdamW row (≈ small-50k)")
    ap.add_argument("--dropout-n", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (default: pygpt's current count)")
    a = ap.parse_args()
    if backend.native is None:
        raise SystemExit(f"pygpt._C is not available ({backend._NATIVE_ERROR}); nothing to compare")
    threads = a.threads or backend.native.num_threads()
    backend.native.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    os.environ.setdefault("PYGPT_OPTIM_THREADS", str(threads))

    heads = ["kernel", "native ms", "native GB/s", "native op ms", "numpy op ms", "torch ms", "numpy÷native",
             "torch÷native", "flt native op", "flt torch"]
    rows, out = [], []
    for name, nbytes, impl in cases(a, torch):
        res = {k: timed(f, a.repeats) for k, f in impl.items()}
        rec = {"kernel": name, "bytes": nbytes, **{f"{k}_s": v[0] for k, v in res.items()},
               **{f"{k}_faults": v[1] for k, v in res.items()}}
        nat, natop, ref = res["native"][0], res["native op"][0], res["numpy op"][0]
        th = res.get("torch", (float("nan"), float("nan")))
        row = [name, f"{nat * 1e3:.2f}", f"{nbytes / nat / 1e9:.1f}", f"{natop * 1e3:.2f}", f"{ref * 1e3:.2f}",
               f"{th[0] * 1e3:.2f}", f"{ref / natop:.1f}×", f"{th[0] / natop:.2f}×", f"{res['native op'][1]:.0f}",
               f"{th[1]:.0f}"]
        if "torch fused" in res:
            rec["torch_fused_s"] = res["torch fused"][0]
            row[0] += f" [torch fused {res['torch fused'][0] * 1e3:.1f} ms]"
        rows.append(row)
        out.append(rec)
        print(table(heads, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"threads {threads}; N = {a.rows}, C = {a.channels}, V = {a.vocab}; median of {a.repeats}")
    print(table(heads, rows))
    print("\nnumpy÷native, torch÷native: time of that implementation over pygpt's native op (higher: native faster)")
    path = write_json("bench_kernels.json", {"machine": machine(), "threads": threads, "repeats": a.repeats,
                                             "native_build": backend.native.build_info(),
                                             "torch": getattr(torch, "__version__", None), "rows": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
