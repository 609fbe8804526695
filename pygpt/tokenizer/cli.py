"""``pygpt tokenize train | encode | decode``: the BPE tokenizer on the command line.

    pygpt tokenize train  [--input PATH ...] --vocab-size 32000 [--special '<|endoftext|>'] --out tok.json
    pygpt tokenize encode --tokenizer gpt2|tok.json|x.tiktoken|tokenizer.json --input text.txt --out ids.bin
    pygpt tokenize decode --tokenizer ... --input ids.bin [--out text.txt]

``--input`` takes files or folders (folders: ``*.txt``/``*.md``, read like ``pygpt train --corpus``;
``-`` is standard input); ``train`` without ``--input`` uses the embedded Shakespeare corpus.
``encode`` writes a pygpt token file (raw uint16/uint32 + ``.json`` sidecar, see
``pygpt.data.tokens``) with ``--out``, else the ids, space-separated, to standard output.
``decode`` reads such a token file, or whitespace-separated ids from a text file / stdin.
Large inputs are cut at safe points (``pygpt._C.bpe_split_text``) and encoded on C++ threads,
with a progress line (MB, MB/s) on standard error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

_CHUNK_BYTES = 1 << 20
_PART = 4 << 20
_PROGRESS_MIN_BYTES = 8 << 20  # print progress lines for inputs at least this large


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tokenize_command", required=True)
    tr = sub.add_parser("train", help="train a byte-level BPE (C++ trainer) and save it as pygpt JSON")
    tr.add_argument("--input", nargs="+", default=None,
                    help="UTF-8 text files or folders (default: the embedded Shakespeare corpus)")
    tr.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    tr.add_argument("--special", action="append", default=None,
                    help="special token (repeatable; default: <|endoftext|>; --special '' for none)")
    tr.add_argument("--min-frequency", type=int, default=2, help="stop when no pair occurs this often (default 2)")
    tr.add_argument("--threads", type=int, default=None, help="threads for counting (default: all)")
    tr.add_argument("--out", required=True, help="output tokenizer file (pygpt JSON)")

    for name, text in (("encode", "encode text to a token file (or ids on stdout)"),
                       ("decode", "decode a token file (or whitespace-separated ids) to text")):
        q = sub.add_parser(name, help=text)
        q.add_argument("--tokenizer", default="gpt2",
                       help="gpt2 (shipped), a pygpt JSON file, a .tiktoken file or an HF tokenizer.json")
        q.add_argument("--input", default="-", help="input file or folder ('-': standard input)")
        q.add_argument("--out", default=None, help="output file (default: standard output)")
        q.add_argument("--threads", type=int, default=None, help="encoding threads (default: all)")
        if name == "encode":
            q.add_argument("--allowed-special", default="",
                           help="'all', or comma-separated special tokens to encode as their id "
                                "(default: none, and their text in the input is an error)")
            q.add_argument("--ordinary", action="store_true",
                           help="encode special tokens' text as ordinary text")


def load_tokenizer(spec: str):
    """gpt2 | pygpt JSON | HF tokenizer.json | .tiktoken (with <|endoftext|> after the last rank)."""
    from . import Tokenizer

    if spec == "gpt2":
        return Tokenizer.gpt2()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {spec!r}: no such file (or use 'gpt2')")
    if path.suffix == ".tiktoken":
        tok = Tokenizer.from_tiktoken_file(path)
        return Tokenizer.from_tiktoken_file(path, {"<|endoftext|>": tok.n_vocab})
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{spec}: not a tokenizer file ({e})") from None
    if isinstance(head, dict) and "model" in head:
        return Tokenizer.from_hf_json(path)
    return Tokenizer.load(path)


def _read_input(spec: str) -> str:
    from ..data.corpus import read_text_corpus

    if spec == "-":
        return sys.stdin.read()
    return read_text_corpus(spec)


class _Progress:
    """One self-overwriting line on stderr: MB done, MB/s."""

    def __init__(self, what: str, total: int | None, enabled: bool):
        self.what, self.total, self.enabled = what, total, enabled
        self.t0 = time.perf_counter()

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        of = f" / {self.total / 1e6:.1f}" if self.total else ""
        unit = "MB" if self.total else "M chars"
        print(f"\r{self.what} {done / 1e6:.1f}{of} {unit}  {done / 1e6 / dt:.1f} {unit}/s", end="", file=sys.stderr,
              flush=True)

    def done(self, extra: str = "") -> None:
        if self.enabled:
            print(f"  done in {time.perf_counter() - self.t0:.2f}s{extra}", file=sys.stderr)


def _train(args) -> int:
    from .. import backend
    from . import Tokenizer

    specials = ["<|endoftext|>"] if args.special is None else [s for s in args.special if s]
    if args.input is None:
        from ..data.corpus import load_shakespeare, render_text

        texts = [render_text(load_shakespeare())]
    else:
        texts = [_read_input(spec) for spec in args.input]
    total = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)

    def parts():  # big texts in ~4 MB parts cut at safe points: same counts, a progress line per batch
        for t in texts:
            if backend.native is not None and hasattr(backend.native, "bpe_split_text") and len(t) > 2 * _PART:
                yield from backend.native.bpe_split_text(t, _PART)
            else:
                yield t

    prog = _Progress("counting", None, total >= _PROGRESS_MIN_BYTES)
    t0 = time.perf_counter()
    tok = Tokenizer.train(parts(), args.vocab_size, specials, args.min_frequency, num_threads=args.threads,
                          progress=lambda done, n: prog(done))
    prog.done()
    tok.save(args.out)
    print(f"trained {tok.n_vocab} tokens ({len(specials)} special) on {total / 1e6:.1f} MB in "
          f"{time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0


def _encode(args) -> int:
    from .. import backend
    from ..data.tokens import write_token_file

    tok = load_tokenizer(args.tokenizer)
    text = _read_input(args.input)
    if args.ordinary:
        allowed: object = set()
        disallowed: object = ()
    else:
        allowed = "all" if args.allowed_special == "all" else {s for s in args.allowed_special.split(",") if s}
        disallowed = "all"
    nbytes = len(text.encode("utf-8", "surrogatepass"))
    prog = _Progress("encoding", nbytes, nbytes >= _PROGRESS_MIN_BYTES)
    specials_with_newline = any("\n" in s for s in tok.special_tokens)
    if tok.native and not specials_with_newline and nbytes > 2 * _CHUNK_BYTES:
        chunks = backend.native.bpe_split_text(text, _CHUNK_BYTES)
    else:
        chunks = [text]
    del text
    parts, done = [], 0
    group = 16
    for k in range(0, len(chunks), group):
        batch = chunks[k:k + group]
        parts += tok.encode_batch(batch, allowed_special=allowed, disallowed_special=disallowed,
                                  num_threads=args.threads, as_numpy=True)
        done += sum(len(c.encode("utf-8", "surrogatepass")) for c in batch)
        prog(done)
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint32)
    prog.done(f", {ids.size} tokens")
    if args.out is None:
        sys.stdout.write(" ".join(map(str, ids.tolist())) + "\n")
    else:
        n = write_token_file(args.out, ids, tok.n_vocab, meta={"tokenizer": tok.name})
        print(f"{nbytes} bytes -> {n} tokens ({nbytes / max(n, 1):.2f} bytes/token) -> {args.out}", file=sys.stderr)
    return 0


def _decode(args) -> int:
    from ..data.tokens import TokenFile, sidecar_path

    tok = load_tokenizer(args.tokenizer)
    if args.input != "-" and sidecar_path(args.input).is_file():
        with TokenFile(args.input) as tf:
            ids = np.asarray(tf.tokens)
    else:
        raw = sys.stdin.read() if args.input == "-" else Path(args.input).read_text(encoding="utf-8")
        try:
            ids = [int(x) for x in raw.split()]
        except ValueError as e:
            raise ValueError(f"{args.input}: expected whitespace-separated integer ids ({e})") from None
    text = tok.decode(ids)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"{len(ids)} tokens -> {len(text)} characters -> {args.out}", file=sys.stderr)
    return 0


def run(args) -> int:
    return {"train": _train, "encode": _encode, "decode": _decode}[args.tokenize_command](args)
