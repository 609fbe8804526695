"""GPT-1 fine-tuning: task tokens, input layouts, truncation, the head and its losses, gradients,
padding, a synthetic end-to-end run, saving/loading, and the CLI subcommands."""
import json

import numpy as np
import pytest

from pygpt import functional as F
from pygpt.cli import main
from pygpt.data.corpus import load_shakespeare, render_text
from pygpt.finetune import (FinetuneConfig, TaskModel, add_task_tokens, collate, encode_example, finetune,
                            fit_segments, grow_vocab, lm_loss, load_base, load_finetuned, predict)
from pygpt.finetune.lstm_pretrain import pretrain_lstm
from pygpt.models.gpt import GPT, GPTConfig
from pygpt.tasks import parse_example
from pygpt.testing import check_grad
from pygpt.train import TrainConfig, pretrain


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    corpus = root / "corpus.txt"
    corpus.write_text(render_text(load_shakespeare()[:2]), encoding="utf-8")
    common = dict(steps=30, batch_size=8, context=48, lr=3e-3, warmup=3, vocab_size=300, corpus=str(corpus),
                  eval_interval=30, eval_batches=2, log_interval=10, sample_tokens=4, quiet=True)
    pretrain(TrainConfig(preset="tiny", out_dir=str(root / "gpt"), **common))
    (root / "lstm").mkdir()
    for name in ("tokenizer.json", "train.bin", "train.bin.json", "valid.bin", "valid.bin.json", "data.json"):
        (root / "lstm" / name).write_bytes((root / "gpt" / name).read_bytes())  # reuse the prepared data
    pretrain_lstm(TrainConfig(out_dir=str(root / "lstm"), **{**common, "steps": 4}), n_layer=1, d_model=32)
    return root


@pytest.fixture()
def base(runs):
    model, tok, _ = load_base(runs / "gpt")
    tok, ids = add_task_tokens(model, tok)
    return model, tok, ids


def ex(task, **fields):
    return parse_example(task, fields, require_label="label" in fields)


def tiny_gpt(dtype=np.float64, seed=0, V=40, n_ctx=24):
    cfg = GPTConfig(vocab_size=V, n_ctx=n_ctx, n_layer=2, n_head=2, d_model=8, embd_pdrop=0.0, attn_pdrop=0.0,
                    resid_pdrop=0.0, ln="post", scale_residual_init=False)
    return GPT(cfg, seed=seed).to(dtype=dtype)


class FakeTok:
    """Whitespace 'tokenizer' over integers so layouts are easy to write by hand."""

    def encode_ordinary(self, text):
        return [int(t) for t in text.split()]


IDS = {"start": 37, "delimiter": 38, "extract": 39}


def enc(task, n_ctx=24, truncate=False, label_names=("n", "y"), **fields):
    return encode_example(task, ex(task, **fields), FakeTok(), IDS, n_ctx, truncate, label_names)


# ------------------------------------------------------------------------------ vocabulary


def test_task_tokens_grow_the_vocabulary(runs):
    model, tok, _ = load_base(runs / "gpt")
    V = model.config.vocab_size
    old = model.wte.weight.data.copy()
    tok2, ids = add_task_tokens(model, tok, seed=3)
    assert ids == {"start": V, "delimiter": V + 1, "extract": V + 2}
    assert model.config.vocab_size == V + 3 == tok2.n_vocab and model.wte.weight.shape == (V + 3, old.shape[1])
    assert np.array_equal(model.wte.weight.data[:V], old)  # old rows bit-identical
    assert model.logits(model.hidden_states(np.array([[1, V + 2]]))).shape == (1, 2, V + 3)  # tied output grew
    assert tok2.encode("<|start|>x<|extract|>", allowed_special="all")[::2] == [V, V + 2]
    assert tok2.encode_ordinary("<|start|>") != [V]  # user text never becomes a task token
    # a tokenizer that already has them (a fine-tuned run) is reused as is
    assert add_task_tokens(model, tok2) == (tok2, ids) and model.config.vocab_size == V + 3


