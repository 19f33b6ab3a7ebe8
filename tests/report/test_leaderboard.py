"""The leaderboard rendered from a fixture set of results, with values checked by hand.

Fixture (tests/fixtures/leaderboard): dataset s3rec-beauty, 8 test users.
  sasrec-ce seed 42 ranks 1 2 3 1 20 5 1 100, seed 43 ranks 1 3 2 1 30 5 2 100, seed 44 crashed (.partial);
  pop (model "popularity", a baseline) seed 42 ranks 10 50 50 4 50 50 50 50;
  sasrec-ce-temporal has no results (pending).
"""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys.cli import main
from recsys.report.leaderboard import Row, _published_cell, build_rows, render_markdown, write_leaderboard
from recsys.report.published import PUBLISHED, published_for
from recsys.report.results import load_matrix, load_run, load_runs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "leaderboard"


def ndcg(rank: int) -> float:
    return 1 / math.log2(rank + 1) if rank <= 10 else 0.0


SEED42 = [ndcg(r) for r in (1, 2, 3, 1, 20, 5, 1, 100)]
SEED43 = [ndcg(r) for r in (1, 3, 2, 1, 30, 5, 2, 100)]
POP = [ndcg(r) for r in (10, 50, 50, 4, 50, 50, 50, 50)]


@pytest.fixture()
def results(tmp_path):
    # a copy: rendering caches dataset cards inside the results folder
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture()
def rows(results):
    return {r.config: r for r in build_rows(load_matrix(FIXTURE / "experiments"), load_runs(results))}


def test_only_complete_runs_are_loaded(results):
    runs = load_runs(results)
    assert [(r.config, r.seed) for r in runs] == [("pop", 42), ("sasrec-ce", 42), ("sasrec-ce", 43)]
    assert load_run(results / "s3rec-beauty" / "sasrec-ce" / "seed44.partial") is None  # crashed
    running = results / "s3rec-beauty" / "sasrec-ce" / "seed45"
    shutil.copytree(results / "s3rec-beauty" / "sasrec-ce" / "seed42", running)
    (running / "status.json").write_text('{"status": "running"}')
    assert load_run(running) is None
    assert [r.seed for r in load_runs(results) if r.config == "sasrec-ce"] == [42, 43]


def test_rows_mean_std_ci_and_time(rows):
    row = rows["sasrec-ce"]
    a, b = np.mean(SEED42), np.mean(SEED43)
    assert row.seeds == [42, 43]
    assert row.mean == pytest.approx((a + b) / 2)
    assert row.std == pytest.approx(abs(a - b) / math.sqrt(2))  # sample std of two values
    assert row.hr_mean == pytest.approx(0.75) and row.hr_std == pytest.approx(0.0)
    assert row.train_time_s == pytest.approx(130.0) and row.epochs == 30 and row.best_epoch == 20
    # per-user values are averaged over seeds before the bootstrap; the interval brackets the mean
    np.testing.assert_allclose(row.user_values, (np.array(SEED42) + np.array(SEED43)) / 2)
    low, high = row.ci
    assert low < row.mean < high and 0.0 <= low and high <= 1.0
    assert rows["sasrec-ce-temporal"].pending and rows["sasrec-ce-temporal"].split == "temporal"


def test_paired_test_against_the_best_baseline(rows):
    pop, model = rows["pop"], rows["sasrec-ce"]
    assert pop.baseline and not model.baseline
    assert pop.mean == pytest.approx(np.mean(POP))
    c = model.comparison
    assert c.reference == "pop" and c.n_users == 8
    assert c.delta == pytest.approx(model.mean - np.mean(POP))
    # six users differ, all in the model's favour (two users are misses for both): of the 2^6 sign
    # flips only all-plus and all-minus reach the observed |sum|, so the exact p-value is 2/64
    assert c.p_value == pytest.approx(2 / 64)
    assert c.ci[0] > 0 and c.ci[0] < c.delta < c.ci[1]
    assert pop.comparison is None


