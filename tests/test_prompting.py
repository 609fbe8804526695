"""Zero/few-shot prompting: prompt layout, candidate scoring against a hand computation, few-shot
accuracy, TL;DR generation, and `pygpt fewshot`."""
import json

import numpy as np
import pytest

from pygpt.cli import main
from pygpt.data.corpus import load_shakespeare, render_text
from pygpt.finetune import load_base
from pygpt.prompting import (PromptTemplate, build_prompt, fewshot_accuracy, score_candidates, score_continuations,
                             task_prompt, tldr)
from pygpt.tasks import parse_example, write_jsonl
from pygpt.train import TrainConfig, pretrain


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt")
    corpus = root / "corpus.txt"
    corpus.write_text(render_text(load_shakespeare()[:1]), encoding="utf-8")
    pretrain(TrainConfig(preset="tiny", steps=12, batch_size=8, context=96, lr=3e-3, warmup=2, vocab_size=300,
                         corpus=str(corpus), out_dir=str(root / "run"), eval_interval=12, eval_batches=1,
                         log_interval=6, sample_tokens=2, quiet=True))
    return root / "run"


@pytest.fixture(scope="module")
def lm(run):
    model, tok, _ = load_base(run)
    return model, tok


def _log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def hand_score(model, p, c, reduction="sum"):
    seq = np.array([p + c])
    lp = _log_softmax(model(seq)[0].numpy()[0])
    vals = [lp[len(p) - 1 + j, t] for j, t in enumerate(c)]
    return float(np.sum(vals) if reduction == "sum" else np.mean(vals))


def test_prompt_layout():
    t = PromptTemplate(instruction="Pick the reply.", answer_prefix="\n", sep="\n\n")
    assert build_prompt("Q3", [("Q1", "A1"), ("Q2", "A2")], t) == "Pick the reply.\n\nQ1\nA1\n\nQ2\nA2\n\nQ3"
    assert build_prompt("Q", []) == "Q"
    assert build_prompt("Q", [("x", "y")]) == "x y\n\nQ"


def test_task_prompts():
    ex = parse_example("choice", {"context": "A:\nhi\n\nB:", "choices": ["yo", "no"], "label": 1})
    assert task_prompt(ex) == ("A:\nhi\n\nB:", ["yo", "no"], 1)
    ex = parse_example("entail", {"premise": "p", "hypothesis": "h", "label": "yes"})
    assert task_prompt(ex, ["no", "yes"]) == ("A: p\nB: h\nDoes B answer A?", ["no", "yes"], 1)
    ex = parse_example("classify", {"text": "t", "label": "comedy"})
    assert task_prompt(ex, ["comedy", "history"]) == ("t\nLabel:", ["comedy", "history"], 0)
    with pytest.raises(ValueError, match="needs the label names"):
        task_prompt(ex)


def test_scores_equal_a_hand_computation(lm):
    model, tok = lm
    pairs = [([5, 9, 30], [40, 41]), ([7], [3, 99, 12, 8]), ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [60])]
    for red in ("sum", "mean"):
        got = score_continuations(model, pairs, red, batch_size=2)  # padded batches of different lengths
        want = [hand_score(model, p, c, red) for p, c in pairs]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    one = [score_continuations(model, [pr], "sum")[0] for pr in pairs]
    np.testing.assert_allclose(score_continuations(model, pairs, "sum"), one, rtol=1e-5, atol=1e-5)


def test_long_prompts_lose_their_start(lm):
    model, tok = lm
    n = model.config.n_ctx
    p, c = list(range(10, 10 + n + 5)), [3, 4, 5]
    got = score_continuations(model, [(p, c)], "sum")[0]
    np.testing.assert_allclose(got, hand_score(model, p[len(p) - (n - 3):], c, "sum"), rtol=1e-5, atol=1e-5)


def test_scoring_errors(lm):
    model, _ = lm
    with pytest.raises(ValueError, match="pair 0: the prompt is empty"):
        score_continuations(model, [([], [1])])
    with pytest.raises(ValueError, match="pair 1: the continuation is empty"):
        score_continuations(model, [([1], [2]), ([1], [])])
    with pytest.raises(ValueError, match="leaves no room"):
        score_continuations(model, [([1], [2] * model.config.n_ctx)])
    with pytest.raises(ValueError, match="reduction must be"):
        score_continuations(model, [([1], [2])], "max")


