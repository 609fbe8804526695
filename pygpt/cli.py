"""The `pygpt` command: ``pygpt train`` (the main job), ``pygpt sample``, ``pygpt info``;
fine-tuning: ``pygpt tasks build``, ``pygpt finetune``, ``pygpt predict``, ``pygpt fewshot``."""
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


def _finetune(args) -> int:
    from .finetune import FinetuneConfig, finetune  # noqa: PLC0415

    cfg = FinetuneConfig(task=args.task, run=args.run, train=args.data, valid=args.valid, out_dir=args.out,
                         lm_coef=args.lm_coef, lr=args.lr, batch_size=args.batch, epochs=args.epochs,
                         warmup_fraction=args.warmup_fraction, weight_decay=args.weight_decay,
                         clf_pdrop=args.clf_dropout, truncate=args.truncate, max_len=args.max_len,
                         from_scratch=args.from_scratch,
                         seed=args.seed, max_train_examples=args.max_examples, log_interval=args.log_interval,
                         device=args.device)
    try:
        result = finetune(cfg)
    except FloatingPointError as exc:
        print(f"pygpt finetune: stopped: {exc}", file=sys.stderr)
        return 3
    v = result["valid"]
    summary = f"done  {result['steps']} updates in {result['train_seconds']:.0f}s"
    if v is not None:
        summary += f"; held-out accuracy {v['accuracy']:.4f}"
        if args.task != "choice":
            summary += f", macro-F1 {v['macro_f1']:.4f}"
        summary += f" ({v['n']} examples)"
    print(summary + f"; outputs in {result['out_dir']}")
    return 0


def _predict(args) -> int:
    from .finetune import predict  # noqa: PLC0415

    result = predict(args.run, args.data, args.out, truncate=True if args.truncate else None)
    m = result["metrics"]
    if args.out is None:
        for row in result["predictions"]:
            print(json.dumps(row))
    if m is not None:
        extra = f", macro-F1 {m['macro_f1']:.4f}" if result["task"] != "choice" else ""
        print(f"accuracy {m['accuracy']:.4f}{extra} on {m['n']} labelled examples", file=sys.stderr)
    if args.out is not None:
        print(f"{result['n']} predictions -> {args.out}", file=sys.stderr)
    return 0


def _tasks_build(args) -> int:
    from .tasks import TASKS, build_tasks  # noqa: PLC0415

    tasks = TASKS if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    summary = build_tasks(args.out, seed=args.seed, max_examples=args.max_examples, tasks=tasks)
    for task, info in summary["tasks"].items():
        sizes = ", ".join(f"{s} {info[s]['examples']}" for s in ("train", "valid", "test"))
        print(f"{task:9s} {sizes}  -> {args.out}/{task}/")
    print("plays per split: " + ", ".join(f"{s} {len(p)}" for s, p in summary["plays"].items()))
    return 0


