"""Fine-tuning, evaluation and prediction (what `pygpt finetune` and `pygpt predict` call).

    result = finetune(FinetuneConfig(task="classify", run="runs/shakespeare",
                                     train="tasks/classify/train.jsonl", valid="tasks/classify/valid.jsonl",
                                     out_dir="runs/ft-classify"))

GPT-1 defaults: AdamW lr 6.25e-5 (β = 0.9, 0.999, ε = 1e-8, decoupled weight decay 0.01 on
matrices), batch 32 examples, 3 epochs, linear warmup over 0.2 % of the updates then linear
decay to 0, gradient-norm clipping at 1, classifier dropout 0.1 plus the model's own dropouts,
auxiliary LM weight λ = 0.5.

Outputs in ``out_dir``: the fine-tuned run (see `pygpt.finetune.model`), ``metrics.jsonl`` (one
object per logged update and per evaluation) and ``metrics.json`` (the final numbers).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..safetensors import atomic_write
from ..tasks import check_labels, check_task, label_names_of, read_jsonl, write_jsonl
from .model import TaskModel, load_base, load_finetuned, save_finetuned
from .transforms import add_task_tokens, collate, encode_example

__all__ = ["FinetuneConfig", "classification_metrics", "encode_examples", "evaluate", "finetune", "predict",
           "predict_examples", "train_task_model"]


@dataclass
class FinetuneConfig:
    task: str
    run: str  # pre-trained run directory (`pygpt train` output, or an LSTM run)
    train: str | None = None  # training JSONL (or pass examples to `finetune`)
    valid: str | None = None  # held-out JSONL for the reported metrics
    out_dir: str | None = "runs/finetune"  # None: do not save
    lm_coef: float = 0.5  # λ of L3 = L2 + λ·L1; 0 turns the auxiliary LM objective off
    lr: float = 6.25e-5
    batch_size: int = 32
    epochs: int = 3
    warmup_fraction: float = 0.002
    weight_decay: float = 0.01
    clf_pdrop: float = 0.1
    max_grad_norm: float = 1.0
    truncate: bool = False
    max_len: int | None = None  # tokens per sequence: min(base n_ctx, max_len); shorter is cheaper
    from_scratch: bool = False  # random initialisation with the run's configuration (ablation)
    seed: int = 0
    max_train_examples: int | None = None
    max_valid_examples: int | None = None
    eval_batch_size: int = 32
    log_interval: int = 10
    device: str = "cpu"  # "cpu" (NumPy) or "cuda" (CuPy)
    quiet: bool = False

    def __post_init__(self):
        check_task(self.task)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ("batch_size", "epochs", "eval_batch_size", "log_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.lm_coef >= 0:
            raise ValueError(f"lambda (lm_coef) must be >= 0, got {self.lm_coef}")
        if not 0 <= self.clf_pdrop < 1:
            raise ValueError(f"clf_pdrop must be in [0, 1), got {self.clf_pdrop}")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.max_len is not None and (isinstance(self.max_len, bool) or not isinstance(self.max_len, int)
                                         or self.max_len < 4):
            raise ValueError(f"max_len must be an integer >= 4 (room for the task tokens), got {self.max_len!r}")
        for name in ("max_train_examples", "max_valid_examples"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def classification_metrics(pred: np.ndarray, gold: np.ndarray, n_classes: int | None = None) -> dict:
    """accuracy, macro-F1 (mean F1 over the classes that occur in gold or pred) and per-class F1."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape:
        raise ValueError(f"pred {pred.shape} and gold {gold.shape} differ in shape")
    n = len(gold)
    acc = float((pred == gold).mean()) if n else float("nan")
    classes = sorted(set(gold.tolist()) | set(pred.tolist()))
    f1 = {}
    for c in classes:
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        f1[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"accuracy": acc, "macro_f1": float(np.mean(list(f1.values()))) if f1 else float("nan"),
            "per_class_f1": f1, "n": n}


# --------------------------------------------------------------------------------------------
# encoding, evaluation, prediction
# --------------------------------------------------------------------------------------------


def encode_examples(task, examples, tok, ids, n_ctx, truncate, label_names):
    return [encode_example(task, ex, tok, ids, n_ctx, truncate, label_names) for ex in examples]


def _batches_by_length(encoded, batch_size):
    """Index batches of similar total length (less padding), in a fixed order."""
    order = sorted(range(len(encoded)), key=lambda i: max(len(s) for s in encoded[i].seqs))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def predict_examples(model: TaskModel, encoded, batch_size: int = 32):
    """(predicted index (n,), probabilities (n, classes or K)) for encoded examples, in order."""
    was = model.training
    model.eval()
    preds = np.zeros(len(encoded), dtype=np.int64)
    probs = [None] * len(encoded)
    try:
        with no_grad():
            for idx in _batches_by_length(encoded, batch_size):
                batch = collate(model.task, [encoded[i] for i in idx])
                batch.labels = None
                logits = model(batch).logits
                p = F.softmax(logits, axis=-1).numpy().astype(np.float64)
                for j, i in enumerate(idx):
                    k = len(encoded[i].seqs) if model.task == "choice" else p.shape[1]
                    probs[i] = p[j, :k]
                    preds[i] = int(np.argmax(p[j, :k]))
    finally:
        model.train(was)
    return preds, probs


