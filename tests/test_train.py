"""The main job end to end on a small corpus, the run directory it leaves, and `pygpt sample`."""
import json

import numpy as np
import pytest

from pygpt.cli import main
from pygpt.data.corpus import load_shakespeare, render_text
from pygpt.safetensors import load_file
from pygpt.train import TrainConfig, load_run, pretrain


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus = root / "corpus.txt"
    corpus.write_text(render_text(load_shakespeare()[:2]), encoding="utf-8")
    cfg = TrainConfig(preset="tiny", steps=40, batch_size=8, context=32, lr=3e-3, warmup=5, vocab_size=320,
                      corpus=str(corpus), out_dir=str(root / "run"), eval_interval=20, eval_batches=4,
                      log_interval=10, sample_tokens=10, quiet=True)
    result = pretrain(cfg)
    return root / "run", result


def test_validation_loss_falls_and_outputs_exist(run_dir):
    out, result = run_dir
    vals = [v for _, v in result["val_history"]]
    assert vals[0] > vals[-1] + 0.5, vals  # starts near ln(320) ≈ 5.77 and must clearly fall
    for name in ("tokenizer.json", "train.bin", "valid.bin", "config.json", "metrics.jsonl", "model.safetensors",
                 "samples.txt"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 40]
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in rows if "loss" in r)


def test_saved_weights_reload_to_the_same_model(run_dir):
    out, _ = run_dir
    model, tok = load_run(out)
    weights, meta = load_file(out / "model.safetensors")
    assert json.loads(meta["config"])["vocab_size"] == tok.n_vocab
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, weights[name])


def test_sample_command(run_dir, capsys):
    out, _ = run_dir
    assert main(["sample", "--run", str(out), "--prompt", "KING:\n", "--max-tokens", "8", "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("KING:\n") and len(text) > len("KING:\n")


def test_bad_corpus_paths_give_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train", "--corpus", str(empty), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "empty" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    assert main(["train", "--corpus", str(bad), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "bad.txt" in capsys.readouterr().err
    assert main(["train", "--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["sample", "--run", str(tmp_path)]) == 2
    assert "no model.safetensors" in capsys.readouterr().err


def test_train_config_validation():
    with pytest.raises(ValueError, match="warmup must be in"):
        TrainConfig(steps=10, warmup=20)
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        TrainConfig(vocab_size=100)
