"""Corpora and token data.

- :mod:`pygpt.data.corpus`: the embedded Shakespeare corpus (38 plays with genre and speeches),
  a by-play train/valid split, rendering to training text, and reading user text corpora.
- :mod:`pygpt.data.tokens`: token files (raw uint16/uint32 + JSON sidecar, opened as
  ``np.memmap``), the random-window training sampler and deterministic evaluation batches.

Importing this package imports nothing: the names below load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Play": "corpus",
    "Speech": "corpus",
    "GENRES": "corpus",
    "load_shakespeare": "corpus",
    "split_plays": "corpus",
    "render_text": "corpus",
    "render_play": "corpus",
    "read_text_corpus": "corpus",
    "corpus_stats": "corpus",
    "write_token_file": "tokens",
    "TokenFile": "tokens",
    "BatchSampler": "tokens",
    "iter_eval_batches": "tokens",
}

__all__ = [
    "GENRES",
    "BatchSampler",
    "Play",
    "Speech",
    "TokenFile",
    "corpus_stats",
    "iter_eval_batches",
    "load_shakespeare",
    "read_text_corpus",
    "render_play",
    "render_text",
    "split_plays",
    "write_token_file",
]


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'pygpt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
