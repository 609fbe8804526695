"""CUDA kernels beside PyTorch on the same card: fused attention, GELU bandwidth, a GPT-2 124M training step.

Needs a CUDA GPU, CuPy, pygpt._C built with nvcc (build_info()["cuda_kernels"] non-empty) and torch with
CUDA; without them it exits with a message saying which is missing (exit status 2).

Sections (each timed as the median of --repeats runs after warm-up; every run is bracketed by a device
synchronisation, so the times include the Python-side launch cost a training step pays):
  attention  causal, B=4, H=12, d=64, float32, T in --T (B halves at a T where an implementation runs
             out of memory). Rows: pygpt op (F.scaled_dot_product_attention + backward through the
             autograd), pygpt kernel (pygpt._C.cuda.attention_* on preallocated buffers), torch SDPA
             (is_causal=True), each fwd and fwd+bwd; torch with TF32 off (fp32) and on ("tf32"). pygpt's
             kernel is fp32 FMA either way. FLOPs as bench_attention.py: fwd 4·B·H·T²·d/2, fwd+bwd 3.5×.
  gelu       GB/s of pygpt's GELU forward (read x, write y) and backward (read x, dy, write dx), float32,
             64 Mi elements, against a device-to-device copy of the same bytes (read + write).
  train      GPT-2 124M (12 × 768, 12 heads, vocab 50257, context 1024), batch 8 × 1024, one step =
             forward + loss + backward + AdamW + zero_grad, dropout off; pygpt (CuPy + these kernels)
             vs torch eager (transformers' GPT2LMHeadModel), fp32 and TF32 (CUPY_TF32=1 / allow_tf32),
             each in its own subprocess (CuPy reads CUPY_TF32 at import). tokens/s and the ratio.

    python benchmarks/bench_cuda.py [--T 512,1024,2048,4096,8192] [--repeats 10] [--sections attention,gelu,train]

Prints tables and writes benchmarks/bench_cuda.json (with the card, driver and versions).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_json  # noqa: E402

B, H, D = 4, 12, 64


def requirements() -> list[str]:
    """What is missing for this benchmark (empty: everything is there)."""
    missing = []
    from pygpt import backend, cuda_kernels

    if not cuda_kernels.enabled():
        missing.append(f"pygpt CUDA kernels: {cuda_kernels.info()['reason']}")
    if not backend.cuda_available():
        missing.append(f"CuPy with a CUDA GPU: {backend.info().get('cuda_reason')}")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append(f"torch with CUDA (torch {torch.__version__} sees no GPU)")
    except ImportError:
        missing.append("torch (pip install torch with CUDA)")
    return missing


def gpu_info() -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    name = props["name"]
    return {
        "gpu": name.decode() if isinstance(name, bytes) else name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "memory_GiB": round(props["totalGlobalMem"] / 2**30, 1),
        "driver": cupy.cuda.runtime.driverGetVersion(),
        "runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cupy": cupy.__version__,
    }


def sync():
    import cupy
    import torch

    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, min) seconds of fn(), each run between two device synchronisations."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


# ------------------------------------------------------------------------------------------ attention
def flops_forward(b: int, T: int) -> float:
    return 4.0 * b * H * T * T * D / 2


def attention_runners(b: int, T: int):
    """{name: (fwd_fn, fwdbwd_fn)} on the same random inputs."""
    import cupy as cp
    import torch

    import pygpt.functional as F
    from pygpt import Tensor, no_grad
    from pygpt._C import cuda as K

    rng = cp.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((b, H, T, D), dtype=cp.float32) for _ in range(4))
    tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))

    def op_fwd():
        with no_grad():
            F.scaled_dot_product_attention(tq, tk, tv, causal=True)

    def op_fwdbwd():
        for t in (tq, tk, tv):
            t.grad = None
        F.scaled_dot_product_attention(tq, tk, tv, causal=True).backward(g)

    out = cp.empty_like(q)
    lse = cp.empty((b, H, T), cp.float32)
    dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
    ws = cp.empty(K.attention_backward_workspace_size(b, H, T), cp.uint8)

    def kern_fwd():
        K.attention_forward(q, k, v, out, lse, True, stream=cp.cuda.get_current_stream().ptr)

    def kern_fwdbwd():
        s = cp.cuda.get_current_stream().ptr
        K.attention_forward(q, k, v, out, lse, True, stream=s)
        K.attention_backward(q, k, v, out, lse, g, dq, dk, dv, True, workspace=ws, stream=s)

    xq, xk, xv = (torch.as_tensor(a, device="cuda").detach().requires_grad_(True) for a in (q, k, v))
    xg = torch.as_tensor(g, device="cuda")
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def torch_fwd():
        with torch.no_grad():
            sdpa(xq, xk, xv, is_causal=True)

    def torch_fwdbwd():
        for t in (xq, xk, xv):
            t.grad = None
        sdpa(xq, xk, xv, is_causal=True).backward(xg)

    return {"pygpt op": (op_fwd, op_fwdbwd), "pygpt kernel": (kern_fwd, kern_fwdbwd),
            "torch sdpa": (torch_fwd, torch_fwdbwd)}


def bench_attention(Ts, repeats):
    import cupy as cp
    import torch

    results = []
    for T in Ts:
        b = B
        while True:
            try:
                runners = attention_runners(b, T)
                rows = []
                for tf32 in (False, True):
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    torch.backends.cudnn.allow_tf32 = tf32
                    for name, (fwd, fb) in runners.items():
                        if tf32 and not name.startswith("torch"):
                            continue  # pygpt's kernel does not use TF32: one row is enough
                        label = name + (" tf32" if tf32 else "")
                        for what, fn, work in (("fwd", fwd, 1.0), ("fwd+bwd", fb, 3.5)):
                            med, best = timed(fn, repeats)
                            rows.append({"impl": label, "pass": what, "T": T, "B": b, "seconds": med,
                                         "seconds_min": best, "tflops": flops_forward(b, T) * work / med / 1e12})
                            print(f"  T={T:5d} B={b} {label:<16} {what:<8} {med * 1e3:9.2f} ms "
                                  f"{rows[-1]['tflops']:6.2f} TFLOP/s", flush=True)
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
                results += rows
                break
            except (cp.cuda.memory.OutOfMemoryError, torch.cuda.OutOfMemoryError):
                cp.get_default_memory_pool().free_all_blocks()
                torch.cuda.empty_cache()
                if b == 1:
                    print(f"  T={T}: out of memory even at B=1, skipped")
                    break
                b //= 2
                print(f"  T={T}: out of memory, retrying with B={b}")
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    return results


def attention_table(results):
    by = {(r["impl"], r["pass"], r["T"]): r for r in results}
    rows = []
    for T in sorted({r["T"] for r in results}):
        for what in ("fwd", "fwd+bwd"):
            ours, kern = by.get(("pygpt op", what, T)), by.get(("pygpt kernel", what, T))
            t32, ttf = by.get(("torch sdpa", what, T)), by.get(("torch sdpa tf32", what, T))
            ms = lambda r: f"{r['seconds'] * 1e3:.2f}" if r else "-"  # noqa: E731
            ratio = lambda a, o: f"{o['seconds'] / a['seconds']:.2f}x" if a and o else "-"  # noqa: E731
            rows.append([T, (ours or kern or {}).get("B", "-"), what, ms(ours), ms(kern), ms(t32), ratio(ours, t32),
                         ms(ttf), ratio(ours, ttf)])
    return table(["T", "B", "pass", "pygpt op ms", "pygpt kernel ms", "torch fp32 ms", "pygpt vs fp32",
                  "torch tf32 ms", "pygpt vs tf32"], rows)


# ------------------------------------------------------------------------------------------ GELU
def bench_gelu(repeats, n=64 * 2**20):
    import cupy as cp

    from pygpt._C import cuda as K

    rng = cp.random.default_rng(0)
    x = rng.standard_normal(n, dtype=cp.float32) * 3
    dy = rng.standard_normal(n, dtype=cp.float32)
    y, dx = cp.empty_like(x), cp.empty_like(x)
    s = lambda: cp.cuda.get_current_stream().ptr  # noqa: E731
    runs = {
        "copy": (lambda: cp.copyto(y, x), 8 * n),
        "gelu fwd tanh": (lambda: K.gelu_forward(x, y, "tanh", stream=s()), 8 * n),
        "gelu bwd tanh": (lambda: K.gelu_backward(x, dy, dx, "tanh", stream=s()), 12 * n),
        "gelu fwd erf": (lambda: K.gelu_forward(x, y, "none", stream=s()), 8 * n),
        "gelu bwd erf": (lambda: K.gelu_backward(x, dy, dx, "none", stream=s()), 12 * n),
    }
    out = {}
    for name, (fn, nbytes) in runs.items():
        med, best = timed(fn, repeats)
        out[name] = {"seconds": med, "seconds_min": best, "GBps": nbytes / med / 1e9, "bytes": nbytes}
    copy = out["copy"]["GBps"]
    for r in out.values():
        r["of_copy"] = r["GBps"] / copy
    return out


# ------------------------------------------------------------------------------------------ training step
_TRAIN_BATCH, _TRAIN_CTX = 8, 1024


def train_child(impl: str, steps: int) -> dict:
    """One implementation's GPT-2 124M step time (runs in a subprocess; TF32 from the environment)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50257, size=(_TRAIN_BATCH, _TRAIN_CTX))
    y = rng.integers(0, 50257, size=(_TRAIN_BATCH, _TRAIN_CTX))
    tf32 = os.environ.get("CUPY_TF32", "0") == "1"
    if impl == "pygpt":
        import cupy as cp

        from pygpt import optim
        from pygpt.models import GPT, GPTConfig

        cfg = GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=12, n_head=12, d_model=768, embd_pdrop=0.0,
                        attn_pdrop=0.0, resid_pdrop=0.0)
        model = GPT(cfg, seed=0).to(device="cuda")
        opt = optim.AdamW(optim.param_groups(model.named_parameters(), 0.01), lr=1e-4)
        xd, yd = cp.asarray(x), cp.asarray(y)

        def step():
            _, loss = model(xd, yd)
            loss.backward()
            opt.step()
            opt.zero_grad()

        def sync_():
            cp.cuda.Device().synchronize()
    else:
        import torch
        import transformers

        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        hf = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = transformers.GPT2LMHeadModel(hf).cuda().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        tx, ty = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")

        def step():
            logits = model(input_ids=tx).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ty.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def sync_():
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync_()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync_()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"impl": impl, "tf32": tf32, "step_s": med, "step_s_min": min(times),
            "tokens_per_s": _TRAIN_BATCH * _TRAIN_CTX / med}


