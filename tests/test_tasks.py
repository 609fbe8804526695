"""Task files: JSONL validation with file:line errors, and the corpus task builders (deterministic,
split by play)."""
import json
import re

import pytest

from pygpt.data.corpus import GENRES, load_shakespeare
from pygpt.tasks import (SPLITS, TASKS, Example, build_task, build_tasks, check_labels, label_names_of,
                         parse_example, read_jsonl, split_plays_stratified, write_jsonl)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ JSONL reading


def test_read_each_shape(tmp_path):
    cases = {
        "classify": {"text": "a b", "label": "x"},
        "entail": {"premise": "p", "hypothesis": "h", "label": 1},
        "similar": {"text_a": "a", "text_b": "b", "label": "same"},
        "choice": {"context": "c", "choices": ["x", "y", "z"], "label": 2},
    }
    for task, obj in cases.items():
        p = _write(tmp_path / f"{task}.jsonl", ["", json.dumps({**obj, "id": 7}), "   "])
        (ex,) = read_jsonl(p, task)
        assert ex.task == task and ex.label == obj["label"] and ex.where == f"{p}:2"
        assert "id" not in ex.fields  # extra keys are ignored
        assert ex.to_json() == obj


@pytest.mark.parametrize("task,line,needle", [
    ("classify", '{"text": "a", "label": "x"', "malformed JSON"),
    ("classify", '["text"]', "expected a JSON object, got array"),
    ("classify", '{"label": "x"}', "missing field 'text'"),
    ("classify", '{"text": 3, "label": "x"}', "field 'text' must be a string, got integer"),
    ("classify", '{"text": "  ", "label": "x"}', "field 'text' is empty"),
    ("classify", '{"text": "a", "label": true}', "field 'label' must be a string or an integer"),
    ("classify", '{"text": "a", "label": 1.5}', "got number"),
    ("classify", '{"text": "a"}', "missing field 'label'"),
    ("entail", '{"premise": "a", "label": "x"}', "missing field 'hypothesis'"),
    ("similar", '{"text_a": "a", "text_b": null, "label": "x"}', "field 'text_b' must be a string, got null"),
    ("choice", '{"context": "c", "choices": "xy", "label": 0}', "field 'choices' must be an array of strings"),
    ("choice", '{"context": "c", "choices": ["x"], "label": 0}', "at least 2 entries"),
    ("choice", '{"context": "c", "choices": ["x", 2], "label": 0}', "field 'choices'[1] must be a string"),
    ("choice", '{"context": "c", "choices": ["x", "y"], "label": 2}', "field 'label' = 2 is not an index"),
    ("choice", '{"context": "c", "choices": ["x", "y"], "label": "x"}', "must be an integer index"),
])
def test_errors_name_file_line_and_field(tmp_path, task, line, needle):
    good = {"classify": '{"text": "ok", "label": "x"}', "entail": '{"premise": "a", "hypothesis": "b", "label": "x"}',
            "similar": '{"text_a": "a", "text_b": "b", "label": "x"}',
            "choice": '{"context": "c", "choices": ["x", "y"], "label": 0}'}[task]
    p = _write(tmp_path / "d.jsonl", [good, "", good, line])
    with pytest.raises(ValueError, match=re.escape("d.jsonl:4: ") + ".*" + re.escape(needle)):
        read_jsonl(p, task)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl", "classify")
    with pytest.raises(ValueError, match="no examples"):
        read_jsonl(_write(tmp_path / "empty.jsonl", ["", " "]), "classify")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "\xff", "label": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid UTF-8"):
        read_jsonl(bad, "classify")
    with pytest.raises(ValueError, match="unknown task 'regress'"):
        read_jsonl(bad, "regress")


def test_unlabelled_files_for_predict(tmp_path):
    p = _write(tmp_path / "u.jsonl", ['{"text": "a"}', '{"text": "b", "label": "x"}'])
    exs = read_jsonl(p, "classify", require_label=False)
    assert [e.label for e in exs] == [None, "x"]


def test_labels_unseen_in_training(tmp_path):
    train = [parse_example("classify", {"text": "t", "label": lab}) for lab in ("b", "a", 3, "b")]
    assert label_names_of(train) == [3, "a", "b"]
    p = _write(tmp_path / "valid.jsonl", ['{"text": "t", "label": "a"}', '{"text": "t", "label": "zz"}'])
    with pytest.raises(ValueError, match=r"valid.jsonl:2: field 'label': 'zz' does not occur in the training data "
                                         r"\(labels: 3, a, b\)"):
        check_labels(read_jsonl(p, "classify"), label_names_of(train))


