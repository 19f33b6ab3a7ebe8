"""Reproducibility across processes, and crash safety: the same config run again in a new
process, or killed mid-epoch and resumed, gives the very same metrics, ranks and weights.

On a log the model cannot saturate (next item = its successor with p 0.5, else uniform
over 200 items: test HR@10 at best about 0.52), with dropout on, once on the plain path
and once on the fast path, whose loss, grouped forward and dropout sampler are other code.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.synthetic import optimal_metrics, planted_markov_log, successor_hit_rate

EXE = str(Path(sys.executable).with_name("recsys"))
PATHS = {
    "plain": ["train.loss=ce", "train.length_groups=1", "model.dropout_sampler=bernoulli", "model.transition_lags=0",
              "train.logit_precision=fp32", "train.encoder_precision=fp32"],
    # the library defaults: the fast path in bf16 with the transition head
    "fast": ["train.loss=ce_chunked", "train.length_groups=4", "model.dropout_sampler=uniform"],
}
TIMINGS = ("wall_time_s", "cpu_time_s")  # the only fields of metrics.json a rerun may change


def _fit(cfg: Path, run: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "fit", "--config", str(cfg), "--run-dir", str(run), *PATHS[path]],
                          capture_output=True, text=True, timeout=600)


def _assert_identical_runs(a: Path, b: Path) -> None:
    """metrics.json equal but for timings, ranks.npz and the best weights bit for bit."""
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMINGS} == {k: v for k, v in mb.items() if k not in TIMINGS}
    ra, rb = np.load(a / "ranks.npz"), np.load(b / "ranks.npz")
    for split in ("valid", "test"):
        assert ra[split].dtype == rb[split].dtype and np.array_equal(ra[split], rb[split]), split
    wa, wb = (torch.load(r / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
              for r in (a, b))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """path -> (tmp, config, path, reference run, its metrics, log); each reference runs once."""
    cache = {}

    def get(path: str):
        if path not in cache:
            cache[path] = _prepare(tmp_path_factory.mktemp(f"resume-{path}"), path)
        return cache[path]

    return get


@pytest.fixture(params=sorted(PATHS))
def setup(request, prepared):
    return prepared(request.param)


@pytest.fixture
def plain(prepared):
    return prepared("plain")


def _prepare(tmp: Path, path: str):
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
    done = _fit(cfg, reference, path)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp, cfg, path, reference, json.loads((reference / "metrics.json").read_text()), log


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


def _start_and_interrupt(cfg: Path, run: Path, path: str, sig: int, after_epochs: int) -> subprocess.Popen:
    proc = subprocess.Popen([EXE, "fit", "--config", str(cfg), "--run-dir", str(run), *PATHS[path]],
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


def test_rerun_in_a_new_process_is_identical(setup):
    tmp, cfg, path, reference, metrics, log = setup
    # the run is neither saturated nor untrained: ties and lucky ranks are not what agree
    best = optimal_metrics(log, (10,), q=successor_hit_rate(log, 1))["hr@10"]  # on these very targets
    assert 0.5 * best < metrics["test"]["hr@10"] < 1.05 * best < 0.6, (metrics["test"], best)
    done = _fit(cfg, tmp / "rerun", path)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_identical_runs(reference, tmp / "rerun")
    config = (reference / "config.yaml").read_text()
    assert "dropout: 0.3" in config and f"length_groups: {4 if path == 'fast' else 1}" in config


def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(setup):
    tmp, cfg, path, reference_dir, reference, _ = setup
    run = tmp / "killed"
    proc = _start_and_interrupt(cfg, run, path, signal.SIGKILL, after_epochs=2)
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
    _assert_identical_runs(reference_dir, run)
    before = (run / "logs" / "metrics.before-resume-1.csv").read_text()  # the log up to the kill is kept
    assert "val/ndcg@10" in before.splitlines()[0]


def test_sigterm_leaves_a_resumable_run(plain):
    tmp, cfg, path, _, reference, _ = plain
    run = tmp / "terminated"
    proc = _start_and_interrupt(cfg, run, path, signal.SIGTERM, after_epochs=1)
    assert proc.returncode != 0
    status = json.loads((run.with_name("terminated.partial") / "status.json").read_text())
    assert status["status"] == "interrupted" and status["resumable"] is True
    done = subprocess.run([EXE, "fit", "--resume", str(run.with_name("terminated.partial"))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["test"] == reference["test"]


def test_refuses_to_overwrite_an_unfinished_run_and_checks_the_data(plain, tmp_path):
    tmp, cfg, _, _, _, _ = plain
    partial = tmp_path / "x.partial"
    partial.mkdir()
    out = subprocess.run([EXE, "fit", "--config", str(cfg), "--run-dir", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--resume" in out.stderr
    out = subprocess.run([EXE, "fit", "--resume", str(tmp_path / "nothing")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no unfinished run" in out.stderr
    # a folder that a live process is training is not resumed under it (this test's own pid is alive)
    live = tmp_path / "live.partial"
    live.mkdir()
    (live / "config.yaml").write_text(Path(cfg).read_text())
    (live / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    out = subprocess.run([EXE, "fit", "--resume", str(live)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"process {os.getpid()} is still training" in out.stderr, out.stderr[-2000:]
    assert not (live / "checkpoints").exists()
