"""The CUDA kernels (pygpt._C.cuda, pygpt.cuda_kernels) against the float64 NumPy references.

Two kinds of tests:
  * everywhere (no GPU needed): the build reports its CUDA kernels and architectures; argument checks
    raise TypeError/ValueError before any device is touched; on a machine without a usable GPU a
    kernel call raises RuntimeError saying there is no CUDA device; PYGPT_NO_CUDA_KERNELS=1 hides them.
    The kernels' arithmetic itself is checked without a GPU by the C++ emulation test
    (cpp/tests/test_cuda_emu.cpp, ctest), against the CPU kernels.
  * marked `gpu` (need CuPy, a CUDA GPU and a build with the kernels; elsewhere reported as skipped,
    never passed): every kernel against the float64 reference on the CPU tests' shape grid
    (test_native.py, test_ops_native.py, test_attention_native.py); dropout and Adam bit-identical to
    the CPU kernels; the functional ops route CuPy arrays to the kernels, and agree with the CuPy
    reference path (PYGPT_NO_CUDA_KERNELS) and with the CPU.
Run the GPU part with `pytest -m gpu -rs tests/test_cuda_kernels.py`.
"""
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pygpt.functional as F
from pygpt import Tensor, backend, cuda_kernels
from pygpt.random import Generator, keep_threshold

_C = backend.native
BUILD = _C.build_info() if _C is not None else {}
K = getattr(_C, "cuda", None)
HAS_KERNELS = K is not None
EXPECTED = {"gelu_forward", "gelu_backward", "layer_norm_forward", "layer_norm_backward", "cross_entropy_forward",
            "cross_entropy_backward", "dropout", "adam_update", "attention_forward", "attention_backward"}

needs_kernels = pytest.mark.skipif(not HAS_KERNELS, reason="pygpt._C was built without CUDA kernels (no nvcc)")
no_device = HAS_KERNELS and K.device_count() == 0
GPU_OK = HAS_KERNELS and cuda_kernels.enabled() and backend.cuda_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason="needs CuPy, a CUDA GPU and pygpt._C built with CUDA "
                                                                "kernels (not run: no result either way)")]
DTYPES = [np.float32, np.float64]
IDS = ["float32", "float64"]


class FakeCuda:
    """An object with __cuda_array_interface__ and no memory behind it: for the checks that come first."""

    def __init__(self, shape, typestr="<f4", ptr=1 << 20, readonly=False, strides=None, **extra):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (ptr, readonly),
                                         "strides": strides, "version": 3, **extra}


def f32(*shape, ptr=1 << 20, **kw):
    return FakeCuda(shape, "<f4", ptr=ptr, **kw)


# ================================================================================ everywhere
def test_build_info_reports_cuda_kernels():
    if _C is None:
        pytest.skip(f"pygpt._C is not available: {backend._NATIVE_ERROR}")
    assert {"cuda_kernels", "cuda_architectures", "cuda_runtime"} <= set(BUILD)
    if not BUILD["cuda"]:
        assert BUILD["cuda_kernels"] == [] and K is None
        if os.environ.get("PYGPT_REQUIRE_NATIVE") == "1" and shutil.which("nvcc"):
            pytest.fail("nvcc is on PATH and PYGPT_REQUIRE_NATIVE=1, but pygpt._C was built without CUDA")
        pytest.skip("pygpt._C was built without CUDA (no nvcc at build time)")
    assert set(BUILD["cuda_kernels"]) == EXPECTED
    assert all(hasattr(K, name) for name in EXPECTED)
    archs = BUILD["cuda_architectures"]
    assert archs and all(isinstance(a, int) and a >= 50 for a in archs), archs
    assert isinstance(BUILD["cuda_runtime"], int) and BUILD["cuda_runtime"] >= 11000
    info = cuda_kernels.info()
    assert info["kernels"] == BUILD["cuda_kernels"] and info["architectures"] == archs


