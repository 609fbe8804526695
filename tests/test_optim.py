"""Tests for pygpt.optim: optimisers against torch.optim, clipping, schedules, state dicts."""
from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from pygpt import optim
from pygpt.optim import (SGD, Adam, AdamW, clip_grad_norm_, constant, grad_norm, param_groups,
                         warmup_cosine, warmup_linear, warmup_steps_from_fraction)


class P:
    """Minimal stand-in for pygpt.nn.Parameter: .data, .grad, .shape, .ndim."""

    def __init__(self, data):
        self.data = data
        self.grad = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim


# (1,) and (7,): biases; (5, 3), (2, 3, 4): odd matrices; 70000 elements span many CPU chunks
# (test_matches_torch shrinks optim._CHUNK to 4096), so chunk boundaries, the short tail chunk and
# the worker threads are exercised.
SHAPES = [(1,), (7,), (5, 3), (2, 3, 4), (70000,)]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}


def _make(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [P(rng.standard_normal(s).astype(dtype)) for s in shapes]


# ---------------------------------------------------------------------------------------------
# against torch.optim


OPT_CASES = {
    "adamw": (AdamW, "AdamW", dict(weight_decay=0.1)),
    "adamw_betas": (AdamW, "AdamW", dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)),
    "adamw_nowd": (AdamW, "AdamW", dict(weight_decay=0.0)),
    "adam": (Adam, "Adam", dict()),
    "adam_l2": (Adam, "Adam", dict(weight_decay=0.05)),
    "sgd": (SGD, "SGD", dict()),
    "sgd_wd": (SGD, "SGD", dict(weight_decay=0.1)),
    "sgd_momentum": (SGD, "SGD", dict(momentum=0.9)),
    "sgd_nesterov": (SGD, "SGD", dict(momentum=0.9, nesterov=True, weight_decay=0.05)),
    "sgd_dampening": (SGD, "SGD", dict(momentum=0.5, dampening=0.3, weight_decay=0.01)),
}


def _torch_pair(dtype, make_groups, case, lr):
    torch = pytest.importorskip("torch")
    cls, tname, kw = OPT_CASES[case]
    ps = _make(dtype)
    ts = [torch.tensor(p.data.copy(), requires_grad=True) for p in ps]
    if make_groups:
        # group 0: decays with lr_scale 1; group 1: another decay and half the learning rate
        wd0 = kw.get("weight_decay", 0.0)
        groups = [{"params": ps[:3], "weight_decay": wd0},
                  {"params": ps[3:], "weight_decay": 0.02, "lr_scale": 0.5, "name": "g1"}]
        tgroups = [{"params": ts[:3], "weight_decay": wd0, "lr": lr},
                   {"params": ts[3:], "weight_decay": 0.02, "lr": lr * 0.5}]
        opt = cls(groups, lr=lr, **kw)
        topt = getattr(torch.optim, tname)(tgroups, lr=lr, **kw)
        scales = [1.0, 0.5]
    else:
        opt = cls(ps, lr=lr, **kw)
        topt = getattr(torch.optim, tname)(ts, lr=lr, **kw)
        scales = [1.0]
    return torch, ps, ts, opt, topt, scales


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_groups", [False, True])
@pytest.mark.parametrize("case", list(OPT_CASES))
def test_matches_torch(case, dtype, make_groups, monkeypatch):
    monkeypatch.setattr(optim, "_CHUNK", 4096)
    lr = 1e-2
    torch, ps, ts, opt, topt, scales = _torch_pair(dtype, make_groups, case, lr)
    rng = np.random.default_rng(1)
    gscale = [10 ** rng.uniform(-3, 1) for _ in ps]      # each parameter its own gradient scale
    for step in range(10):
        # a changing learning rate, as a schedule sets it
        new_lr = lr * (1.0 + 0.1 * step)
        opt.lr = new_lr
        for g, s in zip(topt.param_groups, scales):
            g["lr"] = new_lr * s
        for k, (p, t) in enumerate(zip(ps, ts)):
            if k == 1 and step in (2, 3):      # a parameter without gradient is skipped
                p.grad, t.grad = None, None
                continue
            g = (rng.standard_normal(p.data.shape) * gscale[k]).astype(dtype)
            p.grad = g
            t.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    assert opt.step_count == 10
    for i, (p, t) in enumerate(zip(ps, ts)):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), **TOL[dtype], err_msg=f"param {i}")
        tstate = topt.state[t]
        ours = opt.get_state(i)
        assert ours["step"] == (8 if i == 1 else 10)
        for name in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if name in tstate and tstate[name] is not None:
                np.testing.assert_allclose(ours[name], tstate[name].numpy(), **TOL[dtype],
                                           err_msg=f"param {i} {name}")
                assert ours[name].dtype == dtype


