"""Native kernels for the rest of the training step: LayerNorm, softmax cross-entropy, Adam/AdamW,
embedding backward and dropout (pygpt._C; C++ in cpp/src/{layernorm,crossentropy,adamw,embedding,dropout}.cpp).

Each kernel is compared with a float64 NumPy formula written out here (float32 results within ~1e-5
relative to the scale of the quantity), the autograd ops with `check_grad` in float64 on the native path
(a spy on `pygpt.backend.native` proves the kernel ran), Adam/AdamW bit for bit against the NumPy path of
`pygpt.optim` and closely against `torch.optim`, the results for thread counts 1/2/3 and for the baseline
(SSE2) ISA variant bit for bit, and every binding's argument checks.

Kernel tests are skipped, with the reason, when the extension is missing or hidden with
PYGPT_NO_NATIVE=1; with PYGPT_REQUIRE_NATIVE=1 a missing extension fails instead. The op-level tests
(`test_op_*`) run either way, on whichever path is active.
"""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pygpt.functional as F
from pygpt import Tensor, backend, optim
from pygpt.random import Generator, keep_mask, keep_threshold
from pygpt.testing import check_grad

_C = backend.native
_REQUIRE = os.environ.get("PYGPT_REQUIRE_NATIVE", "") == "1"
needs_native = pytest.mark.skipif(_C is None and not _REQUIRE,
                                  reason=f"pygpt._C is not available: {backend._NATIVE_ERROR}")
SETTINGS = settings(max_examples=25, deadline=None)
DTYPES = [np.float32, np.float64]
IDS = ["float32", "float64"]


def test_native_present_when_required():
    if _REQUIRE:
        assert _C is not None, f"PYGPT_REQUIRE_NATIVE=1 but {backend._NATIVE_ERROR}"


class Spy:
    """Stands in for pygpt._C and counts the calls per function (proves which path an op took)."""

    def __init__(self, real):
        self._real, self.calls = real, {}

    def __getattr__(self, name):
        fn = getattr(self._real, name)

        def wrapped(*a, **k):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*a, **k)

        return wrapped


@contextlib.contextmanager
def spying():
    """backend.native replaced by a Spy for the duration (usable inside hypothesis tests)."""
    if _C is None:
        pytest.skip(f"pygpt._C is not available: {backend._NATIVE_ERROR}")
    saved, s = backend.native, Spy(_C)
    backend.native = s
    try:
        yield s
    finally:
        backend.native = saved


@pytest.fixture
def spy():
    with spying() as s:
        yield s


@pytest.fixture
def threads():
    """Set the kernels' thread count for one test; restored afterwards."""
    saved = _C.num_threads()
    yield _C.set_num_threads
    _C.set_num_threads(saved)


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


# ============================================================================ float64 references
def ln_ref(x, w, b, eps=1e-5):
    x, w, b = (np.asarray(a, np.float64) for a in (x, w, b))
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    r = 1 / np.sqrt(var + eps)
    return (x - mu) * r * w + b, mu[..., 0], r[..., 0]


def ln_bwd_ref(x, w, g, eps=1e-5):
    x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
    mu = x.mean(-1, keepdims=True)
    r = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xh = (x - mu) * r
    h = g * w
    dx = r * (h - h.mean(-1, keepdims=True) - xh * (h * xh).mean(-1, keepdims=True))
    lead = tuple(range(x.ndim - 1))
    return dx, (g * xh).sum(lead), g.sum(lead)


def ce_ref(z, t, ignore_index=-100):
    z = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
    t = np.asarray(t).reshape(-1)
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    keep = t != ignore_index
    picked = z[np.arange(len(t)), np.where(keep, t, 0)]
    return np.where(keep, lse - picked, 0.0), lse


def ce_bwd_ref(z, t, scale, row_scale=None, ignore_index=-100):
    V = z.shape[-1]
    z = np.asarray(z, np.float64).reshape(-1, V)
    t = np.asarray(t).reshape(-1)
    _, lse = ce_ref(z, t, ignore_index)
    p = np.exp(z - lse[:, None])
    keep = t != ignore_index
    p[np.arange(len(t))[keep], t[keep]] -= 1
    s = np.full(len(t), float(scale)) * (1.0 if row_scale is None else np.asarray(row_scale, np.float64).reshape(-1))
    return p * (s * keep)[:, None]


def dropout_ref(x, key, p, offset=0):
    scale = x.dtype.type(1.0 / (1.0 - p))
    return x * (keep_mask(key, x.shape, p, offset=offset).astype(x.dtype) * scale)


# ============================================================================ LayerNorm kernel
def run_ln(x, w, b, eps=1e-5):
    y = np.empty_like(x)
    mean = np.empty(x.shape[:-1], x.dtype)
    rstd = np.empty(x.shape[:-1], x.dtype)
    assert _C.layer_norm_forward(x, w, b, y, mean, rstd, eps) is y
    return y, mean, rstd


def run_ln_bwd(x, w, mean, rstd, g):
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(w)
    _C.layer_norm_backward(x, w, mean, rstd, g, dx, dw, db)
    return dx, dw, db


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (3, 5), (7, 17), (4, 33), (2, 3, 64), (5, 255), (300, 16), (130, 768),
                                   (1, 1600)])
