"""The summary matrix, the figure, Pending with reasons, and the documents that must agree with the runs.

Fixture (tests/fixtures/leaderboard, see test_leaderboard.py): s3rec-beauty, 8 test users; sasrec-ce has
seeds 42 and 43, the baseline pop seed 42, sasrec-ce-temporal no results.
"""

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from recsys.report.leaderboard import Row, build_rows, render_markdown
from recsys.report.plot import MODEL_COLOURS, model_colour, plot_leaderboard
from recsys.report.results import load_matrix, load_runs
from recsys.report.summary import not_applicable, summary_lines

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "leaderboard"
CARD = {"users": 8, "items": 100, "events": 64, "median_length": 7.5, "fingerprint": "f" * 64,
        "file": "s3rec-preprocessed/Beauty.txt.gz", "timestamps": "positions only"}


@pytest.fixture()
def rows(tmp_path):
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    return build_rows(load_matrix(FIXTURE / "experiments"), load_runs(tmp_path / "results"))


def _row(dataset, split, config, model, test, valid, ci=None, baseline=False, time_s=100.0):
    """A leaderboard row built by hand: one fake run per (test, valid) pair."""
    runs = [SimpleNamespace(seed=42 + i, test={"ndcg@10": t}, valid={"ndcg@10": v}) for i, (t, v) in
            enumerate(zip(test, valid))]
    mean = float(np.mean(test))
    std = float(np.std(test, ddof=1)) if len(test) > 1 else math.nan
    return Row(dataset, split, config, model, baseline, None, runs=runs, mean=mean, std=std,
               ci=ci or (mean - 0.01, mean + 0.01), train_time_s=0.0 if baseline else time_s)


def test_summary_cell_is_the_winner_with_its_paired_test(rows):
    md = render_markdown(rows, {"s3rec-beauty": CARD})
    summary = md.split("## Summary")[1].split("## Protocol")[0]
    model = next(r for r in rows if r.config == "sasrec-ce")
    sasrec = [(r["test"]["ndcg@10"]) for r in (json.loads((FIXTURE / "results" / "s3rec-beauty" / "sasrec-ce" /
                                                            f"seed{s}" / "result.json").read_text()) for s in (42, 43))]
    mean, sd = np.mean(sasrec), np.std(sasrec, ddof=1)  # recomputed from the run files, not from the Row
    assert f"**{mean:.4f} ± {sd:.4f}** ◆ (n=2) `sasrec-ce`" in summary
    assert "| 0.0000 (n=1) `pop` |" in summary or "(n=1) `pop`" in summary  # one seed: no ± shown
    # the winner minus the runner-up, paired over the same 8 users: the comparison of the detailed table
    assert f"SASRec {model.comparison.delta:+.4f}, p 0.031" in summary
    assert "0.0611 BSARec" in summary and " †" in summary and "same protocol: 0.0531 SASRec+SS" in summary
    assert f"ours {mean / 0.0531 - 1:+.1%}" in summary
    # the temporal config has no results: no temporal table line, only the note and Pending
    assert "No temporal result yet: s3rec-beauty." in summary


def test_the_cell_is_picked_on_validation_not_test():
    rows = [_row("d", "loo", "sasrec-a", "sasrec", [0.30, 0.32], [0.20, 0.21]),
            _row("d", "loo", "sasrec-b", "sasrec", [0.35, 0.36], [0.10, 0.11]),  # better on test, worse on valid
            _row("d", "loo", "transitions", "transitions", [0.25], [0.19], baseline=True)]
    (line,) = summary_lines(rows)
    assert line.cells["sasrec"].config == "sasrec-a" and line.n_configs["sasrec"] == 2
    assert line.winner == "sasrec" and line.runner_up == "transitions"
    assert math.isnan(line.delta)  # hand-made rows carry no per-user values: not paired, and said so


