"""Per-op Python overhead: pygpt vs PyTorch eager on small tensors, in the same process.

Small tensors (8×8 float32 unless stated) make the arithmetic negligible, so the time is what each
framework spends around it: argument checks, graph recording, dispatch. Each row times
forward + backward of one op (a fresh leaf each call, gradient of the sum), and forward alone
without gradient; reported in µs per call with the ratio pygpt / torch (lower is better for us).

    python benchmarks/bench_ops.py [--repeats 2000]

Prints a table and writes benchmarks/bench_ops.json.
"""
from __future__ import annotations

import argparse

import numpy as np

import pygpt
import pygpt.functional as F
from common import machine, median_seconds, table, write_json


def pygpt_cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    t = rng.integers(0, 8, size=8)
    T = pygpt.Tensor
    return {
        "add": (lambda x: x + T(b), a),
        "mul": (lambda x: x * T(b), a),
        "matmul": (lambda x: x @ T(b), a),
        "sum(axis=1)": (lambda x: x.sum(axis=1), a),
        "exp": (lambda x: x.exp(), a),
        "reshape": (lambda x: x.reshape(64), a),
        "transpose": (lambda x: x.transpose(1, 0), a),
        "getitem": (lambda x: x[1:5], a),
        "softmax": (lambda x: F.softmax(x, -1), a),
        "gelu": (lambda x: F.gelu(x), a),
        "layer_norm": (lambda x: F.layer_norm(x, T(w), T(w)), a),
        "linear": (lambda x: F.linear(x, T(b), T(w)), a),
        "cross_entropy": (lambda x: F.cross_entropy(x, t), a),
    }


def torch_cases(torch):
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.standard_normal((8, 8)).astype(np.float32))
    b = torch.tensor(rng.standard_normal((8, 8)).astype(np.float32))
    w = torch.tensor(rng.standard_normal(8).astype(np.float32))
    t = torch.tensor(rng.integers(0, 8, size=8))
    TF = torch.nn.functional
    return {
        "add": (lambda x: x + b, a),
        "mul": (lambda x: x * b, a),
        "matmul": (lambda x: x @ b, a),
        "sum(axis=1)": (lambda x: x.sum(dim=1), a),
        "exp": (lambda x: x.exp(), a),
        "reshape": (lambda x: x.reshape(64), a),
        "transpose": (lambda x: x.transpose(1, 0), a),
        "getitem": (lambda x: x[1:5], a),
        "softmax": (lambda x: TF.softmax(x, -1), a),
        "gelu": (lambda x: TF.gelu(x, approximate="tanh"), a),
        "layer_norm": (lambda x: TF.layer_norm(x, (8,), w, w), a),
        "linear": (lambda x: x @ b + w, a),
        "cross_entropy": (lambda x: TF.cross_entropy(x, t), a),
    }


def time_pygpt(fn, a, repeats):
    def fwd_bwd():
        x = pygpt.Tensor(a, requires_grad=True)
        fn(x).sum().backward()

    def fwd():
        with pygpt.no_grad():
            fn(pygpt.Tensor(a))

    return median_seconds(fwd_bwd, repeats, 50), median_seconds(fwd, repeats, 50)


def time_torch(torch, fn, a, repeats):
    def fwd_bwd():
        x = a.clone().requires_grad_(True)
        fn(x).sum().backward()

    def fwd():
        with torch.no_grad():
            fn(a.clone())

    return median_seconds(fwd_bwd, repeats, 50), median_seconds(fwd, repeats, 50)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    ours = pygpt_cases()
    theirs = torch_cases(torch) if torch is not None else {}
    if torch is not None:
        torch.set_num_threads(1)
    rows, out = [], []
    for name, (fn, a) in ours.items():
        fb, f = time_pygpt(fn, a, args.repeats)
        rec = {"op": name, "pygpt_fwd_bwd_us": fb * 1e6, "pygpt_fwd_us": f * 1e6}
        row = [name, f"{fb * 1e6:.1f}", f"{f * 1e6:.1f}"]
        if name in theirs:
            tfb, tf = time_torch(torch, *theirs[name], args.repeats)
            rec.update(torch_fwd_bwd_us=tfb * 1e6, torch_fwd_us=tf * 1e6)
            row += [f"{tfb * 1e6:.1f}", f"{tf * 1e6:.1f}", f"{fb / tfb:.2f}×", f"{f / tf:.2f}×"]
        rows.append(row)
        out.append(rec)
    headers = ["op (8×8 f32)", "pygpt fwd+bwd µs", "pygpt fwd µs", "torch fwd+bwd µs", "torch fwd µs",
               "ratio fwd+bwd", "ratio fwd"]
    print(table(headers, rows))
    print("\nratio = pygpt time / torch time (1.00× = same overhead; lower is better for pygpt)")
    path = write_json("bench_ops.json", {"machine": machine(), "torch": getattr(torch, "__version__", None),
                                         "native": pygpt.info()["native"], "rows": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
