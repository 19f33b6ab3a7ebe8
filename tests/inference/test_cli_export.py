"""`recsys export`: what it refuses, and the --no-popularity path."""

from __future__ import annotations

import shutil

import pytest
import yaml

from recsys.cli import main
from recsys.errors import ArtifactError
from recsys.inference import Recommender, load_artifact


def test_export_refuses_incomplete_runs_and_existing_outputs(fitted_run, exported, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "a"), "--no-popularity"]) == 2
    assert "not a complete run directory" in capsys.readouterr().err
    assert main(["export", str(fitted_run), "--out", str(exported), "--no-popularity"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_export_without_popularity_needs_empty_raise(fitted_run, tmp_path):
    out = tmp_path / "bare"
    assert main(["export", str(fitted_run), "--out", str(out), "--no-popularity"]) == 0
    assert load_artifact(out).item_counts is None
    with pytest.raises(ArtifactError, match="popularity"):
        Recommender.load(out)
    assert Recommender.load(out, empty="raise").recommend([["item03"]], k=3).items[0]


def test_export_refuses_data_that_changed_since_training(fitted_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    changed = tmp_path / "events.csv"
    lines = (fitted_run.parent / "events.csv").read_text().splitlines()
    changed.write_text("\n".join(lines[:-1]) + "\n")  # one event fewer
    cfg["data"]["path"] = str(changed)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["export", str(run), "--out", str(tmp_path / "a")]) == 2
    assert "data changed since training" in capsys.readouterr().err