def test_layer_norm_kernel_matches_float64(shape, dtype):
    rng = np.random.default_rng(shape[-1])
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)  # an offset mean: the variance is two-pass
    w = rng.standard_normal(shape[-1]).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, mean, rstd = run_ln(x, w, b)
    y64, mu64, r64 = ln_ref(x, w, b)
    t = tol(dtype)
    scale = 1 + np.abs(w) * np.abs((x - mu64[..., None]) * r64[..., None]) + np.abs(b)
    assert np.all(np.abs(y - y64) <= t * scale)
    np.testing.assert_allclose(mean, mu64, rtol=t, atol=t)
    np.testing.assert_allclose(rstd, r64, rtol=t)
    dx, dw, db = run_ln_bwd(x, w, mean, rstd, g)
    dx64, dw64, db64 = ln_bwd_ref(x, w, g)
    rows = int(np.prod(shape[:-1]))
    np.testing.assert_allclose(dx, dx64, rtol=t, atol=t * np.abs(dx64).max(initial=1.0) * 4)
    np.testing.assert_allclose(dw, dw64, rtol=t, atol=t * np.sqrt(rows) * 4)
    np.testing.assert_allclose(db, db64, rtol=t, atol=t * np.sqrt(rows) * 4)


@needs_native
def test_layer_norm_kernel_constant_rows_and_skipped_gradients():
    x = np.full((3, 8), 2.5, np.float32)  # var = 0: x̂ = 0, y = b, rstd = 1/sqrt(eps)
    w, b = np.full(8, 2.0, np.float32), np.arange(8, dtype=np.float32)
    y, mean, rstd = run_ln(x, w, b, eps=1e-5)
    np.testing.assert_array_equal(y, np.broadcast_to(b, x.shape))
    np.testing.assert_allclose(rstd, 1 / np.sqrt(1e-5), rtol=1e-6)
    g = np.ones_like(x)
    dw, db = np.empty_like(w), np.empty_like(w)
    _C.layer_norm_backward(x, w, mean, rstd, g, None, dw, db)  # dx skipped
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 3)
    dx = np.empty_like(x)
    _C.layer_norm_backward(x, w, mean, rstd, g, grad_in=dx)  # dw, db skipped
    np.testing.assert_allclose(dx, 0, atol=1e-6)
    # no rows: the column sums are zero
    e = np.empty((0, 8), np.float32)
    dw[...] = 7
    _C.layer_norm_backward(e, w, np.empty(0, np.float32), np.empty(0, np.float32), e, e.copy(), dw, db)
    np.testing.assert_array_equal(dw, 0)


# ============================================================================ cross-entropy kernel
def run_ce(z, t, ignore_index=-100):
    loss = np.empty(z.shape[:-1], z.dtype)
    lse = np.empty(z.shape[:-1], z.dtype)
    _C.cross_entropy_forward(z, t, loss, lse, ignore_index)
    return loss, lse


def make_logits(rng, rows, V, dtype, scale=1.0):
    return (scale * rng.standard_normal((rows, V))).astype(dtype)


def assert_ce_close(z, t, loss, lse, ignore_index=-100):
    loss64, lse64 = ce_ref(z, t, ignore_index)
    t_ = tol(z.dtype)
    mag = 1 + np.abs(lse64) + np.abs(z).max(-1).reshape(-1)  # errors scale with the logits' size
    assert np.all(np.abs(lse.reshape(-1) - lse64) <= t_ * mag), np.abs(lse.reshape(-1) - lse64).max()
    assert np.all(np.abs(loss.reshape(-1) - loss64) <= t_ * mag)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("rows,V", [(1, 1), (1, 2), (3, 7), (5, 16), (4, 17), (2, 1023), (3, 1024), (2, 1025),
                                    (2, 3000), (3, 50257)])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_kernel_matches_float64(rows, V, scale, dtype):
    rng = np.random.default_rng(rows * V)
    z = make_logits(rng, rows, V, dtype, scale)
    t = rng.integers(0, V, rows)
    loss, lse = run_ce(z, t)
    assert_ce_close(z, t, loss, lse)
    for s, rs in ((1.0 / rows, None), (1.0, rng.standard_normal(rows).astype(dtype))):
        d = np.empty_like(z)
        assert _C.cross_entropy_backward(z, t, lse, d, s, rs) is d
        ref = ce_bwd_ref(z, t, s, rs)
        # p − 1 at the target cancels when p ≈ 1: an absolute error of a few ulp of s there
        smax = np.abs(s * (np.ones(rows) if rs is None else rs)).max()
        np.testing.assert_allclose(d, ref, rtol=tol(dtype) * 2, atol=tol(dtype) * smax * 0.1)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_cross_entropy_kernel_ignore_index_and_all_ignored(dtype):
    rng = np.random.default_rng(0)
    z = make_logits(rng, 6, 37, dtype, 5.0).reshape(2, 3, 37)  # any leading shape
    t = np.array([[3, -1, 36], [-1, 0, -1]])
    loss, lse = run_ce(z, t, ignore_index=-1)
    assert loss.shape == lse.shape == (2, 3)
    assert_ce_close(z, t, loss, lse, ignore_index=-1)
    assert loss[0, 1] == loss[1, 0] == loss[1, 2] == 0
    d = np.full_like(z, np.nan)
    _C.cross_entropy_backward(z, t, lse, d, 0.5, None, -1)
    np.testing.assert_array_equal(d[t == -1], 0)
    np.testing.assert_allclose(d.reshape(-1, 37), ce_bwd_ref(z, t, 0.5, ignore_index=-1), rtol=1e-5, atol=1e-7)
    # all ignored: no target is read, every gradient row is zero
    t_all = np.full((2, 3), 7)
    loss, lse = run_ce(z, t_all, ignore_index=7)
    np.testing.assert_array_equal(loss, 0)
    d[...] = np.nan
    _C.cross_entropy_backward(z, t_all, lse, d, 1.0, None, 7)
    np.testing.assert_array_equal(d, 0)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_cross_entropy_kernel_extreme_logits(dtype):
    V = 40
    z = np.zeros((5, V), dtype)
    z[0, :] = -np.inf
    z[0, 3] = 1.0  # only one finite logit: loss 0 at the target, probability exactly 1
    z[1, :] = 60.0  # large and equal: uniform softmax (at 1e4 float32's ulp of lse alone would be 1e-3)
    z[2, ::2] = -1e30
    z[3, 7] = 80.0  # exp(80) would overflow float32 without the max shift
    z[4, :] = np.linspace(-100, 100, V)
    t = np.array([3, 5, 1, 7, 0])
    loss, lse = run_ce(z, t)
    assert np.isfinite(loss).all() and np.isfinite(lse).all()
    assert loss[0] == 0 and lse[0] == 1.0
    np.testing.assert_allclose(loss[1], np.log(V), rtol=1e-5)
    assert_ce_close(z[1:], t[1:], loss[1:], lse[1:])
    d = np.empty_like(z)
    _C.cross_entropy_backward(z, t, lse, d, 1.0)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d.sum(-1), 0, atol=1e-5)  # softmax rows sum to one, minus the one-hot
    np.testing.assert_allclose(d, ce_bwd_ref(z, t, 1.0), rtol=1e-5, atol=1e-6)  # exp(z − lse): error ~ eps·|z|
    # NaN anywhere in a row makes that row's loss NaN (never silently finite)
    z2 = np.zeros((2, 4), dtype)
    z2[0, 2] = np.nan
    loss, _ = run_ce(z2, np.array([0, 1]))
    assert np.isnan(loss[0]) and loss[1] == pytest.approx(np.log(4))


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_cross_entropy_kernel_in_place_backward(dtype):
    rng = np.random.default_rng(3)
    z = make_logits(rng, 9, 2050, dtype, 4.0)
    t = rng.integers(-1, 2050, 9)
    _, lse = run_ce(z, t, -1)
    d = np.empty_like(z)
    _C.cross_entropy_backward(z, t, lse, d, 0.25, None, -1)
    zz = z.copy()
    assert _C.cross_entropy_backward(zz, t, lse, zz, 0.25, None, -1) is zz
    assert zz.tobytes() == d.tobytes()


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("rows,V,scale", [(1, 1, 1.0), (9, 2050, 4.0), (3, 50257, 30.0), (5, 17, 1.0)])
def test_cross_entropy_fused_kernel_is_forward_then_backward(rows, V, scale, dtype):
    rng = np.random.default_rng(rows * V)
    z = make_logits(rng, rows, V, dtype, scale)
    t = rng.integers(-1, V, rows)
    loss, lse = run_ce(z, t, -1)
    d = np.empty_like(z)
    _C.cross_entropy_backward(z, t, lse, d, 0.25, None, -1)
    zf, lf, sf = z.copy(), np.empty_like(loss), np.empty_like(lse)
    _C.cross_entropy_fused(zf, t, lf, sf, 0.25, -1)
    assert lf.tobytes() == loss.tobytes() and sf.tobytes() == lse.tobytes()  # the forward's bits
    assert not zf[t == -1].any()
    np.testing.assert_allclose(zf, d, rtol=4 * tol(dtype), atol=tol(dtype) * 0.25 / V)
    np.testing.assert_allclose(zf, ce_bwd_ref(z, t, 0.25, None, -1), rtol=1e-4, atol=2e-6)