def test_new_rows_are_normal_002():
    model = GPT(GPTConfig(vocab_size=50, n_ctx=8, n_layer=1, n_head=2, d_model=512), seed=0)
    old = model.wte.weight.data.copy()
    new = grow_vocab(model, 20, seed=1)
    assert new == list(range(50, 70)) and model.config.vocab_size == 70
    rows = model.wte.weight.data[50:].astype(np.float64)
    assert np.array_equal(model.wte.weight.data[:50], old)
    assert abs(rows.std() - 0.02) < 0.001 and abs(rows.mean()) < 0.001
    assert model.wte.weight.dtype == np.float32


# ------------------------------------------------------------------------------ layouts and truncation


def test_token_layouts():
    s, d, e = 37, 38, 39
    assert enc("classify", text="1 2 3", label="y").seqs == [[s, 1, 2, 3, e]]
    r = enc("entail", premise="4 5", hypothesis="6", label="n")
    assert r.seqs == [[s, 4, 5, d, 6, e]] and r.label == 0
    assert enc("similar", text_a="1 2", text_b="3", label="y").seqs == [[s, 1, 2, d, 3, e], [s, 3, d, 1, 2, e]]
    r = enc("choice", context="7 8", choices=["1", "2 3", "4"], label=2)
    assert r.seqs == [[s, 7, 8, d, 1, e], [s, 7, 8, d, 2, 3, e], [s, 7, 8, d, 4, e]] and r.label == 2


def test_layouts_with_the_real_tokenizer(base):
    model, tok, ids = base
    e = encode_example("entail", ex("entail", premise="To be, or not", hypothesis="Ay, my lord."), tok, ids,
                       model.config.n_ctx)
    assert e.seqs == [[ids["start"], *tok.encode_ordinary("To be, or not"), ids["delimiter"],
                       *tok.encode_ordinary("Ay, my lord."), ids["extract"]]]


def _fit_reference(segs, budget, front=()):
    lens = [len(x) for x in segs]
    while sum(lens) > budget:
        i = int(np.argmax(lens))  # first of the longest
        lens[i] -= 1
    return [list(x[len(x) - n:]) if k in front else list(x[:n]) for k, (x, n) in enumerate(zip(segs, lens))]


def test_fit_segments_matches_one_token_at_a_time():
    rng = np.random.default_rng(0)
    for _ in range(200):
        segs = [list(range(100 * k, 100 * k + int(rng.integers(0, 30)))) for k in range(int(rng.integers(1, 4)))]
        budget = int(rng.integers(0, 60))
        front = {0} if rng.random() < 0.5 else set()
        assert fit_segments(segs, budget, front) == _fit_reference(segs, budget, front)


def test_truncation_keeps_extract_and_respects_n_ctx():
    long = " ".join(str(i) for i in range(30))
    r = enc("classify", n_ctx=10, truncate=True, text=long, label="y")
    assert r.seqs == [[37, *range(8), 39]] and r.truncated
    r = enc("entail", n_ctx=12, truncate=True, premise=long, hypothesis="31 32", label="y")
    assert r.seqs == [[37, *range(23, 30), 38, 31, 32, 39]]  # only the longest was cut, a premise at its start
    ten = " ".join(str(i) for i in range(10))
    r = enc("similar", n_ctx=18, truncate=True, text_a=ten, text_b=" ".join(str(i) for i in range(10, 20)), label="y")
    assert r.seqs == [[37, *range(7), 38, *range(10, 18), 39], [37, *range(10, 18), 38, *range(7), 39]]
    r = enc("choice", n_ctx=8, truncate=True, context=ten, choices=["1 2", "3 4 5 6 7 8 9"], label=0)
    assert r.seqs[0] == [37, 7, 8, 9, 38, 1, 2, 39]  # a context loses its start, an answer its end
    assert r.seqs[1] == [37, 8, 9, 38, 3, 4, 5, 39]  # cut to equal length, then alternately
    with pytest.raises(ValueError, match=r"<memory>: the classify input needs 32 tokens .* n_ctx=10; pass --truncate"):
        enc("classify", n_ctx=10, text=long, label="y")


def test_truncated_length_is_exactly_n_ctx():
    long = " ".join(str(i) for i in range(30))
    for task, fields in (("classify", {"text": long}), ("entail", {"premise": long, "hypothesis": long}),
                         ("similar", {"text_a": long, "text_b": "1"}), ("choice", {"context": long, "choices": [long, "1"]})):
        r = enc(task, n_ctx=16, truncate=True, label=0 if task == "choice" else "y", **fields)
        assert max(len(x) for x in r.seqs) == 16 and all(x[-1] == 39 for x in r.seqs), task


