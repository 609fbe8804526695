"""The `pygpt` command: ``pygpt train`` (the main job), ``pygpt sample``, ``pygpt info``."""
from __future__ import annotations

import argparse
import json
import sys


def _train(args) -> int:
    from .checkpoint import latest_checkpoint, load_checkpoint  # noqa: PLC0415
    from .train import TrainConfig, pretrain  # noqa: PLC0415

    if args.resume:
        ckpt = latest_checkpoint(args.resume)
        if ckpt is None:
            raise FileNotFoundError(f"--resume {args.resume}: no checkpoints/ckpt-*.safetensors there")
        saved = load_checkpoint(ckpt)["train_config"]
        cfg = TrainConfig(**saved, out_dir=args.resume, resume=True, time_budget=args.time_budget,
                          device=args.device)
    else:
        cfg = TrainConfig(preset=args.preset, steps=args.steps, time_budget=args.time_budget, batch_size=args.batch,
                          context=args.context, lr=args.lr,
                          warmup=args.warmup if args.warmup is not None else min(50, args.steps // 10),
                          vocab_size=args.vocab_size, seed=args.seed, corpus=args.corpus, out_dir=args.out,
                          eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                          keep_checkpoints=args.keep_checkpoints, sample_prompt=args.prompt, device=args.device)
    try:
        result = pretrain(cfg)
    except FloatingPointError as exc:
        print(f"pygpt train: stopped: {exc}", file=sys.stderr)
        return 3
    first, last = result["val_history"][0][1], result["val_history"][-1][1]
    print(f"done  {result['steps']} updates in {result['train_seconds']:.0f}s; "
          f"validation loss {first:.3f} -> {last:.3f}; outputs in {result['out_dir']}")
    return 0


def _sample(args) -> int:
    import numpy as np  # noqa: PLC0415

    from .train import load_run  # noqa: PLC0415

    model, tok = load_run(args.run)
    model.to(device=args.device)
    prompt = tok.encode_ordinary(args.prompt)
    if not prompt:
        raise SystemExit("pygpt sample: --prompt must not be empty")
    n = min(args.max_tokens, model.config.n_ctx - len(prompt))
    if n <= 0:
        raise SystemExit(f"pygpt sample: the prompt ({len(prompt)} tokens) fills the context ({model.config.n_ctx})")
    ids = model.generate(np.array([prompt] * args.num), n, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed)
    for i, row in enumerate(ids):
        if args.num > 1:
            print(f"----- sample {i + 1}")
        print(tok.decode(row.tolist()))
    return 0


def _info(args) -> int:
    from . import info  # noqa: PLC0415

    print(json.dumps(info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pygpt", description="GPT pre-training and sampling without a framework")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a BPE and pre-train a GPT (default: small preset on Shakespeare)")
    t.add_argument("--preset", default="small", help="model preset: tiny, small, gpt1, gpt2, ... (default small)")
    t.add_argument("--steps", type=int, default=600, help="optimiser updates (default 600)")
    t.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    t.add_argument("--batch", type=int, default=16, help="sequences per update (default 16)")
    t.add_argument("--context", type=int, default=None, help="tokens per sequence (default: the preset's n_ctx)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    t.add_argument("--warmup", type=int, default=None,
                   help="linear warmup updates before cosine decay (default: min(50, steps/10))")
    t.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary to train (default 2048)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--corpus", default=None, help="UTF-8 text file or folder (default: embedded Shakespeare)")
    t.add_argument("--out", default="runs/shakespeare", help="output directory (default runs/shakespeare)")
    t.add_argument("--eval-interval", type=int, default=100, help="updates between validation evaluations")
    t.add_argument("--prompt", default="ROMEO:\n", help="prompt for the samples printed at the end")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (NumPy) or cuda (CuPy)")
    t.add_argument("--checkpoint-interval", type=int, default=None,
                   help="updates between checkpoints (default: --eval-interval)")
    t.add_argument("--keep-checkpoints", type=int, default=3, help="newest checkpoints to keep (default 3)")
    t.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its newest checkpoint (other options are taken from it)")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("--run", required=True, help="output directory of `pygpt train`")
    s.add_argument("--prompt", default="ROMEO:\n")
    s.add_argument("--max-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--num", type=int, default=1, help="number of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.set_defaults(func=_sample)

    i = sub.add_parser("info", help="print what this installation supports (native kernels, CUDA)")
    i.set_defaults(func=_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"pygpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
