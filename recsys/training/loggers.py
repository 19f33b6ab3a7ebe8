"""Where a run's curves go: ``train.logger`` (``recsys.config.LOGGERS``).

Every run keeps Lightning's CSV log (``rundir.CSV_LOG``): resuming, ``curves.png`` and the
tests read it. ``train.logger`` adds one tracker beside it, given the same numbers:

- ``tensorboard``: event files in ``logs/tensorboard`` (``tensorboard --logdir runs``);
- ``mlflow``: the tracking server or store of ``$MLFLOW_TRACKING_URI`` when it is set,
  otherwise a SQLite store in the run's own ``logs/mlflow.db`` (MLflow 3 refuses plain
  ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; SQLite is its local store):
  ``mlflow ui --backend-store-uri sqlite:///runs/<run>/logs/mlflow.db``. Experiment:
  ``data.name``; run name: the run directory's name. MLflow allows no ``@`` in a metric
  name, so ``val/ndcg@10`` is logged there as ``val/ndcg_at_10``. No artifacts are logged
  (the local store's artifact location names the ``.partial`` folder the run trained in);
- ``wandb``: Weights & Biases with its own settings (``WANDB_MODE=offline`` keeps it local),
  project ``data.name``, run name the run directory's name.

Trackers get the resolved config as parameters, every epoch's training loss and validation
metrics, and at the end the best epoch's validation and the test metrics (``best/valid/...``,
``test/...``). A resumed run continues the same MLflow or W&B run (``logs/tracker.json``
names it). Each tracker is an optional extra: ``require`` fails before any folder exists.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

from recsys import rundir
from recsys.config import LOGGERS, ExperimentConfig
from recsys.errors import ConfigError

# train.logger -> the module it needs; the extra that installs it has the logger's name.
_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
TRACKER = Path(rundir.LOGS) / "tracker.json"  # which MLflow / W&B run a resume continues


def _distribution() -> str:
    """The name recsys is installed under (its extras hang off it)."""
    from importlib.metadata import packages_distributions

    try:
        names = packages_distributions().get("recsys") or []
    except Exception:  # a broken metadata entry elsewhere in the environment
        names = []
    return names[0] if names else "recsys-lab"


def require(name: str) -> None:
    """Raise ``ConfigError`` naming the extra to install when ``name``'s package is missing."""
    if name not in LOGGERS:
        raise ConfigError(f"train.logger must be one of {LOGGERS}, got {name!r}")
    modules = _MODULES.get(name, ())
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ConfigError(f"train.logger={name} needs the {modules[0]} package, which is not installed: "
                          f"pip install '{_distribution()}[{name}]'")


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``: the resolved config as a tracker's parameters."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = ",".join(map(str, node)) if isinstance(node, list) else node

    walk("", cfg.to_dict())
    return flat


def _mlflow_name(key: str) -> str:
    return key.replace("@", "_at_")


def _mlflow(cfg: ExperimentConfig, partial: Path, run_name: str, previous: dict) -> tuple[Logger, str | None]:
    """The MLflow logger and the tracking URI to record (None: the run's own store)."""
    from pytorch_lightning.loggers import MLFlowLogger

    class _MLFlowLogger(MLFlowLogger):
        """MLflow allows no '@' in metric names: ``val/ndcg@10`` becomes ``val/ndcg_at_10``."""

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            super().log_metrics({_mlflow_name(k): v for k, v in metrics.items()}, step)

    uri = previous.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    local = uri is None
    if local:
        uri = f"sqlite:///{(partial / rundir.MLFLOW_STORE).resolve()}"
    return _MLFlowLogger(
        experiment_name=cfg.data.name, run_name=run_name, tracking_uri=uri, run_id=previous.get("run_id"),
        # the store's own default artifact root is ./mlruns of the working directory
        artifact_location=(partial / rundir.MLFLOW_ARTIFACTS).resolve().as_uri() if local else None,
        tags={"recsys.config": cfg.name, "recsys.seed": str(cfg.seed)},
    ), (None if local else uri)


def make(cfg: ExperimentConfig, partial: Path, resume: bool, writer: bool = True) -> list[Logger]:
    """The CSV logger every run has, then ``train.logger``'s tracker (if not ``csv``).

    The tracker gets the config as parameters now. ``writer`` (rank 0) records which
    tracker run this is, so a resume continues it."""
    partial = Path(partial)
    loggers: list[Logger] = [CSVLogger(partial, name=rundir.LOGS, version="")]
    name = cfg.train.logger
    if name == "csv":
        return loggers
    require(name)
    run_name = rundir.final_dir(partial).name
    previous = (rundir.read_json(partial / TRACKER) or {}) if resume else {}
    if previous.get("logger") != name:
        previous = {}
    record: dict[str, Any] = {"logger": name}
    if name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        tracker: Logger = TensorBoardLogger(partial / rundir.TENSORBOARD_LOGS, name="", version="",
                                            default_hp_metric=False)
    elif name == "mlflow":
        tracker, uri = _mlflow(cfg, partial, run_name, previous)
        record["tracking_uri"] = uri
    else:  # wandb
        from pytorch_lightning.loggers import WandbLogger

        run_id = previous.get("run_id") or uuid.uuid4().hex[:12]
        tracker = WandbLogger(name=run_name, project=cfg.data.name, save_dir=str(partial / rundir.LOGS), id=run_id,
                              resume="allow")
        record["run_id"] = run_id
    loggers.append(tracker)
    if writer:
        if not previous:  # a resumed tracker run has its parameters already
            tracker.log_hyperparams(flat_config(cfg))
        if name == "mlflow":
            import mlflow  # noqa: F401  (it sets its loggers' level on import: so before the line below)

            with _quieter("mlflow"):  # "Creating initial MLflow database tables..."
                record["run_id"] = tracker.run_id  # creates the run (and the local store)
        (partial / TRACKER).parent.mkdir(parents=True, exist_ok=True)
        rundir.write_json(partial / TRACKER, record)
    return loggers


@contextmanager
def _quieter(name: str) -> Iterator[None]:
    """The logger ``name`` shows warnings and errors only while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def log_results(loggers: list[Logger], metrics: dict, step: int) -> None:
    """The best epoch's validation and the test metrics, to the trackers (the CSV log and
    metrics.json have them already)."""
    final = {f"best/valid/{k}": v for k, v in metrics["valid"].items()}
    final.update({f"test/{k}": v for k, v in metrics["test"].items()})
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            continue
        logger.log_metrics(final, step=step)
        logger.save()
        logger.finalize("success")
