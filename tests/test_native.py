"""The native extension pygpt._C: GELU kernels against float64 formulas, build info, argument checks.

GELU (formulas as in cpp/include/pygpt/gelu.h):
    tanh form  f = 0.5 x (1 + tanh u),  u = k (x + c x^3),  k = sqrt(2/pi), c = 0.044715
               f' = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
    erf form   f = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),   f' = Phi(x) + x phi(x)

The reference is evaluated in float64 in forms that do not cancel ((1 + tanh u)/2 = 1/(1 + e^(-2u)),
Phi(x) = erfc(-x/sqrt 2)/2); `test_reference_matches_textbook_formulas` ties them to the formulas above.
Tolerances follow the condition number: |y - f| <= C eps (|f| + |x f'|) (+ a term for results
below the smallest normal number, which the kernel may flush to zero).

Native-only tests are skipped, with the reason, when the extension is missing or hidden with
PYGPT_NO_NATIVE=1; with PYGPT_REQUIRE_NATIVE=1 (CI's first run) a missing extension fails instead.
"""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pygpt
from cpu_variants import assert_variants_bit_identical
from pygpt import backend

_C = backend.native
needs_native = pytest.mark.skipif(_C is None, reason=f"pygpt._C is not available: {backend._NATIVE_ERROR}")

K = math.sqrt(2.0 / math.pi)
C = 0.044715
APPROX = ["tanh", "none"]
DTYPES = [np.float32, np.float64]
_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# ---------------------------------------------------------------- float64 reference
def ref_gelu(x, approximate):
    """(f, f') in float64 for any float array x (finite)."""
    x = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        u = K * (x + C * x**3)
        with np.errstate(over="ignore"):
            s = 1.0 / (1.0 + np.exp(-2.0 * u))  # (1 + tanh u) / 2
            s1 = 1.0 / (1.0 + np.exp(2.0 * u))  # (1 - tanh u) / 2
        return x * s, s + 2.0 * x * s * s1 * K * (1.0 + 3.0 * C * x**2)
    cdf = 0.5 * _erfc(-x / math.sqrt(2.0))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def ref_d2(x, approximate):
    """f'' by central differences of f' (only sizes tolerances)."""
    h = 1e-4 * np.maximum(1.0, np.abs(x))
    return (ref_gelu(x + h, approximate)[1] - ref_gelu(x - h, approximate)[1]) / (2 * h)


def assert_close_to_reference(x, dy, y, dx, approximate):
    """y = f(x), dx = f'(x) dy within C eps times the condition number."""
    eps = float(np.finfo(x.dtype).eps)
    tiny = 4 * float(np.finfo(x.dtype).tiny)  # kernel may flush results below the smallest normal
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    f, df = ref_gelu(x64, approximate)
    ax = np.abs(x64)
    tol_f = 16 * eps * (np.abs(f) + np.abs(x64 * df)) + tiny * (1 + ax)
    err_f = np.abs(y.astype(np.float64) - f)
    bad = err_f > tol_f
    assert not bad.any(), f"forward: x={x64[bad][:5]} got {y[bad][:5]} want {f[bad][:5]}"
    g = df * dy64
    tol_b = 16 * eps * (np.abs(g) + np.abs(x64 * ref_d2(x64, approximate) * dy64)) + tiny * (1 + ax**3)
    err_b = np.abs(dx.astype(np.float64) - g)
    bad = err_b > tol_b
    assert not bad.any(), f"backward: x={x64[bad][:5]} got {dx[bad][:5]} want {g[bad][:5]}"


def run_kernels(x, dy, approximate):
    y = np.empty_like(x)
    dx = np.empty_like(x)
    assert _C.gelu_forward(x, y, approximate) is y
    assert _C.gelu_backward(x, dy, dx, approximate=approximate) is dx
    return y, dx


