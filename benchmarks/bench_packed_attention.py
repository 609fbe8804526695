"""GPT training step with the packed attention op vs the split-into-views composition, same process.

The GPT blocks call `F.attention_qkv` (op PackedAttention): the native attention backward writes
dq, dk, dv straight into one (B, T, 3C) gradient. Before, the blocks split the c_attn output into
q, k, v views and called `F.scaled_dot_product_attention`; autograd then assembled d(qkv) from three
index nodes (three zero-filled arrays, two additions, a transposing copy). This script puts that
composition back on `CausalSelfAttention.forward`, alternates steps of the two on one model, and
reports the median step time of each and old ÷ new (higher means the packed op is faster).

    python benchmarks/bench_packed_attention.py [--config gpt2] [--rounds 5]

Configs are bench_train.py's. Writes benchmarks/bench_packed_attention.json next to this file.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench_train import CONFIGS, pygpt_step, random_batch
from common import machine, write_json

import pygpt.functional as F
from pygpt.models.gpt import CausalSelfAttention


def composed_forward(self, x, cache=None):
    """The blocks' attention before PackedAttention: q, k, v as views, heads merged afterwards."""
    B, T, C = x.shape
    H = self.n_head
    qkv = self.c_attn(x).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, d)
    y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], causal=True, dropout_p=self.attn_pdrop,
                                       generator=self.generator, training=self.training)
    return self.resid_dropout(self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, C)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="gpt2", choices=sorted(CONFIGS))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    c = CONFIGS[args.config]
    x, y = random_batch(c)
    step = pygpt_step(c, x, y)
    packed = CausalSelfAttention.forward
    variants = {"composed": composed_forward, "packed": packed}
    for fwd in variants.values():  # warm-up
        CausalSelfAttention.forward = fwd
        step()
    times = {name: [] for name in variants}
    try:
        for r in range(args.rounds):
            for name, fwd in variants.items():
                CausalSelfAttention.forward = fwd
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
            print(f"round {r}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), flush=True)
    finally:
        CausalSelfAttention.forward = packed
    old, new = statistics.median(times["composed"]), statistics.median(times["packed"])
    ratios = [a / b for a, b in zip(times["composed"], times["packed"])]
    print(f"{args.config}: composed {old:.3f} s/step, packed {new:.3f} s/step, composed / packed {old / new:.3f} "
          f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
    path = write_json("bench_packed_attention.json", {
        "machine": machine(), "config": args.config, "rounds": args.rounds, "seconds": times,
        "median_composed": old, "median_packed": new, "composed_over_packed": old / new, "round_ratios": ratios})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
