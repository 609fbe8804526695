"""Fine-tuning tasks: the four GPT-1 input shapes, their JSONL files, and real tasks built from the
embedded Shakespeare corpus.

JSONL schema (one JSON object per line; blank lines are skipped; other keys are ignored)
    classify   {"text": str, "label": str | int}
    entail     {"premise": str, "hypothesis": str, "label": str | int}
    similar    {"text_a": str, "text_b": str, "label": str | int}        (symmetric: order is irrelevant)
    choice     {"context": str, "choices": [str, str, ...], "label": int}  (label = index of the right choice)

Texts must be non-empty strings; ``choices`` needs at least two. ``label`` may be left out only in
files given to ``pygpt predict``. Labels of classify/entail/similar are class names (strings or
integers, not booleans); the set of classes is the set of labels in the training file, and a
validation/test label outside it is an error. Every error is a ``ValueError`` that names
``file:line`` and the field, e.g. ``valid.jsonl:17: field 'label': 'romcom' does not occur in the
training data (labels: comedy, history, ...)``.

Tasks from the corpus (``build_tasks``, ``pygpt tasks build``)
    The 38 plays are split by play into train / valid / test, stratified by genre (each genre has
    at least one play in every split; about 70 / 15 / 15 %). Every example of a split comes from
    that split's plays only, so no play (and no passage) is in two splits.

    classify  the genre of a passage (3 consecutive speeches of one scene, speaker names left
              out): comedy, tragedy, history, problem, roman, romance. Classes are unbalanced
              (10 comedies, 11 histories, 3 problem plays), so macro-F1 is reported too.
    choice    story-cloze shape: ``context`` = 3 consecutive speeches rendered like the training
              text (``SPEAKER:\\ntext``) followed by the next speaker's ``NAME:``; ``choices`` = the
              true next speech and 3 distractors (2 from other scenes of the same play, 1 from
              another play of the split), in random order.
    entail    does speech B directly answer speech A? ``yes``: B is the next speech of the same
              scene by another speaker; ``no``: B comes from another scene of the same play.
              Balanced.
    similar   are two passages (2 consecutive speeches each) from the same play? ``same``: another
              scene of the same play; ``different``: another play of the split. Balanced.

    Long speeches are clipped at a line (or word) boundary to ``max_speech_chars`` characters.
    Everything is a pure function of ``seed`` (SHA-256 play split, PCG64 sampling).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TASKS",
    "SPLITS",
    "TASK_FIELDS",
    "Example",
    "build_task",
    "build_tasks",
    "check_labels",
    "label_names_of",
    "parse_example",
    "read_jsonl",
    "split_plays_stratified",
    "write_jsonl",
]

TASKS = ("classify", "entail", "similar", "choice")
SPLITS = ("train", "valid", "test")
TASK_FIELDS = {
    "classify": ("text",),
    "entail": ("premise", "hypothesis"),
    "similar": ("text_a", "text_b"),
    "choice": ("context",),  # plus "choices"
}


@dataclass(frozen=True)
class Example:
    """One task example: its text fields, its label (None when unlabelled) and where it came from."""

    task: str
    fields: dict
    label: object = None
    where: str = "<memory>"

    def to_json(self) -> dict:
        d = dict(self.fields)
        if self.label is not None:
            d["label"] = self.label
        return d


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


# --------------------------------------------------------------------------------------------
# reading and validating JSONL
# --------------------------------------------------------------------------------------------


def _type_name(v) -> str:
    return "null" if v is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                     list: "array", dict: "object"}.get(type(v), type(v).__name__)


def parse_example(task: str, obj, where: str = "<memory>", require_label: bool = True) -> Example:
    """Validate one decoded JSON object for `task`; ValueError naming `where` and the field."""
    check_task(task)
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_type_name(obj)}")
    fields = {}
    for name in TASK_FIELDS[task]:
        if name not in obj:
            raise ValueError(f"{where}: missing field {name!r} (a {task} example needs "
                             f"{', '.join(_schema_fields(task))})")
        v = obj[name]
        if not isinstance(v, str):
            raise ValueError(f"{where}: field {name!r} must be a string, got {_type_name(v)}")
        if not v.strip():
            raise ValueError(f"{where}: field {name!r} is empty")
        fields[name] = v
    if task == "choice":
        if "choices" not in obj:
            raise ValueError(f"{where}: missing field 'choices' (a choice example needs "
                             f"{', '.join(_schema_fields(task))})")
        ch = obj["choices"]
        if not isinstance(ch, list):
            raise ValueError(f"{where}: field 'choices' must be an array of strings, got {_type_name(ch)}")
        if len(ch) < 2:
            raise ValueError(f"{where}: field 'choices' needs at least 2 entries, got {len(ch)}")
        for k, c in enumerate(ch):
            if not isinstance(c, str):
                raise ValueError(f"{where}: field 'choices'[{k}] must be a string, got {_type_name(c)}")
            if not c.strip():
                raise ValueError(f"{where}: field 'choices'[{k}] is empty")
        fields["choices"] = list(ch)
    label = obj.get("label")
    if label is None:
        if require_label:
            raise ValueError(f"{where}: missing field 'label'")
    elif task == "choice":
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"{where}: field 'label' must be an integer index into 'choices', "
                             f"got {_type_name(label)}")
        if not 0 <= label < len(fields["choices"]):
            raise ValueError(f"{where}: field 'label' = {label} is not an index into 'choices' "
                             f"(0..{len(fields['choices']) - 1})")
    elif isinstance(label, bool) or not isinstance(label, (str, int)):
        raise ValueError(f"{where}: field 'label' must be a string or an integer class name, "
                         f"got {_type_name(label)}")
    elif isinstance(label, str) and not label:
        raise ValueError(f"{where}: field 'label' is an empty string")
    return Example(task, fields, label, where)


def _schema_fields(task: str) -> list[str]:
    extra = ["choices"] if task == "choice" else []
    return [*TASK_FIELDS[task], *extra, "label"]


def read_jsonl(path, task: str, require_label: bool = True) -> list[Example]:
    """Read and validate a task file. Raises FileNotFoundError or ValueError (``file:line: ...``)."""
    check_task(task)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file (expected a {task} JSONL file)")
    out = []
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{p}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where}: not valid UTF-8 ({exc.reason} at column {exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: malformed JSON: {exc.msg} at column {exc.colno}") from None
            out.append(parse_example(task, obj, where, require_label))
    if not out:
        raise ValueError(f"{p}: no examples (the file is empty)")
    return out


def write_jsonl(path, examples: Iterable) -> int:
    """Write examples (Example or dict) one JSON object per line, atomically; returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for ex in examples:
                d = ex.to_json() if isinstance(ex, Example) else ex
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _label_key(label):
    return (0, label, "") if isinstance(label, int) else (1, 0, label)