@needs_kernels
@pytest.mark.skipif(not no_device, reason="a CUDA device is present (the GPU tests cover this machine)")
def test_kernel_call_without_gpu_raises_runtime_error():
    calls = {
        "gelu_forward": lambda: K.gelu_forward(f32(8), f32(8, ptr=2 << 20)),
        "gelu_backward": lambda: K.gelu_backward(f32(8), f32(8, ptr=2 << 20), f32(8, ptr=3 << 20), "none"),
        "layer_norm_forward": lambda: K.layer_norm_forward(f32(2, 4), f32(4, ptr=2 << 20), f32(4, ptr=3 << 20),
                                                           f32(2, 4, ptr=4 << 20), f32(2, ptr=5 << 20),
                                                           f32(2, ptr=6 << 20)),
        "cross_entropy_forward": lambda: K.cross_entropy_forward(f32(2, 5), FakeCuda((2,), "<i8", ptr=2 << 20),
                                                                 f32(2, ptr=3 << 20), f32(2, ptr=4 << 20)),
        "dropout": lambda: K.dropout(f32(8), f32(8, ptr=2 << 20), 1, 100, 2.0),
        "adam_update": lambda: K.adam_update(f32(8), f32(8, ptr=2 << 20), f32(8, ptr=3 << 20), f32(8, ptr=4 << 20),
                                             decay=1.0, l2=0.0, one_minus_beta1=0.1, beta2=0.999,
                                             one_minus_beta2=0.001, bias_correction2_sqrt=1.0, eps=1e-8,
                                             step_size=1e-3),
        "attention_forward": lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 5, 8, ptr=2 << 20),
                                                         f32(1, 2, 5, 8, ptr=3 << 20), f32(1, 2, 5, 8, ptr=4 << 20),
                                                         f32(1, 2, 5, ptr=5 << 20)),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            call()
    # the Python side: CuPy arrays are what selects the kernels, so nothing changes for NumPy
    assert not cuda_kernels.usable(np.ones(3, np.float32))
    assert not cuda_kernels.attention_ok(*(np.ones((1, 1, 2, 2), np.float32),) * 3)


