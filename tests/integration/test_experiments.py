"""Every frozen experiment config parses and its dataset loads from RECSYS_DATA_DIR."""

import dataclasses
import os
from pathlib import Path

import pytest

from recsys.config import ExperimentConfig
from recsys.data.events import load_events

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "experiments").glob("*/*.yaml"))
DATA = Path(os.environ.get("RECSYS_DATA_DIR") or ROOT.parent / "shared" / "datasets")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_dataset_loads(path):
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.data.name == path.parent.name
    header = path.read_text().splitlines()[:3]
    assert any(f"recsys fit --config experiments/{path.parent.name}/{path.name}" in line for line in header)
    if not (DATA / cfg.data.path).exists():
        pytest.skip(f"{DATA / cfg.data.path} not present")
    log = load_events(dataclasses.replace(cfg.data, data_dir=str(DATA)))
    s = log.summary
    assert s["n_events"] > 0 and s["n_users"] > 0
    assert s["rows_read"] == s["n_events"] + s["dropped_duplicates"] + s["dropped_kcore"] + s["dropped_short_users"]
