"""Bad arguments for every public entry point of the C++ extension ``pygpt._C``.

One table (``CASES``) lists, for each entry point (module function, class constructor, method or
property, e.g. ``"gelu_forward"``, ``"BPE"``, ``"BPE.decode"``), calls with bad arguments: wrong
type or dtype, None, wrong shape or size, negative or out-of-range values and ids, read-only outputs,
non-contiguous inputs, uninitialized ``self`` -- and the edge calls that must simply work (size 0).
Each bad call must raise ValueError, TypeError, IndexError or RuntimeError whose message names the
argument (or the offending token/id), and nothing may crash.

* ``test_every_entry_point_has_bad_argument_cases`` fails when ``_C`` gains an entry point that has
  no row here: a new kernel must add its bad-argument cases. Exempt: CUDA entry points (names starting
  with ``cuda_``, any name containing ``cuda``, anything in a submodule such as ``_C.cuda``), which
  need a GPU and are tested in tests/test_cuda.py.
* ``test_no_case_crashes_the_interpreter`` first runs the whole table in child interpreters, so a
  segfault or a sanitizer abort shows up as a failure naming the case (and the run goes on); the
  parametrized ``test_case`` then runs each call in-process, except those that crashed the child.

Other files test many of the same errors with their exact messages (tests/test_native.py,
test_ops_native.py, test_attention_native.py, test_bpe_fast.py); this table is the complete list.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Callable

import numpy as np
import pytest

from pygpt import backend

_C = backend.native
if _C is None:
    if os.environ.get("PYGPT_REQUIRE_NATIVE", "") == "1":
        raise RuntimeError(f"PYGPT_REQUIRE_NATIVE=1 but pygpt._C is not available: {backend._NATIVE_ERROR}")
    pytest.skip(f"pygpt._C is not available: {backend._NATIVE_ERROR}", allow_module_level=True)

ALLOWED = (ValueError, TypeError, IndexError, RuntimeError)
OK = None  # expected outcome of an edge call that must succeed


class Case:
    def __init__(self, entry: str, label: str, call: Callable[[], object], exc: type | None, names: tuple = ()):
        self.entry = entry  # "gelu_forward", "BPE", "BPE.decode", ...
        self.label = label
        self.call = call
        self.exc = exc  # the exception expected (one of ALLOWED), or OK
        self.names = names  # the message must mention one of these (the argument, or the bad token/id)

    @property
    def id(self) -> str:
        return f"{self.entry}:{self.label}"


# ---------------------------------------------------------------------------------------------
# argument builders (fresh arrays for every call)


def f32(*shape):
    return np.zeros(shape, np.float32)


def f64(*shape):
    return np.zeros(shape, np.float64)


def i64(*shape):
    return np.zeros(shape, np.int64)


def ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def strided(a):
    """A non-contiguous view with a's shape and values (every other element of a bigger array)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    v = big[..., ::2]
    v[...] = a
    return v


_tmp: list[str] = []


def tmpdir() -> str:
    if not _tmp:
        _tmp.append(tempfile.mkdtemp(prefix="pygpt-badargs-"))
        atexit.register(shutil.rmtree, _tmp[0], True)
    return _tmp[0]


