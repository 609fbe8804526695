"""Training-step throughput: pygpt vs PyTorch eager (HF GPT2LMHeadModel) on the same config, same process.

One step = forward + LM loss + backward + AdamW update + zero_grad, float32, dropout off, both sides
on all usable cores (torch.set_num_threads(len(os.sched_getaffinity(0))); pygpt: OpenBLAS and OpenMP defaults). Both models are built once; after 2 warm-up
steps each, --rounds rounds alternate --steps timed pygpt steps with --steps timed torch steps, so
both sides see the same machine load. Reported per side: median step time over all timed steps,
tokens/s, and per step the minor page faults, user and system CPU seconds (resource.getrusage of
the process, only one side runs at a time); the ratio pygpt tokens/s ÷ torch tokens/s (higher is
better for pygpt) is the median over rounds of the per-round ratio, with its min–max. Configs:

    tiny         2 × 128, 4 heads, ctx 128, vocab 2048,  batch 16   (the main job's small sibling)
    small        4 × 256, 4 heads, ctx 128, vocab 2048,  batch 16   (the main job: `pygpt train`)
    small-50k    4 × 256, 4 heads, ctx 256, vocab 50257, batch 8    (the kernels issue's target)
    gpt2         12 × 768, 12 heads, ctx 1024, vocab 50257, batch 1 (GPT-2 124M, the issue's 1 × 1024)
    gpt2-256     the same at ctx 256, batch 1                            (the GPT issue's 1 × 256 row)

    python benchmarks/bench_train.py [--configs tiny,small,small-50k,gpt2] [--steps 3] [--rounds 3] [--unfused]

pygpt's step asks for the loss only (model(x, y, return_logits=False): classifier and cross-entropy
fused, the (B·T, V) logits never materialised); --unfused makes it build the logits as torch does.

Malloc tuning (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, THP_MEM_ALLOC_ENABLE) changes both sides;
the environment is recorded in the JSON so runs with and without it can be compared.
Prints a table and writes benchmarks/bench_train.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
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
    "gpt2": dict(n_layer=12, d_model=768, n_head=12, n_ctx=1024, vocab_size=50257, batch=1),
    "gpt2-256": dict(n_layer=12, d_model=768, n_head=12, n_ctx=256, vocab_size=50257, batch=1),
}
ENV_KEYS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
            "THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYGPT_NO_NATIVE")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset; one-core runs: OMP/OPENBLAS_NUM_THREADS=1 too
    except AttributeError:
        return os.cpu_count() or 1


def _timed(step, n):
    """Run `step` n times: (list of wall seconds, minor faults/step, user s/step, sys s/step)."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return times, (r1.ru_minflt - r0.ru_minflt) / n, (r1.ru_utime - r0.ru_utime) / n, (r1.ru_stime - r0.ru_stime) / n


def random_batch(c):
    """Token ids x and targets y (batch, n_ctx) for config c, the same for every script (seed 0)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, c["vocab_size"], size=(c["batch"], c["n_ctx"]))
    y = rng.integers(0, c["vocab_size"], size=(c["batch"], c["n_ctx"]))
    return x, y


def pygpt_step(c, x, y, fused=True):
    """One pygpt training step. fused: the loss without materialising the logits (return_logits=False,
    the classifier and cross-entropy fused, as `pygpt train` runs); else logits (B, T, V) + cross_entropy."""
    cfg = GPTConfig(vocab_size=c["vocab_size"], n_ctx=c["n_ctx"], n_layer=c["n_layer"], n_head=c["n_head"],
                    d_model=c["d_model"], embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    model = GPT(cfg)
    opt = optim.AdamW(optim.param_groups(model.named_parameters(), 0.01), lr=1e-4)
    kw = {"return_logits": False} if fused else {}

    def step():
        _, loss = model(x, y, **kw)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def torch_step(torch, transformers, c, x, y):
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

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,small,small-50k,gpt2")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating pygpt/torch rounds")
    ap.add_argument("--no-torch", action="store_true", help="time pygpt only")
    ap.add_argument("--unfused", action="store_true",
                    help="pygpt materialises the (B, T, V) logits like torch (return_logits=True)")
    args = ap.parse_args()
    torch = transformers = None
    if not args.no_torch:
        try:
            import torch
            import transformers
            torch.set_num_threads(_cores())
        except ImportError:
            torch = transformers = None
    heads = ["config", "shape", "pygpt ms/step", "pygpt tok/s", "torch ms/step", "torch tok/s",
             "pygpt ÷ torch (min–max)", "faults/step pygpt / torch", "sys s/step pygpt / torch"]
    rows, out = [], []
    for name in args.configs.split(","):
        c = CONFIGS[name]
        x, y = random_batch(c)
        tokens = c["batch"] * c["n_ctx"]
        sides = {"pygpt": pygpt_step(c, x, y, fused=not args.unfused)}
        if torch is not None:
            sides["torch"] = torch_step(torch, transformers, c, x, y)
        for step in sides.values():  # warm-up: first-touch of weights, moments, thread pools
            _timed(step, 2)
        res = {s: {"times": [], "faults": [], "user": [], "sys": [], "round_median": []} for s in sides}
        for _ in range(args.rounds):
            for s, step in sides.items():
                times, flt, ut, st = _timed(step, args.steps)
                r = res[s]
                r["times"] += times
                r["faults"].append(flt)
                r["user"].append(ut)
                r["sys"].append(st)
                r["round_median"].append(statistics.median(times))
        rec = {"config": name, **c, "steps": args.steps, "rounds": args.rounds}
        for s, r in res.items():
            med = statistics.median(r["times"])
            rec[s] = {"step_s": med, "tok_s": tokens / med, "times": r["times"],
                      "minor_faults_per_step": statistics.median(r["faults"]),
                      "user_s_per_step": statistics.median(r["user"]), "sys_s_per_step": statistics.median(r["sys"])}
        p = rec["pygpt"]
        row = [name, f"{c['n_layer']}×{c['d_model']}, V={c['vocab_size']}, {c['batch']}×{c['n_ctx']}",
               f"{p['step_s'] * 1e3:.0f}", f"{p['tok_s']:,.0f}"]
        if "torch" in rec:
            t = rec["torch"]
            ratios = [tm / pm for pm, tm in zip(res["pygpt"]["round_median"], res["torch"]["round_median"])]
            rec["ratio"] = statistics.median(ratios)
            rec["ratio_rounds"] = ratios
            row += [f"{t['step_s'] * 1e3:.0f}", f"{t['tok_s']:,.0f}",
                    f"{rec['ratio']:.2f}× ({min(ratios):.2f}–{max(ratios):.2f})",
                    f"{p['minor_faults_per_step']:,.0f} / {t['minor_faults_per_step']:,.0f}",
                    f"{p['sys_s_per_step']:.2f} / {t['sys_s_per_step']:.2f}"]
        else:
            row += ["", "", "", f"{p['minor_faults_per_step']:,.0f}", f"{p['sys_s_per_step']:.2f}"]
        rows.append(row)
        out.append(rec)
        print(table(heads, rows[-1:]), flush=True)
    print()
    print(table(heads, rows))
    print("\npygpt ÷ torch = pygpt tokens/s over torch tokens/s (higher is better for pygpt): median of the "
          f"per-round ratios over {args.rounds} alternating rounds of {args.steps} steps, (min–max)")
    path = write_json("bench_train.json", {"machine": machine(), "native": pygpt.info()["native"], "cores_used": _cores(),
                                           "torch": getattr(torch, "__version__", None),
                                           "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
                                           "pygpt_classifier": "unfused" if args.unfused else "fused",
                                           "rows": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
