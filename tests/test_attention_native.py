"""The fused attention kernel pygpt._C.attention_forward / attention_backward against the NumPy oracle.

The oracle is `pygpt.functional.attention_reference` evaluated in float64, with the backward formulas
of `functional.Attention` (also in float64):
    P = softmax(q kᵀ/√d + mask),  P' = P ∘ drop,  out = P' v
    dV = P'ᵀ dO,  dP = (dO vᵀ) ∘ drop,  dS = P ∘ (dP − rowsum(dP ∘ P)),  dQ = dS k/√d,  dK = dSᵀ q/√d
Errors are measured relative to the oracle's scale, max|got − want| / max|want|: ≤ 1e-5 in float32
and ≤ 1e-12 in float64 for ordinary inputs. For huge logits (q, k × 30) the problem itself is
ill-conditioned in float32, so there the kernel must be no worse than the same formulas evaluated
plainly in float32.

Skipped (with the reason) when the extension is missing or hidden by PYGPT_NO_NATIVE=1; with
PYGPT_REQUIRE_NATIVE=1 a missing extension fails instead.
"""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pygpt.functional as F
from cpu_variants import assert_variants_bit_identical
from pygpt import Tensor, backend
from pygpt.random import keep_mask, random_bits
from pygpt.testing import check_grad

_C = backend.native
if _C is None:
    if os.environ.get("PYGPT_REQUIRE_NATIVE", "") == "1":
        raise RuntimeError(f"PYGPT_REQUIRE_NATIVE=1 but pygpt._C is not available: {backend._NATIVE_ERROR}")
    pytest.skip(f"pygpt._C is not available: {backend._NATIVE_ERROR}", allow_module_level=True)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


# ---------------------------------------------------------------- oracle and kernel runners
def ref_attention(q, k, v, g, causal=True, key_mask=None, p=0.0, key=0, dtype=np.float64):
    """(out, dq, dk, dv) by the reference formulas, evaluated in `dtype`."""
    q, k, v, g = (np.asarray(a, dtype=dtype) for a in (q, k, v, g))
    out, P, drop = F.attention_reference(q, k, v, causal, key_mask, p, key)
    scale = dtype(1.0 / math.sqrt(q.shape[-1]))
    pd = P if drop is None else P * drop
    dv = np.swapaxes(pd, -1, -2) @ g
    dp = g @ np.swapaxes(v, -1, -2)
    if drop is not None:
        dp = dp * drop
    ds = P * (dp - (dp * P).sum(axis=-1, keepdims=True))
    return out, (ds @ k) * scale, (np.swapaxes(ds, -1, -2) @ q) * scale, dv


def run_native(q, k, v, g, causal=True, key_mask=None, p=0.0, key=0):
    """(out, dq, dk, dv, lse) from the kernel; q, k, v, g may be strided views."""
    B, H, Tq, d = q.shape
    out = np.full(q.shape, np.nan, dtype=q.dtype)
    lse = np.full((B, H, Tq), np.nan, dtype=q.dtype)
    assert _C.attention_forward(q, k, v, out, lse, causal, key_mask, p, key) is out
    dq, dk, dv = (np.full(a.shape, np.nan, dtype=q.dtype) for a in (q, k, v))
    res = _C.attention_backward(q, k, v, out, lse, g, dq, dk, dv, causal, key_mask, p, key)
    assert res[0] is dq and res[1] is dk and res[2] is dv
    return out, dq, dk, dv, lse


def rel_err(got, want):
    scale = float(np.abs(want).max()) if want.size else 0.0
    if scale == 0.0:
        return float(np.abs(got).max()) if got.size else 0.0
    return float(np.abs(got.astype(np.float64) - want).max()) / scale


def make(rng, B, H, Tq, Tk, d, dtype, mult=1.0):
    q = (mult * rng.standard_normal((B, H, Tq, d))).astype(dtype)
    k = (mult * rng.standard_normal((B, H, Tk, d))).astype(dtype)
    v = rng.standard_normal((B, H, Tk, d)).astype(dtype)
    g = rng.standard_normal((B, H, Tq, d)).astype(dtype)
    return q, k, v, g