# ------------------------------------------------------------------------------ head, losses, gradients


def _model(task, n_classes=3, dtype=np.float64, seed=0):
    m = TaskModel(tiny_gpt(dtype, seed), task, n_classes, clf_pdrop=0.0, seed=seed)
    return m.eval()


def _batch(task, items, n_ctx=24, label_names=("n", "y", "z")):
    return collate(task, [encode_example(task, it, FakeTok(), IDS, n_ctx, False, label_names) for it in items])


def test_similar_is_symmetric():
    m = _model("similar")
    b1 = _batch("similar", [ex("similar", text_a="1 2 3", text_b="4 5", label="y")])
    b2 = _batch("similar", [ex("similar", text_a="4 5", text_b="1 2 3", label="y")])
    l1, l2 = m(b1).logits.numpy(), m(b2).logits.numpy()
    np.testing.assert_allclose(l1, l2, rtol=1e-13, atol=1e-14)
    assert not np.allclose(m(_batch("similar", [ex("similar", text_a="4 5", text_b="1 2 6", label="y")])).logits.numpy(), l1)


def test_choice_loss_is_softmax_over_the_k_scores():
    m = _model("choice")
    items = [ex("choice", context="1 2", choices=["3", "4 5", "6"], label=1),
             ex("choice", context="7", choices=["8", "9 10", "11", "12 13"], label=3)]
    b = _batch("choice", items)
    out = m(b, lm_coef=0)
    # by hand: extract state of every row -> score -> per-example softmax -> CE
    h = m.base.hidden_states(b.ids).numpy()
    x = h[np.arange(len(b.lengths)), b.lengths - 1]
    s = (x @ m.clf.weight.data + m.clf.bias.data)[:, 0]
    ce = []
    for rows, label in ((s[0:3], 1), (s[3:7], 3)):
        ce.append(-(rows[label] - np.log(np.exp(rows).sum())))
    np.testing.assert_allclose(out.loss.item(), np.mean(ce), rtol=1e-12)
    np.testing.assert_allclose(out.logits.numpy()[0, :3], s[0:3], rtol=1e-12)
    assert out.logits.numpy()[0, 3] == -1e9  # the missing fourth choice of example 0


def _grads(model):
    return {n: (p.grad.copy() if p.grad is not None else np.zeros_like(p.data)) for n, p in model.named_parameters()}


def test_lambda_zero_and_half_gradients():
    m = _model("classify")
    items = [ex("classify", text="1 2 3", label="y"), ex("classify", text="4 5 6 7 8", label="n"),
             ex("classify", text="9", label="z")]
    b = _batch("classify", items)

    def run(fn):
        m.zero_grad()
        fn().backward()
        return _grads(m)

    g0 = run(lambda: m(b, lm_coef=0).loss)
    g_clf = run(lambda: F.cross_entropy(m(b, lm_coef=0).logits, b.labels))
    g_lm = run(lambda: lm_loss(m.base, m.base.hidden_states(b.ids), b.ids, b.lengths))
    g_half = run(lambda: m(b, lm_coef=0.5).loss)
    for n in g0:
        assert np.array_equal(g0[n], g_clf[n]), n  # λ = 0: exactly the classifier's gradient
        np.testing.assert_allclose(g_half[n], g_clf[n] + 0.5 * g_lm[n], rtol=1e-10, atol=1e-14, err_msg=n)
    assert np.abs(g_lm["wte.weight" if "wte.weight" in g_lm else "base.wte.weight"]).sum() > 0
    assert np.all(g_lm["clf.weight"] == 0)


def test_lm_loss_counts_real_tokens_only():
    m = _model("classify")
    b = _batch("classify", [ex("classify", text="1 2 3 4 5 6", label="y"), ex("classify", text="9", label="n")])
    got = lm_loss(m.base, m.base.hidden_states(b.ids), b.ids, b.lengths).item()
    logits = m.base(b.ids)[0].numpy()
    terms = []
    for r, L in enumerate(b.lengths):
        for t in range(L - 1):
            z = logits[r, t]
            terms.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[b.ids[r, t + 1]])
    assert len(terms) == 7 + 2
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-12)