def label_names_of(examples: Sequence[Example]) -> list:
    """The sorted classes of labelled classify/entail/similar examples (integers first)."""
    return sorted({ex.label for ex in examples if ex.label is not None}, key=_label_key)


def check_labels(examples: Sequence[Example], label_names: Sequence) -> None:
    """Every label must be one of the training labels (ValueError naming file:line otherwise)."""
    known = set(label_names)
    for ex in examples:
        if ex.label is not None and ex.label not in known:
            shown = ", ".join(map(str, label_names))
            raise ValueError(f"{ex.where}: field 'label': {ex.label!r} does not occur in the training data "
                             f"(labels: {shown})")


# --------------------------------------------------------------------------------------------
# tasks from the Shakespeare corpus
# --------------------------------------------------------------------------------------------


def _hash_key(*parts) -> bytes:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).digest()


def split_plays_stratified(plays, seed: int = 0, valid_fraction: float = 0.15,
                           test_fraction: float = 0.15) -> dict[str, list]:
    """Plays -> {"train", "valid", "test"} by whole play, stratified by genre.

    Per genre with n plays: ``max(1, floor(f·n + 0.5))`` plays each to test and valid (chosen by
    SHA-256 of (seed, play id)), the rest to train; a genre with fewer than 3 plays puts them all
    in train. Every list keeps the input order."""
    by_genre: dict[str, list] = {}
    for p in plays:
        by_genre.setdefault(p.genre, []).append(p)
    assign = {}
    for ps in by_genre.values():
        order = sorted(ps, key=lambda p: _hash_key("tasks", seed, p.id))
        n = len(order)
        if n < 3:
            for p in order:
                assign[p.id] = "train"
            continue
        n_test = max(1, math.floor(test_fraction * n + 0.5))
        n_valid = max(1, math.floor(valid_fraction * n + 0.5))
        n_test = min(n_test, n - 2)
        n_valid = min(n_valid, n - 1 - n_test)
        for i, p in enumerate(order):
            assign[p.id] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return {s: [p for p in plays if assign[p.id] == s] for s in SPLITS}


