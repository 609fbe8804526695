"""Every differentiable op: a `Function` with `forward` and `backward`, written once with `xp`.

`xp` is NumPy or CuPy, taken from the input arrays, so the same code runs on the CPU and the GPU.
Where the compiled extension `pygpt._C` has a kernel for an op (see `backend.use_native`), the op
calls it; the NumPy expression beside it is the reference it is tested against.

Conventions: shapes in comments use B batch, T time, C channels, H heads, d head size, V vocab.
Binary ops broadcast like NumPy and undo broadcasting in backward with `unbroadcast`. Python
scalars take the tensor's dtype; two tensors of different float dtypes are a TypeError.
"""
from __future__ import annotations

import builtins as _builtins
import math
import numbers

import numpy as np

from . import backend, cuda_kernels
from .autograd import Function, Tensor, is_grad_enabled
from .random import keep_mask, keep_threshold

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _xp(a):
    return backend.get_xp(a)


def unbroadcast(grad, shape):
    """Sum `grad` over the axes that broadcasting added or stretched, giving `shape`."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _check_tensor(x, arg: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"{arg} must be a pygpt Tensor, got {type(x).__name__}")


def _lift_pair(a, b, op: str):
    """Make (a, b) Tensors of one float dtype and device; scalars adopt the other's dtype."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one argument must be a Tensor")
    if not isinstance(a, Tensor):
        a = _const(a, like=b, arg="a", op=op)
    elif not isinstance(b, Tensor):
        b = _const(b, like=a, arg="b", op=op)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: a and b must have the same dtype, got a={a.dtype} and b={b.dtype}; cast one with .astype()"
        )
    if a.device != b.device:
        raise ValueError(f"{op}: a is on {a.device!r} but b is on {b.device!r}; move one with .to()")
    return a, b


def _const(x, like: Tensor, arg: str, op: str) -> Tensor:
    xp = like.xp
    if isinstance(x, numbers.Number):
        return Tensor._from_op(xp.asarray(x, dtype=like.dtype), None)
    if isinstance(x, (np.ndarray, list, tuple)) or (xp is not np and isinstance(x, xp.ndarray)):
        arr = xp.asarray(x)
        if arr.dtype.kind == "f" or arr.dtype.kind in "iub":
            arr = arr.astype(like.dtype, copy=False)
        return Tensor._from_op(arr, None)
    raise TypeError(f"{op}: {arg} must be a Tensor, array or number, got {type(x).__name__}")


def _broadcast_shape(a, b, op):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes a={a.shape} and b={b.shape} do not broadcast") from None