def _fewshot(args) -> int:
    from .finetune import load_base  # noqa: PLC0415
    from .prompting import fewshot_accuracy  # noqa: PLC0415
    from .tasks import read_jsonl  # noqa: PLC0415

    try:
        shots = [int(k) for k in args.shots.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--shots must be comma-separated integers, got {args.shots!r}") from None
    model, tok, arch = load_base(args.run)
    queries = read_jsonl(args.data, args.task)
    if args.max_examples is not None:
        queries = queries[:args.max_examples]
    demos = read_jsonl(args.demos, args.task) if args.demos else None
    res = fewshot_accuracy(model, tok, queries, shots, demos=demos, seed=args.seed, reduction=args.score)
    print(f"{args.task} ({len(queries)} queries, {arch}, score = {args.score} log-likelihood)")
    print("| shots | accuracy | demonstrations used (mean) |")
    print("|---:|---:|---:|")
    for k, r in res.items():
        print(f"| {k} | {r['accuracy']:.4f} | {r['mean_shots_used']:.2f} |")
    if args.json:
        from .safetensors import atomic_write  # noqa: PLC0415

        atomic_write(args.json, [json.dumps({str(k): v for k, v in res.items()}, indent=2).encode()])
    return 0


def _tokenize(args) -> int:
    from .tokenizer.cli import run  # noqa: PLC0415

    return run(args)


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

    f = sub.add_parser("finetune", help="GPT-1 supervised fine-tuning of a pre-trained run on a task")
    f.add_argument("--task", required=True, choices=["classify", "entail", "similar", "choice"])
    f.add_argument("--run", required=True, help="pre-trained run directory (output of `pygpt train`)")
    f.add_argument("--data", required=True, help="training JSONL (schema: see pygpt.tasks)")
    f.add_argument("--valid", default=None, help="held-out JSONL; accuracy (and macro-F1) reported on it")
    f.add_argument("--out", required=True, help="output directory for the fine-tuned run")
    f.add_argument("--lambda", dest="lm_coef", type=float, default=0.5,
                   help="weight of the auxiliary LM loss (default 0.5; 0 turns it off)")
    f.add_argument("--lr", type=float, default=6.25e-5, help="peak learning rate (default 6.25e-5)")
    f.add_argument("--batch", type=int, default=32, help="examples per update (default 32)")
    f.add_argument("--epochs", type=int, default=3, help="passes over the training data (default 3)")
    f.add_argument("--warmup-fraction", type=float, default=0.002,
                   help="linear warmup over this fraction of the updates, then linear decay (default 0.002)")
    f.add_argument("--weight-decay", type=float, default=0.01)
    f.add_argument("--clf-dropout", type=float, default=0.1, help="dropout before the classifier (default 0.1)")
    f.add_argument("--truncate", action="store_true",
                   help="cut the longest text segment of inputs longer than the context (default: error)")
    f.add_argument("--max-len", type=int, default=None,
                   help="tokens per input sequence, at most the model's context (default: the context); "
                        "with --truncate, longer inputs are cut to it")
    f.add_argument("--from-scratch", action="store_true",
                   help="random initialisation with the run's configuration (the no-pre-training ablation)")
    f.add_argument("--max-examples", type=int, default=None, help="use only the first N training examples")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--log-interval", type=int, default=10)
    f.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (NumPy) or cuda (CuPy)")
    f.set_defaults(func=_finetune)

    pr = sub.add_parser("predict", help="predict with a fine-tuned run")
    pr.add_argument("--run", required=True, help="output directory of `pygpt finetune`")
    pr.add_argument("--data", required=True, help="JSONL in the task's schema (labels optional)")
    pr.add_argument("--out", default=None, help="write predictions here as JSONL (default: stdout)")
    pr.add_argument("--truncate", action="store_true", help="truncate long inputs (default: as in fine-tuning)")
    pr.set_defaults(func=_predict)

    ta = sub.add_parser("tasks", help="fine-tuning tasks built from the embedded corpus")
    ta_sub = ta.add_subparsers(dest="tasks_command", required=True)
    tb = ta_sub.add_parser("build", help="write {task}/{train,valid,test}.jsonl for the four corpus tasks")
    tb.add_argument("--out", required=True, help="output directory")
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument("--max-examples", type=int, default=None, help="at most N examples per split")
    tb.add_argument("--tasks", default=None, help="comma-separated subset of classify,entail,similar,choice")
    tb.set_defaults(func=_tasks_build)

    fs = sub.add_parser("fewshot", help="zero/one/few-shot accuracy of a pre-trained LM by candidate scoring")
    fs.add_argument("--run", required=True, help="pre-trained run directory")
    fs.add_argument("--data", required=True, help="labelled JSONL (default task: choice)")
    fs.add_argument("--task", default="choice", choices=["classify", "entail", "similar", "choice"])
    fs.add_argument("--shots", default="0,1,4,8", help="comma-separated numbers of demonstrations")
    fs.add_argument("--demos", default=None, help="JSONL to draw demonstrations from (default: --data)")
    fs.add_argument("--score", default="mean", choices=["mean", "sum"],
                    help="candidate score: mean or total log-likelihood of its tokens (default mean)")
    fs.add_argument("--max-examples", type=int, default=None, help="evaluate the first N examples")
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--json", default=None, help="also write the results to this JSON file")
    fs.set_defaults(func=_fewshot)

    tk = sub.add_parser("tokenize", help="BPE tokenizer: train | encode | decode (C++ encoder and trainer)")
    from .tokenizer.cli import add_arguments as _tokenize_arguments  # noqa: PLC0415

    _tokenize_arguments(tk)
    tk.set_defaults(func=_tokenize)

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
