"""benchmarks/speed.py's bookkeeping: FLOPs counted per length group, merged runs, the command line.

No timing is asserted; these are the numbers the script divides timings by, and what it says
about where its figures came from.
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import speed  # noqa: E402


def test_encoder_shapes_are_the_groups_the_encoder_runs():
    inputs = torch.zeros(5, 10, dtype=torch.long)
    for row, n in enumerate([10, 2, 0, 7, 3]):  # left-padded rows; row 2 is all padding (width 1)
        inputs[row, 10 - n :] = 1
    assert speed.encoder_shapes(inputs, 1) == [(5, 10)]
    assert speed.encoder_shapes(inputs, 2) == [(3, 3), (2, 10)]  # widths sorted 1, 2, 3 | 7, 10
    assert speed.encoder_shapes(inputs, 9) == [(1, 1), (1, 2), (1, 3), (1, 7), (1, 10)]


def test_step_flops_count_each_piece_and_the_logits():
    D, blocks, V, M = 4, 2, 11, 6
    one = 3 * (blocks * (12 * 2 * 5 * D * D + 4 * 2 * 5 * 5 * D) + 2 * M * D * V)
    assert speed.step_flops([(2, 5)], M, D, blocks, V) == one
    split = speed.step_flops([(1, 5), (1, 2)], M, D, blocks, V)
    assert split == 3 * (blocks * (12 * 7 * D * D + 4 * (25 + 4) * D) + 2 * M * D * V)


def _doc(started, sections, budgets=None):
    results = {name: {} for name in sections}
    if budgets:
        results["peers"] = {name: {"budget_minutes": m, "max_users": None} for name, m in budgets.items()}
    return {"started": started, "wall_s": 10.0, "load_before": "0", "load_after": "1", "threads": 2,
            "machine": {}, "results": results}


def test_merged_runs_keep_each_sections_own_provenance_and_order():
    early = _doc("A", ["gemm", "step"], budgets={"ml-1m-partial": 35.0, "s3rec-beauty": 12.0})
    late = _doc("B", ["step", "eval"])
    merged = speed.merge_docs([early, late])
    assert list(merged["results"]) == ["gemm", "step", "eval", "peers"]
    assert {k: v["started"] for k, v in merged["measured"].items()} == {"gemm": "A", "step": "B", "eval": "B",
                                                                        "peers": "A"}
    assert "step on B" in speed.written_by(merged) and "gemm on A" in speed.written_by(merged)
    late["commit"] = "0123456789abcdef0123-dirty"  # a run that recorded its commit; the early one did not
    merged = speed.merge_docs([early, late])
    assert "step on B at recsys 0123456789ab-dirty (" in speed.written_by(merged)
    assert "gemm on A (" in speed.written_by(merged)
    command = speed.regenerate_command(merged)
    assert command.startswith(".venv/bin/python benchmarks/speed.py --sections gemm step eval peers --budget-minutes")
    assert {"35", "s3rec-beauty=12"} <= set(command.split()) or {"12", "ml-1m-partial=35"} <= set(command.split())


_RUNNER = """import json, sys
import numpy as np
out = sys.argv[sys.argv.index("--out") + 1]
np.save(out.replace(".json", ".ranks.npy"), np.array([1, 3, 12]))
json.dump({"library": "fake", "made_with": sys.argv[1]}, open(out, "w"))
"""


def test_a_record_is_reused_only_when_the_same_command_made_it(tmp_path):
    import argparse

    args = argparse.Namespace(reuse_records=True, threads=1)

    def run(setting):
        return speed.run_library("fake", [sys.executable, "-c", _RUNNER, setting], tmp_path, args, budget=1.0)

    first = run("a")
    assert first["made_with"] == "a" and "reused_from" not in first
    again = run("a")
    assert again["made_with"] == "a" and "reused_from" in again  # same command: read back
    assert again["test_ndcg10_harness"] == first["test_ndcg10_harness"]
    other = run("b")
    assert other["made_with"] == "b" and "reused_from" not in other  # other settings: run again
    (tmp_path / "fake.command.json").unlink()  # a record of a harness that did not say how it was made
    assert "reused_from" not in run("b")


def test_ours_record_is_reused_only_from_the_same_clean_recsys_commit(tmp_path, monkeypatch):
    import argparse

    args = argparse.Namespace(reuse_records=True, threads=1)

    def run(commit):
        monkeypatch.setattr(speed, "git_commit", lambda: commit)
        return speed.run_library("ours", [sys.executable, "-c", _RUNNER, commit or "none"], tmp_path, args, budget=1.0)

    assert "reused_from" not in run("abc")
    assert "reused_from" in run("abc")  # same code, same command
    monkeypatch.setattr(speed, "git_commit", lambda: "def")
    assert "reused_from" not in speed.run_library("ours", [sys.executable, "-c", _RUNNER, "abc"], tmp_path, args,
                                                  budget=1.0)  # same command, other code: run again
    assert "reused_from" not in run("abc-dirty")
    assert "reused_from" not in run("abc-dirty")  # local changes: never read back