def test_published_numbers_and_gap(rows):
    # the raw-ML-1M numbers (another file) rank first, but only ours-protocol ones set the gap
    assert [p.value for p in published_for("ml-1m", "loo")][:2] == [0.2164, 0.1893]
    assert [p.value for p in published_for("ml-1m", "loo", same_protocol=True)] == [0.1857, 0.1821, 0.1726, 0.1537]
    assert all("3,706 items" in p.protocol for p in published_for("ml-1m", "loo") if not p.same_protocol)
    assert {p.dataset: published_for(p.dataset, "loo", same_protocol=True)[0].value
            for p in PUBLISHED if p.dataset.startswith("s3rec")} == {
        "s3rec-beauty": 0.0531, "s3rec-toys": 0.0580, "s3rec-sports": 0.0323}
    assert all(p.source and p.url.startswith("https://") for p in PUBLISHED)
    # BSARec's 0.0611 is higher but measured another way: shown first, never used for the gap
    beauty = published_for("s3rec-beauty", "loo")
    assert [(p.value, p.same_protocol) for p in beauty] == [(0.0611, False), (0.0531, True), (0.0523, True)]
    assert "seen items to 0" in beauty[0].protocol
    assert [p.value for p in published_for("s3rec-beauty", "loo", same_protocol=True)] == [0.0531, 0.0523]
    row = rows["sasrec-ce"]
    assert row.published.value == 0.0531 and row.gap == pytest.approx(row.mean / 0.0531 - 1)
    assert rows["sasrec-ce-temporal"].published is None  # no published number for the temporal split
    short = Row("s3rec-beauty", "loo", "x", "sasrec", False, None, runs=[object()], mean=0.045,
                published=published_for("s3rec-beauty", "loo", same_protocol=True)[0])
    assert _published_cell(short)[1] == "-15.3% (**short**)"
    close = Row("s3rec-beauty", "loo", "x", "sasrec", False, None, runs=[object()], mean=0.051,
                published=published_for("s3rec-beauty", "loo", same_protocol=True)[0])
    assert _published_cell(close)[1] == "-4.0% (meets the 5% bar)"


def test_markdown_from_fixture_results(results, rows):
    md = render_markdown(list(rows.values()), {"s3rec-beauty": {
        "users": 8, "items": 100, "events": 64, "median_length": 7.5, "fingerprint": "f" * 64,
        "file": "x.txt", "timestamps": "positions only"}})
    model = rows["sasrec-ce"]
    assert "from 3 runs" in md  # the crashed seed is not counted
    assert f"| {model.mean:.4f} ± {model.std:.4f} |" in md and "0.5417 ± 0.0326" in md
    assert f"+{model.comparison.delta:.4f} [" in md and "p 0.031 vs `pop`" in md
    assert "reference (best baseline)" in md
    assert "| 130 s | 30 (20) |" in md
    assert "0.0531 (SASRec+SS, [transformer_benchmark]" in md
    assert "*published:* SASRec+SS (sampled softmax) |" in md and "*published:* BSARec † |" in md
    assert "8 users · 100 items · 64 events · median length 7.5 · fingerprint `ffffffffffff`" in md
    # pending rows appear only under Pending, never in the detailed tables
    results, pending = md.split("## Results")[1].split("## Notes")[0], md.split("## Pending")[1]
    assert "sasrec-ce-temporal" not in results and "pending" not in results
    assert "| s3rec-beauty | [`sasrec-ce`](" in pending and "| 2 of 3 (42, 43) | not run yet |" in pending
    assert "| temporal (per-position) | 0 of 3 (none) | not run yet |" in pending
    assert "Fixture CPU, 2 CPUs, 8.0 GB, torch threads: 1" in md


def test_write_leaderboard_and_cli(results, tmp_path, capsys):
    out, plot = tmp_path / "board" / "LEADERBOARD.md", tmp_path / "board" / "leaderboard.png"
    written = write_leaderboard(results, FIXTURE / "experiments", out, plot)
    assert (written.rows, written.with_results, written.runs) == (3, 2, 3)
    text = out.read_text()
    assert "per dataset and split](leaderboard.png)" in text
    assert "median length 7.5" in text  # the card cached in the results folder
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "board" / "again.md"
    rc = main(["leaderboard", "--results", str(results), "--experiments", str(FIXTURE / "experiments"),
               "--out", str(again), "--no-plot"])
    assert rc == 0 and "3 rows, 2 with results, 3 runs" in capsys.readouterr().out
    # deterministic: same inputs, same document (less the plot link)
    def lines(doc):
        return [line for line in doc.splitlines() if line.strip() and "leaderboard.png" not in line]

    assert lines(text) == lines(again.read_text())
