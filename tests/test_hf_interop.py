"""Import and export of Hugging Face directories for GPT-2 and GPT-1, checked against transformers.

Models are randomly initialised and saved locally; nothing is downloaded.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pygpt.models import GPT, GPTConfig  # noqa: E402
from pygpt.safetensors import load_file, save_file  # noqa: E402

IDS = np.random.default_rng(0).integers(0, 61, size=(2, 11))


def _hf_model(arch):
    kw = dict(vocab_size=61, n_positions=16, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0, embd_pdrop=0.0,
              attn_pdrop=0.0)
    torch.manual_seed(1)
    if arch == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw, activation_function="gelu_new")).eval()
    return transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**kw, afn="gelu")).eval()


def _hf_logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.numpy()


@pytest.mark.parametrize("arch", ["gpt2", "openai-gpt"])
def test_import_from_transformers_directory(tmp_path, arch):
    hf = _hf_model(arch)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = GPT.from_pretrained(tmp_path).eval()
    assert ours.config.ln == ("pre" if arch == "gpt2" else "post")
    logits, _ = ours(IDS)
    np.testing.assert_allclose(logits.numpy(), _hf_logits(hf), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_export_loads_in_transformers(tmp_path, ln):
    cfg = GPTConfig(vocab_size=61, n_ctx=16, n_layer=2, n_head=3, d_model=24, ln=ln, embd_pdrop=0.0, attn_pdrop=0.0,
                    resid_pdrop=0.0)
    ours = GPT(cfg, seed=3).eval()
    ours.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    cls = transformers.GPT2LMHeadModel if ln == "pre" else transformers.OpenAIGPTLMHeadModel
    assert meta["architectures"] == [cls.__name__]
    hf = cls.from_pretrained(tmp_path).eval()
    logits, _ = ours(IDS)
    np.testing.assert_allclose(_hf_logits(hf), logits.numpy(), rtol=1e-4, atol=2e-5)
    # and back again, bit for bit
    again = GPT.from_pretrained(tmp_path)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), again.named_parameters()):
        assert n1 == n2 and np.array_equal(p1.data, p2.data)


def test_checkpoint_without_prefix_and_with_buffers_loads(tmp_path):
    """Older GPT-2 files have no 'transformer.' prefix and carry attn.bias buffers and lm_head."""
    hf = _hf_model("gpt2")
    state = {k.replace("transformer.", ""): v.numpy() for k, v in hf.state_dict().items()}
    state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=np.float32))
    save_file(state, tmp_path / "model.safetensors")
    hf.config.to_json_file(tmp_path / "config.json")
    ours = GPT.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(ours(IDS)[0].numpy(), _hf_logits(hf), rtol=1e-4, atol=2e-5)


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        GPT.from_pretrained(tmp_path)
    _hf_model("gpt2").config.to_json_file(tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="only safetensors weights are read"):
        GPT.from_pretrained(tmp_path)
    hf = _hf_model("gpt2")
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        GPT.from_pretrained(tmp_path)
    w, _ = load_file(tmp_path / "model.safetensors")
    w.pop("transformer.h.1.mlp.c_fc.weight")
    save_file(w, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['h.1.mlp.c_fc.weight'\]"):
        GPT.from_pretrained(tmp_path)
