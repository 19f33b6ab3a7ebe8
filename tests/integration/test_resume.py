"""Crash safety: a training process killed mid-epoch resumes to the very same result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.data.synthetic import planted_markov_log

EXE = str(Path(sys.executable).with_name("recsys"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    log = planted_markov_log(n_users=1500, n_items=200, p_follow=0.5, min_len=5, max_len=30, seed=5)
    data = tmp / "events.csv"
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(data, index=False)
    cfg = tmp / "exp.yaml"
    cfg.write_text(f"""
name: resume
seed: 11
data: {{name: planted, format: csv, path: {data}}}
model: {{dim: 32, n_blocks: 2, n_heads: 2, max_len: 20, dropout: 0.3}}
train: {{batch_size: 64, lr: 0.003, max_epochs: 6, patience: 10, num_threads: 1, progress_bar: false}}
eval: {{ks: [1, 10], monitor: ndcg@10}}
""")
    reference = tmp / "reference"
    subprocess.run([EXE, "fit", "--config", str(cfg), "--run-dir", str(reference)], check=True,
                   capture_output=True, timeout=600)
    return tmp, cfg, json.loads((reference / "metrics.json").read_text())


def _val_epochs(partial: Path) -> int:
    csv = partial / "logs" / "metrics.csv"
    if not csv.exists() or not (partial / "checkpoints" / "last.ckpt").exists():
        return 0
    lines = csv.read_text().splitlines()  # may be mid-write: empty or header only
    if not lines:
        return 0
    header, *rows = lines
    col = header.split(",").index("val/ndcg@10") if "val/ndcg@10" in header else None
    return 0 if col is None else sum(1 for r in rows if len(r.split(",")) > col and r.split(",")[col])


def _start_and_interrupt(cfg: Path, run: Path, sig: int, after_epochs: int) -> subprocess.Popen:
    proc = subprocess.Popen([EXE, "fit", "--config", str(cfg), "--run-dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = run.with_name(run.name + ".partial")
    deadline, marks = time.time() + 600, []
    while _val_epochs(partial) < after_epochs:
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() < deadline
        if _val_epochs(partial) > len(marks):
            marks.append(time.time())
        time.sleep(0.05)
    # land the signal part-way through the next epoch, not on its boundary
    epoch_time = (marks[-1] - marks[-2]) if len(marks) > 1 else 0.5
    time.sleep(0.4 * epoch_time)
    assert proc.poll() is None
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(setup):
    tmp, cfg, reference = setup
    run = tmp / "killed"
    proc = _start_and_interrupt(cfg, run, signal.SIGKILL, after_epochs=2)
    assert proc.returncode == -signal.SIGKILL
    partial = run.with_name("killed.partial")
    assert not run.exists() and json.loads((partial / "status.json").read_text())["status"] == "running"
    assert not list(partial.glob("checkpoints/*.tmp")) or (partial / "checkpoints" / "last.ckpt").exists()
    done = subprocess.run([EXE, "fit", "--resume", str(run)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["valid"] == reference["valid"]
    assert resumed["test"] == reference["test"]
    assert resumed["epochs"] == reference["epochs"] and resumed["best_epoch"] == reference["best_epoch"]
    before = (run / "logs" / "metrics.before-resume-1.csv").read_text()  # the log up to the kill is kept
    assert "val/ndcg@10" in before.splitlines()[0]


def test_sigterm_leaves_a_resumable_run(setup):
    tmp, cfg, reference = setup
    run = tmp / "terminated"
    proc = _start_and_interrupt(cfg, run, signal.SIGTERM, after_epochs=1)
    assert proc.returncode != 0
    status = json.loads((run.with_name("terminated.partial") / "status.json").read_text())
    assert status["status"] == "interrupted" and status["resumable"] is True
    done = subprocess.run([EXE, "fit", "--resume", str(run.with_name("terminated.partial"))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["test"] == reference["test"]


def test_refuses_to_overwrite_an_unfinished_run_and_checks_the_data(setup, tmp_path):
    tmp, cfg, _ = setup
    partial = tmp_path / "x.partial"
    partial.mkdir()
    out = subprocess.run([EXE, "fit", "--config", str(cfg), "--run-dir", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--resume" in out.stderr
    out = subprocess.run([EXE, "fit", "--resume", str(tmp_path / "nothing")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no unfinished run" in out.stderr