@needs_native
@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_cross_entropy_kernel_hypothesis(data, dtype):
    rows = data.draw(st.integers(1, 6))
    V = data.draw(st.integers(1, 70))
    z = data.draw(hnp.arrays(np.float64, (rows, V), elements=st.floats(-50, 50, width=32))).astype(dtype)
    t = data.draw(hnp.arrays(np.int64, (rows,), elements=st.integers(-100, V - 1)))
    t = np.where(t < 0, -100, t)
    loss, lse = run_ce(z, t)
    assert_ce_close(z, t, loss, lse)
    d = np.empty_like(z)
    _C.cross_entropy_backward(z, t, lse, d, 1.0)
    np.testing.assert_allclose(d, ce_bwd_ref(z, t, 1.0), rtol=1e-4, atol=2e-6)


# ============================================================================ embedding backward kernel
@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("V,C,ids_shape", [(1, 1, (1,)), (5, 3, (7,)), (4, 64, (3, 5)), (11, 130, (2, 9)),
                                           (50, 257, (64,)), (3, 8, (0,))])
def test_embedding_backward_kernel_matches_add_at(V, C, ids_shape, dtype):
    rng = np.random.default_rng(V * C)
    ids = rng.integers(0, V, ids_shape)
    if ids.size > 2:
        ids.reshape(-1)[:3] = ids.reshape(-1)[0]  # repeated ids accumulate
    g = rng.standard_normal(ids_shape + (C,)).astype(dtype)
    gw = np.full((V, C), 0.5, dtype)  # accumulates into what is there
    assert _C.embedding_backward(ids, g, gw) is gw
    want = np.full((V, C), 0.5, dtype)
    np.add.at(want, ids.reshape(-1), g.reshape(-1, C))  # same order of additions: identical bits
    np.testing.assert_array_equal(gw, want)


# ============================================================================ dropout kernel
@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 7, 33, 1000, 100003])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.999])
def test_dropout_kernel_is_the_reference_mask(n, p, dtype):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    key = Generator(n + 1).next_key()
    y = np.empty_like(x)
    scale = float(dtype(1.0 / (1.0 - p)))
    assert _C.dropout(x, y, key, keep_threshold(p), scale) is y
    assert y.tobytes() == dropout_ref(x, key, p).tobytes()
    # offset = the index of the first element (a slice of a bigger tensor's mask); in place
    z = x.copy()
    _C.dropout(z, z, key, keep_threshold(p), scale, offset=12345)
    assert z.tobytes() == dropout_ref(x, key, p, offset=12345).tobytes()