def test_padding_does_not_change_a_rows_logits():
    for task, short, longer in (
        ("classify", ex("classify", text="1 2", label="y"), ex("classify", text=" ".join(["3"] * 15), label="n")),
        ("choice", ex("choice", context="1", choices=["2", "3"], label=0),
         ex("choice", context=" ".join(["4"] * 12), choices=["5 6 7", "8", "9"], label=1)),
        ("similar", ex("similar", text_a="1", text_b="2", label="y"),
         ex("similar", text_a=" ".join(["5"] * 9), text_b="6 7", label="n")),
    ):
        m = _model(task, dtype=np.float32)
        alone = m(_batch(task, [short])).logits.numpy()[0]
        both = m(_batch(task, [longer, short])).logits.numpy()[1][:alone.shape[0]]
        np.testing.assert_allclose(both, alone, rtol=2e-5, atol=2e-6, err_msg=task)


def _swapped_loss(model, batch, lm_coef):
    slots, seen = [], set()
    for _, mod in model.named_modules():
        for name, p in mod._params.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                slots.append((mod, name, p))

    def fn(*tensors):
        try:
            for (mod, name, _), t in zip(slots, tensors):
                object.__setattr__(mod, name, t)
            return model(batch, lm_coef=lm_coef).loss
        finally:
            for mod, name, p in slots:
                object.__setattr__(mod, name, p)

    return fn, [p.data for _, _, p in slots]


@pytest.mark.parametrize("task", ["classify", "entail", "similar", "choice"])
def test_gradient_check_of_the_whole_finetuning_loss(task):
    m = _model(task, seed=1)
    f = {"classify": dict(text="1 2 3 4"), "entail": dict(premise="1 2", hypothesis="3 4 5"),
         "similar": dict(text_a="1 2", text_b="3 4 5 6"), "choice": dict(context="1 2", choices=["3", "4 5", "6 7 8"])}[task]
    g = {"classify": dict(text="9 8"), "entail": dict(premise="9", hypothesis="8 7"),
         "similar": dict(text_a="9", text_b="8"), "choice": dict(context="9 10 11", choices=["8", "7"])}[task]
    lab = (1, 0) if task == "choice" else ("y", "z")
    b = _batch(task, [ex(task, label=lab[0], **f), ex(task, label=lab[1], **g)])
    fn, params = _swapped_loss(m, b, 0.5)
    for seed in (0, 1):
        check_grad(fn, params, mode="directional", seed=seed, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_dropout_is_used_while_training_only():
    m = TaskModel(tiny_gpt(), "classify", 2, clf_pdrop=0.5, seed=0)
    b = _batch("classify", [ex("classify", text="1 2 3", label="y")], label_names=("n", "y"))
    m.eval()
    a1, a2 = m(b).logits.numpy(), m(b).logits.numpy()
    m.train()
    t1, t2 = m(b).logits.numpy(), m(b).logits.numpy()
    assert np.array_equal(a1, a2) and not np.array_equal(t1, t2)


# ------------------------------------------------------------------------------ end to end


def _synthetic(n, rng):
    """Separable: class 'a' texts use one set of words, class 'b' another."""
    words = {"a": ["sun", "day", "light", "gold"], "b": ["moon", "night", "dark", "silver"]}
    out = []
    for i in range(n):
        lab = "ab"[i % 2]
        out.append(ex("classify", text=" ".join(rng.choice(words[lab], size=int(rng.integers(3, 7)))), label=lab))
    return out


def test_end_to_end_synthetic_task_reaches_high_accuracy(runs):
    rng = np.random.default_rng(0)
    train, valid = _synthetic(128, rng), _synthetic(64, rng)
    cfg = FinetuneConfig(task="classify", run=str(runs / "gpt"), out_dir=None, lr=2e-3, batch_size=8, epochs=3,
                         clf_pdrop=0.1, seed=0, quiet=True)
    r = finetune(cfg, train, valid)
    assert r["valid"]["accuracy"] >= 0.95, r["valid"]
    assert r["steps"] == 48 and r["label_names"] == ["a", "b"]
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]


