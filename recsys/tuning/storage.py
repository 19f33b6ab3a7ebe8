"""Study storage: Optuna's RDB storage (SQLite by default, PostgreSQL for many machines)
with heartbeats, and the recovery of trials whose worker died.

A worker that dies hard (SIGKILL, out of memory, a pre-empted machine) leaves its trial
RUNNING. Two mechanisms turn such a trial into FAIL and enqueue a retry with the same
parameters (as Optuna's ``RetryHeartbeatStaleTrialCallback`` does, at most ``MAX_RETRY`` times):

- heartbeats: every worker's trial writes a heartbeat every ``HEARTBEAT_S`` seconds; any
  worker, on any machine, fails trials whose heartbeat is older than ``GRACE_S``;
- dead local workers: each trial records ``worker = {host, pid, trial}``; a worker on the
  same host fails at once a RUNNING trial whose process no longer exists, so re-running a
  killed command resumes immediately instead of waiting out the grace period.

A retry is not enqueued once the study already has its requested number of finished trials.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from recsys.errors import ConfigError
from recsys.training.provenance import process_alive

HEARTBEAT_S = 10
GRACE_S = 60
MAX_RETRY = 2
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"

# Optuna >= 4.9 calls the storage's stale-trial callback argument after heartbeats.
_STALE_ARG = ("heartbeat_stale_trial_callback"
              if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage.__init__).parameters
              else "failed_trial_callback")
# Attributes of a trial's own run, not copied into its retry.
_RUN_ATTRS = (WORKER_ATTR, "run_dir", "failed_reason", "error", "timeout", "interrupted", "resumed_from")


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def redact(url: str) -> str:
    """The URL without its password, for logs, headers and the dashboard command."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show nothing secret
        return url.split("@")[-1] if "@" in url else url


def finished_count(trials: list[FrozenTrial]) -> int:
    return sum(t.state in FINISHED for t in trials)


def retry_unless_done(n_trials: int | None) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Queue a failed trial again (WAITING, same parameters), as Optuna's
    ``RetryHeartbeatStaleTrialCallback`` does: ``system_attrs`` ``failed_trial`` (the first
    trial of the chain) and ``retry_history``, at most ``MAX_RETRY`` retries. The user
    attributes of the dead run (worker, run directory, error) are not copied, and nothing is
    queued once the study has ``n_trials`` finished trials."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if n_trials is not None and finished_count(study.get_trials(deepcopy=False)) >= n_trials:
            return
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > MAX_RETRY:
            return
        system_attrs = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                        "retry_history": history}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in _RUN_ATTRS},
            system_attrs=system_attrs,
        ))

    return callback


def open_storage(url: str, n_trials: int | None = None, attempts: int = 5) -> RDBStorage:
    """RDB storage with heartbeats. SQLite waits up to a minute for a lock held by another
    worker instead of failing; the first connection is retried, since workers on several
    machines may create the tables at the same moment."""
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(f"--storage {redact(url)}: expected an SQLAlchemy URL (sqlite:///..., postgresql://...)")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    **{_STALE_ARG: retry_unless_done(n_trials)},
                )
        except ImportError as exc:
            raise ConfigError(f"--storage {redact(url)}: driver missing ({exc}); "
                              "pip install 'recsys[tune]' (psycopg2-binary)") from exc
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def worker_tag(trial_number: int) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "trial": trial_number}


def fail_dead_local_trials(study: optuna.Study, storage: RDBStorage, n_trials: int | None) -> list[int]:
    """FAIL (and retry) RUNNING trials whose recorded worker process on this host is gone.

    Returns the numbers of the trials this call failed. A trial without a ``worker`` tag
    for its own number (it was just asked, or it is a retry that still carries the tag of
    the trial it copies) is left to the heartbeat check."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(tag, dict) or tag.get("trial") != trial.number or tag.get("host") != host:
            continue
        if tag.get("pid") == os.getpid() or process_alive(int(tag.get("pid", 0))):
            continue
        try:  # the attribute first: a finished trial cannot be updated
            storage.set_trial_user_attr(trial._trial_id, "failed_reason", f"worker pid {tag['pid']} on {host} died")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker got there first
            continue
        failed.append(trial.number)
        retry_unless_done(n_trials)(study, storage.get_trial(trial._trial_id))
    return failed


def fail_stale_trials(study: optuna.Study) -> None:
    """Heartbeat check (any host): RUNNING trials silent for more than ``GRACE_S``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
