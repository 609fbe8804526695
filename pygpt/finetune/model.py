"""The fine-tuning model: a pre-trained LM (GPT or LSTM) plus a linear head on the extract token.

    h = base.hidden_states(ids)                       (N, T, C)   N rows, right-padded
    x = h[n, lengths[n] - 1]                          (N, C)      final state of each extract token
    similar: x = x[2b] + x[2b+1]                      (B, C)      the two orderings added
    logits = Dropout(x) W + b                         (B, classes) ; choice: (N, 1) -> (B, K) scores
    L2 = CE(logits, labels)                           choice: softmax over each example's K scores
    L1 = next-token CE over the real tokens of every row (pads ignored; the mean over tokens)
    L3 = L2 + λ·L1                                    λ = 0 skips L1 entirely

Run directories
    A base run is what `pygpt train` writes (``config.json`` ``{"model": GPTConfig}``,
    ``tokenizer.json``, ``model.safetensors``) or the LSTM equivalent (``"arch": "lstm"``).
    A fine-tuned run holds ``model.safetensors`` (the base's parameters under their own names plus
    ``clf.weight`` / ``clf.bias``; no pickle), ``config.json`` ``{"arch", "model", "finetune":
    {task, label_names, special_tokens, n_classes, truncate, ...}}``, ``tokenizer.json`` with the
    three task tokens, and the metrics files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..models.gpt import GPT, GPTConfig
from ..models.lstm import LSTM, LSTMConfig
from ..nn import Dropout, Linear, Module
from ..random import Generator
from ..safetensors import atomic_write, load_file, save_file
from ..tasks import check_task
from .transforms import Batch

__all__ = ["TaskModel", "TaskOutput", "arch_of", "build_base", "load_base", "load_finetuned", "lm_loss",
           "save_finetuned"]

FINETUNED_FORMAT = "pygpt-finetuned"
HEAD = "clf"


def arch_of(model) -> str:
    return "lstm" if isinstance(model, LSTM) else "gpt"


def build_base(arch: str, config: dict, seed: int = 0):
    """A freshly initialised base model of `arch` ("gpt" or "lstm") from its config dict."""
    if arch == "gpt":
        return GPT(GPTConfig(**config), seed=seed)
    if arch == "lstm":
        return LSTM(LSTMConfig(**config), seed=seed)
    raise ValueError(f"unknown model architecture {arch!r} (expected 'gpt' or 'lstm')")


def _read_run_config(run: Path) -> dict:
    if not (run / "model.safetensors").exists():
        raise FileNotFoundError(f"{run}: no model.safetensors here; is it a `pygpt train` output directory?")
    try:
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{run}: no config.json here; is it a `pygpt train` output directory?") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{run / 'config.json'}: malformed JSON: {exc}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{run / 'config.json'}: expected an object with a 'model' configuration")
    return cfg


def load_base(run_dir, seed: int = 0, from_scratch: bool = False):
    """(model, tokenizer, arch) from a pre-trained run (GPT or LSTM). A fine-tuned run also works:
    its base model is loaded and the head ignored. ``from_scratch`` keeps the configuration and the
    tokenizer but initialises the weights randomly (seeded)."""
    from ..tokenizer import BPETokenizer  # noqa: PLC0415

    run = Path(run_dir)
    cfg = _read_run_config(run)
    arch = cfg.get("arch", "gpt")
    model = build_base(arch, cfg["model"], seed=seed)
    if not from_scratch:
        weights, _ = load_file(run / "model.safetensors")
        weights = {k: v for k, v in weights.items() if not k.startswith(HEAD + ".")}
        model.load_state_dict(weights, strict=True)
    model.eval()
    return model, BPETokenizer.load(run / "tokenizer.json"), arch


@dataclass
class TaskOutput:
    logits: Tensor  # (B, classes) or (B, K) choice scores (padding choices at -1e9)
    loss: Tensor | None  # L2 + λ·L1 (None without labels)
    clf_loss: Tensor | None
    lm_loss: Tensor | None


def lm_loss(base, h: Tensor, ids: np.ndarray, lengths: np.ndarray) -> Tensor:
    """Mean next-token cross-entropy over the real tokens of every row: position t predicts
    ids[t+1] for t < length − 1. Only those positions go through the output layer."""
    xp = h.xp
    T = ids.shape[1]
    pos = np.arange(T)[None, :]
    keep = pos < (lengths[:, None] - 1)  # (N, T)
    rows, cols = np.nonzero(keep)
    targets = ids[rows, cols + 1]
    hx = F.getitem(h, (xp.asarray(rows), xp.asarray(cols)))  # (M, C)
    return F.cross_entropy(base.logits(hx), xp.asarray(targets))


class TaskModel(Module):
    """``base`` (GPT or LSTM) + classifier dropout + linear head ``clf`` on the extract state."""

    def __init__(self, base, task: str, n_classes: int | None = None, clf_pdrop: float = 0.1, seed: int = 0):
        super().__init__()
        check_task(task)
        if task != "choice" and (n_classes is None or n_classes < 2):
            raise ValueError(f"a {task} head needs at least 2 classes, got {n_classes}")
        self.base = base
        self.task = task
        self.n_classes = 1 if task == "choice" else int(n_classes)
        W = base.wte.weight
        self.clf = Linear(base.config.d_model, self.n_classes, std=0.02, rng=np.random.default_rng(seed),
                          dtype=W.dtype)
        if W.xp is not np:
            self.clf.to(device=W.device)
        self.clf_drop = Dropout(clf_pdrop, Generator(seed + 0x5EED))

    def features(self, batch: Batch):
        """(h (N, T, C), extract states (B, C) for classify/entail/similar or (N, C) for choice)."""
        h = self.base.hidden_states(batch.ids)
        xp = h.xp
        N = batch.ids.shape[0]
        x = F.getitem(h, (xp.arange(N), xp.asarray(batch.lengths - 1)))  # (N, C)
        if self.task == "similar":
            x = x.reshape(batch.n_examples, 2, x.shape[-1]).sum(axis=1)  # both orderings added
        return h, x

    def forward(self, batch: Batch, lm_coef: float = 0.5) -> TaskOutput:
        h, x = self.features(batch)
        scores = self.clf(self.clf_drop(x))  # (B, classes) or (N, 1)
        if self.task == "choice":
            xp = scores.xp
            s = scores.reshape(scores.shape[0])
            scores = F.getitem(s, xp.asarray(batch.choice_index))  # (B, K)
            if not batch.choice_mask.all():
                scores = F.masked_fill(scores, xp.asarray(~batch.choice_mask), -1e9)
        if batch.labels is None:
            return TaskOutput(scores, None, None, None)
        clf_loss = F.cross_entropy(scores, scores.xp.asarray(batch.labels))
        if lm_coef == 0:
            return TaskOutput(scores, clf_loss, clf_loss, None)
        lm = lm_loss(self.base, h, batch.ids, batch.lengths)
        return TaskOutput(scores, clf_loss + lm * lm_coef, clf_loss, lm)

    def head_state(self) -> dict:
        return {f"{HEAD}.weight": self.clf.weight.data, f"{HEAD}.bias": self.clf.bias.data}


def save_finetuned(out_dir, model: TaskModel, tok, meta: dict) -> None:
    """Write model.safetensors (base names + clf.*), config.json and tokenizer.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = arch_of(model.base)
    tensors = dict(model.base.state_dict())
    tensors.update(model.head_state())
    save_file(tensors, out / "model.safetensors",
              metadata={"format": FINETUNED_FORMAT, "task": model.task, "arch": arch})
    doc = {"arch": arch, "model": model.base.config.to_dict(), "finetune": meta}
    atomic_write(out / "config.json", [json.dumps(doc, indent=2).encode()])
    tok.save(out / "tokenizer.json")


