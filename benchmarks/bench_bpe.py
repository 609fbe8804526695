"""BPE tokenizer speed: pygpt.Tokenizer (C++) beside tiktoken and HF tokenizers, same process.

    python benchmarks/bench_bpe.py [--repeats 5] [--quick]

Rows (after a warm-up call; ids asserted identical). Single-thread rows compare process CPU time
(the minimum of --repeats calls; wall time beside it): other sessions share this machine, and CPU
time is what stays comparable between peers measured in the same run.
  encode      single-thread encode of the embedded Shakespeare corpus (4.8 MB) with the GPT-2
              ranks: pygpt (list and numpy output), tiktoken (Encoding built offline from the
              shipped ranks), HF tokenizers (a ByteLevel BPE built offline from the same
              vocabulary and merges; TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1).
  batch       encode_ordinary_batch of the 38 plays on 2 threads vs 1 thread (pygpt's own).
  worst case  per-byte time of adversarial ~1 MB inputs relative to English (the corpus):
              long letter / digit / space runs, emoji, random letters without spaces, random
              bytes read as Latin-1, random CJK; tiktoken's ratios beside (on 100 kB of spaces:
              its regex overflows its stack on 10^6).
  train       a 32k vocabulary (min_frequency 2, <|endoftext|>) on the corpus, one text per play:
              pygpt's C++ trainer vs HF's BpeTrainer with the ByteLevel pre-tokenizer.
Goals (from the issue): encode >= 3x tiktoken; batch on 2 threads >= 1.8x own single thread;
no worst-case class > 3x English per-byte time; trainer >= 1x HF.

The 2-thread rows need two idle cores: the kernel schedules per session (autogroup), so while
other sessions keep the machine busy a 2-thread run gets the same CPU share as a 1-thread run.
So the batch rows also give CPU times: 1-thread CPU time / the 2-thread run's critical path (the
larger of the calling thread's and the other thread's CPU time) estimates the speedup on an idle
machine; the goal is judged on the wall-time ratio when the run obtained >= 1.8 cores, else on
that estimate (both are in the JSON, with the load average at the start and the end).

Prints a table and writes benchmarks/bench_bpe.json next to this file.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_json  # noqa: E402

import numpy as np  # noqa: E402

from pygpt import backend  # noqa: E402
from pygpt.data.corpus import load_shakespeare, render_text  # noqa: E402
from pygpt.tokenizer import BPETokenizer, Tokenizer  # noqa: E402
from pygpt.tokenizer import bpe as bpe_mod  # noqa: E402

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def tiktoken_gpt2(ranks):
    import tiktoken

    return tiktoken.Encoding(name="gpt2-bench", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={EOT: 50256})


def hf_gpt2(ref: BPETokenizer):
    """HF ByteLevel BPE from the GPT-2 vocabulary and its merges (offline)."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    u = bpe_mod.bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(u[x] for x in b)

    vocab = {s(t): i for t, i in ref.ranks.items()}
    d = ref.decode_single_token_bytes
    merges = [(s(d(a)), s(d(b))) for a, b, _ in ref.merges()]
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def measure(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, min process CPU seconds) of ``repeats`` calls after one warm-up call.

    CPU time is the steadier figure on a shared machine (a descheduled process accrues none); the
    single-thread comparisons below use it, wall time is reported beside it.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), min(cpus)


