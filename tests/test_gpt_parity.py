"""GPT-1 and GPT-2 against HF transformers with the same (random) weights: logits and LM-loss gradients.

The reference models are built offline from a config (random init); nothing is downloaded.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pygpt.models import GPT, GPTConfig  # noqa: E402


def _cfg(ln):
    return GPTConfig(vocab_size=97, n_ctx=32, n_layer=3, n_head=4, d_model=32, d_ff=128, ln=ln,
                     embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)


def _hf_gpt2(cfg):
    hf_cfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.d_ff,
                                     activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                     layer_norm_epsilon=cfg.layer_norm_eps)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_cfg).double().eval()
    return model, "transformer.", {}


def _hf_gpt1(cfg):
    # OpenAIGPT maps afn="gelu" to gelu_new, the tanh form of GPT-1's original code
    hf_cfg = transformers.OpenAIGPTConfig(vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
                                          n_layer=cfg.n_layer, n_head=cfg.n_head, afn="gelu", resid_pdrop=0,
                                          embd_pdrop=0, attn_pdrop=0, layer_norm_epsilon=cfg.layer_norm_eps)
    torch.manual_seed(0)
    model = transformers.OpenAIGPTLMHeadModel(hf_cfg).double().eval()
    return model, "transformer.", {"tokens_embed": "wte", "positions_embed": "wpe"}


def _copy_weights(ours: GPT, hf, prefix, rename):
    """Copy HF's (random) weights into our model; returns the name map ours -> HF."""
    hf_params = dict(hf.named_parameters())
    mapping = {}
    state = {}
    for hf_name, p in hf_params.items():
        if not hf_name.startswith(prefix):
            continue  # lm_head is tied to wte
        name = hf_name[len(prefix):]
        for old, new in rename.items():
            name = name.replace(old, new)
        mapping[name] = hf_name
        state[name] = p.detach().numpy().astype(np.float64)
    ours.load_state_dict(state, strict=True)
    return mapping


@pytest.mark.parametrize("variant", ["gpt2", "gpt1"])
def test_logits_and_grads_match_transformers(variant):
    cfg = _cfg("pre" if variant == "gpt2" else "post")
    ours = GPT(cfg).to(dtype=np.float64)
    hf, prefix, rename = (_hf_gpt2 if variant == "gpt2" else _hf_gpt1)(cfg)
    if variant == "gpt1":
        assert ours.config.d_ff == 4 * cfg.d_model  # HF OpenAIGPT hard-codes a 4x MLP
    mapping = _copy_weights(ours, hf, prefix, rename)
    assert set(mapping) == {n for n, _ in ours.named_parameters()}

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, size=(2, 17))
    targets = rng.integers(0, cfg.vocab_size, size=(2, 17))

    logits, loss = ours(ids, targets)
    loss.backward()

    t_ids = torch.tensor(ids)
    out = hf(input_ids=t_ids)
    ref_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), torch.tensor(targets).reshape(-1))
    ref_loss.backward()

    np.testing.assert_allclose(logits.numpy(), out.logits.detach().numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-7)
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        ref = hf_params[mapping[name]].grad.numpy()
        np.testing.assert_allclose(p.grad, ref, rtol=1e-5, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("variant", ["gpt2", "gpt1"])
def test_fused_classifier_loss_and_grads_match_transformers(variant):
    """return_logits=False: the classifier and cross-entropy fused (no logits array), same loss and grads."""
    cfg = _cfg("pre" if variant == "gpt2" else "post")
    ours = GPT(cfg).to(dtype=np.float64)
    hf, prefix, rename = (_hf_gpt2 if variant == "gpt2" else _hf_gpt1)(cfg)
    mapping = _copy_weights(ours, hf, prefix, rename)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, cfg.vocab_size, size=(2, 17))
    targets = rng.integers(0, cfg.vocab_size, size=(2, 17))

    logits, loss = ours(ids, targets, return_logits=False)
    assert logits is None
    loss.backward()
    out = hf(input_ids=torch.tensor(ids))
    ref_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), torch.tensor(targets).reshape(-1))
    ref_loss.backward()

    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-7)
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, hf_params[mapping[name]].grad.numpy(), rtol=1e-5, atol=1e-10, err_msg=name)


def test_float32_model_matches_float64_reference_closely():
    cfg = _cfg("pre")
    ours32 = GPT(cfg, seed=3)
    ours64 = GPT(cfg, seed=3).to(dtype=np.float64)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 9))
    l32, _ = ours32(ids)
    l64, _ = ours64(ids)
    np.testing.assert_allclose(l32.numpy(), l64.numpy(), rtol=1e-4, atol=1e-5)