BAD = [  # (call, exception, message) -- all rejected before the device is looked at
    (lambda: K.gelu_forward(np.ones(4, np.float32), f32(4)), TypeError, "CUDA array"),
    (lambda: K.gelu_forward(f32(4), None), TypeError, "CUDA array"),
    (lambda: K.gelu_forward(FakeCuda((4,), "<i4"), f32(4, ptr=2 << 20)), TypeError, "float32 or float64"),
    (lambda: K.gelu_forward(FakeCuda((4,), ">f4"), f32(4, ptr=2 << 20)), TypeError, "byte order"),
    (lambda: K.gelu_forward(f32(4), FakeCuda((4,), "<f8", ptr=2 << 20)), TypeError, "same dtype"),
    (lambda: K.gelu_forward(f32(4), f32(5, ptr=2 << 20)), ValueError, "must have shape"),
    (lambda: K.gelu_forward(f32(4), f32(4, ptr=2 << 20, readonly=True)), ValueError, "writeable"),
    (lambda: K.gelu_forward(f32(4, 4), f32(4, 4, ptr=2 << 20, strides=(4, 16))), ValueError, "C-contiguous"),
    (lambda: K.gelu_forward(f32(4), f32(4, ptr=(1 << 20) + 8)), ValueError, "overlap"),
    (lambda: K.gelu_forward(f32(4, ptr=(1 << 20) + 2), f32(4, ptr=2 << 20)), ValueError, "aligned"),
    (lambda: K.gelu_forward(f32(4), f32(4, ptr=2 << 20), "exact"), ValueError, "approximate"),
    (lambda: K.gelu_forward(f32(4), f32(4, ptr=2 << 20), stream="0"), TypeError, "stream"),
    (lambda: K.gelu_forward(f32(4), f32(4, ptr=2 << 20, mask=object())), ValueError, "masked"),
    (lambda: K.gelu_backward(f32(4), f32(4, ptr=2 << 20), f32(4, ptr=2 << 20)), ValueError, "overlap"),
    (lambda: K.layer_norm_forward(f32(2, 4), f32(5, ptr=2 << 20), f32(4, ptr=3 << 20), f32(2, 4, ptr=4 << 20),
                                  f32(2, ptr=5 << 20), f32(2, ptr=6 << 20)), ValueError, "weight"),
    (lambda: K.layer_norm_backward(f32(2, 4), f32(4, ptr=2 << 20), f32(2, ptr=3 << 20), f32(2, ptr=4 << 20),
                                   f32(2, 4, ptr=5 << 20), None, f32(4, ptr=6 << 20)), ValueError, "workspace"),
    (lambda: K.cross_entropy_forward(f32(2, 5), FakeCuda((2,), "<i4", ptr=2 << 20), f32(2, ptr=3 << 20),
                                     f32(2, ptr=4 << 20)), TypeError, "int64"),
    (lambda: K.cross_entropy_forward(f32(2, 5), FakeCuda((3,), "<i8", ptr=2 << 20), f32(2, ptr=3 << 20),
                                     f32(2, ptr=4 << 20)), ValueError, "targets"),
    (lambda: K.cross_entropy_backward(f32(2, 5), FakeCuda((2,), "<i8", ptr=2 << 20), f32(2, ptr=3 << 20),
                                      f32(2, 5, ptr=(1 << 20) + 4)), ValueError, "overlap"),
    (lambda: K.dropout(f32(8), f32(8, ptr=2 << 20), 1, 2**32 + 1, 2.0), ValueError, "threshold"),
    (lambda: K.attention_forward(FakeCuda((1, 2, 5, 8), "<f8"), f32(1, 2, 5, 8, ptr=2 << 20),
                                 f32(1, 2, 5, 8, ptr=3 << 20), f32(1, 2, 5, 8, ptr=4 << 20), f32(1, 2, 5, ptr=5 << 20)),
     TypeError, "float32"),
    (lambda: K.attention_forward(f32(1, 2, 5, 300), f32(1, 2, 5, 300, ptr=2 << 20), f32(1, 2, 5, 300, ptr=3 << 20),
                                 f32(1, 2, 5, 300, ptr=4 << 20), f32(1, 2, 5, ptr=5 << 20)), ValueError, "head dim"),
    (lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 4, 8, ptr=2 << 20), f32(1, 2, 4, 8, ptr=3 << 20),
                                 f32(1, 2, 5, 8, ptr=4 << 20), f32(1, 2, 5, ptr=5 << 20)), ValueError, "Tk >= Tq"),
    (lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 5, 8, ptr=2 << 20), f32(1, 2, 5, 8, ptr=3 << 20),
                                 f32(1, 2, 5, 8, ptr=4 << 20), f32(1, 2, 5, ptr=5 << 20), True, None, 1.0),
     ValueError, "dropout_p"),
    (lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 5, 8, ptr=2 << 20), f32(1, 2, 5, 8, ptr=3 << 20),
                                 f32(1, 2, 5, 8, ptr=4 << 20), f32(1, 2, 5, ptr=5 << 20), True,
                                 FakeCuda((1, 5), "|u1", ptr=6 << 20)), TypeError, "bool"),
    (lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 5, 8, ptr=2 << 20), f32(1, 2, 5, 8, ptr=3 << 20),
                                 f32(1, 2, 5, 8, ptr=4 << 20, strides=(320, 160, 32, 8)), f32(1, 2, 5, ptr=5 << 20)),
     ValueError, "last dimension"),
    (lambda: K.attention_forward(f32(1, 2, 5, 8), f32(1, 2, 5, 8, ptr=2 << 20), f32(1, 2, 5, 8, ptr=3 << 20),
                                 f32(1, 2, 5, 8, ptr=(1 << 20) + 64), f32(1, 2, 5, ptr=5 << 20)), ValueError, "overlap"),
    (lambda: K.attention_backward(*(f32(1, 2, 5, 8, ptr=(i + 1) << 20) for i in range(4)), f32(1, 2, 5, ptr=5 << 20),
                                  *(f32(1, 2, 5, 8, ptr=(i + 6) << 20) for i in range(4))), ValueError, "workspace"),
]