def evaluate(model: TaskModel, encoded, batch_size: int = 32) -> dict:
    """accuracy / macro-F1 / mean classifier loss on labelled encoded examples."""
    preds, probs = predict_examples(model, encoded, batch_size)
    gold = np.array([e.label for e in encoded], dtype=np.int64)
    m = classification_metrics(preds, gold)
    m["loss"] = float(np.mean([-math.log(max(p[g], 1e-300)) for p, g in zip(probs, gold)]))
    return m


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def train_task_model(model: TaskModel, encoded, cfg: FinetuneConfig, valid=None, log=print, metrics_file=None):
    """The fine-tuning loop on encoded examples; returns (per-epoch history, updates, seconds)."""
    n = len(encoded)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = optim.warmup_steps_from_fraction(total, cfg.warmup_fraction)
    schedule = optim.warmup_linear(cfg.lr, warmup, total)
    opt = optim.AdamW(optim.param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                      betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    history, step, t0 = [], 0, time.time()
    window = {"loss": 0.0, "clf": 0.0, "lm": 0.0, "n": 0, "t": time.time(), "ex": 0}
    for epoch in range(1, cfg.epochs + 1):
        perm = rng.permutation(n)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            batch = collate(model.task, [encoded[i] for i in idx])
            opt.lr = schedule(step)
            out = model(batch, lm_coef=cfg.lm_coef)
            loss = out.loss.item()
            if not math.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {loss} at update {step + 1}; try a lower --lr")
            out.loss.backward()
            optim.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            opt.zero_grad()
            step += 1
            window["loss"] += loss
            window["clf"] += out.clf_loss.item()
            window["lm"] += out.lm_loss.item() if out.lm_loss is not None else 0.0
            window["n"] += 1
            window["ex"] += len(idx)
            if step % cfg.log_interval == 0 or step == total:
                k, now = window["n"], time.time()
                row = {"step": step, "epoch": epoch, "loss": window["loss"] / k, "clf_loss": window["clf"] / k,
                       "lr": opt.lr, "examples_per_s": window["ex"] / max(now - window["t"], 1e-9)}
                if cfg.lm_coef:
                    row["lm_loss"] = window["lm"] / k
                lm_txt = f" lm {row['lm_loss']:.4f}" if cfg.lm_coef else ""
                log(f"epoch {epoch}/{cfg.epochs} step {step:5d}/{total} | loss {row['loss']:.4f} "
                    f"(clf {row['clf_loss']:.4f}{lm_txt}) | lr {opt.lr:.2e} | {row['examples_per_s']:.1f} ex/s")
                if metrics_file is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                window = {"loss": 0.0, "clf": 0.0, "lm": 0.0, "n": 0, "t": now, "ex": 0}
        entry = {"epoch": epoch, "step": step}
        if valid:
            m = evaluate(model, valid, cfg.eval_batch_size)
            entry.update({f"valid_{k}": v for k, v in m.items() if k != "per_class_f1"})
            f1 = f" | macro-F1 {m['macro_f1']:.4f}" if model.task != "choice" else ""
            log(f"eval  epoch {epoch} | valid accuracy {m['accuracy']:.4f}{f1} | loss {m['loss']:.4f} "
                f"({m['n']} examples)")
            model.train()
        if metrics_file is not None:
            metrics_file.write(json.dumps(entry) + "\n")
            metrics_file.flush()
        history.append(entry)
    model.eval()
    return history, step, time.time() - t0


def finetune(cfg: FinetuneConfig, train_examples=None, valid_examples=None) -> dict:
    """Fine-tune a pre-trained run on a task; saves the run to cfg.out_dir (unless None).

    Returns {"valid": metrics or None, "history", "steps", "train_seconds", "label_names",
    "special_tokens", "out_dir", "model", "tokenizer"}."""
    log = (lambda *a, **k: None) if cfg.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    task = cfg.task
    if train_examples is None:
        if cfg.train is None:
            raise ValueError("finetune: give training data (--data FILE.jsonl)")
        train_examples = read_jsonl(cfg.train, task)
    if valid_examples is None and cfg.valid is not None:
        valid_examples = read_jsonl(cfg.valid, task)
    for name, exs in (("training", train_examples), ("validation", valid_examples or [])):
        for ex in exs:
            if ex.task != task:
                raise ValueError(f"{ex.where}: a {ex.task} example in the {name} data of a {task} fine-tune")
            if ex.label is None:
                raise ValueError(f"{ex.where}: missing field 'label'")
    if cfg.max_train_examples is not None:
        train_examples = train_examples[:cfg.max_train_examples]
    if valid_examples is not None and cfg.max_valid_examples is not None:
        valid_examples = valid_examples[:cfg.max_valid_examples]
    label_names = None
    if task != "choice":
        label_names = label_names_of(train_examples)
        if len(label_names) < 2:
            raise ValueError(f"{train_examples[0].where.rsplit(':', 1)[0]}: the training data has only one "
                             f"label ({label_names[0]!r}); a classifier needs at least 2")
        if valid_examples:
            check_labels(valid_examples, label_names)

    base, tok, arch = load_base(cfg.run, seed=cfg.seed, from_scratch=cfg.from_scratch)
    base.to(device=cfg.device)
    tok, ids = add_task_tokens(base, tok, seed=cfg.seed)
    model = TaskModel(base, task, len(label_names) if label_names else None, cfg.clf_pdrop, seed=cfg.seed)
    n_ctx = base.config.n_ctx if cfg.max_len is None else min(base.config.n_ctx, cfg.max_len)
    t0 = time.time()
    enc_train = encode_examples(task, train_examples, tok, ids, n_ctx, cfg.truncate, label_names)
    enc_valid = encode_examples(task, valid_examples, tok, ids, n_ctx, cfg.truncate, label_names) \
        if valid_examples else None
    n_trunc = sum(e.truncated for e in enc_train) + sum(e.truncated for e in enc_valid or [])
    log(f"finetune  {task} on {cfg.run} ({arch}{', from scratch' if cfg.from_scratch else ''}): "
        f"{len(enc_train)} train / {len(enc_valid or [])} valid examples, "
        f"{model.num_parameters() / 1e6:.2f}M parameters, n_ctx {n_ctx}, λ={cfg.lm_coef}; "
        f"encoded in {time.time() - t0:.1f}s" + (f", {n_trunc} truncated" if n_trunc else ""))

    out = Path(cfg.out_dir) if cfg.out_dir is not None else None
    metrics_file = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics_file = open(out / "metrics.jsonl", "w")
    try:
        history, steps, seconds = train_task_model(model, enc_train, cfg, enc_valid, log, metrics_file)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    final = evaluate(model, enc_valid, cfg.eval_batch_size) if enc_valid else None
    meta = {"task": task, "label_names": label_names, "n_classes": model.n_classes, "special_tokens": ids,
            "base_run": str(cfg.run), "arch": arch, "truncate": cfg.truncate, "clf_pdrop": cfg.clf_pdrop, "max_len": n_ctx,
            "config": asdict(cfg)}
    result = {"task": task, "valid": _jsonable(final, label_names), "history": history, "steps": steps,
              "train_seconds": seconds, "train_examples": len(enc_train), "label_names": label_names,
              "special_tokens": ids, "max_len": n_ctx, "out_dir": str(out) if out else None}
    if out is not None:
        save_finetuned(out, model, tok, meta)
        atomic_write(out / "metrics.json", [json.dumps(result, indent=2).encode()])
        log(f"saved  {out / 'model.safetensors'}")
    result["model"], result["tokenizer"] = model, tok
    return result


def _jsonable(m, label_names=None):
    """Metrics with per-class F1 keyed by label name (choice: by answer position)."""
    if m is None:
        return None
    m = dict(m)
    if "per_class_f1" in m:
        m["per_class_f1"] = {str(label_names[k] if label_names else k): v for k, v in m["per_class_f1"].items()}
    return m


def predict(run_dir, data, out_path=None, truncate: bool | None = None, batch_size: int = 32) -> dict:
    """Predictions of a fine-tuned run on a JSONL file (labels optional). Writes one JSON object per
    example to `out_path` ({"line", "prediction", "probabilities"}); returns metrics over the labelled
    examples (None when there are none) and the predictions."""
    model, tok, meta = load_finetuned(run_dir)
    task = meta["task"]
    label_names = meta.get("label_names")
    examples = read_jsonl(data, task, require_label=False)
    if label_names is not None:
        check_labels(examples, label_names)
    if truncate is None:
        truncate = bool(meta.get("truncate", False))
    ids = {k: int(v) for k, v in meta["special_tokens"].items()}
    max_len = int(meta.get("max_len") or model.base.config.n_ctx)  # what the run was fine-tuned with
    enc = encode_examples(task, examples, tok, ids, max_len, truncate, label_names)
    preds, probs = predict_examples(model, enc, batch_size)
    rows = []
    for ex, p, pr in zip(examples, preds, probs):
        rows.append({"line": int(ex.where.rsplit(":", 1)[1]),
                     "prediction": int(p) if label_names is None else label_names[p],
                     "probabilities": [round(float(x), 6) for x in pr]})
    if out_path is not None:
        write_jsonl(out_path, rows)
    labelled = [i for i, e in enumerate(enc) if e.label is not None]
    metrics = None
    if labelled:
        gold = np.array([enc[i].label for i in labelled])
        metrics = _jsonable(classification_metrics(preds[labelled], gold), label_names)
    return {"task": task, "metrics": metrics, "predictions": rows, "n": len(rows)}