def check_case(q, k, v, g, causal=True, key_mask=None, p=0.0, key=0, tol=None):
    got = run_native(q, k, v, g, causal, key_mask, p, key)
    want = ref_attention(q, k, v, g, causal, key_mask, p, key)
    tol = TOL[q.dtype.type] if tol is None else tol
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == q.dtype and not np.isnan(a).any(), f"{name}: NaN or wrong dtype"
        err = rel_err(a, b)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g} (shape q {q.shape}, k {k.shape})"
    return got


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("B,H,Tq,Tk,d", [
    (1, 1, 1, 1, 1),      # smallest
    (2, 3, 1, 9, 8),      # one query over a cache (decode step)
    (1, 2, 64, 64, 64),   # exactly one tile
    (2, 2, 65, 65, 16),   # one past a tile
    (1, 2, 130, 200, 3),  # Tq != Tk, odd head dim, several tiles each way
    (1, 1, 77, 77, 65),
    (1, 1, 40, 100, 130),
    (1, 1, 33, 70, 256),  # largest head dim
])
def test_matches_reference(B, H, Tq, Tk, d, causal, dtype):
    rng = np.random.default_rng(B * 1000 + Tq * 10 + d)
    check_case(*make(rng, B, H, Tq, Tk, d, dtype), causal=causal)


def test_more_queries_than_keys_bidirectional():
    rng = np.random.default_rng(1)
    check_case(*make(rng, 2, 2, 70, 3, 5, np.float32), causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_long_sequence_many_chunks(dtype):
    # B·H = 1 < 16: the backward splits the keys into chunks and sums partial dq buffers
    rng = np.random.default_rng(2)
    check_case(*make(rng, 1, 1, 300, 300, 24, dtype), causal=True)
    check_case(*make(rng, 1, 2, 100, 300, 24, dtype), causal=False)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_large_logits_no_worse_than_plain_float32(causal):
    rng = np.random.default_rng(3)
    q, k, v, g = make(rng, 2, 2, 100, 100, 64, np.float32, mult=30.0)
    got = run_native(q, k, v, g, causal)
    want = ref_attention(q, k, v, g, causal)
    plain = ref_attention(q, k, v, g, causal, dtype=np.float32)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, want, plain):
        assert np.isfinite(a).all(), name
        err, base = rel_err(a, b), rel_err(c, b)
        assert err <= max(1e-5, 4 * base), f"{name}: kernel error {err:.3g}, plain float32 {base:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_key_mask_with_fully_padded_rows(causal, dtype):
    rng = np.random.default_rng(4)
    B, H, T, d = 3, 2, 90, 12
    q, k, v, g = make(rng, B, H, T, T, d, dtype)
    mask = rng.random((B, T)) < 0.6
    mask[0, :] = False            # a sequence with no real token: every row empty
    mask[1, :70] = False          # causal: rows < 70 see no key; full: only keys 70..89
    mask[2, 64:] = False          # a whole key tile masked
    out, dq, dk, dv, lse = check_case(q, k, v, g, causal, mask)
    assert (out[0] == 0).all() and (dq[0] == 0).all() and (dk[0] == 0).all() and (dv[0] == 0).all()
    assert np.isposinf(lse[0]).all()
    if causal:
        assert (out[1, :, :70] == 0).all() and (dq[1, :, :70] == 0).all()
    dead = np.broadcast_to(~mask[:, None, :, None], dk.shape)  # masked keys get no gradient
    assert (dk[dead] == 0).all() and (dv[dead] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lse_is_log_sum_exp(dtype):
    rng = np.random.default_rng(5)
    q, k, v, g = make(rng, 1, 2, 70, 80, 16, dtype)
    lse = run_native(q, k, v, g, causal=True)[4]
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2).astype(np.float64)) / 4.0
    s = np.where(np.arange(80)[None, :] <= np.arange(70)[:, None] + 10, s, -np.inf)
    want = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
    np.testing.assert_allclose(lse, want, rtol=TOL[dtype] * 4, atol=TOL[dtype] * 4)


# ---------------------------------------------------------------- strided (packed qkv) inputs
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_packed_qkv_views(dtype):
    rng = np.random.default_rng(6)
    B, T, H, d = 2, 70, 3, 20
    qkv = rng.standard_normal((B, T, 3, H, d)).astype(dtype)  # a c_attn output, viewed
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    assert not q.flags.c_contiguous
    g_btc = rng.standard_normal((B, T, H, d)).astype(dtype)
    g = g_btc.transpose(0, 2, 1, 3)  # the gradient of a merged-heads output
    got = check_case(q, k, v, g, causal=True)
    # strided outputs too: out written in (B, T, H, d) layout
    out = np.empty((B, T, H, d), dtype).transpose(0, 2, 1, 3)
    lse = np.empty((B, H, T), dtype)
    _C.attention_forward(q, k, v, out, lse, True, None, 0.0, 0)
    assert np.array_equal(out, got[0])