def test_save_load_and_predict_round_trip(runs, tmp_path):
    rng = np.random.default_rng(1)
    train = _synthetic(32, rng)
    r = finetune(FinetuneConfig(task="classify", run=str(runs / "lstm"), out_dir=str(tmp_path / "ft"), lr=1e-3,
                                batch_size=8, epochs=1, quiet=True), train, train[:8])
    model, tok, meta = load_finetuned(tmp_path / "ft")
    assert meta["task"] == "classify" and meta["label_names"] == ["a", "b"] and meta["arch"] == "lstm"
    assert meta["special_tokens"] == r["special_tokens"] and tok.special_tokens["<|extract|>"] == meta["special_tokens"]["extract"]
    b = collate("classify", [encode_example("classify", e, tok, meta["special_tokens"], 48, False, ["a", "b"])
                             for e in train[:8]])
    r["model"].eval()
    np.testing.assert_array_equal(model(b).logits.numpy(), r["model"](b).logits.numpy())
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(e.to_json()) + "\n" for e in train[:8]))
    res = predict(tmp_path / "ft", data, tmp_path / "preds.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [row["line"] for row in rows] == list(range(1, 9)) and all(row["prediction"] in "ab" for row in rows)
    np.testing.assert_allclose(res["metrics"]["accuracy"], r["valid"]["accuracy"])
    assert all(abs(sum(row["probabilities"]) - 1) < 1e-5 for row in rows)


def test_max_len_caps_sequences_and_predict_uses_it(runs, tmp_path):
    rng = np.random.default_rng(2)
    words = {"a": ["sun", "day", "light", "gold"], "b": ["moon", "night", "dark", "silver"]}
    train = [ex("classify", text=" ".join(rng.choice(words["ab"[i % 2]], size=30)), label="ab"[i % 2])
             for i in range(16)]  # ~30+ tokens each: longer than max_len, shorter than the n_ctx of 48
    with pytest.raises(ValueError, match="max_len"):
        FinetuneConfig(task="classify", run=str(runs / "gpt"), max_len=2)
    r = finetune(FinetuneConfig(task="classify", run=str(runs / "gpt"), out_dir=str(tmp_path / "ft"), lr=1e-3,
                                batch_size=8, epochs=1, truncate=True, max_len=12, quiet=True), train, train[:8])
    assert r["max_len"] == 12
    model, tok, meta = load_finetuned(tmp_path / "ft")
    assert meta["max_len"] == 12
    enc = [encode_example("classify", e, tok, meta["special_tokens"], 12, True, ["a", "b"]) for e in train[:8]]
    assert all(e.truncated and len(e.seqs[0]) == 12 for e in enc)
    want = F.softmax(model(collate("classify", enc)).logits, axis=-1).numpy()
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(e.to_json()) + "\n" for e in train[:8]))
    got = np.array([row["probabilities"] for row in predict(tmp_path / "ft", data)["predictions"]])
    np.testing.assert_allclose(got, want, atol=2e-6)  # predict encodes at 12 tokens too, not at n_ctx


