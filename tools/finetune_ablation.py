#!/usr/bin/env python
"""GPT-1 Table-5-style ablation on the four corpus tasks (classify, entail, similar, choice).

Rows
    full          Transformer pre-trained, fine-tuned with the auxiliary LM objective (λ = 0.5)
    no_aux        the same without the auxiliary objective (λ = 0)
    no_pretrain   the same Transformer initialised randomly, fine-tuned with λ = 0.5
    lstm          an LSTM pre-trained on the same text, fine-tuned the same way (λ = 0.5)
    fewshot_k     the pre-trained Transformer without fine-tuning: candidates scored by mean LM
                  log-likelihood with k demonstrations from the training split (GPT-2/3 style)

Every fine-tuned row is repeated over several seeds (head initialisation, data order, dropout;
for no_pretrain also the weights) and reported as mean ± sample standard deviation of the test
accuracy (classify also macro-F1); few-shot seeds change the demonstrations.

Leakage: the base models are pre-trained only on the plays of the tasks' *train* split (the
split is by play, stratified by genre), so the LM has never read a valid/test passage.

    python tools/finetune_ablation.py --quick                 # minutes: checks the pipeline end to end
    python tools/finetune_ablation.py --preset medium         # about an hour on 2 cores
    python tools/finetune_ablation.py --preset small          # most of a day on 2 cores (resumable)
    python tools/finetune_ablation.py --preset small --report # the table so far, training nothing
    python tools/finetune_ablation.py --preset full --seeds 0,1,2,3,4

Outputs in --out (default runs/ablation-<preset>): base-gpt/, base-lstm/ (pre-trained runs, reused
when their settings match), tasks/ (the task files), ablation.json (every run and the table) and
ablation.md (the markdown table, also printed). Every finished fine-tuning / prompting run is also
appended to progress.jsonl, so an interrupted job started again with the same settings skips what
is done (--fresh ignores it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from pygpt.data.corpus import load_shakespeare, render_text
from pygpt.finetune import FinetuneConfig, encode_examples, evaluate, finetune, load_base
from pygpt.finetune.lstm_pretrain import pretrain_lstm
from pygpt.prompting import fewshot_accuracy
from pygpt.safetensors import atomic_write
from pygpt.tasks import TASKS, build_tasks, read_jsonl, split_plays_stratified
from pygpt.train import TrainConfig, pretrain

PRESETS = {
    # a few minutes on 2 cores: checks that every row runs; the numbers are noise
    "quick": dict(gpt_preset="tiny", corpus_plays=3, pretrain_steps=40, context=64, vocab_size=384, batch=8,
                  pretrain_lr=3e-3, lstm=dict(n_layer=1, d_model=64), lstm_steps=40, lstm_lr=5e-3,
                  n_train=48, n_test=48, epochs=1, ft_batch=16, ft_lr=1e-3, seeds=[0, 1], shots=[0, 1],
                  n_fewshot=24),
    # about an hour on 2 cores: a tiny Transformer pre-trained on all train-split plays, real signal
    "medium": dict(gpt_preset="tiny", corpus_plays=None, pretrain_steps=800, context=128, vocab_size=1024, batch=16,
                   pretrain_lr=3e-3, lstm=dict(n_layer=1, d_model=128), lstm_steps=800, lstm_lr=5e-3,
                   n_train=800, n_test=300, epochs=2, ft_batch=16, ft_lr=5e-4, seeds=[0, 1], shots=[0, 1, 4],
                   n_fewshot=150),
    # the 4 × 256 Transformer: bases about 2 h, then about 2 h per seed of every row and task
    # (2 idle cores); fine-tuning inputs cut to 128 tokens (a choice example is 4 sequences)
    "small": dict(gpt_preset="small", corpus_plays=None, pretrain_steps=2000, context=256, vocab_size=2048,
                  batch=16, pretrain_lr=2e-3, lstm=dict(n_layer=1, d_model=256), lstm_steps=2000, lstm_lr=5e-3,
                  n_train=600, n_test=400, epochs=3, ft_batch=16, ft_lr=2e-4, ft_max_len=128, seeds=[0, 1, 2],
                  shots=[0, 1, 4, 8], n_fewshot=200),
    # the whole task data (a day or more on 2 cores; meant for a bigger machine)
    "full": dict(gpt_preset="small", corpus_plays=None, pretrain_steps=6000, context=128, vocab_size=2048,
                 batch=32, pretrain_lr=1e-3, lstm=dict(n_layer=1, d_model=256), lstm_steps=6000, lstm_lr=3e-3,
                 n_train=None, n_test=None, epochs=3, ft_batch=32, ft_lr=6.25e-5, seeds=[0, 1, 2, 3, 4],
                 shots=[0, 1, 4, 8], n_fewshot=1000),
}

ROW_NAMES = {
    "full": "Transformer, pre-trained + fine-tuned with aux LM (λ=0.5)",
    "no_aux": "Transformer, pre-trained, without aux LM (λ=0)",
    "no_pretrain": "Transformer, without pre-training (random init, λ=0.5)",
    "lstm": "LSTM, pre-trained + fine-tuned with aux LM (λ=0.5)",
}


def log(*a):
    print(*a, flush=True)


def _stamp_ok(run: Path, stamp: dict) -> bool:
    f = run / "ablation_stamp.json"
    return (run / "model.safetensors").exists() and f.exists() and json.loads(f.read_text()) == stamp


def prepare_bases(out: Path, p: dict, quiet: bool, device: str = "cpu", which=("gpt", "lstm")) -> dict:
    """Pre-train (or reuse) the GPT and LSTM bases on the train-split plays.

    ``which`` limits the work to some bases (``--base-only``): two processes can then pre-train
    the two bases side by side. The LSTM uses the GPT base's tokenizer and token files, so the GPT
    run must have written those (its first seconds) before an LSTM-only run starts.
    """
    plays = load_shakespeare()
    train_plays = split_plays_stratified(plays, seed=0)["train"]
    if p["corpus_plays"]:
        train_plays = train_plays[:p["corpus_plays"]]
    corpus = out / "pretrain_corpus.txt"
    text = render_text(train_plays)
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != text:
        corpus.write_text(text, encoding="utf-8")
    info = {"corpus_plays": [pl.id for pl in train_plays], "corpus_chars": len(text)}

    gpt_dir = out / "base-gpt"
    tcfg = TrainConfig(preset=p["gpt_preset"], steps=p["pretrain_steps"], batch_size=p["batch"], context=p["context"],
                       lr=p["pretrain_lr"], warmup=max(1, p["pretrain_steps"] // 20), vocab_size=p["vocab_size"],
                       corpus=str(corpus), out_dir=str(gpt_dir), eval_interval=max(1, p["pretrain_steps"] // 4),
                       eval_batches=8, log_interval=max(1, p["pretrain_steps"] // 10), sample_tokens=20, quiet=quiet,
                       checkpoint_interval=max(1, p["pretrain_steps"] // 20), device=device)
    # the device is not part of the stamp: a base pre-trained on a GPU serves a CPU run and back
    stamp = {"train": asdict(tcfg) | {"quiet": None, "device": None}}
    t0 = time.time()
    if _stamp_ok(gpt_dir, stamp):
        log(f"base-gpt  reusing {gpt_dir}")
    elif "gpt" not in which:
        log(f"base-gpt  not requested (--base-only); its token files in {gpt_dir} are used as they are")
    else:
        # an interrupted pre-training continues from its newest checkpoint (pretrain refuses one
        # written with other settings)
        ckpts = gpt_dir / "checkpoints"
        resume = ckpts.is_dir() and any(ckpts.glob("*.safetensors"))
        r = pretrain(replace(tcfg, resume=resume))
        (gpt_dir / "ablation_stamp.json").write_text(json.dumps(stamp))
        log(f"base-gpt  {r['steps']} updates, val loss {r['val_history'][0][1]:.3f} -> {r['val_history'][-1][1]:.3f} "
            f"in {time.time() - t0:.0f}s")
    info["gpt_val_loss"] = _last_val(gpt_dir)

    lstm_dir = out / "base-lstm"
    lcfg = TrainConfig(**{**asdict(tcfg), "out_dir": str(lstm_dir), "steps": p["lstm_steps"], "lr": p["lstm_lr"],
                          "warmup": max(1, p["lstm_steps"] // 20), "eval_interval": max(1, p["lstm_steps"] // 4),
                          "log_interval": max(1, p["lstm_steps"] // 10),
                          "checkpoint_interval": max(1, p["lstm_steps"] // 20)})
    lstamp = {"train": asdict(lcfg) | {"quiet": None, "device": None}, "lstm": p["lstm"]}
    t0 = time.time()
    if _stamp_ok(lstm_dir, lstamp):
        log(f"base-lstm  reusing {lstm_dir}")
    elif "lstm" not in which:
        log("base-lstm  not requested (--base-only)")
    else:
        lstm_dir.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "data.json", "train.bin", "train.bin.json", "valid.bin", "valid.bin.json"):
            shutil.copyfile(gpt_dir / name, lstm_dir / name)  # same tokenizer and token files as the GPT
        ckpts = lstm_dir / "checkpoints"
        resume = ckpts.is_dir() and any(ckpts.glob("*.safetensors"))
        r = pretrain_lstm(replace(lcfg, resume=resume), **p["lstm"])
        (lstm_dir / "ablation_stamp.json").write_text(json.dumps(lstamp))
        log(f"base-lstm  {r['steps']} updates, val loss {r['val_history'][0][1]:.3f} -> {r['val_history'][-1][1]:.3f} "
            f"in {time.time() - t0:.0f}s")
    info["lstm_val_loss"] = _last_val(lstm_dir)
    return {"gpt": gpt_dir, "lstm": lstm_dir, "info": info}


def _last_val(run: Path):
    if not (run / "metrics.jsonl").exists():
        return None
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    return vals[-1] if vals else None


def load_task_data(task_dir: Path, task: str, p: dict):
    train = read_jsonl(task_dir / task / "train.jsonl", task)
    test = read_jsonl(task_dir / task / "test.jsonl", task)
    if p["n_test"] is not None:
        test = test[:p["n_test"]]
    return train, test


def run_finetune(row: str, task: str, seed: int, bases: dict, train, test, p: dict, quiet: bool,
                 device: str = "cpu") -> dict:
    base = bases["lstm"] if row == "lstm" else bases["gpt"]
    cfg = FinetuneConfig(task=task, run=str(base), out_dir=None, lm_coef=0.0 if row == "no_aux" else 0.5,
                         lr=p["ft_lr"], batch_size=p["ft_batch"], epochs=p["epochs"], truncate=True,
                         from_scratch=row == "no_pretrain", seed=seed, quiet=quiet, log_interval=50, device=device,
                         max_len=p.get("ft_max_len"))
    t0 = time.time()
    r = finetune(cfg, train, None)
    model, tok = r["model"], r["tokenizer"]
    labels = r["label_names"]
    test_in = [e for e in test if labels is None or e.label in labels]  # a label never seen in training
    enc = encode_examples(task, test_in, tok, r["special_tokens"], r["max_len"], True, labels)
    m = evaluate(model, enc)
    return {"row": row, "task": task, "seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "n_test": m["n"], "steps": r["steps"], "seconds": time.time() - t0}


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "values": values}


def _cell(s):
    """mean ± sample std in %; a single value (one seed so far, or the constant-answer floor) has no spread.
    Prompting cells add, in brackets, how many demonstrations fitted in the context on average: k is what
    was asked for, and a long task at a short context fits fewer."""
    if s is None:
        return "–"
    text = f"{100 * s['mean']:.1f}" if len(s["values"]) < 2 else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    if "shots_used" in s:
        text += f" ({s['shots_used']:.1f})"
    return text


def majority_baseline(task: str, test) -> float:
    """Accuracy of the best constant answer on the test examples (the most frequent test label;
    the training splits are balanced, so their majority is arbitrary). For choice: the expected
    accuracy of a uniform guess, mean of 1/len(choices). Every row has to beat this floor."""
    if task == "choice":
        return statistics.fmean(1 / len(e.fields["choices"]) for e in test)
    return Counter(e.label for e in test).most_common(1)[0][1] / len(test)


def make_table(runs, fewshot, shots, tasks, baseline=None) -> tuple[dict, str]:
    table = {}
    if baseline:
        table["majority"] = {t: {"mean": baseline[t], "std": 0.0, "values": [baseline[t]]} for t in tasks}
    rows = [r for r in ROW_NAMES if any(x["row"] == r for x in runs)]
    for row in rows:
        table[row] = {}
        for task in tasks:
            sel = [x for x in runs if x["row"] == row and x["task"] == task]
            table[row][task] = summarise([x["accuracy"] for x in sel])
            if task == "classify":
                table[row]["classify_f1"] = summarise([x["macro_f1"] for x in sel])
    for k in shots:
        key = f"fewshot_{k}"
        table[key] = {}
        for task in tasks:
            sel = [x for x in fewshot if x["k"] == k and x["task"] == task]
            table[key][task] = summarise([x["accuracy"] for x in sel])
            if table[key][task] is not None:  # demonstrations that fit in the context, mean per query
                table[key][task]["shots_used"] = statistics.fmean(x["mean_shots_used"] for x in sel)
            if task == "classify":
                table[key]["classify_f1"] = None
    cols = []
    for t in tasks:
        cols.append(t)
        if t == "classify":
            cols.append("classify_f1")
    head = {"classify": "classify acc", "classify_f1": "classify macro-F1", "entail": "entail acc",
            "similar": "similar acc", "choice": "choice acc"}
    lines = ["| method | " + " | ".join(head[c] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for row, cells in table.items():
        name = ROW_NAMES.get(row) or ("best constant answer (most frequent test label; choice: chance)" if row == "majority"
                                      else None) or f"Transformer, pre-trained, no fine-tuning: {row.split('_')[1]}-shot prompting"
        lines.append(f"| {name} | " + " | ".join(_cell(cells.get(c)) for c in cols) + " |")
    return table, "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--quick", action="store_true", help="shorthand for --preset quick")
    ap.add_argument("--out", default=None, help="output directory (default runs/ablation-<preset>)")
    ap.add_argument("--seeds", default=None, help="comma-separated fine-tuning seeds (default: the preset's)")
    ap.add_argument("--shots", default=None, help="comma-separated k for the prompting rows (default: the preset's)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of the tasks")
    ap.add_argument("--rows", default=",".join(ROW_NAMES), help="comma-separated subset of " + ",".join(ROW_NAMES))
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the preset's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda runs every step on CuPy; results and bases are shared with CPU runs")
    ap.add_argument("--base-only", choices=["gpt", "lstm"], default=None,
                    help="pre-train (or resume) just this base and stop; run one process per base to use two cores")
    ap.add_argument("--verbose", action="store_true", help="show the pre-training and fine-tuning progress lines")
    ap.add_argument("--fresh", action="store_true", help="ignore progress.jsonl and redo every run")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: write the table from the runs progress.jsonl already holds")
    args = ap.parse_args(argv)
    name = "quick" if args.quick else args.preset
    p = dict(PRESETS[name])
    if args.seeds:
        p["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.shots is not None:
        p["shots"] = [int(s) for s in args.shots.split(",") if s.strip()]
    if args.lr is not None:
        p["ft_lr"] = args.lr
    tasks = [t for t in args.tasks.split(",") if t]
    rows = [r for r in args.rows.split(",") if r]
    for t in tasks:
        if t not in TASKS:
            ap.error(f"unknown task {t!r}")
    for r in rows:
        if r not in ROW_NAMES:
            ap.error(f"unknown row {r!r}")
    out = Path(args.out or f"runs/ablation-{name}")
    out.mkdir(parents=True, exist_ok=True)
    quiet = not args.verbose
    t_start = time.time()
    log(f"ablation  preset {name}: {json.dumps(p)}")

    if args.report and args.fresh:
        ap.error("--report uses progress.jsonl; --fresh would ignore it")
    if args.report:
        bases = {"gpt": out / "base-gpt", "lstm": out / "base-lstm",
                 "info": {"gpt_val_loss": _last_val(out / "base-gpt"), "lstm_val_loss": _last_val(out / "base-lstm"),
                          "corpus_plays": [pl.id for pl in split_plays_stratified(load_shakespeare(), seed=0)["train"]
                                                  [:p["corpus_plays"] or None]]}}
    elif args.base_only:
        prepare_bases(out, p, quiet, args.device, which=(args.base_only,))
        return 0
    else:
        # the LSTM base is needed only by its row; every other row and the prompting use the GPT's
        bases = prepare_bases(out, p, quiet, args.device, which=("gpt", "lstm") if "lstm" in rows else ("gpt",))
    task_dir = out / "tasks"
    summary = build_tasks(task_dir, seed=0, max_examples=p["n_train"], tasks=tasks)
    log("tasks  " + "; ".join(f"{t}: {v['train']['examples']} train / "
                              f"{min(v['test']['examples'], p['n_test'] or 10**9)} test" for t, v in summary["tasks"].items()))

    progress = out / "progress.jsonl"
    settings_key = json.dumps({k: v for k, v in p.items() if k not in ("seeds", "shots")}, sort_keys=True)
    done = {}
    if progress.exists() and not args.fresh:
        for line in progress.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("settings") == settings_key:
                done[(rec["kind"], rec["task"], rec.get("row"), rec["seed"], rec.get("k"))] = rec["result"]
        if done:
            log(f"progress  {len(done)} finished runs reused from {progress}")

    def record(kind, task, row, seed, k, result):
        with open(progress, "a") as f:
            f.write(json.dumps({"kind": kind, "task": task, "row": row, "seed": seed, "k": k,
                                "settings": settings_key, "result": result}) + "\n")

    # seed-major order: after each seed the table is complete for that many seeds, so an
    # interrupted job (restarted later with the same settings) has something to report
    data = {task: load_task_data(task_dir, task, p) for task in tasks}
    runs, fewshot = [], []
    lm = None  # the pre-trained GPT for prompting, loaded on first need
    for seed in p["seeds"]:
        for task in tasks:
            train, test = data[task]
            for row in rows:
                r = done.get(("ft", task, row, seed, None))
                if r is None and not args.report:
                    r = run_finetune(row, task, seed, bases, train, test, p, quiet, args.device)
                    record("ft", task, row, seed, None, r)
                if r is None:
                    continue
                runs.append(r)
                log(f"{task:8s} {row:11s} seed {seed}: test accuracy {r['accuracy']:.4f} "
                    f"(macro-F1 {r['macro_f1']:.4f}, {r['n_test']} examples, {r['steps']} updates, {r['seconds']:.0f}s)")
            if not p["shots"]:
                continue
            t0 = time.time()
            res = {k: done.get(("fewshot", task, None, seed, k)) for k in p["shots"]}
            todo = [k for k, v in res.items() if v is None]
            if todo and not args.report:
                if lm is None:
                    lm = load_base(bases["gpt"])[:2]
                    lm[0].to(device=args.device)
                for k, v in fewshot_accuracy(*lm, test[:p["n_fewshot"]], todo, demos=train, seed=seed).items():
                    res[k] = v
                    record("fewshot", task, None, seed, k, v)
            res = {k: v for k, v in res.items() if v is not None}
            for k, v in res.items():
                fewshot.append({"task": task, "k": k, "seed": seed, **v})
            if res:
                log(f"{task:8s} prompting  seed {seed}: " + ", ".join(
                    f"k={k} {v['accuracy']:.4f} ({v['mean_shots_used']:.1f} shots used)" for k, v in res.items())
                    + f" [{time.time() - t0:.0f}s]")

    baseline = {task: majority_baseline(task, data[task][1]) for task in tasks}
    table, md = make_table(runs, fewshot, p["shots"], tasks, baseline)
    expected = len(tasks) * len(rows) * len(p["seeds"])
    partial = "" if len(runs) == expected else f"PARTIAL: {len(runs)} of {expected} fine-tuning runs finished; "
    info = bases["info"]

    def loss(v):
        return "n/a" if v is None else f"{v:.3f}"

    header = (f"GPT-1 Table-5-style ablation, preset `{name}`: {partial}test accuracy in % (mean ± sample std over "
              f"seeds {p['seeds']}; a cell without ± has one seed so far; prompting cells: (mean demonstrations "
              f"that fitted in the context)); base GPT `{p['gpt_preset']}` (val loss {loss(info['gpt_val_loss'])}), "
              f"LSTM {p['lstm']} (val loss {loss(info['lstm_val_loss'])}), pre-trained on "
              f"{len(bases['info']['corpus_plays'])} train-split plays; {p['epochs']} epoch(s), lr {p['ft_lr']}, "
              f"batch {p['ft_batch']}; the fine-tuning runs took {sum(r['seconds'] for r in runs) / 3600:.1f} h "
              f"of wall time in all.")
    text = header + "\n\n" + md + "\n"
    print("\n" + text)
    doc = {"preset": name, "settings": p, "tasks": tasks, "bases": {k: str(v) for k, v in bases.items() if k != "info"},
           "base_info": bases["info"], "task_sizes": summary["tasks"], "runs": runs, "fewshot": fewshot,
           "table": table, "markdown": md, "seconds": time.time() - t_start}
    atomic_write(out / "ablation.json", [json.dumps(doc, indent=2).encode()])
    (out / "ablation.md").write_text(text, encoding="utf-8")
    log(f"wrote {out / 'ablation.json'} and {out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
