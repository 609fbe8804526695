"""Training checkpoints: everything a run needs to continue exactly, in one safetensors file.

    <run>/checkpoints/ckpt-00000200.safetensors
        tensors   model/<parameter name>        the weights (GPT-2 checkpoint names)
                  optim/state.<i>.<moment>      optimiser moments
        metadata  format, step, model_config, train_config, optimizer (scalars, JSON),
                  sampler (RNG state, JSON), dropout (Generator state, JSON), tokenizer (JSON text)

Files are written atomically (temporary file, fsync, rename; see `pygpt.safetensors`), so a crash
leaves either the previous checkpoint set or the new one, never a torn file. `keep` newest are kept.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .safetensors import load_file, save_file

FORMAT = "pygpt-checkpoint"
_NAME = re.compile(r"^ckpt-(\d{8})\.safetensors$")


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir, step: int, model, optimizer, sampler, generator, train_config: dict,
                    tokenizer_json: str, keep: int = 3) -> Path:
    """Write the training state after `step` updates; prune to the newest `keep` files."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    opt_state = optimizer.state_dict()
    tensors = {f"model/{n}": a for n, a in model.state_dict().items()}
    tensors.update({f"optim/{k}": a for k, a in opt_state.pop("arrays").items()})
    meta = {
        "format": FORMAT,
        "version": "1",
        "step": str(int(step)),
        "model_config": json.dumps(model.config.to_dict()),
        "train_config": json.dumps(train_config),
        "optimizer": json.dumps(opt_state),
        "sampler": json.dumps(sampler.state_dict()),
        "dropout": json.dumps(generator.state_dict()),
        "tokenizer": tokenizer_json,
    }
    path = checkpoint_dir(run_dir) / f"ckpt-{int(step):08d}.safetensors"
    save_file(tensors, path, metadata=meta)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint: {step, model_config, train_config, model (name -> array), optimizer
    (state dict with arrays), sampler, dropout, tokenizer}. Raises ValueError if it is not one."""
    tensors, meta = load_file(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pygpt checkpoint (metadata format={meta.get('format')!r})")
    try:
        optimizer = json.loads(meta["optimizer"])
        out = {
            "step": int(meta["step"]),
            "model_config": json.loads(meta["model_config"]),
            "train_config": json.loads(meta["train_config"]),
            "sampler": json.loads(meta["sampler"]),
            "dropout": json.loads(meta["dropout"]),
            "tokenizer": meta["tokenizer"],
        }
    except (KeyError, ValueError, RecursionError) as exc:  # deeply nested JSON: RecursionError
        raise ValueError(f"{path}: checkpoint metadata is incomplete or malformed ({exc})") from None
    if not isinstance(optimizer, dict):
        raise ValueError(f"{path}: checkpoint metadata is malformed (optimizer is not a JSON object)")
    optimizer["arrays"] = {k[len("optim/"):]: v for k, v in tensors.items() if k.startswith("optim/")}
    out["optimizer"] = optimizer
    out["model"] = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    return out
