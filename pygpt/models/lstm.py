"""An LSTM language model built only from autograd ops (the GPT-1 ablation's "LSTM instead of
Transformer" row).

    x_t = wte[ids_t]                                   embedding (B, C)
    per layer l, time step t (gates in torch's order i, f, g, o):
        z   = x_t W_ih + h_{t-1} W_hh + b              (B, 4H)     W_ih (C, 4H), W_hh (H, 4H)
        i, f, o = σ(z_i), σ(z_f), σ(z_o);   g = tanh(z_g)
        c_t = f ∘ c_{t-1} + i ∘ g;          h_t = o ∘ tanh(c_t)
    logits = h_T wteᵀ (tied; needs H = C) or h lm_head + b (untied)

Weights are stored (in, out) like `pygpt.nn.Linear`; torch's ``weight_ih_l{k}`` is ``W_ihᵀ`` and
its two biases add up to ``b``. Each layer's whole recurrence is one autograd op, `F.lstm`
(forward and BPTT in array code; the weight gradients are one GEMM each over all steps).
`LSTMLayer.step` / `LSTMLayer.run` are the same recurrence composed from elementwise autograd ops,
one step at a time: the reference the fused op is tested against.

The interface is the one the fine-tuning code uses on GPT: ``config`` (``vocab_size``, ``n_ctx``,
``d_model``), ``wte``, ``hidden_states(ids)``, ``logits(h)``, ``forward(ids, targets)``,
``generate``, ``named_parameters``. ``n_ctx`` is the longest sequence the fine-tuning and
prompting code will build; the recurrence itself has no length limit.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..nn import Dropout, Embedding, Linear, Module, ModuleList, Parameter
from ..random import Generator

ARCH = "lstm"


@dataclass
class LSTMConfig:
    vocab_size: int = 4096
    n_ctx: int = 128
    n_layer: int = 1
    d_model: int = 256  # embedding size and hidden size
    dropout: float = 0.0  # on the embeddings, between layers and on the last layer's output
    tie_weights: bool = True
    init_std: float = 0.02  # embeddings (and an untied output layer)
    forget_bias: float = 1.0  # added to the forget gate's bias at initialisation

    def __post_init__(self):
        for name in ("vocab_size", "n_ctx", "n_layer", "d_model"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"LSTMConfig.{name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LSTMConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class LSTMLayer(Module):
    """One LSTM layer: ``weight_ih`` (in, 4H), ``weight_hh`` (H, 4H), ``bias`` (4H,); gates i, f, g, o."""

    def __init__(self, input_size: int, hidden_size: int, *, rng=None, forget_bias: float = 1.0,
                 dtype=np.float32):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"LSTMLayer: sizes must be positive, got {input_size}, {hidden_size}")
        rng = rng or np.random.default_rng(0)
        H = hidden_size
        k = 1.0 / math.sqrt(H)  # torch's U(-1/√H, 1/√H)
        self.hidden_size = H
        self.weight_ih = Parameter(rng.uniform(-k, k, (input_size, 4 * H)).astype(dtype))
        self.weight_hh = Parameter(rng.uniform(-k, k, (H, 4 * H)).astype(dtype))
        b = np.zeros(4 * H, dtype=dtype)
        b[H:2 * H] = forget_bias
        self.bias = Parameter(b)

    def step(self, x, h, c):
        """One time step from elementwise autograd ops (the reference for `F.lstm`):
        x (B, in), h and c (B, H) -> (h', c')."""
        H = self.hidden_size
        z = F.linear(x, self.weight_ih, self.bias) + F.matmul(h, self.weight_hh)  # (B, 4H)
        i_f = F.sigmoid(z[:, :2 * H])
        i, f = i_f[:, :H], i_f[:, H:]
        g = F.tanh(z[:, 2 * H:3 * H])
        o = F.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        return o * F.tanh(c), c

    def zero_state(self, batch: int):
        xp, dt = self.weight_hh.xp, self.weight_hh.dtype
        z = Tensor(xp.zeros((batch, self.hidden_size), dtype=dt))
        return z, z

    def run(self, xs: list, state=None):
        """Reference path, step by step: a list of (B, in) tensors -> (list of (B, H) outputs, (h, c))."""
        h, c = state if state is not None else self.zero_state(xs[0].shape[0])
        hs = []
        for x in xs:
            h, c = self.step(x, h, c)
            hs.append(h)
        return hs, (h, c)

    def forward(self, x, state=None):
        """x (B, T, in) -> (outputs (B, T, H), (h, c) after the last step), by the fused `F.lstm`."""
        h0, c0 = state if state is not None else self.zero_state(x.shape[0])
        hc = F.lstm(x, self.weight_ih, self.weight_hh, self.bias, h0, c0)  # (B, T, 2H) = [h | c]
        H = self.hidden_size
        return hc[:, :, :H], (hc[:, -1, :H], hc[:, -1, H:])


class LSTM(Module):
    """Embedding -> n stacked LSTM layers -> tied (wteᵀ) or untied (lm_head) output layer."""

    def __init__(self, cfg: LSTMConfig, seed: int = 0):
        super().__init__()
        if cfg.tie_weights is not True and cfg.tie_weights is not False:
            raise ValueError(f"LSTMConfig.tie_weights must be a bool, got {cfg.tie_weights!r}")
        self.config = cfg
        rng = np.random.default_rng(seed)
        gen = Generator(seed)
        object.__setattr__(self, "generator", gen)
        self.wte = Embedding(cfg.vocab_size, cfg.d_model, std=cfg.init_std, rng=rng)
        self.h = ModuleList(LSTMLayer(cfg.d_model, cfg.d_model, rng=rng, forget_bias=cfg.forget_bias)
                            for _ in range(cfg.n_layer))
        self.drop = Dropout(cfg.dropout, gen)
        self.lm_head = None if cfg.tie_weights else Linear(cfg.d_model, cfg.vocab_size, std=cfg.init_std, rng=rng)

    def _check_ids(self, ids):
        ids = ids.data if isinstance(ids, Tensor) else ids if hasattr(ids, "dtype") else np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be 2-D (batch, time), got shape {tuple(ids.shape)}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.shape[1] == 0:
            raise ValueError("ids must hold at least one position")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids

    def run(self, ids, state=None):
        """ids (B, T) -> (last layer's outputs (B, T, H) after dropout, per-layer (h, c) states)."""
        ids = self.wte.weight.xp.asarray(self._check_ids(ids))
        x = self.drop(self.wte(ids))  # (B, T, C)
        new_state = []
        for li, layer in enumerate(self.h):
            if li > 0:
                x = self.drop(x)
            x, st = layer(x, None if state is None else state[li])
            new_state.append(st)
        return self.drop(x), new_state

    def hidden_states(self, ids, state=None) -> Tensor:
        """Last layer's outputs (B, T, H) (after dropout while training)."""
        return self.run(ids, state)[0]

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (..., V): wteᵀ when tied, else lm_head."""
        if self.lm_head is None:
            return F.matmul(hidden, self.wte.weight.T)
        return self.lm_head(hidden)

    def forward(self, ids, targets=None, return_logits: bool = True):
        """(logits (B, T, V), mean LM loss or None). With targets and return_logits=False and tied
        weights the logits are never materialised (F.linear_cross_entropy), and (None, loss) is
        returned, as GPT.forward does."""
        h = self.hidden_states(ids)
        if targets is not None and not return_logits and self.lm_head is None:
            return None, F.linear_cross_entropy(h, self.wte.weight, targets)
        logits = self.logits(h)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return (logits if return_logits else None), loss

    @no_grad()
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, stop_token: int | None = None):
        """Sample continuations of `ids` (B, T), carrying the recurrent state; (B, T + new) int64."""
        from ..sampling import sample_next  # noqa: PLC0415

        ids = np.asarray(self._check_ids(ids), dtype=np.int64)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        rng = np.random.default_rng(seed)
        out, step_in, state = [ids], ids, None
        done = np.zeros(ids.shape[0], dtype=bool)
        try:
            for _ in range(max_new_tokens):
                hs, state = self.run(step_in, state)
                last = self.logits(hs[:, -1]).numpy().astype(np.float64)  # (B, V)
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