def test_adamw_scalar_by_hand():
    # one scalar p0 = 1.0, lr = 0.1, betas (0.9, 0.999), eps = 1e-8, wd = 0.01, in float64
    p = P(np.array([1.0]))
    opt = AdamW([p], lr=0.1, weight_decay=0.01)
    # step 1, g = 0.5
    p.grad = np.array([0.5])
    opt.step()
    # decay: p = 1.0 * (1 - 0.1*0.01) = 0.999
    # m = 0.1*0.5 = 0.05;  v = 0.001*0.25 = 0.00025
    # m_hat = 0.05/0.1 = 0.5; v_hat = 0.00025/0.001 = 0.25; sqrt = 0.5
    # p = 0.999 - 0.1 * 0.5/(0.5 + 1e-8) = 0.999 - 0.1*(1 - 2e-8) = 0.899 + 2e-9
    p1 = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8)
    np.testing.assert_allclose(p.data, [p1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p.data, [0.899000002], rtol=0, atol=1e-12)
    # step 2, g = -1.0
    p.grad = np.array([-1.0])
    opt.step()
    # decay: p = p1 * 0.999
    # m = 0.9*0.05 + 0.1*(-1) = -0.055;  v = 0.999*0.00025 + 0.001*1 = 0.00124975
    # bias corrections: 1-0.9^2 = 0.19, 1-0.999^2 = 0.001999
    # m_hat = -0.055/0.19 = -0.2894736842; v_hat = 0.00124975/0.001999 = 0.6251875938
    # sqrt(v_hat) = 0.7906880509;  update = 0.1 * 0.2894736842 / 0.7906880609 = 0.0366103522
    # p = 0.899000002 * 0.999 + 0.0366103522 = 0.8981010020 + 0.0366103522 = 0.9347113542
    m, v = -0.055, 0.00124975
    p2 = p1 * 0.999 - 0.1 * (m / 0.19) / (math.sqrt(v / 0.001999) + 1e-8)
    np.testing.assert_allclose(p.data, [p2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p.data, [0.9347113542], rtol=0, atol=1e-10)
    st = opt.get_state(0)
    np.testing.assert_allclose(st["exp_avg"], [m], rtol=1e-15)
    np.testing.assert_allclose(st["exp_avg_sq"], [v], rtol=1e-15)


def test_grad_unchanged_and_data_in_place():
    ps = _make(np.float32)
    for p in ps:
        p.grad = np.ones_like(p.data)
    ids = [id(p.data) for p in ps]
    grads = [p.grad.copy() for p in ps]
    for cls, kw in [(Adam, dict(weight_decay=0.1)), (AdamW, {}), (SGD, dict(momentum=0.9, weight_decay=0.1))]:
        opt = cls(ps, lr=0.1, **kw)
        opt.step()
        opt.step()
        assert [id(p.data) for p in ps] == ids
        for p, g in zip(ps, grads):
            np.testing.assert_array_equal(p.grad, g)   # coupled L2 must not write into .grad


def test_noncontiguous_and_float16_params():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 5))
    # a strided view (e.g. a transposed weight) is updated in place through a working copy
    holder = base.T.copy().T                     # F-ordered, not C-contiguous
    assert not holder.flags.c_contiguous
    p_view, p_ref = P(holder), P(np.ascontiguousarray(base))
    view_id = id(p_view.data)
    o1, o2 = AdamW([p_view], lr=0.1), AdamW([p_ref], lr=0.1)
    for _ in range(3):
        g = rng.standard_normal((6, 5))
        p_view.grad, p_ref.grad = g, g.copy()
        o1.step()
        o2.step()
    assert id(p_view.data) == view_id
    np.testing.assert_allclose(p_view.data, p_ref.data, rtol=1e-14)
    # float16 parameters keep their dtype; moments are float32
    p16, p32 = P(base.astype(np.float16)), P(base.astype(np.float16).astype(np.float32))
    o16, o32 = AdamW([p16], lr=0.01), AdamW([p32], lr=0.01)
    g = rng.standard_normal((6, 5)).astype(np.float16)
    p16.grad, p32.grad = g, g.astype(np.float32)
    o16.step()
    o32.step()
    assert p16.data.dtype == np.float16
    assert o16.get_state(0)["exp_avg"].dtype == np.float32
    np.testing.assert_allclose(p16.data.astype(np.float32), p32.data, rtol=1e-3, atol=1e-3)