def test_functional_uses_views_without_copy(monkeypatch):
    seen = {}
    real = _C.attention_forward

    def spy(q, k, v, *args):
        seen["qkv"] = (q, k, v)
        return real(q, k, v, *args)

    monkeypatch.setattr(_C, "attention_forward", spy)
    rng = np.random.default_rng(7)
    B, T, H, d = 2, 33, 2, 8
    x = Tensor(rng.standard_normal((B, T, 3 * H * d)).astype(np.float32), requires_grad=True)
    qkv = x.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, d), views
    y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], causal=True)
    assert all(np.shares_memory(a, x.data) for a in seen["qkv"]), "q/k/v were copied"
    merged = y.transpose(0, 2, 1, 3).reshape(B, T, H * d)
    assert np.shares_memory(merged.data, y.data), "merging heads copied the output"
    w = rng.standard_normal((B, T, H * d)).astype(np.float32)
    (merged * Tensor(w)).sum().backward()
    # against the reference formulas on the same views
    q, k, v = (x.data.reshape(B, T, 3, H, d)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    gy = w.reshape(B, T, H, d).transpose(0, 2, 1, 3)
    out, dq, dk, dv = ref_attention(q, k, v, gy, True)
    assert rel_err(y.data, out) <= 1e-5
    want_gx = np.stack([dq, dk, dv], axis=0).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * H * d)
    assert rel_err(x.grad, want_gx) <= 1e-5


# ---------------------------------------------------------------- dropout
def test_dropout_bits_are_pygpt_random():
    for key in (0, 1, 12345, 2**63 + 5, 2**64 - 1):
        for i in (0, 1, 2, 1000, 2**40 + 3, 2**64 - 2):
            want = int(random_bits(key, (1,), offset=i)[0])
            assert _C.attention_dropout_bits(key, i) == want


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_matches_reference_mask(p, dtype):
    rng = np.random.default_rng(8)
    key = 0x9E3779B97F4A7C15 ^ int(p * 1000)
    q, k, v, g = make(rng, 2, 3, 70, 90, 16, dtype)
    check_case(q, k, v, g, True, None, p, key)
    check_case(q, k, v, g, False, None, p, key)
    # a different key gives a different result (the mask is really used)
    a = run_native(q, k, v, g, True, None, p, key)[0]
    b = run_native(q, k, v, g, True, None, p, key + 1)[0]
    assert not np.array_equal(a, b)


def test_dropout_rounding_of_threshold():
    # p so close to 1 that round(p·2³²) = 2³²: every element is dropped (as in pygpt.random)
    p = 1.0 - 2.0**-34
    assert not keep_mask(5, (100,), p).any()
    rng = np.random.default_rng(9)
    q, k, v, g = make(rng, 1, 1, 10, 10, 4, np.float64)
    out, dq, dk, dv, _ = run_native(q, k, v, g, True, None, p, 5)
    assert (out == 0).all() and (dq == 0).all() and (dk == 0).all() and (dv == 0).all()


# ---------------------------------------------------------------- random shapes
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_shapes(data):
    B = data.draw(st.integers(1, 2), "B")
    H = data.draw(st.integers(1, 3), "H")
    causal = data.draw(st.booleans(), "causal")
    Tq = data.draw(st.integers(1, 140), "Tq")
    Tk = data.draw(st.integers(Tq if causal else 1, 160), "Tk")
    d = data.draw(st.sampled_from([1, 2, 3, 7, 8, 16, 33, 65]), "d")
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    p = data.draw(st.sampled_from([0.0, 0.0, 0.25]), "p")
    masked = data.draw(st.booleans(), "masked")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    mask = (rng.random((B, Tk)) < 0.7) if masked else None
    check_case(*make(rng, B, H, Tq, Tk, d, dtype), causal, mask, p, 77)


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("B,H,T", [(1, 1, 300), (2, 9, 130)], ids=["chunked", "per-head"])
def test_bit_identical_across_runs_and_thread_counts(B, H, T):
    rng = np.random.default_rng(10)
    q, k, v, g = make(rng, B, H, T, T, 24, np.float32)
    mask = rng.random((B, T)) < 0.9
    saved = _C.num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1, 2):
            _C.set_num_threads(threads)
            results.append(run_native(q, k, v, g, True, mask, 0.1, 3))
    finally:
        _C.set_num_threads(saved)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a.tobytes() == b.tobytes()


