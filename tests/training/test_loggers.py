"""train.logger: real short fits that write a TensorBoard event file and an MLflow store,
read back with each tool's own reader and checked against the run's CSV log and
metrics.json; curves.png; the error for a tracker whose package is missing."""

import csv
import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

from recsys import rundir
from recsys.config import ExperimentConfig
from recsys.data.synthetic import planted_markov_log
from recsys.errors import ConfigError
from recsys.report.results import config_hash
from recsys.training.curves import epoch_log
from recsys.training.run import fit

EPOCHS = 3


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    # half the next items follow a planted successor, half are uniform: metrics move from
    # epoch to epoch and stay well below 1, so a value read from the wrong epoch shows
    log = planted_markov_log(n_users=300, n_items=60, p_follow=0.5, min_len=5, max_len=15, seed=3)
    path = tmp_path_factory.mktemp("logger-data") / "events.csv"
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)
    return path


def _cfg(events: Path, out: Path, logger: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "tiny", "seed": 3, "output_dir": str(out),
        "data": {"name": "planted", "format": "csv", "path": str(events)},
        "model": {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 10, "dropout": 0.1},
        "train": {"batch_size": 64, "lr": 0.005, "max_epochs": EPOCHS, "patience": 10, "num_threads": 1,
                  "progress_bar": False, "logger": logger},
        "eval": {"ks": [1, 10], "monitor": "ndcg@10"},
    })


def _csv_validation(run: Path, metric: str) -> dict[int, float]:
    """``{epoch: value}`` of ``val/<metric>`` straight from the run's CSV log."""
    with (run / rundir.CSV_LOG).open(newline="") as f:
        return {int(r["epoch"]): float(r[f"val/{metric}"]) for r in csv.DictReader(f) if r[f"val/{metric}"]}


def _check_against_run(run: Path, logged: dict[int, float], metric: str = "ndcg@10") -> None:
    """A tracker's per-epoch validation values equal the CSV log's, and its best equals metrics.json's."""
    expected = _csv_validation(run, metric)
    assert sorted(expected) == list(range(EPOCHS))
    assert len(set(expected.values())) > 1 and max(expected.values()) < 0.9  # moving, not saturated
    assert sorted(logged) == sorted(expected)
    for epoch, value in expected.items():
        assert logged[epoch] == pytest.approx(value, rel=1e-6), epoch
    m = rundir.read_metrics(run)
    assert logged[m["best_epoch"]] == pytest.approx(m["valid"][metric], rel=1e-6)


def test_tensorboard_logs_the_runs_validation_metrics(events, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = fit(_cfg(events, tmp_path, "tensorboard"), tmp_path / "run")
    run = result.run_dir
    assert list((run / rundir.TENSORBOARD_LOGS).glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run / rundir.TENSORBOARD_LOGS))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"val/ndcg@10", "train/loss_epoch", "epoch", "test/ndcg@10", "best/valid/ndcg@10"} <= set(scalars)
    # Lightning logs the epoch number as a scalar at the same step as the epoch's metrics
    epoch_at_step = {e.step: int(e.value) for e in acc.Scalars("epoch")}
    logged = {epoch_at_step[e.step]: e.value for e in acc.Scalars("val/ndcg@10")}
    _check_against_run(run, logged)
    (test,) = acc.Scalars("test/ndcg@10")
    assert test.value == pytest.approx(result.metrics["test"]["ndcg@10"], rel=1e-6)
    losses = {epoch_at_step[e.step]: e.value for e in acc.Scalars("train/loss_epoch")}
    assert losses == pytest.approx({e: v["train/loss_epoch"] for e, v in epoch_log(run).items()}, rel=1e-6)


def test_mlflow_logs_into_a_store_inside_the_run(events, tmp_path, monkeypatch, capfd):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: the run's own store
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (./mlruns)
    result = fit(_cfg(events, tmp_path / "out", "mlflow"), tmp_path / "out" / "run")
    run = result.run_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    shown = "".join(capfd.readouterr())
    assert "MLflow database tables" not in shown and "Experiment with name" not in shown, shown
    tracker = rundir.read_json(run / "logs" / "tracker.json")
    client = MlflowClient(tracking_uri=f"sqlite:///{run / rundir.MLFLOW_STORE}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "planted"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == tracker["run_id"] and found.info.run_name == "run"
    assert found.info.status == "FINISHED"
    assert found.data.params["train.logger"] == "mlflow" and found.data.params["model.dim"] == "16"
    epochs = {m.step: int(m.value) for m in client.get_metric_history(found.info.run_id, "epoch")}
    history = client.get_metric_history(found.info.run_id, "val/ndcg_at_10")  # MLflow allows no '@'
    _check_against_run(run, {epochs[m.step]: m.value for m in history})
    assert found.data.metrics["test/ndcg_at_10"] == pytest.approx(result.metrics["test"]["ndcg@10"], rel=1e-6)


def test_every_trained_run_draws_its_curves(events, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    run = fit(_cfg(events, tmp_path, "csv"), tmp_path / "run").run_dir
    png = run / rundir.CURVES
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1000, 400)
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]  # IHDR intact
    assert matplotlib.image.imread(png).shape[:2] == (400, 1000)
    assert not list(run.glob("*.tmp"))
    # the curves' numbers are the CSV log's, one point per epoch
    log = epoch_log(run)
    assert sorted(log) == list(range(EPOCHS))
    assert {e: v["val/ndcg@10"] for e, v in log.items()} == _csv_validation(run, "ndcg@10")
    assert all("train/loss_epoch" in v for v in log.values())


def test_epoch_log_merges_the_logs_kept_across_a_resume(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "metrics.before-resume-1.csv").write_text(
        "epoch,step,train/loss_epoch,val/ndcg@10\n0,4,,0.1\n0,4,3.5,\n1,9,,0.2\n")
    (logs / "metrics.csv").write_text("epoch,step,train/loss_epoch,val/ndcg@10\n1,9,2.5,\n2,14,,0.3\n2,14,2.0,\n")
    assert epoch_log(tmp_path) == {
        0: {"train/loss_epoch": 3.5, "val/ndcg@10": 0.1},
        1: {"val/ndcg@10": 0.2, "train/loss_epoch": 2.5},
        2: {"val/ndcg@10": 0.3, "train/loss_epoch": 2.0},
    }


def test_a_tracker_without_its_package_fails_before_any_folder(events, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match=r"train.logger=wandb needs the wandb package.*pip install '.*\[wandb\]'"):
        fit(_cfg(events, tmp_path / "out", "wandb"), tmp_path / "out" / "run")
    assert not (tmp_path / "out").exists()


def test_logger_is_validated_and_does_not_change_the_experiment(events, tmp_path):
    with pytest.raises(ConfigError, match="train.logger must be one of"):
        _cfg(events, tmp_path, "neptune")
    base = _cfg(events, tmp_path, "csv")
    assert config_hash(base.with_overrides(["train.logger=tensorboard"])) == config_hash(base)
    assert ExperimentConfig().train.logger == "csv"
