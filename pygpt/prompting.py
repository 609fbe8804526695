"""Zero-, one- and few-shot use of a pre-trained LM (GPT-2/GPT-3 style): prompts, candidate scoring,
``TL;DR:`` summarisation.

Prompt layout (`build_prompt`)::

    [instruction + sep]  input_1 + answer_prefix + answer_1 + sep  ...  input_k + answer_prefix + answer_k
    + sep + query_input

and a candidate answer c is scored as the continuation ``answer_prefix + c`` of that prompt. The
prompt and the continuation are tokenized separately and concatenated, so every candidate is
scored on the same prompt tokens. `score_continuations` puts all (prompt, continuation) pairs of a
batch through one forward pass over right-padded rows, runs the output layer only at the
positions that predict continuation tokens, and returns the total log-likelihood (``"sum"``) or
its mean per token (``"mean"``, which does not favour short answers). A pair longer than the
context loses prompt tokens from the left.

Tasks as prompts (`task_prompt`): choice examples use their context and choices directly
(the corpus task's context ends with the next speaker's ``NAME:``, so ``answer_prefix = "\\n"``
continues it the way the training text does); classify / entail / similar examples become a
question whose candidates are the label names (``" comedy"``, ``" yes"``, ``" same"``, ...).

`fewshot_accuracy` draws k demonstrations per query (seeded, never the query itself) from a pool
(the training split), drops the earliest demonstrations while the prompt and its longest
candidate do not fit n_ctx, and reports accuracy and the mean number of demonstrations used. A
candidate longer than n_ctx / 2 tokens is scored on its first n_ctx / 2 tokens (counted in
``truncated_candidates``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .autograd import no_grad
from .tasks import Example, check_task

__all__ = ["PromptTemplate", "TEMPLATES", "build_prompt", "fewshot_accuracy", "score_candidates",
           "score_continuations", "task_prompt", "tldr"]


@dataclass(frozen=True)
class PromptTemplate:
    instruction: str = ""
    answer_prefix: str = " "
    sep: str = "\n\n"


TEMPLATES = {
    # the corpus's choice contexts end with "SPEAKER:"; the speech follows on the next line
    "choice": PromptTemplate(answer_prefix="\n", sep="\n\n\n"),
    "classify": PromptTemplate(answer_prefix=" "),
    "entail": PromptTemplate(answer_prefix=" "),
    "similar": PromptTemplate(answer_prefix=" "),
}


def build_prompt(query: str, demos: Sequence[tuple[str, str]] = (), template: PromptTemplate = PromptTemplate()) -> str:
    """The prompt text before the answer (see the module docstring for the layout)."""
    parts = [template.instruction] if template.instruction else []
    parts += [inp + template.answer_prefix + ans for inp, ans in demos]
    parts.append(query)
    return template.sep.join(parts)


def task_prompt(ex: Example, label_names=None) -> tuple[str, list[str], int | None]:
    """(query input, candidate answers, index of the right one or None) of a task example."""
    check_task(ex.task)
    f = ex.fields
    if ex.task == "choice":
        return f["context"], list(f["choices"]), ex.label
    if label_names is None:
        raise ValueError(f"{ex.where}: a {ex.task} example needs the label names to become a prompt")
    names = [str(n) for n in label_names]
    if ex.task == "classify":
        query = f"{f['text']}\nLabel:"
    elif ex.task == "entail":
        query = f"A: {f['premise']}\nB: {f['hypothesis']}\nDoes B answer A?"
    else:
        query = f"{f['text_a']}\n---\n{f['text_b']}\nSame play?"
    gold = None if ex.label is None else list(label_names).index(ex.label)
    return query, names, gold


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def score_continuations(model, pairs: Sequence[tuple[list[int], list[int]]], reduction: str = "mean",
                        batch_size: int = 16) -> np.ndarray:
    """log P(continuation | prompt) for each (prompt ids, continuation ids) pair, summed over the
    continuation's tokens (``"sum"``) or averaged (``"mean"``). One forward per batch of rows."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    n_ctx = model.config.n_ctx
    rows = []
    for i, (p, c) in enumerate(pairs):
        p, c = list(p), list(c)
        if not p:
            raise ValueError(f"pair {i}: the prompt is empty (the first token needs something to follow)")
        if not c:
            raise ValueError(f"pair {i}: the continuation is empty")
        if len(c) >= n_ctx:
            raise ValueError(f"pair {i}: the continuation has {len(c)} tokens; n_ctx={n_ctx} leaves no room "
                             "for the prompt")
        keep = min(len(p), n_ctx - len(c))
        rows.append((p[len(p) - keep:], c))
    out = np.zeros(len(rows))
    was = model.training
    model.eval()
    try:
        with no_grad():
            for s in range(0, len(rows), batch_size):
                chunk = rows[s:s + batch_size]
                T = max(len(p) + len(c) for p, c in chunk)
                ids = np.zeros((len(chunk), T), dtype=np.int64)
                r_idx, t_idx, targets, owner = [], [], [], []
                for r, (p, c) in enumerate(chunk):
                    seq = p + c
                    ids[r, :len(seq)] = seq
                    for j, tok in enumerate(c):  # position len(p) - 1 + j predicts c[j]
                        r_idx.append(r)
                        t_idx.append(len(p) - 1 + j)
                        targets.append(tok)
                        owner.append(r)
                h = model.hidden_states(ids)
                xp = h.xp
                hx = F.getitem(h, (xp.asarray(r_idx), xp.asarray(t_idx)))  # (M, C)
                logp = F.log_softmax(model.logits(hx), axis=-1).numpy().astype(np.float64)
                tok_lp = logp[np.arange(len(targets)), targets]
                sums = np.bincount(owner, weights=tok_lp, minlength=len(chunk))
                if reduction == "mean":
                    sums /= np.array([len(c) for _, c in chunk])
                out[s:s + len(chunk)] = sums
    finally:
        model.train(was)
    return out


