"""Pre-training the LSTM language model with the same data pipeline as `pygpt.train.pretrain`.

    pretrain_lstm(TrainConfig(out_dir="runs/lstm", steps=600, context=128), n_layer=1, d_model=256)

Writes the run layout `load_base` reads: ``config.json`` (``{"arch": "lstm", "model": LSTMConfig,
"train": TrainConfig}``), ``tokenizer.json``, ``model.safetensors``, ``metrics.jsonl``, plus the
token files. The tokenizer comes from `pygpt.train.prepare_data`, so a GPT and an LSTM trained
on the same corpus with the same vocabulary size share it. No checkpoints or resume: the LSTM
row is a small ablation.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from .. import optim
from ..data.tokens import BatchSampler
from ..models.lstm import LSTM, LSTMConfig
from ..safetensors import atomic_write, save_file
from ..train import TrainConfig, evaluate, prepare_data

__all__ = ["pretrain_lstm"]


def pretrain_lstm(cfg: TrainConfig, **lstm_overrides) -> dict:
    """Train an LSTM LM on cfg's corpus (cfg.context = sequence length, default 128)."""
    log = (lambda *a, **k: None) if cfg.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    out = Path(cfg.out_dir)
    tok, train_tokens, valid_tokens = prepare_data(cfg, log)
    context = cfg.context or 128
    mcfg = LSTMConfig(**{"vocab_size": tok.n_vocab, "n_ctx": context, **lstm_overrides})
    model = LSTM(mcfg, seed=cfg.seed).to(device=cfg.device)
    log(f"model  lstm: {mcfg.n_layer} layers × {mcfg.d_model}, vocab {mcfg.vocab_size}, "
        f"{'tied' if mcfg.tie_weights else 'untied'} output, {model.num_parameters() / 1e6:.2f}M parameters")
    opt = optim.AdamW(optim.param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                      betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    schedule = optim.warmup_cosine(cfg.lr, cfg.warmup, cfg.steps, min_lr=cfg.min_lr)
    sampler = BatchSampler(train_tokens.tokens, cfg.batch_size, context, seed=cfg.seed)
    history = [(0, evaluate(model, valid_tokens.tokens, cfg.batch_size, context, cfg.eval_batches))]
    log(f"eval  step 0 | val loss {history[0][1]:.4f}")
    t0 = time.time()
    loss_val = float("nan")
    with open(out / "metrics.jsonl", "w") as metrics:
        metrics.write(json.dumps({"step": 0, "val_loss": history[0][1]}) + "\n")
        for step in range(1, cfg.steps + 1):
            x, y = sampler.sample()
            opt.lr = schedule(step - 1)
            _, loss = model(x, y)
            loss_val = loss.item()
            if not math.isfinite(loss_val):
                raise FloatingPointError(f"LSTM loss became {loss_val} at update {step}; try a lower --lr")
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad()
            if step % cfg.log_interval == 0 or step == cfg.steps:
                tps = step * cfg.batch_size * context / max(time.time() - t0, 1e-9)
                log(f"step {step:5d}/{cfg.steps} | loss {loss_val:.4f} | lr {opt.lr:.2e} | {tps:8.0f} tok/s")
                metrics.write(json.dumps({"step": step, "loss": loss_val, "lr": opt.lr}) + "\n")
            if step % cfg.eval_interval == 0 or step == cfg.steps:
                val = evaluate(model, valid_tokens.tokens, cfg.batch_size, context, cfg.eval_batches)
                history.append((step, val))
                log(f"eval  step {step} | val loss {val:.4f}")
                metrics.write(json.dumps({"step": step, "val_loss": val}) + "\n")
            metrics.flush()
    save_file(model.state_dict(), out / "model.safetensors",
              metadata={"format": "pygpt", "arch": "lstm", "config": json.dumps(mcfg.to_dict())})
    atomic_write(out / "config.json", [json.dumps({"arch": "lstm", "model": mcfg.to_dict(), "train": asdict(cfg)},
                                                  indent=2).encode()])
    log(f"saved  {out / 'model.safetensors'}")
    return {"steps": cfg.steps, "final_loss": loss_val, "val_history": history, "out_dir": str(out),
            "train_seconds": time.time() - t0}
