"""Worker logic with a stand-in for ``fit`` (no training): counting, surplus trials, dead
workers' trials, refusing a changed study, validation-only objective, the pruning callback."""

import subprocess
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from recsys.errors import ConfigError, RecsysError
from recsys.tuning.pruning import PruningCallback
from recsys.tuning.storage import WORKER_ATTR, fail_dead_local_trials, open_storage
from recsys.tuning.study import SurplusTrial, make_objective, open_study, prepare, run_worker

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")

SPACE = """\
params:
  model.dropout: {type: float, low: 0.0, high: 0.5}
  model.dim: {type: categorical, choices: [8, 16]}
sampler: {seed: 1, n_startup_trials: 2}
pruner: {type: none}
"""


class ValidOnly(dict):
    """A run's metrics where reading the test split fails the test."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("test metrics were read during the search")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "test":
            raise AssertionError("test metrics were read during the search")
        return super().get(key, default)


def fake_fit(calls, epoch_s=0.0):
    """Validation NDCG peaks at dropout 0.3 and rises over 3 epochs, which it reports to the
    callbacks as Lightning would; records every config it was asked to fit."""

    def fit(cfg, run_dir, callbacks=()):
        calls.append((cfg, run_dir, callbacks))
        valid = {"ndcg@10": 1.0 - abs(cfg.model.dropout - 0.3), "hr@10": 0.5}
        for epoch in range(3):
            time.sleep(epoch_s)
            trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                                      callback_metrics={"val/ndcg@10": valid["ndcg@10"] * (epoch + 1) / 3})
            for callback in callbacks:
                callback.on_validation_end(trainer, None)
        metrics = ValidOnly(valid=valid, test={"ndcg@10": 99.0}, epochs=3, best_epoch=2, wall_time_s={"train": 1.0})
        return SimpleNamespace(run_dir=run_dir, metrics=metrics)

    return fit


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: fake\nseed: 5\noutput_dir: {tmp_path / 'runs'}\ndata: {{name: none}}\n"
                      "eval: {ks: [10], monitor: ndcg@10}\n")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return config, space


def test_a_worker_stops_at_exactly_n_finished_trials_and_sees_validation_only(files):
    config, space = files
    setup = prepare(config, space, n_trials=5)
    assert setup.name == "none-fake" and setup.storage_url.endswith("runs/studies/none-fake/study.db")
    calls = []
    assert run_worker(setup, 0, fit=fake_fit(calls)) == {"ran": 5, "complete": 5, "pruned": 0, "failed": 0}
    study = optuna.load_study(study_name=setup.name, storage=setup.storage_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    for t, (cfg, run_dir, callbacks) in zip(trials, calls):
        assert t.value == pytest.approx(1.0 - abs(t.params["model.dropout"] - 0.3))
        assert t.user_attrs["valid"] == {"ndcg@10": t.value, "hr@10": 0.5}
        assert set(t.user_attrs) == {"worker", "run_dir", "valid", "epochs", "best_epoch", "train_s"}
        assert "99.0" not in str(t.user_attrs)
        assert run_dir == setup.study_dir / "trials" / f"{t.number:05d}"
        assert (cfg.model.dropout, cfg.model.dim) == (t.params["model.dropout"], t.params["model.dim"])
        assert [type(c).__name__ for c in callbacks] == ["PruningCallback"]
    # the whole study's count, not this worker's: a second worker has nothing left to do
    assert run_worker(setup, 1, fit=fake_fit(calls))["ran"] == 0 and len(calls) == 5
    # asking for more resumes the same study up to the new total
    more = prepare(config, space, n_trials=7)
    assert run_worker(more, 0, fit=fake_fit(calls))["ran"] == 2
    params = [tuple(t.params.items()) for t in study.get_trials()]
    assert len(study.get_trials()) == 7 and len(set(params)) == 7  # the resumed sampler did not replay


def test_the_trial_past_the_last_slot_ends_as_an_empty_surplus_failure(files):
    config, space = files
    setup = prepare(config, space, n_trials=2)
    storage = open_storage(setup.storage_url, 2)
    study = open_study(setup, storage)
    # two trials of other (live) workers hold both slots
    for _ in range(2):
        other = study.ask()
        other.set_user_attr(WORKER_ATTR, {"host": "elsewhere", "pid": 1, "trial": other.number})
    late = study.ask()
    calls = []
    with pytest.raises(SurplusTrial):
        make_objective(setup, fake_fit(calls))(late)
    assert calls == [] and late.params == {}  # nothing sampled, nothing trained
    assert study.get_trials()[2].user_attrs["surplus"] is True


def test_trials_of_a_dead_local_worker_fail_and_are_queued_again_with_their_params(files):
    config, space = files
    setup = prepare(config, space, n_trials=3)
    storage = open_storage(setup.storage_url, 3)
    study = open_study(setup, storage)
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    trial = study.ask()
    trial.suggest_float("model.dropout", 0.0, 0.5)
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": dead.pid, "trial": trial.number})
    alive = study.ask()  # our own process: alive, left alone
    alive.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": 1, "trial": alive.number})
    assert fail_dead_local_trials(study, storage, 3) == [0]
    assert fail_dead_local_trials(study, storage, 3) == []  # only once
    t0, t1, t2 = study.get_trials()
    assert t0.state == TrialState.FAIL and "died" in t0.user_attrs["failed_reason"]
    assert t1.state == TrialState.RUNNING
    assert t2.state == TrialState.WAITING and t2.params == t0.params and t2.system_attrs["failed_trial"] == 0
    assert set(t2.user_attrs) == set()  # the dead run's worker, run_dir and reason stay with it
    # the queued retry is what the next worker runs, with the dead trial's parameters
    study.tell(alive, state=TrialState.FAIL)
    calls = []
    run_worker(setup, 0, fit=fake_fit(calls))
    assert calls[0][0].model.dropout == t0.params["model.dropout"]
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 3


def test_repeated_failures_stop_the_worker_with_the_error(files):
    config, space = files
    setup = prepare(config, space, n_trials=4)

    def broken(cfg, run_dir, callbacks=()):
        raise RuntimeError("loss is NaN")

    with pytest.raises(RecsysError, match="3 trials failed in a row.*RuntimeError: loss is NaN"):
        run_worker(setup, 0, fit=broken)


def test_resuming_with_a_different_space_is_refused(files, tmp_path):
    config, space = files
    run_worker(prepare(config, space, n_trials=1), 0, fit=fake_fit([]))
    changed = tmp_path / "changed.yaml"
    changed.write_text(SPACE.replace("high: 0.5", "high: 0.6"))
    with pytest.raises(ConfigError, match=r"created from other settings .*space.params.model.dropout.high 0.5 -> 0.6"):
        run_worker(prepare(config, changed, n_trials=2), 0, fit=fake_fit([]))
    # a study recorded before a config field existed resumes while the field is at its default
    study = optuna.load_study(study_name="none-fake", storage=prepare(config, space, n_trials=2).storage_url)
    identity = study.user_attrs["identity"]
    del identity["base_config"]["train"]["weight_decay"]
    study.set_user_attr("identity", identity)
    assert run_worker(prepare(config, space, n_trials=2), 0, fit=fake_fit([]))["ran"] == 1
    config.write_text(config.read_text().replace("seed: 5", "seed: 6"))
    with pytest.raises(ConfigError, match=r"base_config.seed 5 -> 6"):
        run_worker(prepare(config, space, n_trials=2), 0, fit=fake_fit([]))


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return len(trial.intermediate_values) >= 2


def test_the_pruning_callback_reports_each_epoch_and_raises_trial_pruned():
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    callback = PruningCallback(trial, "ndcg@10")
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"val/ndcg@10": 0.25})
    callback.on_validation_end(trainer, None)
    trainer.current_epoch, trainer.callback_metrics["val/ndcg@10"] = 1, 0.5
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        callback.on_validation_end(trainer, None)
    assert study.trials[0].intermediate_values == {0: 0.25, 1: 0.5}
    with pytest.raises(KeyError, match="val/ndcg@10 was not logged"):
        callback.on_validation_end(SimpleNamespace(sanity_checking=False, current_epoch=2, callback_metrics={}), None)


def test_a_trial_running_at_the_time_limit_stops_and_runs_first_next_time(files):
    config, space = files
    setup = prepare(config, space, n_trials=3, timeout=2.0)
    calls = []
    assert run_worker(setup, 0, fit=fake_fit(calls, epoch_s=1.5))["ran"] == 0
    study = optuna.load_study(study_name=setup.name, storage=setup.storage_url)
    stopped, queued = study.get_trials()
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["timeout"] is True
    assert 1 <= len(stopped.intermediate_values) < 3  # stopped at the first epoch end past 2 s, not later
    assert queued.state == TrialState.WAITING and queued.params == stopped.params
    assert run_worker(prepare(config, space, n_trials=3), 0, fit=fake_fit(calls))["complete"] == 3
    first = study.get_trials()[1]
    assert first.state == TrialState.COMPLETE and first.params == stopped.params
    assert "timeout" not in first.user_attrs and sorted(first.intermediate_values) == [0, 1, 2]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt("signal 15"), SystemExit(1)], ids=["interrupt", "exit"])
def test_an_interrupted_trial_is_queued_again(files, interrupt):
    """Ctrl-C or SIGTERM: Lightning turns either into SystemExit after its graceful shutdown."""
    config, space = files
    setup = prepare(config, space, n_trials=2)

    def interrupted(cfg, run_dir, callbacks=()):
        raise interrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(setup, 0, fit=interrupted)
    study = optuna.load_study(study_name=setup.name, storage=setup.storage_url)
    stopped, queued = study.get_trials()
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"] is True
    assert queued.state == TrialState.WAITING and queued.params == stopped.params and not queued.user_attrs


def test_a_retried_trial_continues_its_previous_attempts_checkpoint(files):
    config, space = files
    setup = prepare(config, space, n_trials=1)

    def interrupted_after_two_epochs(cfg, run_dir, callbacks=()):
        partial = run_dir.with_name(run_dir.name + ".partial")
        (partial / "checkpoints").mkdir(parents=True)
        (partial / "config.yaml").write_text(cfg.to_yaml())
        (partial / "checkpoints" / "last.ckpt").write_bytes(b"epoch 1")
        for epoch in range(2):
            trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                                      callback_metrics={"val/ndcg@10": 0.1 * (epoch + 1)})
            for callback in callbacks:
                callback.on_validation_end(trainer, None)
        raise KeyboardInterrupt("signal 15")

    with pytest.raises(KeyboardInterrupt):
        run_worker(setup, 0, fit=interrupted_after_two_epochs)
    resumed = []

    def resuming(cfg, run_dir, callbacks=(), resume=False):
        partial = run_dir.with_name(run_dir.name + ".partial")
        resumed.append((resume, (partial / "checkpoints" / "last.ckpt").read_bytes()))
        return fake_fit([])(cfg, run_dir, callbacks)

    assert run_worker(setup, 0, fit=resuming)["complete"] == 1
    assert resumed == [(True, b"epoch 1")]
    first, retry = optuna.load_study(study_name=setup.name, storage=setup.storage_url).get_trials()
    assert retry.user_attrs["resumed_from"] == 0 and retry.params == first.params
    assert retry.user_attrs["run_dir"] == first.user_attrs["run_dir"]  # continued in place
    assert retry.intermediate_values[0] == pytest.approx(0.1)  # the earlier attempt's curve, kept
    assert sorted(retry.intermediate_values) == [0, 1, 2]


def test_the_study_direction_follows_the_monitored_metric():
    from recsys.tuning.study import direction

    assert direction("ndcg@10") == "maximize" and direction("action_accuracy") == "maximize"
    assert direction("action_nll") == "minimize"