def tmpfile(name: str, data: bytes) -> str:
    path = os.path.join(tmpdir(), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


RANKS = {bytes([i]): i for i in range(256)} | {b"ab": 256}
SPECIALS = {"<|e|>": 257}
N_VOCAB = 258


def bpe():
    return _C.BPE(RANKS, SPECIALS)


def counts(words=((b"ab", 3), (b"abc", 2))):
    w = _C.BPEWordCounts()
    for word, c in words:
        w.add(word, c)
    return w


def uninit(cls):
    """An instance whose C++ object was never constructed (__new__ without __init__)."""
    return cls.__new__(cls)


# ---- the good arguments of each array entry point, as dicts of fresh arrays


def ln_fwd(**kw):
    a = dict(x=f32(2, 4), weight=f32(4), bias=f32(4), out=f32(2, 4), mean=f32(2), rstd=f32(2), eps=1e-5)
    a.update(kw)
    return lambda: _C.layer_norm_forward(**a)


def ln_bwd(**kw):
    a = dict(x=f32(2, 4), weight=f32(4), mean=f32(2), rstd=f32(2), grad_out=f32(2, 4), grad_in=f32(2, 4),
             grad_weight=f32(4), grad_bias=f32(4))
    a.update(kw)
    return lambda: _C.layer_norm_backward(**a)


def ce_fwd(**kw):
    a = dict(logits=f32(3, 5), targets=i64(3), loss=f32(3), lse=f32(3), ignore_index=-100)
    a.update(kw)
    return lambda: _C.cross_entropy_forward(**a)


def ce_fused(**kw):
    a = dict(logits=f32(3, 5), targets=i64(3), loss=f32(3), lse=f32(3), scale=1.0, ignore_index=-100)
    a.update(kw)
    return lambda: _C.cross_entropy_fused(**a)


def ce_bwd(**kw):
    a = dict(logits=f32(3, 5), targets=i64(3), lse=f32(3), grad_logits=f32(3, 5), scale=1.0, row_scale=None,
             ignore_index=-100)
    a.update(kw)
    return lambda: _C.cross_entropy_backward(**a)


ADAM_KW = dict(decay=1.0, l2=0.0, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001,
               bias_correction2_sqrt=1.0, eps=1e-8, step_size=0.1)


def adam(drop=(), **kw):
    a = dict(param=f32(4), grad=f32(4), exp_avg=f32(4), exp_avg_sq=f32(4), **ADAM_KW)
    a.update(kw)
    for k in drop:
        del a[k]
    return lambda: _C.adam_update(**a)


def emb(**kw):
    a = dict(ids=i64(3), grad_out=f32(3, 4), grad_weight=f32(5, 4))
    a.update(kw)
    return lambda: _C.embedding_backward(**a)


def drop(**kw):
    a = dict(x=f32(4), out=f32(4), key=1, threshold=0, scale=1.0, offset=0)
    a.update(kw)
    return lambda: _C.dropout(**a)


def att_fwd(B=1, H=2, Tq=3, Tk=4, d=4, **kw):
    a = dict(q=f32(B, H, Tq, d), k=f32(B, H, Tk, d), v=f32(B, H, Tk, d), out=f32(B, H, Tq, d), lse=f32(B, H, Tq),
             causal=True, key_mask=None, dropout_p=0.0, dropout_key=0)
    a.update(kw)
    return lambda: _C.attention_forward(**a)


def att_bwd(B=1, H=2, Tq=3, Tk=4, d=4, **kw):
    a = dict(q=f32(B, H, Tq, d), k=f32(B, H, Tk, d), v=f32(B, H, Tk, d), out=f32(B, H, Tq, d), lse=f32(B, H, Tq),
             grad_out=f32(B, H, Tq, d), grad_q=f32(B, H, Tq, d), grad_k=f32(B, H, Tk, d), grad_v=f32(B, H, Tk, d),
             causal=True, key_mask=None, dropout_p=0.0, dropout_key=0)
    a.update(kw)
    return lambda: _C.attention_backward(**a)


def gelu_f(x=None, out=None, approximate="tanh"):
    x = f32(4) if x is None else x
    out = f32(4) if out is None else out
    return lambda: _C.gelu_forward(x, out, approximate)


def gelu_b(x=None, grad_out=None, grad_in=None, approximate="tanh"):
    x = f32(4) if x is None else x
    grad_out = f32(4) if grad_out is None else grad_out
    grad_in = f32(4) if grad_in is None else grad_in
    return lambda: _C.gelu_backward(x, grad_out, grad_in, approximate)


# ---------------------------------------------------------------------------------------------
# the table

def _cases() -> list[Case]:
    C = []

    def add(entry, label, call, exc, *names):
        C.append(Case(entry, label, call, exc, names))

    # ---- module info / threads
    add("build_info", "extra argument", lambda: _C.build_info(1), TypeError, "build_info")
    add("num_threads", "extra argument", lambda: _C.num_threads(1), TypeError, "num_threads")
    for bad in (0, -1, 1025):
        add("set_num_threads", f"n={bad}", lambda bad=bad: _C.set_num_threads(bad), ValueError, "n")
    for bad in (None, "2", 1.5, 2**40):
        add("set_num_threads", f"n={bad!r}", lambda bad=bad: _C.set_num_threads(bad), TypeError, "n")

    # ---- GELU
    add("gelu_forward", "x None", lambda: _C.gelu_forward(None, f32(4)), TypeError, "x")
    add("gelu_forward", "x list", lambda: _C.gelu_forward([1.0], f32(1)), TypeError, "x")
    add("gelu_forward", "x int32", gelu_f(x=np.zeros(4, np.int32)), TypeError, "x")
    add("gelu_forward", "x float16", gelu_f(x=np.zeros(4, np.float16)), TypeError, "x")
    add("gelu_forward", "x non-contiguous", gelu_f(x=strided(f32(4))), ValueError, "x")
    add("gelu_forward", "out None", lambda: _C.gelu_forward(f32(4), None), TypeError, "out")
    add("gelu_forward", "out float64", gelu_f(out=f64(4)), TypeError, "out")
    add("gelu_forward", "out size 5", gelu_f(out=f32(5)), ValueError, "out")
    add("gelu_forward", "out shape (2, 2)", gelu_f(out=f32(2, 2)), ValueError, "out")
    add("gelu_forward", "out read-only", gelu_f(out=ro(f32(4))), ValueError, "out")
    add("gelu_forward", "out non-contiguous", gelu_f(out=strided(f32(4))), ValueError, "out")
    add("gelu_forward", "approximate None", gelu_f(approximate=None), TypeError, "approximate")
    add("gelu_forward", "approximate 'exact'", gelu_f(approximate="exact"), ValueError, "approximate")
    add("gelu_forward", "size 0", gelu_f(x=f32(0), out=f32(0)), OK)
    add("gelu_forward", "size 0, 2-D", gelu_f(x=f32(3, 0), out=f32(3, 0)), OK)
    add("gelu_backward", "x None", lambda: _C.gelu_backward(None, f32(4), f32(4)), TypeError, "x")
    add("gelu_backward", "x int64", gelu_b(x=i64(4)), TypeError, "x")
    add("gelu_backward", "grad_out None", lambda: _C.gelu_backward(f32(4), None, f32(4)), TypeError, "grad_out")
    add("gelu_backward", "grad_out float64", gelu_b(grad_out=f64(4)), TypeError, "grad_out")
    add("gelu_backward", "grad_out size 3", gelu_b(grad_out=f32(3)), ValueError, "grad_out")
    add("gelu_backward", "grad_out non-contiguous", gelu_b(grad_out=strided(f32(4))), ValueError, "grad_out")
    add("gelu_backward", "grad_in read-only", gelu_b(grad_in=ro(f32(4))), ValueError, "grad_in")
    add("gelu_backward", "grad_in size 5", gelu_b(grad_in=f32(5)), ValueError, "grad_in")
    buf = f32(4)
    add("gelu_backward", "grad_in is x", gelu_b(x=buf, grad_in=buf), ValueError, "grad_in")
    add("gelu_backward", "approximate 3", gelu_b(approximate=3), TypeError, "approximate")
    add("gelu_backward", "size 0", gelu_b(x=f32(0), grad_out=f32(0), grad_in=f32(0)), OK)

    # ---- LayerNorm
    add("layer_norm_forward", "x None", ln_fwd(x=None), TypeError, "x")
    add("layer_norm_forward", "x int64", ln_fwd(x=i64(2, 4)), TypeError, "x")
    add("layer_norm_forward", "x 0-d", ln_fwd(x=np.zeros((), np.float32)), ValueError, "x")
    add("layer_norm_forward", "x last dim 0", ln_fwd(x=f32(2, 0), weight=f32(0), bias=f32(0), out=f32(2, 0)),
        ValueError, "x")
    add("layer_norm_forward", "x non-contiguous", ln_fwd(x=strided(f32(2, 4))), ValueError, "x")
    add("layer_norm_forward", "weight size 5", ln_fwd(weight=f32(5)), ValueError, "weight")
    add("layer_norm_forward", "weight float64", ln_fwd(weight=f64(4)), TypeError, "weight")
    add("layer_norm_forward", "bias None", ln_fwd(bias=None), TypeError, "bias")
    add("layer_norm_forward", "out read-only", ln_fwd(out=ro(f32(2, 4))), ValueError, "out")
    add("layer_norm_forward", "out shape (4, 2)", ln_fwd(out=f32(4, 2)), ValueError, "out")
    add("layer_norm_forward", "mean size 3", ln_fwd(mean=f32(3)), ValueError, "mean")
    add("layer_norm_forward", "rstd read-only", ln_fwd(rstd=ro(f32(2))), ValueError, "rstd")
    add("layer_norm_forward", "rstd None", ln_fwd(rstd=None), TypeError, "rstd")
    add("layer_norm_forward", "eps -1", ln_fwd(eps=-1.0), ValueError, "eps")
    add("layer_norm_forward", "eps nan", ln_fwd(eps=float("nan")), ValueError, "eps")
    add("layer_norm_forward", "eps None", ln_fwd(eps=None), TypeError, "eps")
    add("layer_norm_forward", "0 rows", ln_fwd(x=f32(0, 4), out=f32(0, 4), mean=f32(0), rstd=f32(0)), OK)
    add("layer_norm_backward", "x float16", ln_bwd(x=np.zeros((2, 4), np.float16)), TypeError, "x")
    add("layer_norm_backward", "x None", ln_bwd(x=None), TypeError, "x")
    add("layer_norm_backward", "weight size 3", ln_bwd(weight=f32(3)), ValueError, "weight")
    add("layer_norm_backward", "mean float64", ln_bwd(mean=f64(2)), TypeError, "mean")
    add("layer_norm_backward", "rstd size 3", ln_bwd(rstd=f32(3)), ValueError, "rstd")
    add("layer_norm_backward", "grad_out None", ln_bwd(grad_out=None), TypeError, "grad_out")
    add("layer_norm_backward", "grad_out non-contiguous", ln_bwd(grad_out=strided(f32(2, 4))), ValueError,
        "grad_out")
    add("layer_norm_backward", "grad_in read-only", ln_bwd(grad_in=ro(f32(2, 4))), ValueError, "grad_in")
    add("layer_norm_backward", "grad_in size 8", ln_bwd(grad_in=f32(8)), ValueError, "grad_in")
    add("layer_norm_backward", "grad_weight size 5", ln_bwd(grad_weight=f32(5)), ValueError, "grad_weight")
    add("layer_norm_backward", "grad_weight read-only", ln_bwd(grad_weight=ro(f32(4))), ValueError, "grad_weight")
    add("layer_norm_backward", "grad_bias int64", ln_bwd(grad_bias=i64(4)), TypeError, "grad_bias")
    add("layer_norm_backward", "0 rows", ln_bwd(x=f32(0, 4), mean=f32(0), rstd=f32(0), grad_out=f32(0, 4),
                                                grad_in=f32(0, 4)), OK)

    # ---- cross-entropy
    add("cross_entropy_forward", "logits None", ce_fwd(logits=None), TypeError, "logits")
    add("cross_entropy_forward", "logits V=0", ce_fwd(logits=f32(3, 0)), ValueError, "logits")
    add("cross_entropy_forward", "logits non-contiguous", ce_fwd(logits=strided(f32(3, 5))), ValueError, "logits")
    add("cross_entropy_forward", "targets int32", ce_fwd(targets=np.zeros(3, np.int32)), TypeError, "targets")
    add("cross_entropy_forward", "targets float64", ce_fwd(targets=f64(3)), TypeError, "targets")
    add("cross_entropy_forward", "targets list", ce_fwd(targets=[0, 1, 2]), TypeError, "targets")
    add("cross_entropy_forward", "targets size 4", ce_fwd(targets=i64(4)), ValueError, "targets")
    for bad in (-1, 5, 2**40, -(2**63)):
        add("cross_entropy_forward", f"target {bad}", ce_fwd(targets=np.array([0, bad, 1])), ValueError, "targets")
    add("cross_entropy_forward", "loss read-only", ce_fwd(loss=ro(f32(3))), ValueError, "loss")
    add("cross_entropy_forward", "loss shape (3, 1)", ce_fwd(loss=f32(3, 1)), ValueError, "loss")
    add("cross_entropy_forward", "lse None", ce_fwd(lse=None), TypeError, "lse")
    add("cross_entropy_forward", "lse float64", ce_fwd(lse=f64(3)), TypeError, "lse")
    add("cross_entropy_forward", "ignore_index None", ce_fwd(ignore_index=None), TypeError, "ignore_index")
    add("cross_entropy_forward", "ignore_index 2**70", ce_fwd(ignore_index=2**70), TypeError, "ignore_index")
    add("cross_entropy_forward", "0 rows", ce_fwd(logits=f32(0, 5), targets=i64(0), loss=f32(0), lse=f32(0)), OK)
    add("cross_entropy_backward", "logits int64", ce_bwd(logits=i64(3, 5)), TypeError, "logits")
    for bad in (-1, 5):
        add("cross_entropy_backward", f"target {bad}", ce_bwd(targets=np.array([0, bad, 1])), ValueError, "targets")
    add("cross_entropy_backward", "targets None", ce_bwd(targets=None), TypeError, "targets")
    add("cross_entropy_backward", "lse size 4", ce_bwd(lse=f32(4)), ValueError, "lse")
    add("cross_entropy_backward", "grad_logits read-only", ce_bwd(grad_logits=ro(f32(3, 5))), ValueError,
        "grad_logits")
    add("cross_entropy_backward", "grad_logits None", ce_bwd(grad_logits=None), TypeError, "grad_logits")
    add("cross_entropy_backward", "grad_logits shape (5, 3)", ce_bwd(grad_logits=f32(5, 3)), ValueError,
        "grad_logits")
    add("cross_entropy_backward", "grad_logits non-contiguous", ce_bwd(grad_logits=strided(f32(3, 5))),
        ValueError, "grad_logits")
    add("cross_entropy_backward", "row_scale size 4", ce_bwd(row_scale=f32(4)), ValueError, "row_scale")
    add("cross_entropy_backward", "row_scale int64", ce_bwd(row_scale=i64(3)), TypeError, "row_scale")
    add("cross_entropy_backward", "scale '1'", ce_bwd(scale="1"), TypeError, "scale")
    add("cross_entropy_backward", "0 rows", ce_bwd(logits=f32(0, 5), targets=i64(0), lse=f32(0),
                                                   grad_logits=f32(0, 5)), OK)

    cf = "cross_entropy_fused"
    add(cf, "logits None", ce_fused(logits=None), TypeError, "logits")
    add(cf, "logits int64", ce_fused(logits=i64(3, 5)), TypeError, "logits")
    add(cf, "logits read-only", ce_fused(logits=ro(f32(3, 5))), ValueError, "logits")
    add(cf, "logits V=0", ce_fused(logits=f32(3, 0)), ValueError, "logits")
    add(cf, "logits non-contiguous", ce_fused(logits=strided(f32(3, 5))), ValueError, "logits")
    add(cf, "targets int32", ce_fused(targets=np.zeros(3, np.int32)), TypeError, "targets")
    add(cf, "targets size 2", ce_fused(targets=i64(2)), ValueError, "targets")
    for bad in (-1, 5):
        add(cf, f"target {bad}", ce_fused(targets=np.array([0, bad, 1])), ValueError, "targets")
    add(cf, "loss read-only", ce_fused(loss=ro(f32(3))), ValueError, "loss")
    add(cf, "loss shape (3, 5)", ce_fused(loss=f32(3, 5)), ValueError, "loss")
    add(cf, "lse float64", ce_fused(lse=f64(3)), TypeError, "lse")
    z = f32(4, 5)
    add(cf, "lse inside logits", ce_fused(logits=z[:3], lse=z[2, :3]), ValueError, "lse")
    add(cf, "scale '1'", ce_fused(scale="1"), TypeError, "scale")
    add(cf, "ignore_index 2**70", ce_fused(ignore_index=2**70), TypeError, "ignore_index")
    add(cf, "0 rows", ce_fused(logits=f32(0, 5), targets=i64(0), loss=f32(0), lse=f32(0)), OK)

    # ---- Adam
    add("adam_update", "param None", adam(param=None), TypeError, "param")
    add("adam_update", "param int64", adam(param=i64(4)), TypeError, "param")
    add("adam_update", "param read-only", adam(param=ro(f32(4))), ValueError, "param")
    add("adam_update", "param non-contiguous", adam(param=strided(f32(4))), ValueError, "param")
    add("adam_update", "grad size 5", adam(grad=f32(5)), ValueError, "grad")
    add("adam_update", "grad float64", adam(grad=f64(4)), TypeError, "grad")
    add("adam_update", "exp_avg read-only", adam(exp_avg=ro(f32(4))), ValueError, "exp_avg")
    add("adam_update", "exp_avg_sq shape (2, 2)", adam(exp_avg_sq=f32(2, 2)), ValueError, "exp_avg_sq")
    add("adam_update", "eps missing", adam(drop=("eps",)), TypeError, "eps")
    add("adam_update", "step_size None", adam(step_size=None), TypeError, "step_size")
    add("adam_update", "size 0", adam(param=f32(0), grad=f32(0), exp_avg=f32(0), exp_avg_sq=f32(0)), OK)

    # ---- embedding backward
    add("embedding_backward", "ids None", emb(ids=None), TypeError, "ids")
    add("embedding_backward", "ids int32", emb(ids=np.zeros(3, np.int32)), TypeError, "ids")
    add("embedding_backward", "ids non-contiguous", emb(ids=np.zeros(6, np.int64)[::2]), ValueError, "ids")
    for bad in (-1, 5, 2**62, -(2**63)):
        add("embedding_backward", f"id {bad}", emb(ids=np.array([0, 1, bad])), ValueError, "ids")
    add("embedding_backward", "grad_out shape (4, 3)", emb(grad_out=f32(4, 3)), ValueError, "grad_out")
    add("embedding_backward", "grad_out float64", emb(grad_out=f64(3, 4)), TypeError, "grad_out")
    add("embedding_backward", "grad_weight 1-D", emb(grad_weight=f32(20)), ValueError, "grad_weight")
    add("embedding_backward", "grad_weight read-only", emb(grad_weight=ro(f32(5, 4))), ValueError, "grad_weight")
    add("embedding_backward", "V=0 with ids", emb(ids=i64(1), grad_out=f32(1, 4), grad_weight=f32(0, 4)),
        ValueError, "ids")
    add("embedding_backward", "no ids", emb(ids=i64(0), grad_out=f32(0, 4)), OK)
    add("embedding_backward", "V=0, no ids", emb(ids=i64(0), grad_out=f32(0, 4), grad_weight=f32(0, 4)), OK)

    # ---- dropout
    add("dropout", "x None", drop(x=None), TypeError, "x")
    add("dropout", "x non-contiguous", drop(x=strided(f32(4))), ValueError, "x")
    add("dropout", "out read-only", drop(out=ro(f32(4))), ValueError, "out")
    add("dropout", "out size 5", drop(out=f32(5)), ValueError, "out")
    add("dropout", "out float64", drop(out=f64(4)), TypeError, "out")
    for bad in (-1, 2**64):
        add("dropout", f"key {bad}", drop(key=bad), TypeError, "key")
    add("dropout", "threshold 2**32 + 1", drop(threshold=2**32 + 1), ValueError, "threshold")
    add("dropout", "threshold -1", drop(threshold=-1), TypeError, "threshold")
    add("dropout", "scale None", drop(scale=None), TypeError, "scale")
    add("dropout", "offset -1", drop(offset=-1), TypeError, "offset")
    add("dropout", "size 0", drop(x=f32(0), out=f32(0)), OK)

    # ---- attention (tests/test_attention_native.py has the full list with messages)
    add("attention_forward", "q None", att_fwd(q=None), TypeError, "q")
    add("attention_forward", "q int32", att_fwd(q=np.zeros((1, 2, 3, 4), np.int32)), TypeError, "q")
    add("attention_forward", "q 3-D", att_fwd(q=f32(2, 3, 4)), ValueError, "q")
    add("attention_forward", "q negative stride", att_fwd(q=f32(1, 2, 3, 4)[:, :, ::-1]), ValueError, "q")
    add("attention_forward", "q last dim strided", att_fwd(q=strided(f32(1, 2, 3, 4))), ValueError, "q")
    add("attention_forward", "head dim 0", att_fwd(d=0), ValueError, "head dim")
    add("attention_forward", "head dim 257", att_fwd(d=257), ValueError, "head dim")
    add("attention_forward", "k shape", att_fwd(k=f32(1, 1, 4, 4)), ValueError, "k")
    add("attention_forward", "v float64", att_fwd(v=f64(1, 2, 4, 4)), TypeError, "v")
    add("attention_forward", "out read-only", att_fwd(out=ro(f32(1, 2, 3, 4))), ValueError, "out")
    add("attention_forward", "out aliasing itself",
        att_fwd(out=np.lib.stride_tricks.as_strided(f32(4), (1, 2, 3, 4), (0, 0, 0, 4), writeable=True)),
        ValueError, "out")
    add("attention_forward", "lse shape", att_fwd(lse=f32(1, 2, 4)), ValueError, "lse")
    add("attention_forward", "lse read-only", att_fwd(lse=ro(f32(1, 2, 3))), ValueError, "lse")
    add("attention_forward", "lse None", att_fwd(lse=None), TypeError, "lse")
    add("attention_forward", "causal None", att_fwd(causal=None), TypeError, "causal")
    add("attention_forward", "causal, Tk < Tq", att_fwd(Tq=4, Tk=3), ValueError, "Tk")
    add("attention_forward", "key_mask uint8", att_fwd(key_mask=np.ones((1, 4), np.uint8)), TypeError, "key_mask")
    add("attention_forward", "key_mask shape", att_fwd(key_mask=np.ones((1, 5), bool)), ValueError, "key_mask")
    add("attention_forward", "dropout_p 1.0", att_fwd(dropout_p=1.0), ValueError, "dropout_p")
    add("attention_forward", "dropout_p -0.1", att_fwd(dropout_p=-0.1), ValueError, "dropout_p")
    add("attention_forward", "dropout_p None", att_fwd(dropout_p=None), TypeError, "dropout_p")
    add("attention_forward", "dropout_key -1", att_fwd(dropout_key=-1), ValueError, "dropout_key")
    add("attention_forward", "dropout_key 2**64", att_fwd(dropout_key=2**64), ValueError, "dropout_key")
    add("attention_forward", "B=0", att_fwd(B=0), OK)
    add("attention_forward", "Tk=0, not causal", att_fwd(Tk=0, causal=False), OK)
    add("attention_backward", "grad_out None", att_bwd(grad_out=None), TypeError, "grad_out")
    add("attention_backward", "grad_out float64", att_bwd(grad_out=f64(1, 2, 3, 4)), TypeError, "grad_out")
    add("attention_backward", "grad_q read-only", att_bwd(grad_q=ro(f32(1, 2, 3, 4))), ValueError, "grad_q")
    add("attention_backward", "grad_k shape", att_bwd(grad_k=f32(1, 2, 3, 4)), ValueError, "grad_k")
    add("attention_backward", "grad_v None", att_bwd(grad_v=None), TypeError, "grad_v")
    add("attention_backward", "out 3-D", att_bwd(out=f32(2, 3, 4)), ValueError, "out")
    add("attention_backward", "lse shape", att_bwd(lse=f32(1, 2, 2)), ValueError, "lse")
    add("attention_backward", "q last dim strided", att_bwd(q=strided(f32(1, 2, 3, 4))), ValueError, "q")
    add("attention_backward", "dropout_p nan", att_bwd(dropout_p=float("nan")), ValueError, "dropout_p")
    add("attention_backward", "key_mask list", att_bwd(key_mask=[[True] * 4]), TypeError, "key_mask")
    add("attention_backward", "B=0", att_bwd(B=0), OK)
    add("attention_dropout_bits", "key -1", lambda: _C.attention_dropout_bits(-1, 0), ValueError, "key")
    add("attention_dropout_bits", "index 2**64", lambda: _C.attention_dropout_bits(0, 2**64), ValueError, "index")
    add("attention_dropout_bits", "key None", lambda: _C.attention_dropout_bits(None, 0), TypeError, "key")
    add("attention_dropout_bits", "index 1.5", lambda: _C.attention_dropout_bits(0, 1.5), TypeError, "index")
    add("attention_dropout_bits", "key True", lambda: _C.attention_dropout_bits(True, 0), TypeError, "key")

    # ---- BPE: constructor and loaders
    add("BPE", "ranks None", lambda: _C.BPE(None), TypeError, "ranks")
    add("BPE", "ranks 5", lambda: _C.BPE(5), TypeError, "ranks")
    add("BPE", "ranks [1]", lambda: _C.BPE([1]), TypeError, "ranks")
    add("BPE", "ranks [(b'a',)]", lambda: _C.BPE([(b"a",)]), ValueError, "ranks")
    add("BPE", "ranks empty", lambda: _C.BPE({}), ValueError, "256 single bytes")
    add("BPE", "ranks missing a byte", lambda: _C.BPE({bytes([i]): i for i in range(255)}), ValueError,
        "256 single bytes")
    add("BPE", "token str", lambda: _C.BPE(RANKS | {"zz": 300}), TypeError, "ranks")
    add("BPE", "token b''", lambda: _C.BPE(RANKS | {b"": 300}), ValueError, "non-empty")
    add("BPE", "rank -1", lambda: _C.BPE(RANKS | {b"zz": -1}), ValueError, "ranks")
    add("BPE", "rank 2**31", lambda: _C.BPE(RANKS | {b"zz": 2**31}), ValueError, "ranks")
    add("BPE", "rank 2**70", lambda: _C.BPE(RANKS | {b"zz": 2**70}), ValueError, "ranks")
    add("BPE", "rank 1.5", lambda: _C.BPE(RANKS | {b"zz": 1.5}), TypeError, "ranks")
    add("BPE", "rank True", lambda: _C.BPE(RANKS | {b"zz": True}), TypeError, "ranks")
    add("BPE", "duplicate rank", lambda: _C.BPE(RANKS | {b"zz": 5}), ValueError, "share rank")
    add("BPE", "ranks too sparse", lambda: _C.BPE(RANKS | {b"zz": 2**31 - 2}), ValueError, "too sparse")
    add("BPE", "specials 5", lambda: _C.BPE(RANKS, 5), TypeError, "specials")
    add("BPE", "special bytes", lambda: _C.BPE(RANKS, {b"x": 300}), TypeError, "specials")
    add("BPE", "special ''", lambda: _C.BPE(RANKS, {"": 300}), ValueError, "special token")
    add("BPE", "special lone surrogate", lambda: _C.BPE(RANKS, {"\ud800": 300}), ValueError, "specials")
    add("BPE", "special id -1", lambda: _C.BPE(RANKS, {"<x>": -1}), ValueError, "specials")
    add("BPE", "special id None", lambda: _C.BPE(RANKS, {"<x>": None}), TypeError, "specials")
    add("BPE", "special id is a rank", lambda: _C.BPE(RANKS, {"<x>": 65}), ValueError, "also the rank")
    add("BPE", "specials share an id", lambda: _C.BPE(RANKS, {"<x>": 300, "<y>": 300}), ValueError, "share id")
    tik = "BPE.from_tiktoken_file"
    add(tik, "path None", lambda: _C.BPE.from_tiktoken_file(None), TypeError, "path")
    add(tik, "missing file", lambda: _C.BPE.from_tiktoken_file(os.path.join(tmpdir(), "missing.tiktoken")),
        RuntimeError, "missing.tiktoken")
    add(tik, "a directory", lambda: _C.BPE.from_tiktoken_file(tmpdir()), RuntimeError, "directory")
    add(tik, "NUL in path", lambda: _C.BPE.from_tiktoken_file(tmpfile("ok.tiktoken", b"YQ== 0\n") + "\0x"),
        ValueError, "NUL")
    add(tik, "not base64", lambda: _C.BPE.from_tiktoken_file(tmpfile("bad.tiktoken", b"!!!! 0\n")), ValueError,
        "bad.tiktoken:1")
    add(tik, "empty file", lambda: _C.BPE.from_tiktoken_file(tmpfile("empty.tiktoken", b"")), ValueError,
        "256 single bytes")
    add(tik, "specials 5", lambda: _C.BPE.from_tiktoken_file(tmpfile("x.tiktoken", b""), 5), TypeError, "specials")
    # ---- BPE: methods and properties
    for attr in ("n_vocab", "n_ranks"):
        add(f"BPE.{attr}", "uninitialized self", lambda attr=attr: getattr(uninit(_C.BPE), attr), TypeError,
            "initialized")
    for meth in ("special_tokens", "ranks"):
        add(f"BPE.{meth}", "uninitialized self", lambda meth=meth: getattr(uninit(_C.BPE), meth)(), TypeError,
            "initialized")
        add(f"BPE.{meth}", "extra argument", lambda meth=meth: getattr(bpe(), meth)(1), TypeError, meth)
    add("BPE.token_rank", "token str", lambda: bpe().token_rank("ab"), TypeError, "token")
    add("BPE.token_rank", "token None", lambda: bpe().token_rank(None), TypeError, "token")
    add("BPE.token_rank", "uninitialized self", lambda: uninit(_C.BPE).token_rank(b"ab"), TypeError,
        "initialized")
    add("BPE.token_rank", "empty token", lambda: bpe().token_rank(b""), OK)
    add("BPE.encode_ordinary", "text None", lambda: bpe().encode_ordinary(None), TypeError, "text")
    add("BPE.encode_ordinary", "text bytes", lambda: bpe().encode_ordinary(b"ab"), TypeError, "text")
    add("BPE.encode_ordinary", "uninitialized self", lambda: uninit(_C.BPE).encode_ordinary("ab"), TypeError,
        "initialized")
    add("BPE.encode_ordinary", "empty text", lambda: bpe().encode_ordinary(""), OK)
    add("BPE.encode", "text 5", lambda: bpe().encode(5), TypeError, "text")
    add("BPE.encode", "allowed 5", lambda: bpe().encode("ab", 5), TypeError, "allowed_special")
    add("BPE.encode", "allowed [1]", lambda: bpe().encode("ab", [1]), TypeError, "allowed_special")
    add("BPE.encode", "allowed unknown", lambda: bpe().encode("ab", ["<|nope|>"]), ValueError, "allowed_special")
    add("BPE.encode", "allowed lone surrogate", lambda: bpe().encode("ab", ["\ud800"]), ValueError,
        "allowed_special")
    add("BPE.encode", "disallowed 3", lambda: bpe().encode("ab", None, 3), TypeError, "disallowed_special")
    add("BPE.encode", "disallowed special in text", lambda: bpe().encode("a<|e|>"), ValueError, "<|e|>")
    add("BPE.encode", "uninitialized self", lambda: uninit(_C.BPE).encode("ab"), TypeError, "initialized")
    eb = "BPE.encode_batch"
    add(eb, "texts str", lambda: bpe().encode_batch("ab"), TypeError, "texts")
    add(eb, "texts None", lambda: bpe().encode_batch(None), TypeError, "texts")
    add(eb, "texts 5", lambda: bpe().encode_batch(5), TypeError, "texts")
    add(eb, "texts [1]", lambda: bpe().encode_batch(["ab", 1]), TypeError, "texts[1]")
    add(eb, "texts [bytes]", lambda: bpe().encode_batch([b"ab"]), TypeError, "texts[0]")
    add(eb, "num_threads -1", lambda: bpe().encode_batch(["ab"], None, None, -1), ValueError, "num_threads")
    add(eb, "num_threads 1025", lambda: bpe().encode_batch(["ab"], None, None, 1025), ValueError, "num_threads")
    add(eb, "num_threads 2**40", lambda: bpe().encode_batch(["ab"], None, None, 2**40), TypeError, "num_threads")
    add(eb, "allowed 5", lambda: bpe().encode_batch(["ab"], 5), TypeError, "allowed_special")
    add(eb, "uninitialized self", lambda: uninit(_C.BPE).encode_batch(["ab"]), TypeError, "initialized")
    add(eb, "no texts", lambda: bpe().encode_batch([]), OK)
    add("BPE.encode_piece", "piece str", lambda: bpe().encode_piece("ab"), TypeError, "piece")
    add("BPE.encode_piece", "piece None", lambda: bpe().encode_piece(None), TypeError, "piece")
    add("BPE.encode_piece", "uninitialized self", lambda: uninit(_C.BPE).encode_piece(b"ab"), TypeError,
        "initialized")
    add("BPE.encode_piece", "empty piece", lambda: bpe().encode_piece(b""), OK)
    for meth in ("decode_bytes", "decode"):
        e = f"BPE.{meth}"
        add(e, "ids None", lambda meth=meth: getattr(bpe(), meth)(None), TypeError, "ids")
        add(e, "ids 5", lambda meth=meth: getattr(bpe(), meth)(5), TypeError, "ids")
        add(e, "ids str", lambda meth=meth: getattr(bpe(), meth)("12"), TypeError, "ids")
        add(e, "ids bytes", lambda meth=meth: getattr(bpe(), meth)(b"12"), TypeError, "ids")
        for bad in (-1, N_VOCAB, 2**31, 2**64, 2**70):
            add(e, f"id {bad}", lambda meth=meth, bad=bad: getattr(bpe(), meth)([97, bad]), ValueError, str(bad))
        add(e, "id 1.5", lambda meth=meth: getattr(bpe(), meth)([1.5]), TypeError, "token id")
        add(e, "id None", lambda meth=meth: getattr(bpe(), meth)([None]), TypeError, "token id")
        add(e, "ids float array", lambda meth=meth: getattr(bpe(), meth)(np.zeros(2)), TypeError, "token ids")
        add(e, "ids int64 array -1", lambda meth=meth: getattr(bpe(), meth)(np.array([97, -1])), ValueError, "-1")
        add(e, "ids uint64 array 2**64-1", lambda meth=meth: getattr(bpe(), meth)(np.array([2**64 - 1], np.uint64)),
            ValueError, str(2**64 - 1))
        add(e, "ids object array", lambda meth=meth: getattr(bpe(), meth)(np.array([97, None])), TypeError,
            "token ids")
        add(e, "uninitialized self", lambda meth=meth: getattr(uninit(_C.BPE), meth)([97]), TypeError,
            "initialized")
        add(e, "no ids", lambda meth=meth: getattr(bpe(), meth)([]), OK)
    add("BPE.decode", "errors 'bogus'", lambda: bpe().decode([0xC3], "bogus"), ValueError, "errors")
    add("BPE.decode", "errors None", lambda: bpe().decode([97], None), TypeError, "errors")
    ds = "BPE.decode_single_token_bytes"
    for bad in (-1, N_VOCAB, 2**70):
        add(ds, f"token {bad}", lambda bad=bad: bpe().decode_single_token_bytes(bad), ValueError, str(bad))
    add(ds, "token None", lambda: bpe().decode_single_token_bytes(None), TypeError, "token")
    add(ds, "token '1'", lambda: bpe().decode_single_token_bytes("1"), TypeError, "token")
    add(ds, "token 1.0", lambda: bpe().decode_single_token_bytes(1.0), TypeError, "token")
    add(ds, "uninitialized self", lambda: uninit(_C.BPE).decode_single_token_bytes(97), TypeError, "initialized")

    # ---- BPE training
    add("BPEWordCounts", "extra argument", lambda: _C.BPEWordCounts(1), TypeError, "BPEWordCounts")
    at = "BPEWordCounts.add_texts"
    add(at, "texts str", lambda: counts().add_texts("ab"), TypeError, "texts")
    add(at, "texts None", lambda: counts().add_texts(None), TypeError, "texts")
    add(at, "texts [1]", lambda: counts().add_texts([1]), TypeError, "texts[0]")
    add(at, "num_threads -1", lambda: counts().add_texts(["ab"], -1), ValueError, "num_threads")
    add(at, "num_threads 1025", lambda: counts().add_texts(["ab"], 1025), ValueError, "num_threads")
    add(at, "uninitialized self", lambda: uninit(_C.BPEWordCounts).add_texts(["ab"]), TypeError, "initialized")
    af = "BPEWordCounts.add_file"
    add(af, "path None", lambda: counts().add_file(None), TypeError, "path")
    add(af, "missing file", lambda: counts().add_file(os.path.join(tmpdir(), "missing.txt")), RuntimeError,
        "missing.txt")
    add(af, "a directory", lambda: counts().add_file(tmpdir()), RuntimeError, "directory")
    add(af, "NUL in path", lambda: counts().add_file(tmpfile("ok.txt", b"hello") + "\0x"), ValueError, "NUL")
    add(af, "not UTF-8", lambda: counts().add_file(tmpfile("latin1.txt", b"caf\xe9")), ValueError, "UTF-8")
    add(af, "num_threads -1", lambda: counts().add_file(tmpfile("ok.txt", b"hello"), -1), ValueError,
        "num_threads")
    add(af, "uninitialized self", lambda: uninit(_C.BPEWordCounts).add_file(tmpfile("ok.txt", b"hi")), TypeError,
        "initialized")
    ad = "BPEWordCounts.add"
    add(ad, "word str", lambda: counts().add("ab", 1), TypeError, "word")
    add(ad, "word None", lambda: counts().add(None, 1), TypeError, "word")
    add(ad, "count -1", lambda: counts().add(b"ab", -1), TypeError, "count")
    add(ad, "count 2**64", lambda: counts().add(b"ab", 2**64), TypeError, "count")
    add(ad, "count 2**63", lambda: counts().add(b"ab", 2**63), ValueError, "count")
    add(ad, "counts summing past 2**62", lambda: counts([(b"ab", 2**61), (b"cd", 2**61), (b"ab", 1)]), ValueError,
        "count")
    add(ad, "uninitialized self", lambda: uninit(_C.BPEWordCounts).add(b"ab", 1), TypeError, "initialized")
    add(ad, "empty word", lambda: counts().add(b"", 5), OK)
    add("BPEWordCounts.__len__", "uninitialized self", lambda: len(uninit(_C.BPEWordCounts)), TypeError,
        "initialized")
    add("BPEWordCounts.total", "uninitialized self", lambda: uninit(_C.BPEWordCounts).total, TypeError,
        "initialized")
    add("BPEWordCounts.items", "uninitialized self", lambda: uninit(_C.BPEWordCounts).items(), TypeError,
        "initialized")
    add("BPEWordCounts.items", "extra argument", lambda: counts().items(1), TypeError, "items")
    tm = "bpe_train_merges"
    add(tm, "counts None", lambda: _C.bpe_train_merges(None, 5), TypeError, "counts")
    add(tm, "counts a dict", lambda: _C.bpe_train_merges({b"ab": 3}, 5), TypeError, "counts")
    add(tm, "counts uninitialized", lambda: _C.bpe_train_merges(uninit(_C.BPEWordCounts), 5), TypeError,
        "initialized")
    add(tm, "n_merges -1", lambda: _C.bpe_train_merges(counts(), -1), TypeError, "n_merges")
    add(tm, "min_frequency 0", lambda: _C.bpe_train_merges(counts(), 5, 0), ValueError, "min_frequency")
    add(tm, "min_frequency -1", lambda: _C.bpe_train_merges(counts(), 5, -1), TypeError, "min_frequency")
    add(tm, "counts overflowing 64-bit pair counts",
        lambda: _C.bpe_train_merges(counts([(b"a" * 64, 2**62)]), 5), ValueError, "counts")
    add(tm, "n_merges 2**64 - 1", lambda: _C.bpe_train_merges(counts(), 2**64 - 1), OK)
    add(tm, "n_merges 0", lambda: _C.bpe_train_merges(counts(), 0), OK)
    tr = "bpe_train"
    add(tr, "counts None", lambda: _C.bpe_train(None, 300), TypeError, "counts")
    add(tr, "vocab_size 255", lambda: _C.bpe_train(counts(), 255), ValueError, "vocab_size")
    add(tr, "vocab_size -1", lambda: _C.bpe_train(counts(), -1), TypeError, "vocab_size")
    add(tr, "vocab_size 256 with a special", lambda: _C.bpe_train(counts(), 256, ["<x>"]), ValueError,
        "vocab_size")
    add(tr, "special_tokens 5", lambda: _C.bpe_train(counts(), 300, 5), TypeError, "special_tokens")
    add(tr, "special_tokens [1]", lambda: _C.bpe_train(counts(), 300, [1]), TypeError, "special_tokens")
    add(tr, "special_tokens ['']", lambda: _C.bpe_train(counts(), 300, [""]), ValueError, "special token")
    add(tr, "special lone surrogate", lambda: _C.bpe_train(counts(), 300, ["\udc00"]), ValueError,
        "special_tokens")
    add(tr, "min_frequency 0", lambda: _C.bpe_train(counts(), 300, [], 0), ValueError, "min_frequency")
    add(tr, "vocab_size 2**64 - 1", lambda: _C.bpe_train(counts(), 2**64 - 1), OK)

    # ---- pre-tokenizer helpers
    for fn in ("bpe_pretokenize", "bpe_piece_lengths"):
        add(fn, "text None", lambda fn=fn: getattr(_C, fn)(None), TypeError, "text")
        add(fn, "text bytes", lambda fn=fn: getattr(_C, fn)(b"ab"), TypeError, "text")
        add(fn, "empty text", lambda fn=fn: getattr(_C, fn)(""), OK)
    add("bpe_split_text", "text None", lambda: _C.bpe_split_text(None, 4), TypeError, "text")
    add("bpe_split_text", "chunk_bytes -1", lambda: _C.bpe_split_text("a\nb", -1), TypeError, "chunk_bytes")
    add("bpe_split_text", "chunk_bytes None", lambda: _C.bpe_split_text("a\nb", None), TypeError, "chunk_bytes")
    add("bpe_split_text", "chunk_bytes 0", lambda: _C.bpe_split_text("a\nb", 0), OK)
    add("bpe_split_text", "chunk_bytes 2**64 - 1", lambda: _C.bpe_split_text("ab\ncd\n" * 10, 2**64 - 1), OK)
    add("bpe_char_classes", "extra argument", lambda: _C.bpe_char_classes(1), TypeError, "bpe_char_classes")
    add("bpe_unicode_version", "extra argument", lambda: _C.bpe_unicode_version(1), TypeError,
        "bpe_unicode_version")
    return C


CASES = _cases()
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case labels"


# ---------------------------------------------------------------------------------------------
# running one case


def outcome(case: Case) -> str | None:
    """None if the call behaved as the table says, else what went wrong."""
    try:
        case.call()
    except BaseException as e:  # noqa: BLE001 -- anything else than the expected error is a finding
        if case.exc is OK:
            return f"expected success, got {type(e).__name__}: {e}"
        if not isinstance(e, ALLOWED):
            return f"raised {type(e).__name__} (not ValueError/TypeError/IndexError/RuntimeError): {e}"
        if type(e) is not case.exc and not issubclass(type(e), case.exc):
            return f"expected {case.exc.__name__}, got {type(e).__name__}: {e}"
        msg = str(e)
        if case.names and not any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg)
                                  for n in case.names):
            return f"message does not name {' or '.join(map(repr, case.names))}: {msg!r}"
        return None
    if case.exc is not OK:
        return f"expected {case.exc.__name__}, but the call returned normally"
    return None