@needs_kernels
@pytest.mark.parametrize("call,exc,msg", BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_bad_arguments_raise_before_the_device(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_no_cuda_kernels_env_var_hides_them():
    code = "from pygpt import cuda_kernels as c; print(c.enabled(), c.info()['reason'])"
    env = dict(os.environ, PYGPT_NO_CUDA_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.startswith("False") and "PYGPT_NO_CUDA_KERNELS" in out


def test_set_enabled_roundtrip():
    before = cuda_kernels.set_enabled(False)
    try:
        assert not cuda_kernels.enabled() and not cuda_kernels.usable(np.ones(2, np.float32))
    finally:
        cuda_kernels.set_enabled(before)
    assert cuda_kernels.enabled() == before


# ================================================================================ on a GPU
def _cp():
    import cupy

    return cupy


def _s():
    return _cp().cuda.get_current_stream().ptr


def _dev(a):
    return _cp().asarray(a)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 1023, 100003])
def test_gelu_matches_float64(n, dtype, approximate):
    from test_native import assert_close_to_reference

    cp = _cp()
    rng = np.random.default_rng(n)
    x = (3 * rng.standard_normal(n + 1)).astype(dtype)
    dy = rng.standard_normal(n + 1).astype(dtype)
    for off in (0, 1):  # 1: a view that is not 16-byte aligned (the element-wise path)
        xg, dyg = cp.asarray(x)[off:off + n], cp.asarray(dy)[off:off + n]
        y, dx = cp.empty_like(xg), cp.empty_like(xg)
        assert K.gelu_forward(xg, y, approximate, stream=_s()) is y
        assert K.gelu_backward(xg, dyg, dx, approximate, stream=_s()) is dx
        assert_close_to_reference(x[off:off + n], dy[off:off + n], y.get(), dx.get(), approximate)



@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_gelu_special_values_and_in_place(dtype, approximate):
    cp = _cp()
    x = cp.asarray(np.array([np.inf, -np.inf, np.nan, 1e30, -1e30], dtype=dtype))
    y, dx = cp.empty_like(x), cp.empty_like(x)
    K.gelu_forward(x, y, approximate, stream=_s())
    K.gelu_backward(x, cp.ones_like(x), dx, approximate, stream=_s())
    np.testing.assert_array_equal(y.get(), np.array([np.inf, 0, np.nan, 1e30, 0], dtype=dtype))
    np.testing.assert_array_equal(dx.get(), np.array([1, 0, np.nan, 1, 0], dtype=dtype))
    z = cp.asarray(np.linspace(-8, 8, 4099).astype(dtype))
    want = cp.empty_like(z)
    K.gelu_forward(z, want, approximate, stream=_s())
    K.gelu_forward(z, z, approximate, stream=_s())
    assert cp.array_equal(z, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (3, 5), (7, 17), (4, 33), (2, 3, 64), (5, 255), (130, 768),
                                   (1, 1600), (4096, 768)])
