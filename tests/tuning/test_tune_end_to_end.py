"""`recsys tune` end to end on a tiny planted log: two worker processes on SQLite and on a
real PostgreSQL server, a worker killed mid-trial and the command re-run, the exported best
config refitted by `recsys fit`, and the study report."""

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from recsys.cli import main

pytestmark = pytest.mark.slow
EXE = str(Path(sys.executable).with_name("recsys"))
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Items follow a cycle (i -> i+1), so validation NDCG depends clearly on lr/dropout."""
    tmp = tmp_path_factory.mktemp("tune")
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(150):
        start, length, t0 = rng.integers(30), rng.integers(4, 12), int(rng.integers(1_000_000))
        lines += [f"u{u},item{(start + j) % 30:02d},{t0 + 60 * j}" for j in range(length)]
    (tmp / "events.csv").write_text("\n".join(lines) + "\n")
    config = tmp / "exp.yaml"
    config.write_text(f"""
name: tiny
seed: 7
output_dir: {tmp / 'runs'}
data: {{name: planted, format: csv, path: {tmp / 'events.csv'}}}
model: {{dim: 16, n_blocks: 1, n_heads: 1, max_len: 8, dropout: 0.0, transition_lags: 0}}
train: {{batch_size: 32, lr: 0.01, max_epochs: 4, patience: 20, num_threads: 1, progress_bar: false}}
eval: {{ks: [1, 10], monitor: ndcg@10}}
""")
    space = tmp / "space.yaml"
    space.write_text("""
params:
  model.dropout: {type: float, low: 0.0, high: 0.5}
  train.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
  model.dim: {type: categorical, choices: [8, 16]}
sampler: {seed: 3, n_startup_trials: 3}
pruner: {type: median, n_startup_trials: 2}
""")
    return tmp, config, space


def _tune_args(config, space, study, trials, workers, storage=None):
    args = ["tune", "--config", str(config), "--space", str(space), "--study", study,
            "--trials", str(trials), "--workers", str(workers)]
    return args + (["--storage", storage] if storage else [])


def _check_study(url, name, n, workers, killed=()):
    """Exactly n finished trials, no duplicate trial, parameters or run; each trial's value is
    its best validation epoch, reported epoch by epoch; the work was shared by the workers.
    A failed trial is an empty surplus one or one whose worker was ``killed``."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert all(t.user_attrs.get("surplus") or t.number in killed for t in trials if t.state == TrialState.FAIL)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n
    assert len({t.user_attrs["run_dir"] for t in finished}) == n
    for t in finished:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(len(steps))) and steps, t.intermediate_values
        if t.state == TrialState.COMPLETE:
            run = Path(t.user_attrs["run_dir"])
            assert json.loads((run / "status.json").read_text())["status"] == "complete"
            assert len(steps) == t.user_attrs["epochs"]
            assert t.value == t.user_attrs["valid"]["ndcg@10"]
            assert t.value == pytest.approx(max(t.intermediate_values.values()), rel=1e-6)
            assert set(t.user_attrs["valid"]) == {"hr@1", "hr@10", "ndcg@1", "ndcg@10", "mrr@1", "mrr@10"}
        else:
            assert Path(t.user_attrs["run_dir"] + ".partial").is_dir()
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) == workers
    return trials


@pytest.fixture(scope="module")
def sqlite_study(tiny):
    tmp, config, space = tiny
    assert main(_tune_args(config, space, "sqlite", trials=4, workers=2)) == 0
    study_dir = tmp / "runs" / "studies" / "sqlite"
    return study_dir, f"sqlite:///{study_dir / 'study.db'}"


def test_two_workers_on_sqlite_finish_the_requested_trials_without_duplicates(sqlite_study):
    study_dir, url = sqlite_study
    _check_study(url, "sqlite", n=4, workers=2)


