"""Optimisers, gradient clipping and learning-rate schedules.

Everything here works on *parameters*: any object with ``.data`` (a NumPy or CuPy floating array)
and ``.grad`` (an array of the same shape, or ``None`` when the parameter got no gradient; such
parameters are skipped). Optimisers update ``.data`` **in place** and never rebind it, because
modules, checkpoints and tied weights hold references to those arrays.

Optimisers (each numerically the same as its ``torch.optim`` namesake, single-tensor path)::

    opt = AdamW(param_groups(model.named_parameters(), weight_decay=0.01), lr=2.5e-4)
    schedule = warmup_cosine(2.5e-4, warmup_steps=2000, total_steps=100_000)
    for step in range(total_steps):
        loss.backward()                              # fills p.grad
        norm = clip_grad_norm_(model.parameters(), 1.0)
        opt.lr = schedule(step)                      # step 0 = the first update
        opt.step()
        opt.zero_grad()

- :class:`AdamW` -- Adam with decoupled weight decay ``p -= lr*wd*p`` (Loshchilov & Hutter; the
  "modified L2 regularisation" of GPT-1).
- :class:`Adam` -- Adam with coupled L2: ``grad += wd*p`` before the moments.
- :class:`SGD` -- momentum / Nesterov SGD.

Param groups: a list of dicts ``{"params": [...], "weight_decay": float, "lr_scale": float,
"name": str}`` (all keys but ``params`` optional; missing ones take the optimiser's defaults,
``lr_scale`` defaults to 1). A group's learning rate is ``opt.lr * lr_scale``.
:func:`param_groups` builds the usual decay / no-decay split.

The update is done with in-place ufuncs (``out=``) into preallocated scratch. On the CPU each
parameter is processed in cache-sized chunks (over worker threads, see :func:`set_num_threads`)
so its dozen elementwise passes run out of cache and the whole step costs about one read of (param, grad, moments) and one write of (param, moments);
on CUDA one fused CuPy kernel per parameter does the same, and on the CPU with the native extension
Adam/AdamW use one C++ pass per parameter (``pygpt._C.adam_update``, bit-identical to the chunked
NumPy path, which stays as the reference and the fallback). No step allocates new arrays, except
for parameters that are not C-contiguous or are narrower than float32 (those go through a
float32 working copy).

Schedules are plain callables ``schedule(step) -> lr`` with ``step`` counting updates from 0 (the
learning rate used for the first update is ``schedule(0)``); see :func:`warmup_cosine`.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np

from . import backend
from .backend import get_xp, to_numpy

__all__ = [
    "Optimizer",
    "AdamW",
    "Adam",
    "SGD",
    "param_groups",
    "is_embedding_name",
    "clip_grad_norm_",
    "grad_norm",
    "Schedule",
    "constant",
    "warmup_cosine",
    "warmup_linear",
    "warmup_steps_from_fraction",
    "set_num_threads",
    "GPT1_PRETRAIN",
    "GPT1_FINETUNE",
    "gpt1_pretrain_schedule",
    "gpt1_finetune_schedule",
]

# Elements per CPU chunk. The ~15 ufunc passes of one chunk run out of cache (6 arrays of 1 MiB
# in float32: L2/L3-resident), so the step streams param, grad and moments from memory once.
# Larger chunks cut the per-call Python overhead, which holds the GIL and so limits how well the
# worker threads scale. Measured for a 124M-parameter AdamW step (GPT-2 small shapes, float32) on
# a 16-core Xeon (2 MiB L2/core): 65536 -> 540 ms (1 thread) / 290 ms (8); 262144 -> 560 ms (1) /
# 142 ms (8) / 131 ms (12); torch.optim.AdamW there: 100 ms (single-tensor), 26 ms (fused).
_CHUNK = 262144


# --------------------------------------------------------------------------------------------
# argument checks


def _check_float(name: str, value, *, lo=None, lo_open=False, hi=None, hi_open=False) -> float:
    """`value` as a finite Python float inside [lo, hi] (open ends where asked), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _check_int(name: str, value, *, lo=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _is_parameter(p) -> bool:
    data = getattr(p, "data", None)
    return hasattr(p, "grad") and hasattr(data, "dtype") and hasattr(data, "shape")


def _check_parameter(where: str, p):
    if not _is_parameter(p):
        raise TypeError(
            f"{where} must be a parameter (an object with .data and .grad arrays), "
            f"got {type(p).__name__}"
        )
    if np.dtype(p.data.dtype).kind != "f":
        raise TypeError(f"{where}.data must be a floating-point array, got dtype {p.data.dtype}")
    return p


def _shape(p) -> tuple:
    return tuple(int(s) for s in p.data.shape)


def _ndim(p) -> int:
    nd = getattr(p, "ndim", None)
    return int(nd) if nd is not None else int(p.data.ndim)


# --------------------------------------------------------------------------------------------
# param groups


_EMBEDDING_MARKERS = ("wte", "wpe", "word_embeddings", "position_embeddings",
                      "token_type_embeddings", "embed")


def is_embedding_name(name: str) -> bool:
    """True when a parameter name denotes an embedding table.

    The rule: split the dotted name into components (``"h.0.attn.c_attn.weight"`` →
    ``h``, ``0``, ``attn``, ``c_attn``, ``weight``); the name is an embedding when any component,
    lower-cased, contains ``wte``, ``wpe``, ``word_embeddings``, ``position_embeddings``,
    ``token_type_embeddings`` or ``embed``. So ``wte``, ``transformer.wpe.weight``,
    ``embeddings.word_embeddings.weight`` and ``tok_embed`` are embeddings; so is anything under
    a module whose name contains ``embed`` -- including projections such as ELECTRA's
    ``embeddings_project`` or ALBERT's ``embedding_hidden_mapping_in`` (pass explicit groups if
    those should decay).
    """
    for comp in str(name).lower().split("."):
        for marker in _EMBEDDING_MARKERS:
            if marker in comp:
                return True
    return False


def param_groups(named_parameters, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Split ``(name, parameter)`` pairs into a weight-decay group and a no-decay group.

    A parameter decays when ``ndim >= 2`` (weight matrices) and it is not an embedding by
    :func:`is_embedding_name` -- unless ``decay_embeddings=True``, when embeddings decay too.
    Parameters with ``ndim < 2`` (biases, LayerNorm gains and biases) never decay. A parameter
    that appears twice (tied weights, e.g. ``wte`` reused as the output layer) is kept once,
    under its first name.

    Returns ``[{"name": "decay", "params": [...], "weight_decay": weight_decay},
    {"name": "no_decay", "params": [...], "weight_decay": 0.0}]`` without the empty ones.
    """
    weight_decay = _check_float("weight_decay", weight_decay, lo=0.0)
    if isinstance(named_parameters, Mapping):
        named_parameters = named_parameters.items()
    decay, no_decay, seen = [], [], set()
    for k, item in enumerate(named_parameters):
        try:
            name, p = item
        except (TypeError, ValueError):
            raise TypeError(
                f"named_parameters[{k}] must be a (name, parameter) pair, got {type(item).__name__}"
            ) from None
        if not isinstance(name, str):
            raise TypeError(f"named_parameters[{k}]: name must be a str, got {type(name).__name__}")
        _check_parameter(f"named_parameters[{k}] ({name!r})", p)
        if id(p) in seen:
            continue
        seen.add(id(p))
        if _ndim(p) >= 2 and (decay_embeddings or not is_embedding_name(name)):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# --------------------------------------------------------------------------------------------
# optimiser base


_GROUP_KEYS = ("params", "weight_decay", "lr_scale", "name")


class Optimizer:
    """Base class: parameter groups, the settable ``lr``, ``zero_grad`` and state (de)serialisation.

    Subclasses define ``_state_names`` (the per-parameter arrays, e.g. ``("exp_avg",
    "exp_avg_sq")``), ``_check_hyper`` / ``_hyper`` / ``_set_hyper`` (their hyper-parameters),
    ``_coefficients(k, lr, wd)`` (per-parameter scalars for update number ``k``) and the
    elementwise ``_math(xp, p, g, *state, *scratch, *coefficients)``, written with in-place
    ``xp`` ufuncs only.
    """

    _state_names: tuple[str, ...] = ()

    def __init__(self, params, lr: float, weight_decay: float):
        self._lr = _check_float("lr", lr, lo=0.0, lo_open=True)
        default_wd = _check_float("weight_decay", weight_decay, lo=0.0)
        self.param_groups: list[dict] = []
        self.params: list = []           # flat list; index i names "state.{i}.*"
        self._group_index: list[list[int]] = []
        seen: dict[int, int] = {}

        if isinstance(params, Mapping) or _is_parameter(params) or not isinstance(params, Iterable):
            raise TypeError(
                "params must be an iterable of parameters or a list of param-group dicts, "
                f"got {type(params).__name__}"
            )
        items = list(params)
        if not items:
            raise ValueError("params is empty: the optimiser got no parameters")
        plain = not all(isinstance(it, Mapping) for it in items)
        if not plain:
            raw_groups = items
        elif any(isinstance(it, Mapping) for it in items):
            raise TypeError("params must be all parameters or all param-group dicts, not a mix")
        else:
            raw_groups = [{"params": items}]

        for gi, raw in enumerate(raw_groups):
            where = "params" if plain else f"params[{gi}]"
            unknown = set(raw) - set(_GROUP_KEYS)
            if unknown:
                raise ValueError(f"{where}: unknown param-group keys {sorted(unknown)}; "
                                 f"allowed: {list(_GROUP_KEYS)}")
            if "params" not in raw:
                raise ValueError(f"{where}: a param group needs a 'params' list")
            gp = raw["params"]
            if _is_parameter(gp) or isinstance(gp, Mapping) or not isinstance(gp, Iterable):
                raise TypeError(f"{where}['params'] must be an iterable of parameters, "
                                f"got {type(gp).__name__}")
            gp = list(gp)
            group = {
                "params": gp,
                "weight_decay": _check_float(f"{where}['weight_decay']",
                                             raw.get("weight_decay", default_wd), lo=0.0),
                "lr_scale": _check_float(f"{where}['lr_scale']", raw.get("lr_scale", 1.0), lo=0.0),
            }
            if "name" in raw:
                group["name"] = str(raw["name"])
            idx = []
            for k, p in enumerate(gp):
                _check_parameter(f"params[{k}]" if plain else f"{where}['params'][{k}]", p)
                if id(p) in seen:
                    raise ValueError(f"{where}: a parameter appears more than once "
                                     f"(first as parameter {seen[id(p)]})")
                seen[id(p)] = len(self.params)
                idx.append(len(self.params))
                self.params.append(p)
            self.param_groups.append(group)
            self._group_index.append(idx)

        n = len(self.params)
        self.step_count = 0                          # completed step() calls
        self._steps = [0] * n                        # per-parameter update counts (torch's state['step'])
        self._state: list[dict | None] = [None] * n  # per-parameter moment arrays
        self._scratch: dict = {}

    # -- learning rate ------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The base learning rate; a group uses ``lr * lr_scale``. Settable every step (>= 0)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        # 0 is allowed here: schedules reach it (end of warmup_linear, min_lr=0).
        self._lr = _check_float("lr", value, lo=0.0)

    # -- gradients ----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (``p.grad = None``), or zero it in place with ``set_to_none=False``."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    # -- state --------------------------------------------------------------------------------
    def get_state(self, index: int) -> dict:
        """The live state of parameter ``index``: ``{"step": int, name: array, ...}`` (not copies)."""
        st = self._state[index]
        out = {"step": self._steps[index]}
        if st is not None:
            out.update(st)
        return out

    def _new_state(self, i: int, p) -> dict:
        xp = get_xp(p.data)
        st = {name: xp.zeros(p.data.shape, dtype=_state_dtype(p.data.dtype))
              for name in self._state_names}
        self._state[i] = st
        return st

    def _scratch_for(self, xp, dtype, n: int, k: int = 1, worker: int = 0) -> list:
        """``k`` flat scratch buffers of at least ``n`` elements; grown, never shrunk."""
        dev = xp.cuda.Device().id if xp is not np else None
        key = (xp.__name__, np.dtype(dtype).str, dev, k, worker)
        bufs = self._scratch.get(key)
        if bufs is None or bufs[0].size < n:
            bufs = [xp.empty(n, dtype=dtype) for _ in range(k)]
            self._scratch[key] = bufs
        return bufs

    def _hyper(self) -> dict:
        return {}

    def _check_hyper(self, hyper: dict) -> dict:
        return {}

    def _set_hyper(self, hyper: dict) -> None:
        pass

    def _check_compatible(self, hyper: dict) -> None:
        """Raise ValueError when loaded hyper-parameters would need other state arrays."""

    def state_dict(self) -> dict:
        """Everything needed to resume: hyper-parameters, step counts and the moment arrays.

        All entries but ``"arrays"`` are JSON-serialisable. ``"arrays"`` maps
        ``"state.{i}.{name}"`` (``i`` = index of the parameter in ``self.params``, i.e. in group
        order) to a host NumPy **copy** of that array, ready for a safetensors file. Parameters that
        never had a gradient have no arrays and ``param_steps[i] == 0``.
        """
        arrays = {}
        for i, st in enumerate(self._state):
            if st is None:
                continue
            for name, a in st.items():
                host = to_numpy(a)                       # CuPy: already a fresh host copy
                arrays[f"state.{i}.{name}"] = host.copy() if host is a else host
        groups = []
        for g, idx in zip(self.param_groups, self._group_index):
            d = {"params": list(idx), "weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"]}
            if "name" in g:
                d["name"] = g["name"]
            groups.append(d)
        return {
            "optimizer": type(self).__name__,
            "format": 1,
            "lr": self._lr,
            "step": self.step_count,
            "hyper": self._hyper(),
            "param_groups": groups,
            "param_shapes": [list(_shape(p)) for p in self.params],
            "param_steps": list(self._steps),
            "arrays": arrays,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (arrays may be NumPy or CuPy; they are copied in).

        Everything is validated before anything changes; a mismatch raises ValueError saying what.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        required = ("optimizer", "lr", "step", "hyper", "param_groups", "param_shapes",
                    "param_steps", "arrays")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"state_dict is missing keys {missing}")
        name = type(self).__name__
        if state["optimizer"] != name:
            raise ValueError(f"state_dict is for optimizer {state['optimizer']!r}, this is {name!r}")
        if state.get("format", 1) != 1:
            raise ValueError(f"state_dict has format {state.get('format')!r}; this version reads format 1")
        lr = _check_float("state_dict['lr']", state["lr"], lo=0.0)
        step = _check_int("state_dict['step']", state["step"], lo=0)
        hyper = self._check_hyper(state["hyper"])
        self._check_compatible(hyper)

        n = len(self.params)
        for key in ("param_groups", "param_shapes", "param_steps"):
            if not isinstance(state[key], (list, tuple)):
                raise ValueError(f"state_dict[{key!r}] must be a list, got {type(state[key]).__name__}")
        groups = state["param_groups"]
        if not all(isinstance(g, Mapping) for g in groups):
            raise ValueError("state_dict['param_groups'] must be a list of dicts")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, "
                             f"the optimiser has {len(self.param_groups)}")
        new_groups = []
        for gi, (g, idx) in enumerate(zip(groups, self._group_index)):
            gidx = g.get("params", [])
            if not isinstance(gidx, (list, tuple)):
                raise ValueError(f"param group {gi}: 'params' must be a list of indices")
            gidx = [_check_int(f"param_groups[{gi}]['params']", i, lo=0) for i in gidx]
            if gidx != idx:
                raise ValueError(f"param group {gi}: state_dict has {len(gidx)} parameters "
                                 f"(indices {gidx[:8]}...), the optimiser has {len(idx)} "
                                 f"(indices {idx[:8]}...)")
            new_groups.append((
                _check_float(f"param_groups[{gi}]['weight_decay']", g.get("weight_decay", 0.0), lo=0.0),
                _check_float(f"param_groups[{gi}]['lr_scale']", g.get("lr_scale", 1.0), lo=0.0),
            ))
        shapes = state["param_shapes"]
        if len(shapes) != n:
            raise ValueError(f"state_dict has {len(shapes)} parameters, the optimiser has {n}")
        for i, (s, p) in enumerate(zip(shapes, self.params)):
            if not isinstance(s, (list, tuple)):
                raise ValueError(f"param_shapes[{i}] must be a list of sizes, got {type(s).__name__}")
            if tuple(_check_int(f"param_shapes[{i}]", d, lo=0) for d in s) != _shape(p):
                raise ValueError(f"parameter {i}: state_dict shape {tuple(s)} != parameter shape {_shape(p)}")
        psteps = state["param_steps"]
        if len(psteps) != n:
            raise ValueError(f"state_dict has {len(psteps)} param_steps, the optimiser has {n} parameters")
        psteps = [_check_int(f"param_steps[{i}]", s, lo=0) for i, s in enumerate(psteps)]

        arrays = state["arrays"]
        if not isinstance(arrays, Mapping):
            raise ValueError("state_dict['arrays'] must be a dict of named arrays")
        pat = re.compile(r"^state\.(\d+)\.([A-Za-z_]+)$")
        found: dict[int, dict] = {}
        for key, a in arrays.items():
            m = pat.match(str(key))
            if m is None or m.group(2) not in self._state_names:
                raise ValueError(f"state_dict array {key!r} is not one of "
                                 f"'state.<i>.{{{','.join(self._state_names)}}}'")
            i = int(m.group(1))
            if i >= n:
                raise ValueError(f"state_dict array {key!r}: parameter index {i} out of range "
                                 f"(the optimiser has {n} parameters)")
            if tuple(a.shape) != _shape(self.params[i]):
                raise ValueError(f"state_dict array {key!r} has shape {tuple(a.shape)}, "
                                 f"parameter {i} has shape {_shape(self.params[i])}")
            if np.dtype(a.dtype).kind != "f":
                raise ValueError(f"state_dict array {key!r} must be floating point, got {a.dtype}")
            found.setdefault(i, {})[m.group(2)] = a
        for i in range(n):
            have = set(found.get(i, {}))
            if psteps[i] > 0 and self._state_names and have != set(self._state_names):
                raise ValueError(f"parameter {i} has taken {psteps[i]} steps but state_dict lacks "
                                 f"its arrays {sorted(set(self._state_names) - have)}")
            if psteps[i] == 0 and have:
                raise ValueError(f"parameter {i} has taken no steps but state_dict has arrays "
                                 f"{sorted(have)} for it")

        # all checks passed: apply
        self._lr = lr
        self.step_count = step
        self._set_hyper(hyper)
        for g, (wd, scale) in zip(self.param_groups, new_groups):
            g["weight_decay"], g["lr_scale"] = wd, scale
        self._steps = psteps
        for i, p in enumerate(self.params):
            if i not in found:
                self._state[i] = None
                continue
            st = self._state[i] if self._state[i] is not None else self._new_state(i, p)
            xp = get_xp(p.data)
            for nm, a in found[i].items():
                src = to_numpy(a) if xp is np else xp.asarray(a)
                st[nm][...] = src.astype(st[nm].dtype, copy=False)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self._hyper().items())
        groups = ", ".join(f"{g.get('name', i)}: {len(g['params'])} params wd={g['weight_decay']}"
                           f" lr_scale={g['lr_scale']}" for i, g in enumerate(self.param_groups))
        return f"{type(self).__name__}(lr={self._lr}, {hyper}, groups=[{groups}])"

    # -- the step -------------------------------------------------------------------------------
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        lr = self._lr
        cpu_tasks: list = []      # NumPy updates, run together (chunked, over threads) at the end
        for group, idx in zip(self.param_groups, self._group_index):
            glr = lr * group["lr_scale"]
            wd = group["weight_decay"]
            for i in idx:
                p = self.params[i]
                g = p.grad
                if g is None:
                    continue
                if tuple(g.shape) != tuple(p.data.shape):
                    raise ValueError(f"parameter {i}: grad shape {tuple(g.shape)} != "
                                     f"data shape {tuple(p.data.shape)}")
                st = self._state[i]
                if st is None:
                    st = self._new_state(i, p)
                self._steps[i] += 1
                self._update_param(p.data, g, st, self._coefficients(self._steps[i], glr, wd), cpu_tasks)
        if cpu_tasks:
            self._run_cpu(cpu_tasks)
        self.step_count += 1

    def _update_param(self, data, g, st, coef, cpu_tasks) -> None:
        xp = get_xp(data)
        mdtype = next(iter(st.values())).dtype if st else _state_dtype(data.dtype)
        if data.dtype != mdtype or not _contiguous(data):
            # rare path (float16 params, strided views): update a working copy, write it back
            work = xp.ascontiguousarray(data, dtype=mdtype)
            self._update_contiguous(xp, work, g, st, coef, None)
            data[...] = work
        else:
            self._update_contiguous(xp, data, g, st, coef, cpu_tasks)

    def _update_contiguous(self, xp, data, g, st, coef, cpu_tasks) -> None:
        if xp is not np and self._fused_cuda(data, g, st, coef):
            return
        if not _contiguous(g):
            g = xp.ascontiguousarray(g)
        if xp is np and self._fused_cpu(data, g, st, coef):
            return
        flat = [data.reshape(-1), g.reshape(-1)] + [st[nm].reshape(-1) for nm in self._state_names]
        if xp is np:
            if cpu_tasks is None:
                self._run_cpu([(flat, coef)])
            else:
                cpu_tasks.append((flat, coef))
            return
        scratch = self._scratch_for(xp, data.dtype, flat[0].size, self._n_scratch)
        n = flat[0].size
        self._math(xp, *flat, *[s[:n] for s in scratch], *coef)

    def _run_cpu(self, tasks) -> None:
        """Apply ``_math`` to every task in chunks of ``_CHUNK`` elements, over worker threads
        (NumPy releases the GIL inside ufunc loops). Each worker has its own scratch."""
        pieces = [(flat, coef, lo, min(lo + _CHUNK, flat[0].size))
                  for flat, coef in tasks for lo in range(0, flat[0].size, _CHUNK)]
        nt = min(_optim_threads(), len(pieces) // 2)
        nt = max(nt, 1)
        dtypes = {flat[0].dtype for flat, _ in tasks}
        scratch = [{dt: self._scratch_for(np, dt, _CHUNK, self._n_scratch, worker=w) for dt in dtypes}
                   for w in range(nt)]
        if nt == 1:
            self._run_pieces(pieces, scratch[0])
            return
        pool = _thread_pool()
        futures = [pool.submit(self._run_pieces, pieces[w::nt], scratch[w]) for w in range(nt)]
        for f in futures:
            f.result()

    def _run_pieces(self, pieces, scratch) -> None:
        math_ = self._math
        for flat, coef, lo, hi in pieces:
            bufs = scratch[flat[0].dtype]
            math_(np, *[a[lo:hi] for a in flat], *[b[: hi - lo] for b in bufs], *coef)

    _n_scratch = 1

    def _fused_cuda(self, data, g, st, coef) -> bool:
        return False

    def _fused_cpu(self, data, g, st, coef) -> bool:
        """Update with a native kernel (one pass, its own threads); False: use the chunked ``_math``."""
        return False


# CPU worker threads for the optimiser step and the gradient norm. Default: the usable cores,
# at most 8 (the update is memory-bound; more threads stop helping). PYGPT_OPTIM_THREADS overrides.
_THREADS: int | None = None
_POOL = None


def set_num_threads(n: int) -> None:
    """Threads used by optimiser steps and gradient norms on the CPU (1 = no threads)."""
    global _THREADS, _POOL
    n = _check_int("n", n, lo=1)
    if _POOL is not None and n != _THREADS:
        _POOL.shutdown(wait=True)
        _POOL = None
    _THREADS = n


def _optim_threads() -> int:
    global _THREADS
    if _THREADS is None:
        env = os.environ.get("PYGPT_OPTIM_THREADS", "")
        if env.strip():
            _THREADS = max(1, int(env))
        else:
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:  # not Linux
                cores = os.cpu_count() or 1
            _THREADS = max(1, min(8, cores))
    return _THREADS


def _thread_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=_optim_threads(), thread_name_prefix="pygpt-optim")
    return _POOL


def _contiguous(a) -> bool:
    return bool(a.flags.c_contiguous)


def _state_dtype(dtype):
    """Moments are kept in the parameter's dtype, but never narrower than float32."""
    dt = np.dtype(dtype)
    return dt if dt.itemsize >= 4 else np.dtype(np.float32)


# --------------------------------------------------------------------------------------------
# Adam / AdamW


class _AdamBase(Optimizer):
    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = True
    _n_scratch = 2

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        hyper = self._check_hyper({"betas": betas, "eps": eps})
        super().__init__(params, lr, weight_decay)
        self._set_hyper(hyper)

    def _check_hyper(self, hyper) -> dict:
        if not isinstance(hyper, Mapping) or "betas" not in hyper or "eps" not in hyper:
            raise ValueError("hyper-parameters must hold 'betas' and 'eps'")
        betas = hyper["betas"]
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Iterable) or len(list(betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = list(betas)
        b1 = _check_float("betas[0]", b1, lo=0.0, hi=1.0, hi_open=True)
        b2 = _check_float("betas[1]", b2, lo=0.0, hi=1.0, hi_open=True)
        eps = _check_float("eps", hyper["eps"], lo=0.0)
        return {"betas": [b1, b2], "eps": eps}

    def _hyper(self) -> dict:
        return {"betas": [self.beta1, self.beta2], "eps": self.eps}

    def _set_hyper(self, hyper) -> None:
        self.beta1, self.beta2 = hyper["betas"]
        self.eps = hyper["eps"]

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _coefficients(self, k, lr, wd):
        b1, b2 = self.beta1, self.beta2
        bias_correction1 = 1 - b1 ** k
        bias_correction2 = 1 - b2 ** k
        step_size = lr / bias_correction1
        bc2_sqrt = bias_correction2 ** 0.5
        if self._decoupled:
            decay, l2 = 1 - lr * wd, 0.0
        else:
            decay, l2 = 1.0, wd
        return (decay, l2, 1 - b1, b2, 1 - b2, bc2_sqrt, self.eps, step_size)

    @staticmethod
    def _math(xp, p, g, m, v, t, *rest):
        # Same operations, in the same order, as torch's _single_tensor_adam (non-capturable):
        #   p *= 1 - lr*wd          (AdamW)        g = g + wd*p     (Adam, wd != 0)
        #   m += (1-b1) * (g - m)                  (torch: m.lerp_(g, 1-b1))
        #   v = v*b2 + (1-b2)*g*g                  (torch: v.mul_(b2).addcmul_(g, g, value=1-b2))
        #   denom = sqrt(v) / sqrt(1-b2^k) + eps
        #   p -= ((lr / (1-b1^k)) * m) / denom     (torch: p.addcdiv_(m, denom, value=-step_size))
        # Scalars are Python floats, so float32 arrays compute in float32 (NEP 50), as torch does.
        u, decay, l2, omb1, b2, omb2, bc2_sqrt, eps, step_size = rest   # u: second scratch
        if decay != 1.0:
            xp.multiply(p, decay, out=p)
        if l2 != 0.0:
            xp.multiply(p, l2, out=u)
            xp.add(g, u, out=u)
            g = u
        xp.subtract(g, m, out=t)
        xp.multiply(t, omb1, out=t)
        xp.add(m, t, out=m)
        xp.multiply(v, b2, out=v)
        xp.multiply(g, omb2, out=t)
        xp.multiply(t, g, out=t)
        xp.add(v, t, out=v)
        xp.sqrt(v, out=t)
        xp.divide(t, bc2_sqrt, out=t)
        xp.add(t, eps, out=t)
        xp.multiply(m, step_size, out=u)      # torch's addcdiv computes (value * m) / denom
        xp.divide(u, t, out=u)
        xp.subtract(p, u, out=p)

    def _fused_cpu(self, data, g, st, coef) -> bool:
        # pygpt._C.adam_update: one pass over (p, g, m, v), the same operations in the same order as
        # _math with the coefficients rounded to the array's dtype, so the result is bit-identical.
        C = backend.native
        if C is None or data.dtype not in (np.float32, np.float64):
            return False
        m, v = st["exp_avg"], st["exp_avg_sq"]
        arrays = (data, g, m, v)
        if any(a.dtype != data.dtype or not a.flags.c_contiguous for a in arrays) or np.may_share_memory(data, g):
            return False
        decay, l2, omb1, b2, omb2, bc2_sqrt, eps, step_size = coef
        C.adam_update(data, g, m, v, decay=decay, l2=l2, one_minus_beta1=omb1, beta2=b2, one_minus_beta2=omb2,
                      bias_correction2_sqrt=bc2_sqrt, eps=eps, step_size=step_size)
        return True

    def _fused_cuda(self, data, g, st, coef) -> bool:
        kern = _cuda_adam_kernel()
        if kern is None or data.dtype not in (np.float32, np.float64) or g.dtype != data.dtype:
            return False
        decay, l2, omb1, b2, omb2, bc2_sqrt, eps, step_size = coef
        T = data.dtype.type
        kern(g, T(decay), T(l2), T(omb1), T(b2), T(omb2), T(bc2_sqrt), T(eps), T(step_size),
             data, st["exp_avg"], st["exp_avg_sq"])
        return True


class AdamW(_AdamBase):
    """Adam with decoupled weight decay, = ``torch.optim.AdamW`` (single-tensor path).

    Per parameter with gradient ``g``, after its k-th update (k counts from 1)::

        p   *= 1 - lr*wd
        m    = m + (1-b1) * (g - m)
        v    = b2*v + (1-b2)*g*g
        p   -= lr/(1-b1^k) * m / (sqrt(v)/sqrt(1-b2^k) + eps)

    ``lr`` is ``opt.lr * group["lr_scale"]``, ``wd`` the group's ``weight_decay``. Moments are
    kept in the parameter's dtype (float32 for narrower dtypes).
    """

    _decoupled = True


class Adam(_AdamBase):
    """Adam with coupled L2 regularisation (``g = g + wd*p``), = ``torch.optim.Adam``.

    ``p.grad`` itself is not modified. Default ``weight_decay`` is 0, as in torch.
    """

    _decoupled = False

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)


_CUDA_KERNELS: dict = {}


def _cuda_adam_kernel():
    """One fused CuPy elementwise kernel for the whole Adam/AdamW update (same op order as _math)."""
    if "adam" not in _CUDA_KERNELS:
        try:
            import cupy

            _CUDA_KERNELS["adam"] = cupy.ElementwiseKernel(
                "T g, T decay, T l2, T omb1, T b2, T omb2, T bc2_sqrt, T eps, T step_size",
                "T p, T m, T v",
                """
                T pp = p;
                if (decay != (T)1) pp = pp * decay;
                T gg = g;
                if (l2 != (T)0) gg = gg + l2 * pp;
                T mm = m + omb1 * (gg - m);
                T vv = v * b2 + (omb2 * gg) * gg;
                T denom = sqrt(vv) / bc2_sqrt + eps;
                m = mm;
                v = vv;
                p = pp - (step_size * mm) / denom;
                """,
                "pygpt_adam_update",
                options=("--fmad=false",),
            )
        except Exception:  # no CuPy / no compiler: the generic xp path is used
            _CUDA_KERNELS["adam"] = None
    return _CUDA_KERNELS["adam"]


# --------------------------------------------------------------------------------------------
# SGD


class SGD(Optimizer):
    """SGD with optional momentum / Nesterov and coupled weight decay, = ``torch.optim.SGD``::

        g = g + wd*p
        buf = g                       (first update)     buf = momentum*buf + (1-dampening)*g
        d = g + momentum*buf          (nesterov)         d = buf                     (otherwise)
        p -= lr * d

    Without momentum there is no state. ``weight_decay`` defaults to 0, as in torch.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0):
        hyper = self._check_hyper({"momentum": momentum, "nesterov": nesterov, "dampening": dampening})
        super().__init__(params, lr, weight_decay)
        self._set_hyper(hyper)

    def _check_hyper(self, hyper) -> dict:
        if not isinstance(hyper, Mapping) or not {"momentum", "nesterov", "dampening"} <= set(hyper):
            raise ValueError("hyper-parameters must hold 'momentum', 'nesterov' and 'dampening'")
        momentum = _check_float("momentum", hyper["momentum"], lo=0.0)
        dampening = _check_float("dampening", hyper["dampening"], lo=0.0, hi=1.0)
        nesterov = hyper["nesterov"]
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")
        return {"momentum": momentum, "nesterov": bool(nesterov), "dampening": dampening}

    def _hyper(self) -> dict:
        return {"momentum": self.momentum, "nesterov": self.nesterov, "dampening": self.dampening}

    def _set_hyper(self, hyper) -> None:
        self.momentum = hyper["momentum"]
        self.nesterov = hyper["nesterov"]
        self.dampening = hyper["dampening"]
        self._state_names = ("momentum_buffer",) if self.momentum != 0 else ()

    def _check_compatible(self, hyper) -> None:
        if (hyper["momentum"] != 0) != (self.momentum != 0):
            raise ValueError(f"state_dict has momentum={hyper['momentum']}, this optimiser has "
                             f"momentum={self.momentum}: one of them keeps no momentum buffers")

    _n_scratch = 2

    def _coefficients(self, k, lr, wd):
        return (k == 1, lr, wd, self.momentum, self.dampening, self.nesterov)

    @staticmethod
    def _math(xp, p, g, *rest):
        # rest = ([buf,] t, u, first, lr, wd, momentum, dampening, nesterov): buf only with momentum
        if len(rest) == 9:
            buf, t, u, first, lr, wd, momentum, dampening, nesterov = rest
        else:
            buf = None
            t, u, first, lr, wd, momentum, dampening, nesterov = rest
        if wd != 0.0:
            xp.multiply(p, wd, out=t)      # torch: g = g.add(p, alpha=wd)
            xp.add(g, t, out=t)
            g = t
        d = g
        if buf is not None:
            if first:
                buf[...] = g               # torch: buf = g.clone()
            else:
                xp.multiply(buf, momentum, out=buf)
                if dampening != 0.0:
                    xp.multiply(g, 1 - dampening, out=u)
                    xp.add(buf, u, out=buf)
                else:
                    xp.add(buf, g, out=buf)
            if nesterov:
                xp.multiply(buf, momentum, out=u)   # torch: g.add(buf, alpha=momentum)
                xp.add(g, u, out=u)
                d = u
            else:
                d = buf
        xp.multiply(d, lr, out=u)          # torch: p.add_(d, alpha=-lr)
        xp.subtract(p, u, out=p)


# --------------------------------------------------------------------------------------------
# gradient norm and clipping


def _sumsq_cuda():
    if "sumsq" not in _CUDA_KERNELS:
        import cupy

        _CUDA_KERNELS["sumsq"] = cupy.ReductionKernel(
            "T x", "float64 y", "(double)x * (double)x", "a + b", "y = a", "0", "pygpt_sumsq"
        )
    return _CUDA_KERNELS["sumsq"]


def _grads(params, name="params") -> list:
    if _is_parameter(params) or isinstance(params, Mapping) or not isinstance(params, Iterable):
        if _is_parameter(params):
            params = [params]
        else:
            raise TypeError(f"{name} must be an iterable of parameters, got {type(params).__name__}")
    out = []
    for k, p in enumerate(params):
        if not _is_parameter(p):
            raise TypeError(f"{name}[{k}] must be a parameter (an object with .data and .grad), "
                            f"got {type(p).__name__}")
        if p.grad is not None:
            out.append(p.grad)
    return out


_PIECE = 1 << 20   # elements per CPU work item for the norm and the scaling


def _sumsq_np(flat) -> float:
    """Sum of squares of a 1-D NumPy array, accumulated in float64. einsum casts float32 input
    to float64 in small buffered blocks (no full-size copy); float32 accumulation (np.dot, BLAS
    sdot) loses ~1e-3 relative over tens of millions of values."""
    if flat.dtype == np.float64:
        return float(np.dot(flat, flat))
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64))


def _scale_np(args) -> None:
    flat, coef = args
    np.multiply(flat, coef, out=flat)


def _cpu_pieces(grads) -> list:
    out = []
    for g in grads:
        flat = g.reshape(-1)   # a view for contiguous grads (a copy would only matter for scaling)
        out.extend(flat[lo: lo + _PIECE] for lo in range(0, flat.size, _PIECE))
    return out


def _cpu_map(fn, items) -> list:
    nt = min(_optim_threads(), len(items))
    if nt <= 1:
        return [fn(x) for x in items]
    return list(_thread_pool().map(fn, items))


def _total_sumsq(grads) -> float:
    """Sum of squares over all gradients, in float64: exact summation of the per-piece sums
    (math.fsum), so the result does not depend on the thread count."""
    cpu = [g for g in grads if get_xp(g) is np]
    parts = _cpu_map(_sumsq_np, _cpu_pieces(cpu))
    gpu = [g for g in grads if get_xp(g) is not np]
    if gpu:
        xp = get_xp(gpu[0])
        kern = _sumsq_cuda()
        parts.append(float(xp.stack([kern(g) for g in gpu]).sum()))   # one host sync
    return math.fsum(parts)


def grad_norm(params) -> float:
    """Global L2 norm of all gradients (``None`` grads skipped), accumulated in float64."""
    return math.sqrt(_total_sumsq(_grads(params)))


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm **before** clipping, as a Python float. Like
    ``torch.nn.utils.clip_grad_norm_``: the norm is over all gradients viewed as one vector, and
    gradients are multiplied by ``max_norm / (norm + 1e-6)`` when that factor is < 1 (i.e. when
    ``norm > max_norm - 1e-6``). The sum of squares is accumulated in float64. Unlike torch, a
    non-finite norm (inf/nan) is returned without touching the gradients: the caller decides
    (typically: skip the step). Parameters whose grad is None are ignored; none at all gives 0.0.
    """
    max_norm = _check_float("max_norm", max_norm, lo=0.0, lo_open=True)
    grads = _grads(params)
    norm = math.sqrt(_total_sumsq(grads))
    if not math.isfinite(norm):
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        cpu = []
        for g in grads:
            if get_xp(g) is np and _contiguous(g):
                cpu.append(g)
            else:
                get_xp(g).multiply(g, coef, out=g)
        _cpu_map(_scale_np, [(x, coef) for x in _cpu_pieces(cpu)])
    return norm


# --------------------------------------------------------------------------------------------
# learning-rate schedules
#
# Convention for every schedule: `step` counts optimiser updates from 0, and schedule(step) is the
# learning rate for update number `step` (the first update uses schedule(0)). Warmup is linear and
# never uses lr = 0: update s < warmup_steps uses max_lr * (s + 1) / warmup_steps, so step 0 gets
# max_lr / warmup_steps and step warmup_steps - 1 is the first to reach max_lr. The decay phase
# starts at max_lr at step == warmup_steps and reaches its end value exactly at step ==
# total_steps (i.e. the lr after the last of `total_steps` updates); later steps keep that value.


class Schedule:
    """Base of the schedules: a callable ``schedule(step) -> lr`` with a readable repr."""

    def __call__(self, step) -> float:
        step = _check_int("step", step, lo=0)
        return self._lr(step)

    def _lr(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_warmup(max_lr, warmup_steps, total_steps):
    max_lr = _check_float("max_lr", max_lr, lo=0.0, lo_open=True)
    warmup_steps = _check_int("warmup_steps", warmup_steps, lo=0)
    total_steps = _check_int("total_steps", total_steps, lo=1)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be <= total_steps ({total_steps})")
    return max_lr, warmup_steps, total_steps


class Constant(Schedule):
    def __init__(self, lr: float):
        self.lr = _check_float("lr", lr, lo=0.0, lo_open=True)

    def _lr(self, step: int) -> float:
        return self.lr


class WarmupCosine(Schedule):
    def __init__(self, max_lr, warmup_steps, total_steps, min_lr=0.0):
        self.max_lr, self.warmup_steps, self.total_steps = _check_warmup(max_lr, warmup_steps, total_steps)
        self.min_lr = _check_float("min_lr", min_lr, lo=0.0, hi=self.max_lr)

    def _lr(self, s: int) -> float:
        w, t = self.warmup_steps, self.total_steps
        if s < w:
            return self.max_lr * (s + 1) / w
        if s >= t:
            return self.min_lr
        progress = (s - w) / (t - w)
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupLinear(Schedule):
    def __init__(self, max_lr, warmup_steps, total_steps):
        self.max_lr, self.warmup_steps, self.total_steps = _check_warmup(max_lr, warmup_steps, total_steps)

    def _lr(self, s: int) -> float:
        w, t = self.warmup_steps, self.total_steps
        if s < w:
            return self.max_lr * (s + 1) / w
        if s >= t:
            return 0.0
        return self.max_lr * (t - s) / (t - w)


def constant(lr: float) -> Schedule:
    """``schedule(step) = lr`` for every step."""
    return Constant(lr)


def warmup_cosine(max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Linear warmup, then cosine annealing to ``min_lr`` (GPT-1 pre-training).

    With ``W = warmup_steps``, ``T = total_steps`` and ``s`` the 0-based update index::

        s <  W:       max_lr * (s + 1) / W             (step 0 gets max_lr / W; step W-1 gets max_lr)
        W <= s < T:   min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2
        s >= T:       min_lr

    so ``schedule(W) == max_lr`` and ``schedule(T) == min_lr``. ``W == 0`` means no warmup.
    Requires ``max_lr > 0``, ``0 <= W <= T``, ``T >= 1``, ``0 <= min_lr <= max_lr``.
    """
    return WarmupCosine(max_lr, warmup_steps, total_steps, min_lr)


def warmup_linear(max_lr: float, warmup_steps: int, total_steps: int) -> Schedule:
    """Linear warmup, then linear decay to 0 (GPT-1 fine-tuning)::

        s <  W:       max_lr * (s + 1) / W
        W <= s < T:   max_lr * (T - s) / (T - W)
        s >= T:       0.0

    GPT-1 warms up over 0.2% of training: ``warmup_steps=warmup_steps_from_fraction(T, 0.002)``.
    """
    return WarmupLinear(max_lr, warmup_steps, total_steps)


def warmup_steps_from_fraction(total_steps: int, fraction: float) -> int:
    """``fraction`` of ``total_steps`` as a whole number of warmup steps (rounded half up; at
    least 1 when ``fraction > 0``). GPT-1 fine-tuning uses ``fraction=0.002``."""
    total_steps = _check_int("total_steps", total_steps, lo=1)
    fraction = _check_float("fraction", fraction, lo=0.0, hi=1.0)
    if fraction == 0.0:
        return 0
    return min(total_steps, max(1, math.floor(fraction * total_steps + 0.5)))


# GPT-1 (Radford et al. 2018), section 4.1. Pre-training: Adam, max lr 2.5e-4, increased linearly
# from zero over the first 2000 updates and annealed to 0 with a cosine schedule; 100 epochs of
# 64 x 512-token minibatches; modified (decoupled) L2 weight decay w = 0.01 on all non-bias,
# non-gain weights. Fine-tuning: lr 6.25e-5, batch 32, 3 epochs, linear decay with warmup over
# 0.2% of training, auxiliary LM loss weight 0.5. max_grad_norm = 1 is from the released code.
GPT1_PRETRAIN = {"max_lr": 2.5e-4, "warmup_steps": 2000, "min_lr": 0.0, "weight_decay": 0.01,
                 "betas": (0.9, 0.999), "eps": 1e-8, "max_grad_norm": 1.0}
GPT1_FINETUNE = {"max_lr": 6.25e-5, "warmup_fraction": 0.002, "weight_decay": 0.01,
                 "betas": (0.9, 0.999), "eps": 1e-8, "max_grad_norm": 1.0, "lm_coef": 0.5}


def gpt1_pretrain_schedule(total_steps: int) -> Schedule:
    """GPT-1's pre-training schedule: ``warmup_cosine(2.5e-4, 2000, total_steps)``."""
    return warmup_cosine(GPT1_PRETRAIN["max_lr"], GPT1_PRETRAIN["warmup_steps"], total_steps,
                         GPT1_PRETRAIN["min_lr"])


def gpt1_finetune_schedule(total_steps: int) -> Schedule:
    """GPT-1's fine-tuning schedule: 6.25e-5, warmup over 0.2% of training, linear decay to 0."""
    w = warmup_steps_from_fraction(total_steps, GPT1_FINETUNE["warmup_fraction"])
    return warmup_linear(GPT1_FINETUNE["max_lr"], w, total_steps)
