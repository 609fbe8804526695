"""GPT-1 (post-LN) and GPT-2 (pre-LN) decoder-only Transformers.

Parameter names follow the public GPT-2 checkpoint (``wte``, ``wpe``, ``h.N.ln_1``, ``h.N.attn.c_attn``,
``h.N.attn.c_proj``, ``h.N.ln_2``, ``h.N.mlp.c_fc``, ``h.N.mlp.c_proj``, ``ln_f``) for both variants, so
import from HF maps one to one (GPT-1's ``tokens_embed``/``positions_embed`` become ``wte``/``wpe``).

    GPT-1 block (post-LN):  n = LN₁(x + Attn(x));       y = LN₂(n + MLP(n))
    GPT-2 block (pre-LN):   n = x + Attn(LN₁(x));       y = n + MLP(LN₂(n));   final LN_f
    MLP(x) = GELU_tanh(x W_fc + b_fc) W_proj + b_proj,  logits = h · wteᵀ (tied)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from ..random import Generator


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_ctx: int = 1024
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int | None = None  # default 4 · d_model
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    ln: str = "pre"  # "post" = GPT-1, "pre" = GPT-2 (with a final LayerNorm)
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    scale_residual_init: bool = True  # GPT-2: c_proj weights ~ N(0, 0.02/√(2·n_layer))
    gelu: str = "tanh"

    def __post_init__(self):
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        for name in ("vocab_size", "n_ctx", "n_layer", "n_head", "d_model", "d_ff"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"GPTConfig.d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.ln not in ("pre", "post"):
            raise ValueError(f"GPTConfig.ln must be 'pre' (GPT-2) or 'post' (GPT-1), got {self.ln!r}")
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.gelu not in ("tanh", "none"):
            raise ValueError(f"GPTConfig.gelu must be 'tanh' or 'none', got {self.gelu!r}")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, GPTConfig] = {
    # GPT-1 (Radford et al. 2018): 12 × 768 × 12 heads, FFN 3072, ctx 512, 40,478 BPE tokens, post-LN
    "gpt1": GPTConfig(vocab_size=40478, n_ctx=512, n_layer=12, n_head=12, d_model=768, d_ff=3072, ln="post",
                      scale_residual_init=False),
    "gpt2": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=48, n_head=25, d_model=1600),
    # CPU presets for the main job: vocab_size is replaced by the trained tokenizer's size
    "tiny": GPTConfig(vocab_size=4096, n_ctx=128, n_layer=2, n_head=4, d_model=128, embd_pdrop=0.0,
                      attn_pdrop=0.0, resid_pdrop=0.0),
    "small": GPTConfig(vocab_size=4096, n_ctx=128, n_layer=4, n_head=4, d_model=256, embd_pdrop=0.1,
                       attn_pdrop=0.1, resid_pdrop=0.1),
}


def preset(name: str, **overrides) -> GPTConfig:
    """A copy of a named configuration with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class CausalSelfAttention(Module):
    """Multi-head masked self-attention with one fused qkv projection (c_attn) and an output projection."""

    def __init__(self, cfg: GPTConfig, rng, gen: Generator, proj_std: float):
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_pdrop = cfg.attn_pdrop
        self.generator = gen
        self.c_attn = Linear(cfg.d_model, 3 * cfg.d_model, std=cfg.init_std, rng=rng)
        self.c_proj = Linear(cfg.d_model, cfg.d_model, std=proj_std, rng=rng)
        self.resid_dropout = Dropout(cfg.resid_pdrop, gen)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        H = self.n_head
        if cache is None:  # training and full-sequence scoring: one node, cheap backward (F.PackedAttention)
            y = F.attention_qkv(self.c_attn(x), H, causal=True, dropout_p=self.attn_pdrop,
                                generator=self.generator, training=self.training)  # (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        qkv = self.c_attn(x).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        k, v = cache.extend(k, v)  # inference: append this step's keys/values, attend over all of them
        y = F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=self.attn_pdrop,
                                           generator=self.generator, training=self.training)  # (B, H, T, d)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    def __init__(self, cfg: GPTConfig, rng, gen: Generator, proj_std: float):
        super().__init__()
        self.gelu = cfg.gelu
        self.c_fc = Linear(cfg.d_model, cfg.d_ff, std=cfg.init_std, rng=rng)
        self.c_proj = Linear(cfg.d_ff, cfg.d_model, std=proj_std, rng=rng)
        self.dropout = Dropout(cfg.resid_pdrop, gen)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), self.gelu)))


class Block(Module):
    def __init__(self, cfg: GPTConfig, rng, gen: Generator):
        super().__init__()
        self.pre_ln = cfg.ln == "pre"
        proj_std = cfg.init_std / math.sqrt(2 * cfg.n_layer) if cfg.scale_residual_init else cfg.init_std
        self.ln_1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg, rng, gen, proj_std)
        self.ln_2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.mlp = MLP(cfg, rng, gen, proj_std)

    def forward(self, x, cache=None):
        if self.pre_ln:
            x = x + self.attn(self.ln_1(x), cache)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, cache))
        return self.ln_2(x + self.mlp(x))


