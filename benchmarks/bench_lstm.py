"""One LSTM layer, forward + backward over a sequence: the fused op `F.lstm` vs the same recurrence
composed from elementwise autograd ops step by step (`LSTMLayer.run`, the reference) vs
`torch.nn.LSTM` on the CPU, in the same process.

Shape: the GPT-1 ablation's LSTM (batch 16, 256 steps, 256 inputs and units) unless stated; float32;
the gradient of sum(outputs · G) for a fixed random G. Reports the median ms per call and the ratios
(above 1: the fused op is faster).

    python benchmarks/bench_lstm.py [--batch 16] [--steps 256] [--hidden 256] [--repeats 5] [--threads N]

Prints a table and writes benchmarks/bench_lstm.json.
"""
from __future__ import annotations

import argparse

import numpy as np

import pygpt.functional as F
from common import machine, median_seconds, table, write_json
from pygpt import Tensor
from pygpt.models.lstm import LSTMLayer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    B, T, H = args.batch, args.steps, args.hidden
    rng = np.random.default_rng(0)
    layer = LSTMLayer(H, H, rng=rng)
    x = rng.standard_normal((B, T, H)).astype(np.float32)
    g = rng.standard_normal((B, T, H)).astype(np.float32)

    def fused():
        layer.zero_grad()
        out, _ = layer(Tensor(x, requires_grad=True))
        (out * Tensor(g)).sum().backward()

    def stepwise():
        layer.zero_grad()
        xs = [Tensor(x[:, t], requires_grad=True) for t in range(T)]
        hs, _ = layer.run(xs)
        (F.stack(hs, axis=1) * Tensor(g)).sum().backward()

    rows = [("pygpt F.lstm (fused)", median_seconds(fused, args.repeats)),
            ("pygpt stepwise autograd (reference)", median_seconds(stepwise, args.repeats))]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        ref = torch.nn.LSTM(H, H, batch_first=True)
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)

        def torch_lstm():
            ref.zero_grad()
            xi = xt.clone().requires_grad_(True)
            out, _ = ref(xi)
            (out * gt).sum().backward()

        rows.append((f"torch.nn.LSTM {torch.__version__}", median_seconds(torch_lstm, args.repeats)))
    fused_s = rows[0][1]
    out = [(name, f"{1e3 * s:.1f}", f"{s / fused_s:.2f}×") for name, s in rows]
    print(f"LSTM layer fwd+bwd, B={B} T={T} H={H}, float32")
    print(table(["implementation", "ms", "÷ fused"], out))
    path = write_json("bench_lstm.json", {"machine": machine(), "shape": {"batch": B, "steps": T, "hidden": H},
                                          "ms": {name: 1e3 * s for name, s in rows}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
