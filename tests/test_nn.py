"""Modules, state dicts, the GPT model's input checks, KV cache, and learning one batch."""
import numpy as np
import pytest

import pygpt.functional as F
from pygpt import Tensor, optim
from pygpt.models import GPT, GPTConfig, preset
from pygpt.nn import Dropout, Linear, Module, ModuleList, Parameter
from pygpt.random import Generator


class Tied(Module):
    def __init__(self):
        super().__init__()
        self.a = Linear(3, 4)
        self.b = Linear(4, 3)
        self.b.weight = Parameter(np.zeros((4, 3), dtype=np.float32))
        self.layers = ModuleList([Linear(3, 3), Linear(3, 3)])
        self.shared = self.a.weight


def test_named_parameters_follow_attribute_paths_and_dedupe_shared():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    # a module's own parameters come before its children's; a shared array is named once, first seen
    assert names == ["shared", "a.bias", "b.weight", "b.bias", "layers.0.weight", "layers.0.bias",
                     "layers.1.weight", "layers.1.bias"]
    assert m.num_parameters() == 3 * 4 + 4 + 4 * 3 + 3 + 2 * (9 + 3)


def test_state_dict_round_trip_and_strict_errors():
    m1, m2 = GPT(preset("tiny", vocab_size=50), seed=1), GPT(preset("tiny", vocab_size=50), seed=2)
    m2.load_state_dict({k: v.copy() for k, v in m1.state_dict().items()})
    for (n1, p1), (n2, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert n1 == n2 and np.array_equal(p1.data, p2.data)
    state = dict(m1.state_dict())
    state.pop("wte.weight")
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing \['wte.weight'\].*unexpected \['extra.weight'\]"):
        m2.load_state_dict(state)
    bad = dict(m1.state_dict())
    bad["wpe.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"'wpe.weight' has shape \(3, 3\)"):
        m2.load_state_dict(bad)
    missing, unexpected = m2.load_state_dict(state, strict=False)
    assert missing == ["wte.weight"] and unexpected == ["extra.weight"]


def test_train_eval_switches_dropout():
    d = Dropout(0.5, Generator(0))
    x = Tensor(np.ones(1000, dtype=np.float32))
    assert (d(x).numpy() == 0).any()
    d.eval()
    assert d(x) is x
    m = GPT(preset("tiny", vocab_size=20))
    m.eval()
    assert all(not mod.training for _, mod in m.named_modules())
    m.train()
    assert all(mod.training for _, mod in m.named_modules())


def test_parameter_counts_of_public_presets():
    # GPT-2 small with tied embeddings: 124,439,808 parameters (the published count)
    assert GPT(preset("gpt2")).num_parameters() == 124_439_808


def test_gpt_input_errors():
    m = GPT(preset("tiny", vocab_size=30, n_ctx=8))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 30\)"):
        m(np.array([[1, 30]]))
    with pytest.raises(ValueError, match="longer than the model's context n_ctx=8"):
        m(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(TypeError, match="ids must be integers"):
        m(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="ids must be 2-D"):
        m(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="must be divisible by n_head"):
        GPTConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="ln must be 'pre'"):
        GPTConfig(ln="middle")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gpt5")


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_kv_cache_logits_equal_full_recompute(ln):
    cfg = GPTConfig(vocab_size=40, n_ctx=24, n_layer=2, n_head=2, d_model=16, ln=ln)
    m = GPT(cfg, seed=4).to(dtype=np.float64).eval()
    ids = np.random.default_rng(0).integers(0, 40, size=(2, 20))
    full, _ = m(ids)
    cache = m.new_cache()
    parts = [m(ids[:, :7], cache=cache)[0]] + [m(ids[:, t:t + 1], cache=cache)[0] for t in range(7, 20)]
    np.testing.assert_allclose(np.concatenate([p.numpy() for p in parts], axis=1), full.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="longer than the model's context"):
        m(ids[:, :5], cache=cache)


def test_generate_greedy_matches_argmax_of_full_forward():
    m = GPT(GPTConfig(vocab_size=30, n_ctx=16, n_layer=2, n_head=2, d_model=16), seed=1).eval()
    prompt = np.array([[1, 2, 3]])
    out = m.generate(prompt, 5, temperature=0)
    seq = prompt
    for _ in range(5):
        logits, _ = m(seq)
        seq = np.concatenate([seq, logits.numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    with pytest.raises(ValueError, match="exceeds n_ctx=16"):
        m.generate(prompt, 14)


def test_tiny_model_overfits_one_batch():
    cfg = GPTConfig(vocab_size=64, n_ctx=16, n_layer=2, n_head=2, d_model=32, embd_pdrop=0, attn_pdrop=0,
                    resid_pdrop=0)
    m = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, size=(4, 16))
    y = rng.integers(0, 64, size=(4, 16))
    opt = optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(150):
        _, loss = m(x, y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert first > 4.0  # ≈ ln 64 at init
    assert loss.item() < 0.05
