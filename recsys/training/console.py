"""What a run shows while it trains: one progress bar at a time and one line per epoch.

``quiet()`` hides what a user cannot act on: Lightning's banners ("GPU available", TPU,
HPU), its LitLogger and litmodels adverts, its "`Trainer.fit` stopped" and "graceful
shutdown" notes, the deprecation warnings of the libraries under it, and the INFO chatter
of MLflow's store. Warnings about the user's own data or settings still show.

``EpochConsole`` draws a tqdm bar for each epoch's training batches (with its ETA), then
one for its validation, each erased when done, and prints one line per epoch::

    epoch 3  loss 7.1234  valid ndcg@10 0.0412 hr@10 0.0710  12.3s  best

``loss`` is the epoch's mean training loss and the valid numbers are the epoch's
validation metrics: the very values the run's CSV log (``logs/metrics.csv``) records;
``best`` marks the epoch the run would keep so far (``best_epoch``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl

from recsys.training.callbacks import best_epoch

# Loggers whose INFO lines are banners and progress notes, not news for the user.
_CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "mlflow", "alembic")
# Lightning's "Experiment ... not found. Creating it." is a WARNING for a new MLflow run.
_CHATTY_WARNING_LOGGERS = ("pytorch_lightning.loggers.mlflow",)
# Libraries whose deprecation notices concern their own internals, not recsys's users.
_LIBRARIES = r"(pytorch_lightning|lightning_fabric|lightning_utilities|lightning|torch|torchmetrics|mlflow|tensorboard|" \
             r"google\.protobuf|wandb|pkg_resources)(\..*)?$"
# Lightning warnings about settings recsys chose on purpose.
_NOISE = (
    # log_every_n_steps=10 on a log with fewer batches: the epoch means are logged all the same
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # the data module builds its batches in the main process on purpose (seeded, sharded)
    r"The '\w+_dataloader' does not have many workers",
    # MLflow allows no '@': recsys.training.loggers renames the metrics itself
    r"MLFlow only allows",
    # the run's logs/ folder holds the trackers' files and the logs a resume keeps, by design
    # (the CSV logger removes only its own metrics.csv, which a resume has moved aside)
    r"Experiment logs directory .* exists and is not empty",
    # a resume continues in the folder that holds the run's checkpoints, on purpose
    r"Checkpoint directory .* exists and is not empty",
)


@contextmanager
def quiet() -> Iterator[None]:
    """Hide banners, adverts and library deprecation warnings while the block runs."""
    levels = {}
    for name, level in [(n, logging.WARNING) for n in _CHATTY_LOGGERS] + [(n, logging.ERROR)
                                                                          for n in _CHATTY_WARNING_LOGGERS]:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=_LIBRARIES)
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def shown_metrics(monitor: str, names: list[str]) -> list[str]:
    """The validation metrics an epoch line shows: the monitored one first, then NDCG and HR
    at the monitored cut-off (at 10, or the smallest logged, for a next-action monitor)."""
    ranked = [n for n in names if re.fullmatch(r"(hr|ndcg|mrr)@\d+", n)]
    if "@" in monitor:
        k = monitor.split("@")[1]
    else:
        ks = sorted({int(n.split("@")[1]) for n in ranked})
        k = "10" if 10 in ks else (str(ks[0]) if ks else "")
    extra = [f"{m}@{k}" for m in ("ndcg", "hr") if f"{m}@{k}" in names and f"{m}@{k}" != monitor]
    return ([monitor] if monitor in names else []) + extra


def epoch_line(epoch: int, loss: float | None, valid: Mapping[str, float], monitor: str, seconds: float | None,
               best: bool) -> str:
    """``epoch 3  loss 7.1234  valid ndcg@10 0.0412 hr@10 0.0710  12.3s  best``."""
    parts = [f"epoch {epoch}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    names = shown_metrics(monitor, list(valid))
    if names:
        parts.append("valid " + " ".join(f"{n} {valid[n]:.4f}" for n in names))
    if seconds is not None:
        parts.append(f"{seconds:.1f}s")
    if best:
        parts.append("best")
    return "  ".join(parts)


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class EpochConsole(pl.Callback):
    """Progress bars (``bar``) and a line per epoch on rank 0; see the module docstring.

    ``monitor`` / ``mode`` name the validation metric that picks the best epoch, as the run
    does (``eval.monitor``); ``patience`` is early stopping's, for the line saying why
    training stopped."""

    def __init__(self, monitor: str, mode: str = "max", patience: int | None = None, bar: bool = True) -> None:
        self.monitor, self.mode, self.patience, self.bar = monitor, mode, patience, bar
        self._tqdm: Any = None
        self._epoch_started: float | None = None
        self._last_postfix = 0.0

    # ---- bars ----------------------------------------------------------------------------
    def _open(self, trainer: pl.Trainer, total: int | float, desc: str) -> None:
        self._close()
        if not self.bar or not trainer.is_global_zero:
            return
        from tqdm import tqdm  # plain text: in a notebook, tqdm.auto would want ipywidgets

        total = None if total == float("inf") else int(total)
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError, AttributeError):  # not a terminal (a pipe, a file, a notebook)
            columns = 0
        # a terminal follows its width; a pipe, or a pseudo-terminal that reports a 0 x 0
        # screen (where tqdm would hide the bar as off-screen), gets a fixed size
        width = {"dynamic_ncols": True} if columns > 0 else {"ncols": 100, "nrows": 24}
        self._tqdm = tqdm(total=total, desc=desc, leave=False, unit="batch", file=sys.stderr, **width)

    def _close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def _advance(self, loss: Any = None) -> None:
        if self._tqdm is None:
            return
        self._tqdm.update(1)
        now = time.monotonic()
        # reading the loss syncs a GPU: twice a second is enough for a person
        if loss is not None and now - self._last_postfix >= 0.5:
            self._tqdm.set_postfix(loss=f"{_scalar(loss):.4f}", refresh=False)
            self._last_postfix = now

    # ---- training ------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            stop = f", early stop after {self.patience} epochs without a better valid {self.monitor}" \
                if self.patience is not None else ""
            print(f"training: {trainer.num_training_batches} batches per epoch, at most {trainer.max_epochs} epochs"
                  f"{stop}", flush=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()
        self._open(trainer, trainer.num_training_batches, f"epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._advance(trainer.progress_bar_metrics.get("train/loss_step"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        valid = {k.removeprefix("val/"): _scalar(v) for k, v in metrics.items() if k.startswith("val/")}
        loss = metrics.get("train/loss_epoch")
        if loss is None and not valid:
            return  # an epoch that ran no batch and no validation (a resume landing on an epoch's end)
        history = getattr(pl_module, "val_history", [])
        best = bool(history) and history[-1][0] == trainer.current_epoch \
            and best_epoch(history, self.monitor, self.mode) == trainer.current_epoch
        seconds = None if self._epoch_started is None else time.perf_counter() - self._epoch_started
        print(epoch_line(trainer.current_epoch, None if loss is None else _scalar(loss), valid, self.monitor,
                         seconds, best), flush=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        stopper = trainer.early_stopping_callback
        if trainer.is_global_zero and stopper is not None and stopper.stopped_epoch > 0:
            history = getattr(pl_module, "val_history", [])
            best = best_epoch(history, self.monitor, self.mode) if history else None
            print(f"stopped early after epoch {stopper.stopped_epoch}: no better valid {self.monitor} in "
                  f"{stopper.patience} epochs" + (f" (best epoch {best})" if best is not None else ""), flush=True)

    # ---- evaluation ----------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        desc = f"epoch {trainer.current_epoch} valid" if trainer.state.fn == "fit" else "valid"
        self._open(trainer, sum(trainer.num_val_batches), desc)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._advance()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open(trainer, sum(trainer.num_test_batches), "test")

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance()

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()  # what follows (a resume hint, a traceback) starts on a clean line