def test_the_study_report_lists_every_trial_and_draws_the_plots(sqlite_study):
    study_dir, url = sqlite_study
    import pandas as pd

    frame = pd.read_csv(study_dir / "trials.csv")
    trials = optuna.load_study(study_name="sqlite", storage=url).get_trials()
    assert list(frame["number"]) == [t.number for t in trials]
    assert list(frame["state"]) == [t.state.name for t in trials]
    assert {"param:model.dropout", "param:train.lr", "param:model.dim", "valid:ndcg@10"} <= set(frame.columns)
    assert not any("test" in c for c in frame.columns)
    for name in ("history", "intermediate"):
        assert (study_dir / f"{name}.html").stat().st_size > 1000
        assert (study_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (study_dir / "plotly.min.js").is_file()
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["counts"]["finished"] == 4 and summary["requested_trials"] == 4


def test_the_exported_best_config_refits_to_the_trials_validation_metric(sqlite_study, tmp_path, capsys):
    study_dir, url = sqlite_study
    study = optuna.load_study(study_name="sqlite", storage=url)
    best = max((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    text = (study_dir / "best.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f"Optuna study 'sqlite': trial {best.number} of 4 finished" in header[0]
    assert f"validation ndcg@10 = {best.value:.6f}" in header[1]
    assert "space.yaml (sha256 " in header[2]
    assert any(f"recsys fit --config {study_dir / 'best.yaml'}" in line for line in header)
    run = tmp_path / "refit"
    # the trial ran in a worker process; `recsys fit` here must give the very same numbers
    assert main(["fit", "--config", str(study_dir / "best.yaml"), "--run-dir", str(run)]) == 0
    refit = json.loads((run / "metrics.json").read_text())
    assert refit["valid"] == best.user_attrs["valid"]
    assert refit["valid"]["ndcg@10"] == best.value
    assert "test" in capsys.readouterr().out  # `recsys fit` reports the test metric, the search never did


@pytest.fixture(scope="module")
def postgres():
    import pg_server

    try:
        url, stop = pg_server.start()
    except pg_server.Unavailable as exc:
        reason = f"PostgreSQL server could not be started: {exc}"
        print(reason, file=sys.__stderr__)
        warnings.warn(reason)
        pytest.skip(reason)
    yield url
    stop()


def test_two_workers_share_one_postgresql_study(tiny, postgres):
    tmp, config, space = tiny
    assert main(_tune_args(config, space, "pg", trials=4, workers=2, storage=postgres)) == 0
    _check_study(postgres, "pg", n=4, workers=2)
    assert (tmp / "runs" / "studies" / "pg" / "best.yaml").is_file()
    assert not (tmp / "runs" / "studies" / "pg" / "study.db").exists()


def _poll(url, name):
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials()
    except Exception:  # not created yet, or the database is busy
        return []


def test_a_worker_killed_mid_trial_is_resumed_by_rerunning_the_command(tiny, capsys):
    tmp, config, space = tiny
    slow = tmp / "slow.yaml"  # longer trials, no pruning: the kill lands inside a trial
    slow.write_text(config.read_text().replace("max_epochs: 4", "max_epochs: 8"))
    nopruning = tmp / "nopruning.yaml"
    nopruning.write_text(space.read_text().replace("{type: median, n_startup_trials: 2}", "{type: none}"))
    args = _tune_args(slow, nopruning, "killed", trials=3, workers=1)
    url = f"sqlite:///{tmp / 'runs' / 'studies' / 'killed' / 'study.db'}"
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, "the study ended before the worker could be killed"
        assert time.time() < deadline
        trials = _poll(url, "killed")
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values
                   and (Path(t.user_attrs["run_dir"] + ".partial") / "checkpoints" / "last.ckpt").is_file()]
        if running and any(t.state == TrialState.COMPLETE for t in trials):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    before = {t.number: t for t in _poll(url, "killed")}
    killed = [t for t in before.values() if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    killed = killed[0]
    done_before = {n: (t.value, t.params) for n, t in before.items() if t.state == TrialState.COMPLETE}

    assert main(args) == 0  # the same command again
    assert f"trials [{killed.number}] were left running by dead workers" in capsys.readouterr().out
    # two processes ran trials: the killed one and the re-run
    trials = _check_study(url, "killed", n=3, workers=2, killed={killed.number})
    after = {t.number: t for t in trials}
    assert after[killed.number].state == TrialState.FAIL
    assert "died" in after[killed.number].user_attrs["failed_reason"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state in FINISHED and retry[0].params == killed.params
    # the retry continued the killed run from its last epoch-end checkpoint
    assert retry[0].user_attrs["resumed_from"] == killed.number
    assert retry[0].user_attrs["run_dir"] == killed.user_attrs["run_dir"]
    assert not Path(killed.user_attrs["run_dir"] + ".partial").exists()  # completed in place
    assert all(retry[0].intermediate_values[s] == v for s, v in killed.intermediate_values.items())
    for number, (value, params) in done_before.items():  # no completed trial lost or changed
        assert (after[number].value, after[number].params) == (value, params)