def test_a_hopeless_config_is_listed_in_pending_with_its_reason(rows):
    hopeless = Row("s3rec-beauty", "loo", "recent_popularity", "recent_popularity", True, None)
    md = render_markdown(rows + [hopeless], {"s3rec-beauty": CARD})
    pending = md.split("## Pending")[1].split("## Provenance")[0]
    assert ("| s3rec-beauty | `recent_popularity` | leave-one-out | 0 of 3 (none) | **not applicable**: needs real "
            "timestamps; `s3rec-preprocessed/Beauty.txt.gz` orders events by position only |") in pending
    before = md.split("## Pending")[0]
    assert "recent_popularity" not in before  # not a row of the summary or of the detailed tables
    assert "| recent popularity |" in before and "| n/a |" in before  # its summary cell says it cannot run
    # the same config on a file with times is only waiting for its run
    assert not_applicable("recent_popularity", dict(CARD, timestamps="real")) is None
    assert not_applicable("sasrec", CARD) is None


def test_the_figure_keeps_one_colour_per_model_and_splits_apart():
    rows = [_row("a", "loo", "sasrec-ce", "sasrec", [0.30, 0.32], [0.2, 0.2], ci=(0.28, 0.34)),
            _row("a", "loo", "transitions", "transitions", [0.2], [0.1], ci=(0.18, 0.22), baseline=True),
            _row("a", "loo", "popularity", "popularity", [0.05], [0.04], ci=(0.04, 0.06), baseline=True),
            _row("b", "loo", "popularity", "popularity", [0.01], [0.01], ci=(0.005, 0.015), baseline=True),
            _row("b", "loo", "sasrec-ce", "sasrec", [0.10, 0.12], [0.1, 0.1], ci=(0.09, 0.13)),
            _row("a", "temporal", "sasrec-ce-temporal", "sasrec", [0.2], [0.2], ci=(0.15, 0.25)),
            _row("a", "temporal", "popularity-temporal", "popularity", [0.02], [0.02], ci=(0.01, 0.03),
                 baseline=True)]
    fig = plot_leaderboard(rows, cards={"a": CARD, "b": None})
    seen: dict[str, set] = {}
    panels = {}
    for subfig in fig.subfigs:
        block = subfig._suptitle.get_text()
        for ax in subfig.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            panels[(block, ax.get_title())] = ax
            for line in ax.lines:
                gid = line.get_gid() or ""
                if gid.startswith("model:"):
                    seen.setdefault(gid[6:], set()).add(line.get_markeredgecolor())
    assert set(panels) == {("Leave-one-out", "a"), ("Leave-one-out", "b"),
                           ("Temporal split", "a (per-position)")}  # temporal rows never share a loo panel
    assert {m: len(c) for m, c in seen.items()} == {"sasrec": 1, "transitions": 1, "popularity": 1}
    assert {m: next(iter(c)) for m, c in seen.items()} == {m: MODEL_COLOURS[m] for m in seen}
    assert len({model_colour(m) for m in seen}) == 3 and model_colour("new-model") == model_colour("new-model")
    # the error bars are the rows' user-bootstrap intervals, and the baselines are spread out by value
    ax = panels[("Leave-one-out", "a")]
    bars = sorted(tuple(np.round(seg[:, 0], 6)) for coll in ax.collections for seg in coll.get_segments())
    assert bars == [(0.04, 0.06), (0.18, 0.22), (0.28, 0.34)]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["popularity  (1 seed, counting)", "transitions  (1 seed, counting)",
                      "sasrec-ce  (2 seeds, 100 s)"]  # best on top


# ---- the committed documents agree with the committed run files -------------------------------------------


def _complete_runs(config_dir: Path) -> list[dict]:
    out = []
    for result in sorted(config_dir.glob("seed*/result.json")):
        status = json.loads((result.parent / "status.json").read_text())
        if status.get("status") == "complete":
            out.append(json.loads(result.read_text()))
    return out


def test_committed_summary_matches_the_run_files():
    """Every cell of the summary in benchmarks/LEADERBOARD.md is recomputed from result.json files."""
    md = (ROOT / "benchmarks" / "LEADERBOARD.md").read_text(encoding="utf-8")
    summary = md.split("## Summary")[1].split("## Protocol")[0]
    cells = re.findall(r"\| ([a-z0-9-]+)(?: \(per-position\))? \|([^\n]*)", summary)
    checked = 0
    for dataset, rest in cells:
        for value, sd, n, config in re.findall(r"\**(\d\.\d{4})(?: ± (\d\.\d{4}))?\**(?: ◆)? \(n=(\d+)\) `([^`]+)`",
                                               rest):
            runs = _complete_runs(ROOT / "benchmarks" / "results" / dataset / config)
            values = [r["test"]["ndcg@10"] for r in runs]
            assert len(values) == int(n), (dataset, config)
            assert f"{np.mean(values):.4f}" == value, (dataset, config)
            if sd:
                assert f"{np.std(values, ddof=1):.4f}" == sd, (dataset, config)
            checked += 1
    assert checked >= 10


