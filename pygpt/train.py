"""The main job: train a BPE on a corpus, pre-train a GPT on it, evaluate, save, sample.

    run = pretrain(TrainConfig(preset="small", steps=600))      # what `pygpt train` calls

Outputs in ``out_dir``: ``tokenizer.json``, ``train.bin``/``valid.bin`` (+ ``.json`` sidecars),
``config.json``, ``metrics.jsonl`` (one JSON object per logged step / evaluation),
``model.safetensors`` (weights; GPT-2 checkpoint names), ``loss.png`` (if matplotlib is present)
and ``samples.txt``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import optim
from .autograd import no_grad
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data.corpus import load_shakespeare, read_text_corpus, render_text, split_plays
from .data.tokens import BatchSampler, TokenFile, iter_eval_batches, write_token_file
from .models.gpt import GPT, GPTConfig, preset
from .safetensors import atomic_write, load_file, save_file
from .tokenizer import BPETokenizer

EOT = "<|endoftext|>"


@dataclass
class TrainConfig:
    preset: str = "small"
    steps: int = 600  # optimiser updates (upper bound when time_budget is set)
    time_budget: float | None = None  # seconds of training; the schedule still spans `steps`
    batch_size: int = 16
    context: int | None = None  # default: the preset's n_ctx
    lr: float = 2e-3  # peak; GPT-1 used 2.5e-4 for its 117M model, small models take more
    min_lr: float = 0.0
    warmup: int = 50  # GPT-1: 2000 updates
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    vocab_size: int = 2048  # BPE vocabulary trained on the corpus (incl. <|endoftext|>)
    seed: int = 0
    corpus: str | None = None  # None: the embedded Shakespeare corpus
    out_dir: str = "runs/shakespeare"
    eval_interval: int = 100
    eval_batches: int = 8
    log_interval: int = 10
    sample_tokens: int = 120
    sample_prompt: str = "ROMEO:\n"
    device: str = "cpu"  # "cpu" (NumPy) or "cuda" (CuPy)
    checkpoint_interval: int | None = None  # default: eval_interval
    keep_checkpoints: int = 3
    resume: bool = False  # continue from the newest checkpoint in out_dir
    quiet: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "vocab_size", "eval_interval", "eval_batches", "log_interval",
                     "keep_checkpoints"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup < 0 or self.warmup > self.steps:
            raise ValueError(f"warmup must be in [0, steps={self.steps}], got {self.warmup}")
        if self.context is not None and self.context < 2:
            raise ValueError(f"context must be at least 2, got {self.context}")
        if self.checkpoint_interval is not None and self.checkpoint_interval <= 0:
            raise ValueError(f"checkpoint_interval must be positive, got {self.checkpoint_interval}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.vocab_size < 257:
            raise ValueError(f"vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {self.vocab_size}")


# --------------------------------------------------------------------------------------------
# data preparation (cached in out_dir)
# --------------------------------------------------------------------------------------------


def load_texts(corpus: str | None, seed: int = 0) -> tuple[str, str, str]:
    """(train text, valid text, description). Shakespeare splits by play; a user corpus by its
    last 10 % of lines."""
    if corpus is None:
        train, valid = split_plays(load_shakespeare(), valid_fraction=0.1, seed=seed)
        desc = f"Shakespeare: {len(train)} train plays, {len(valid)} valid plays ({', '.join(p.title for p in valid)})"
        return render_text(train), render_text(valid), desc
    text = read_text_corpus(corpus)
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        cut = int(len(text) * 0.9)
        return text[:cut], text[cut:], f"{corpus}: {len(text)} characters (split 90/10 by characters)"
    cut = max(1, int(len(lines) * 0.9))
    return "".join(lines[:cut]), "".join(lines[cut:]), f"{corpus}: {len(lines)} lines (last 10 % for validation)"


def prepare_data(cfg: TrainConfig, log=print):
    """Train (or reuse) the tokenizer and token files for cfg's corpus in cfg.out_dir."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_text, valid_text, desc = load_texts(cfg.corpus, cfg.seed)
    log(f"corpus  {desc}; {len(train_text):,} / {len(valid_text):,} characters")
    fingerprint = hashlib.sha256(
        f"{cfg.vocab_size}\0{len(train_text)}\0".encode() + train_text.encode() + b"\0" + valid_text.encode()
    ).hexdigest()[:16]
    stamp = out / "data.json"
    tok_path = out / "tokenizer.json"
    if stamp.exists() and tok_path.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        tok = BPETokenizer.load(tok_path)
        log(f"tokenizer  reused {tok_path} ({tok.n_vocab} tokens)")
    else:
        t0 = time.time()
        tok = BPETokenizer.train(train_text, cfg.vocab_size, special_tokens=[EOT])
        tok.save(tok_path)
        log(f"tokenizer  trained {tok.n_vocab} tokens in {time.time() - t0:.1f}s")
        t0 = time.time()
        for name, text in (("train", train_text), ("valid", valid_text)):
            ids = tok.encode_ordinary(text)
            write_token_file(out / f"{name}.bin", np.asarray(ids, dtype=np.int64), tok.n_vocab)
        atomic_write(stamp, [json.dumps({"fingerprint": fingerprint}).encode()])
        log(f"tokens  encoded in {time.time() - t0:.1f}s")
    train_tokens = TokenFile(out / "train.bin")
    valid_tokens = TokenFile(out / "valid.bin")
    log(f"tokens  {len(train_tokens):,} train, {len(valid_tokens):,} valid "
        f"({len(train_text) / max(len(train_tokens), 1):.2f} characters per token)")
    return tok, train_tokens, valid_tokens