def test_grad_shape_mismatch():
    p = P(np.zeros((3, 4), np.float32))
    p.grad = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="grad shape"):
        AdamW([p], lr=1e-3).step()


def test_state_arrays_not_reallocated():
    ps = _make(np.float32, shapes=[(300_000,), (64, 33), (5,)])
    opt = AdamW(ps, lr=1e-3)
    rng = np.random.default_rng(0)
    for p in ps:
        p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
    opt.step()
    before = [{k: id(v) for k, v in opt.get_state(i).items() if k != "step"} for i in range(3)]
    data_ids = [id(p.data) for p in ps]
    scratch_ids = {k: [id(b) for b in v] for k, v in opt._scratch.items()}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            opt.step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    after = [{k: id(v) for k, v in opt.get_state(i).items() if k != "step"} for i in range(3)]
    assert before == after
    assert [id(p.data) for p in ps] == data_ids
    assert {k: [id(b) for b in v] for k, v in opt._scratch.items()} == scratch_ids
    # the biggest parameter is 1.2 MB; a step must not allocate anything of that order
    assert peak < 64 * 1024, f"step() allocated {peak} bytes"


def test_zero_grad():
    ps = _make(np.float32, shapes=[(3,), (2, 2)])
    for p in ps:
        p.grad = np.ones_like(p.data)
    opt = SGD(ps, lr=0.1)
    keep = ps[0].grad
    opt.zero_grad(set_to_none=False)
    assert ps[0].grad is keep and not keep.any()
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


def test_lr_setter_and_scale():
    a, b = P(np.zeros(2)), P(np.zeros(2))
    opt = SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.25}], lr=1.0)
    opt.lr = 2.0
    a.grad = np.ones(2)
    b.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(a.data, [-2.0, -2.0])
    np.testing.assert_array_equal(b.data, [-0.5, -0.5])
    opt.lr = 0.0                                  # schedules end at 0: allowed
    opt.step()
    np.testing.assert_array_equal(a.data, [-2.0, -2.0])
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            opt.lr = bad
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"


# ---------------------------------------------------------------------------------------------
# clipping


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(dtype, max_norm):
    torch = pytest.importorskip("torch")
    ps = _make(dtype)
    rng = np.random.default_rng(5)
    ts = []
    for k, p in enumerate(ps):
        t = torch.tensor(p.data.copy(), requires_grad=True)
        if k != 2:
            p.grad = rng.standard_normal(p.data.shape).astype(dtype) * 0.01
            t.grad = torch.tensor(p.grad.copy())
        ts.append(t)
    norm = clip_grad_norm_(ps, max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, float(tnorm), rtol=1e-6 if dtype == np.float32 else 1e-13)
    for p, t in zip(ps, ts):
        if p.grad is None:
            assert t.grad is None
            continue
        np.testing.assert_allclose(p.grad, t.grad.numpy(), **TOL[dtype])
    clipped = grad_norm(ps)
    if norm > max_norm:
        np.testing.assert_allclose(clipped, max_norm, rtol=1e-5)
    else:
        assert clipped == norm