def test_layer_norm_matches_float64(shape, dtype):
    from test_ops_native import ln_bwd_ref, ln_ref, tol

    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w, b = rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, mean, rstd = cuda_kernels.layer_norm_forward(_dev(x), _dev(w), _dev(b), 1e-5)
    dx, dw, db = cuda_kernels.layer_norm_backward(_dev(x), _dev(w), mean, rstd, _dev(g))
    y64, mu64, r64 = ln_ref(x, w, b)
    dx64, dw64, db64 = ln_bwd_ref(x, w, g)
    t, rows = tol(dtype), x.size // shape[-1]
    np.testing.assert_allclose(y.get(), y64, rtol=t, atol=t * 4)
    np.testing.assert_allclose(mean.get(), mu64, rtol=t, atol=t)
    np.testing.assert_allclose(rstd.get(), r64, rtol=t)
    np.testing.assert_allclose(dx.get(), dx64, rtol=t, atol=t * np.abs(dx64).max(initial=1.0) * 4)
    np.testing.assert_allclose(dw.get(), dw64, rtol=t, atol=t * np.sqrt(rows) * 4)
    np.testing.assert_allclose(db.get(), db64, rtol=t, atol=t * np.sqrt(rows) * 4)
    # only the asked-for gradients, the same values
    gx, gw, gb = cuda_kernels.layer_norm_backward(_dev(x), _dev(w), mean, rstd, _dev(g), (False, True, False))
    assert gx is None and gb is None and _cp().array_equal(gw, dw)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("rows,V", [(1, 1), (1, 2), (3, 7), (5, 16), (4, 17), (2, 1023), (3, 1024), (2, 1025),
                                    (2, 3000), (3, 50257), (64, 50257)])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_matches_float64(rows, V, scale, dtype):
    from test_ops_native import ce_bwd_ref, ce_ref, tol

    rng = np.random.default_rng(rows * V)
    z = (scale * rng.standard_normal((rows, V))).astype(dtype)
    t = rng.integers(0, V, rows)
    if rows > 2:
        t[1] = -100
    loss, lse, tg = cuda_kernels.cross_entropy_forward(_dev(z), _dev(t), -100)
    loss64, lse64 = ce_ref(z, t)
    mag = 1 + np.abs(lse64) + np.abs(z).max(-1)
    assert np.all(np.abs(lse.get() - lse64) <= tol(dtype) * mag)
    assert np.all(np.abs(loss.get() - loss64) <= tol(dtype) * mag)
    rs = rng.standard_normal(rows).astype(dtype)
    d = cuda_kernels.cross_entropy_backward(_dev(z), tg, lse, None, _dev(rs), -100)
    ref = ce_bwd_ref(z, t, 1.0, rs)
    smax = np.abs(rs).max()
    np.testing.assert_allclose(d.get(), ref, rtol=tol(dtype) * 2, atol=tol(dtype) * smax * 0.1)
    zi = _dev(z)  # in place
    cuda_kernels.cross_entropy_backward(zi, tg, lse, zi, _dev(rs), -100)
    assert _cp().array_equal(zi, d)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_cross_entropy_extreme_logits_and_bad_targets(dtype):
    from test_ops_native import ce_bwd_ref

    V = 40
    z = np.zeros((5, V), dtype)
    z[0, :] = -np.inf
    z[0, 3] = 1.0
    z[1, :] = 60.0
    z[2, ::2] = -1e30
    z[3, 7] = 80.0
    z[4, :] = np.linspace(-100, 100, V)
    t = np.array([3, 5, 1, 7, 0])
    loss, lse, tg = cuda_kernels.cross_entropy_forward(_dev(z), _dev(t), -100)
    loss, lse_h = loss.get(), lse.get()
    assert np.isfinite(loss).all() and loss[0] == 0 and lse_h[0] == 1.0
    d = cuda_kernels.cross_entropy_backward(_dev(z), tg, lse, None, 1.0, -100).get()
    np.testing.assert_allclose(d, ce_bwd_ref(z, t, 1.0), rtol=1e-5, atol=1e-6)
    bad = np.array([3, 40, -5, 7, 0])  # out of range: NaN for those rows, never an out-of-bounds read
    loss, _, _ = cuda_kernels.cross_entropy_forward(_dev(z), _dev(bad), -100)
    loss = loss.get()
    assert np.isnan(loss[1]) and np.isnan(loss[2]) and loss[0] == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 7, 33, 1000, 100003])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.999])
