"""Training-step throughput: pygpt vs PyTorch eager (HF GPT2LMHeadModel) on the same config, same process.

One step = forward + LM loss + backward + AdamW update + zero_grad, float32, dropout off, both sides
on all cores (torch.set_num_threads(os.cpu_count())). Reported: median step time over --steps timed
steps after 2 warm-up steps, tokens/s, and the ratio pygpt tokens/s ÷ torch tokens/s (higher is better
for pygpt). Configs:

    tiny         2 × 128, 4 heads, ctx 128, vocab 2048,  batch 16   (the main job's small sibling)
    small        4 × 256, 4 heads, ctx 128, vocab 2048,  batch 16   (the main job: `pygpt train`)
    small-50k    4 × 256, 4 heads, ctx 256, vocab 50257, batch 8    (the kernels issue's target)
    gpt2         12 × 768, 12 heads, ctx 256, vocab 50257, batch 1  (GPT-2 124M)

    python benchmarks/bench_train.py [--configs tiny,small,small-50k,gpt2] [--steps 5]

Prints a table and writes benchmarks/bench_train.json.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import pygpt
from common import machine, table, write_json
from pygpt import optim
from pygpt.models import GPT, GPTConfig

CONFIGS = {
    "tiny": dict(n_layer=2, d_model=128, n_head=4, n_ctx=128, vocab_size=2048, batch=16),
    "small": dict(n_layer=4, d_model=256, n_head=4, n_ctx=128, vocab_size=2048, batch=16),
    "small-50k": dict(n_layer=4, d_model=256, n_head=4, n_ctx=256, vocab_size=50257, batch=8),
    "gpt2": dict(n_layer=12, d_model=768, n_head=12, n_ctx=256, vocab_size=50257, batch=1),
}


def _time_steps(step, n):
    for _ in range(2):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_pygpt(c, x, y, n):
    cfg = GPTConfig(vocab_size=c["vocab_size"], n_ctx=c["n_ctx"], n_layer=c["n_layer"], n_head=c["n_head"],
                    d_model=c["d_model"], embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    model = GPT(cfg)
    opt = optim.AdamW(optim.param_groups(model.named_parameters(), 0.01), lr=1e-4)

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return _time_steps(step, n)


def bench_torch(torch, transformers, c, x, y, n):
    hf_cfg = transformers.GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_ctx"], n_embd=c["d_model"],
                                     n_layer=c["n_layer"], n_head=c["n_head"], activation_function="gelu_new",
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(hf_cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def step():
        logits = model(input_ids=tx).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ty.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_steps(step, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,small,small-50k,gpt2")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
        import transformers
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = transformers = None
    rows, out = [], []
    for name in args.configs.split(","):
        c = CONFIGS[name]
        rng = np.random.default_rng(0)
        x = rng.integers(0, c["vocab_size"], size=(c["batch"], c["n_ctx"]))
        y = rng.integers(0, c["vocab_size"], size=(c["batch"], c["n_ctx"]))
        tokens = c["batch"] * c["n_ctx"]
        ours = bench_pygpt(c, x, y, args.steps)
        rec = {"config": name, **c, "pygpt_step_s": ours, "pygpt_tok_s": tokens / ours}
        row = [name, f"{c['n_layer']}×{c['d_model']}, V={c['vocab_size']}, {c['batch']}×{c['n_ctx']}",
               f"{ours * 1e3:.0f}", f"{tokens / ours:,.0f}"]
        if torch is not None:
            theirs = bench_torch(torch, transformers, c, x, y, args.steps)
            rec.update(torch_step_s=theirs, torch_tok_s=tokens / theirs, ratio=theirs / ours)
            row += [f"{theirs * 1e3:.0f}", f"{tokens / theirs:,.0f}", f"{theirs / ours:.2f}×"]
        rows.append(row)
        out.append(rec)
        print(table(["config", "shape", "pygpt ms/step", "pygpt tok/s", "torch ms/step", "torch tok/s",
                     "pygpt ÷ torch"], rows[-1:]), flush=True)
    print()
    print(table(["config", "shape", "pygpt ms/step", "pygpt tok/s", "torch ms/step", "torch tok/s",
                 "pygpt ÷ torch"], rows))
    print("\npygpt ÷ torch = pygpt tokens/s over torch tokens/s (higher is better for pygpt)")
    path = write_json("bench_train.json", {"machine": machine(), "native": pygpt.info()["native"],
                                           "torch": getattr(torch, "__version__", None), "rows": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
