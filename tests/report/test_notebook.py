"""notebooks/leaderboard.ipynb runs top to bottom on the fixture results, so it cannot rot."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "leaderboard"


@pytest.mark.slow
def test_leaderboard_notebook_executes_on_fixture_results(tmp_path, monkeypatch, execute_notebook):
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    monkeypatch.setenv("RECSYS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("RECSYS_EXPERIMENTS", str(FIXTURE / "experiments"))
    outputs, text = execute_notebook("leaderboard.ipynb", timeout=120)
    assert not [o for o in outputs if o.output_type == "error"]
    assert "3 runs of 2 configs; 3 configs in the matrix" in text
    assert "sasrec-ce-temporal" in text and "0.5417" in text  # the rows table, pending row included
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the quality-vs-time plot