@needs_native
def test_dropout_kernel_statistics_and_special_values():
    x = np.ones(400_000, np.float32)
    y = np.empty_like(x)
    _C.dropout(x, y, 99, keep_threshold(0.1), float(np.float32(1 / 0.9)))
    assert abs(float((y == 0).mean()) - 0.1) < 0.003
    _C.dropout(x, y, 99, 2**32, 1.0)  # threshold 2^32: everything dropped
    assert not y.any()
    s = np.array([np.inf, -np.inf, np.nan, -0.0], np.float32)
    out = np.empty_like(s)
    _C.dropout(s, out, 5, 0, 2.0)  # threshold 0: everything kept
    np.testing.assert_array_equal(out, s * 2)


# ============================================================================ Adam / AdamW
class P:
    """A minimal parameter for the optimisers (like tests/test_optim.py's)."""

    def __init__(self, data):
        self.data, self.grad = data, None

    @property
    def shape(self):
        return self.data.shape


ADAM_CASES = {
    "adamw": (optim.AdamW, "AdamW", dict(weight_decay=0.1)),
    "adamw_betas": (optim.AdamW, "AdamW", dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)),
    "adamw_nowd": (optim.AdamW, "AdamW", dict(weight_decay=0.0)),
    "adam": (optim.Adam, "Adam", dict()),
    "adam_l2": (optim.Adam, "Adam", dict(weight_decay=0.05)),
}
ADAM_SHAPES = [(1,), (7,), (5, 3), (2, 3, 4), (65537,), (200003,)]


def run_adam(case, dtype, steps=6, seed=0):
    cls, _, kw = ADAM_CASES[case]
    rng = np.random.default_rng(seed)
    ps = [P(rng.standard_normal(s).astype(dtype)) for s in ADAM_SHAPES]
    opt = cls(ps, lr=1e-2, **kw)
    grads = []
    for step in range(steps):
        opt.lr = 1e-2 * (1 + 0.1 * step)
        gs = [(rng.standard_normal(p.data.shape) * 10 ** rng.uniform(-3, 1)).astype(dtype) for p in ps]
        for p, g in zip(ps, gs):
            p.grad = g
        grads.append(gs)
        opt.step()
    return ps, opt, grads


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_native_is_bit_identical_to_numpy_path(case, dtype, monkeypatch, spy):
    native_ps, native_opt, _ = run_adam(case, dtype)
    assert spy.calls.get("adam_update", 0) == 6 * len(ADAM_SHAPES)
    monkeypatch.setattr(backend, "native", None)
    ref_ps, ref_opt, _ = run_adam(case, dtype)
    for i, (a, b) in enumerate(zip(native_ps, ref_ps)):
        assert a.data.tobytes() == b.data.tobytes(), f"param {i}"
        for name in ("exp_avg", "exp_avg_sq"):
            assert native_opt.get_state(i)[name].tobytes() == ref_opt.get_state(i)[name].tobytes(), (i, name)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", ["adamw", "adam_l2"])
def test_adam_native_matches_torch(case, dtype, spy):
    torch = pytest.importorskip("torch")
    ps, opt, grads = run_adam(case, dtype, seed=5)
    assert spy.calls.get("adam_update", 0) > 0
    _, tname, kw = ADAM_CASES[case]
    rng = np.random.default_rng(5)
    ts = [torch.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in ADAM_SHAPES]
    topt = getattr(torch.optim, tname)(ts, lr=1e-2, **kw)
    for step, gs in enumerate(grads):
        for g in topt.param_groups:
            g["lr"] = 1e-2 * (1 + 0.1 * step)
        for t, g in zip(ts, gs):
            t.grad = torch.tensor(g)
        topt.step()
    rt = dict(rtol=2e-6, atol=2e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for i, (p, t) in enumerate(zip(ps, ts)):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **rt, err_msg=f"param {i}")
        np.testing.assert_allclose(opt.get_state(i)["exp_avg_sq"], topt.state[t]["exp_avg_sq"].numpy(), **rt)


@needs_native
def test_adam_falls_back_for_mixed_dtypes_and_views(spy):
    p = P(np.ones(10, np.float32))
    opt = optim.AdamW([p], lr=0.1)
    p.grad = np.ones(10, np.float64)  # another dtype: the NumPy path handles it
    opt.step()
    assert spy.calls.get("adam_update", 0) == 0
    p.grad = np.ones(20, np.float32)[::2]  # a strided gradient is made contiguous, then native
    opt.step()
    assert spy.calls["adam_update"] == 1


# ============================================================================ determinism
def _all_kernels(seed=0):
    """Every kernel on one set of inputs; the outputs' bytes, in a JSON-friendly dict."""
    rng = np.random.default_rng(seed)
    out = {}
    x = (1 + rng.standard_normal((67, 300))).astype(np.float32)
    w, b = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    y, mean, rstd = run_ln(x, w, b)
    dx, dw, db = run_ln_bwd(x, w, mean, rstd, rng.standard_normal(x.shape).astype(np.float32))
    z = make_logits(rng, 37, 5003, np.float32, 10.0)
    t = rng.integers(0, 5003, 37)
    loss, lse = run_ce(z, t)
    d = np.empty_like(z)
    _C.cross_entropy_backward(z, t, lse, d, 0.1)
    ids = rng.integers(0, 100, 999)
    gw = np.zeros((100, 200), np.float32)
    _C.embedding_backward(ids, rng.standard_normal((999, 200)).astype(np.float32), gw)
    xd = rng.standard_normal(200_001).astype(np.float32)
    yd = np.empty_like(xd)
    _C.dropout(xd, yd, 77, keep_threshold(0.3), 1 / 0.7)
    pa = rng.standard_normal(300_001).astype(np.float32)
    m, v = np.zeros_like(pa), np.zeros_like(pa)
    for _ in range(2):
        _C.adam_update(pa, rng.standard_normal(pa.size).astype(np.float32), m, v, decay=0.999, l2=0.0,
                       one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001, bias_correction2_sqrt=0.05,
                       eps=1e-8, step_size=0.01)
    for name, a in dict(y=y, mean=mean, rstd=rstd, dx=dx, dw=dw, db=db, loss=loss, lse=lse, d=d, gw=gw, yd=yd,
                        pa=pa, m=m, v=v).items():
        out[name] = a.tobytes().hex()
    return out


