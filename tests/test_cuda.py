"""The same code on CuPy: every op, the GPT model, dropout bits and training steps agree with NumPy.

These tests need CuPy and a CUDA GPU; elsewhere they are reported as skipped (not run), never passed.
Run them with `pytest -m gpu -rs` on a GPU machine (see README).
"""
import numpy as np
import pytest

import pygpt.functional as F
from pygpt import Tensor
from pygpt.autograd import OP_REGISTRY
from pygpt.backend import cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA GPU")]

rng = np.random.default_rng(0)


def _r(*shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape)


IDS = rng.integers(0, 5, size=(3, 4))
TGT = np.array([0, 2, -100, 4])
MASK = rng.random((3, 5)) > 0.5
KEY_MASK = np.array([[True, True, False, True, True], [False, False, False, False, False]])

# op name -> (function of tensors, input arrays)
CASES = {
    "add": (lambda a, b: a + b, [_r(3, 1, 4), _r(2, 4)]),
    "sub": (lambda a, b: a - b, [_r(3, 4), _r(4)]),
    "mul": (lambda a, b: a * b, [_r(3, 4), _r(3, 1)]),
    "div": (lambda a, b: a / b, [_r(3, 4), _r(3, 4, lo=0.5)]),
    "pow": (lambda a, b: a ** b, [_r(3, 4, lo=0.3), _r(4)]),
    "pow_scalar": (lambda a: a ** 3, [_r(3, 4)]),
    "neg": (lambda a: -a, [_r(5)]),
    "exp": (F.exp, [_r(3, 4)]),
    "log": (F.log, [_r(3, 4, lo=0.2)]),
    "tanh": (F.tanh, [_r(3, 4)]),
    "sigmoid": (F.sigmoid, [_r(3, 4)]),
    "sqrt": (F.sqrt, [_r(3, 4, lo=0.2)]),
    "relu": (F.relu, [_r(3, 4)]),
    "gelu": (lambda a: F.gelu(a) + F.gelu(a, "none"), [_r(3, 4, lo=-5, hi=5)]),
    "sum": (lambda a: a.sum(axis=(0, 2), keepdims=True), [_r(2, 3, 4)]),
    "mean": (lambda a: a.mean(axis=1), [_r(2, 3, 4)]),
    "max": (lambda a: a.max(axis=1), [np.arange(24.0).reshape(2, 3, 4) * 0.37 % 5]),
    "var": (lambda a: a.var(axis=-1, ddof=1), [_r(2, 3, 4)]),
    "reshape": (lambda a: a.reshape(4, 6), [_r(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [_r(2, 3, 4)]),
    "getitem": (lambda a: a[np.array([0, 2, 2]), 1:3], [_r(3, 4)]),
    "concatenate": (lambda a, b: F.concatenate([a, b], axis=1), [_r(2, 3), _r(2, 2)]),
    "stack": (lambda a, b: F.stack([a, b], axis=0), [_r(2, 3), _r(2, 3)]),
    "matmul": (lambda a, b: a @ b, [_r(2, 3, 4), _r(4, 5)]),
    "linear": (F.linear, [_r(2, 3, 4), _r(4, 5), _r(5)]),
    "softmax": (lambda a: F.softmax(a, -1), [_r(3, 5) * 30]),
    "log_softmax": (lambda a: F.log_softmax(a, 0), [_r(3, 5)]),
    "layer_norm": (F.layer_norm, [_r(2, 3, 6), _r(6), _r(6)]),
    "embedding": (lambda w: F.embedding(w, IDS), [_r(5, 3)]),
    "dropout": (lambda a: F.dropout(a, 0.3, __import__("pygpt").random.Generator(5)), [_r(4, 50)]),
    "where": (lambda a, b: F.where(MASK, a, b), [_r(3, 5), _r(5)]),
    "cross_entropy": (lambda z: F.cross_entropy(z, TGT), [_r(4, 5) * 10]),
    "linear_cross_entropy": (lambda x, w: F.linear_cross_entropy(x, w, TGT), [_r(4, 3) * 3, _r(5, 3)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False, key_mask=KEY_MASK,
                                                                  dropout_p=0.2,
                                                                  generator=__import__("pygpt").random.Generator(3)),
                  [_r(2, 2, 5, 4), _r(2, 2, 5, 4), _r(2, 2, 5, 4)]),
    "astype": (lambda a: a.astype(np.float32).astype(np.float64), [_r(3, 4)]),
    "to_device": (lambda a: F.to_device(a, "cpu").to("cuda") * 2.0, [_r(3, 4)]),
}


def _run(fn, arrays, device):
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    moved = [t.to(device) for t in ts]  # differentiable move: grads come back to the leaves
    out = fn(*moved)
    w = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(out.xp.asarray(w))
    return out.numpy(), [t.grad for t in ts]


def test_every_differentiable_op_has_a_gpu_case():
    differentiable = {n for n, c in OP_REGISTRY.items() if c.differentiable}
    assert differentiable <= set(CASES), sorted(differentiable - set(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_on_gpu_equals_cpu(name):
    fn, arrays = CASES[name]
    out_c, g_c = _run(fn, arrays, "cpu")
    out_g, g_g = _run(fn, arrays, "cuda")
    np.testing.assert_allclose(out_g, out_c, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_g, g_c):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_dropout_bits_identical_on_cpu_and_gpu():
    import cupy

    from pygpt.random import keep_mask

    for p in (0.1, 0.5):
        c = keep_mask(123456789, (7, 1000), p)
        g = keep_mask(123456789, (7, 1000), p, xp=cupy)
        assert np.array_equal(c, cupy.asnumpy(g))


def test_gpt_training_steps_agree_between_cpu_and_gpu():
    from pygpt import optim
    from pygpt.models import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=64, n_ctx=16, n_layer=2, n_head=2, d_model=32)  # dropout 0.1 on: same bits
    data = np.random.default_rng(0).integers(0, 64, size=(6, 4, 17))
    losses = {}
    for device in ("cpu", "cuda"):
        model = GPT(cfg, seed=0).to(device=device)
        opt = optim.AdamW(optim.param_groups(model.named_parameters(), 0.01), lr=1e-3)
        losses[device] = []
        for batch in data:
            _, loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses[device].append(loss.item())
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=2e-5)


def test_train_and_sample_commands_on_cuda(tmp_path, capsys):
    from pygpt.cli import main
    from pygpt.data.corpus import load_shakespeare, render_text

    corpus = tmp_path / "c.txt"
    corpus.write_text(render_text(load_shakespeare()[:1]), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--preset", "tiny", "--steps", "20", "--batch", "8", "--context", "32",
                 "--vocab-size", "300", "--corpus", str(corpus), "--out", str(out), "--eval-interval", "10"]) == 0
    assert "device cuda" in capsys.readouterr().out
    assert main(["sample", "--device", "cuda", "--run", str(out), "--max-tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