def test_dropout_bit_identical_to_cpu_and_numpy(n, p, dtype):
    from test_ops_native import dropout_ref

    rng = np.random.default_rng(n)
    x = rng.standard_normal(n + 1).astype(dtype)
    scale = dtype(1.0 / (1.0 - p))
    for off in (0, 1):
        xs = x[off:off + n]
        got = cuda_kernels.dropout(_dev(x)[off:off + n], 987654321, keep_threshold(p), float(scale)).get()
        cpu = np.empty_like(xs)
        _C.dropout(np.ascontiguousarray(xs), cpu, 987654321, keep_threshold(p), float(scale))
        assert np.array_equal(got, cpu, equal_nan=True)
        assert np.array_equal(got, dropout_ref(xs, 987654321, p), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("decay,l2", [(1.0 - 1e-4, 0.0), (1.0, 0.01), (1.0, 0.0)])
@pytest.mark.parametrize("n", [1, 7, 65537, 200003])
def test_adam_bit_identical_to_cpu(n, decay, l2, dtype):
    rng = np.random.default_rng(n)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = (0.1 * rng.standard_normal(n)).astype(dtype), np.abs(0.1 * rng.standard_normal(n)).astype(dtype)
    coef = dict(decay=decay, l2=l2, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001,
                bias_correction2_sqrt=math.sqrt(1 - 0.999**3), eps=1e-8, step_size=1e-3 / (1 - 0.9**3))
    pg, gg, mg, vg = (_dev(a) for a in (p, g, m, v))
    cuda_kernels.adam_update(pg, gg, mg, vg, **coef)
    _C.adam_update(p, g, m, v, **coef)
    assert np.array_equal(pg.get(), p) and np.array_equal(mg.get(), m) and np.array_equal(vg.get(), v)


# ---------------------------------------------------------------------------------------- attention
def _run_attention(q, k, v, g, causal=True, key_mask=None, p=0.0, key=0):
    cp = _cp()
    mask = None if key_mask is None else cp.asarray(key_mask)
    out, lse, qd, kd, vd, mask = cuda_kernels.attention_forward(_dev(q), _dev(k), _dev(v), causal, mask, p, key)
    dq, dk, dv = cuda_kernels.attention_backward(qd, kd, vd, out, lse, _dev(g), causal, mask, p, key)
    return out.get(), dq.get(), dk.get(), dv.get(), lse.get()


def _check_attention(q, k, v, g, causal=True, key_mask=None, p=0.0, key=0, tol=2e-5):
    from test_attention_native import ref_attention, rel_err

    got = _run_attention(q, k, v, g, causal, key_mask, p, key)
    want = ref_attention(q, k, v, g, causal, key_mask, p, key)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert not np.isnan(a).any(), f"{name}: NaN"
        err = rel_err(a, b)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g} (q {q.shape}, k {k.shape})"
    return got


def _make(rng, B, H, Tq, Tk, d, mult=1.0):
    from test_attention_native import make

    return make(rng, B, H, Tq, Tk, d, np.float32, mult)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("B,H,Tq,Tk,d", [(1, 1, 1, 1, 1), (2, 3, 1, 9, 8), (1, 2, 64, 64, 64), (2, 2, 65, 65, 16),
                                         (1, 2, 130, 200, 3), (1, 1, 77, 77, 65), (1, 1, 40, 100, 130),
                                         (1, 1, 33, 70, 256), (2, 3, 300, 300, 64), (1, 2, 1000, 1000, 128)])
def test_attention_matches_float64(B, H, Tq, Tk, d, causal):
    rng = np.random.default_rng(B * 1000 + Tq * 10 + d)
    _check_attention(*_make(rng, B, H, Tq, Tk, d), causal=causal)


def test_attention_more_queries_than_keys():
    _check_attention(*_make(np.random.default_rng(1), 2, 2, 70, 3, 5), causal=False)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_attention_large_logits_no_worse_than_plain_float32(causal):
    from test_attention_native import ref_attention, rel_err

    q, k, v, g = _make(np.random.default_rng(3), 2, 2, 100, 100, 64, mult=30.0)
    got = _run_attention(q, k, v, g, causal)
    want = ref_attention(q, k, v, g, causal)
    plain = ref_attention(q, k, v, g, causal, dtype=np.float32)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, want, plain):
        assert np.isfinite(a).all(), name
        err, base = rel_err(a, b), rel_err(c, b)
        assert err <= max(2e-5, 4 * base), f"{name}: kernel error {err:.3g}, plain float32 {base:.3g}"


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_attention_key_mask_with_fully_padded_rows(causal):
    rng = np.random.default_rng(4)
    B, H, T, d = 3, 2, 90, 12
    q, k, v, g = _make(rng, B, H, T, T, d)
    mask = rng.random((B, T)) < 0.6
    mask[0, :] = False
    mask[1, :70] = False
    mask[2, 64:] = False
    out, dq, dk, dv, lse = _check_attention(q, k, v, g, causal, mask)
    assert (out[0] == 0).all() and (dq[0] == 0).all() and (dk[0] == 0).all() and (dv[0] == 0).all()
    assert np.isposinf(lse[0]).all()
    dead = np.broadcast_to(~mask[:, None, :, None], dk.shape)
    assert (dk[dead] == 0).all() and (dv[dead] == 0).all()