def test_clip_grad_norm_exact_and_float64_accumulation():
    a, b = P(np.zeros(2, np.float32)), P(np.zeros(1, np.float32))
    a.grad = np.array([3.0, 0.0], np.float32)
    b.grad = np.array([4.0], np.float32)
    norm = clip_grad_norm_([a, b], 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(a.grad, [3.0 / (5 + 1e-6), 0.0], rtol=1e-7)
    np.testing.assert_allclose(b.grad, [4.0 / (5 + 1e-6)], rtol=1e-7)
    # many float32 values: float32 accumulation would be off by ~1e-4 relative here
    big = P(np.zeros(3_000_000, np.float32))
    big.grad = np.full(3_000_000, 0.1, np.float32)
    exact = math.sqrt(3_000_000 * float(np.float32(0.1)) ** 2)
    assert abs(grad_norm([big]) - exact) / exact < 1e-12


def test_clip_grad_norm_nonfinite_and_empty():
    a, b = P(np.zeros(2)), P(np.zeros(2))
    a.grad = np.array([1.0, np.inf])
    b.grad = np.array([1.0, 2.0])
    assert clip_grad_norm_([a, b], 1.0) == math.inf
    np.testing.assert_array_equal(b.grad, [1.0, 2.0])          # untouched
    a.grad = np.array([np.nan, 0.0])
    assert math.isnan(clip_grad_norm_([a, b], 1.0))
    np.testing.assert_array_equal(b.grad, [1.0, 2.0])
    a.grad = b.grad = None
    assert clip_grad_norm_([a, b], 1.0) == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([a], 0.0)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        clip_grad_norm_([np.zeros(3)], 1.0)


# ---------------------------------------------------------------------------------------------
# schedules


def test_constant():
    s = constant(3e-4)
    assert s(0) == s(10**9) == 3e-4


def test_warmup_cosine_points():
    s = warmup_cosine(1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert s(0) == pytest.approx(0.1)        # step 0 = first update gets max_lr / warmup
    assert s(4) == pytest.approx(0.5)
    assert s(9) == pytest.approx(1.0)        # warmup - 1: max reached
    assert s(10) == pytest.approx(1.0)       # warmup: cosine starts at max
    assert s(60) == pytest.approx(0.55)      # half way: min + (max - min)/2
    # a quarter of the way: 0.1 + 0.45 * (1 + cos(pi/4))
    assert s(35) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert s(109) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 99 / 100)))
    assert s(110) == pytest.approx(0.1)      # end
    assert s(10_000) == 0.1                  # beyond end
    # no warmup: cosine from the first step
    s0 = warmup_cosine(2.0, 0, 4)
    assert [s0(i) for i in range(5)] == pytest.approx([2.0, 1 + math.sqrt(0.5), 1.0, 1 - math.sqrt(0.5), 0.0])
    # monotone non-increasing after warmup, non-decreasing during it
    vals = [s(i) for i in range(120)]
    assert all(a <= b for a, b in zip(vals[:10], vals[1:10]))
    assert all(a >= b for a, b in zip(vals[10:], vals[11:]))


def test_warmup_linear_points():
    s = warmup_linear(6.25e-5, warmup_steps=4, total_steps=104)
    assert s(0) == pytest.approx(6.25e-5 / 4)
    assert s(3) == pytest.approx(6.25e-5)
    assert s(4) == pytest.approx(6.25e-5)
    assert s(54) == pytest.approx(6.25e-5 / 2)
    assert s(103) == pytest.approx(6.25e-5 / 100)
    assert s(104) == 0.0
    assert s(500) == 0.0
    # warmup == total: warmup then 0
    s2 = warmup_linear(1.0, 2, 2)
    assert [s2(i) for i in range(4)] == [0.5, 1.0, 0.0, 0.0]


def test_warmup_fraction_and_gpt1_presets():
    assert warmup_steps_from_fraction(1000, 0.002) == 2
    assert warmup_steps_from_fraction(100, 0.002) == 1        # never 0 when fraction > 0
    assert warmup_steps_from_fraction(100, 0.0) == 0
    assert warmup_steps_from_fraction(2250, 0.002) == 5       # 4.5 rounds half up
    s = optim.gpt1_pretrain_schedule(100_000)
    assert s(0) == pytest.approx(2.5e-4 / 2000)
    assert s(1999) == pytest.approx(2.5e-4) and s(2000) == pytest.approx(2.5e-4)
    assert s(100_000) == 0.0
    assert optim.GPT1_PRETRAIN["max_lr"] == 2.5e-4 and optim.GPT1_PRETRAIN["warmup_steps"] == 2000
    f = optim.gpt1_finetune_schedule(1000)
    assert f(0) == pytest.approx(6.25e-5 / 2) and f(1) == pytest.approx(6.25e-5)
    assert f(1000) == 0.0