# ---------------------------------------------------------------- reference and build info
def test_reference_matches_textbook_formulas():
    x = np.linspace(-8, 8, 3201)
    f, df = ref_gelu(x, "tanh")
    t = np.tanh(K * (x + C * x**3))
    np.testing.assert_allclose(f, 0.5 * x * (1 + t), rtol=0, atol=1e-14)
    np.testing.assert_allclose(df, 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * C * x * x), rtol=0, atol=1e-14)
    f, df = ref_gelu(x, "none")
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
    np.testing.assert_allclose(f, x * cdf, rtol=0, atol=1e-14)
    np.testing.assert_allclose(df, cdf + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi), rtol=0, atol=1e-14)


def test_info_reports_native_state():
    info = pygpt.info()
    assert info["native"] is (_C is not None)
    if _C is None:
        assert isinstance(info["native_reason"], str) and info["native_reason"]
        assert os.environ.get("PYGPT_REQUIRE_NATIVE", "") != "1", f"PYGPT_REQUIRE_NATIVE=1: {info['native_reason']}"
    else:
        assert info["native_build"] == _C.build_info()


@needs_native
def test_build_info():
    info = _C.build_info()
    assert set(info) == {"version", "compiler", "build_type", "simd", "openmp", "max_threads", "cuda",
                         "cuda_kernels", "cuda_architectures", "cuda_runtime"}  # CUDA: tests/test_cuda_kernels.py
    assert info["version"] == pygpt.__version__ == _C.__version__
    assert isinstance(info["openmp"], bool) and isinstance(info["cuda"], bool)
    assert info["max_threads"] == _C.num_threads() >= 1
    assert info["compiler"] and info["build_type"]
    assert info["simd"] in ("avx512", "avx2", "sse2", "generic")  # run-time CPU variant (see PYGPT_ISA)


@needs_native
def test_set_num_threads_roundtrip():
    saved = _C.num_threads()
    try:
        _C.set_num_threads(1)
        assert _C.num_threads() == 1
        with pytest.raises(ValueError, match="n must be in"):
            _C.set_num_threads(0)
        with pytest.raises(ValueError, match="n must be in"):
            _C.set_num_threads(100000)
    finally:
        _C.set_num_threads(saved)
    assert _C.num_threads() == saved


# ---------------------------------------------------------------- values
@needs_native
@pytest.mark.parametrize("approximate", APPROX)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 1023, 100003])
def test_gelu_matches_reference(n, dtype, approximate):
    rng = np.random.default_rng(n)
    x = (3 * rng.standard_normal(n)).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    y, dx = run_kernels(x, dy, approximate)
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == (n,)
    assert_close_to_reference(x, dy, y, dx, approximate)


@needs_native
@pytest.mark.parametrize("approximate", APPROX)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_gelu_any_shape_dense_grid(dtype, approximate):
    x = np.linspace(-40, 40, 8001).astype(dtype).reshape(3, 2667)  # (3, 2667): shape is irrelevant
    dy = np.ones_like(x)
    y, dx = run_kernels(x, dy, approximate)
    assert_close_to_reference(x.ravel(), dy.ravel(), y.ravel(), dx.ravel(), approximate)


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-30, 30),
            st.floats(-1e-30, 1e-30),
            st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e-45, -1e-45, 1e-38, 30.0, -30.0, 12.5, -12.5]),
        ),
        max_size=70,
    ),
    dtype=st.sampled_from(DTYPES),
    approximate=st.sampled_from(APPROX),
)
def test_gelu_hypothesis(values, dtype, approximate):
    x = np.array(values, dtype=np.float64).astype(dtype)  # float32 rounds (tiny values may flush to 0)
    dy = np.linspace(-2, 2, x.size).astype(dtype)
    y, dx = run_kernels(x, dy, approximate)
    assert_close_to_reference(x, dy, y, dx, approximate)


@needs_native
@pytest.mark.parametrize("approximate", APPROX)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_gelu_special_values(dtype, approximate):
    x = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30], dtype=dtype)
    y, dx = run_kernels(x, np.ones_like(x), approximate)
    np.testing.assert_array_equal(y, np.array([np.inf, 0, np.nan, 1e30, 0], dtype=dtype))
    np.testing.assert_array_equal(dx, np.array([1, 0, np.nan, 1, 0], dtype=dtype))


