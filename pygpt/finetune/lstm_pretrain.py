"""Pre-training the LSTM language model with the same data pipeline and loop as `pygpt.train.pretrain`.

    pretrain_lstm(TrainConfig(out_dir="runs/lstm", steps=600, context=128), n_layer=1, d_model=256)

Writes the run layout `load_base` reads: ``config.json`` (``{"arch": "lstm", "model": LSTMConfig,
"train": TrainConfig}``), ``tokenizer.json``, ``model.safetensors``, ``metrics.jsonl``, plus the
token files. The tokenizer comes from `pygpt.train.prepare_data`, so a GPT and an LSTM trained
on the same corpus with the same vocabulary size share it. The loop is `pygpt.train.fit`: the
same schedule, checkpoints every ``cfg.checkpoint_interval`` updates, and ``cfg.resume=True``
continues exactly from the newest one.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..models.lstm import LSTM, LSTMConfig
from ..safetensors import atomic_write, save_file
from ..train import TrainConfig, fit, prepare_data, restore_state

__all__ = ["pretrain_lstm"]


def pretrain_lstm(cfg: TrainConfig, **lstm_overrides) -> dict:
    """Train an LSTM LM on cfg's corpus (cfg.context = sequence length, default 128)."""
    log = (lambda *a, **k: None) if cfg.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    out = Path(cfg.out_dir)
    state = restore_state(cfg, log)
    tok, train_tokens, valid_tokens = prepare_data(cfg, log)
    mcfg = LSTMConfig(**{"vocab_size": tok.n_vocab, "n_ctx": cfg.context or 128, **lstm_overrides})
    if state is not None and state["model_config"] != mcfg.to_dict():
        raise ValueError(f"resume: the checkpoint holds an LSTM {state['model_config']}, "
                         f"but this run asks for {mcfg.to_dict()}")
    model = LSTM(mcfg, seed=cfg.seed).to(device=cfg.device)
    log(f"model  lstm: {mcfg.n_layer} layers × {mcfg.d_model}, vocab {mcfg.vocab_size}, "
        f"{'tied' if mcfg.tie_weights else 'untied'} output, {model.num_parameters() / 1e6:.2f}M parameters")
    result = fit(cfg, model, train_tokens, valid_tokens, state, log)
    save_file(model.state_dict(), out / "model.safetensors",
              metadata={"format": "pygpt", "arch": "lstm", "config": json.dumps(mcfg.to_dict())})
    atomic_write(out / "config.json", [json.dumps({"arch": "lstm", "model": mcfg.to_dict(), "train": asdict(cfg)},
                                                  indent=2).encode()])
    log(f"saved  {out / 'model.safetensors'}")
    return {"steps": result["steps"], "resumed_from": result["first_step"], "final_loss": result["final_loss"], "val_history": result["val_history"],
            "out_dir": str(out), "train_seconds": result["seconds"]}
