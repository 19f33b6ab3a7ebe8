"""End-to-end: a CSV event log -> `recsys fit` -> run directory -> `recsys evaluate`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.cli import main

N_ITEMS = 30


def _write_log(path: Path, n_users: int = 150, seed: int = 0) -> None:
    """Planted structure: each user walks the item cycle i -> i+1, so the next item is
    fully determined by the last one and a working model must find it."""
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        start, length = rng.integers(N_ITEMS), rng.integers(4, 12)
        t0 = int(rng.integers(1_000_000))
        for j in range(length):
            lines.append(f"u{u},item{(start + j) % N_ITEMS:02d},{t0 + 60 * j}")
    path.write_text("\n".join(lines) + "\n")


def _config(tmp_path: Path, log: Path) -> Path:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"""
name: tiny
seed: 7
output_dir: {tmp_path / 'runs'}
data: {{name: planted, format: csv, path: {log}, user_col: user_id, item_col: item_id, time_col: timestamp}}
model: {{dim: 16, n_blocks: 1, n_heads: 1, max_len: 8, dropout: 0.0}}
train: {{batch_size: 32, lr: 0.01, max_epochs: 12, patience: 20, progress_bar: false}}
eval: {{ks: [1, 10], monitor: ndcg@10}}
"""
    )
    return cfg


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    log = tmp_path / "events.csv"
    _write_log(log)
    cfg = _config(tmp_path, log)
    run = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--run-dir", str(run)]) == 0
    return tmp_path, cfg, run


def test_fit_writes_a_complete_run_directory(fitted):
    _, _, run = fitted
    for name in ("config.yaml", "vocab.json", "metrics.json", "ranks.npz", "checkpoints/best.ckpt", "logs/metrics.csv"):
        assert (run / name).is_file(), name
    assert not run.with_name(run.name + ".partial").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_eval_users"] == 150
    assert m["dataset"]["summary"]["n_items"] == N_ITEMS
    assert len(m["dataset"]["fingerprint"]) == 64
    assert m["seed"] == 7 and m["exclude_seen"] is False
    assert m["protocol"] == "full-catalogue ranking, leave-one-out, pessimistic ties"
    assert {"torch", "pytorch-lightning", "numpy"} <= set(m["versions"])
    assert m["epochs"] >= 1 and "total" in m["wall_time_s"]
    ranks = np.load(run / "ranks.npz")
    assert ranks["test"].shape == (150,) and ranks["test"].min() >= 1
    assert np.mean(ranks["test"] <= 10) == pytest.approx(m["test"]["hr@10"])
    # The planted next item is deterministic: a working model ranks it first for most users,
    # far above the 1/30 a random ranking would give. (How close models get to an optimum:
    # tests/integration/test_planted.py; two runs of one config in separate processes,
    # compared bit for bit: tests/integration/test_resume.py.)
    assert m["test"]["hr@1"] > 0.8


def test_evaluate_recomputes_the_recorded_metrics(fitted, capsys):
    from recsys.training.run import evaluate

    _, _, run = fitted
    recorded = json.loads((run / "metrics.json").read_text())
    again = evaluate(run)
    assert again["test"] == recorded["test"]
    assert again["valid"] == recorded["valid"]
    assert main(["evaluate", str(run)]) == 0
    assert f"{recorded['test']['ndcg@10']:.4f}" in capsys.readouterr().out


def test_console_script_and_malformed_input(fitted, tmp_path):
    _, _, _ = fitted
    log = tmp_path / "bad.csv"
    log.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu1,c,yesterday\n")
    cfg = _config(tmp_path, log)
    run = tmp_path / "bad_run"
    exe = Path(sys.executable).with_name("recsys")
    proc = subprocess.run([str(exe), "fit", "--config", str(cfg), "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{log}:4" in proc.stderr
    # the data failed before training started: no run directory, not even an empty .partial
    assert not run.exists() and not (tmp_path / "bad_run.partial").exists()