@needs_native
@pytest.mark.parametrize("approximate", APPROX)
def test_gelu_backward_matches_central_differences(approximate):
    x = np.linspace(-6, 6, 1201) + 0.003  # float64
    h = 1e-5
    f_plus, f_minus = np.empty_like(x), np.empty_like(x)
    _C.gelu_forward(x + h, f_plus, approximate)
    _C.gelu_forward(x - h, f_minus, approximate)
    dx = np.empty_like(x)
    _C.gelu_backward(x, np.ones_like(x), dx, approximate)
    np.testing.assert_allclose(dx, (f_plus - f_minus) / (2 * h), rtol=0, atol=1e-8)


@needs_native
@pytest.mark.parametrize("approximate", APPROX)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_gelu_in_place_and_thread_count_give_identical_bits(dtype, approximate):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(100003)).astype(dtype)
    dy = rng.standard_normal(x.size).astype(dtype)
    saved = _C.num_threads()
    try:
        _C.set_num_threads(1)
        y1, dx1 = run_kernels(x, dy, approximate)
        _C.set_num_threads(3)
        y3, dx3 = run_kernels(x, dy, approximate)
    finally:
        _C.set_num_threads(saved)
    z = x.copy()
    assert _C.gelu_forward(z, z, approximate) is z
    assert y1.tobytes() == y3.tobytes() == z.tobytes()
    assert dx1.tobytes() == dx3.tobytes()


_ISA_CHILD = """
import hashlib, numpy as np
from pygpt import backend
C = backend.native
rng = np.random.default_rng(5)
neg_nan = np.array([0xFFC00000], np.uint32).view(np.float32)[0]  # x86's default NaN has the sign bit set
specials = np.array([np.inf, -np.inf, np.nan, neg_nan, 0.0, -0.0, 10.03, 10.04, -10.03, -10.04, -10.05,
                     13.27, -13.27, 1e30, -1e30, 3.4028235e38, -3.4028235e38, 1e-40, -1e-40, 1e-45],
                    np.float32)
h = hashlib.sha256()
# 1001 elements (vector tails), and 4.2 Mi from an odd offset (over 16 MiB: streamed stores, peeled head)
for n, offset in ((1001, 0), (4_400_001, 1)):
    buf = (6 * rng.standard_normal(n + offset)).astype(np.float32)
    buf[offset:offset + specials.size] = specials
    x = buf[offset:]
    dy = rng.standard_normal(n).astype(np.float32)
    dy[:4] = (np.nan, neg_nan, np.inf, 0.0)
    for approx in ("tanh", "none"):
        out = np.empty(n + 1, np.float32)[offset:offset + n]  # misaligned like x
        dx = np.empty_like(out)
        C.gelu_forward(x, out, approx)
        C.gelu_backward(x, dy, dx, approx)
        z = x.copy()
        C.gelu_forward(z, z, approx)  # in place
        assert np.isnan(out[np.isnan(x)]).all() and np.isnan(dx[np.isnan(x) | np.isnan(dy)]).all()
        for a in (out, dx, z):  # NaN in, NaN out; its sign may follow the compiler's operand order
            a[np.isnan(a)] = np.nan
        assert z.tobytes() == out.tobytes()
        h.update(out.tobytes() + dx.tobytes())
print(C.build_info()["simd"], h.hexdigest())
"""


@needs_native
def test_gelu_isa_variants_bit_identical():
    # every variant (the hand-vectorised AVX2/AVX-512 loops, the baseline's scalar one with libm
    # fmaf) must give the same bits
    assert_variants_bit_identical(_ISA_CHILD)


def _gelu_in_child(n):  # runs in a forked child: must neither hang nor crash
    x = np.linspace(-5, 5, n, dtype=np.float32)
    y = np.empty_like(x)
    _C.gelu_forward(x, y)
    ok = _C.num_threads() == 1 and abs(float(y[-1]) - 5.0) < 1e-5
    os._exit(0 if ok else 3)


