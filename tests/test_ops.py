"""Every op in the registry: forward against a float64 NumPy formula, gradient against central differences.

`GRAD_TESTED` / `FORWARD_TESTED` name the ops each test covers; `test_registry_fully_covered` fails
when an op is registered without a test.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pygpt.functional as F
from pygpt import Tensor
from pygpt.autograd import OP_REGISTRY
from pygpt.random import Generator, keep_mask
from pygpt.testing import GradientCheckError, check_grad

SETTINGS = settings(max_examples=20, deadline=None)
GRAD_TESTED: set = set()
FORWARD_TESTED: set = set()


def covers(*names, grad=True):
    for n in names:
        (GRAD_TESTED if grad else FORWARD_TESTED).add(n)

    def deco(fn):
        return fn

    return deco


def floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def arrays(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=floats(lo, hi))


small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def f32(a):
    return Tensor(np.asarray(a, dtype=np.float32))


def assert_forward(fn_tensor, fn_numpy, *inputs, rtol=1e-5, atol=1e-6):
    """Run the op in float32 and compare with a float64 NumPy formula."""
    got = fn_tensor(*[f32(a) if np.asarray(a).dtype.kind == "f" else a for a in inputs])
    want = fn_numpy(*[np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a for a in inputs])
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------
# elementwise binary with broadcasting
# ------------------------------------------------------------------------------------------

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
}


@covers("add", "sub", "mul", "div")
@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(data=st.data())
def test_binary_broadcast(name, data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4))
    a = data.draw(arrays(shapes.input_shapes[0]))
    lo = 0.5 if name == "div" else -3.0
    b = data.draw(arrays(shapes.input_shapes[1], lo, 3.0))
    fn, ref = BINARY[name]
    assert_forward(fn, ref, a, b)
    check_grad(fn, [a, b])


@covers("pow")
@SETTINGS
@given(data=st.data())
def test_pow_tensor_exponent(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    a = data.draw(arrays(shapes.input_shapes[0], 0.2, 3.0))
    b = data.draw(arrays(shapes.input_shapes[1], -2.0, 2.0))
    assert_forward(F.pow, np.power, a, b, rtol=1e-4)
    check_grad(F.pow, [a, b])


@covers("pow_scalar")
@SETTINGS
@given(a=small_shapes.flatmap(lambda s: arrays(s, 0.2, 3.0)), p=st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_scalar(a, p):
    assert_forward(lambda x: x**p, lambda x: x**p, a, rtol=1e-5)
    check_grad(lambda x: x**p, [a])


def test_scalar_operands_and_reflected_ops():
    x = np.array([[1.0, -2.0], [0.5, 4.0]])
    t = Tensor(x)
    np.testing.assert_allclose((2.0 - t).numpy(), 2.0 - x)
    np.testing.assert_allclose((3.0 / t).numpy(), 3.0 / x)
    np.testing.assert_allclose((t * 2 + 1).numpy(), x * 2 + 1)
    np.testing.assert_allclose((2.0**t).numpy(), 2.0**x)
    assert (t * 2).dtype == np.float64 and (f32(x) * 2).dtype == np.float32


# ------------------------------------------------------------------------------------------
# elementwise unary
# ------------------------------------------------------------------------------------------


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _np_gelu_erf(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


UNARY = {
    "neg": (F.neg, np.negative, (-3, 3)),
    "exp": (F.exp, np.exp, (-3, 3)),
    "log": (F.log, np.log, (0.1, 5)),
    "tanh": (F.tanh, np.tanh, (-3, 3)),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-6, 6)),
    "sqrt": (F.sqrt, np.sqrt, (0.1, 5)),
    "relu": (F.relu, lambda x: np.maximum(x, 0), (-3, 3)),
}


@covers(*UNARY)
@pytest.mark.parametrize("name", sorted(UNARY))
@SETTINGS
@given(data=st.data())
def test_unary(name, data):
    fn, ref, (lo, hi) = UNARY[name]
    shape = data.draw(small_shapes)
    a = data.draw(arrays(shape, lo, hi))
    if name == "relu":  # keep away from the kink where the derivative jumps
        a = np.where(np.abs(a) < 1e-3, 0.5, a)
    assert_forward(fn, ref, a)
    check_grad(fn, [a])


@covers("gelu")
@pytest.mark.parametrize("approximate", ["tanh", "none"])
@SETTINGS
@given(data=st.data())
def test_gelu(approximate, data):
    shape = data.draw(small_shapes)
    a = data.draw(arrays(shape, -6.0, 6.0))
    ref = _np_gelu_tanh if approximate == "tanh" else _np_gelu_erf
    assert_forward(lambda x: F.gelu(x, approximate), ref, a)
    check_grad(lambda x: F.gelu(x, approximate), [a])


def test_gelu_large_inputs_and_forms_differ():
    x = np.array([-30.0, -10.0, -1.0, 0.0, 1.0, 10.0, 30.0])
    np.testing.assert_allclose(F.gelu(f32(x)).numpy(), _np_gelu_tanh(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(F.gelu(f32(x), "none").numpy(), _np_gelu_erf(x), rtol=1e-6, atol=1e-6)
    # the two forms are different functions (up to ~5e-4 apart near |x| ≈ 2)
    grid = np.linspace(-4, 4, 801)
    assert 1e-4 < np.abs(_np_gelu_tanh(grid) - _np_gelu_erf(grid)).max() < 1e-3


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------


@st.composite
def shape_and_axis(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    nd = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                          st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple)))
    keepdims = draw(st.booleans())
    return shape, axis, keepdims


@covers("sum", "mean", "var")
@pytest.mark.parametrize("name", ["sum", "mean", "var"])
@SETTINGS
@given(data=st.data())
def test_reductions(name, data):
    shape, axis, keepdims = data.draw(shape_and_axis())
    a = data.draw(arrays(shape))
    fn = getattr(F, name)
    ref = getattr(np, name)
    assert_forward(lambda x: fn(x, axis, keepdims), lambda x: ref(x, axis=axis, keepdims=keepdims), a, atol=1e-5)
    check_grad(lambda x: fn(x, axis, keepdims), [a])


@covers("max")
@SETTINGS
@given(data=st.data())
def test_max(data):
    shape, axis, keepdims = data.draw(shape_and_axis())
    n = int(np.prod(shape))
    # distinct values so the maximum (and its derivative) is unique
    a = data.draw(st.permutations(list(range(n)))).__iter__()
    a = np.array(list(a), dtype=np.float64).reshape(shape) * 0.37 - 1.0
    assert_forward(lambda x: F.max(x, axis, keepdims), lambda x: np.max(x, axis=axis, keepdims=keepdims), a)
    check_grad(lambda x: F.max(x, axis, keepdims), [a])


def test_max_ties_share_gradient():
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    F.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0.0, 0.5, 0.5]])


def test_var_ddof():
    a = np.random.default_rng(0).standard_normal((4, 5))
    np.testing.assert_allclose(F.var(Tensor(a), axis=1, ddof=1).numpy(), a.var(axis=1, ddof=1))
    check_grad(lambda x: F.var(x, axis=0, ddof=1), [a])
    with pytest.raises(ValueError, match="ddof"):
        F.var(Tensor(a), axis=1, ddof=5)


# ------------------------------------------------------------------------------------------
# shape ops
# ------------------------------------------------------------------------------------------


@covers("reshape")
@SETTINGS
@given(data=st.data())
def test_reshape(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    a = data.draw(arrays(shape))
    new = (-1,) if data.draw(st.booleans()) else (int(np.prod(shape)), 1)
    assert_forward(lambda x: x.reshape(new), lambda x: x.reshape(new), a)
    check_grad(lambda x: x.reshape(new) * 1.5, [a])


@covers("transpose")
@SETTINGS
@given(data=st.data())
def test_transpose(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=3))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    a = data.draw(arrays(shape))
    assert_forward(lambda x: x.transpose(perm), lambda x: x.transpose(perm), a)
    check_grad(lambda x: x.transpose(perm), [a])


@covers("getitem")
@SETTINGS
@given(data=st.data())
def test_getitem_basic_and_gather(data):
    a = data.draw(arrays((4, 5)))
    kind = data.draw(st.sampled_from(["slice", "int", "gather", "gather_repeat", "bool_like", "tuple_adv"]))
    if kind == "slice":
        idx = (slice(1, None, 2), slice(None, 3))
    elif kind == "int":
        idx = (2, slice(None))
    elif kind == "gather":
        idx = np.array([3, 0, 1])
    elif kind == "gather_repeat":  # repeated rows: backward must scatter-ADD
        idx = np.array([1, 1, 2, 1])
    elif kind == "bool_like":
        idx = (slice(None), np.array([0, 4, 4]))
    else:
        idx = (np.array([0, 3, 3]), np.array([1, 2, 2]))
    assert_forward(lambda x: x[idx], lambda x: x[idx], a)
    check_grad(lambda x: x[idx], [a])


def test_getitem_out_of_bounds_is_clear():
    with pytest.raises(IndexError, match="out of bounds"):
        Tensor(np.zeros((2, 3)))[np.array([5])]


@covers("concatenate", "stack")
@SETTINGS
@given(data=st.data())
def test_concatenate_stack_split(data):
    base = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    axis = data.draw(st.integers(0, len(base) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = [data.draw(arrays(base[:axis] + (n,) + base[axis + 1:])) for n in sizes]
    assert_forward(lambda *xs: F.concatenate(xs, axis), lambda *xs: np.concatenate(xs, axis), *parts)
    check_grad(lambda *xs: F.concatenate(xs, axis), parts)
    same = [data.draw(arrays(base)) for _ in sizes]
    assert_forward(lambda *xs: F.stack(xs, axis), lambda *xs: np.stack(xs, axis), *same)
    check_grad(lambda *xs: F.stack(xs, axis), same)
    whole = np.concatenate(parts, axis)
    pieces = F.split(Tensor(whole), sizes, axis)
    for got, want in zip(pieces, np.split(whole, np.cumsum(sizes)[:-1], axis)):
        np.testing.assert_array_equal(got.numpy(), want)
    check_grad(lambda x: F.concatenate([p * (i + 1) for i, p in enumerate(F.split(x, sizes, axis))], axis), [whole])


# ------------------------------------------------------------------------------------------
# matmul / linear
# ------------------------------------------------------------------------------------------


@covers("matmul")
@SETTINGS
@given(data=st.data())
def test_matmul_batched_broadcast(data):
    m, k, n = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    kind = data.draw(st.sampled_from(["batched", "vec_left", "vec_right", "shared_weight"]))
    if kind == "batched":
        sa, sb = batch.input_shapes[0] + (m, k), batch.input_shapes[1] + (k, n)
    elif kind == "vec_left":
        sa, sb = (k,), batch.input_shapes[1] + (k, n)
    elif kind == "vec_right":
        sa, sb = batch.input_shapes[0] + (m, k), (k,)
    else:
        sa, sb = batch.input_shapes[0] + (2, m, k), (k, n)
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    assert_forward(F.matmul, np.matmul, a, b, atol=1e-5)
    check_grad(F.matmul, [a, b])


@covers("linear")
@SETTINGS
@given(data=st.data())
def test_linear(data):
    lead = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    fin, fout = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    x, w, b = data.draw(arrays(lead + (fin,))), data.draw(arrays((fin, fout))), data.draw(arrays((fout,)))
    assert_forward(F.linear, lambda x, w, b: x @ w + b, x, w, b, atol=1e-5)
    check_grad(F.linear, [x, w, b])
    check_grad(F.linear, [x, w])


@pytest.mark.parametrize("fin,fout", [(3, 7), (7, 3), (5, 5)])
def test_linear_weight_grad_is_contiguous_and_exact(fin, fout):
    """dW = xᵀ g lands in a C-ordered (in, out) array whichever product order _weight_grad picks (no
    transposed view for the leaf gradient to copy), and equals the float64 product."""
    rng = np.random.default_rng(fin * 10 + fout)
    x2, g2 = rng.standard_normal((6, fin)).astype(np.float32), rng.standard_normal((6, fout)).astype(np.float32)
    gw = F._weight_grad(x2, g2)
    assert gw.shape == (fin, fout) and gw.flags.c_contiguous and gw.base is None
    np.testing.assert_allclose(gw, x2.astype(np.float64).T @ g2.astype(np.float64), rtol=1e-5, atol=1e-5)
    x = Tensor(rng.standard_normal((2, 4, fin)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((fin, fout)).astype(np.float32), requires_grad=True)
    g = rng.standard_normal((2, 4, fout)).astype(np.float32)
    (F.linear(x, w) * Tensor(g)).sum().backward()
    assert w.grad.flags.c_contiguous and w.grad.base is None and w.grad.dtype == np.float32
    want = x.data.reshape(-1, fin).astype(np.float64).T @ g.reshape(-1, fout).astype(np.float64)
    np.testing.assert_allclose(w.grad, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# softmax family, layer norm, embedding, dropout, where
# ------------------------------------------------------------------------------------------


def _np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@covers("softmax", "log_softmax")
@SETTINGS
@given(data=st.data(), scale=st.sampled_from([1.0, 30.0]))
def test_softmax_family(data, scale):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = data.draw(arrays(shape)) * scale  # ×30: large logits must stay finite
    assert_forward(lambda x: F.softmax(x, axis), lambda x: np.exp(_np_log_softmax(x, axis)), a)
    assert_forward(lambda x: F.log_softmax(x, axis), lambda x: _np_log_softmax(x, axis), a, atol=1e-4)
    check_grad(lambda x: F.softmax(x, axis), [a], atol=1e-5)
    check_grad(lambda x: F.log_softmax(x, axis), [a], atol=1e-5)


def _np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@covers("layer_norm")
@SETTINGS
@given(data=st.data())
def test_layer_norm(data):
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    c = data.draw(st.integers(2, 6))
    x, w, b = data.draw(arrays(lead + (c,))), data.draw(arrays((c,))), data.draw(arrays((c,)))
    if np.ptp(x, axis=-1).min(initial=1.0) < 1e-2:  # (almost) constant rows: x̂ is ill-conditioned
        x = x + np.arange(c) * 0.1
    assert_forward(F.layer_norm, _np_layer_norm, x, w, b, atol=1e-4, rtol=1e-4)
    check_grad(F.layer_norm, [x, w, b], atol=1e-5, rtol=1e-4)


@covers("embedding")
@SETTINGS
@given(data=st.data())
def test_embedding(data):
    v, c = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    w = data.draw(arrays((v, c)))
    ids_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, v - 1)))
    assert_forward(lambda w_: F.embedding(w_, ids), lambda w_: w_[ids], w)
    check_grad(lambda w_: F.embedding(w_, ids), [w])


def test_embedding_bad_ids():
    w = Tensor(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\)"):
        F.embedding(w, np.array([0, 4]))
    with pytest.raises(TypeError, match="ids must hold integers"):
        F.embedding(w, np.array([0.0]))


@covers("dropout")
@SETTINGS
@given(data=st.data(), p=st.sampled_from([0.1, 0.5]))
def test_dropout(data, p):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    x = data.draw(arrays(shape))
    seed = data.draw(st.integers(0, 2**32))
    key = Generator(seed).next_key()
    want = x * keep_mask(key, x.shape, p) / (1 - p)
    got = F.dropout(Tensor(x), p, Generator(seed))
    np.testing.assert_allclose(got.numpy(), want)
    # a fresh generator with the same seed gives the same mask, so the op is a fixed function
    check_grad(lambda t: F.dropout(t, p, Generator(seed)), [x])


def test_dropout_statistics_and_identity():
    x = Tensor(np.ones(200_000, dtype=np.float32))
    g = Generator(7)
    y = F.dropout(x, 0.1, g).numpy()
    frac_dropped = float((y == 0).mean())
    assert abs(frac_dropped - 0.1) < 0.003  # 6 sigma for n = 2e5
    assert np.allclose(y[y != 0], 1 / 0.9)
    y2 = F.dropout(x, 0.1, g).numpy()
    assert not np.array_equal(y, y2)  # each call draws a new key
    assert F.dropout(x, 0.1, g, training=False) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        F.dropout(x, 1.0, g)


@covers("where")
@SETTINGS
@given(data=st.data())
def test_where_and_masked_fill(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    cond = data.draw(hnp.arrays(np.bool_, shapes.input_shapes[0]))
    a, b = data.draw(arrays(shapes.input_shapes[1])), data.draw(arrays(shapes.input_shapes[2]))
    assert_forward(lambda a_, b_: F.where(cond, a_, b_), lambda a_, b_: np.where(cond, a_, b_), a, b)
    check_grad(lambda a_, b_: F.where(cond, a_, b_), [a, b])
    full = np.broadcast_shapes(*shapes.input_shapes)
    x = data.draw(arrays(full))
    mask = data.draw(hnp.arrays(np.bool_, full))
    assert_forward(lambda x_: F.masked_fill(x_, mask, -7.0), lambda x_: np.where(mask, -7.0, x_), x)
    check_grad(lambda x_: F.masked_fill(x_, mask, -7.0), [x])


# ------------------------------------------------------------------------------------------
# cross-entropy
# ------------------------------------------------------------------------------------------


@covers("cross_entropy")
@SETTINGS
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), scale=st.sampled_from([1.0, 30.0]))
def test_cross_entropy(data, reduction, scale):
    lead = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    v = data.draw(st.integers(1, 6))
    z = data.draw(arrays(lead + (v,))) * scale
    t = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(-1, v - 1)))  # -1 = ignored

    def ref(z_):
        lp = _np_log_softmax(z_, -1)
        keep = t != -1
        losses = -np.take_along_axis(lp, np.where(keep, t, 0)[..., None], -1)[..., 0] * keep
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        return losses.sum() / max(int(keep.sum()), 1)

    fn = lambda z_: F.cross_entropy(z_, t, ignore_index=-1, reduction=reduction)  # noqa: E731
    assert_forward(fn, ref, z, atol=1e-4, rtol=1e-5)
    check_grad(fn, [z], atol=1e-5)


@covers("linear_cross_entropy")
@SETTINGS
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum"]), rows=st.sampled_from([None, 1, 2]))
def test_linear_cross_entropy(data, reduction, rows):
    lead = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    c = data.draw(st.integers(1, 4))
    v = data.draw(st.integers(1, 6))
    x = data.draw(arrays(lead + (c,)))
    w = data.draw(arrays((v, c)))
    t = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(-1, v - 1)))  # -1 = ignored

    def ref(x_, w_):
        z_ = x_ @ w_.T
        lp = _np_log_softmax(z_, -1)
        keep = t != -1
        losses = -np.take_along_axis(lp, np.where(keep, t, 0)[..., None], -1)[..., 0] * keep
        return losses.sum() if reduction == "sum" else losses.sum() / max(int(keep.sum()), 1)

    fn = lambda x_, w_: F.linear_cross_entropy(x_, w_, t, ignore_index=-1, reduction=reduction)  # noqa: E731
    budget = F._LCE_BUDGET_BYTES
    if rows is not None:  # several row chunks: dW accumulates across them
        F._LCE_BUDGET_BYTES = rows * v * 8
    try:
        assert_forward(fn, ref, x, w, atol=1e-4, rtol=1e-5)
        unfused = F.cross_entropy(F.matmul(Tensor(x), Tensor(w).T), t, ignore_index=-1, reduction=reduction)
        np.testing.assert_allclose(fn(Tensor(x), Tensor(w)).item(), unfused.item(), rtol=1e-12, atol=1e-12)
        check_grad(fn, [x, w], atol=1e-5)
    finally:
        F._LCE_BUDGET_BYTES = budget


def test_linear_cross_entropy_retain_graph_and_errors():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    t = np.array([0, 4, 2])
    loss = F.linear_cross_entropy(x, w, t)
    loss.backward(retain_graph=True)
    g1x, g1w = x.grad.copy(), w.grad.copy()
    loss.backward()  # recomputed from the saved x and W
    np.testing.assert_allclose(x.grad, 2 * g1x, rtol=1e-12)
    np.testing.assert_allclose(w.grad, 2 * g1w, rtol=1e-12)
    none = F.linear_cross_entropy(x, w, t, reduction="none")
    np.testing.assert_allclose(none.numpy().mean(), loss.item(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"targets must be in \[0, 5\)"):
        F.linear_cross_entropy(x, w, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match="weight must be"):
        F.linear_cross_entropy(x, Tensor(np.zeros((5, 3))), t)


def test_cross_entropy_errors():
    z = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"targets must be in \[0, 3\)"):
        F.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\)"):
        F.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="targets must hold integers"):
        F.cross_entropy(z, np.array([0.0, 1.0]))


# ------------------------------------------------------------------------------------------
# attention
# ------------------------------------------------------------------------------------------


def _np_attention(q, k, v, causal, key_mask, drop=None):
    d = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    Tq, Tk = s.shape[-2:]
    allowed = np.ones(s.shape, dtype=bool)
    if causal:
        allowed &= np.tril(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq)
    if key_mask is not None:
        allowed &= key_mask[:, None, None, :]
    s = np.where(allowed, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.exp(s - m)
    den = p.sum(-1, keepdims=True)
    p = p / np.where(den > 0, den, 1)
    if drop is not None:
        p = p * drop
    return p @ v


@covers("attention")
@SETTINGS
@given(data=st.data())
def test_attention(data):
    B, H = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    Tq = data.draw(st.integers(1, 5))
    causal = data.draw(st.booleans())
    Tk = Tq + (0 if causal else data.draw(st.integers(-Tq + 1, 2)))
    d = data.draw(st.sampled_from([1, 3, 4]))
    q = data.draw(arrays((B, H, Tq, d)))
    k = data.draw(arrays((B, H, Tk, d)))
    v = data.draw(arrays((B, H, Tk, d)))
    key_mask = None
    if data.draw(st.booleans()):
        key_mask = data.draw(hnp.arrays(np.bool_, (B, Tk)))  # may fully pad a row: output must be 0
    p = data.draw(st.sampled_from([0.0, 0.0, 0.3]))
    seed = data.draw(st.integers(0, 1000))
    drop = None
    if p:
        key = Generator(seed).next_key()
        drop = keep_mask(key, (B, H, Tq, Tk), p) / (1 - p)

    def fn(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, causal=causal, key_mask=key_mask, dropout_p=p,
                                              generator=Generator(seed))

    assert_forward(fn, lambda q_, k_, v_: _np_attention(q_, k_, v_, causal, key_mask, drop), q, k, v, atol=1e-5)
    check_grad(fn, [q, k, v], atol=1e-5)


def test_attention_errors():
    q = Tensor(np.zeros((1, 1, 3, 4)))
    with pytest.raises(ValueError, match="q must be 4-D"):
        F.scaled_dot_product_attention(Tensor(np.zeros((3, 4))), q, q)
    with pytest.raises(ValueError, match="key_mask must have shape"):
        F.scaled_dot_product_attention(q, q, q, key_mask=np.ones((1, 2), dtype=bool))
    with pytest.raises(ValueError, match="generator is required"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)


@covers("packed_attention")
@SETTINGS
@given(data=st.data())
def test_attention_qkv(data):
    # qkv (B, T, 3·H·d) = [q | k | v], heads merged in the output; T up to 9 reaches the native
    # kernel (from 8 queries) when it is built
    B, H = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    T = data.draw(st.sampled_from([1, 2, 5, 9]))
    d = data.draw(st.sampled_from([1, 3, 4]))
    x = data.draw(arrays((B, T, 3 * H * d)))
    p = data.draw(st.sampled_from([0.0, 0.0, 0.3]))
    seed = data.draw(st.integers(0, 1000))
    drop = None
    if p:
        drop = keep_mask(Generator(seed).next_key(), (B, H, T, T), p) / (1 - p)

    def fn(x_):
        return F.attention_qkv(x_, H, causal=True, dropout_p=p, generator=Generator(seed))

    def ref(x_):
        q, k, v = (x_.reshape(B, T, 3, H, d)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        return _np_attention(q, k, v, True, None, drop).transpose(0, 2, 1, 3).reshape(B, T, H * d)

    assert_forward(fn, ref, x, atol=1e-5)
    check_grad(fn, [x], atol=1e-5)


def test_attention_qkv_equals_the_composition():
    # same forward and gradient as splitting into heads, scaled_dot_product_attention, merging
    rng = np.random.default_rng(3)
    B, T, H, d = 2, 12, 3, 4
    data = rng.standard_normal((B, T, 3 * H * d))
    w = rng.standard_normal((B, T, H * d))
    grads = []
    for packed in (True, False):
        x = Tensor(data.copy(), requires_grad=True)
        if packed:
            y = F.attention_qkv(x, H, dropout_p=0.2, generator=Generator(5))
        else:
            qkv = x.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=0.2, generator=Generator(5))
            y = y.transpose(0, 2, 1, 3).reshape(B, T, H * d)
        (y * Tensor(w)).sum().backward()
        grads.append((y.data, x.grad))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


def test_attention_qkv_errors():
    x = Tensor(np.zeros((1, 3, 12)))
    with pytest.raises(ValueError, match="qkv must be 3-D"):
        F.attention_qkv(Tensor(np.zeros((3, 12))), 2)
    with pytest.raises(ValueError, match="3 \\* n_head \\* d"):
        F.attention_qkv(x, 5)
    with pytest.raises(ValueError, match="n_head must be a positive int"):
        F.attention_qkv(x, 0)
    with pytest.raises(ValueError, match="generator is required"):
        F.attention_qkv(x, 2, dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p must be in"):
        F.attention_qkv(x, 2, dropout_p=1.0)


def _np_lstm(x, w_ih, w_hh, b, h, c):
    """float64 reference recurrence: [h_t | c_t] for every step, gates i, f, g, o."""
    H = w_hh.shape[0]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w_ih + b + h @ w_hh
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(np.concatenate([h, c], axis=1))
    return np.stack(out, axis=1)


@covers("lstm")
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_lstm(data):
    B, T, n_in, H = (data.draw(st.integers(1, n)) for n in (2, 5, 4, 3))
    x = data.draw(arrays((B, T, n_in), -2, 2))
    w_ih, w_hh = data.draw(arrays((n_in, 4 * H), -1, 1)), data.draw(arrays((H, 4 * H), -1, 1))
    b = data.draw(arrays((4 * H,), -1, 1))
    h0, c0 = data.draw(arrays((B, H), -1, 1)), data.draw(arrays((B, H), -2, 2))
    assert_forward(F.lstm, _np_lstm, x, w_ih, w_hh, b, h0, c0)
    check_grad(F.lstm, [x, w_ih, w_hh, b, h0, c0], mode="all")


def test_lstm_equals_the_stepwise_composition_and_checks_arguments():
    from pygpt.models.lstm import LSTMLayer

    rng = np.random.default_rng(4)
    layer = LSTMLayer(6, 5, rng=rng)  # float32, the training dtype
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    h0, c0 = (rng.standard_normal((3, 5)).astype(np.float32) for _ in range(2))
    g = rng.standard_normal((3, 7, 5)).astype(np.float32)
    xs = [Tensor(x[:, t], requires_grad=True) for t in range(7)]
    ref, _ = layer.run(xs, (Tensor(h0), Tensor(c0)))
    (F.stack(ref, axis=1) * Tensor(g)).sum().backward()
    want = {n: p.grad.copy() for n, p in layer.named_parameters()}
    want_x = np.stack([t.grad for t in xs], axis=1)
    layer.zero_grad()
    xt = Tensor(x, requires_grad=True)
    out, _ = layer(xt, (Tensor(h0), Tensor(c0)))
    np.testing.assert_allclose(out.numpy(), F.stack(ref, axis=1).numpy(), rtol=1e-5, atol=1e-6)
    (out * Tensor(g)).sum().backward()
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, want[n], rtol=1e-4, atol=1e-5, err_msg=n)
    np.testing.assert_allclose(xt.grad, want_x, rtol=1e-4, atol=1e-5)

    w_ih, w_hh, b = layer.weight_ih, layer.weight_hh, layer.bias
    h0, c0 = Tensor(h0), Tensor(c0)
    with pytest.raises(ValueError, match="weight_hh must be"):
        F.lstm(xt, w_ih, w_ih, b, h0, c0)
    with pytest.raises(ValueError, match="x must be"):
        F.lstm(Tensor(x[:, :0]), w_ih, w_hh, b, h0, c0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(3, 5\)"):
        F.lstm(xt, w_ih, w_hh, b, Tensor(h0.numpy()[:2]), c0)
    with pytest.raises(TypeError, match="c0 has dtype float64"):
        F.lstm(xt, w_ih, w_hh, b, h0, Tensor(c0.numpy().astype(np.float64)))


# ------------------------------------------------------------------------------------------
# dtype / device moves, ops without gradient
# ------------------------------------------------------------------------------------------


@covers("astype", "to_device")
def test_astype_and_to_device():
    a = np.random.default_rng(1).standard_normal((3, 4))
    check_grad(lambda x: F.astype(x, np.float32).astype(np.float64) * 2.0, [a], atol=1e-3, rtol=1e-3, eps=1e-3)
    t = Tensor(a.astype(np.float32))
    assert t.astype(np.float64).dtype == np.float64
    check_grad(lambda x: F.to_device(x, "cpu") * 3.0, [a])
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        t.to("tpu")


@covers("eq", "ne", "lt", "le", "gt", "ge", "argmax", grad=False)
def test_comparisons_and_argmax():
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    ta, tb = Tensor(a, requires_grad=True), Tensor(b)
    for op, ref in [(F.eq, np.equal), (F.ne, np.not_equal), (F.lt, np.less), (F.le, np.less_equal),
                    (F.gt, np.greater), (F.ge, np.greater_equal)]:
        out = op(ta, tb)
        np.testing.assert_array_equal(out.numpy(), ref(a, b))
        assert not out.requires_grad
    np.testing.assert_array_equal((ta > 1.5).numpy(), a > 1.5)
    np.testing.assert_array_equal(F.argmax(ta, axis=1).numpy(), [2, 0])


# ------------------------------------------------------------------------------------------
# the registry and the checker itself
# ------------------------------------------------------------------------------------------


def test_registry_fully_covered():
    registered = set(OP_REGISTRY)
    differentiable = {n for n, cls in OP_REGISTRY.items() if cls.differentiable}
    missing_grad = differentiable - GRAD_TESTED
    missing_fwd = (registered - differentiable) - FORWARD_TESTED
    assert not missing_grad, f"ops without a gradient test: {sorted(missing_grad)}"
    assert not missing_fwd, f"ops without a forward test: {sorted(missing_fwd)}"
    assert {"add", "matmul", "attention", "cross_entropy", "layer_norm", "gelu"} <= registered


class _WrongSquare(F.Function):
    """x² with a deliberately wrong backward (2x + 0.01): the checker must catch it."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (g * (2 * self.x + 0.01),)


@pytest.mark.parametrize("mode", ["all", "directional"])
def test_checker_catches_wrong_backward(mode):
    x = np.random.default_rng(0).standard_normal((3, 3))
    with pytest.raises(GradientCheckError, match="gradient mismatch") as info:
        check_grad(lambda t: _WrongSquare.apply(t), [x], mode=mode)
    if mode == "all":
        assert "worst at index" in str(info.value)
    # and passes the correct op
    check_grad(lambda t: t * t, [x], mode=mode)