def test_lstm_pretraining_resumes_exactly(runs, tmp_path):
    """A run cut after its first checkpoint and resumed ends with the same weights, bit for bit,
    as one that ran straight through (dropout on, so the RNG state must travel too)."""
    from pygpt.safetensors import load_file

    def run(name, **kw):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        for f in ("tokenizer.json", "train.bin", "train.bin.json", "valid.bin", "valid.bin.json", "data.json"):
            (d / f).write_bytes((runs / "gpt" / f).read_bytes())
        cfg = TrainConfig(out_dir=str(d), steps=6, batch_size=4, context=24, lr=3e-3, warmup=2, vocab_size=300,
                          corpus=str(runs / "corpus.txt"), eval_interval=3, checkpoint_interval=3, eval_batches=1,
                          log_interval=1, quiet=True, **kw)
        return pretrain_lstm(cfg, n_layer=2, d_model=16, dropout=0.2), d

    straight, d1 = run("straight")
    _, d2 = run("cut")
    (d2 / "checkpoints" / "ckpt-00000006.safetensors").unlink()  # as if killed after the step-3 checkpoint
    (d2 / "model.safetensors").unlink()
    resumed, _ = run("cut", resume=True)
    a, _ = load_file(d1 / "model.safetensors")
    b, _ = load_file(d2 / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert straight["resumed_from"] == 0 and resumed["resumed_from"] == 3  # it did continue, not restart
    assert resumed["final_loss"] == straight["final_loss"]
    assert resumed["val_history"] == straight["val_history"]
    with pytest.raises(ValueError, match="LSTM"):
        pretrain_lstm(TrainConfig(out_dir=str(d2), steps=6, batch_size=4, context=24, lr=3e-3, warmup=2,
                                  vocab_size=300, corpus=str(runs / "corpus.txt"), eval_interval=3,
                                  checkpoint_interval=3, eval_batches=1, log_interval=1, quiet=True, resume=True),
                      n_layer=1, d_model=16, dropout=0.2)


def test_from_scratch_keeps_config_but_not_weights(runs):
    pre, _, _ = load_base(runs / "gpt")
    fresh, _, _ = load_base(runs / "gpt", seed=5, from_scratch=True)
    assert fresh.config == pre.config
    assert not np.array_equal(fresh.wte.weight.data, pre.wte.weight.data)


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def task_dir(runs):
    out = runs / "tasks"
    assert main(["tasks", "build", "--out", str(out), "--max-examples", "12"]) == 0
    return out


@pytest.mark.parametrize("task", ["classify", "entail", "similar", "choice"])
def test_cli_finetune_and_predict(runs, task_dir, tmp_path, task, capsys):
    out = tmp_path / "ft"
    extra = {"classify": [], "entail": ["--lambda", "0"], "similar": ["--from-scratch"], "choice": []}[task]
    assert main(["finetune", "--task", task, "--run", str(runs / "gpt"), "--data", str(task_dir / task / "train.jsonl"),
                 "--valid", str(task_dir / task / "valid.jsonl"), "--out", str(out), "--epochs", "1", "--batch", "6",
                 "--lr", "1e-3", "--truncate", *extra]) == 0
    done = capsys.readouterr().out.splitlines()[-1]
    assert done.startswith("done") and "held-out accuracy" in done and ("macro-F1" in done) == (task != "choice")
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "metrics.jsonl"):
        assert (out / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["finetune"]["task"] == task and set(cfg["finetune"]["special_tokens"]) == {"start", "delimiter", "extract"}
    assert cfg["finetune"]["config"]["lm_coef"] == (0.0 if task == "entail" else 0.5)
    assert cfg["finetune"]["config"]["from_scratch"] == (task == "similar")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["valid"]["n"] == 12 and 0 <= metrics["valid"]["accuracy"] <= 1
    assert b"pickle" not in (out / "model.safetensors").read_bytes()[:200]
    assert main(["predict", "--run", str(out), "--data", str(task_dir / task / "test.jsonl"),
                 "--out", str(tmp_path / "preds.jsonl")]) == 0
    assert "accuracy" in capsys.readouterr().err
    assert len((tmp_path / "preds.jsonl").read_text().splitlines()) == 12


def test_cli_errors_exit_2(runs, task_dir, tmp_path, capsys):
    good = task_dir / "classify" / "train.jsonl"
    args = ["finetune", "--run", str(runs / "gpt"), "--out", str(tmp_path / "o"), "--epochs", "1"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--task", "regress", "--data", str(good)])
    assert e.value.code == 2 and "invalid choice: 'regress'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n" + '{"text": "x", "label": ' + "\n")
    assert main([*args, "--task", "classify", "--data", str(bad)]) == 2
    assert f"{bad}:2: malformed JSON" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "a", "label": "x"}\n{"text": ["a"], "label": "y"}\n')
    assert main([*args, "--task", "classify", "--data", str(wrong)]) == 2
    assert f"{wrong}:2: field 'text' must be a string, got array" in capsys.readouterr().err
    valid = tmp_path / "valid.jsonl"
    valid.write_text('{"text": "a", "label": "comedy"}\n{"text": "a", "label": "farce"}\n')
    assert main([*args, "--task", "classify", "--data", str(good), "--valid", str(valid)]) == 2
    assert f"{valid}:2: field 'label': 'farce' does not occur in the training data" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"text": "word " * 200, "label": "a"}) + "\n" + json.dumps({"text": "b", "label": "b"}) + "\n")
    assert main([*args, "--task", "classify", "--data", str(long)]) == 2
    err = capsys.readouterr().err
    assert f"{long}:1: the classify input needs" in err and "n_ctx=48" in err and "--truncate" in err
    assert main(["predict", "--run", str(runs / "gpt"), "--data", str(good)]) == 2
    assert "not a fine-tuned run" in capsys.readouterr().err
    assert main([*args, "--task", "classify", "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