_ISA_CHILD = """
import hashlib, numpy as np
from pygpt import backend
C = backend.native
rng = np.random.default_rng(13)
h = hashlib.sha256()
for dtype, (B, H, Tq, Tk, d) in ((np.float32, (1, 2, 150, 170, 20)), (np.float64, (2, 1, 70, 70, 9))):
    q, k, v, g = (rng.standard_normal(s).astype(dtype) for s in ((B, H, Tq, d), (B, H, Tk, d), (B, H, Tk, d), (B, H, Tq, d)))
    out, lse = np.empty_like(q), np.empty((B, H, Tq), dtype)
    gq, gk, gv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    mask = rng.random((B, Tk)) < 0.8
    C.attention_forward(q, k, v, out, lse, True, mask, 0.2, 11)
    C.attention_backward(q, k, v, out, lse, g, gq, gk, gv, True, mask, 0.2, 11)
    for a in (out, lse, gq, gk, gv):
        h.update(a.tobytes())
print(C.build_info()["simd"], h.hexdigest())
"""


def test_isa_variants_bit_identical():
    # the baseline (SSE2) build of the kernel must give the same bits as the widest one this CPU runs
    assert_variants_bit_identical(_ISA_CHILD)


# ---------------------------------------------------------------- through autograd
@pytest.mark.parametrize("causal,masked,p", [(True, False, 0.0), (False, True, 0.0), (True, True, 0.3)])
def test_check_grad_native_float64(causal, masked, p, monkeypatch):
    calls = []
    real = _C.attention_backward
    monkeypatch.setattr(_C, "attention_backward", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(11)
    B, H, Tq, Tk, d = 2, 1, 8, 11, 3  # the functional op uses the kernel from 8 queries on
    q, k, v = (rng.standard_normal(s) for s in ((B, H, Tq, d), (B, H, Tk, d), (B, H, Tk, d)))
    mask = np.array([[True] * Tk, [False, True, True, False, True, False, False, True, False, True, False]])
    mask = mask if masked else None

    def fn(q_, k_, v_):
        return F.Attention.apply(q_, k_, v_, causal=causal, key_mask=mask, dropout_p=p, dropout_key=99)

    check_grad(fn, [q, k, v], mode="all", max_all_elements=10**6)
    assert calls, "the native backward was not used"


# ---------------------------------------------------------------- bad arguments
def _args(dtype=np.float32, B=2, H=2, Tq=5, Tk=6, d=4):
    rng = np.random.default_rng(12)
    q, k, v, g = make(rng, B, H, Tq, Tk, d, dtype)
    return dict(q=q, k=k, v=v, out=np.empty_like(q), lse=np.empty((B, H, Tq), dtype), grad_out=g,
                grad_q=np.empty_like(q), grad_k=np.empty_like(k), grad_v=np.empty_like(v), causal=True,
                key_mask=None, dropout_p=0.0, dropout_key=0)


FWD = ["q", "k", "v", "out", "lse", "causal", "key_mask", "dropout_p", "dropout_key"]
BWD = ["q", "k", "v", "out", "lse", "grad_out", "grad_q", "grad_k", "grad_v", "causal", "key_mask", "dropout_p",
       "dropout_key"]


def call(which, base=None, **changes):
    a = dict(_args() if base is None else base)
    a.update(changes)
    names = FWD if which == "forward" else BWD
    fn = _C.attention_forward if which == "forward" else _C.attention_backward
    return fn(*[a[n] for n in names])


def test_good_arguments_pass():
    call("forward")
    call("backward")


BAD = [  # (argument, bad value or a function of the good arguments, exception)
    ("q", [[1.0]], TypeError),
    ("q", lambda a: a["q"].astype(np.int32), TypeError),
    ("q", lambda a: a["q"].astype(np.float64), TypeError),
    ("q", lambda a: a["q"].astype(">f4"), TypeError),
    ("q", lambda a: a["q"][0], ValueError),
    ("q", lambda a: a["q"][..., ::-1], ValueError),
    ("q", lambda a: np.repeat(a["q"], 2, axis=-1)[..., ::2], ValueError),
    ("q", lambda a: a["q"][:, :, ::-1], ValueError),
    ("q", lambda a: np.zeros((2, 2, 5, 0), np.float32), ValueError),
    ("k", lambda a: a["k"][:, :1], ValueError),
    ("k", lambda a: a["k"][..., :3], ValueError),
    ("k", None, TypeError),
    ("v", lambda a: a["v"][:, :, :5], ValueError),
    ("v", "v", TypeError),
    ("out", lambda a: a["out"][:, :, :4], ValueError),
    ("out", lambda a: np.broadcast_to(np.zeros((1, 1, 1, 4), np.float32), (2, 2, 5, 4)), ValueError),
    ("out", lambda a: a["q"], ValueError),
    ("lse", lambda a: a["lse"][..., :4], ValueError),
    ("lse", lambda a: a["lse"].astype(np.float64), TypeError),
    ("lse", lambda a: np.empty((2, 5, 2), np.float32).transpose(0, 2, 1), ValueError),
    ("causal", 1, TypeError),
    ("causal", None, TypeError),
    ("key_mask", np.ones((2, 6), np.uint8), TypeError),
    ("key_mask", np.ones((2, 5), bool), ValueError),
    ("key_mask", np.ones((6, 2), bool).T, ValueError),
    ("key_mask", [[True] * 6] * 2, TypeError),
    ("dropout_p", -0.1, ValueError),
    ("dropout_p", 1.0, ValueError),
    ("dropout_p", float("nan"), ValueError),
    ("dropout_p", "0.1", TypeError),
    ("dropout_p", True, TypeError),
    ("dropout_key", -1, ValueError),
    ("dropout_key", 2**64, ValueError),
    ("dropout_key", 1.5, TypeError),
    ("dropout_key", True, TypeError),
]


def _resolve(value, a):
    return value(a) if callable(value) else value


# BAD[15], BAD[16]: out as a read-only broadcast view and out aliasing q. out is an input of the
# backward, where both are fine, so the backward is called with every other case only.
_FORWARD_ONLY = {15, 16}
assert all(BAD[i][0] == "out" for i in _FORWARD_ONLY)
BAD_CASES = [
    pytest.param(which, arg, value, exc, id=f"{which}-{arg}-{i}")
    for which in ("forward", "backward")
    for i, (arg, value, exc) in enumerate(BAD)
    if not (which == "backward" and i in _FORWARD_ONLY)
]


@pytest.mark.parametrize("which,arg,value,exc", BAD_CASES)
def test_bad_argument(which, arg, value, exc):
    a = _args()
    bad = _resolve(value, a)
    with pytest.raises(exc) as info:
        call(which, a, **{arg: bad})
    named = {"out": ("out", "q"), "k": ("k",), "v": ("v",), "q": ("q", "head dim")}.get(arg, (arg,))
    assert any(n in str(info.value) for n in named), f"message does not name {arg}: {info.value}"


@pytest.mark.parametrize("arg", ["grad_out", "grad_q", "grad_k", "grad_v"])
def test_bad_backward_buffers(arg):
    a = _args()
    with pytest.raises(TypeError, match=arg):
        call("backward", **{arg: a[arg].astype(np.float64)})
    with pytest.raises(ValueError, match=arg):
        call("backward", **{arg: a[arg][:, :1]})
    with pytest.raises(TypeError, match=arg):
        call("backward", **{arg: 3})
    if arg != "grad_out":
        ro = np.empty_like(a[arg])
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            call("backward", **{arg: ro})
        with pytest.raises(ValueError, match="overlap"):
            call("backward", a, **{arg: a["grad_out"] if arg == "grad_q" else a["k"]})


def test_backward_outputs_must_not_overlap():
    a = _args(Tk=5)
    with pytest.raises(ValueError, match="overlap"):
        call("backward", a, grad_k=a["grad_q"], k=a["q"], v=a["q"])
    # views of one buffer that share elements: refused (offset by half a head dim, or the same slice)
    buf = np.empty((2, 5, 2, 8), np.float32)  # (B, Tk, H, 8)
    with pytest.raises(ValueError, match="overlap"):
        call("backward", a, grad_k=buf[..., 0:4].transpose(0, 2, 1, 3), grad_v=buf[..., 2:6].transpose(0, 2, 1, 3))
    with pytest.raises(ValueError, match="overlap"):
        call("backward", a, grad_k=buf[..., 0:4].transpose(0, 2, 1, 3), grad_v=buf[..., 0:4].transpose(0, 2, 1, 3))


def test_backward_outputs_interleaved_in_one_buffer():
    # grad_q, grad_k, grad_v as the disjoint q/k/v slices of one (B, T, 3, H, d) array (what
    # F.PackedAttention passes): accepted, and the same numbers as separate buffers
    a = _args(Tk=5)
    call("forward", a)
    want = [np.empty_like(a["q"]) for _ in range(3)]
    call("backward", a, grad_q=want[0], grad_k=want[1], grad_v=want[2])
    shared = np.full((2, 5, 3, 2, 4), np.nan, np.float32)
    got = [shared[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]
    call("backward", a, grad_q=got[0], grad_k=got[1], grad_v=got[2])
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert not np.isnan(shared).any()


def test_packed_attention_backward_writes_one_buffer(monkeypatch):
    # F.PackedAttention's native backward: the kernel writes dq, dk, dv into the returned gradient
    seen = {}
    real = _C.attention_backward

    def spy(*args):
        seen["grads"] = args[6:9]
        return real(*args)

    monkeypatch.setattr(_C, "attention_backward", spy)
    rng = np.random.default_rng(8)
    B, T, H, d = 2, 20, 3, 8
    x = rng.standard_normal((B, T, 3 * H * d)).astype(np.float32)
    g = rng.standard_normal((B, T, H * d)).astype(np.float32)
    fn = F.PackedAttention()
    y = fn.forward(x, n_head=H)
    (gx,) = fn.backward(g)
    assert all(np.shares_memory(gx, t) for t in seen["grads"]), "the gradient was assembled by copies"
    q, k, v = (x.reshape(B, T, 3, H, d)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    out, dq, dk, dv = ref_attention(q, k, v, g.reshape(B, T, H, d).transpose(0, 2, 1, 3), True)
    assert rel_err(y, out.transpose(0, 2, 1, 3).reshape(B, T, H * d)) <= 1e-5
    want = np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4).reshape(B, T, 3 * H * d)
    assert rel_err(gx, want) <= 1e-5


def test_readonly_forward_outputs():
    a = _args()
    for name in ("out", "lse"):
        ro = np.empty_like(a[name])
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            call("forward", **{name: ro})


def test_causal_needs_enough_keys_and_head_dim_limit():
    with pytest.raises(ValueError, match="Tk >= Tq"):
        call("forward", k=np.zeros((2, 2, 3, 4), np.float32), v=np.zeros((2, 2, 3, 4), np.float32))
    big = np.zeros((1, 1, 2, 257), np.float32)
    with pytest.raises(ValueError, match="head dim"):
        _C.attention_forward(big, big, big, np.empty_like(big), np.empty((1, 1, 2), np.float32), True, None, 0.0, 0)
    # the functional op falls back to the reference above 256
    t = Tensor(np.random.default_rng(0).standard_normal((1, 1, 3, 257)).astype(np.float32))
    y = F.scaled_dot_product_attention(t, t, t)
    assert np.isfinite(y.data).all()


def test_empty_sizes():
    z = np.zeros((0, 2, 3, 4), np.float32)
    _C.attention_forward(z, z, z, np.empty_like(z), np.empty((0, 2, 3), np.float32), True, None, 0.0, 0)
    q = np.ones((1, 1, 3, 4), np.float32)
    k = np.zeros((1, 1, 0, 4), np.float32)
    out, lse = np.full_like(q, 7), np.empty((1, 1, 3), np.float32)
    _C.attention_forward(q, k, k, out, lse, False, None, 0.0, 0)  # no keys at all: zeros
    assert (out == 0).all() and np.isposinf(lse).all()
    dq = np.full_like(q, 7)
    _C.attention_backward(q, k, k, out, lse, q, dq, np.empty_like(k), np.empty_like(k), False, None, 0.0, 0)
    assert (dq == 0).all()