# --------------------------------------------------------------------------------------------
# evaluation, progress, plotting
# --------------------------------------------------------------------------------------------


def evaluate(model: GPT, tokens, batch_size: int, context: int, max_batches: int) -> float:
    """Mean next-token loss over deterministic, non-overlapping windows."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with no_grad():
        for x, y in iter_eval_batches(tokens, batch_size, context, max_batches):
            _, loss = model(x, y, return_logits=False)
            total += loss.item()
            n += 1
    model.train(was)
    return total / max(n, 1)


def _fmt_time(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plot_losses(metrics_path: Path, png_path: Path) -> str:
    """Draw train/valid loss curves; returns a message (how to get matplotlib when missing)."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "loss plot skipped: matplotlib is not installed (pip install 'pygpt[plot]')"
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    tr = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    va = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        ax.plot(*zip(*tr), label="train", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="validation")
    ax.set_xlabel("update")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return f"loss plot  {png_path}"


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def save_run(out: Path, model: GPT, tok: BPETokenizer, cfg: TrainConfig) -> None:
    save_file(model.state_dict(), out / "model.safetensors",
              metadata={"format": "pygpt", "config": json.dumps(model.config.to_dict())})
    atomic_write(out / "config.json", [json.dumps({"model": model.config.to_dict(), "train": asdict(cfg)},
                                                  indent=2).encode()])


def load_run(run_dir) -> tuple[GPT, BPETokenizer]:
    """Model and tokenizer from a run directory written by `pretrain`."""
    run = Path(run_dir)
    if not (run / "model.safetensors").exists():
        raise FileNotFoundError(f"{run}: no model.safetensors here; is it a `pygpt train` output directory?")
    cfg = json.loads((run / "config.json").read_text())["model"]
    model = GPT(GPTConfig(**cfg))
    weights, _ = load_file(run / "model.safetensors")
    model.load_state_dict(weights, strict=True)
    model.eval()
    return model, BPETokenizer.load(run / "tokenizer.json")