def adversarial(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    n = 1_000_000
    return {
        "letter run 'a'": "a" * n,
        "digit run '7'": "7" * n,
        "random digits": "".join(rng.choices("0123456789", k=n)),
        "space run": " " * n,
        "underscore run": "_" * n,
        "emoji run": "😀" * (n // 4),
        "random letters, no spaces": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=n)),
        "random bytes as Latin-1": bytes(rng.randrange(256) for _ in range(n)).decode("latin-1"),
        "random CJK": "".join(chr(rng.randrange(0x4E00, 0x9FA6)) for _ in range(n // 3)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip HF encode and training peers")
    args = ap.parse_args()
    if backend.native is None or not hasattr(backend.native, "BPE"):
        print("pygpt._C (the C++ BPE) is not built; nothing to measure", file=sys.stderr)
        return 1
    reps = 2 if args.quick else args.repeats
    plays = load_shakespeare()
    texts = [render_text([p]) for p in plays]
    corpus = render_text(plays)
    nbytes = len(corpus.encode())
    fast = Tokenizer.gpt2()
    ref = BPETokenizer.gpt2()
    tk = tiktoken_gpt2(ref.ranks)
    rows, results = [], {"machine": machine(), "corpus_bytes": nbytes, "loadavg_start": os.getloadavg()}

    # ---- single-thread encode ----
    backend.native.set_num_threads(1)
    ids = fast.encode_ordinary(corpus)
    assert ids == tk.encode_ordinary(corpus), "pygpt and tiktoken ids differ"
    peers = {
        "pygpt (list)": lambda: fast.encode_ordinary(corpus),
        "pygpt (numpy)": lambda: fast.encode_ordinary(corpus, as_numpy=True),
        "tiktoken": lambda: tk.encode_ordinary(corpus),
    }
    if not args.quick:
        hf = hf_gpt2(ref)
        assert hf.encode(corpus).ids == ids, "pygpt and HF tokenizers ids differ"
        peers["HF tokenizers"] = lambda: hf.encode(corpus).ids
    enc = {}
    for name, fn in peers.items():
        wall, cpu = measure(fn, 1 if name == "HF tokenizers" else reps)  # HF: ~8 s a call
        enc[name] = {"seconds": cpu, "wall_seconds": wall, "MB_per_s": nbytes / cpu / 1e6,
                     "wall_MB_per_s": nbytes / wall / 1e6}
    base = enc["tiktoken"]["seconds"]
    for name, r in enc.items():
        r["x_tiktoken"] = base / r["seconds"]
        r["wall_x_tiktoken"] = enc["tiktoken"]["wall_seconds"] / r["wall_seconds"]
        rows.append(["encode 1 thread", name, f"{r['MB_per_s']:.1f} MB/s CPU ({r['wall_MB_per_s']:.1f} wall)",
                     f"{r['x_tiktoken']:.2f}x tiktoken ({r['wall_x_tiktoken']:.2f}x wall)"])
    results["encode"] = enc

    # ---- batch on 2 threads vs 1 ----
    # Wall time, plus CPU times: the process's and the calling thread's. With 2 threads the
    # calling thread's CPU time and the other thread's (process - calling) give the critical path
    # on an idle 2-core machine; "cores" = process CPU / wall says how much machine the run got.
    backend.native.set_num_threads(2)
    single = fast.encode_ordinary_batch(texts, num_threads=1)
    assert single == fast.encode_ordinary_batch(texts, num_threads=2)
    assert single == [fast.encode_ordinary(t) for t in texts]

    def timed(threads: int, npy: bool):
        p0, m0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        ids = fast.encode_ordinary_batch(texts, num_threads=threads, as_numpy=npy)
        p1, m1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
        # the result is freed after the clock stops (1.5 M int references for lists: ~5 ms on the
        # calling thread that belong to the caller dropping the lists, not to encode_batch)
        del ids
        return w1 - w0, p1 - p0, m1 - m0

    batch = {}
    for out in ("list", "numpy"):
        npy = out == "numpy"
        timed(1, npy), timed(2, npy)  # warm-up
        # 1- and 2-thread calls alternate, so a slow spell of the machine hits both figures alike
        r1, r2 = [], []
        for _ in range(max(reps, 7)):
            r1.append(timed(1, npy))
            r2.append(timed(2, npy))
        med = statistics.median
        t1, t2 = med(r[0] for r in r1), med(r[0] for r in r2)
        cpu1 = med(r[1] for r in r1)
        crit2 = med(max(r[2], r[1] - r[2]) for r in r2)
        cores = med(r[1] / r[0] for r in r2)
        b = {"seconds_1": t1, "seconds_2": t2, "speedup": t1 / t2, "cpu_1": cpu1,
             "cpu_2_total": med(r[1] for r in r2), "critical_path_2": crit2, "speedup_idle_estimate": cpu1 / crit2,
             "cores_obtained_2": cores}
        b["speedup_for_goal"] = b["speedup"] if cores >= 1.8 else b["speedup_idle_estimate"]
        batch[out] = b
        rows.append(["encode_batch 38 plays", f"pygpt ({out})",
                     f"{nbytes / t2 / 1e6:.1f} MB/s on 2 threads ({cores:.2f} cores obtained)",
                     f"{b['speedup']:.2f}x own 1 thread (wall); {b['speedup_idle_estimate']:.2f}x from CPU times"])
    results["batch"] = batch
    backend.native.set_num_threads(1)

    # ---- worst cases (CPU time per byte; English re-measured beside each class) ----
    worst = {}
    wr = max(3, reps // 2)
    for name, text in adversarial().items():
        b = len(text.encode())
        ours_ids = fast.encode_ordinary(text)
        ttext = text[:100_000] if name == "space run" else text
        tb = len(ttext.encode())
        assert tk.encode_ordinary(ttext) == (ours_ids[:100_000] if name == "space run" else ours_ids), name
        e_list = measure(lambda: fast.encode_ordinary(corpus), wr)[1] / nbytes
        t_ours = measure(lambda: fast.encode_ordinary(text), wr)[1] / b
        e_np = measure(lambda: fast.encode_ordinary(corpus, as_numpy=True), wr)[1] / nbytes
        t_np = measure(lambda: fast.encode_ordinary(text, as_numpy=True), wr)[1] / b
        e_tk = enc["tiktoken"]["seconds"] / nbytes
        t_tk = measure(lambda: tk.encode_ordinary(ttext), 1)[1] / tb
        w = {
            "bytes": b, "tokens": len(ours_ids),
            "ns_per_byte": t_ours * 1e9, "english_ns_per_byte": e_list * 1e9, "x_english": t_ours / e_list,
            "numpy_ns_per_byte": t_np * 1e9, "numpy_x_english": t_np / e_np,
            "tiktoken_ns_per_byte": t_tk * 1e9, "tiktoken_x_english": t_tk / e_tk, "x_tiktoken": t_tk / t_ours,
        }
        worst[name] = w
        rows.append([f"worst: {name}", "pygpt", f"{w['ns_per_byte']:.1f} ns/B ({w['x_english']:.2f}x English; "
                     f"numpy {w['numpy_x_english']:.2f}x)",
                     f"tiktoken {w['tiktoken_ns_per_byte']:.0f} ns/B ({w['tiktoken_x_english']:.2f}x its English)"])
    results["worst_case"] = worst

    # ---- training ----
    backend.native.set_num_threads(2)
    train = {}
    t0 = time.perf_counter()
    ours = Tokenizer.train(texts, 32000, special_tokens=[EOT])
    train["pygpt"] = {"seconds": time.perf_counter() - t0, "n_vocab": ours.n_vocab}
    if not args.quick:
        import tokenizers
        from tokenizers import models, pre_tokenizers, trainers

        os.environ["RAYON_NUM_THREADS"] = "2"  # read at HF's first parallel use; trainer runs on both cores
        hf_tok = tokenizers.Tokenizer(models.BPE())
        hf_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(vocab_size=32000, min_frequency=2, show_progress=False, special_tokens=[EOT],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t0 = time.perf_counter()
        hf_tok.train_from_iterator(texts, trainer)
        train["HF tokenizers"] = {"seconds": time.perf_counter() - t0, "n_vocab": hf_tok.get_vocab_size()}
        train["pygpt"]["x_hf"] = train["HF tokenizers"]["seconds"] / train["pygpt"]["seconds"]
    for name, r in train.items():
        extra = f"{r['x_hf']:.2f}x HF" if "x_hf" in r else ""
        rows.append(["train 32k vocab", name, f"{r['seconds']:.2f} s ({r['n_vocab']} tokens)", extra])
    results["train"] = train

    goals = {
        "encode >= 3x tiktoken": enc["pygpt (list)"]["x_tiktoken"] >= 3,
        "batch 2 threads >= 1.8x own 1 thread": batch["list"]["speedup_for_goal"] >= 1.8,
        "no worst case > 3x English per byte": max(w["x_english"] for w in worst.values()) <= 3,
        "trainer >= 1x HF": train["pygpt"]["x_hf"] >= 1 if "x_hf" in train["pygpt"] else None,  # None: --quick
    }
    results["goals"] = goals
    results["loadavg_end"] = os.getloadavg()
    print(f"machine: {results['machine']}, load average {results['loadavg_start'][0]:.1f} -> "
          f"{results['loadavg_end'][0]:.1f}")
    print(table(["benchmark", "who", "result", "relative"], rows))
    for g, ok in goals.items():
        print(f"goal {'not run' if ok is None else 'met    ' if ok else 'MISSED '}  {g}")
    path = write_json("bench_bpe.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