def test_schedules_drive_optimizer():
    p = P(np.zeros(1))
    opt = SGD([p], lr=1.0)
    s = warmup_linear(1.0, 2, 4)
    for step in range(4):
        p.grad = np.ones(1)
        opt.lr = s(step)
        opt.step()
    # lrs: 0.5, 1.0, 1.0, 0.5
    np.testing.assert_allclose(p.data, [-3.0])


@pytest.mark.parametrize("call, arg", [
    (lambda: warmup_cosine(0.0, 1, 10), "max_lr"),
    (lambda: warmup_cosine(-1.0, 1, 10), "max_lr"),
    (lambda: warmup_cosine(1.0, -1, 10), "warmup_steps"),
    (lambda: warmup_cosine(1.0, 11, 10), "warmup_steps"),
    (lambda: warmup_cosine(1.0, 1, 0), "total_steps"),
    (lambda: warmup_cosine(1.0, 1, -5), "total_steps"),
    (lambda: warmup_cosine(1.0, 1, 10, min_lr=-0.1), "min_lr"),
    (lambda: warmup_cosine(1.0, 1, 10, min_lr=2.0), "min_lr"),
    (lambda: warmup_linear(1.0, 20, 10), "warmup_steps"),
    (lambda: warmup_linear(0, 1, 10), "max_lr"),
    (lambda: constant(0.0), "lr"),
    (lambda: constant(float("nan")), "lr"),
    (lambda: warmup_cosine(1.0, 1, 10)(-1), "step"),
    (lambda: warmup_linear(1.0, 1, 10)(-3), "step"),
    (lambda: warmup_steps_from_fraction(100, 1.5), "fraction"),
])
def test_schedule_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_schedule_type_errors():
    with pytest.raises(TypeError, match="warmup_steps"):
        warmup_cosine(1.0, 1.5, 10)
    with pytest.raises(TypeError, match="step"):
        constant(1.0)(0.5)


# ---------------------------------------------------------------------------------------------
# param groups