def _training_state_config(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the run it continues."""
    d = asdict(cfg)
    for k in ("quiet", "resume", "out_dir", "time_budget", "device"):
        d.pop(k)
    return d


def restore_state(cfg: TrainConfig, log) -> dict | None:
    """The newest checkpoint's state when cfg.resume is set (None otherwise); it must have been
    written with the same training settings."""
    if not cfg.resume:
        return None
    out = Path(cfg.out_dir)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"resume: no checkpoint in {out / 'checkpoints'}; is it a `pygpt train` output directory?")
    state = load_checkpoint(ckpt)
    if state["train_config"] != _training_state_config(cfg):
        raise ValueError(f"resume: {ckpt} was written with different settings: {state['train_config']}")
    log(f"resume  {ckpt} (after {state['step']} updates)")
    return state


def fit(cfg: TrainConfig, model, train_tokens, valid_tokens, state: dict | None, log) -> dict:
    """The pre-training loop for any language model ``model(x, y, return_logits=False) -> (_, loss)``
    with a ``generator`` (dropout RNG) and a ``config`` (``to_dict()``): AdamW with warmup + cosine,
    gradient clipping, periodic evaluation, metrics.jsonl, atomic checkpoints and exact resume
    from ``state`` (a `load_checkpoint` result). Returns {steps, first_step (where this call
    started), final_loss, val_history, seconds}."""
    out = Path(cfg.out_dir)
    context = model.config.n_ctx
    opt = optim.AdamW(optim.param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                      betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    schedule = optim.warmup_cosine(cfg.lr, cfg.warmup, cfg.steps, min_lr=cfg.min_lr)
    sampler = BatchSampler(train_tokens.tokens, cfg.batch_size, context, seed=cfg.seed)
    tokenizer_json = (out / "tokenizer.json").read_text(encoding="utf-8")
    ckpt_every = cfg.checkpoint_interval or cfg.eval_interval

    def checkpoint(step):
        path = save_checkpoint(out, step, model, opt, sampler, model.generator, _training_state_config(cfg),
                               tokenizer_json, keep=cfg.keep_checkpoints)
        log(f"checkpoint  step {step} -> {path}")

    metrics_path = out / "metrics.jsonl"
    tokens_per_step = cfg.batch_size * context
    if state is not None:
        for part, target in (("model", model), ("optimizer", opt), ("sampler", sampler), ("dropout", model.generator)):
            try:
                target.load_state_dict(state[part], **({"strict": True} if part == "model" else {}))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"resume: the checkpoint's {part} state does not fit this run: {exc}") from None
        step = state["step"]
        if not 0 <= step <= cfg.steps:
            raise ValueError(f"resume: the checkpoint is at step {step}, outside [0, steps={cfg.steps}]")
        # keep the metrics up to the checkpoint; what a killed run logged after it is redone
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
            if metrics_path.exists() else []
        rows = [r for r in rows if r["step"] <= step]
        history = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        # replace the file in one rename, then append: a run killed again before its next flush
        # must not leave the history truncated (a buffered rewrite lost it once)
        atomic_write(metrics_path, [(json.dumps(r) + "\n").encode() for r in rows])
        metrics = open(metrics_path, "a")
    else:
        step = 0
        metrics = open(metrics_path, "w")
        val0 = evaluate(model, valid_tokens.tokens, cfg.batch_size, context, cfg.eval_batches)
        log(f"eval  step 0 | val loss {val0:.4f} (uniform would be {math.log(model.config.vocab_size):.4f})")
        metrics.write(json.dumps({"step": 0, "val_loss": val0}) + "\n")
        history = [(0, val0)]
    t_start = time.time()
    window_t, window_tokens = t_start, 0
    first_step = step
    loss_val = float("nan")
    try:
        while step < cfg.steps:
            x, y = sampler.sample()
            opt.lr = schedule(step)
            _, loss = model(x, y, return_logits=False)  # the loss only: logits never materialised
            loss_val = loss.item()
            if not math.isfinite(loss_val):
                raise FloatingPointError(
                    f"loss became {loss_val} at update {step + 1}; stopping. The last good checkpoint in "
                    f"{out / 'checkpoints'} is intact (try a lower --lr)")
            loss.backward()
            norm = optim.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad()
            step += 1
            window_tokens += tokens_per_step
            elapsed = time.time() - t_start
            if step % cfg.log_interval == 0 or step == cfg.steps:
                now = time.time()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                remaining = cfg.steps - step
                eta = remaining * elapsed / (step - first_step)
                if cfg.time_budget is not None:
                    eta = min(eta, cfg.time_budget - elapsed)
                log(f"step {step:5d}/{cfg.steps} | loss {loss_val:.4f} | lr {opt.lr:.2e} | "
                    f"{tps:8.0f} tok/s | ETA {_fmt_time(eta)}")
                metrics.write(json.dumps({"step": step, "loss": loss_val, "lr": opt.lr, "grad_norm": float(norm),
                                          "tokens_per_s": tps, "elapsed_s": elapsed}) + "\n")
                metrics.flush()
            out_of_time = cfg.time_budget is not None and elapsed >= cfg.time_budget
            if step % cfg.eval_interval == 0 or step == cfg.steps or out_of_time:
                val = evaluate(model, valid_tokens.tokens, cfg.batch_size, context, cfg.eval_batches)
                history.append((step, val))
                log(f"eval  step {step} | val loss {val:.4f}")
                metrics.write(json.dumps({"step": step, "val_loss": val}) + "\n")
                metrics.flush()
            if step % ckpt_every == 0 or step == cfg.steps or out_of_time:
                checkpoint(step)
            if out_of_time:
                log(f"time budget of {cfg.time_budget:.0f}s reached after {step} updates")
                break
    finally:
        metrics.close()

    return {"steps": step, "first_step": first_step, "final_loss": loss_val, "val_history": history,
            "seconds": time.time() - t_start}


def pretrain(cfg: TrainConfig):
    log = (lambda *a, **k: None) if cfg.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    out = Path(cfg.out_dir)
    state = restore_state(cfg, log)
    tok, train_tokens, valid_tokens = prepare_data(cfg, log)

    if state is not None:
        mcfg = GPTConfig(**state["model_config"])
    else:
        overrides = {"vocab_size": tok.n_vocab}
        if cfg.context is not None:
            overrides["n_ctx"] = cfg.context
        mcfg = preset(cfg.preset, **overrides)
    context = mcfg.n_ctx
    model = GPT(mcfg, seed=cfg.seed).to(device=cfg.device)
    log(f"model  {cfg.preset}: {mcfg.n_layer} layers × {mcfg.d_model} wide, {mcfg.n_head} heads, ctx {context}, "
        f"vocab {mcfg.vocab_size}, {model.num_parameters() / 1e6:.2f}M parameters, ln={mcfg.ln}, "
        f"device {cfg.device}")
    result = fit(cfg, model, train_tokens, valid_tokens, state, log)
    step, loss_val, history = result["steps"], result["final_loss"], result["val_history"]
    metrics_path = out / "metrics.jsonl"

    save_run(out, model, tok, cfg)
    log(f"saved  {out / 'model.safetensors'}")
    log(plot_losses(metrics_path, out / "loss.png"))

    prompt_ids = tok.encode_ordinary(cfg.sample_prompt)
    n_new = min(cfg.sample_tokens, context - len(prompt_ids))
    samples = []
    for i in range(2):
        ids = model.generate(np.array([prompt_ids]), n_new, temperature=0.8, top_k=40, seed=cfg.seed + i)
        samples.append(tok.decode(ids[0].tolist()))
    atomic_write(out / "samples.txt", ["\n\n-----\n\n".join(samples).encode()])
    log("sample  (temperature 0.8, top-k 40):\n" + samples[0])
    return {"steps": step, "final_loss": loss_val, "val_history": history, "out_dir": str(out),
            "train_seconds": result["seconds"]}