@needs_native
def test_results_do_not_depend_on_thread_count(threads):
    runs = []
    for n in (1, 2, 3):
        threads(n)
        runs.append(_all_kernels())
    assert runs[0] == runs[1] == runs[2]
    assert _all_kernels() == runs[0]  # and repeat calls agree


@needs_native
def test_baseline_isa_variant_gives_identical_bits():
    """PYGPT_ISA=baseline forces the SSE2 loops: the wider variants must give the same bits."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_ops_native as t; "
            "import pygpt._C as C; print(C.build_info()['simd']); print(json.dumps(t._all_kernels()))")
    env = dict(os.environ, PYGPT_ISA="baseline")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    simd, payload = proc.stdout.strip().splitlines()[-2:]
    assert simd == "sse2" or _C.build_info()["simd"] in ("sse2", "generic")
    assert json.loads(payload) == _all_kernels()


# ============================================================================ the autograd ops on the native path
@needs_native
@SETTINGS
@given(data=st.data())
def test_op_layer_norm_native_gradients(data):
    with spying() as spy:
        lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
        c = data.draw(st.integers(1, 40))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        x = rng.standard_normal(lead + (c,)) + np.arange(c) * 0.1
        w, b = rng.standard_normal(c), rng.standard_normal(c)
        check_grad(F.layer_norm, [x, w, b], atol=1e-5, rtol=1e-4)
        assert spy.calls["layer_norm_forward"] > 0 and spy.calls["layer_norm_backward"] == 1


@needs_native
@SETTINGS
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), scale=st.sampled_from([1.0, 30.0]))
def test_op_cross_entropy_native_gradients(data, reduction, scale):
    with spying() as spy:
        lead = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
        v = data.draw(st.integers(1, 9))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        z = rng.standard_normal(lead + (v,)) * scale
        t = rng.integers(-1, v, lead)
        fn = lambda z_: F.cross_entropy(z_, t, ignore_index=-1, reduction=reduction)  # noqa: E731
        check_grad(fn, [z], atol=1e-5)
        assert spy.calls["cross_entropy_forward"] > 0 and spy.calls["cross_entropy_backward"] == 1


@needs_native
def test_op_cross_entropy_all_ignored(spy):
    z = Tensor(np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32), requires_grad=True)
    t = np.full((2, 3), -100)
    loss = F.cross_entropy(z, t)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(z.grad, 0)
    assert spy.calls["cross_entropy_backward"] == 1


@needs_native
@SETTINGS
@given(data=st.data())
def test_op_embedding_native_gradients(data):
    with spying() as spy:
        v, c = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 70))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        ids = rng.integers(0, v, data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5))).astype(
            data.draw(st.sampled_from([np.int64, np.int32, np.uint16])))
        check_grad(lambda w_: F.embedding(w_, ids), [rng.standard_normal((v, c))])
        assert spy.calls["embedding_backward"] == 1


@needs_native
@SETTINGS
@given(data=st.data(), p=st.sampled_from([0.1, 0.5]))
def test_op_dropout_native_gradients(data, p):
    with spying() as spy:
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
        seed = data.draw(st.integers(0, 2**32))
        x = np.random.default_rng(seed).standard_normal(shape)
        check_grad(lambda t: F.dropout(t, p, Generator(seed)), [x])
        assert spy.calls["dropout"] >= 2  # forward(s) and the backward


# ============================================================================ op level, either path
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_op_layer_norm_matches_float64(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 9, 96)) + 2).astype(dtype)
    w, b = rng.standard_normal(96).astype(dtype), rng.standard_normal(96).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(tx, tw, tb)
    y.backward(g)
    y64, _, _ = ln_ref(x, w, b)
    dx64, dw64, db64 = ln_bwd_ref(x, w, g)
    t = 4 * tol(dtype)
    np.testing.assert_allclose(y.numpy(), y64, rtol=t, atol=t * 4)
    np.testing.assert_allclose(tx.grad, dx64, rtol=t, atol=t * np.abs(dx64).max())
    np.testing.assert_allclose(tw.grad, dw64, rtol=t, atol=t * 20)
    np.testing.assert_allclose(tb.grad, db64, rtol=t, atol=t * 20)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_op_cross_entropy_matches_float64(dtype, reduction):
    rng = np.random.default_rng(1)
    z = (30 * rng.standard_normal((3, 5, 301))).astype(dtype)
    t = rng.integers(0, 301, (3, 5))
    t[0, :2] = -100
    tz = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(tz, t, reduction=reduction)
    g = rng.standard_normal(loss.shape).astype(dtype) if reduction == "none" else None
    loss.backward(g)
    l64, lse64 = ce_ref(z, t)
    n = int((t != -100).sum())
    want = {"none": l64.reshape(t.shape), "sum": l64.sum(), "mean": l64.sum() / n}[reduction]
    np.testing.assert_allclose(loss.numpy(), want, rtol=2 * tol(dtype), atol=tol(dtype) * (1 + np.abs(lse64).max()))
    s = {"none": 1.0, "sum": 1.0, "mean": 1.0 / n}[reduction]
    ref = ce_bwd_ref(z, t, s, g).reshape(z.shape)
    np.testing.assert_allclose(tz.grad, ref, rtol=2 * tol(dtype), atol=tol(dtype) * np.abs(ref).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_op_dropout_and_embedding_match_reference(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 7, 11)).astype(dtype)
    tx = Tensor(x, requires_grad=True)
    gen = Generator(4)
    key = Generator(4).next_key()
    y = F.dropout(tx, 0.3, gen)
    assert y.numpy().tobytes() == dropout_ref(x, key, 0.3).tobytes()
    g = rng.standard_normal(x.shape).astype(dtype)
    y.backward(g)
    assert tx.grad.tobytes() == dropout_ref(g, key, 0.3).tobytes()
    w = Tensor(rng.standard_normal((9, 5)).astype(dtype), requires_grad=True)
    ids = rng.integers(0, 9, (4, 6))
    out = F.embedding(w, ids)
    gout = rng.standard_normal(out.shape).astype(dtype)
    out.backward(gout)
    want = np.zeros((9, 5), dtype)
    np.add.at(want, ids.reshape(-1), gout.reshape(-1, 5))
    np.testing.assert_array_equal(w.grad, want)


@pytest.mark.parametrize("path", ["native", "numpy"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_op_cross_entropy_overwrite_logits(path, reduction, monkeypatch):
    """overwrite_logits=True: the same gradient (bit for bit), written into the logits' buffer."""
    if path == "native" and _C is None:
        pytest.skip(f"pygpt._C is not available: {backend._NATIVE_ERROR}")
    if path == "numpy":
        monkeypatch.setattr(backend, "native", None)
    rng = np.random.default_rng(4)
    z = (5 * rng.standard_normal((2, 3, 41))).astype(np.float32)
    t = rng.integers(-1, 41, (2, 3))
    g = rng.standard_normal((2, 3)).astype(np.float32) if reduction == "none" else None
    w0 = rng.standard_normal((41, 41)).astype(np.float32)
    grads = []
    for overwrite in (False, True):
        w = Tensor(w0.copy(), requires_grad=True)
        logits = F.matmul(Tensor(z), w)  # a non-leaf, as in the model
        data = logits.data
        before = data.copy()
        loss = F.cross_entropy(logits, t, ignore_index=-1, reduction=reduction, overwrite_logits=overwrite)
        loss.backward(g, retain_graph=True)
        grads.append(w.grad.copy())
        if overwrite:
            assert not np.array_equal(data, before)  # the buffer now holds dlogits
            with pytest.raises(RuntimeError, match="can run only once"):
                loss.backward(g)
        else:
            np.testing.assert_array_equal(data, before)
    assert grads[0].tobytes() == grads[1].tobytes()