def bench_train(steps: int) -> list[dict]:
    rows = []
    for tf32 in (False, True):
        for impl in ("pygpt", "torch"):
            env = dict(os.environ, CUPY_TF32="1" if tf32 else "0",
                       PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent)] + sys.path))
            res = subprocess.run([sys.executable, __file__, "--train-child", impl, "--steps", str(steps)],
                                 capture_output=True, text=True, env=env, timeout=3600)
            if res.returncode != 0:
                print(f"  train {impl} tf32={tf32} failed: {res.stderr.strip().splitlines()[-3:]}")
                continue
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(rec)
            print(f"  train {impl:<6} {'tf32' if tf32 else 'fp32'} {rec['step_s'] * 1e3:8.1f} ms/step "
                  f"{rec['tokens_per_s']:10,.0f} tok/s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default="512,1024,2048,4096,8192", help="attention sequence lengths")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per implementation")
    ap.add_argument("--sections", default="attention,gelu,train")
    ap.add_argument("--out", default="bench_cuda.json")
    ap.add_argument("--train-child", choices=["pygpt", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    missing = requirements()
    if missing:
        print("bench_cuda.py needs a CUDA GPU; not available here:\n  - " + "\n  - ".join(missing), file=sys.stderr)
        sys.exit(2)
    if args.train_child:
        print(json.dumps(train_child(args.train_child, args.steps)))
        return

    import torch

    import pygpt
    from pygpt import cuda_kernels

    sections = set(args.sections.split(","))
    gpu = gpu_info()
    print(f"{gpu['gpu']} (sm_{gpu['compute_capability'].replace('.', '')}, {gpu['memory_GiB']} GiB), "
          f"driver {gpu['driver']}, CUDA runtime {gpu['runtime']}, CuPy {gpu['cupy']}, torch {torch.__version__}; "
          f"pygpt kernels for {cuda_kernels.info()['architectures']}")
    payload = {"machine": {**machine(), **gpu}, "torch": torch.__version__, "repeats": args.repeats,
               "native_build": pygpt.backend.native.build_info()}

    if "attention" in sections:
        res = bench_attention([int(t) for t in args.T.split(",")], args.repeats)
        print(f"\nCausal attention H={H} d={D} float32; ratio = torch time / pygpt op time (higher is better)")
        print(attention_table(res))
        payload["attention"] = {"shape": {"B": B, "H": H, "d": D, "causal": True},
                                "flops": {"fwd": "4*B*H*T^2*d/2", "fwd+bwd": "3.5 * fwd"}, "results": res}
    if "gelu" in sections:
        res = bench_gelu(args.repeats)
        print("\nGELU float32, 64 Mi elements (bytes moved / time; copy = device-to-device copy)")
        print(table(["kernel", "ms", "GB/s", "of copy"],
                    [[k, f"{r['seconds'] * 1e3:.3f}", f"{r['GBps']:.0f}", f"{r['of_copy']:.0%}"] for k, r in res.items()]))
        payload["gelu"] = res
    if "train" in sections:
        res = bench_train(args.steps)
        rows = []
        for tf32 in (False, True):
            ours = next((r for r in res if r["impl"] == "pygpt" and r["tf32"] == tf32), None)
            theirs = next((r for r in res if r["impl"] == "torch" and r["tf32"] == tf32), None)
            fmt = lambda r: f"{r['step_s'] * 1e3:.1f}" if r else "-"  # noqa: E731
            tok = lambda r: f"{r['tokens_per_s']:,.0f}" if r else "-"  # noqa: E731
            ratio = f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x" if ours and theirs else "-"
            rows.append(["tf32" if tf32 else "fp32", fmt(ours), tok(ours), fmt(theirs), tok(theirs), ratio])
        print(f"\nGPT-2 124M training step, batch {_TRAIN_BATCH} x {_TRAIN_CTX}, median of {args.steps}")
        print(table(["precision", "pygpt ms", "pygpt tok/s", "torch ms", "torch tok/s", "pygpt / torch"], rows))
        payload["train"] = res
    path = write_json(args.out, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