def _child_main(start: int) -> None:
    """Run CASES[start:] in this (child) process, printing one JSON line before and after each."""
    for i in range(start, len(CASES)):
        print(json.dumps({"start": i}), flush=True)
        problem = outcome(CASES[i])
        print(json.dumps({"done": i, "problem": problem}), flush=True)


_CHILD = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('badargs_child', {path!r}); "
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m._child_main({start})")


@pytest.fixture(scope="module")
def child_run():
    """Run the whole table in child interpreters: {case id: None | problem}, and {case id: crash report}
    for the cases that killed their child (the next child starts after such a case)."""
    results, crashes = {}, {}
    start = 0
    while start < len(CASES):
        proc = subprocess.run([sys.executable, "-c", _CHILD.format(path=os.path.abspath(__file__), start=start)],
                              capture_output=True, text=True, timeout=300)
        last = None
        for line in proc.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "start" in rec:
                last = rec["start"]
            else:
                results[CASES[rec["done"]].id] = rec["problem"]
                last = None
        if proc.returncode == 0:
            break
        if last is None:  # died outside a case (import error, ...)
            raise AssertionError(f"child exited with {proc.returncode} outside a case:\n{proc.stderr[-3000:]}")
        crashes[CASES[last].id] = f"exit status {proc.returncode}\n{proc.stderr[-3000:]}"
        start = last + 1
    return results, crashes