def _norm_axis(axis, ndim, arg="axis"):
    """Normalise an int / tuple / None axis to a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, numbers.Integral) or not -ndim <= a < _builtins.max(ndim, 1):
            raise ValueError(f"{arg} must be in [-{ndim}, {ndim}), got {axis!r}")
        out.append(int(a) % _builtins.max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{arg} has repeated entries: {axis!r}")
    return tuple(sorted(out))


def _expand_reduced(g, in_shape, axes, keepdims):
    """Give a reduced gradient back the reduced axes (size 1) so it broadcasts to in_shape."""
    if not keepdims:
        for a in axes:
            g = _xp(g).expand_dims(g, a)
    return g


# --------------------------------------------------------------------------------------------
# elementwise binary ops
# --------------------------------------------------------------------------------------------


class Add(Function):
    """a + b"""

    name = "add"

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs_grad[0] else None, unbroadcast(g, sb) if self.needs_grad[1] else None)


class Sub(Function):
    """a - b"""

    name = "sub"

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs_grad[0] else None, unbroadcast(-g, sb) if self.needs_grad[1] else None)


class Mul(Function):
    """a * b;  da = g b,  db = g a"""

    name = "mul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        return (
            unbroadcast(g * b, a.shape) if self.needs_grad[0] else None,
            unbroadcast(g * a, b.shape) if self.needs_grad[1] else None,
        )


class Div(Function):
    """a / b;  da = g / b,  db = -g a / b²"""

    name = "div"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g / b, a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None
        return ga, gb


class Pow(Function):
    """a ** b (both tensors);  da = g b a^(b-1),  db = g a^b log a  (needs a > 0 where b varies)"""

    name = "pow"

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a**b
        return self.out

    def backward(self, g):
        a, b, out = self.a, self.b, self.out
        xp = _xp(a)
        ga = unbroadcast(g * b * a ** (b - 1), a.shape) if self.needs_grad[0] else None
        gb = None
        if self.needs_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0)
            gb = unbroadcast(g * out * log_a, b.shape)
        return ga, gb


class PowScalar(Function):
    """a ** p for a Python number p;  da = g p a^(p-1)"""

    name = "pow_scalar"

    def forward(self, a, p):
        self.a, self.p = a, p
        return a**p

    def backward(self, g):
        a, p = self.a, self.p
        if p == 2:
            return (g * (2 * a),)
        return (g * (p * a ** (p - 1)),)


def add(a, b) -> Tensor:
    a, b = _lift_pair(a, b, "add")
    _broadcast_shape(a, b, "add")
    return Add.apply(a, b)


def sub(a, b) -> Tensor:
    a, b = _lift_pair(a, b, "sub")
    _broadcast_shape(a, b, "sub")
    return Sub.apply(a, b)


def mul(a, b) -> Tensor:
    a, b = _lift_pair(a, b, "mul")
    _broadcast_shape(a, b, "mul")
    return Mul.apply(a, b)


def div(a, b) -> Tensor:
    a, b = _lift_pair(a, b, "div")
    _broadcast_shape(a, b, "div")
    return Div.apply(a, b)


def pow(a, b) -> Tensor:  # noqa: A001 - mirrors the operator
    if isinstance(b, numbers.Number) and isinstance(a, Tensor):
        return PowScalar.apply(a, p=b)
    a, b = _lift_pair(a, b, "pow")
    _broadcast_shape(a, b, "pow")
    return Pow.apply(a, b)


# --------------------------------------------------------------------------------------------
# elementwise unary ops
# --------------------------------------------------------------------------------------------


class Neg(Function):
    """-a"""

    name = "neg"

    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    """exp(a);  da = g exp(a)"""

    name = "exp"

    def forward(self, a):
        self.out = _xp(a).exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    """log(a);  da = g / a"""

    name = "log"

    def forward(self, a):
        self.a = a
        return _xp(a).log(a)

    def backward(self, g):
        return (g / self.a,)


class Tanh(Function):
    """tanh(a);  da = g (1 - tanh²)"""

    name = "tanh"

    def forward(self, a):
        self.out = _xp(a).tanh(a)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


def _sigmoid_arr(a):
    """σ(a) on an array, stable on both tails: σ(a) = ½(1 + tanh(a/2)) (Sigmoid, LSTMSequence)."""
    return 0.5 * (1 + _xp(a).tanh(0.5 * a))


class Sigmoid(Function):
    """σ(a) = 1 / (1 + exp(-a));  da = g σ (1 - σ)"""

    name = "sigmoid"

    def forward(self, a):
        self.out = _sigmoid_arr(a)
        return self.out

    def backward(self, g):
        return (g * self.out * (1 - self.out),)


class Sqrt(Function):
    """√a;  da = g / (2√a)"""

    name = "sqrt"

    def forward(self, a):
        self.out = _xp(a).sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class Relu(Function):
    """max(a, 0);  da = g [a > 0]"""

    name = "relu"

    def forward(self, a):
        self.mask = a > 0
        return a * self.mask

    def backward(self, g):
        return (g * self.mask,)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def _erf(x):
    """Elementwise erf on NumPy/CuPy arrays (SciPy/CuPy special if present, else math.erf)."""
    xp = _xp(x)
    if xp is not np:
        from cupyx.scipy.special import erf  # noqa: PLC0415

        return erf(x)
    try:
        from scipy.special import erf  # noqa: PLC0415

        return erf(x)
    except ImportError:
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)


def gelu_reference(x, approximate: str = "tanh"):
    """GELU forward in plain xp: tanh form 0.5x(1 + tanh(k(x + 0.044715x³))), or exact 0.5x(1 + erf(x/√2))."""
    xp = _xp(x)
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        return 0.5 * x * (1 + t)
    return 0.5 * x * (1 + _erf(x / math.sqrt(2.0)))


def gelu_backward_reference(x, g, approximate: str = "tanh"):
    """dGELU/dx · g.  tanh: 0.5(1+t) + 0.5x(1−t²)k(1+3·0.044715x²);  erf: Φ(x) + x φ(x)."""
    xp = _xp(x)
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
    else:
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2.0)))
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        d = cdf + x * pdf
    return g * d


def _native_ok(*arrays) -> bool:
    return all(backend.use_native(a) and a.flags.c_contiguous for a in arrays) and len(
        {a.dtype for a in arrays}
    ) == 1


class Gelu(Function):
    """GELU, tanh form (GPT) or exact erf form (BERT). Native kernel when available."""

    name = "gelu"

    def forward(self, x, approximate="tanh"):
        self.x, self.approximate = x, approximate
        if _native_ok(x):
            out = np.empty_like(x)
            backend.native.gelu_forward(x, out, approximate)
            return out
        if cuda_kernels.usable(x):  # CuPy: the CUDA kernel (pygpt._C.cuda)
            return cuda_kernels.gelu_forward(x, approximate)
        return gelu_reference(x, approximate)

    def backward(self, g):
        x = self.x
        if _native_ok(x) and backend.use_native(g) and g.dtype == x.dtype:
            g = g if g.flags.c_contiguous else g.copy()  # (ascontiguousarray would make 0-d arrays 1-d)
            dx = np.empty_like(x)
            backend.native.gelu_backward(x, g, dx, self.approximate)
            return (dx,)
        if cuda_kernels.usable(x) and cuda_kernels.usable(x, g, contiguous=False):
            return (cuda_kernels.gelu_backward(x, g, self.approximate),)
        return (gelu_backward_reference(x, g, self.approximate),)


def neg(a):
    return Neg.apply(_check_tensor(a, "a"))


def exp(a):
    return Exp.apply(_check_tensor(a, "a"))


def log(a):
    return Log.apply(_check_tensor(a, "a"))


def tanh(a):
    return Tanh.apply(_check_tensor(a, "a"))


def sigmoid(a):
    return Sigmoid.apply(_check_tensor(a, "a"))


def sqrt(a):
    return Sqrt.apply(_check_tensor(a, "a"))


def relu(a):
    return Relu.apply(_check_tensor(a, "a"))


def gelu(x, approximate: str = "tanh") -> Tensor:
    """GELU(x). approximate='tanh' (GPT-1/2) or 'none' (exact erf form, BERT)."""
    _check_tensor(x, "x")
    if approximate not in ("tanh", "none"):
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
    if x.data.dtype.kind != "f":
        raise TypeError(f"gelu: x must be floating, got {x.dtype}")
    return Gelu.apply(x, approximate=approximate)


# --------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------


class Sum(Function):
    """sum over axes;  da = g broadcast back"""

    name = "sum"

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        g = _expand_reduced(g, self.shape, self.axis, self.keepdims)
        return (_xp(g).broadcast_to(g, self.shape),)


class Mean(Function):
    """mean over axes;  da = g / n broadcast back"""

    name = "mean"

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        self.n = int(np.prod([a.shape[i] for i in axis])) if a.ndim else 1
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        g = _expand_reduced(g, self.shape, self.axis, self.keepdims)
        return (_xp(g).broadcast_to(g / self.n, self.shape),)


class Max(Function):
    """max over axes; the gradient is shared equally among tied maxima"""

    name = "max"

    def forward(self, a, axis=None, keepdims=False):
        self.a, self.axis, self.keepdims = a, axis, keepdims
        self.out = a.max(axis=axis, keepdims=True)
        return self.out if keepdims else self.out.reshape([n for i, n in enumerate(a.shape) if i not in axis])

    def backward(self, g):
        g = _expand_reduced(g, self.a.shape, self.axis, self.keepdims)
        hit = self.a == self.out
        count = hit.sum(axis=self.axis, keepdims=True)
        return (g * hit / count,)


class Var(Function):
    """variance Σ(a−μ)²/(n−ddof);  da = g 2(a−μ)/(n−ddof)"""

    name = "var"

    def forward(self, a, axis=None, keepdims=False, ddof=0):
        self.axis, self.keepdims = axis, keepdims
        n = int(np.prod([a.shape[i] for i in axis])) if a.ndim else 1
        self.denom = n - ddof
        if self.denom <= 0:
            raise ValueError(f"var: ddof={ddof} leaves no degrees of freedom for {n} elements")
        self.centered = a - a.mean(axis=axis, keepdims=True)
        out = (self.centered * self.centered).sum(axis=axis, keepdims=keepdims) / self.denom
        return out

    def backward(self, g):
        g = _expand_reduced(g, self.centered.shape, self.axis, self.keepdims)
        return (g * (2.0 / self.denom) * self.centered,)


def _reduce(cls, a, axis, keepdims, **kw):
    _check_tensor(a, "a")
    axes = _norm_axis(axis, a.ndim)
    if a.ndim == 0:
        axes = ()
    return cls.apply(a, axis=axes, keepdims=keepdims, **kw)


def sum(a, axis=None, keepdims=False):  # noqa: A001
    return _reduce(Sum, a, axis, keepdims)


def mean(a, axis=None, keepdims=False):
    return _reduce(Mean, a, axis, keepdims)


def max(a, axis=None, keepdims=False):  # noqa: A001
    if a.size == 0:
        raise ValueError("max: a is empty")
    return _reduce(Max, a, axis, keepdims)


def var(a, axis=None, keepdims=False, ddof=0):
    return _reduce(Var, a, axis, keepdims, ddof=ddof)


# --------------------------------------------------------------------------------------------
# shape ops
# --------------------------------------------------------------------------------------------


class Reshape(Function):
    name = "reshape"

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    """permute axes (a view); backward applies the inverse permutation"""

    name = "transpose"

    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return (g.transpose(np.argsort(self.axes)),)


class GetItem(Function):
    """a[index]: basic indexing is a view; integer arrays gather, and backward scatter-adds"""

    name = "getitem"

    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        xp = _xp(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic_index(self.index):
            out[self.index] = g
        else:
            _index_add(out, self.index, g)
        return (out,)


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (numbers.Integral, slice)) or i is None or i is Ellipsis for i in items)


def _index_add(target, index, values):
    """target[index] += values with repeated indices accumulated (np.add.at / cupyx.scatter_add)."""
    xp = _xp(target)
    if xp is np:
        np.add.at(target, index, values)
    else:
        xp.add.at(target, index, values)


class Concatenate(Function):
    """concatenate along axis; backward splits the gradient"""

    name = "concatenate"

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return _xp(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        bounds = np.cumsum(self.sizes)[:-1]
        return tuple(_xp(g).split(g, bounds, axis=self.axis))


class Stack(Function):
    """stack along a new axis; backward unstacks"""

    name = "stack"

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return _xp(arrays[0]).stack(arrays, axis=axis)

    def backward(self, g):
        n = g.shape[self.axis]
        return tuple(g.take(i, axis=self.axis) for i in range(n))


def reshape(a, *shape):
    _check_tensor(a, "a")
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        np.empty(a.shape, dtype=[]).reshape(shape)  # validates without allocating data
    except (ValueError, TypeError):
        raise ValueError(f"reshape: cannot reshape a of shape {a.shape} into {shape}") from None
    return Reshape.apply(a, shape=shape)


def transpose(a, axes=None):
    """Permute axes (default: reverse them). A view on the data, like NumPy."""
    _check_tensor(a, "a")
    if axes is None:
        axes = tuple(reversed(range(a.ndim)))
    axes = tuple(int(x) % _builtins.max(a.ndim, 1) for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"transpose: axes must be a permutation of range({a.ndim}), got {axes}")
    return Transpose.apply(a, axes=axes)


def swapaxes(a, i, j):
    axes = list(range(a.ndim))
    axes[i], axes[j] = axes[j], axes[i]
    return transpose(a, axes)


def getitem(a, index):
    _check_tensor(a, "a")
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, list):
        index = np.asarray(index)
    if a.xp is not np:  # CuPy wants its own arrays as indices
        move = lambda i: a.xp.asarray(i) if isinstance(i, np.ndarray) else i  # noqa: E731
        index = tuple(move(i) for i in index) if isinstance(index, tuple) else move(index)
    try:
        return GetItem.apply(a, index=index)
    except IndexError as exc:
        raise IndexError(f"index {index!r} is out of bounds for a of shape {a.shape}: {exc}") from None


def _check_same(tensors, op):
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    for i, t in enumerate(tensors):
        _check_tensor(t, f"tensors[{i}]")
        if t.dtype != tensors[0].dtype:
            raise TypeError(f"{op}: tensors[{i}] has dtype {t.dtype}, expected {tensors[0].dtype}")
        if t.device != tensors[0].device:
            raise ValueError(f"{op}: tensors[{i}] is on {t.device}, expected {tensors[0].device}")


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    _check_same(tensors, "concatenate")
    nd = tensors[0].ndim
    ax = _norm_axis(axis, nd)[0]
    for i, t in enumerate(tensors):
        if t.ndim != nd or any(t.shape[k] != tensors[0].shape[k] for k in range(nd) if k != ax):
            raise ValueError(
                f"concatenate: tensors[{i}] has shape {t.shape}, incompatible with {tensors[0].shape} along axis {ax}"
            )
    return Concatenate.apply(*tensors, axis=ax)


def stack(tensors, axis=0):
    tensors = list(tensors)
    _check_same(tensors, "stack")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensors[{i}] has shape {t.shape}, expected {tensors[0].shape}")
    ax = _norm_axis(axis, tensors[0].ndim + 1)[0]
    return Stack.apply(*tensors, axis=ax)


def split(a, sections, axis=-1):
    """Split into equal `sections` (int) or at a list of sizes; each piece is a differentiable slice."""
    _check_tensor(a, "a")
    ax = _norm_axis(axis, a.ndim)[0]
    n = a.shape[ax]
    if isinstance(sections, numbers.Integral):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: axis of size {n} cannot be split into {sections} equal sections")
        sizes = [n // sections] * int(sections)
    else:
        sizes = list(sections)
        if _builtins.sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"split: sizes {sizes} must be non-negative and add up to {n}")
    out, start = [], 0
    for s in sizes:
        index = (slice(None),) * ax + (slice(start, start + s),)
        out.append(getitem(a, index))
        start += s
    return out




# --------------------------------------------------------------------------------------------
# matmul and linear
# --------------------------------------------------------------------------------------------


def _matmul_2d(x, w):
    """x (..., k) @ w (k, n) as one 2-D GEMM (NumPy would loop over the leading axes)."""
    lead = x.shape[:-1]
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(lead + (w.shape[1],))


class MatMul(Function):
    """a @ b with NumPy semantics (batched, broadcast, 1-D promoted);  da = g bᵀ,  db = aᵀ g"""

    name = "matmul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return _matmul_2d(a, b) if b.ndim == 2 and a.ndim > 2 else a @ b

    def backward(self, g):
        a, b = self.a, self.b
        xp = _xp(g)
        if b.ndim == 2 and a.ndim > 2:  # (..., m, k) @ (k, n): two plain GEMMs
            g2 = g.reshape(-1, g.shape[-1])
            ga = (g2 @ b.T).reshape(a.shape) if self.needs_grad[0] else None
            gb = None
            if self.needs_grad[1]:
                a2 = a.reshape(-1, a.shape[-1])
                # b stored transposed (a tied output layer's W.T): write gb in that layout, so the
                # gradient reaching W is contiguous and needs no transposing copy
                gb = (g2.T @ a2).T if b.flags.f_contiguous and not b.flags.c_contiguous else a2.T @ g2
            return ga, gb
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        if b.ndim == 1:
            g = xp.expand_dims(g, -1)
        ga = gb = None
        if self.needs_grad[0]:
            ga = unbroadcast(g @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(xp.swapaxes(a2, -1, -2) @ g, b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x @ W + b with W stored (in, out) as in GPT-2's Conv1D.

    Shapes: x (..., in), W (in, out), b (out,) -> y (..., out). Backward uses 2-D GEMMs:
    dx = g Wᵀ, dW = x₂ᵀ g₂, db = Σ g."""

    name = "linear"

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        y = _matmul_2d(x, w)
        if b is not None:
            y += b
        return y

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        gx = (g2 @ w.T).reshape(x.shape) if self.needs_grad[0] else None
        gw = _weight_grad(x.reshape(-1, x.shape[-1]), g2) if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def _weight_grad(x2, g2):
    """x₂ᵀ g₂ (in, out) for x₂ (N, in), g₂ (N, out). OpenBLAS threads a product with few output rows
    and a long inner dimension badly (each of its K blocks is a hand-off between threads; on a loaded
    2-core box 256 × 768 ran at half the speed of 768 × 256), so the longer side goes first: for
    in < out this computes g₂ᵀ x₂ (out, in). NumPy writes it straight into the transpose of a C-ordered
    (in, out) array (BLAS takes the column-major output as a flag), so the gradient is contiguous;
    returning the transposed view instead made the leaf gradient copy it, a strided copy that cost
    ~20 ms per 768 × 3072 weight (GPT-2's c_attn and c_fc: ~0.45 s of a 14 s step)."""
    if x2.shape[1] < g2.shape[1]:
        if isinstance(x2, np.ndarray) and isinstance(g2, np.ndarray):
            gw = np.empty((x2.shape[1], g2.shape[1]), dtype=np.result_type(x2, g2))  # (in, out)
            np.matmul(g2.T, x2, out=gw.T)
            return gw
        return (g2.T @ x2).T
    return x2.T @ g2