@needs_native
def test_layer_norm_backward_without_column_sums_in_a_fresh_thread():
    """dx only, from a thread whose scratch for the column sums was never allocated."""
    import threading

    x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    w = np.ones(48, np.float32)
    y, mean, rstd = run_ln(x, w, np.zeros_like(w))
    out = {}

    def work():
        dx = np.empty_like(x)
        _C.layer_norm_backward(x, w, mean, rstd, np.ones_like(x), dx)
        out["dx"] = dx

    th = threading.Thread(target=work)
    th.start()
    th.join()
    np.testing.assert_allclose(out["dx"], 0, atol=1e-5)  # dy = 1 everywhere: no gradient through LN


# ============================================================================ bad arguments
def f32(*shape):
    return np.zeros(shape, np.float32)


def i64(*shape):
    return np.zeros(shape, np.int64)


@needs_native
class TestBadArguments:
    # ---- LayerNorm
    def test_layer_norm_forward(self):
        x, w = f32(2, 4), f32(4)
        mr = (f32(2), f32(2))
        with pytest.raises(TypeError, match=r"^x must be a numpy\.ndarray"):
            _C.layer_norm_forward([1.0], w, w, x, *mr)
        with pytest.raises(TypeError, match=r"^x must have dtype float32 or float64"):
            _C.layer_norm_forward(i64(2, 4), w, w, x, *mr)
        with pytest.raises(TypeError, match=r"^weight must have the same dtype as x"):
            _C.layer_norm_forward(x, np.zeros(4), w, f32(2, 4), *mr)
        with pytest.raises(ValueError, match=r"^bias must have shape \(4,\), got \(5,\)"):
            _C.layer_norm_forward(x, w, f32(5), f32(2, 4), *mr)
        with pytest.raises(ValueError, match=r"^out must have shape x\.shape \(2, 4\)"):
            _C.layer_norm_forward(x, w, w, f32(4, 2), *mr)
        with pytest.raises(ValueError, match=r"^mean must have shape x\.shape\[:-1\] \(2,\), got \(3,\)"):
            _C.layer_norm_forward(x, w, w, f32(2, 4), f32(3), f32(2))
        with pytest.raises(ValueError, match=r"^x must have at least one dimension"):
            _C.layer_norm_forward(np.zeros((), np.float32), w, w, f32(), f32(), f32())
        with pytest.raises(ValueError, match=r"^x must have at least one dimension and a last dimension >= 1"):
            _C.layer_norm_forward(f32(2, 0), f32(0), f32(0), f32(2, 0), *mr)
        with pytest.raises(ValueError, match=r"^x must be C-contiguous"):
            _C.layer_norm_forward(f32(4, 2).T, f32(2), f32(2), f32(2, 4), f32(2), f32(2))
        ro = f32(2, 4)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^out must be writeable"):
            _C.layer_norm_forward(x, w, w, ro, *mr)
        with pytest.raises(ValueError, match=r"^out must not overlap x"):
            _C.layer_norm_forward(x, w, w, x, *mr)
        m = f32(2)
        with pytest.raises(ValueError, match=r"^mean must not overlap rstd"):
            _C.layer_norm_forward(x, w, w, f32(2, 4), m, m)
        for eps in (-1.0, float("nan")):
            with pytest.raises(ValueError, match=r"eps must be >= 0"):
                _C.layer_norm_forward(x, w, w, f32(2, 4), *mr, eps)
        with pytest.raises(TypeError):
            _C.layer_norm_forward(x, w, w, f32(2, 4), *mr, "1e-5")

    def test_layer_norm_backward(self):
        x, w, m, r = f32(2, 4), f32(4), f32(2), f32(2)
        with pytest.raises(TypeError, match=r"^grad_out must be a numpy\.ndarray"):
            _C.layer_norm_backward(x, w, m, r, None)
        with pytest.raises(ValueError, match=r"^grad_out must have shape x\.shape"):
            _C.layer_norm_backward(x, w, m, r, f32(2, 5))
        with pytest.raises(ValueError, match=r"^rstd must have shape"):
            _C.layer_norm_backward(x, w, m, f32(3), f32(2, 4))
        with pytest.raises(ValueError, match=r"^grad_in must have shape"):
            _C.layer_norm_backward(x, w, m, r, f32(2, 4), f32(8))
        with pytest.raises(TypeError, match=r"^grad_weight must have the same dtype as x"):
            _C.layer_norm_backward(x, w, m, r, f32(2, 4), None, np.zeros(4))
        g = f32(2, 4)
        with pytest.raises(ValueError, match=r"^grad_in must not overlap grad_out"):
            _C.layer_norm_backward(x, w, m, r, g, g)
        gw = f32(4)
        with pytest.raises(ValueError, match=r"^grad_weight must not overlap grad_bias"):
            _C.layer_norm_backward(x, w, m, r, g, None, gw, gw)
        ro = f32(4)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^grad_bias must be writeable"):
            _C.layer_norm_backward(x, w, m, r, g, None, None, ro)

    # ---- cross-entropy
    def test_cross_entropy_forward(self):
        z, t = f32(3, 5), i64(3)
        with pytest.raises(TypeError, match=r"^logits must be a numpy\.ndarray"):
            _C.cross_entropy_forward("z", t, f32(3), f32(3))
        with pytest.raises(TypeError, match=r"^targets must be a numpy\.ndarray of int64, got list"):
            _C.cross_entropy_forward(z, [0, 1, 2], f32(3), f32(3))
        with pytest.raises(TypeError, match=r"^targets must have dtype int64, got int32"):
            _C.cross_entropy_forward(z, np.zeros(3, np.int32), f32(3), f32(3))
        with pytest.raises(TypeError, match=r"^targets must have native byte order"):
            _C.cross_entropy_forward(z, np.zeros(3, np.dtype(np.int64).newbyteorder()), f32(3), f32(3))
        with pytest.raises(ValueError, match=r"^targets must have shape logits\.shape\[:-1\] \(3,\), got \(4,\)"):
            _C.cross_entropy_forward(z, i64(4), f32(3), f32(3))
        with pytest.raises(ValueError, match=r"^targets must be C-contiguous"):
            _C.cross_entropy_forward(z, i64(6)[::2], f32(3), f32(3))
        with pytest.raises(ValueError, match=r"^loss must have shape"):
            _C.cross_entropy_forward(z, t, f32(3, 1), f32(3))
        with pytest.raises(TypeError, match=r"^lse must have the same dtype as logits"):
            _C.cross_entropy_forward(z, t, f32(3), np.zeros(3))
        with pytest.raises(ValueError, match=r"^logits must have at least one dimension and a last dimension \(V\) >= 1"):
            _C.cross_entropy_forward(f32(3, 0), t, f32(3), f32(3))
        buf = f32(6)
        with pytest.raises(ValueError, match=r"^loss must not overlap lse"):
            _C.cross_entropy_forward(z, t, buf[:3], buf[2:5])
        with pytest.raises(ValueError, match=r"^loss must not overlap logits"):
            _C.cross_entropy_forward(z, t, z[0, :3], f32(3))

    @pytest.mark.parametrize("bad", [5, -1, 2**40, -(2**63)])
    def test_cross_entropy_targets_out_of_range(self, bad):
        z = f32(3, 5)
        t = np.array([0, bad, 4])
        loss = np.full(3, 7.0, np.float32)
        with pytest.raises(ValueError, match=r"targets\[1\] = .* is outside \[0, 5\)"):
            _C.cross_entropy_forward(z, t, loss, f32(3))
        np.testing.assert_array_equal(loss, 7.0)  # nothing written
        d = np.full_like(z, 7.0)
        with pytest.raises(ValueError, match=r"targets\[1\] = .* is outside \[0, 5\)"):
            _C.cross_entropy_backward(z, t, f32(3), d)
        np.testing.assert_array_equal(d, 7.0)
        _C.cross_entropy_forward(z, t, loss, f32(3), ignore_index=bad)  # fine when it is the ignore_index

    def test_cross_entropy_backward(self):
        z, t, lse = f32(3, 5), i64(3), f32(3)
        with pytest.raises(ValueError, match=r"^grad_logits must have shape logits\.shape \(3, 5\)"):
            _C.cross_entropy_backward(z, t, lse, f32(5, 3))
        with pytest.raises(TypeError, match=r"^grad_logits must have the same dtype as logits"):
            _C.cross_entropy_backward(z, t, lse, np.zeros((3, 5)))
        with pytest.raises(ValueError, match=r"^row_scale must have shape"):
            _C.cross_entropy_backward(z, t, lse, f32(3, 5), 1.0, f32(4))
        with pytest.raises(ValueError, match=r"^grad_logits must not overlap logits \(pass logits itself"):
            buf = f32(4, 5)
            _C.cross_entropy_backward(buf[:3], t, lse, buf[1:])
        d = f32(3, 5)
        with pytest.raises(ValueError, match=r"^grad_logits must not overlap lse"):
            _C.cross_entropy_backward(z, t, d[0, :3], d)
        ro = f32(3, 5)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^grad_logits must be writeable"):
            _C.cross_entropy_backward(z, t, lse, ro)
        with pytest.raises(TypeError):
            _C.cross_entropy_backward(z, t, lse, f32(3, 5), "1.0")
        with pytest.raises(TypeError):
            _C.cross_entropy_backward(z, t, lse, f32(3, 5), 1.0, None, 2**70)  # ignore_index beyond int64

    def test_cross_entropy_fused(self):
        z, t = f32(3, 5), i64(3)
        with pytest.raises(ValueError, match=r"^loss must have shape logits\.shape\[:-1\] \(3,\)"):
            _C.cross_entropy_fused(z, t, f32(4), f32(3))
        with pytest.raises(TypeError, match=r"^lse must have the same dtype as logits"):
            _C.cross_entropy_fused(z, t, f32(3), np.zeros(3))
        buf = f32(18)
        with pytest.raises(ValueError, match=r"^logits must not overlap loss"):
            _C.cross_entropy_fused(buf[:15].reshape(3, 5), t, buf[14:17], f32(3))
        with pytest.raises(ValueError, match=r"^loss must not overlap lse"):
            _C.cross_entropy_fused(z, t, buf[:3], buf[1:4])
        ro = f32(3, 5)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^logits must be writeable"):
            _C.cross_entropy_fused(ro, t, f32(3), f32(3))
        with pytest.raises(ValueError, match=r"targets\[1\] = 5 is outside"):
            _C.cross_entropy_fused(f32(3, 5), np.array([0, 5, 1]), f32(3), f32(3))

    # ---- Adam
    def test_adam_update(self):
        kw = dict(decay=1.0, l2=0.0, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001,
                  bias_correction2_sqrt=1.0, eps=1e-8, step_size=0.1)
        p = f32(4)
        with pytest.raises(TypeError, match=r"^grad must be a numpy\.ndarray"):
            _C.adam_update(p, None, f32(4), f32(4), **kw)
        with pytest.raises(TypeError, match=r"^exp_avg must have the same dtype as param"):
            _C.adam_update(p, f32(4), np.zeros(4), f32(4), **kw)
        with pytest.raises(ValueError, match=r"^exp_avg_sq must have the same shape as param \(4,\), got \(5,\)"):
            _C.adam_update(p, f32(4), f32(4), f32(5), **kw)
        with pytest.raises(ValueError, match=r"^param must not overlap grad"):
            _C.adam_update(p, p, f32(4), f32(4), **kw)
        m = f32(4)
        with pytest.raises(ValueError, match=r"^exp_avg must not overlap exp_avg_sq"):
            _C.adam_update(p, f32(4), m, m, **kw)
        ro = f32(4)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^param must be writeable"):
            _C.adam_update(ro, f32(4), f32(4), f32(4), **kw)
        with pytest.raises(TypeError):
            _C.adam_update(p, f32(4), f32(4), f32(4), 1.0, 0.0)  # coefficients are keyword-only
        with pytest.raises(ValueError, match=r"^grad must be C-contiguous"):
            _C.adam_update(p, f32(8)[::2], f32(4), f32(4), **kw)

    # ---- embedding
    def test_embedding_backward(self):
        ids, g, gw = i64(3), f32(3, 4), f32(5, 4)
        with pytest.raises(TypeError, match=r"^ids must have dtype int64, got float64"):
            _C.embedding_backward(np.zeros(3), g, gw)
        with pytest.raises(ValueError, match=r"^grad_weight must be 2-D \(V, C\), got shape \(20,\)"):
            _C.embedding_backward(ids, g, f32(20))
        with pytest.raises(ValueError, match=r"^grad_out must have shape ids\.shape \+ \(C,\) \(3, 4\), got \(4, 3\)"):
            _C.embedding_backward(ids, f32(4, 3), gw)
        with pytest.raises(TypeError, match=r"^grad_out must have the same dtype as grad_weight"):
            _C.embedding_backward(ids, np.zeros((3, 4)), gw)
        with pytest.raises(ValueError, match=r"^grad_weight must not overlap grad_out"):
            _C.embedding_backward(i64(2), gw[:2], gw)
        for bad in (5, -1, 2**62):
            before = gw.copy()
            with pytest.raises(ValueError, match=r"ids\[2\] = .* is outside \[0, 5\)"):
                _C.embedding_backward(np.array([0, 1, bad]), np.ones((3, 4), np.float32), gw)
            np.testing.assert_array_equal(gw, before)  # nothing written
        with pytest.raises(ValueError, match=r"is outside \[0, 0\)"):
            _C.embedding_backward(i64(1), f32(1, 4), f32(0, 4))

    # ---- dropout
    def test_dropout(self):
        x = f32(4)
        with pytest.raises(TypeError, match=r"^x must be a numpy\.ndarray"):
            _C.dropout(None, x, 1, 0, 1.0)
        with pytest.raises(TypeError, match=r"^out must have the same dtype as x"):
            _C.dropout(x, np.zeros(4), 1, 0, 1.0)
        with pytest.raises(ValueError, match=r"^out must have the same shape as x"):
            _C.dropout(x, f32(5), 1, 0, 1.0)
        buf = f32(5)
        with pytest.raises(ValueError, match=r"^out must not overlap x"):
            _C.dropout(buf[:4], buf[1:], 1, 0, 1.0)
        with pytest.raises(ValueError, match=r"threshold must be <= 2\^32"):
            _C.dropout(x, f32(4), 1, 2**32 + 1, 1.0)
        for key in (-1, 2**64):
            with pytest.raises(TypeError):
                _C.dropout(x, f32(4), key, 0, 1.0)
        _C.dropout(f32(0), f32(0), 2**64 - 1, 2**32, 1.0)  # the extremes are accepted