def test_no_case_crashes_the_interpreter(child_run):
    _, crashes = child_run
    assert not crashes, "cases that crashed the interpreter:\n" + "\n".join(f"--- {k}: {v}" for k, v in
                                                                            crashes.items())


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_case(case_id, child_run):
    _, crashes = child_run
    if case_id in crashes:
        pytest.fail(f"crashed the interpreter (not rerun in-process): {crashes[case_id]}")
    problem = outcome(BY_ID[case_id])
    assert problem is None, problem


# ---------------------------------------------------------------------------------------------
# completeness

# Attributes every pybind11 class has; anything else a class defines is an entry point.
_CLASS_BOILERPLATE = {"__init__", "__new__", "__doc__", "__module__", "__dict__", "__weakref__",
                      "_pybind11_conduit_v1_"}


def entry_points() -> set[str]:
    """Public functions, classes (their constructors) and class methods/properties of _C, CUDA excluded."""
    out = set()
    for name in dir(_C):
        if name.startswith("_") or "cuda" in name.lower():  # CUDA entry points: tests/test_cuda.py
            continue
        obj = getattr(_C, name)
        if isinstance(obj, types.ModuleType):  # submodules (a `cuda` one): tested elsewhere
            continue
        if isinstance(obj, type):
            out.add(name)
            out.update(f"{name}.{attr}" for attr in vars(obj) if attr not in _CLASS_BOILERPLATE)
        elif callable(obj):
            out.add(name)
    return out