def matmul(a, b) -> Tensor:
    a, b = _lift_pair(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: a and b must have at least one dimension")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul: a's last dimension ({ka}) must equal b's contracted dimension ({kb}); a={a.shape}, b={b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of a={a.shape} and b={b.shape} do not broadcast") from None
    return MatMul.apply(a, b)


def linear(x, weight, bias=None) -> Tensor:
    """x @ weight + bias, weight shaped (in, out)."""
    _check_tensor(x, "x")
    _check_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (in, out), got shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: x's last dimension must be {weight.shape[0]}, got x of shape {x.shape}")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: x has dtype {x.dtype} but weight has {weight.dtype}")
    if bias is None:
        return Linear.apply(x, weight)
    _check_tensor(bias, "bias")
    if bias.shape != (weight.shape[1],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[1]},), got {bias.shape}")
    return Linear.apply(x, weight, bias)


# --------------------------------------------------------------------------------------------
# recurrence
# --------------------------------------------------------------------------------------------


class LSTMSequence(Function):
    """One LSTM layer over a whole sequence (gates i, f, g, o as torch orders them):

        z_t = x_t W_ih + b + h_{t-1} W_hh                         (B, 4H)
        i, f, o = σ(z_i), σ(z_f), σ(z_o);   g = tanh(z_g)
        c_t = f ∘ c_{t-1} + i ∘ g;          h_t = o ∘ tanh(c_t)

    x (B, T, in), W_ih (in, 4H), W_hh (H, 4H), b (4H,), h0 and c0 (B, H) -> (B, T, 2H) holding
    [h_t | c_t] (the state after step t is ``out[:, t]``). One node instead of ~15 per step: the
    input projection is one GEMM over all steps, and backward (BPTT) collects dz for every step
    so that dW_ih, dW_hh, db and dx are one GEMM or sum each; only h_{t-1} W_hh (forward) and
    dz_t W_hhᵀ (backward) stay per step. Saves the gates and c_t: O(B·T·H) memory.
    Backward, with dh_t, dc_t the gradients reaching step t (from the output and from t + 1):
        dc = dc_t + dh_t o (1 - tanh² c_t);  dz_i = dc g i(1-i),  dz_f = dc c_{t-1} f(1-f),
        dz_g = dc i (1 - g²),  dz_o = dh_t tanh(c_t) o(1-o);  dh_{t-1} += dz W_hhᵀ,  dc_{t-1} += dc f
    """

    name = "lstm"

    def forward(self, x, w_ih, w_hh, b, h0, c0):
        xp = _xp(x)
        B, T, _ = x.shape
        H = w_hh.shape[0]
        z_in = _matmul_2d(x, w_ih) + b                      # (B, T, 4H): every step's input part
        gates = xp.empty((B, T, 4 * H), dtype=x.dtype)      # i, f, g, o after their nonlinearity
        out = xp.empty((B, T, 2 * H), dtype=x.dtype)        # [h_t | c_t]
        tanh_c = xp.empty((B, T, H), dtype=x.dtype)
        h, c = h0, c0
        for t in range(T):
            z = z_in[:, t] + h @ w_hh
            gt = gates[:, t]
            gt[:, :2 * H] = _sigmoid_arr(z[:, :2 * H])
            gt[:, 2 * H:3 * H] = xp.tanh(z[:, 2 * H:3 * H])
            gt[:, 3 * H:] = _sigmoid_arr(z[:, 3 * H:])
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            c = f * c + i * g
            tanh_c[:, t] = xp.tanh(c)
            h = o * tanh_c[:, t]
            out[:, t, :H], out[:, t, H:] = h, c
        self.saved = (x, w_ih, w_hh, h0, c0, gates, tanh_c, out)
        return out

    def backward(self, grad):
        x, w_ih, w_hh, h0, c0, gates, tanh_c, out = self.saved
        xp = _xp(grad)
        B, T, _ = x.shape
        H = w_hh.shape[0]
        dz = xp.empty_like(gates)                           # (B, T, 4H)
        dh_next = xp.zeros_like(h0)
        dc_next = xp.zeros_like(c0)
        for t in range(T - 1, -1, -1):
            gt = gates[:, t]
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            c_prev = out[:, t - 1, H:] if t > 0 else c0
            tc = tanh_c[:, t]
            dh = grad[:, t, :H] + dh_next
            dc = grad[:, t, H:] + dc_next + dh * o * (1 - tc * tc)
            d = dz[:, t]
            d[:, :H] = dc * g * i * (1 - i)
            d[:, H:2 * H] = dc * c_prev * f * (1 - f)
            d[:, 2 * H:3 * H] = dc * i * (1 - g * g)
            d[:, 3 * H:] = dh * tc * o * (1 - o)
            dh_next = d @ w_hh.T
            dc_next = dc * f
        dz2 = dz.reshape(B * T, 4 * H)
        need = self.needs_grad
        gx = (dz2 @ w_ih.T).reshape(x.shape) if need[0] else None
        gw_ih = _weight_grad(x.reshape(B * T, -1), dz2) if need[1] else None
        gw_hh = None
        if need[2]:  # h_{t-1} for every step: h0, then the outputs of steps 0 .. T-2
            h_prev = xp.concatenate([h0[:, None], out[:, :T - 1, :H]], axis=1).reshape(B * T, H)
            gw_hh = _weight_grad(h_prev, dz2)
        gb = dz2.sum(axis=0) if need[3] else None
        return gx, gw_ih, gw_hh, gb, dh_next if need[4] else None, dc_next if need[5] else None