@needs_native
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")  # Python >= 3.12
def test_kernels_work_in_a_child_forked_after_parallel_use():
    """libgomp's pool does not survive fork(); the library runs serially in such a child."""
    import multiprocessing as mp

    n = 1 << 20  # several parallel chunks
    saved = _C.num_threads()
    _C.set_num_threads(2)
    try:
        _C.gelu_forward(np.ones(n, np.float32), np.empty(n, np.float32))  # start the pool
        proc = mp.get_context("fork").Process(target=_gelu_in_child, args=(n,))
        proc.start()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
            pytest.fail("a kernel call in a forked child hung")
        assert proc.exitcode == 0
    finally:
        _C.set_num_threads(saved)
    assert _C.num_threads() == saved


# ---------------------------------------------------------------- bad arguments
def _f32(*shape):
    return np.zeros(shape, dtype=np.float32)


@needs_native
class TestBadArguments:
    def test_wrong_python_type(self):
        with pytest.raises(TypeError, match=r"^x must be a numpy\.ndarray.*got list"):
            _C.gelu_forward([1.0, 2.0], _f32(2))
        with pytest.raises(TypeError, match=r"^out must be a numpy\.ndarray"):
            _C.gelu_forward(_f32(2), None)
        with pytest.raises(TypeError, match=r"^grad_out must be a numpy\.ndarray"):
            _C.gelu_backward(_f32(2), 3.0, _f32(2))

    @pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64, np.int32])
    def test_wrong_dtype(self, dtype):
        with pytest.raises(TypeError, match=r"^x must have dtype float32 or float64"):
            _C.gelu_forward(np.zeros(3, dtype=dtype), _f32(3))
        with pytest.raises(TypeError, match=r"^grad_in must have dtype float32 or float64"):
            _C.gelu_backward(_f32(3), _f32(3), np.zeros(3, dtype=dtype))

    def test_non_native_byte_order(self):
        x = np.zeros(3, dtype=np.dtype(np.float32).newbyteorder())
        with pytest.raises(TypeError, match=r"^x must have native byte order"):
            _C.gelu_forward(x, _f32(3))

    def test_mixed_dtypes_are_not_converted(self):
        with pytest.raises(TypeError, match=r"^out must have the same dtype as x"):
            _C.gelu_forward(_f32(4), np.zeros(4))
        with pytest.raises(TypeError, match=r"^grad_out must have the same dtype as x"):
            _C.gelu_backward(np.zeros(4), _f32(4), np.zeros(4))
        with pytest.raises(TypeError, match=r"^grad_in must have the same dtype as x"):
            _C.gelu_backward(_f32(4), _f32(4), np.zeros(4))

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"^out must have the same shape as x \(4,\), got \(5,\)"):
            _C.gelu_forward(_f32(4), _f32(5))
        with pytest.raises(ValueError, match=r"^out must have the same shape as x \(2, 3\), got \(3, 2\)"):
            _C.gelu_forward(_f32(2, 3), _f32(3, 2))
        with pytest.raises(ValueError, match=r"^grad_out must have the same shape as x"):
            _C.gelu_backward(_f32(4), _f32(6), _f32(4))
        with pytest.raises(ValueError, match=r"^grad_in must have the same shape as x"):
            _C.gelu_backward(_f32(4), _f32(4), _f32(4, 1))

    def test_read_only_output(self):
        out = _f32(4)
        out.flags.writeable = False
        with pytest.raises(ValueError, match=r"^out must be writeable"):
            _C.gelu_forward(_f32(4), out)
        with pytest.raises(ValueError, match=r"^grad_in must be writeable"):
            _C.gelu_backward(_f32(4), _f32(4), out)

    def test_non_contiguous_inputs_are_not_copied(self):
        with pytest.raises(ValueError, match=r"^x must be C-contiguous"):
            _C.gelu_forward(_f32(8)[::2], _f32(4))
        with pytest.raises(ValueError, match=r"^out must be C-contiguous"):
            _C.gelu_forward(_f32(3, 2), np.zeros((2, 3), dtype=np.float32).T)
        with pytest.raises(ValueError, match=r"^grad_out must be C-contiguous"):
            _C.gelu_backward(_f32(4), _f32(8)[::2], _f32(4))

    def test_misaligned(self):
        raw = np.zeros(4 * 4 + 1, dtype=np.uint8)
        x = raw[1:].view(np.float32)  # 4 floats starting one byte in
        assert not x.flags.aligned
        with pytest.raises(ValueError, match=r"^x must be aligned"):
            _C.gelu_forward(x, _f32(4))

    def test_overlap(self):
        buf = _f32(9)
        with pytest.raises(ValueError, match=r"^out must not overlap x"):
            _C.gelu_forward(buf[:8], buf[1:])
        x = _f32(5)
        with pytest.raises(ValueError, match=r"^grad_in must not overlap x"):
            _C.gelu_backward(x, _f32(5), x)
        g = _f32(5)
        with pytest.raises(ValueError, match=r"^grad_in must not overlap grad_out"):
            _C.gelu_backward(_f32(5), g, g)

    def test_approximate(self):
        with pytest.raises(ValueError, match=r"^approximate must be 'tanh' or 'none', got 'exact'"):
            _C.gelu_forward(_f32(2), _f32(2), "exact")
        with pytest.raises(ValueError, match=r"^approximate must be 'tanh' or 'none', got 'Tanh'"):
            _C.gelu_backward(_f32(2), _f32(2), _f32(2), approximate="Tanh")
        with pytest.raises(TypeError, match=r"^approximate must be a str"):
            _C.gelu_forward(_f32(2), _f32(2), None)

    def test_zero_size_and_zero_dim(self):
        assert _C.gelu_forward(_f32(0), _f32(0)).shape == (0,)
        x = np.array(1.0)  # 0-d
        y = np.empty_like(x)
        _C.gelu_forward(x, y, "none")
        assert y == pytest.approx(1.0 * 0.5 * (1 + math.erf(1 / math.sqrt(2))), rel=1e-15)