def load_finetuned(run_dir):
    """(TaskModel in eval mode, tokenizer, finetune metadata) from a fine-tuned run directory."""
    from ..tokenizer import BPETokenizer  # noqa: PLC0415

    run = Path(run_dir)
    cfg = _read_run_config(run)
    meta = cfg.get("finetune")
    if not isinstance(meta, dict):
        raise ValueError(f"{run}: not a fine-tuned run (config.json has no 'finetune' section); "
                         "pass the output directory of `pygpt finetune`")
    base = build_base(cfg.get("arch", "gpt"), cfg["model"])
    model = TaskModel(base, meta["task"], meta.get("n_classes"), clf_pdrop=meta.get("clf_pdrop", 0.1))
    weights, _ = load_file(run / "model.safetensors")
    head = {k[len(HEAD) + 1:]: weights.pop(k) for k in list(weights) if k.startswith(HEAD + ".")}
    if set(head) != {"weight", "bias"}:
        raise ValueError(f"{run / 'model.safetensors'}: expected {HEAD}.weight and {HEAD}.bias (the task head), "
                         f"found {sorted(head)}")
    base.load_state_dict(weights, strict=True)
    model.clf.load_state_dict(head, strict=True)
    model.eval()
    return model, BPETokenizer.load(run / "tokenizer.json"), meta
