"""tools/finetune_ablation.py: the table it writes into the README comes from its records."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from pygpt.tasks import Example

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("finetune_ablation", ROOT / "tools" / "finetune_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_majority_baseline(tool):
    test = [Example("entail", {"premise": "a", "hypothesis": "b"}, lab) for lab in ["yes", "no", "no", "no"]]
    assert tool.majority_baseline("entail", test) == 0.75
    ch = [Example("choice", {"context": "c", "choices": ["x"] * n}, 0) for n in (2, 4)]
    assert tool.majority_baseline("choice", ch) == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_report_builds_the_table_from_progress_records(tool, tmp_path, capsys):
    p = dict(tool.PRESETS["quick"])
    key = json.dumps({k: v for k, v in p.items() if k not in ("seeds", "shots")}, sort_keys=True)
    acc = {("full", 0): 0.5, ("full", 1): 0.7, ("no_aux", 0): 0.4}
    with open(tmp_path / "progress.jsonl", "w") as f:
        for (row, seed), a in acc.items():
            res = {"row": row, "task": "entail", "seed": seed, "accuracy": a, "macro_f1": a, "n_test": 10,
                   "steps": 1, "seconds": 1.0}
            f.write(json.dumps({"kind": "ft", "task": "entail", "row": row, "seed": seed, "k": None,
                                "settings": key, "result": res}) + "\n")
        f.write(json.dumps({"kind": "fewshot", "task": "entail", "row": None, "seed": 0, "k": 0, "settings": key,
                            "result": {"accuracy": 0.25, "n": 4, "mean_shots_used": 0.0,
                                       "truncated_candidates": 0}}) + "\n")
        for seed, (a, used) in enumerate([(0.5, 1.0), (0.3, 0.5)]):  # k=1 asked, not always fitted
            f.write(json.dumps({"kind": "fewshot", "task": "entail", "row": None, "seed": seed, "k": 1,
                                "settings": key, "result": {"accuracy": a, "n": 4, "mean_shots_used": used,
                                                            "truncated_candidates": 0}}) + "\n")
        # a record made with other settings is ignored
        f.write(json.dumps({"kind": "ft", "task": "entail", "row": "lstm", "seed": 0, "k": None,
                            "settings": key + "x", "result": dict(res, row="lstm")}) + "\n")
    assert tool.main(["--quick", "--out", str(tmp_path), "--report", "--tasks", "entail"]) == 0
    md = (tmp_path / "ablation.md").read_text()
    expected = len(p["seeds"]) * len(tool.ROW_NAMES)
    assert f"PARTIAL: 3 of {expected} fine-tuning runs finished" in md
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    sd = 100 * statistics.stdev([0.5, 0.7])
    assert lines[tool.ROW_NAMES["full"]].endswith(f"| 60.0 ± {sd:.1f} |")
    assert lines[tool.ROW_NAMES["no_aux"]].endswith("| 40.0 |")  # one seed: no spread shown
    assert tool.ROW_NAMES["lstm"] not in lines
    assert any(name.endswith("0-shot prompting") and ln.endswith("| 25.0 (0.0) |") for name, ln in lines.items())
    sd1 = 100 * statistics.stdev([0.5, 0.3])
    assert any(name.endswith("1-shot prompting") and ln.endswith(f"| 40.0 ± {sd1:.1f} (0.8) |")
               for name, ln in lines.items())
    doc = json.loads((tmp_path / "ablation.json").read_text())
    assert doc["table"]["full"]["entail"]["values"] == [0.5, 0.7]
    assert 0.5 <= doc["table"]["majority"]["entail"]["mean"] <= 1.0