@needs_native
@pytest.mark.parametrize(
    "approximate,normal_above,fwd_bound,lo,hi",
    [
        # tanh: results under ~1e-36 flush to 0 below -9.9; clamps kLo = -10.05, kHi = 10.03
        ("tanh", -9.9, 8e-6, -10.05, 10.03),  # forward 7.1e-6 measured
        # erf: f is under ~1e-38 below -13; clamp kErfClamp = 13.27
        ("none", -13.0, 6e-6, -13.27, 13.27),  # forward 5.1e-6 measured
    ],
    ids=["tanh", "erf"],
)
def test_gelu_float32_relative_error_dense_grid(approximate, normal_above, fwd_bound, lo, hi):
    """float32 kernels (gelu_f32.inc: own exp2, explicit FMA, one division) against float64 on 1e6
    points in [-40, 40]: relative error where the result is a normal number and, for f', away from its
    root near x = -0.7518 (where any relative error is unbounded); exact limits beyond the clamps
    (f = x or -0, f' = 1 or 0), no NaN."""
    x = np.linspace(-40, 40, 1_000_001).astype(np.float32)
    y, dx = run_kernels(x, np.ones_like(x), approximate)
    x64 = x.astype(np.float64)
    f, df = ref_gelu(x64, approximate)
    keep = (x64 > normal_above) & (x64 != 0)
    assert np.max(np.abs(y[keep] - f[keep]) / np.abs(f[keep])) <= fwd_bound
    keep &= np.abs(x64 + 0.7517916) > 0.01
    assert np.max(np.abs(dx[keep] - df[keep]) / np.abs(df[keep])) <= 1e-5
    assert np.all(y[x64 <= lo] == 0) and np.all(dx[x64 <= lo] == 0)
    assert np.all(y[x64 >= hi] == x[x64 >= hi]) and np.all(dx[x64 >= hi] == 1)