def test_zoo_holds_no_figures_and_names_only_leaderboard_configs():
    """The zoo's figures are the leaderboard's s3rec-beauty rows; ZOO.md itself states none, so they cannot
    disagree; every config it names is a frozen config the leaderboard shows (as a row or under Pending)."""
    zoo = (ROOT / "benchmarks" / "ZOO.md").read_text(encoding="utf-8")
    board = (ROOT / "benchmarks" / "LEADERBOARD.md").read_text(encoding="utf-8")
    assert not re.findall(r"\b0\.\d{4}\b", zoo)
    named = re.findall(r"\]\(\.\./experiments/s3rec-beauty/([^)]+)\.yaml\)", zoo)
    assert len(named) >= 10
    for config in named:
        assert (ROOT / "experiments" / "s3rec-beauty" / f"{config}.yaml").is_file()
        assert f"(../experiments/s3rec-beauty/{config}.yaml)" in board


def _next_action():
    spec = importlib.util.spec_from_file_location("bench_next_action", ROOT / "benchmarks" / "next_action.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_next_action_is_rendered_from_the_result_files(tmp_path):
    next_action = _next_action()
    # the committed page is exactly what the committed JSON renders to
    doc = json.loads((ROOT / "benchmarks" / "NEXT_ACTION.json").read_text(encoding="utf-8"))
    assert (ROOT / "benchmarks" / "NEXT_ACTION.md").read_text(encoding="utf-8") == next_action.render(doc)
    empty = next_action.render({"datasets": {}, "done_when": {}})
    assert "- Planted: pending." in empty and "- Taobao: pending." in empty
    assert not re.findall(r"\| \d\.\d{3,4} \|", empty)  # no figure without a run
    # a finished run's figures reach the page, and the bars are judged from them
    row = {"n": 10, "n_users": 3, "log_loss": 0.5, "log_loss_ci": [0.4, 0.6], "accuracy": 0.9, "macro_f1": 0.3}
    entry = {"dataset": {"n_users": 3, "n_items": 5, "n_events": 20}, "moments": 10, "snapshots": 0,
             "train_moments": 7, "epochs": 2, "best_epoch": 1, "train_s": 3, "git_commit": "abc",
             "predictors": {"next_action": {"majority_class": {**row, "log_loss": 0.7},
                                            "repeat_last_action": {**row, "log_loss": 0.9},
                                            "action_markov": {**row, "log_loss": 0.65},
                                            "logistic": {**row, "log_loss": 0.6}, "gbm": {**row, "log_loss": 0.61},
                                            "model": {**row, "log_loss": 0.51}}},
             "optimum": {"next_action": {**row, "log_loss": 0.5}}}
    verdict = next_action.verdict_planted(entry)["next_action"]
    assert verdict["gap_closed"] == pytest.approx(0.95) and verdict["met"]
    text = next_action.render({"datasets": {"planted": entry}, "done_when": {"planted": {"next_action": verdict}}})
    assert "| model | 0.5100 | [0.4000, 0.6000] |" in text and "closes 95.0%" in text and "`abc`" in text

def test_next_action_size_estimate_follows_the_curves_power_law():
    next_action = _next_action()
    curve = [{"n_users_generated": n, "n_events": 60 * n, "purchase": {"shortfall": s},
              "next_action_given": {"gap_closed": g}}
             for n, s, g in ((800, 0.08, 0.95), (3200, 0.04, 0.97))]
    needed = next_action.needed_size(curve)
    # shortfall halves per 4x users (slope -1/2): 0.02 is reached at 4 x 3200 users
    assert needed["purchase"]["users"] == 12800 and needed["purchase"]["events"] == 60 * 12800
    assert needed["next_action_given"] == {"users": 800, "events": 48000, "how": "measured"}
    flat = next_action.needed_size([{**c, "purchase": {"shortfall": 0.05}} for c in curve])
    assert flat["purchase"]["users"] is None