def test_score_candidates_uses_the_answer_prefix(lm):
    model, tok = lm
    got = score_candidates(model, tok, "KING:", ["my lord", "sir"], answer_prefix="\n", reduction="sum")
    p = tok.encode_ordinary("KING:")
    want = [hand_score(model, p, tok.encode_ordinary("\n" + c)) for c in ("my lord", "sir")]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _choice_examples():
    rows = [("A:\nGood morrow.\n\nB:", ["Good morrow, sir.", "The king is dead.", "Away!"], 0),
            ("C:\nWhere is my lord?\n\nD:", ["He is within.", "Good night.", "O heavens!"], 0),
            ("E:\nWhat news?\n\nF:", ["None, my lord.", "Farewell.", "I will."], 1)]
    return [parse_example("choice", {"context": c, "choices": ch, "label": lab}, f"mem:{i + 1}")
            for i, (c, ch, lab) in enumerate(rows)]


def test_fewshot_accuracy_by_hand(lm):
    model, tok = lm
    exs = _choice_examples()[:2]
    t = PromptTemplate(answer_prefix="\n", sep="\n\n\n")
    res = fewshot_accuracy(model, tok, exs, shots=(0, 1), reduction="mean")
    for k in (0, 1):
        correct = 0
        for i, q in enumerate(exs):
            demos = [] if k == 0 else [(exs[1 - i].fields["context"], exs[1 - i].fields["choices"][exs[1 - i].label])]
            p = tok.encode_ordinary(build_prompt(q.fields["context"], demos, t))
            s = [hand_score(model, p, tok.encode_ordinary("\n" + c), "mean") for c in q.fields["choices"]]
            correct += int(np.argmax(s) == q.label)
        assert res[k]["accuracy"] == correct / 2 and res[k]["n"] == 2
    assert res[0]["mean_shots_used"] == 0 and res[1]["mean_shots_used"] == 1  # never the query itself


def test_demonstrations_are_dropped_to_fit_the_context(lm):
    model, tok = lm
    exs = [parse_example("choice", {"context": f"{i} " + "and so forth " * 3, "choices": ["yes", "no"], "label": 0})
           for i in range(6)]
    res = fewshot_accuracy(model, tok, exs, shots=(0, 1, 8), seed=1)
    assert res[0]["mean_shots_used"] == 0 and res[1]["mean_shots_used"] == 1
    assert 1 < res[8]["mean_shots_used"] < 5  # 5 others exist; n_ctx=96 holds fewer
    assert 0 <= res[8]["accuracy"] <= 1


def test_fewshot_on_classification_uses_label_candidates(lm):
    model, tok = lm
    exs = [parse_example("classify", {"text": t, "label": lab}) for t, lab in
           (("Ha ha, a merry jest!", "comedy"), ("O, I die!", "tragedy"), ("My lords, to war.", "history"))]
    res = fewshot_accuracy(model, tok, exs, shots=(0,))
    want = 0
    for q in exs:
        p = tok.encode_ordinary(q.fields["text"] + "\nLabel:")
        s = [hand_score(model, p, tok.encode_ordinary(" " + c), "mean") for c in ("comedy", "history", "tragedy")]
        want += ["comedy", "history", "tragedy"][int(np.argmax(s))] == q.label
    assert res[0]["accuracy"] == want / 3


def test_tldr_generates_after_the_hint(lm):
    model, tok = lm
    text = "KING:\nMy lords, the day is ours, the field is won."
    s1 = tldr(model, tok, text, max_new_tokens=12, seed=3)
    assert s1 == tldr(model, tok, text, max_new_tokens=12, seed=3) and isinstance(s1, str)
    ids = tok.encode_ordinary(text + "\nTL;DR:")
    out = model.generate(np.array([ids]), 12, top_k=2, seed=3, stop_token=tok.eot_token)
    want = tok.decode([t for t in out[0, len(ids):].tolist() if t != tok.eot_token]).split("\n\n", 1)[0].strip()
    assert s1 == want
    long = tldr(model, tok, "word " * 300, max_new_tokens=5)  # the text is cut from the left to fit
    assert isinstance(long, str)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tldr(model, tok, text, max_new_tokens=model.config.n_ctx)


def test_cli_fewshot(run, tmp_path, capsys):
    data = tmp_path / "choice.jsonl"
    write_jsonl(data, _choice_examples())
    assert main(["fewshot", "--run", str(run), "--data", str(data), "--shots", "0,1", "--json",
                 str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| shots | accuracy |" in out and "\n| 0 |" in out and "\n| 1 |" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc) == {"0", "1"} and doc["0"]["n"] == 3
    assert main(["fewshot", "--run", str(run), "--data", str(data), "--shots", "one"]) == 2
    assert "--shots must be comma-separated integers" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "c", "choices": ["a"], "label": 0}\n')
    assert main(["fewshot", "--run", str(run), "--data", str(bad)]) == 2
    assert f"{bad}:1: field 'choices' needs at least 2 entries" in capsys.readouterr().err
