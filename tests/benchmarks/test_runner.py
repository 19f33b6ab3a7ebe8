"""benchmarks/runner.py: the matrix, config hashes, skip-if-complete, crashes, --force, one real run."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_runner", ROOT / "benchmarks" / "runner.py")
runner = importlib.util.module_from_spec(spec)
sys.modules["bench_runner"] = runner
spec.loader.exec_module(runner)
common = sys.modules["_common"]  # benchmarks/_common.py, which runner.py imports: children are run there

N_ITEMS = 20


def _experiments(tmp_path: Path, log: Path | None = None) -> Path:
    """Two datasets: 'tiny' (a small planted CSV log) and 'other'; 'other' has no data on purpose."""
    log = log or tmp_path / "events.csv"
    exps = tmp_path / "experiments"
    for dataset in ("tiny", "other"):
        (exps / dataset).mkdir(parents=True)
        (exps / dataset / "sasrec-ce.yaml").write_text(f"""
name: sasrec-ce
seed: 42
data: {{name: {dataset}, format: csv, path: {log}, user_col: user_id, item_col: item_id, time_col: timestamp}}
model: {{dim: 16, n_blocks: 1, n_heads: 1, max_len: 8, dropout: 0.0}}
train: {{batch_size: 32, lr: 0.01, max_epochs: 2, patience: 5}}
eval: {{ks: [1, 10], monitor: ndcg@10}}
""")
    return exps


def _write_log(path: Path, n_users: int = 60) -> None:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        start, length = rng.integers(N_ITEMS), rng.integers(4, 9)
        for j in range(length):
            lines.append(f"u{u},i{(start + j) % N_ITEMS},{1000 * u + j}")
    path.write_text("\n".join(lines) + "\n")


def _fake_complete(cell, results: Path, overrides=()) -> Path:
    """A finished run directory as `recsys fit` + the runner leave it, without training."""
    cfg = runner.resolve_config(cell, list(overrides))
    run_dir = cell.run_dir(results)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text('{"status": "complete"}')
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    (run_dir / "ranks.npz").write_bytes(b"")
    (run_dir / "metrics.json").write_text("{}")
    doc = {"config_hash": runner.config_hash(cfg)}
    (run_dir / "result.json").write_text(json.dumps(doc))
    return run_dir


def test_plan_is_seed_major_and_skips_excluded(tmp_path):
    exps = _experiments(tmp_path)
    (exps / "taobao-sample").mkdir()
    (exps / "taobao-sample" / "sasrec-ce.yaml").write_text("name: x\n")
    paths = runner.discover(exps)
    assert [p.parent.name for p in paths] == ["other", "tiny"]  # taobao-sample is not a benchmark
    assert [p.parent.name for p in runner.discover(exps, datasets=["taobao-sample"])] == ["taobao-sample"]
    cells = runner.plan(paths, [1, 2])
    assert [c.seed for c in cells] == [1, 1, 2, 2]
    assert cells[0].run_dir(tmp_path / "r") == tmp_path / "r" / cells[0].dataset / "sasrec-ce" / "seed1"


def test_config_hash_ignores_cosmetics_but_not_results(tmp_path):
    cell = runner.plan(runner.discover(_experiments(tmp_path), ["tiny"]), [1])[0]
    base = runner.resolve_config(cell, [])
    assert base.seed == 1 and base.train.progress_bar is False
    h = runner.config_hash(base)
    assert runner.config_hash(base.with_overrides(["output_dir=/elsewhere", "train.progress_bar=true"])) == h
    assert runner.config_hash(base.with_overrides(["train.lr=0.5"])) != h
    # a field added later hashes as before at its old-behaviour value, and differently otherwise
    assert runner.config_hash(base.with_overrides(["train.negatives_per=batch"])) == h
    assert runner.config_hash(base.with_overrides(["train.negatives_per=position"])) != h
    assert runner.config_hash(base.with_overrides(["seed=2"])) != h
    assert runner.config_hash(base.with_overrides(["train.num_threads=2", "eval.batch_size=7"])) == h
    assert runner.config_hash(base.with_overrides(["seed=2"]), with_seed=False) == runner.config_hash(base, False)


def test_cell_status_complete_stale_crashed_recoverable(tmp_path):
    cell = runner.plan(runner.discover(_experiments(tmp_path), ["tiny"]), [1])[0]
    results = tmp_path / "results"
    expected = runner.config_hash(runner.resolve_config(cell, []))
    run_dir = cell.run_dir(results)
    assert runner.cell_status(run_dir, expected) == "missing"
    # a crash leaves only <run_dir>.partial, with status failed: never complete
    partial = run_dir.with_name(run_dir.name + ".partial")
    partial.mkdir(parents=True)
    (partial / "status.json").write_text('{"status": "failed", "error": "boom"}')
    assert runner.cell_status(run_dir, expected) == "missing"
    _fake_complete(cell, results)
    assert runner.cell_status(run_dir, expected) == "complete"
    assert runner.cell_status(run_dir, "another-config") == "stale"
    (run_dir / "result.json").unlink()  # the run finished, the runner died before writing its result
    assert runner.cell_status(run_dir, expected) == "recoverable"
    assert runner.cell_status(run_dir, "another-config") == "stale"
    (run_dir / "result.json").write_text("{}")
    # a field the library gained after the run (absent from its config.yaml, default value) is not a change
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    del stored["data"]["split"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert runner.cell_status(run_dir, expected) == "complete"
    stored["data"]["split_quantile"] = 0.5  # a changed value is
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert runner.cell_status(run_dir, expected) == "stale"
    (run_dir / "status.json").write_text('{"status": "running"}')
    assert runner.cell_status(run_dir, expected) == "missing"
    assert [runner.todo_action(s, False) for s in ("complete", "recoverable", "stale", "missing")] == [
        None, "recover", "run", "run"]
    assert runner.todo_action("complete", True) == "run"


def test_main_skips_complete_cells_and_force_redoes_them(tmp_path, monkeypatch, capsys):
    exps = _experiments(tmp_path)
    results = tmp_path / "results"
    calls = []

    def fake_run(cell, results_dir, overrides, quick):
        calls.append((cell.dataset, cell.seed))
        _fake_complete(cell, results_dir, overrides)
        return {"test": {"ndcg@10": 0.5, "hr@10": 0.6}, "epochs": 1, "best_epoch": 0,
                "wall_time_s": {"train": 1.0, "process": 2.0}}

    monkeypatch.setattr(runner, "run_cell", fake_run)
    args = ["--experiments", str(exps), "--results", str(results), "--datasets", "tiny", "--no-render"]
    cells = runner.plan(runner.discover(exps, ["tiny"]), [1])
    _fake_complete(cells[0], results, ["train.num_threads=1"])  # seed 1 already done
    assert runner.main(args + ["--seeds", "1", "2"]) == 0
    assert calls == [("tiny", 2)]
    calls.clear()
    assert runner.main(args + ["--seeds", "1", "2"]) == 0 and calls == []  # everything complete now
    assert "2 cells, 2 complete, 0 to do" in capsys.readouterr().out
    assert runner.main(args + ["--seeds", "1", "2", "--force"]) == 0
    assert calls == [("tiny", 1), ("tiny", 2)]
    calls.clear()
    # another thread count schedules the same experiment: nothing is redone
    assert runner.main(args + ["--seeds", "1", "--threads", "2"]) == 0 and calls == []
    # a changed config value makes the old results stale: they are redone
    assert runner.main(args + ["--seeds", "1", "--override", "train.lr=0.5"]) == 0 and calls == [("tiny", 1)]


def test_failed_run_is_reported_and_never_complete(tmp_path, capsys):
    exps = _experiments(tmp_path, log=tmp_path / "absent.csv")  # the data file does not exist
    results = tmp_path / "results"
    rc = runner.main(["--experiments", str(exps), "--results", str(results), "--datasets", "other",
                      "--seeds", "3", "--no-render"])
    assert rc == 1
    assert "FAILED other/sasrec-ce seed 3" in capsys.readouterr().err
    run_dir = results / "other" / "sasrec-ce" / "seed3"
    # the data failed before training started: no run directory, not even a .partial (issue 23)
    assert not run_dir.exists() and not run_dir.with_name("seed3.partial").exists()
    assert runner.cell_status(run_dir, "anything") == "missing"


@pytest.mark.slow
def test_real_run_writes_result_with_provenance(tmp_path):
    log = tmp_path / "events.csv"
    _write_log(log)
    exps = _experiments(tmp_path, log)
    results = tmp_path / "results"
    args = ["--experiments", str(exps), "--results", str(results), "--datasets", "tiny", "--seeds", "5",
            "--no-render"]
    assert runner.main(args) == 0
    run_dir = results / "tiny" / "sasrec-ce" / "seed5"
    result = json.loads((run_dir / "result.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["seed"] == 5 and result["dataset"] == "tiny" and result["config"] == "sasrec-ce"
    assert result["test"] == metrics["test"] and result["split"] == "loo"
    assert result["dataset_fingerprint"] == metrics["dataset"]["fingerprint"] and len(result["dataset_fingerprint"]) == 64
    cfg = runner.resolve_config(runner.plan(runner.discover(exps, ["tiny"]), [5])[0], ["train.num_threads=1"])
    assert result["config_hash"] == runner.config_hash(cfg)
    assert result["overrides"] == ["train.num_threads=1"] and result["torch_threads"] == 1
    assert {"torch", "numpy", "python"} <= set(result["versions"]) and result["git_commit"]
    assert result["hardware"]["cpus"] >= 1 and result["wall_time_s"]["process"] > 0
    assert 0 < result["cpu_time_s"]["train"] <= result["cpu_time_s"]["total"] <= result["cpu_time_s"]["process"]
    ranks = np.load(run_dir / "ranks.npz")["test"]
    assert np.mean(ranks <= 10) == pytest.approx(result["test"]["hr@10"])
    # a second invocation skips it
    assert runner.main(args) == 0
    assert json.loads((run_dir / "result.json").read_text())["finished_at"] == result["finished_at"]
    shutil.rmtree(run_dir / "checkpoints")  # results stay small: checkpoints are not needed to be complete
    assert runner.cell_status(run_dir, result["config_hash"]) == "complete"


def test_time_epochs_estimate(tmp_path, monkeypatch):
    exps = _experiments(tmp_path)
    results = tmp_path / "results"
    done = results / "tiny" / "sasrec-ce"
    for seed, epochs in ((1, 30), (2, 40)):  # finished results say 35 epochs per run for 'tiny'
        (done / f"seed{seed}").mkdir(parents=True)
        (done / f"seed{seed}" / "result.json").write_text(json.dumps({"epochs": epochs}))

    def fake_run(command, **kwargs):  # what `recsys fit ... train.max_epochs=1` would leave behind
        assert "--run-dir" in command
        run_dir = Path(command[command.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"wall_time_s": {"train": 10.0, "total": 12.0},
                                                          "cpu_time_s": {"train": 4.0, "total": 5.0}}))
        return common.Finished(list(command), 0, 12.0, 5.0, 100.0, kwargs.get("log"))

    monkeypatch.setattr(runner, "run_and_wait", fake_run)
    doc = runner.time_epochs(runner.discover(exps), [], results, seeds=3, assume_epochs=50)
    by = {r["dataset"]: r for r in doc["configs"]}
    assert by["tiny"]["epochs_per_run"] == 35 and by["tiny"]["per_seed_s"] == 10 * 35 + 2
    # no results for 'other': 50 epochs are assumed, capped by its config's max_epochs (2)
    assert by["other"]["epochs_from"] == "assumed" and by["other"]["per_seed_s"] == 10 * 2 + 2
    assert doc["total_s"] == 3 * (352 + 22)
    assert json.loads((results / "epoch_times.json").read_text())["total_s"] == doc["total_s"]
    # one thread: CPU seconds (what an idle core takes), not the wall time of a busy machine
    doc = runner.time_epochs(runner.discover(exps), ["train.num_threads=1"], results, seeds=3, assume_epochs=50)
    by = {r["dataset"]: r for r in doc["configs"]}
    assert by["tiny"]["basis"] == "cpu" and by["tiny"]["per_seed_s"] == 4 * 35 + 1
    assert by["other"]["per_seed_s"] == 4 * 2 + 1 and by["other"]["epoch_wall_s"] == 10
    # re-timing one config keeps the other's row from the file taken with the same overrides
    tiny = [p for p in runner.discover(exps) if p.parent.name == "tiny"]
    doc = runner.time_epochs(tiny, ["train.num_threads=1"], results, seeds=3, assume_epochs=50)
    assert sorted(r["dataset"] for r in doc["configs"]) == ["other", "tiny"] and doc["total_s"] == 3 * (141 + 9)
    doc = runner.time_epochs(tiny, ["train.num_threads=2"], results, seeds=3, assume_epochs=50)
    assert [r["dataset"] for r in doc["configs"]] == ["tiny"]  # other settings: nothing carried over


def _unfinished(cell, results: Path, status: dict, checkpoint: bool = True, overrides=()) -> Path:
    """``<run_dir>.partial`` as an interrupted `recsys fit` leaves it."""
    partial = cell.run_dir(results).with_name(f"seed{cell.seed}.partial")
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text(runner.resolve_config(cell, list(overrides)).to_yaml())
    (partial / "status.json").write_text(json.dumps(status))
    if checkpoint:
        (partial / "checkpoints").mkdir()
        (partial / "checkpoints" / "last.ckpt").write_bytes(b"state")
    return partial


def test_unfinished_runs_are_resumed_restarted_or_left_alone(tmp_path, monkeypatch, capsys):
    cell = runner.plan(runner.discover(_experiments(tmp_path), ["tiny"]), [1])[0]
    expected = runner.config_hash(runner.resolve_config(cell, []))
    run_dir = cell.run_dir(tmp_path / "r")
    assert runner.unfinished_action(run_dir, expected) == "fresh"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: the run was killed outright
    cases = [
        ({"status": "interrupted", "resumable": True}, True, (), "resume"),
        ({"status": "running", "pid": dead.pid}, True, (), "resume"),
        ({"status": "running", "pid": os.getpid()}, True, (), "busy"),  # a live process owns it
        ({"status": "interrupted"}, False, (), "restart"),  # stopped before its first epoch ended
        ({"status": "failed", "error": "boom"}, True, (), "restart"),
        ({"status": "interrupted"}, True, ("train.lr=0.5",), "restart"),  # the config changed since
    ]
    for status, checkpoint, overrides, want in cases:
        partial = _unfinished(cell, tmp_path / "r", status, checkpoint, overrides)
        assert runner.unfinished_action(run_dir, expected) == want, status
        shutil.rmtree(partial)

    commands = []
    results = tmp_path / "results"

    def fake_run(command, **kwargs):  # the finished run directory is all the runner reads back
        commands.append(command)
        cell.run_dir(results).mkdir(parents=True, exist_ok=True)
        return common.Finished(list(command), 0, 1.0, 1.0, 100.0, kwargs.get("log"))

    monkeypatch.setattr(common, "run_and_wait", fake_run)
    monkeypatch.setattr(runner, "build_result", lambda *a: {"ok": True})
    partial = _unfinished(cell, results, {"status": "interrupted"}, overrides=["train.num_threads=1"])
    assert runner.main(["--experiments", str(tmp_path / "experiments"), "--results", str(results), "--datasets", "tiny",
                        "--seeds", "1", "--dry-run"]) == 0
    assert "missing      resume   tiny/sasrec-ce seed 1" in capsys.readouterr().out  # the plan says so
    runner.run_cell(cell, results, [], quick=False)
    assert commands[-1][-2:] == ["--resume", str(cell.run_dir(results))] and partial.exists()
    (partial / "status.json").write_text('{"status": "failed"}')
    runner.run_cell(cell, results, [], quick=False)
    assert "--config" in commands[-1] and not partial.exists()  # deleted, started over
    _unfinished(cell, results, {"status": "running", "pid": os.getpid()})
    with pytest.raises(RuntimeError, match="running process"):
        runner.run_cell(cell, results, [], quick=False)
