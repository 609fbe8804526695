"""Hugging Face checkpoint directories (``config.json`` + ``model.safetensors``) in and out.

    model = GPT.from_pretrained("path/to/gpt2-dir")      # GPT2LMHeadModel or OpenAIGPTLMHeadModel
    model.save_pretrained("out-dir", arch="gpt2")         # loadable by transformers' from_pretrained

Weight layout: HF's GPT-2 and GPT-1 use `Conv1D`, which stores weights (in, out) — the layout pygpt's
`Linear` uses — so matrices copy across untransposed (code that converts to `nn.Linear`, which stores
(out, in), is what transposes them). Names map one to one:

    GPT-2:  [transformer.]wte / wpe / h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj} / ln_f
    GPT-1:  [transformer.]tokens_embed -> wte, positions_embed -> wpe, same block names, no ln_f

Buffers some checkpoints carry (``h.N.attn.bias``, ``h.N.attn.masked_bias``) and the tied
``lm_head.weight`` are skipped (the latter is checked to equal ``wte`` when present). Only local
directories are read: nothing is ever downloaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..safetensors import atomic_write, load_file, save_file
from .gpt import GPT, GPTConfig

_ACT_TO_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def _read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory)")
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None


def _get(hf: dict, key: str, where: Path, default=None):
    if key in hf and hf[key] is not None:
        return hf[key]
    if default is not None:
        return default
    raise ValueError(f"{where}/config.json: missing field {key!r}")


def config_from_hf(hf: dict, where: Path) -> tuple[GPTConfig, str]:
    """Map an HF config dict to (GPTConfig, arch) with arch 'gpt2' or 'openai-gpt'."""
    arch = hf.get("model_type")
    if arch not in ("gpt2", "openai-gpt"):
        raise ValueError(f"{where}: model_type {arch!r} is not supported (gpt2 or openai-gpt)")
    d = _get(hf, "n_embd", where)
    common = dict(vocab_size=_get(hf, "vocab_size", where), n_ctx=_get(hf, "n_positions", where),
                  n_layer=_get(hf, "n_layer", where), n_head=_get(hf, "n_head", where), d_model=d,
                  embd_pdrop=float(hf.get("embd_pdrop", 0.1)), attn_pdrop=float(hf.get("attn_pdrop", 0.1)),
                  resid_pdrop=float(hf.get("resid_pdrop", 0.1)),
                  layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))
    if arch == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in _ACT_TO_GELU:
            raise ValueError(f"{where}: activation_function {act!r} is not supported (gelu_new or gelu)")
        return GPTConfig(**common, d_ff=hf.get("n_inner") or 4 * d, ln="pre", gelu=_ACT_TO_GELU[act]), arch
    act = hf.get("afn", "gelu")  # openai-gpt from here on
    if act != "gelu":  # HF's OpenAIGPT maps "gelu" to the tanh form
        raise ValueError(f"{where}: afn {act!r} is not supported (only 'gelu', the tanh form)")
    return GPTConfig(**common, d_ff=4 * d, ln="post", gelu="tanh", scale_residual_init=False), arch


def _hf_to_pygpt_name(name: str, arch: str) -> str | None:
    if name.startswith("transformer."):
        name = name[len("transformer."):]
    if name == "lm_head.weight" or name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
        return None
    if arch == "openai-gpt":
        name = name.replace("tokens_embed.", "wte.", 1).replace("positions_embed.", "wpe.", 1)
    return name


def from_pretrained(path, dtype=np.float32) -> GPT:
    """Load a GPT-2 or GPT-1 HF directory (config.json + model.safetensors) into a pygpt GPT."""
    path = Path(path)
    cfg, arch = config_from_hf(_read_config(path), path)
    weights_path = path / "model.safetensors"
    if not weights_path.exists():
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise FileNotFoundError(f"{path}: no model.safetensors (found {found}); only safetensors weights are read")
    tensors, _ = load_file(weights_path)
    state = {}
    for name, arr in tensors.items():
        ours = _hf_to_pygpt_name(name, arch)
        if ours is not None:
            state[ours] = arr
    model = GPT(cfg).to(dtype=dtype)
    model.load_state_dict(state, strict=True)
    head = tensors.get("lm_head.weight")
    if head is not None and not np.array_equal(head, tensors.get("transformer.wte.weight", tensors.get("wte.weight",
                                                                    tensors.get("transformer.tokens_embed.weight")))):
        raise ValueError(f"{weights_path}: lm_head.weight differs from the token embedding; pygpt ties them")
    return model


def save_pretrained(model: GPT, path, arch: str | None = None) -> None:
    """Write config.json + model.safetensors that transformers loads as GPT2LMHeadModel
    (pre-LN models) or OpenAIGPTLMHeadModel (post-LN models)."""
    cfg = model.config
    arch = arch or ("gpt2" if cfg.ln == "pre" else "openai-gpt")
    if arch not in ("gpt2", "openai-gpt"):
        raise ValueError(f"arch must be 'gpt2' or 'openai-gpt', got {arch!r}")
    if (arch == "gpt2") != (cfg.ln == "pre"):
        raise ValueError(f"arch {arch!r} needs ln={'pre' if arch == 'gpt2' else 'post'}, the model has ln={cfg.ln!r}")
    common = {"vocab_size": cfg.vocab_size, "n_positions": cfg.n_ctx, "n_embd": cfg.d_model, "n_layer": cfg.n_layer,
              "n_head": cfg.n_head, "resid_pdrop": cfg.resid_pdrop, "embd_pdrop": cfg.embd_pdrop,
              "attn_pdrop": cfg.attn_pdrop, "layer_norm_epsilon": cfg.layer_norm_eps, "initializer_range": cfg.init_std,
              "tie_word_embeddings": True}
    if arch == "gpt2":
        hf = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **common, "n_inner": cfg.d_ff,
              "activation_function": "gelu_new" if cfg.gelu == "tanh" else "gelu"}
        rename = {}
    else:
        if cfg.d_ff != 4 * cfg.d_model or cfg.gelu != "tanh":
            raise ValueError("openai-gpt checkpoints need d_ff == 4·d_model and the tanh GELU")
        hf = {"model_type": "openai-gpt", "architectures": ["OpenAIGPTLMHeadModel"], **common, "afn": "gelu"}
        rename = {"wte.": "tokens_embed.", "wpe.": "positions_embed."}
    tensors = {}
    for name, arr in model.state_dict().items():
        for old, new in rename.items():
            if name.startswith(old):
                name = new + name[len(old):]
        tensors["transformer." + name] = arr
    path = Path(path)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    atomic_write(path / "config.json", [json.dumps(hf, indent=2).encode()])
