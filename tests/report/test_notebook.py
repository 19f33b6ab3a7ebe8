"""notebooks/leaderboard.ipynb runs top to bottom on the fixture results, so it cannot rot."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "leaderboard"


@pytest.mark.slow
def test_leaderboard_notebook_executes_on_fixture_results(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    monkeypatch.setenv("RECSYS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("RECSYS_EXPERIMENTS", str(FIXTURE / "experiments"))
    nb = nbformat.read(ROOT / "notebooks" / "leaderboard.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "3 runs of 2 configs; 3 configs in the matrix" in text
    assert "sasrec-ce-temporal" in text and "0.5417" in text  # the rows table, pending row included
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the quality-vs-time plot
