"""The LSTM language model: gradient checks, a hand-written NumPy recurrence, torch.nn.LSTM parity."""
import numpy as np
import pytest

from pygpt import functional as F
from pygpt.autograd import Tensor
from pygpt.models.lstm import LSTM, LSTMConfig, LSTMLayer
from pygpt.testing import check_grad


def _slots(module):
    """(module, attribute, parameter) for every distinct parameter."""
    out, seen = [], set()
    for _, mod in module.named_modules():
        for name, p in mod._params.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out.append((mod, name, p))
    return out


def swapped(module, fn):
    """fn(*tensors) -> loss, with `module`'s parameters replaced by the given tensors (for check_grad)."""
    slots = _slots(module)

    def wrapped(*tensors):
        try:
            for (mod, name, _), t in zip(slots, tensors):
                object.__setattr__(mod, name, t)
            return fn(*tensors[len(slots):])
        finally:
            for mod, name, p in slots:
                object.__setattr__(mod, name, p)

    return wrapped, [p.data for _, _, p in slots]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, Wih, Whh, b, h, c):
    """Reference recurrence, gates i, f, g, o; x (B, T, in) -> outputs (B, T, H), (h, c)."""
    H = Whh.shape[0]
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ Wih + h @ Whh + b
        i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


def test_layer_forward_matches_numpy_recurrence():
    rng = np.random.default_rng(0)
    layer = LSTMLayer(5, 7, rng=rng, dtype=np.float64)
    x = rng.standard_normal((3, 6, 5))
    h0, c0 = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    out, (h, c) = layer(Tensor(x), (Tensor(h0), Tensor(c0)))
    ref, rh, rc = numpy_lstm(x, layer.weight_ih.data, layer.weight_hh.data, layer.bias.data, h0, c0)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h.numpy(), rh, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.numpy(), rc, rtol=1e-12, atol=1e-13)
    assert np.all(layer.bias.data[7:14] == 1.0) and np.all(layer.bias.data[:7] == 0)  # forget-gate bias


def test_layer_gradient_check():
    rng = np.random.default_rng(1)
    layer = LSTMLayer(4, 5, rng=rng, dtype=np.float64)
    x, h0, c0 = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5))

    def f(x, h, c):
        out, (hT, cT) = layer(x, (h, c))
        return F.concatenate([out.reshape(2, -1), hT, cT], axis=1)

    fn, params = swapped(layer, f)
    check_grad(fn, [*params, x, h0, c0], mode="directional", seed=3)
    check_grad(fn, [*params, x, h0, c0], mode="directional", seed=4)
    # small enough to check every element of the input too
    check_grad(lambda x: layer(x)[0], [x], mode="all")


def test_lm_loss_gradient_check_tied_and_untied():
    for tie in (True, False):
        model = LSTM(LSTMConfig(vocab_size=11, n_ctx=8, n_layer=2, d_model=6, tie_weights=tie), seed=2).to(dtype=np.float64)
        rng = np.random.default_rng(5)
        ids = rng.integers(0, 11, (3, 6))
        y = rng.integers(0, 11, (3, 6))
        fn, params = swapped(model, lambda: model(ids, y)[1])
        rep = check_grad(fn, params, mode="directional", seed=7)
        assert rep.checked[0][1] == sum(p.size for p in params)


def test_matches_torch_lstm():
    torch = pytest.importorskip("torch")
    cfg = LSTMConfig(vocab_size=13, n_ctx=16, n_layer=2, d_model=8)
    model = LSTM(cfg, seed=3).to(dtype=np.float64)
    ref = torch.nn.LSTM(8, 8, num_layers=2, batch_first=True).double()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for k, layer in enumerate(model.h):
            b_ih = rng.standard_normal(32)
            getattr(ref, f"weight_ih_l{k}").copy_(torch.from_numpy(layer.weight_ih.data.T.copy()))
            getattr(ref, f"weight_hh_l{k}").copy_(torch.from_numpy(layer.weight_hh.data.T.copy()))
            getattr(ref, f"bias_ih_l{k}").copy_(torch.from_numpy(b_ih))
            getattr(ref, f"bias_hh_l{k}").copy_(torch.from_numpy(layer.bias.data - b_ih))  # biases add up
    ids = rng.integers(0, 13, (4, 9))
    h = model.hidden_states(ids)
    emb = torch.from_numpy(model.wte.weight.data[ids]).requires_grad_(True)
    out, _ = ref(emb)
    np.testing.assert_allclose(h.numpy(), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    # gradients of the same scalar agree too
    w = rng.standard_normal(h.shape)
    h.backward(w)
    (out * torch.from_numpy(w)).sum().backward()
    for k, layer in enumerate(model.h):
        np.testing.assert_allclose(layer.weight_ih.grad, getattr(ref, f"weight_ih_l{k}").grad.numpy().T, rtol=1e-9,
                                   atol=1e-11)
        np.testing.assert_allclose(layer.weight_hh.grad, getattr(ref, f"weight_hh_l{k}").grad.numpy().T, rtol=1e-9,
                                   atol=1e-11)
        np.testing.assert_allclose(layer.bias.grad, getattr(ref, f"bias_ih_l{k}").grad.numpy(), rtol=1e-9, atol=1e-11)
    g_emb = np.zeros_like(model.wte.weight.data)
    np.add.at(g_emb, ids, emb.grad.numpy())
    np.testing.assert_allclose(model.wte.weight.grad, g_emb, rtol=1e-9, atol=1e-11)


def test_interface_logits_generate_and_state():
    model = LSTM(LSTMConfig(vocab_size=20, n_ctx=16, n_layer=1, d_model=8, tie_weights=False), seed=0)
    ids = np.array([[1, 2, 3, 4]])
    logits, loss = model(ids, np.array([[2, 3, 4, 5]]))
    assert logits.shape == (1, 4, 20) and loss.shape == () and np.isfinite(loss.item())
    assert [n for n, _ in model.named_parameters()] == ["wte.weight", "h.0.weight_ih", "h.0.weight_hh", "h.0.bias",
                                                        "lm_head.weight", "lm_head.bias"]
    out = model.generate(ids, 5, temperature=0)
    assert out.shape == (1, 9) and (out[:, :4] == ids).all()
    # greedy generation with the carried state equals re-running the whole prefix each step
    seq = ids
    for _ in range(5):
        nxt = model(seq)[0].numpy()[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    with pytest.raises(ValueError, match="token ids must be in"):
        model.hidden_states(np.array([[25]]))
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        LSTMConfig(n_layer=0)