def test_every_entry_point_has_bad_argument_cases():
    found = entry_points()
    covered = {c.entry for c in CASES}
    missing = sorted(found - covered)
    assert not missing, (f"pygpt._C entry points without bad-argument cases in {__file__}: {missing}. "
                         "Add rows to _cases() (wrong type/dtype, None, shape, size 0, negative and "
                         "out-of-range values, read-only outputs, uninitialized self).")
    stale = sorted(covered - found)
    assert not stale, f"cases for entry points that pygpt._C does not have: {stale}"


def test_every_entry_point_has_a_failing_case():
    """An entry point covered only by calls that must succeed has no bad-argument test."""
    bad = {c.entry for c in CASES if c.exc is not OK}
    assert {c.entry for c in CASES} <= bad, sorted({c.entry for c in CASES} - bad)


# ---------------------------------------------------------------------------------------------
# regression details that a row cannot express


def test_uninitialized_instances_raise_through_any_new():
    base = _C.BPE.__mro__[1]  # pybind11_object: its __new__ also skips the C++ constructor
    for obj in (_C.BPE.__new__(_C.BPE), base.__new__(_C.BPE)):
        with pytest.raises(TypeError, match="never initialized"):
            obj.encode_ordinary("ab")
        obj.__init__(RANKS, SPECIALS)  # a late __init__ still works
        assert obj.encode_ordinary("ab") == [256] and obj.n_vocab == N_VOCAB
    w = _C.BPEWordCounts.__new__(_C.BPEWordCounts)
    with pytest.raises(TypeError, match="never initialized"):
        _C.bpe_train(w, 300)
    w.__init__()
    w.add(b"ab", 3)
    assert len(w) == 1


def test_huge_n_merges_means_as_many_as_possible():
    w = counts([(b"abcd", 5), (b"abce", 4)])
    want = _C.bpe_train_merges(w, 10**6)
    assert want and _C.bpe_train_merges(w, 2**64 - 1) == want


def test_nothing_is_written_when_ids_are_refused():
    gw = np.full((5, 4), 7.0, np.float32)
    with pytest.raises(ValueError):
        _C.embedding_backward(np.array([0, 1, 5]), np.ones((3, 4), np.float32), gw)
    assert (gw == 7.0).all()
    loss = np.full(3, 7.0, np.float32)
    with pytest.raises(ValueError):
        _C.cross_entropy_forward(f32(3, 5), np.array([0, -1, 1]), loss, f32(3))
    assert (loss == 7.0).all()