def test_attention_lse_is_log_sum_exp():
    q, k, v, g = _make(np.random.default_rng(5), 1, 2, 70, 80, 16)
    lse = _run_attention(q, k, v, g, causal=True)[4]
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2).astype(np.float64)) / 4.0
    s = np.where(np.arange(80)[None, :] <= np.arange(70)[:, None] + 10, s, -np.inf)
    want = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
    np.testing.assert_allclose(lse, want, rtol=4e-5, atol=4e-5)


def test_attention_packed_qkv_views_and_strided_out():
    from test_attention_native import ref_attention, rel_err

    cp = _cp()
    rng = np.random.default_rng(6)
    B, T, H, d = 2, 70, 3, 20
    qkv = rng.standard_normal((B, T, 3, H, d)).astype(np.float32)
    g = rng.standard_normal((B, T, H, d)).astype(np.float32).transpose(0, 2, 1, 3)
    qkv_d = cp.asarray(qkv)
    qd, kd, vd = (qkv_d[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    out, lse, q2, k2, v2, _ = cuda_kernels.attention_forward(qd, kd, vd, True, None, 0.0, 0)
    assert q2 is qd and k2 is kd and v2 is vd  # read through the strides, no copy
    dq, dk, dv = cuda_kernels.attention_backward(qd, kd, vd, out, lse, cp.asarray(np.ascontiguousarray(g)), True,
                                                 None, 0.0, 0)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    for a, b in zip((out.get(), dq.get(), dk.get(), dv.get()), ref_attention(q, k, v, g, True)):
        assert rel_err(a, b) <= 2e-5


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_attention_dropout_matches_reference_mask(p):
    key = 0x9E3779B97F4A7C15 ^ int(p * 1000)
    q, k, v, g = _make(np.random.default_rng(8), 2, 3, 70, 90, 16)
    _check_attention(q, k, v, g, True, None, p, key)
    _check_attention(q, k, v, g, False, None, p, key)
    # the very bits of the CPU kernel (and of pygpt.random): the two kernels agree to rounding
    from test_attention_native import rel_err, run_native

    cpu = run_native(q, k, v, g, True, None, p, key)
    gpu_ = _run_attention(q, k, v, g, True, None, p, key)
    for a, b in zip(gpu_[:4], cpu[:4]):
        assert rel_err(a, b.astype(np.float64)) <= 4e-5


def test_attention_dropout_rounding_of_threshold():
    p = 1.0 - 2.0**-34  # round(p·2³²) = 2³²: everything dropped
    q, k, v, g = _make(np.random.default_rng(9), 1, 1, 10, 10, 4)
    out, dq, dk, dv, _ = _run_attention(q, k, v, g, True, None, p, 5)
    assert (out == 0).all() and (dq == 0).all() and (dk == 0).all() and (dv == 0).all()


def test_attention_deterministic():
    q, k, v, g = _make(np.random.default_rng(10), 2, 4, 257, 257, 64)
    a = _run_attention(q, k, v, g, True, None, 0.1, 3)
    b = _run_attention(q, k, v, g, True, None, 0.1, 3)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_attention_long_sequence_memory_is_linear():
    cp = _cp()
    B, H, T, d = 1, 2, 8192, 64
    q, k, v, g = (cp.random.standard_normal((B, H, T, d), dtype=cp.float32) for _ in range(4))
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    out, lse, *_ = cuda_kernels.attention_forward(q, k, v, True, None, 0.0, 0)
    dq, dk, dv = cuda_kernels.attention_backward(q, k, v, out, lse, g, True, None, 0.0, 0)
    cp.cuda.Device().synchronize()
    extra = pool.used_bytes() - before
    assert extra <= 5 * q.nbytes, extra  # out, dq, dk, dv (+ lse, workspace): never a (T, T) matrix
    assert bool(cp.isfinite(dq).all())


def test_pointer_checks_on_a_gpu():
    cp = _cp()
    host = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="device memory|CUDA pointer"):
        K.gelu_forward(FakeCuda((8,), ptr=host.ctypes.data), cp.empty(8, cp.float32), stream=_s())
    x = cp.ones(16, cp.float32)
    past = FakeCuda((1 << 30,), ptr=x.data.ptr)  # claims far more than its allocation
    with pytest.raises(ValueError, match="past the end"):
        K.gelu_forward(past, FakeCuda((1 << 30,), ptr=x.data.ptr + (1 << 33)), stream=_s())


# ---------------------------------------------------------------------------------------- the ops on CuPy
class _Spy:
    def __init__(self, real):
        self._real, self.calls = real, {}

    def __getattr__(self, name):
        fn = getattr(self._real, name)

        def wrapped(*a, **kw):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*a, **kw)

        return wrapped