def lstm(x, weight_ih, weight_hh, bias, h0, c0) -> Tensor:
    """One LSTM layer over x (B, T, in) from state (h0, c0) (B, H): (B, T, 2H) = [h_t | c_t] per step
    (see LSTMSequence). weight_ih (in, 4H), weight_hh (H, 4H), bias (4H,), gates i, f, g, o."""
    names = ("x", "weight_ih", "weight_hh", "bias", "h0", "c0")
    args = [_check_tensor(a, n) for a, n in zip((x, weight_ih, weight_hh, bias, h0, c0), names)]
    x, weight_ih, weight_hh, bias, h0, c0 = args
    if weight_hh.ndim != 2 or weight_hh.shape[1] != 4 * weight_hh.shape[0]:
        raise ValueError(f"lstm: weight_hh must be (H, 4H), got shape {weight_hh.shape}")
    H = weight_hh.shape[0]
    if x.ndim != 3 or x.shape[1] == 0:
        raise ValueError(f"lstm: x must be (batch, time >= 1, in), got shape {x.shape}")
    B, _, n_in = x.shape
    expected = {"weight_ih": (n_in, 4 * H), "bias": (4 * H,), "h0": (B, H), "c0": (B, H)}
    for n, a in zip(names, args):
        if n in expected and tuple(a.shape) != expected[n]:
            raise ValueError(f"lstm: {n} must have shape {expected[n]}, got {tuple(a.shape)}")
        if a.dtype != x.dtype:
            raise TypeError(f"lstm: {n} has dtype {a.dtype} but x has {x.dtype}")
    return LSTMSequence.apply(*args)


# --------------------------------------------------------------------------------------------
# softmax family, layer norm, embedding, dropout, masking
# --------------------------------------------------------------------------------------------


class Softmax(Function):
    """y = exp(x − max) / Σ exp(x − max);  dx = y (g − Σ g y)"""

    name = "softmax"

    def forward(self, x, axis=-1):
        xp = _xp(x)
        self.axis = axis
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        self.out = e
        return e

    def backward(self, g):
        y = self.out
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """y = x − logΣexp(x);  dx = g − softmax(x) Σ g"""

    name = "log_softmax"

    def forward(self, x, axis=-1):
        xp = _xp(x)
        self.axis = axis
        m = x.max(axis=axis, keepdims=True)
        lse = xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m
        self.out = x - lse
        return self.out

    def backward(self, g):
        xp = _xp(g)
        return (g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True),)


def softmax(x, axis=-1):
    _check_tensor(x, "x")
    return Softmax.apply(x, axis=_norm_axis(axis, x.ndim)[0])


def log_softmax(x, axis=-1):
    _check_tensor(x, "x")
    return LogSoftmax.apply(x, axis=_norm_axis(axis, x.ndim)[0])


class LayerNorm(Function):
    """y = (x − μ) / √(σ² + eps) · w + b over the last axis.

    Backward with x̂ the normalised input and r = 1/√(σ²+eps):
    dx = r (g w − mean(g w) − x̂ mean(g w x̂)),  dw = Σ g x̂,  db = Σ g.

    Native kernel (pygpt._C.layer_norm_*) for C-contiguous NumPy inputs: the forward saves x and the
    per-row (μ, r) instead of x̂, and the backward recomputes x̂ in its single pass over (x, g)."""

    name = "layer_norm"

    def forward(self, x, w, b, eps=1e-5):
        self.w = w
        if _native_ok(x, w, b) and x.ndim >= 1 and x.shape[-1] >= 1 and isinstance(eps, (float, int)):
            out = np.empty_like(x)
            self.mean = np.empty(x.shape[:-1], dtype=x.dtype)  # (...,)
            self.rstd = np.empty(x.shape[:-1], dtype=x.dtype)
            backend.native.layer_norm_forward(x, w, b, out, self.mean, self.rstd, float(eps))
            self.x, self.xhat = x, None
            return out
        if cuda_kernels.usable(x, w, b) and x.ndim >= 1 and x.shape[-1] >= 1 and isinstance(eps, (float, int)):
            out, self.mean, self.rstd = cuda_kernels.layer_norm_forward(x, w, b, float(eps))
            self.x, self.xhat = x, None
            return out
        xp = _xp(x)
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        self.rstd = 1.0 / xp.sqrt(var + eps)
        self.xhat = xc * self.rstd
        return self.xhat * w + b

    def backward(self, g):
        if self.xhat is None:  # native forward: x, mean, rstd saved
            x, w = self.x, self.w
            if cuda_kernels.is_cupy(x):  # the CUDA kernels' forward (CuPy)
                return cuda_kernels.layer_norm_backward(x, w, self.mean, self.rstd, g, self.needs_grad)
            g = np.ascontiguousarray(g, dtype=x.dtype)
            gx = np.empty_like(x) if self.needs_grad[0] else None
            gw = np.empty_like(w) if self.needs_grad[1] else None
            gb = np.empty_like(w) if self.needs_grad[2] else None
            backend.native.layer_norm_backward(x, w, self.mean, self.rstd, g, gx, gw, gb)
            return gx, gw, gb
        xhat, rstd, w = self.xhat, self.rstd, self.w
        gx = gw = gb = None
        if self.needs_grad[0]:
            gxhat = g * w
            gx = rstd * (
                gxhat - gxhat.mean(axis=-1, keepdims=True) - xhat * (gxhat * xhat).mean(axis=-1, keepdims=True)
            )
        lead = tuple(range(g.ndim - 1))
        if self.needs_grad[1]:
            gw = (g * xhat).sum(axis=lead)
        if self.needs_grad[2]:
            gb = g.sum(axis=lead)
        return gx, gw, gb


def layer_norm(x, weight, bias, eps: float = 1e-5):
    _check_tensor(x, "x")
    c = x.shape[-1] if x.ndim else None
    for arg, t in (("weight", weight), ("bias", bias)):
        _check_tensor(t, arg)
        if t.shape != (c,):
            raise ValueError(f"layer_norm: {arg} must have shape ({c},) to match x {x.shape}, got {t.shape}")
        if t.dtype != x.dtype:
            raise TypeError(f"layer_norm: {arg} has dtype {t.dtype}, x has {x.dtype}")
    return LayerNorm.apply(x, weight, bias, eps=eps)


class Embedding(Function):
    """out = W[ids];  dW = scatter-add of g at ids (native: pygpt._C.embedding_backward, else np.add.at)"""

    name = "embedding"

    def forward(self, w, ids):
        self.wshape, self.ids = w.shape, ids
        return w[ids]

    def backward(self, g):
        xp = _xp(g)
        # A leaf table that already holds a gradient (the tied output layer's, which backward reaches
        # first) takes the scatter-add in place: no (V, C) zeros, no dense add of mostly-zero rows.
        w = self.inputs[0]
        acc = w.grad if isinstance(w, Tensor) and w._node is None else None
        into = (acc is not None and type(acc) is type(g) and acc.shape == self.wshape and acc.dtype == g.dtype
                and acc.flags.c_contiguous and acc.flags.writeable)
        gw = acc if into else xp.zeros(self.wshape, dtype=g.dtype)
        if backend.use_native(g) and isinstance(self.ids, np.ndarray):
            ids = np.ascontiguousarray(self.ids.reshape(-1), dtype=np.int64)
            g2 = np.ascontiguousarray(g.reshape(-1, self.wshape[1]))
            backend.native.embedding_backward(ids, g2, gw)
        else:
            _index_add(gw, self.ids.reshape(-1), g.reshape(-1, self.wshape[1]))
        return (None if into else gw), None


