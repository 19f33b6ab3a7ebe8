"""The Lightning callback that feeds a trial's validation curve to the Optuna pruner."""

from __future__ import annotations

import time

import optuna
import pytorch_lightning as pl

from recsys.errors import RecsysError


class TrialTimeout(RecsysError):
    """The study's time budget ran out during this trial (raised at a batch or epoch end)."""


class PruningCallback(pl.Callback):
    """Report ``val/<monitor>`` to the trial after every validation; raise ``TrialPruned``
    when the pruner says so.

    The step is the 0-based epoch, so the median pruner compares trials epoch by epoch and
    Hyperband's resource is epochs. Raising inside ``trainer.fit`` stops the run at once:
    ``recsys.training.run.fit`` leaves its ``.partial`` directory (status ``failed``,
    error ``TrialPruned``) and re-raises, and Optuna records the trial as PRUNED with the
    values reported so far. Only the validation metric is ever read here.

    ``deadline`` (a ``time.monotonic()`` value) bounds a timed study: at the first batch or
    epoch end past it the run stops with ``TrialTimeout``, and the worker queues the trial
    again (to start afresh: a partly trained trial is never scored).
    """

    def __init__(self, trial: optuna.Trial, monitor: str, deadline: float | None = None) -> None:
        self.trial = trial
        self.key = f"val/{monitor}"
        self.deadline = deadline

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.key)
        if value is None:
            raise KeyError(f"{self.key} was not logged; logged: {sorted(trainer.callback_metrics)}")
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} with {self.key} = {float(value):.5f}")
        self._check_deadline(f"after epoch {epoch}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # mid-epoch too: on a slow machine one epoch can outlast the whole budget
        self._check_deadline(f"in epoch {trainer.current_epoch}, batch {batch_idx}")

    def _check_deadline(self, where: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TrialTimeout(f"the study's time budget ran out {where}")