def test_write_jsonl_round_trip(tmp_path):
    exs = [Example("choice", {"context": "c", "choices": ["é", "y"]}, 1), {"context": "d", "choices": ["a", "b"]}]
    assert write_jsonl(tmp_path / "sub" / "o.jsonl", exs) == 2
    back = read_jsonl(tmp_path / "sub" / "o.jsonl", "choice", require_label=False)
    assert [e.fields["choices"][0] for e in back] == ["é", "a"] and [e.label for e in back] == [1, None]


# ------------------------------------------------------------------------------ corpus tasks


def test_play_split_is_stratified_and_disjoint():
    plays = load_shakespeare()
    s = split_plays_stratified(plays, seed=0)
    ids = {k: {p.id for p in v} for k, v in s.items()}
    assert not (ids["train"] & ids["valid"] or ids["train"] & ids["test"] or ids["valid"] & ids["test"])
    assert ids["train"] | ids["valid"] | ids["test"] == {p.id for p in plays}
    for split in SPLITS:
        assert {p.genre for p in s[split]} == set(GENRES), split
    assert [len(s[k]) for k in SPLITS] == [22, 8, 8]
    assert split_plays_stratified(plays, seed=0) == s
    assert split_plays_stratified(plays, seed=1) != s


def _split_lines(split_plays):
    return {line for p in split_plays for sp in p.speeches for line in sp.text.split("\n")}


@pytest.fixture(scope="module")
def small_tasks():
    return {t: build_task(t, seed=0, max_examples=80) for t in TASKS}


def test_builders_are_deterministic(small_tasks):
    for t in TASKS:
        assert build_task(t, seed=0, max_examples=80) == small_tasks[t]
    assert build_task("classify", seed=1, max_examples=80) != small_tasks["classify"]


def test_examples_come_from_their_splits_plays(small_tasks):
    splits = split_plays_stratified(load_shakespeare(), seed=0)
    lines = {k: _split_lines(v) for k, v in splits.items()}
    for task, fields in (("classify", ["text"]), ("similar", ["text_a", "text_b"]),
                         ("entail", ["premise", "hypothesis"])):
        for split in SPLITS:
            others = set().union(*(lines[o] for o in SPLITS if o != split)) - lines[split]
            assert len(small_tasks[task][split]) == 80
            for ex in small_tasks[task][split]:
                for f in fields:
                    first = ex[f].split("\n")[0]
                    assert first in lines[split] or any(first in line for line in lines[split]), (task, split)
                    assert first not in others


def test_task_shapes_and_labels(small_tasks):
    for split in SPLITS:
        for ex in small_tasks["classify"][split]:
            assert ex["label"] in GENRES
        for ex in small_tasks["choice"][split]:
            assert len(ex["choices"]) == 4 and len(set(ex["choices"])) == 4 and 0 <= ex["label"] < 4
            assert ex["context"].endswith(":") and ex["context"].count("\n\n") == 3
        assert {ex["label"] for ex in small_tasks["entail"][split]} == {"yes", "no"}
        assert {ex["label"] for ex in small_tasks["similar"][split]} == {"same", "different"}
    labels = [ex["label"] for ex in small_tasks["choice"]["train"]]
    assert len(set(labels)) == 4  # the right answer's position is shuffled


def test_build_tasks_writes_files_and_summary(tmp_path):
    summary = build_tasks(tmp_path, seed=0, max_examples=30, tasks=("entail", "choice"))
    for t in ("entail", "choice"):
        for split in SPLITS:
            exs = read_jsonl(tmp_path / t / f"{split}.jsonl", t)
            assert len(exs) == 30 == summary["tasks"][t][split]["examples"]
    assert not (tmp_path / "classify").exists()
    doc = json.loads((tmp_path / "tasks.json").read_text())
    assert doc["plays"]["test"] == [p.id for p in split_plays_stratified(load_shakespeare(), 0)["test"]]
    with pytest.raises(ValueError, match="max_examples must be a positive"):
        build_task("classify", max_examples=0)


def test_full_classify_sizes():
    full = build_task("classify", seed=0)
    sizes = {k: len(v) for k, v in full.items()}
    assert sizes == {"train": 5739, "valid": 2212, "test": 2250}
    assert max(len(ex["text"]) for ex in full["train"]) <= 3 * 300 + 2
