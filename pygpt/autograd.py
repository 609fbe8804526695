"""Define-by-run reverse-mode autodiff on NumPy or CuPy arrays.

A `Tensor` wraps one array (`.data`) and, when it was produced by a differentiable op while gradients
are enabled, a reference to the `Function` node that made it. `Tensor.backward()` walks those nodes in
reverse topological order and calls each node's `backward`, which maps the gradient of its output to
gradients of its inputs. Leaf tensors with ``requires_grad=True`` accumulate into `.grad` (``+=``);
`zero_grad` on the optimiser (or ``t.grad = None``) resets them.

The chain rule in one screen:

    out = f(x1, ..., xn)        node = Function instance, node.inputs = (x1, ..., xn)
    backward: g_out  ->  node.backward(g_out) = (g_x1, ..., g_xn)  -> add into each xi's gradient

Every op lives in `pygpt.functional` as a `Function` subclass with `forward` and `backward` written
with `xp` (NumPy or CuPy), so the same model code runs on the CPU and on a GPU.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _set_grad(enabled: bool):
    prev = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = prev


def no_grad():
    """Context manager: ops inside record no graph (inference, optimiser updates)."""
    return _set_grad(False)


def enable_grad():
    return _set_grad(True)


# --------------------------------------------------------------------------------------------
# Function: one differentiable op
# --------------------------------------------------------------------------------------------

OP_REGISTRY: dict[str, type] = {}
"""Every `Function` subclass with a ``name`` registers here; tests enumerate it."""


class Function:
    """One node of the graph: ``forward(*arrays, **params) -> array`` and
    ``backward(grad_out) -> tuple of input gradients`` (None where an input needs none).

    `forward` receives raw arrays (never Tensors) and stores on ``self`` exactly what `backward`
    needs. ``self.needs_grad[i]`` tells backward which input gradients are wanted, so it can skip
    work. Subclasses set ``name`` to register; ``differentiable = False`` marks ops without a
    gradient (comparisons, argmax)."""

    name: str | None = None
    differentiable = True
    __slots__ = ("inputs", "needs_grad", "__dict__")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            if cls.name in OP_REGISTRY:
                raise RuntimeError(f"op name {cls.name!r} registered twice")
            OP_REGISTRY[cls.name] = cls

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        """Run forward on the inputs' arrays and, if any input needs a gradient, record the node."""
        fn = cls()
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        out = fn.forward(*arrays, **params)
        if isinstance(out, np.generic):  # full reductions give NumPy scalars; keep arrays throughout
            out = np.asarray(out)
        if cls.differentiable and is_grad_enabled():
            needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in inputs)
            if any(needs):
                fn.inputs = inputs
                fn.needs_grad = needs
                return Tensor._from_op(out, fn)
        return Tensor._from_op(out, None)


class _Freed:
    """Marker left on a node whose saved tensors were released by backward."""


# --------------------------------------------------------------------------------------------
# Tensor
# --------------------------------------------------------------------------------------------


def _as_array(data, dtype=None, device=None):
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.xp_for(device) if device is not None else backend.get_xp(data)
    if isinstance(data, (list, tuple)) or np.isscalar(data):
        arr = xp.asarray(data)
        if dtype is None and arr.dtype.kind == "f":
            arr = arr.astype(np.float32)  # Python floats become float32, the default
    else:
        arr = xp.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


class Tensor:
    """An array with an optional gradient and the op that produced it.

    Attributes: ``data`` (numpy.ndarray or cupy.ndarray), ``grad`` (same shape, or None),
    ``requires_grad``, and ``shape``/``dtype``/``ndim``/``device`` mirrored from data.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "name", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor dispatches to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None, name=None):
        arr = _as_array(data, dtype, device)
        if requires_grad and arr.dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"requires_grad=True needs a floating dtype, got data of dtype {arr.dtype}")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self.name = name

    @classmethod
    def _from_op(cls, data, node):
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = node is not None
        t._node = node
        t.name = None
        return t

    # -- array facts -------------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def xp(self):
        return backend.get_xp(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad}, device={self.device!r})"

    def numpy(self) -> np.ndarray:
        """A NumPy copy-or-view of the data (copies from the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    # -- graph management ----------------------------------------------------------------------
    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor._from_op(self.data, None)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        if flag and self.data.dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"requires_grad=True needs a floating dtype, got {self.data.dtype}")
        self.requires_grad = flag
        return self

    def to(self, device: str | None = None, dtype=None) -> "Tensor":
        """Copy to 'cpu' or 'cuda' and/or cast; differentiable (the gradient moves back)."""
        from .functional import to_device  # local import: functional depends on this module

        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = out.astype(dtype)
        if device is not None and device != self.device:
            out = to_device(out, device)
        return out

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        `grad` defaults to 1 for a one-element tensor. The graph's saved arrays are released unless
        ``retain_graph``; a second backward through a released graph raises RuntimeError."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad")
        xp = self.xp
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without grad needs a one-element tensor, got shape {self.shape}; "
                    "pass grad= with the same shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"grad must have shape {self.shape}, got {tuple(grad.shape)}")
        if self._node is None:
            _accumulate_leaf(self, grad)
            return

        order = _topological_nodes(self)
        grads: dict[int, object] = {id(self): grad}
        for tensor in order:  # outputs before inputs
            node = tensor._node
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            if isinstance(node, _Freed):
                raise RuntimeError(
                    "trying to backward through the graph a second time; its saved arrays were "
                    "released by the first backward. Call backward(retain_graph=True) the first time."
                )
            in_grads = node.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for k, (inp, need, ig) in enumerate(zip(node.inputs, node.needs_grad, in_grads)):
                if not need or ig is None:
                    continue
                if inp._node is None:
                    if inp.grad is None and _aliased(ig, k, in_grads, grads):
                        ig = ig.copy()  # the leaf will own it and may be accumulated into in place
                    _accumulate_leaf(inp, ig)
                else:
                    prev = grads.get(id(inp))
                    grads[id(inp)] = ig if prev is None else prev + ig
            if not retain_graph:
                tensor._node = _Freed()
                tensor._node.inputs = ()

    # -- operators (defined in functional; bound at import time there) -------------------------


def _aliased(g, k, in_grads, pending) -> bool:
    """Does g share memory with another gradient of the same node's inputs or with a gradient still
    pending for a non-leaf? (e.g. `a + b` hands the same array to both a and b.) A leaf's .grad is
    accumulated into in place, so it must own its array alone."""
    may_share, kind = backend.get_xp(g).may_share_memory, type(g)
    for j, o in enumerate(in_grads):
        if j != k and type(o) is kind and may_share(g, o):
            return True
    return any(type(o) is kind and may_share(g, o) for o in pending.values())


def _accumulate_leaf(t: Tensor, g) -> None:
    if g.dtype != t.data.dtype:
        g = g.astype(t.data.dtype)
    if t.grad is None:
        # own the buffer: the op may have returned a view of an array it still uses
        t.grad = g.copy() if g.base is not None or g is t.data else g
    else:
        t.grad += g


def _topological_nodes(root: Tensor) -> list:
    """Non-leaf tensors reachable from root, each after every tensor that consumes it."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        node = t._node
        if node is None or isinstance(node, _Freed):
            continue
        for inp in node.inputs:
            if isinstance(inp, Tensor) and inp._node is not None and id(inp) not in seen:
                stack.append((inp, False))
    order.reverse()
    return order


def tensor(data, requires_grad: bool = False, dtype=None, device: str | None = None) -> Tensor:
    """Make a Tensor from a list, scalar, or array (Python floats become float32)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