def score_candidates(model, tok, prompt: str, candidates: Sequence[str], answer_prefix: str = " ",
                     reduction: str = "mean") -> np.ndarray:
    """Scores of each candidate text as the continuation ``answer_prefix + candidate`` of `prompt`."""
    p = tok.encode_ordinary(prompt)
    return score_continuations(model, [(p, tok.encode_ordinary(answer_prefix + c)) for c in candidates], reduction)


# --------------------------------------------------------------------------------------------
# zero/one/few-shot evaluation
# --------------------------------------------------------------------------------------------


def _key(ex: Example):
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(ex.fields.items()))


def fewshot_accuracy(model, tok, queries: Sequence[Example], shots=(0, 1, 4, 8), demos: Sequence[Example] | None = None,
                     label_names=None, seed: int = 0, reduction: str = "mean", template: PromptTemplate | None = None,
                     batch_size: int = 16) -> dict:
    """Accuracy of picking the highest-scoring candidate, for each number of demonstrations k.

    `demos` defaults to `queries` (a query is never its own demonstration). Returns
    ``{k: {"accuracy", "n", "mean_shots_used", "truncated_candidates"}}``."""
    if not queries:
        raise ValueError("fewshot_accuracy: no queries")
    task = queries[0].task
    if task != "choice" and label_names is None:
        from .tasks import label_names_of  # noqa: PLC0415

        label_names = label_names_of(list(demos or queries))
    template = template or TEMPLATES[task]
    pool = list(demos) if demos is not None else list(queries)
    pool_items = [task_prompt(ex, label_names) for ex in pool]
    by_key: dict = {}
    for i, ex in enumerate(pool):
        by_key.setdefault(_key(ex), set()).add(i)
    n_ctx = model.config.n_ctx
    max_cont = n_ctx // 2
    results = {}
    for k in shots:
        if k < 0:
            raise ValueError(f"shots must be >= 0, got {k}")
        rng = np.random.default_rng([seed, k])
        pairs, spans, gold, used, cut = [], [], [], [], 0
        for q in queries:
            query, cands, g = task_prompt(q, label_names)
            if g is None:
                raise ValueError(f"{q.where}: fewshot evaluation needs labelled queries")
            pick = []
            if k:
                same = by_key.get(_key(q), ())
                draw = rng.choice(len(pool), size=min(k + len(same), len(pool)), replace=False)
                pick = [int(i) for i in draw if int(i) not in same][:k]
            shots_text = [(pool_items[i][0], pool_items[i][1][pool_items[i][2]]) for i in pick]
            conts = [tok.encode_ordinary(template.answer_prefix + c) for c in cands]
            if max(map(len, conts)) > max_cont:  # only the first n_ctx/2 tokens of a long answer count
                cut += sum(len(c) > max_cont for c in conts)
                conts = [c[:max_cont] for c in conts]
            longest = max(map(len, conts))
            while True:  # drop the earliest demonstrations until prompt + longest candidate fit
                prompt_ids = tok.encode_ordinary(build_prompt(query, shots_text, template))
                if len(prompt_ids) + longest <= n_ctx or not shots_text:
                    break
                shots_text = shots_text[1:]
            used.append(len(shots_text))
            spans.append((len(pairs), len(pairs) + len(cands)))
            pairs += [(prompt_ids, c) for c in conts]
            gold.append(g)
        scores = score_continuations(model, pairs, reduction, batch_size)
        pred = np.array([int(np.argmax(scores[a:b])) for a, b in spans])
        results[k] = {"accuracy": float((pred == np.array(gold)).mean()), "n": len(queries),
                      "mean_shots_used": float(np.mean(used)), "truncated_candidates": cut}
    return results


# --------------------------------------------------------------------------------------------
# TL;DR summarisation
# --------------------------------------------------------------------------------------------


def tldr(model, tok, text: str, max_new_tokens: int = 60, top_k: int = 2, temperature: float = 1.0,
         seed: int = 0, hint: str = "\nTL;DR:") -> str:
    """GPT-2's zero-shot summary: generate after ``text + "\\nTL;DR:"`` (top-k 2 sampling) and keep
    the text up to the first blank line. Long texts lose tokens from the left."""
    if max_new_tokens < 1 or max_new_tokens >= model.config.n_ctx:
        raise ValueError(f"max_new_tokens must be in [1, n_ctx={model.config.n_ctx}), got {max_new_tokens}")
    ids = tok.encode_ordinary(text + hint)
    room = model.config.n_ctx - max_new_tokens
    ids = ids[len(ids) - room:] if len(ids) > room else ids
    out = model.generate(np.array([ids]), max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                         stop_token=tok.eot_token)
    new = [int(t) for t in out[0, len(ids):] if t != tok.eot_token]
    summary = tok.decode(new)
    return summary.split("\n\n", 1)[0].strip()
