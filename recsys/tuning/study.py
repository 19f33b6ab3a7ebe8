"""``recsys tune``: an Optuna study over a search space, run by one or more worker processes.

Layout of a study (``<output_dir>/studies/<study>/``, ``output_dir`` from the base config)::

    study.db          SQLite storage (unless --storage names another database)
    trials/<number>/  one ``recsys fit`` run directory per trial (pruned: ``.partial``)
    trials.csv, history.{html,png}, importances.{html,png}, intermediate.{html,png}
    best.yaml         the best trial as a frozen experiment config
    summary.json      study, counts, best trial, its parameters and validation metrics

Counting. ``--trials N`` is the number of *finished* (COMPLETE + PRUNED) trials the whole
study should hold, over every worker, machine and re-run; it is not per worker. Every
worker loops: fail dead trials, stop if N are finished, wait if the missing ones are all
running elsewhere (one may still die and need a retry), else run one more trial. Two
workers can ask for a trial at the same moment when one slot is left; the trial whose
number is higher then sees N trials ahead of it (finished, running or queued) and ends
at once as FAIL with ``surplus = true``, before sampling anything or training. So the
study never runs more than N trials that count; the price of concurrency is, at most, a
few empty FAIL records.

Selection uses validation metrics only: the objective returns ``metrics["valid"][monitor]``
of the trial's best epoch and stores the other validation metrics as a user attribute.
Each trial's run directory also holds test metrics (``recsys fit`` always writes them),
but nothing in this package reads them, and nothing of the test split reaches the study.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from recsys import rundir
from recsys.config import ExperimentConfig
from recsys.errors import ConfigError, RecsysError
from recsys.tuning.space import SearchSpace, load_space
from recsys.tuning.storage import (
    WORKER_ATTR,
    default_storage_url,
    fail_dead_local_trials,
    fail_stale_trials,
    finished_count,
    open_storage,
    redact,
    retry_unless_done,
    worker_tag,
)

POLL_S = 2.0
MAX_CONSECUTIVE_FAILURES = 3
# Settings that may differ between machines of one study without changing any trial.
_MACHINE_LOCAL = ("output_dir", "data.data_dir")


@dataclass(frozen=True)
class TuneSetup:
    """Everything a worker needs, resolved from the command line."""

    config_path: Path
    space_path: Path
    base: ExperimentConfig
    space: SearchSpace
    name: str
    study_dir: Path
    storage_url: str
    n_trials: int | None
    timeout: float | None

    @property
    def start(self) -> ExperimentConfig:
        """The config every trial starts from: base + the space's fixed overrides."""
        return self.space.config_for(self.base, {})

    @property
    def monitor(self) -> str:
        return self.start.eval.monitor


def prepare(config: str | Path, space: str | Path, n_trials: int | None = None, timeout: float | None = None,
            storage: str | None = None, study: str | None = None) -> TuneSetup:
    if n_trials is None and timeout is None:
        raise ConfigError("recsys tune needs --trials N or --timeout SECONDS (or both)")
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    base = ExperimentConfig.from_yaml(config)
    parsed = load_space(space, base)
    name = study or f"{base.data.name}-{base.name}"
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--study {name!r}: a study name is a plain folder name")
    study_dir = Path(base.output_dir) / "studies" / name
    url = storage or default_storage_url(study_dir)
    return TuneSetup(Path(config), Path(space), base, parsed, name, study_dir, url, n_trials, timeout)


# ---- the study ------------------------------------------------------------------------------