def test_param_groups_rule():
    named = [
        ("wte.weight", P(np.zeros((10, 4)))),
        ("wpe.weight", P(np.zeros((8, 4)))),
        ("h.0.ln_1.weight", P(np.zeros(4))),
        ("h.0.ln_1.bias", P(np.zeros(4))),
        ("h.0.attn.c_attn.weight", P(np.zeros((4, 12)))),
        ("h.0.attn.c_attn.bias", P(np.zeros(12))),
        ("h.0.mlp.c_fc.weight", P(np.zeros((4, 16)))),
        ("embeddings.word_embeddings.weight", P(np.zeros((10, 4)))),
        ("embeddings.position_embeddings.weight", P(np.zeros((8, 4)))),
        ("embeddings.token_type_embeddings.weight", P(np.zeros((2, 4)))),
        ("embeddings.LayerNorm.weight", P(np.zeros(4))),
        ("encoder.layer.0.attention.self.query.weight", P(np.zeros((4, 4)))),
        ("tok_embed", P(np.zeros((10, 4)))),
        ("conv.weight", P(np.zeros((2, 3, 4)))),
    ]
    by_id = {id(p): n for n, p in named}
    groups = param_groups(named, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    decay = [by_id[id(p)] for p in groups[0]["params"]]
    assert decay == ["h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight",
                     "encoder.layer.0.attention.self.query.weight", "conv.weight"]
    assert len(groups[1]["params"]) == len(named) - 4
    # decay_embeddings: all ndim >= 2 decay
    g2 = param_groups(named, 0.1, decay_embeddings=True)
    assert {by_id[id(p)] for p in g2[0]["params"]} == {n for n, p in named if p.ndim >= 2}
    # tied weights are listed once; empty groups are dropped; dicts are accepted
    wte = named[0][1]
    g3 = param_groups({"wte.weight": wte, "lm_head.weight": wte}, 0.1)
    assert len(g3) == 1 and g3[0]["name"] == "no_decay" and g3[0]["params"] == [wte]
    # the groups feed an optimiser directly
    opt = AdamW(groups, lr=1e-3)
    assert len(opt.params) == len(named)
    assert optim.is_embedding_name("bert.embeddings.word_embeddings.weight")
    assert not optim.is_embedding_name("h.0.attn.c_proj.weight")


def test_param_groups_bad_input():
    with pytest.raises(TypeError, match="named_parameters"):
        param_groups([np.zeros(3)], 0.1)
    with pytest.raises(TypeError, match="named_parameters"):
        param_groups([("w", np.zeros(3))], 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups([], -0.1)


# ---------------------------------------------------------------------------------------------
# state dicts


@pytest.mark.parametrize("cls, kw", [(AdamW, dict(weight_decay=0.1)), (Adam, dict(weight_decay=0.1)),
                                     (SGD, dict(momentum=0.9, nesterov=True)), (SGD, {})])
def test_state_dict_round_trip(cls, kw):
    rng = np.random.default_rng(7)
    ps = _make(np.float32, seed=3)
    groups = [{"params": ps[:2], "weight_decay": 0.0, "name": "no_decay"},
              {"params": ps[2:], "lr_scale": 0.5}]
    opt = cls(groups, lr=1e-2, **kw)
    grads = [[rng.standard_normal(p.data.shape).astype(np.float32) for p in ps] for _ in range(6)]
    for step in range(3):
        for k, (p, g) in enumerate(zip(ps, grads[step])):
            p.grad = None if (k == 0 and step < 2) else g
        opt.step()
    opt.lr = 3e-3
    sd = opt.state_dict()
    meta = {k: v for k, v in sd.items() if k != "arrays"}
    meta = json.loads(json.dumps(meta))          # JSON-serialisable (and survives the trip)
    arrays = {k: v.copy() for k, v in sd["arrays"].items()}
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    if cls is not SGD or kw:
        assert meta["param_steps"] == [1, 3, 3, 3, 3]
        assert all(k.startswith("state.") for k in arrays)
    # a second optimiser over copies of the parameters, built with other hyper-parameters
    qs = [P(p.data.copy()) for p in ps]
    opt2 = cls([{"params": qs[:2], "name": "no_decay"}, {"params": qs[2:]}], lr=1.0, **kw)
    opt2.load_state_dict({**meta, "arrays": arrays})
    assert opt2.lr == 3e-3 and opt2.step_count == 3
    assert opt2.param_groups[1]["lr_scale"] == 0.5 and opt2.param_groups[0]["weight_decay"] == 0.0
    # the snapshot is a copy: stepping the original does not change it
    for step in range(3, 6):
        for p, q, g in zip(ps, qs, grads[step]):
            p.grad = g
            q.grad = g.copy()
        opt.step()
        opt2.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, sd["arrays"][k])


def _trained_adamw():
    ps = _make(np.float32, shapes=[(3,), (2, 2)])
    opt = AdamW(ps, lr=1e-3)
    for p in ps:
        p.grad = np.ones_like(p.data)
    opt.step()
    return ps, opt


@pytest.mark.parametrize("mutate, match", [
    (lambda sd: sd.pop("arrays"), "missing keys"),
    (lambda sd: sd.update(optimizer="SGD"), "'SGD'"),
    (lambda sd: sd.update(param_shapes=[[3], [2, 3]]), r"parameter 1: state_dict shape"),
    (lambda sd: sd.update(param_shapes=[[3]]), "1 parameters"),
    (lambda sd: sd["param_groups"][0].update(params=[0]), "param group 0"),
    (lambda sd: sd.update(param_groups=[]), "0 param groups"),
    (lambda sd: sd["arrays"].pop("state.1.exp_avg_sq"), "lacks its arrays"),
    (lambda sd: sd["arrays"].update({"state.1.exp_avg": np.zeros((2, 3), np.float32)}), "has shape"),
    (lambda sd: sd["arrays"].update({"state.7.exp_avg": np.zeros(3, np.float32)}), "out of range"),
    (lambda sd: sd["arrays"].update({"state.0.momentum": np.zeros(3, np.float32)}), "state.0.momentum"),
    (lambda sd: sd.update(param_steps=[0, 1]), "no steps"),
    (lambda sd: sd.update(param_steps=[1]), "param_steps"),
    (lambda sd: sd.update(lr=-1.0), "lr"),
    (lambda sd: sd["hyper"].update(betas=[0.9, 1.0]), r"betas\[1\]"),
    (lambda sd: sd["hyper"].update(eps=-1.0), "eps"),
])
def test_load_state_dict_errors(mutate, match):
    _, opt = _trained_adamw()
    sd = opt.state_dict()
    before = [a.copy() for a in sd["arrays"].values()]
    mutate(sd)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    # nothing changed on failure
    assert opt.step_count == 1 and opt.lr == 1e-3
    for a, b in zip(opt.state_dict()["arrays"].values(), before):
        np.testing.assert_array_equal(a, b)


def test_sgd_momentum_mismatch_on_load():
    p = P(np.zeros(3))
    p.grad = np.ones(3)
    plain = SGD([p], lr=0.1)
    plain.step()
    with pytest.raises(ValueError, match="momentum"):
        SGD([P(np.zeros(3))], lr=0.1, momentum=0.9).load_state_dict(plain.state_dict())


def test_load_state_dict_into_fresh_optimizer_and_type_error():
    ps, opt = _trained_adamw()
    fresh = AdamW([P(p.data.copy()) for p in ps], lr=1e-3)
    fresh.load_state_dict(opt.state_dict())
    for i in range(2):
        np.testing.assert_array_equal(fresh.get_state(i)["exp_avg"], opt.get_state(i)["exp_avg"])
    with pytest.raises(TypeError, match="state"):
        opt.load_state_dict([1, 2])


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("call, exc, match", [
    (lambda ps: AdamW(ps, lr=0.0), ValueError, "lr"),
    (lambda ps: AdamW(ps, lr=-1e-3), ValueError, "lr"),
    (lambda ps: AdamW(ps, lr=float("nan")), ValueError, "lr"),
    (lambda ps: AdamW(ps, lr=1e-3, betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (lambda ps: AdamW(ps, lr=1e-3, betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda ps: AdamW(ps, lr=1e-3, betas=(0.9,)), ValueError, "betas"),
    (lambda ps: Adam(ps, lr=1e-3, eps=-1e-8), ValueError, "eps"),
    (lambda ps: AdamW(ps, lr=1e-3, weight_decay=-0.01), ValueError, "weight_decay"),
    (lambda ps: SGD(ps, lr=1e-3, momentum=-0.9), ValueError, "momentum"),
    (lambda ps: SGD(ps, lr=1e-3, weight_decay=-1), ValueError, "weight_decay"),
    (lambda ps: SGD(ps, lr=1e-3, nesterov=True), ValueError, "nesterov"),
    (lambda ps: SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, dampening=0.1), ValueError, "nesterov"),
    (lambda ps: SGD(ps, lr=1e-3, dampening=1.5), ValueError, "dampening"),
    (lambda ps: AdamW([], lr=1e-3), ValueError, "params"),
    (lambda ps: AdamW(ps + [ps[0]], lr=1e-3), ValueError, "more than once"),
    (lambda ps: AdamW([{"params": ps, "weight_decay": -1}], lr=1e-3), ValueError, "weight_decay"),
    (lambda ps: AdamW([{"params": ps, "lr_scale": -1}], lr=1e-3), ValueError, "lr_scale"),
    (lambda ps: AdamW([{"params": ps, "lr": 1.0}], lr=1e-3), ValueError, "unknown"),
    (lambda ps: AdamW([{"weight_decay": 0.1}], lr=1e-3), ValueError, "params"),
    (lambda ps: AdamW([np.zeros(3)], lr=1e-3), TypeError, r"params\[0\]"),
    (lambda ps: AdamW([ps[0], "w"], lr=1e-3), TypeError, r"params\[1\]"),
    (lambda ps: AdamW(ps[0], lr=1e-3), TypeError, "params"),
    (lambda ps: AdamW(np.float32(1.0), lr=1e-3), TypeError, "params"),
    (lambda ps: AdamW([ps[0], {"params": ps[1:]}], lr=1e-3), TypeError, "params"),
    (lambda ps: AdamW([P(np.zeros(3, np.int32))], lr=1e-3), TypeError, "floating"),
    (lambda ps: AdamW(ps, lr="1e-3"), TypeError, "lr"),
])
def test_bad_arguments(call, exc, match):
    ps = _make(np.float32, shapes=[(3,), (2, 2)])
    with pytest.raises(exc, match=match):
        call(ps)


def test_generator_params_and_repr():
    ps = _make(np.float32, shapes=[(3,), (2, 2)])
    opt = AdamW((p for p in ps), lr=1e-3)
    assert len(opt.params) == 2
    assert "AdamW" in repr(opt) and "lr=0.001" in repr(opt)
    assert "WarmupCosine" in repr(warmup_cosine(1.0, 1, 2))


# ---------------------------------------------------------------------------------------------
# CUDA (runs only where CuPy sees a GPU)


def _cupy():
    from pygpt import backend

    if not backend.cuda_available():
        pytest.skip("no CUDA / CuPy here")
    return backend.cupy_module()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["adamw", "adam_l2", "sgd_nesterov", "sgd_dampening"])
def test_cuda_matches_numpy(case, dtype):
    cp = _cupy()
    cls, _, kw = OPT_CASES[case]
    ps = _make(dtype)
    qs = [P(cp.asarray(p.data)) for p in ps]
    o_cpu = cls([{"params": ps[:2]}, {"params": ps[2:], "lr_scale": 0.5}], lr=1e-2, **kw)
    o_gpu = cls([{"params": qs[:2]}, {"params": qs[2:], "lr_scale": 0.5}], lr=1e-2, **kw)
    rng = np.random.default_rng(2)
    ids = [id(q.data) for q in qs]
    for _ in range(5):
        for p, q in zip(ps, qs):
            g = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad, q.grad = g, cp.asarray(g)
        o_cpu.step()
        o_gpu.step()
    assert [id(q.data) for q in qs] == ids
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(cp.asnumpy(q.data), p.data, **tol)
    # state_dict from the GPU loads into the CPU optimiser and vice versa
    sd = o_gpu.state_dict()
    assert all(isinstance(a, np.ndarray) for a in sd["arrays"].values())
    o_cpu.load_state_dict(sd)
    o_gpu.load_state_dict(o_cpu.state_dict())
    # clipping on the GPU
    n_gpu = clip_grad_norm_(qs, 0.1)
    n_cpu = clip_grad_norm_(ps, 0.1)
    assert isinstance(n_gpu, float)
    np.testing.assert_allclose(n_gpu, n_cpu, rtol=1e-12)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(cp.asnumpy(q.grad), p.grad, **tol)


@pytest.mark.gpu
def test_cuda_matches_torch_adamw():
    cp = _cupy()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(4)
    ps = [P(cp.asarray(rng.standard_normal(s).astype(np.float32))) for s in SHAPES]
    ts = [torch.tensor(cp.asnumpy(p.data), device="cuda", requires_grad=True) for p in ps]
    opt = AdamW(ps, lr=1e-2, weight_decay=0.1)
    topt = torch.optim.AdamW(ts, lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(10):
        for p, t in zip(ps, ts):
            g = rng.standard_normal(p.data.shape).astype(np.float32)
            p.grad = cp.asarray(g)
            t.grad = torch.tensor(g, device="cuda")
        opt.step()
        topt.step()
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(cp.asnumpy(p.data), t.detach().cpu().numpy(), rtol=1e-5, atol=1e-6)


def test_threads_give_identical_results():
    shapes = [(3 * optim._CHUNK + 17,), (300, 7), (5,)]
    results = []
    old = optim._optim_threads()
    try:
        for nt in (1, 3):
            optim.set_num_threads(nt)
            ps = _make(np.float32, seed=9, shapes=shapes)
            opt = AdamW(ps, lr=1e-2, weight_decay=0.1)
            norms = []
            for step in range(3):
                r = np.random.default_rng(step)
                for p in ps:
                    p.grad = r.standard_normal(p.data.shape).astype(np.float32)
                norms.append(clip_grad_norm_(ps, 10.0))
                opt.step()
            results.append(([p.data.copy() for p in ps], norms))
    finally:
        optim.set_num_threads(old)
    (a, na), (b, nb) = results
    assert na == nb                       # exact: per-piece sums are combined with math.fsum
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="n"):
        optim.set_num_threads(0)