class LayerCache:
    """Keys and values of one layer seen so far: (B, H, T_seen, d) arrays, grown by `extend`."""

    def __init__(self):
        self.k = None
        self.v = None

    def extend(self, k: Tensor, v: Tensor):
        xp = k.xp
        self.k = k.data if self.k is None else xp.concatenate([self.k, k.data], axis=2)
        self.v = v.data if self.v is None else xp.concatenate([self.v, v.data], axis=2)
        return Tensor(self.k), Tensor(self.v)


class KVCache:
    """Per-layer key/value caches plus the number of positions already processed."""

    def __init__(self, n_layer: int):
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.pos = 0


class GPT(Module):
    """Decoder-only Transformer LM. ``forward(ids, targets=None) -> (logits, loss)``."""

    def __init__(self, cfg: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = cfg
        rng = np.random.default_rng(seed)
        gen = Generator(seed)
        object.__setattr__(self, "generator", gen)
        self.wte = Embedding(cfg.vocab_size, cfg.d_model, std=cfg.init_std, rng=rng)
        self.wpe = Embedding(cfg.n_ctx, cfg.d_model, std=cfg.init_std if cfg.ln == "pre" else cfg.init_std, rng=rng)
        self.drop = Dropout(cfg.embd_pdrop, gen)
        self.h = ModuleList(Block(cfg, rng, gen) for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.d_model, cfg.layer_norm_eps) if cfg.ln == "pre" else None

    def _check_ids(self, ids, pos):
        ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids) if not hasattr(ids, "dtype") else ids
        if ids.ndim != 2:
            raise ValueError(f"ids must be 2-D (batch, time), got shape {tuple(ids.shape)}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        T = ids.shape[1]
        if T == 0:
            raise ValueError("ids must hold at least one position")
        if pos + T > self.config.n_ctx:
            raise ValueError(
                f"sequence of {pos + T} positions is longer than the model's context n_ctx={self.config.n_ctx}"
            )
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids

    def hidden_states(self, ids, cache: KVCache | None = None) -> Tensor:
        """Final hidden states (B, T, C) (after ln_f for GPT-2)."""
        pos0 = cache.pos if cache is not None else 0
        ids = self._check_ids(ids, pos0)
        T = ids.shape[1]
        xp = self.wte.weight.xp
        ids = xp.asarray(ids)
        positions = xp.arange(pos0, pos0 + T)
        x = self.drop(self.wte(ids) + self.wpe(positions))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.pos += T
        if self.ln_f is not None:
            x = self.ln_f(x)
        return x

    def logits(self, hidden: Tensor) -> Tensor:
        """Tied output layer: (B, T, C) @ wteᵀ -> (B, T, V)."""
        return F.matmul(hidden, self.wte.weight.T)

    def forward(self, ids, targets=None, cache: KVCache | None = None, return_logits: bool = True):
        """(logits (B, T, V), mean LM loss or None). With targets and return_logits=False the logits
        are never materialised (fused classifier + cross-entropy, F.linear_cross_entropy) and
        (None, loss) is returned: what a training step needs, without the (B·T, V) array."""
        h = self.hidden_states(ids, cache)
        if targets is not None and not return_logits:
            return None, F.linear_cross_entropy(h, self.wte.weight, targets)
        logits = self.logits(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets)
        return logits, loss

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32) -> "GPT":
        """Load a local Hugging Face GPT-2 / GPT-1 directory (config.json + model.safetensors)."""
        from .hf import from_pretrained  # noqa: PLC0415

        return from_pretrained(path, dtype=dtype)

    def save_pretrained(self, path, arch: str | None = None) -> None:
        """Write a directory transformers loads as GPT2LMHeadModel (pre-LN) or OpenAIGPTLMHeadModel (post-LN)."""
        from .hf import save_pretrained  # noqa: PLC0415

        save_pretrained(self, path, arch)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    @no_grad()
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, stop_token: int | None = None):
        """Sample continuations of `ids` (B, T) with a KV cache; returns (B, T + new) int64 NumPy array."""
        from ..sampling import sample_next  # noqa: PLC0415

        ids = np.asarray(self._check_ids(ids, 0), dtype=np.int64)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if ids.shape[1] + max_new_tokens > self.config.n_ctx:
            raise ValueError(
                f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={self.config.n_ctx}"
            )
        was_training = self.training
        self.eval()
        rng = np.random.default_rng(seed)
        cache = self.new_cache()
        out = [ids]
        step_in = ids
        done = np.zeros(ids.shape[0], dtype=bool)
        try:
            for _ in range(max_new_tokens):
                logits, _ = self.forward(step_in, cache=cache)
                last = logits.numpy()[:, -1, :].astype(np.float64)  # (B, V)
                nxt = sample_next(last, rng, temperature=temperature, top_k=top_k, top_p=top_p)
                if stop_token is not None:
                    nxt = np.where(done, stop_token, nxt)
                    done |= nxt == stop_token
                out.append(nxt[:, None])
                step_in = nxt[:, None]
                if stop_token is not None and done.all():
                    break
        finally:
            self.train(was_training)
        return np.concatenate(out, axis=1)