def _sampler(setup: TuneSetup, worker: int, n_existing: int) -> optuna.samplers.TPESampler:
    """Seeded TPE. The seed mixes the space's seed (default: the config's), the worker index
    and the number of trials already in the study, so parallel workers and a resumed study
    do not replay the random start-up trials that were already run. A fresh single-worker
    study is reproducible from its seed."""
    seed = setup.space.seed if setup.space.seed is not None else setup.base.seed
    mixed = int(np.random.SeedSequence([seed, worker, n_existing]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=mixed, n_startup_trials=setup.space.n_startup_trials)


def _pruner(setup: TuneSetup) -> optuna.pruners.BasePruner:
    spec = dict(setup.space.pruner)
    kind = spec.pop("type")
    if kind == "median":
        return optuna.pruners.MedianPruner(**spec)
    if kind == "hyperband":
        spec.setdefault("max_resource", setup.start.train.max_epochs)
        return optuna.pruners.HyperbandPruner(**spec)
    return optuna.pruners.NopPruner()


def direction(monitor: str) -> str:
    """Ranking metrics and most next-action metrics grow; ``action_nll`` shrinks."""
    from recsys import config

    return "minimize" if getattr(config, "ACTION_MONITORS", {}).get(monitor) == "min" else "maximize"


def _identity(setup: TuneSetup) -> dict[str, Any]:
    """What a study is: re-running with a different base config or space is refused."""
    base = setup.base.to_dict()
    for key in _MACHINE_LOCAL:
        section, _, leaf = key.rpartition(".")
        (base[section] if section else base).pop(leaf, None)
    return {"base_config": base, "space": setup.space.to_dict(), "monitor": setup.monitor}


def open_study(setup: TuneSetup, storage, worker: int = 0) -> optuna.Study:
    n_existing = 0
    try:
        n_existing = len(optuna.load_study(study_name=setup.name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        pass
    study = optuna.create_study(
        storage=storage,
        study_name=setup.name,
        direction=direction(setup.monitor),
        sampler=_sampler(setup, worker, n_existing),
        pruner=_pruner(setup),
        load_if_exists=True,
    )
    identity = _identity(setup)
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("config_file", str(setup.config_path))
        study.set_user_attr("space_file", str(setup.space_path))
    else:
        changed = _changes(recorded, identity)
        if changed:
            raise ConfigError(
                f"study {setup.name!r} in {redact(setup.storage_url)} was created from other settings "
                f"({study.user_attrs.get('config_file')}, {study.user_attrs.get('space_file')}): "
                f"{'; '.join(changed[:8])}; resume it with the same files, or start a new study with --study NAME"
            )
    return study


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs. A config field this version
    added (absent from the record) counts only when it is not at its default, so a newer
    ``recsys`` resumes an older study."""
    old, new = _flat(recorded), _flat(current)
    defaults = _flat({"base_config": ExperimentConfig().to_dict()})
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old and key in defaults and new[key] == defaults[key]:
            continue
        if key not in new and key.startswith("base_config."):
            continue  # a field this version no longer has
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            out.append(f"{key} {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return out


# ---- one worker -----------------------------------------------------------------------------


class SurplusTrial(RecsysError):
    """A trial asked for after the study's last slot was taken by another worker."""


def validation_only(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's metrics the search may see: validation numbers and epochs."""
    return {
        "valid": dict(metrics["valid"]),
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "train_s": (metrics.get("wall_time_s") or {}).get("train"),
    }


def make_objective(setup: TuneSetup, fit=None, deadline: float | None = None):
    """The function Optuna calls per trial. ``fit`` is injectable for tests; ``deadline``
    (``time.monotonic()``) stops a trial still running then, at its next batch end."""
    if fit is None:
        from recsys.training.run import fit
    from recsys.tuning.pruning import PruningCallback, TrialTimeout

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_tag(trial.number))
        if setup.n_trials is not None:
            ahead = [t for t in trial.study.get_trials(deepcopy=False)
                     if t.number < trial.number
                     and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)]
            if len(ahead) >= setup.n_trials:
                trial.set_user_attr("surplus", True)
                raise SurplusTrial(f"trial {trial.number}: {len(ahead)} trials already hold the {setup.n_trials} slots")
        params = setup.space.suggest(trial)
        cfg = setup.space.config_for(setup.base, params)
        run_dir = _continue_previous_attempt(setup, trial, cfg)
        resume = run_dir is not None
        run_dir = run_dir or setup.study_dir / "trials" / f"{trial.number:05d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            result = fit(cfg, run_dir, callbacks=[PruningCallback(trial, cfg.eval.monitor, deadline)],
                         **({"resume": True} if resume else {}))
        except optuna.TrialPruned:
            raise
        except TrialTimeout:
            trial.set_user_attr("timeout", True)
            raise
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM (Lightning exits after either)
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        seen = validation_only(result.metrics)
        for key, value in seen.items():
            trial.set_user_attr(key, value)
        return float(seen["valid"][cfg.eval.monitor])

    return objective


def _continue_previous_attempt(setup: TuneSetup, trial: optuna.Trial, cfg: ExperimentConfig) -> Path | None:
    """A retried trial (time limit, interrupt, dead worker) whose previous attempt left an
    unfinished run on this machine continues it from its last epoch-end checkpoint, as
    ``recsys fit --resume`` does (same result as an uninterrupted run), instead of starting
    over. The run stays in the previous attempt's folder (Lightning's checkpoint state holds
    its paths), and the validation values that attempt reported are reported again.
    Returns the run directory to resume, or None."""
    trials = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
    history = trials[trial.number].system_attrs.get("retry_history") or []
    previous = trials.get(history[-1]) if history else None
    if previous is None or not previous.user_attrs.get("run_dir"):
        return None
    run_dir = Path(previous.user_attrs["run_dir"])
    partial = rundir.partial_dir(run_dir)
    if not rundir.stored_config_is(partial, cfg) or not rundir.has_last_checkpoint(partial):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the resumed run reports its first epoch again: ignored
        for step, value in sorted(previous.intermediate_values.items()):
            trial.report(value, step)
    trial.set_user_attr("resumed_from", previous.number)
    return run_dir


def _requeue_interrupted(study: optuna.Study, storage, n_trials: int | None) -> None:
    """This process's interrupted trial: FAIL (Optuna leaves it RUNNING when Lightning turned
    the interrupt into ``SystemExit``) and queued again with its parameters."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        tag = t.user_attrs.get(WORKER_ATTR) or {}
        if tag.get("pid") != os.getpid() or tag.get("trial") != t.number:
            continue
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        elif not t.user_attrs.get("interrupted"):
            continue
        retry_unless_done(n_trials)(study, storage.get_trial(t._trial_id))


def run_worker(setup: TuneSetup, worker: int = 0, fit=None) -> dict[str, int]:
    """Pull trials until the study has ``n_trials`` finished ones or ``timeout`` passes.

    ``timeout`` bounds the worker's wall time: no trial starts after it, and a trial still
    running then stops at its next batch end, is recorded FAIL (``timeout = true``) and is
    queued again with its parameters, so re-running the command runs it first. A trial
    interrupted by Ctrl-C or SIGTERM is queued again the same way. Returns
    what this worker did: trials run, and of them complete / pruned / failed."""
    storage = open_storage(setup.storage_url, setup.n_trials)
    study = open_study(setup, storage, worker)
    deadline = time.monotonic() + setup.timeout if setup.timeout is not None else None
    objective = make_objective(setup, fit, deadline)
    done: list[FrozenTrial] = []
    failures = 0
    while True:
        fail_dead_local_trials(study, storage, setup.n_trials)
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if setup.n_trials is not None and finished_count(trials) >= setup.n_trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        if setup.n_trials is not None:
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if not waiting and finished_count(trials) + running >= setup.n_trials:
                # Every missing trial is running elsewhere; stay in case one dies and is retried.
                time.sleep(POLL_S)
                continue
        ran: list[FrozenTrial] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                # gc after a real trial: Lightning leaves reference cycles holding tensors
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=fit is None,
                               callbacks=[lambda _study, trial: ran.append(trial)])
        except (KeyboardInterrupt, SystemExit) as exc:
            _requeue_interrupted(study, storage, setup.n_trials)
            raise KeyboardInterrupt(str(exc)) from exc
        if not ran:
            continue
        trial = ran[0]
        if trial.user_attrs.get("surplus"):
            continue
        if trial.user_attrs.get("timeout"):
            retry_unless_done(setup.n_trials)(study, trial)
            print(f"worker {worker}: trial {trial.number} stopped at the time limit; queued again for the next run",
                  flush=True)
            break
        done.append(trial)
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise RecsysError(
                f"worker {worker}: {failures} trials failed in a row, stopping; last error: "
                f"{trial.user_attrs.get('error', 'see the log above')}"
            )
    return {
        "ran": len(done),
        "complete": sum(t.state == TrialState.COMPLETE for t in done),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "failed": sum(t.state == TrialState.FAIL for t in done),
    }


# ---- the command ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneResult:
    study_dir: Path
    name: str
    storage_url: str
    counts: dict[str, int]
    best: dict[str, Any] | None
    files: list[Path]
    worker_errors: list[str]
    complete: bool


def _worker_command(setup: TuneSetup, index: int, timeout: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "recsys.cli", "tune", "--config", str(setup.config_path),
           "--space", str(setup.space_path), "--storage", setup.storage_url, "--study", setup.name,
           "--worker-index", str(index)]
    if setup.n_trials is not None:
        cmd += ["--trials", str(setup.n_trials)]
    if timeout is not None:
        cmd += ["--timeout", f"{max(timeout, 1e-3):.3f}"]
    return cmd


def _run_processes(setup: TuneSetup, workers: int) -> list[str]:
    """K worker processes running this command's worker mode against the same storage.
    SIGTERM to this process is passed on to them (each then ends its trial as FAIL)."""
    procs = [subprocess.Popen(_worker_command(setup, i, setup.timeout)) for i in range(workers)]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, forward)
    errors = []
    try:
        for i, p in enumerate(procs):
            rc = p.wait()
            if rc != 0:
                how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
                errors.append(f"worker {i} (pid {p.pid}) {how}")
    except KeyboardInterrupt:
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return errors


def tune(setup: TuneSetup, workers: int = 1, fit=None) -> TuneResult:
    """Create or resume the study, run ``workers`` workers, then write the report and the
    best config. ``workers == 1`` runs the worker in this process."""
    from recsys.tuning.report import export_best, write_report

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    setup.study_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(setup.storage_url, setup.n_trials)
    study = open_study(setup, storage)
    revived = fail_dead_local_trials(study, storage, setup.n_trials)
    if revived:
        print(f"study {setup.name}: trials {revived} were left running by dead workers; marked FAIL, queued again",
              flush=True)
    errors: list[str] = []
    interrupted = None
    try:
        if workers == 1:
            run_worker(setup, 0, fit)
        else:
            errors = _run_processes(setup, workers)
    except KeyboardInterrupt as exc:
        interrupted = exc
    trials = study.get_trials(deepcopy=False)
    files = write_report(study, setup)
    best = export_best(study, setup)
    if best is not None:
        files.append(setup.study_dir / "best.yaml")
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    counts["finished"] = finished_count(trials)
    complete = setup.n_trials is None or counts["finished"] >= setup.n_trials
    summary = {
        "study": setup.name,
        "storage": redact(setup.storage_url),
        "config": str(setup.config_path),
        "space": str(setup.space_path),
        "monitor": f"valid {setup.monitor}",
        "requested_trials": setup.n_trials,
        "counts": counts,
        "best": best,
        "worker_errors": errors,
    }
    (setup.study_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if interrupted is not None:
        raise interrupted
    return TuneResult(setup.study_dir, setup.name, setup.storage_url, counts, best, files, errors, complete)


def worker_main(setup: TuneSetup, index: int) -> int:
    """``recsys tune --worker-index I``: one worker of a parent ``recsys tune --workers K``."""
    done = run_worker(setup, index)
    print(f"worker {index} (pid {os.getpid()}): {done['ran']} trials, {done['complete']} complete, "
          f"{done['pruned']} pruned, {done['failed']} failed", flush=True)
    return 0