def _int_ids(ids, arg, like=None):
    """Integer index array on the device of `like` (ids may come as lists, NumPy or CuPy)."""
    if isinstance(ids, Tensor):
        ids = ids.data
    xp = like.xp if like is not None else backend.get_xp(ids)
    ids = xp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{arg} must hold integers, got dtype {ids.dtype}")
    return ids


def embedding(weight, ids) -> Tensor:
    """Rows of weight (V, C) at integer ids (any shape) -> (*ids.shape, C)."""
    _check_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got {weight.shape}")
    ids = _int_ids(ids, "ids", like=weight)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= weight.shape[0]):
        raise ValueError(
            f"embedding: ids must be in [0, {weight.shape[0]}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return Embedding.apply(weight, ids)


class Dropout(Function):
    """y = x · keep / (1 − p), keep drawn from the counter-based RNG (same bits on CPU and GPU)"""

    name = "dropout"

    def forward(self, x, p, key):
        self.p, self.key = p, key
        self.scale = x.dtype.type(1.0 / (1.0 - p))
        self.scale_mask = None
        if _native_ok(x):  # native: the mask is regenerated in backward from (key, i), never stored
            out = np.empty_like(x)
            backend.native.dropout(x, out, key, keep_threshold(p), float(self.scale))
            return out
        if cuda_kernels.usable(x):  # CuPy: the CUDA kernel, the same bits; the mask is never stored either
            return cuda_kernels.dropout(x, key, keep_threshold(p), float(self.scale))
        self.scale_mask = keep_mask(key, x.shape, p, xp=_xp(x)).astype(x.dtype) * self.scale
        return x * self.scale_mask

    def backward(self, g):
        if self.scale_mask is None:
            if backend.use_native(g) and g.dtype == self.scale.dtype:
                g = g if g.flags.c_contiguous else g.copy()
                out = np.empty_like(g)
                backend.native.dropout(g, out, self.key, keep_threshold(self.p), float(self.scale))
                return (out,)
            if cuda_kernels.usable(g, contiguous=False) and g.dtype == self.scale.dtype:
                return (cuda_kernels.dropout(g, self.key, keep_threshold(self.p), float(self.scale)),)
            self.scale_mask = keep_mask(self.key, g.shape, self.p, xp=_xp(g)).astype(self.scale.dtype) * self.scale
        return (g * self.scale_mask,)


def dropout(x, p: float, generator=None, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale survivors by 1/(1−p).

    `generator` is a `pygpt.random.Generator` (explicitly seeded); identity when not training or p == 0."""
    _check_tensor(x, "x")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if generator is None:
        raise ValueError("dropout: a generator (pygpt.random.Generator) is required when training with p > 0")
    return Dropout.apply(x, p=p, key=generator.next_key())


class Where(Function):
    """cond ? a : b;  da = g·cond,  db = g·(1 − cond)"""

    name = "where"

    def forward(self, cond, a, b):
        self.cond, self.sa, self.sb = cond, a.shape, b.shape
        return _xp(a).where(cond, a, b)

    def backward(self, g):
        z = _xp(g).zeros((), dtype=g.dtype)
        ga = unbroadcast(_xp(g).where(self.cond, g, z), self.sa) if self.needs_grad[1] else None
        gb = unbroadcast(_xp(g).where(self.cond, z, g), self.sb) if self.needs_grad[2] else None
        return None, ga, gb


def _bool_mask(mask, arg, like=None):
    if isinstance(mask, Tensor):
        mask = mask.data
    xp = like.xp if like is not None else backend.get_xp(mask)
    mask = xp.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"{arg} must be boolean, got dtype {mask.dtype}")
    return mask


def where(cond, a, b) -> Tensor:
    a, b = _lift_pair(a, b, "where")
    cond = _bool_mask(cond, "cond", like=a)
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: cond {cond.shape}, a {a.shape} and b {b.shape} do not broadcast") from None
    return Where.apply(cond, a, b)


def masked_fill(x, mask, value: float) -> Tensor:
    """x with `value` where mask is True (mask broadcasts to x)."""
    _check_tensor(x, "x")
    mask = _bool_mask(mask, "mask", like=x)
    try:
        if np.broadcast_shapes(mask.shape, x.shape) != x.shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} must broadcast to x's shape {x.shape}") from None
    fill = Tensor._from_op(x.xp.asarray(value, dtype=x.dtype), None)
    return Where.apply(mask, fill, x)


# --------------------------------------------------------------------------------------------
# cross-entropy (fused log-softmax + NLL)
# --------------------------------------------------------------------------------------------


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class CrossEntropy(Function):
    """mean over kept rows of (logΣexp(z) − z[target]);  dz = (softmax(z) − onehot) / n_kept.

    The forward keeps only the per-row log-sum-exp; backward recomputes softmax from it, so the
    (N, V) probability matrix is materialised once, in backward, and becomes the gradient. The native
    kernel (pygpt._C.cross_entropy_*) reads the logits once in forward (no temporary at all) and
    writes the gradient in one pass in backward.

    overwrite_logits=True: backward writes the gradient into the logits' own buffer instead of a new
    (N, V) array (412 MB at 8 × 256 × 50257 in float32, and its page faults every step), so the logits
    tensor holds the gradient afterwards; backward can then run only once."""

    name = "cross_entropy"

    def forward(self, logits, targets, ignore_index=-100, reduction="mean", overwrite_logits=False):
        xp = _xp(logits)
        z = logits.reshape(-1, logits.shape[-1])  # (N, V)
        t = targets.reshape(-1)
        keep = t != ignore_index
        self.shape, self.reduction, self.native = logits.shape, reduction, False
        self.overwrite = bool(overwrite_logits) and bool(z.flags.writeable) and bool(z.flags.c_contiguous)
        if _native_ok(logits) and z.shape[1] >= 1 and _INT64_MIN <= ignore_index <= _INT64_MAX:
            # one read of the logits: per-row max and log-sum-exp, and the loss; no (N, V) temporary
            t = np.ascontiguousarray(t, dtype=np.int64)
            losses = np.empty(t.shape, dtype=z.dtype)  # (N,)
            lse = np.empty(t.shape, dtype=z.dtype)
            backend.native.cross_entropy_forward(z, t, losses, lse, int(ignore_index))
            self.z, self.lse, self.t, self.keep, self.native = z, lse, t, keep, True
            self.ignore_index = int(ignore_index)
        elif cuda_kernels.usable(z) and z.shape[1] >= 1 and _INT64_MIN <= ignore_index <= _INT64_MAX:
            losses, lse, t = cuda_kernels.cross_entropy_forward(z, t, int(ignore_index))  # CuPy: CUDA kernel
            self.z, self.lse, self.t, self.keep, self.native = z, lse, t, keep, "cuda"
            self.ignore_index = int(ignore_index)
        else:
            safe_t = xp.where(keep, t, 0)
            m = z.max(axis=1, keepdims=True)
            lse = xp.log(xp.exp(z - m).sum(axis=1, keepdims=True)) + m  # (N, 1)
            picked = xp.take_along_axis(z, safe_t[:, None], axis=1)
            losses = (lse - picked)[:, 0] * keep
            self.z, self.lse, self.t, self.keep = z, lse, safe_t, keep
        if reduction == "none":
            return losses.reshape(targets.shape)
        if reduction == "sum":
            return losses.sum()
        self.n = int(keep.sum())
        return losses.sum() / _builtins.max(self.n, 1)

    def backward(self, g):
        if self.overwrite:
            if getattr(self, "consumed", False):
                raise RuntimeError("cross_entropy(overwrite_logits=True): backward already replaced the logits "
                                   "with their gradient; it can run only once")
            self.consumed = True
        if self.native == "cuda":  # the same on the GPU; the scale stays on the device (no sync)
            if self.reduction == "none":
                row_scale = g.reshape(-1)
            else:
                row_scale = g / _builtins.max(self.n, 1) if self.reduction == "mean" else g
            grad = cuda_kernels.cross_entropy_backward(self.z, self.t, self.lse, self.z if self.overwrite else None,
                                                       row_scale, self.ignore_index)
            return grad.reshape(self.shape), None
        if self.native:  # one pass: (softmax − onehot) · scale written straight into the gradient
            z = self.z
            grad = z if self.overwrite else np.empty_like(z)
            row_scale, scale = None, 1.0
            if self.reduction == "none":
                row_scale = np.ascontiguousarray(g.reshape(-1), dtype=z.dtype)
            else:
                scale = float(g / _builtins.max(self.n, 1) if self.reduction == "mean" else g)
            backend.native.cross_entropy_backward(z, self.t, self.lse, grad, scale, row_scale, self.ignore_index)
            return grad.reshape(self.shape), None
        xp = _xp(g)
        if self.overwrite:
            grad = xp.exp(xp.subtract(self.z, self.lse, out=self.z), out=self.z)  # softmax, in place
        else:
            grad = xp.exp(self.z - self.lse)  # softmax, (N, V)
        rows = xp.arange(grad.shape[0])
        grad[rows, self.t] -= 1
        if self.reduction == "none":
            grad *= (g.reshape(-1) * self.keep)[:, None]
        else:
            scale = g / _builtins.max(self.n, 1) if self.reduction == "mean" else g
            grad *= self.keep[:, None] * scale
        return grad.reshape(self.shape), None


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean",
                  overwrite_logits: bool = False) -> Tensor:
    """Cross-entropy of logits (..., V) against integer targets (...). Rows whose target equals
    ignore_index contribute nothing; 'mean' divides by the number of kept rows (0 if none).

    overwrite_logits=True lets backward write the gradient into the logits' buffer (saves an (N, V)
    allocation; afterwards logits.data holds the gradient). For a training step whose logits are not
    read after backward."""
    _check_tensor(logits, "logits")
    t = _int_ids(targets, "targets", like=logits)
    if logits.ndim < 1 or t.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets must have shape {logits.shape[:-1]}, got {t.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    v = logits.shape[-1]
    kept = t[t != ignore_index]
    if kept.size and (int(kept.min()) < 0 or int(kept.max()) >= v):
        raise ValueError(f"cross_entropy: targets must be in [0, {v}) or equal ignore_index={ignore_index}")
    return CrossEntropy.apply(logits, t, ignore_index=ignore_index, reduction=reduction,
                              overwrite_logits=overwrite_logits)


# Reused scratch for temporaries that never leave an op (the classifier's logits below): one flat
# NumPy buffer per dtype, grown to the largest request and kept, so a training step does not fault
# hundreds of MB of fresh pages in every time. Taken out while in use, so nested or concurrent
# callers get their own. `clear_workspace()` returns the memory.
_WORKSPACE: dict = {}


def _take_workspace(n: int, dtype) -> np.ndarray:
    buf = _WORKSPACE.pop(np.dtype(dtype), None)
    if buf is None or buf.size < n:
        del buf  # drop the small one before allocating the big one
        buf = np.empty(n, dtype=dtype)
    return buf


def _give_back_workspace(buf: np.ndarray) -> None:
    old = _WORKSPACE.get(buf.dtype)
    if old is None or old.size < buf.size:
        _WORKSPACE[buf.dtype] = buf


def clear_workspace() -> None:
    """Release the scratch buffers kept between calls (see linear_cross_entropy)."""
    _WORKSPACE.clear()


_LCE_BUDGET_BYTES = 512 << 20  # logits rows computed at once: at most this many bytes (one chunk usually)


class LinearCrossEntropy(Function):
    """cross_entropy(x Wᵀ, targets) for a classifier stored (V, C) like an embedding table (the tied
    output layer), fused: the (N, V) logits live only inside the forward.

    Forward, per chunk of rows: logits z = x Wᵀ into a reused workspace; per-row log-sum-exp and loss;
    when a gradient is wanted, dz = (softmax(z) − onehot)·s in place (s = 1/n_kept for 'mean', 1 for
    'sum'; ignored rows 0), and from it dx = dz W and dW = dzᵀ x. Backward only multiplies them by g.
    The same values as matmul(x, W.T) + cross_entropy up to summation order, at the same GEMM count,
    without allocating, faulting in and re-reading the (N, V) logits and their gradient.
    A second backward (retain_graph) recomputes the gradients from the saved x and W."""

    name = "linear_cross_entropy"

    def forward(self, x, w, targets, ignore_index=-100, reduction="mean", want=(True, True)):
        C, V = x.shape[-1], w.shape[0]
        self.x_shape, self.reduction, self.ignore_index = x.shape, reduction, int(ignore_index)
        self.x2 = x.reshape(-1, C)  # (N, C)
        self.w = w  # (V, C)
        self.t = targets.reshape(-1)
        keep = self.t != ignore_index
        self.n = int(keep.sum())
        self.want = tuple(bool(b) for b in want)
        loss = self._run(self.want)
        return loss.sum() if reduction == "sum" else loss.sum() / _builtins.max(self.n, 1)

    def _run(self, want):
        """Per-row losses (N,); with want=(wx, ww) also sets self.gx (N, C) / self.gw (V, C)."""
        x2, w, t = self.x2, self.w, self.t
        xp = _xp(x2)
        N, C = x2.shape
        V = w.shape[0]
        dt = np.result_type(x2.dtype, w.dtype)
        s = 1.0 / _builtins.max(self.n, 1) if self.reduction == "mean" else 1.0
        losses = xp.empty(N, dtype=dt)
        self.gx = xp.empty((N, C), dtype=dt) if want[0] else None
        self.gw = None
        native = backend.use_native(x2) and _INT64_MIN <= self.ignore_index <= _INT64_MAX
        if native:
            t = np.ascontiguousarray(t, dtype=np.int64)
        rows = _builtins.max(1, _builtins.min(N, _LCE_BUDGET_BYTES // _builtins.max(1, V * dt.itemsize)))
        ws = _take_workspace(rows * V, dt) if xp is np else None
        tmp = None
        try:
            for r0 in range(0, N, rows):
                r1 = _builtins.min(N, r0 + rows)
                xc = x2[r0:r1]
                z = ws[: (r1 - r0) * V].reshape(r1 - r0, V) if ws is not None else xp.empty((r1 - r0, V), dt)
                xp.matmul(xc, w.T, out=z)  # (R, V) logits
                if native:  # one call over all rows (one parallel region), each row read from memory once
                    lse = np.empty(r1 - r0, dtype=dt)
                    if want[0] or want[1]:  # loss and dz in place, one exp per element
                        backend.native.cross_entropy_fused(z, t[r0:r1], losses[r0:r1], lse, s, self.ignore_index)
                    else:
                        backend.native.cross_entropy_forward(z, t[r0:r1], losses[r0:r1], lse, self.ignore_index)
                else:
                    tc = t[r0:r1]
                    keep = tc != self.ignore_index
                    safe = xp.where(keep, tc, 0)
                    m = z.max(axis=1, keepdims=True)
                    lse = xp.log(xp.exp(z - m).sum(axis=1, keepdims=True)) + m  # (R, 1)
                    picked = xp.take_along_axis(z, safe[:, None], axis=1)
                    losses[r0:r1] = (lse - picked)[:, 0] * keep
                    if want[0] or want[1]:
                        xp.exp(xp.subtract(z, lse, out=z), out=z)  # softmax, in place
                        z[xp.arange(r1 - r0), safe] -= 1
                        z *= (keep * s).astype(dt)[:, None]
                if want[0]:
                    xp.matmul(z, w, out=self.gx[r0:r1])  # dx = dz W  (R, C)
                if want[1]:
                    if self.gw is None:
                        self.gw = xp.matmul(z.T, xc)  # dW = dzᵀ x  (V, C), contiguous like W
                    else:
                        tmp = xp.matmul(z.T, xc, out=tmp)
                        self.gw += tmp
        finally:
            if ws is not None:
                _give_back_workspace(ws)
        return losses

    def backward(self, g):
        if self.gx is None and self.gw is None:  # released by an earlier backward: recompute
            self._run(self.needs_grad)
        gx, gw = self.gx, self.gw
        self.gx = self.gw = None  # handed over: a leaf gradient may later be accumulated into in place
        scale = float(g)  # a Python float keeps the arrays' dtype
        if scale != 1.0:
            for a in (gx, gw):
                if a is not None:
                    a *= scale
        return (gx.reshape(self.x_shape) if gx is not None and self.needs_grad[0] else None,
                gw if self.needs_grad[1] else None)


def linear_cross_entropy(x, weight, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """cross_entropy(matmul(x, weight.T), targets) without materialising the logits: x (..., C),
    weight (V, C) (e.g. a tied embedding table), integer targets (...). reduction 'mean' or 'sum'
    ('none' falls back to the unfused ops). Gradients are computed during the forward when enabled
    (see LinearCrossEntropy)."""
    _check_tensor(x, "x")
    _check_tensor(weight, "weight")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: weight must be (V, C) with C = x.shape[-1]; got x {x.shape}, "
                         f"weight {weight.shape}")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear_cross_entropy: x has dtype {x.dtype} but weight has {weight.dtype}")
    if reduction == "none":
        return cross_entropy(matmul(x, transpose(weight)), targets, ignore_index=ignore_index, reduction="none")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"linear_cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = _int_ids(targets, "targets", like=x)
    if t.shape != x.shape[:-1]:
        raise ValueError(f"linear_cross_entropy: targets must have shape {x.shape[:-1]}, got {t.shape}")
    v = weight.shape[0]
    kept = t[t != ignore_index]
    if kept.size and (int(kept.min()) < 0 or int(kept.max()) >= v):
        raise ValueError(f"linear_cross_entropy: targets must be in [0, {v}) or equal ignore_index={ignore_index}")
    grad = is_grad_enabled()
    want = (grad and x.requires_grad, grad and weight.requires_grad)
    return LinearCrossEntropy.apply(x, weight, targets=t, ignore_index=ignore_index, reduction=reduction, want=want)


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------


def attention_reference(q, k, v, causal=True, key_mask=None, dropout_p=0.0, dropout_key=0):
    """Softmax attention in plain xp; returns (out, probabilities P, dropout scale mask or None).

    q (B, H, Tq, d), k and v (B, H, Tk, d); key_mask (B, Tk) bool, True = attend.
    Rows with no key to attend to give zero output. Causal masks keys j > i + (Tk − Tq)."""
    xp = _xp(q)
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    s = (q @ xp.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(d))  # (B, H, Tq, Tk)
    allowed = xp.ones((1, 1, Tq, Tk), dtype=bool)
    if causal:
        allowed = allowed & (xp.arange(Tk)[None, :] <= xp.arange(Tq)[:, None] + (Tk - Tq))[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    s = xp.where(allowed, s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    p = xp.exp(s - m)
    denom = p.sum(axis=-1, keepdims=True)
    p = p / xp.where(denom > 0, denom, 1)
    drop = None
    if dropout_p > 0:
        drop = keep_mask(dropout_key, (B, H, Tq, Tk), dropout_p, xp=xp).astype(q.dtype) * q.dtype.type(
            1.0 / (1.0 - dropout_p)
        )
        out = (p * drop) @ v
    else:
        out = p @ v
    return out, p, drop


def _attention_native_ok(q, k, v) -> bool:
    """The fused C++ kernel (pygpt._C.attention_*) serves NumPy float32/float64 with head dim 1..256
    and at least 8 queries: its score tiles are 8 queries wide, so for a decoding step (Tq = 1) the
    reference's BLAS matrix-vector products are faster (and store only (B, H, Tq, Tk) = O(Tk))."""
    return (backend.use_native(q) and isinstance(k, np.ndarray) and isinstance(v, np.ndarray)
            and k.dtype == q.dtype == v.dtype and 1 <= q.shape[-1] <= 256 and q.shape[2] >= 8)


def _attention_view(a, dtype):
    """`a` itself when the kernel can read it through its strides (non-negative, last dimension
    contiguous, aligned: e.g. q/k/v views of a packed (B, T, 3, H, d) projection), else a copy."""
    ok = (a.dtype == dtype and a.flags.aligned and (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize)
          and all(st >= 0 or n <= 1 for st, n in zip(a.strides, a.shape)))
    return a if ok else np.ascontiguousarray(a, dtype=dtype)


class Attention(Function):
    """softmax(q kᵀ/√d + mask) v, with optional dropout on the probabilities.

    Backward: with P the probabilities and P' = P∘drop,
    dV = P'ᵀ dO,  dP = (dO Vᵀ)∘drop,  dS = P∘(dP − rowsum(dP∘P)),  dQ = dS K/√d,  dK = dSᵀ Q/√d.

    Native path (NumPy float32/float64, see _attention_native_ok): the fused kernel reads q, k, v
    through their strides (no copy for views), saves q, k, v, out and the per-row log-sum-exp
    (B·H·Tq numbers, never the (Tq, Tk) probabilities) and its backward recomputes P from them;
    the dropout mask is regenerated from (dropout_key, element index), as in pygpt.random. The
    output is a (B, H, Tq, d) view of a (B, Tq, H, d) array, so merging the heads afterwards
    (transpose(0, 2, 1, 3).reshape(B, Tq, H·d)) needs no copy. Otherwise attention_reference runs."""

    name = "attention"

    def forward(self, q, k, v, causal=True, key_mask=None, dropout_p=0.0, dropout_key=0):
        self.causal, self.dropout_p, self.dropout_key = bool(causal), float(dropout_p), int(dropout_key)
        self.on_cuda = False
        if cuda_kernels.attention_ok(q, k, v):  # CuPy float32: the fused CUDA kernel, same contract
            out, self.lse, self.q, self.k, self.v, self.key_mask = cuda_kernels.attention_forward(
                q, k, v, self.causal, key_mask, self.dropout_p, self.dropout_key)
            self.out, self.on_cuda = out, True
            return out
        if _attention_native_ok(q, k, v):
            q, k, v = (_attention_view(a, q.dtype) for a in (q, k, v))
            B, H, Tq, d = q.shape
            out = np.empty((B, Tq, H, d), dtype=q.dtype).transpose(0, 2, 1, 3)  # (B, H, Tq, d)
            lse = np.empty((B, H, Tq), dtype=q.dtype)
            mask = None if key_mask is None else np.ascontiguousarray(key_mask, dtype=bool)
            backend.native.attention_forward(q, k, v, out, lse, self.causal, mask, self.dropout_p, self.dropout_key)
            self.q, self.k, self.v, self.out, self.lse, self.key_mask = q, k, v, out, lse, mask
            return out
        out, p, drop = attention_reference(q, k, v, causal, key_mask, dropout_p, dropout_key)
        self.q, self.k, self.v, self.p, self.drop, self.lse = q, k, v, p, drop, None
        return out

    def native_backward_ok(self, g) -> bool:
        """Whether the forward ran the CPU kernel and g is a NumPy array, so native_backward applies."""
        return self.lse is not None and not self.on_cuda and isinstance(g, np.ndarray)

    def native_backward(self, g, gq, gk, gv):
        """The CPU kernel's dq, dk, dv written into the given (B, H, T, d) buffers (views allowed,
        such as disjoint slices of one array); returns them."""
        g = _attention_view(g, self.q.dtype)
        backend.native.attention_backward(self.q, self.k, self.v, self.out, self.lse, g, gq, gk, gv, self.causal,
                                          self.key_mask, self.dropout_p, self.dropout_key)
        return gq, gk, gv

    def backward(self, g):
        if self.on_cuda and cuda_kernels.is_cupy(g) and g.dtype == np.float32:
            return cuda_kernels.attention_backward(self.q, self.k, self.v, self.out, self.lse, g, self.causal,
                                                   self.key_mask, self.dropout_p, self.dropout_key)
        if self.native_backward_ok(g):
            q, k, v = self.q, self.k, self.v
            return self.native_backward(g, np.empty(q.shape, q.dtype), np.empty(k.shape, q.dtype),
                                        np.empty(v.shape, q.dtype))
        if self.lse is not None:  # native forward, foreign gradient: rebuild P with the reference
            _, self.p, self.drop = attention_reference(self.q, self.k, self.v, self.causal, self.key_mask,
                                                       self.dropout_p, self.dropout_key)
        xp = _xp(g)
        q, k, v, p, drop = self.q, self.k, self.v, self.p, self.drop
        scale = 1.0 / math.sqrt(q.shape[-1])
        pd = p if drop is None else p * drop
        gv = xp.swapaxes(pd, -1, -2) @ g
        dp = g @ xp.swapaxes(v, -1, -2)
        if drop is not None:
            dp *= drop
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        gq = (ds @ k) * scale
        gk = (xp.swapaxes(ds, -1, -2) @ q) * scale
        return gq, gk, gv


def scaled_dot_product_attention(q, k, v, causal: bool = True, key_mask=None, dropout_p: float = 0.0,
                                 generator=None, training: bool = True) -> Tensor:
    """Attention over heads: q (B, H, Tq, d), k and v (B, H, Tk, d) -> (B, H, Tq, d).

    key_mask: optional bool (B, Tk), True where the key is a real token. dropout_p applies to the
    attention probabilities when training (needs `generator`)."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(t, arg)
        if t.ndim != 4:
            raise ValueError(f"attention: {arg} must be 4-D (B, H, T, d), got shape {t.shape}")
        if t.dtype != q.dtype:
            raise TypeError(f"attention: {arg} has dtype {t.dtype}, q has {q.dtype}")
    B, H, Tq, d = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != d or v.shape != k.shape:
        raise ValueError(f"attention: k and v must be (B={B}, H={H}, Tk, d={d}) and equal, got k {k.shape}, v {v.shape}")
    if causal and k.shape[2] < Tq:
        raise ValueError(f"attention: causal attention needs Tk >= Tq, got Tq={Tq}, Tk={k.shape[2]}")
    if key_mask is not None:
        key_mask = _bool_mask(key_mask, "key_mask", like=q)
        if key_mask.shape != (B, k.shape[2]):
            raise ValueError(f"attention: key_mask must have shape ({B}, {k.shape[2]}), got {key_mask.shape}")
    dropout_p, key = _attention_dropout("attention", dropout_p, generator, training)
    return Attention.apply(q, k, v, causal=causal, key_mask=key_mask, dropout_p=dropout_p, dropout_key=key)


def _attention_dropout(fn: str, dropout_p: float, generator, training: bool) -> tuple[float, int]:
    """(dropout_p, key) for the attention ops: the key drawn from `generator` when dropout applies
    (training and p > 0), else (0.0, 0)."""
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{fn}: dropout_p must be in [0, 1), got {dropout_p}")
    if not (training and dropout_p > 0):
        return 0.0, 0
    if generator is None:
        raise ValueError(f"{fn}: a generator is required for dropout_p > 0 while training")
    return float(dropout_p), generator.next_key()


class PackedAttention(Function):
    """Multi-head self-attention on a fused projection: qkv (B, T, 3·C), the last axis [q | k | v], each
    (B, T, H, d) -> (B, T, C), the heads merged. The same numbers as splitting qkv into (B, H, T, d)
    views, Attention and merging the heads; what differs is the gradient's assembly. Through that
    composition autograd builds d(qkv) from three index nodes: three zero-filled (3, B, H, T, d)
    arrays, two full additions and a transposing copy (about 5% of a GPT-2 124M training step).
    Here the native kernel's backward writes dq, dk and dv straight into their slices of one
    (B, T, 3, H, d) array, which is d(qkv); other paths stack the three gradients once."""

    name = "packed_attention"

    def forward(self, qkv, n_head, causal=True, dropout_p=0.0, dropout_key=0):
        B, T, C3 = qkv.shape
        H, d = n_head, C3 // (3 * n_head)
        heads = qkv.reshape(B, T, 3, H, d)
        q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, d) views
        self.attn = Attention()
        out = self.attn.forward(q, k, v, causal=causal, dropout_p=dropout_p, dropout_key=dropout_key)
        # native path: out is a (B, H, T, d) view of (B, T, H, d) memory, so this merge is a view too
        return out.transpose(0, 2, 1, 3).reshape(B, T, H * d)

    def backward(self, g):
        a = self.attn
        B, H, T, d = a.q.shape
        gh = g.reshape(B, T, H, d).transpose(0, 2, 1, 3)  # (B, H, T, d)
        if a.native_backward_ok(gh):
            gqkv = np.empty((B, T, 3, H, d), dtype=a.q.dtype)
            a.native_backward(gh, *(gqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3)))
        else:
            gqkv = _xp(g).stack(a.backward(gh), axis=2).transpose(0, 3, 2, 1, 4)  # (B, T, 3, H, d)
        return (gqkv.reshape(B, T, 3 * H * d),)


def attention_qkv(qkv, n_head: int, causal: bool = True, dropout_p: float = 0.0, generator=None,
                  training: bool = True) -> Tensor:
    """Self-attention over a fused projection: qkv (B, T, 3·C) = [q | k | v] -> (B, T, C), heads
    merged (see PackedAttention). Equals splitting qkv into heads, scaled_dot_product_attention and
    merging, with a cheaper backward. dropout_p applies to the probabilities when training."""
    _check_tensor(qkv, "qkv")
    if qkv.ndim != 3:
        raise ValueError(f"attention_qkv: qkv must be 3-D (B, T, 3*C), got shape {qkv.shape}")
    if not isinstance(n_head, numbers.Integral) or n_head < 1:
        raise ValueError(f"attention_qkv: n_head must be a positive int, got {n_head!r}")
    if qkv.shape[2] % (3 * n_head):
        raise ValueError(f"attention_qkv: the last axis of qkv ({qkv.shape[2]}) must be 3 * n_head * d "
                         f"with n_head={n_head}")
    dropout_p, key = _attention_dropout("attention_qkv", dropout_p, generator, training)
    return PackedAttention.apply(qkv, n_head=int(n_head), causal=causal, dropout_p=dropout_p, dropout_key=key)


# --------------------------------------------------------------------------------------------
# dtype and device moves
# --------------------------------------------------------------------------------------------


class AsType(Function):
    """cast; the gradient is cast back"""

    name = "astype"

    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)


class ToDevice(Function):
    """copy between 'cpu' and 'cuda'; the gradient is copied back"""

    name = "to_device"

    def forward(self, a, device):
        self.src = backend.device_of(a)
        return _move(a, device)

    def backward(self, g):
        return (_move(g, self.src),)


def _move(a, device):
    if device == "cpu":
        return backend.to_numpy(a)
    return backend.xp_for(device).asarray(a)


def astype(a, dtype):
    _check_tensor(a, "a")
    dtype = np.dtype(dtype)
    if a.requires_grad and dtype.kind != "f":
        return Tensor._from_op(a.data.astype(dtype), None)
    return AsType.apply(a, dtype=dtype)


def to_device(a, device: str):
    _check_tensor(a, "a")
    backend.xp_for(device)  # raises a clear error for unknown devices or missing CuPy
    return ToDevice.apply(a, device=device)


# --------------------------------------------------------------------------------------------
# comparisons and other ops without gradient
# --------------------------------------------------------------------------------------------


class _Compare(Function):
    differentiable = False
    ufunc = ""

    def forward(self, a, b):
        return getattr(_xp(a), self.ufunc)(a, b)


def _make_compare(op_name, ufunc):
    cls = type(op_name.capitalize(), (_Compare,), {"name": op_name, "ufunc": ufunc, "__doc__": f"{ufunc} (no gradient)"})

    def fn(a, b):
        a, b = _lift_pair(a, b, op_name)
        _broadcast_shape(a, b, op_name)
        return cls.apply(a, b)

    fn.__name__ = op_name
    return cls, fn


Eq, eq = _make_compare("eq", "equal")
Ne, ne = _make_compare("ne", "not_equal")
Lt, lt = _make_compare("lt", "less")
Le, le = _make_compare("le", "less_equal")
Gt, gt = _make_compare("gt", "greater")
Ge, ge = _make_compare("ge", "greater_equal")


class Argmax(Function):
    """index of the maximum along an axis (no gradient)"""

    name = "argmax"
    differentiable = False

    def forward(self, a, axis=-1):
        return a.argmax(axis=axis)


def argmax(a, axis=-1):
    _check_tensor(a, "a")
    return Argmax.apply(a, axis=axis)


# --------------------------------------------------------------------------------------------
# Tensor methods and operators
# --------------------------------------------------------------------------------------------


def _bind_tensor_methods():
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__pow__ = lambda a, b: pow(a, b)
    T.__rpow__ = lambda a, b: pow(_const(b, like=a, arg="a", op="pow"), a)
    T.__neg__ = lambda a: neg(a)
    T.__matmul__ = lambda a, b: matmul(a, b)
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__getitem__ = lambda a, i: getitem(a, i)
    T.__eq__ = lambda a, b: eq(a, b)
    T.__ne__ = lambda a, b: ne(a, b)
    T.__lt__ = lambda a, b: lt(a, b)
    T.__le__ = lambda a, b: le(a, b)
    T.__gt__ = lambda a, b: gt(a, b)
    T.__ge__ = lambda a, b: ge(a, b)
    T.__hash__ = object.__hash__
    T.sum = lambda a, axis=None, keepdims=False: sum(a, axis, keepdims)
    T.mean = lambda a, axis=None, keepdims=False: mean(a, axis, keepdims)
    T.max = lambda a, axis=None, keepdims=False: max(a, axis, keepdims)
    T.var = lambda a, axis=None, keepdims=False, ddof=0: var(a, axis, keepdims, ddof)
    T.reshape = lambda a, *shape: reshape(a, *shape)
    T.transpose = lambda a, *axes: transpose(a, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None))
    T.permute = lambda a, *axes: transpose(a, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes)
    T.swapaxes = lambda a, i, j: swapaxes(a, i, j)
    T.T = property(lambda a: transpose(a))
    T.exp = lambda a: exp(a)
    T.log = lambda a: log(a)
    T.tanh = lambda a: tanh(a)
    T.sqrt = lambda a: sqrt(a)
    T.relu = lambda a: relu(a)
    T.sigmoid = lambda a: sigmoid(a)
    T.softmax = lambda a, axis=-1: softmax(a, axis)
    T.log_softmax = lambda a, axis=-1: log_softmax(a, axis)
    T.masked_fill = lambda a, mask, value: masked_fill(a, mask, value)
    T.astype = lambda a, dtype: astype(a, dtype)
    T.argmax = lambda a, axis=-1: argmax(a, axis)
    T.split = lambda a, sections, axis=-1: split(a, sections, axis)


_bind_tensor_methods()

__all__ = [n for n in dir() if not n.startswith("_")]
_ = is_grad_enabled  # re-exported for convenience
