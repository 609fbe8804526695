"""Modules: parameter containers with named parameters, state dicts and train/eval mode.

Names follow the public checkpoints (nanoGPT/HF style): a Module's parameters are found by walking
its attributes, so ``model.h[0].attn.c_attn.weight`` is named ``h.0.attn.c_attn.weight``.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor


class Parameter(Tensor):
    """A leaf Tensor that always requires grad and is found by `Module.parameters()`."""

    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"


class Module:
    """Base class. Assigning a Parameter, Module or ModuleList attribute registers it."""

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._params[name] = value  # a re-assigned name keeps its place in the order
        elif isinstance(value, Module):
            self._params.pop(name, None)
            self._modules[name] = value
        else:
            self._params.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- traversal -----------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, mod in self._modules.items():
            yield from mod.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = ""):
        """(name, Parameter) pairs, each parameter once even when shared (tied weights)."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._params.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """name -> array (the live arrays, not copies)."""
        return OrderedDict((n, p.data) for n, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy arrays into the parameters in place. With strict, names must match exactly;
        shapes must always match. Returns (missing, unexpected) name lists."""
        own = dict(self.named_parameters())
        missing = [n for n in own if n not in state]
        unexpected = [n for n in state if n not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match {type(self).__name__}: missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
            )
        for name, p in own.items():
            if name not in state:
                continue
            arr = state[name]
            if isinstance(arr, Tensor):
                arr = arr.data
            if tuple(arr.shape) != p.shape:
                raise ValueError(f"state dict entry {name!r} has shape {tuple(arr.shape)}, the model expects {p.shape}")
            if arr.dtype.kind != "f":
                raise ValueError(f"state dict entry {name!r} has dtype {arr.dtype}; weights must be floating point")
            if not bool(backend.get_xp(arr).isfinite(arr).all()):
                raise ValueError(f"state dict entry {name!r} contains NaN or infinite values")
            xp = p.xp
            p.data[...] = xp.asarray(backend.to_numpy(arr) if xp is np else arr, dtype=p.dtype)
        return missing, unexpected

    def to(self, device: str | None = None, dtype=None):
        """Move (and/or cast) every parameter's data in place of the old array. Call before
        creating the optimiser."""
        for _, p in self.named_parameters():
            data = p.data
            if dtype is not None:
                data = data.astype(dtype)
            if device is not None and device != p.device:
                data = backend.to_numpy(data) if device == "cpu" else backend.xp_for(device).asarray(data)
            p.data = data
            p.grad = None
        return self


class ModuleList(Module):
    """A list of modules named 0, 1, 2, ..."""

    def __init__(self, modules=()):
        super().__init__()
        self._list = []
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        self._modules[str(len(self._list))] = module
        self._list.append(module)

    def __getitem__(self, i):
        return self._list[i]

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)


def _normal(shape, std, rng, dtype):
    return (rng.standard_normal(shape) * std).astype(dtype)


class Linear(Module):
    """y = x W + b with W shaped (in_features, out_features), as GPT-2's Conv1D stores it."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, std: float = 0.02,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: in_features and out_features must be positive, got {in_features}, {out_features}")
        rng = rng or np.random.default_rng(0)
        self.weight = Parameter(_normal((in_features, out_features), std, rng, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A lookup table (num_embeddings, dim); forward takes integer ids of any shape."""

    def __init__(self, num_embeddings: int, dim: int, *, std: float = 0.02, rng=None, dtype=np.float32):
        super().__init__()
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(f"Embedding: sizes must be positive, got {num_embeddings}, {dim}")
        rng = rng or np.random.default_rng(0)
        self.weight = Parameter(_normal((num_embeddings, dim), std, rng, dtype))

    def forward(self, ids):
        return F.embedding(self.weight, ids)


class LayerNorm(Module):
    """Normalise the last axis; gain `weight` (ones) and `bias` (zeros)."""

    def __init__(self, dim: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Dropout with probability p while training; masks come from a shared seeded Generator."""

    def __init__(self, p: float, generator=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        object.__setattr__(self, "generator", generator)

    def forward(self, x):
        return F.dropout(x, self.p, self.generator, training=self.training)
