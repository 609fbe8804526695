"""GPT-1 input transformations: task tokens, token layouts, truncation and padded batches.

Three special tokens are added to a pre-trained model's vocabulary (`add_task_tokens`): their ids
follow the model's last row, their embedding rows are drawn from N(0, 0.02) and every old row is
kept bit for bit (the tied output layer is the same matrix, so it grows with it).

Layouts (s = start, d = delimiter, e = extract; the head reads the final hidden state at e):

    classify   s text e
    entail     s premise d hypothesis e
    similar    s text_a d text_b e   and   s text_b d text_a e     (their e-states are added)
    choice     s context d answer_k e   for every k                 (one score each, softmax over k)

Truncation (``truncate=True``) keeps every special token and cuts the longest text segment one
token at a time (the first of equally long ones) until the sequence fits ``n_ctx``. The tokens
next to the delimiter are kept longest: a premise and a multiple-choice context lose tokens at
their start; hypotheses, answers and texts at their end. A similarity pair is cut once, so both
orderings hold the same tokens. Without ``truncate`` a sequence longer than ``n_ctx`` is a
ValueError that says how long it is and the limit.

Batches are right-padded (causal attention never looks at the pads, which come after the real
tokens); ``lengths`` gives each row's real length, so the extract token sits at ``lengths - 1``
and the LM loss skips the pads.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..nn import Parameter
from ..tasks import Example, check_task

START, DELIMITER, EXTRACT = "<|start|>", "<|delimiter|>", "<|extract|>"
TASK_TOKENS = {"start": START, "delimiter": DELIMITER, "extract": EXTRACT}

__all__ = ["START", "DELIMITER", "EXTRACT", "TASK_TOKENS", "Batch", "Encoded", "add_task_tokens", "collate",
           "encode_example", "fit_segments", "grow_vocab", "layout"]


# --------------------------------------------------------------------------------------------
# vocabulary growth
# --------------------------------------------------------------------------------------------


def grow_vocab(model, n_new: int, seed: int = 0, std: float = 0.02) -> list[int]:
    """Append `n_new` rows ~ N(0, std) to ``model.wte`` (and columns to an untied ``lm_head``);
    ``model.config.vocab_size`` follows. Returns the new ids. Call before building an optimiser."""
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    W = model.wte.weight
    V, C = W.shape
    if n_new == 0:
        return []
    xp = W.xp
    rng = np.random.default_rng(seed)
    rows = xp.asarray((rng.standard_normal((n_new, C)) * std).astype(W.dtype))
    model.wte.weight = Parameter(xp.concatenate([W.data, rows], axis=0))
    head = getattr(model, "lm_head", None)
    if head is not None:  # an untied output layer (LSTM with tie_weights=False): (C, V) + bias (V,)
        cols = xp.asarray((rng.standard_normal((C, n_new)) * std).astype(head.weight.dtype))
        head.weight = Parameter(xp.concatenate([head.weight.data, cols], axis=1))
        if head.bias is not None:
            head.bias = Parameter(xp.concatenate([head.bias.data, xp.zeros(n_new, dtype=head.bias.dtype)]))
    model.config = replace(model.config, vocab_size=V + n_new)
    return list(range(V, V + n_new))


def add_task_tokens(model, tok, seed: int = 0):
    """Give `tok` the start/delimiter/extract special tokens and `model` their embedding rows.

    Returns ``(tokenizer, ids)`` with ``ids = {"start": .., "delimiter": .., "extract": ..}``. A
    tokenizer that already has all three (a fine-tuned run) is returned unchanged."""
    from ..tokenizer import BPETokenizer  # noqa: PLC0415

    V = model.config.vocab_size
    have = [t in tok.special_tokens for t in TASK_TOKENS.values()]
    if all(have):
        ids = {k: tok.special_tokens[t] for k, t in TASK_TOKENS.items()}
        if max(ids.values()) >= V:
            raise ValueError(f"the tokenizer's task tokens {ids} are outside the model's vocabulary ({V})")
        return tok, ids
    if any(have):
        raise ValueError("the tokenizer has some but not all of the task tokens "
                         f"{list(TASK_TOKENS.values())}; expected none (pre-trained) or all (fine-tuned)")
    if tok.n_vocab > V:
        raise ValueError(f"the tokenizer has {tok.n_vocab} ids but the model only {V} embedding rows")
    new_ids = grow_vocab(model, len(TASK_TOKENS), seed=seed)
    ids = dict(zip(TASK_TOKENS, new_ids))
    specials = dict(tok.special_tokens)
    specials.update({TASK_TOKENS[k]: i for k, i in ids.items()})
    return BPETokenizer(tok.ranks, specials, pattern=tok.pattern, name=tok.name), ids


# --------------------------------------------------------------------------------------------
# layouts and truncation
# --------------------------------------------------------------------------------------------


def layout(segments, ids: dict) -> list[int]:
    """``start seg0 [delimiter seg1 ...] extract`` as one id list."""
    out = [ids["start"]]
    for k, seg in enumerate(segments):
        if k:
            out.append(ids["delimiter"])
        out.extend(seg)
    out.append(ids["extract"])
    return out


def fit_segments(segments, budget: int, cut_front=()) -> list[list[int]]:
    """Cut the longest segment (the first of equal ones) one token at a time until the total
    length is at most `budget`. Segments whose index is in `cut_front` lose their first tokens,
    the others their last."""
    if budget < 0:
        raise ValueError(f"no room for text: the special tokens alone exceed the context (budget {budget})")
    lens = [len(s) for s in segments]
    excess = sum(lens) - budget
    while excess > 0:
        i = max(range(len(lens)), key=lambda k: (lens[k], -k))
        # cut whole steps while this segment stays the longest, then re-check
        second = max((lens[k] for k in range(len(lens)) if k != i), default=0)
        step = max(1, min(excess, lens[i] - second))
        lens[i] -= step
        excess -= step
    return [list(s[len(s) - n:]) if k in cut_front else list(s[:n]) for k, (s, n) in enumerate(zip(segments, lens))]


@dataclass
class Encoded:
    """One example as token sequences: 1 (classify, entail), 2 (similar) or k (choice)."""

    seqs: list
    label: int | None  # class index (choice: index of the right answer)
    where: str = "<memory>"
    truncated: bool = False


def _too_long(task, where, n, n_ctx):
    return ValueError(
        f"{where}: the {task} input needs {n} tokens with its start/delimiter/extract tokens, longer than "
        f"the model's context n_ctx={n_ctx}; pass --truncate (truncate=True) to cut the longest text first")


def encode_example(task: str, ex: Example, tok, ids: dict, n_ctx: int, truncate: bool = False,
                   label_names=None) -> Encoded:
    """Token sequences of one example in its task's layout, fitted to n_ctx (see the module doc)."""
    check_task(task)
    enc = tok.encode_ordinary
    f = ex.fields
    if task == "classify":
        groups = [([enc(f["text"])], ())]
    elif task == "entail":
        groups = [([enc(f["premise"]), enc(f["hypothesis"])], (0,))]
    elif task == "similar":
        groups = [([enc(f["text_a"]), enc(f["text_b"])], ())]
    else:
        ctx = enc(f["context"])
        groups = [([ctx, enc(c)], (0,)) for c in f["choices"]]
    seqs, truncated = [], False
    for segs, front in groups:
        budget = n_ctx - (len(segs) + 1)
        if sum(map(len, segs)) > budget:
            if not truncate:
                raise _too_long(task, ex.where, sum(map(len, segs)) + len(segs) + 1, n_ctx)
            segs = fit_segments(segs, budget, front)
            truncated = True
        seqs.append(layout(segs, ids))
        if task == "similar":
            seqs.append(layout(segs[::-1], ids))
    label = None
    if ex.label is not None:
        label = ex.label if task == "choice" else list(label_names).index(ex.label)
    return Encoded(seqs, label, ex.where, truncated)


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Padded rows of a batch of examples.

    ids (N, T) int64 right-padded with `pad_id`; lengths (N,); labels (B,) or None. For choice,
    rows of example b are ``choice_index[b, :n_b]`` and ``choice_mask`` marks the real choices;
    for similar, rows 2b and 2b+1 are example b's two orderings."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    n_examples: int
    choice_index: np.ndarray | None = None
    choice_mask: np.ndarray | None = None


def collate(task: str, items, pad_id: int = 0) -> Batch:
    items = list(items)
    if not items:
        raise ValueError("collate: empty batch")
    rows = [s for it in items for s in it.seqs]
    lengths = np.array([len(s) for s in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    for r, s in enumerate(rows):
        ids[r, :len(s)] = s
    labels = None
    if all(it.label is not None for it in items):
        labels = np.array([it.label for it in items], dtype=np.int64)
    ci = cm = None
    if task == "choice":
        K = max(len(it.seqs) for it in items)
        ci = np.zeros((len(items), K), dtype=np.int64)
        cm = np.zeros((len(items), K), dtype=bool)
        r = 0
        for b, it in enumerate(items):
            k = len(it.seqs)
            ci[b, :k] = np.arange(r, r + k)
            cm[b, :k] = True
            r += k
    return Batch(ids, lengths, labels, len(items), ci, cm)