def _gpt_step_ops():
    """One small forward + backward through every op with a CUDA kernel, on CuPy float32."""
    rng = np.random.default_rng(0)
    leaves = [Tensor(rng.standard_normal((2, 33, 48)).astype(np.float32), requires_grad=True),
              Tensor(1 + 0.1 * rng.standard_normal(48).astype(np.float32), requires_grad=True),
              Tensor(0.1 * rng.standard_normal(48).astype(np.float32), requires_grad=True)]
    x, w, b = (t.to("cuda") for t in leaves)  # differentiable moves: the gradients come back to the leaves
    h = F.layer_norm(x, w, b)
    h = F.gelu(h) + F.gelu(h, "none")
    h = F.dropout(h, 0.1, Generator(1))
    qkv = h.reshape(2, 33, 3, 4, 4)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    a = F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.1, generator=Generator(2))
    logits = a.transpose(0, 2, 1, 3).reshape(2, 33, 16)
    t = rng.integers(0, 16, (2, 33))
    t[0, :3] = -100
    loss = F.cross_entropy(logits, t)
    loss.backward()
    return loss.item(), [t.grad for t in leaves]


def test_ops_route_cupy_arrays_to_the_kernels_and_match_the_cupy_reference():
    spy = _Spy(K)
    saved = cuda_kernels._kernels
    cuda_kernels._kernels = spy
    try:
        loss_k, grads_k = _gpt_step_ops()
    finally:
        cuda_kernels._kernels = saved
    for name in ("gelu_forward", "gelu_backward", "layer_norm_forward", "layer_norm_backward", "dropout",
                 "attention_forward", "attention_backward", "cross_entropy_forward", "cross_entropy_backward"):
        assert spy.calls.get(name, 0) >= 1, (name, spy.calls)
    before = cuda_kernels.set_enabled(False)
    try:
        loss_r, grads_r = _gpt_step_ops()
    finally:
        cuda_kernels.set_enabled(before)
    np.testing.assert_allclose(loss_k, loss_r, rtol=1e-5)
    for a, b in zip(grads_k, grads_r):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


_GPU_TESTS = [name for name in list(globals()) if name.startswith("test_") and name not in {
    "test_build_info_reports_cuda_kernels", "test_kernel_call_without_gpu_raises_runtime_error",
    "test_bad_arguments_raise_before_the_device", "test_no_cuda_kernels_env_var_hides_them",
    "test_set_enabled_roundtrip"}]
for _name in _GPU_TESTS:  # every test below the "on a GPU" line: marked gpu, skipped (with the reason) without one
    _fn = globals()[_name]
    for _mark in gpu:
        _fn = _mark(_fn)
    globals()[_name] = _fn