def _clip(text: str, max_chars: int) -> str:
    """At most max_chars characters, cut after a whole line when that keeps half, else at a space."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = head.rfind("\n")
    if cut < max_chars // 2:
        cut = head.rfind(" ")
    if cut < max_chars // 2:
        cut = max_chars
    return head[:cut].rstrip()


def _scene_runs(play):
    """Lists of consecutive speeches that share (act, scene), in order."""
    runs, cur, key = [], [], None
    for s in play.speeches:
        k = (s.act, s.scene)
        if k != key and cur:
            runs.append(cur)
            cur = []
        key = k
        cur.append(s)
    if cur:
        runs.append(cur)
    return runs


def _windows(play, size: int):
    """Non-overlapping windows of `size` consecutive speeches inside one scene: (scene index, speeches)."""
    for si, run in enumerate(_scene_runs(play)):
        for start in range(0, len(run) - size + 1, size):
            yield si, run[start:start + size]


def _speaker_block(s, max_chars) -> str:
    return f"{s.speaker}:\n{_clip(s.text, max_chars)}"


def _build_classify(plays, rng, max_chars):
    out = []
    for p in plays:
        for _, win in _windows(p, 3):
            out.append({"text": "\n".join(_clip(s.text, max_chars) for s in win), "label": p.genre})
    return out


def _ok_answer(text: str) -> bool:
    return len(text) >= 20


def _build_choice(plays, rng, max_chars, n_choices=4):
    # pool of candidate answers per play and scene: clipped texts of speeches with >= 20 characters
    pools = {p.id: [(si, _clip(s.text, max_chars)) for si, run in enumerate(_scene_runs(p)) for s in run
                    if _ok_answer(s.text)] for p in plays}
    out = []
    for p in plays:
        others = [q for q in plays if q.id != p.id]
        for si, win in _windows(p, 4):
            ctx, ans = win[:3], win[3]
            if not _ok_answer(ans.text):
                continue
            answer = _clip(ans.text, max_chars)
            same = [t for sj, t in pools[p.id] if sj != si and t != answer]
            if len(same) < 2 or not others:
                continue
            picks = [same[i] for i in rng.choice(len(same), size=2, replace=False)]
            q = others[int(rng.integers(len(others)))]
            qpool = [t for _, t in pools[q.id] if t != answer and t not in picks]
            if not qpool:
                continue
            picks.append(qpool[int(rng.integers(len(qpool)))])
            label = int(rng.integers(n_choices))
            choices = picks[:label] + [answer] + picks[label:]
            context = "\n\n".join(_speaker_block(s, max_chars) for s in ctx) + f"\n\n{ans.speaker}:"
            out.append({"context": context, "choices": choices, "label": label})
    return out


def _build_entail(plays, rng, max_chars):
    out = []
    for p in plays:
        runs = _scene_runs(p)
        flat = [(si, s) for si, run in enumerate(runs) for s in run]
        for si, run in enumerate(runs):
            for i in range(0, len(run) - 1, 2):
                a, b = run[i], run[i + 1]
                if a.speaker == b.speaker:
                    continue
                if rng.random() < 0.5:
                    out.append({"premise": _clip(a.text, max_chars), "hypothesis": _clip(b.text, max_chars),
                                "label": "yes"})
                else:
                    cands = [s for sj, s in flat if sj != si]
                    if not cands:
                        continue
                    other = cands[int(rng.integers(len(cands)))]
                    out.append({"premise": _clip(a.text, max_chars),
                                "hypothesis": _clip(other.text, max_chars), "label": "no"})
    return out


def _build_similar(plays, rng, max_chars):
    passages = {p.id: [(si, "\n".join(_clip(s.text, max_chars) for s in win)) for si, win in _windows(p, 2)]
                for p in plays}
    out = []
    for p in plays:
        others = [q for q in plays if q.id != p.id and passages[q.id]]
        for si, text in passages[p.id]:
            if rng.random() < 0.5:
                cands = [t for sj, t in passages[p.id] if sj != si]
                if not cands:
                    continue
                other, label = cands[int(rng.integers(len(cands)))], "same"
            else:
                if not others:
                    continue
                q = others[int(rng.integers(len(others)))]
                other, label = passages[q.id][int(rng.integers(len(passages[q.id])))][1], "different"
            pair = [text, other]
            if rng.random() < 0.5:  # the pair's order carries no information
                pair.reverse()
            out.append({"text_a": pair[0], "text_b": pair[1], "label": label})
    return out


_BUILDERS = {"classify": _build_classify, "entail": _build_entail, "similar": _build_similar,
             "choice": _build_choice}


def _take_by_label(exs: list[dict], n: int) -> list[dict]:
    """The first n examples when labels are taken in turn (sorted label order), so a small cut still
    holds every label; the (already shuffled) order is kept."""
    queues: dict = {}
    for i, ex in enumerate(exs):
        queues.setdefault(str(ex["label"]), []).append(i)
    picked, keys, pos = [], sorted(queues), 0
    while len(picked) < n:
        for k in keys:
            if pos < len(queues[k]) and len(picked) < n:
                picked.append(queues[k][pos])
        pos += 1
    return [exs[i] for i in sorted(picked)]


def build_task(task: str, seed: int = 0, max_examples: int | None = None, plays=None,
               max_speech_chars: int = 300) -> dict[str, list[dict]]:
    """{"train", "valid", "test"} -> list of JSON-ready examples of one corpus task.

    Each split is shuffled (PCG64 seeded by (seed, task, split)); a split longer than `max_examples`
    is cut to that many, taking the labels in turn so that every label stays represented (the cut
    is then balanced, not in the corpus's proportions)."""
    check_task(task)
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer, got {max_examples}")
    if plays is None:
        from .data.corpus import load_shakespeare  # noqa: PLC0415

        plays = load_shakespeare()
    splits = split_plays_stratified(plays, seed)
    out = {}
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, TASKS.index(task), k])
        exs = _BUILDERS[task](splits[split], rng, max_speech_chars)
        order = rng.permutation(len(exs))
        exs = [exs[i] for i in order]
        if max_examples is not None and len(exs) > max_examples:
            exs = _take_by_label(exs, max_examples)
        for i, ex in enumerate(exs):  # the builders' own output must pass the validator
            parse_example(task, ex, f"{task}/{split}[{i}]")
        out[split] = exs
    return out


def build_tasks(out_dir, seed: int = 0, max_examples: int | None = None, tasks: Sequence[str] = TASKS,
                max_speech_chars: int = 300) -> dict:
    """Write ``out_dir/{task}/{train,valid,test}.jsonl`` and ``out_dir/tasks.json`` (sizes, plays
    per split, label counts); returns that summary."""
    from .data.corpus import load_shakespeare  # noqa: PLC0415

    plays = load_shakespeare()
    splits = split_plays_stratified(plays, seed)
    out = Path(out_dir)
    summary = {"seed": seed, "max_examples": max_examples, "max_speech_chars": max_speech_chars,
               "plays": {s: [p.id for p in splits[s]] for s in SPLITS}, "tasks": {}}
    for task in tasks:
        data = build_task(task, seed, max_examples, plays, max_speech_chars)
        info = {}
        for split, exs in data.items():
            write_jsonl(out / task / f"{split}.jsonl", exs)
            counts: dict = {}
            for ex in exs:
                counts[str(ex["label"])] = counts.get(str(ex["label"]), 0) + 1
            info[split] = {"examples": len(exs), "labels": dict(sorted(counts.items()))}
        summary["tasks"][task] = info
    (out / "tasks.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
