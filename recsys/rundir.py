"""The run directory: its file names, its states and how its files are written.

``recsys fit`` writes one run directory per config:

    <run_dir>/
      config.yaml              the resolved config
      vocab.json               item vocabulary (raw ids in token order)
      events.json              action-type vocabulary (logs with ``data.event_col`` only)
      data.json                {"fingerprint": ...} of the dataset
      checkpoints/best.ckpt    weights of the best epoch (neural models)
      checkpoints/last.ckpt    full training state after the last epoch (``--resume``)
      logs/                    Lightning's CSV log (metrics.csv), and the tracker that
                               ``train.logger`` names: tensorboard/, mlflow.db
      curves.png               training loss and validation metrics by epoch
      metrics.json             metrics, protocol, provenance, times
      ranks.npz                per-user validation/test ranks, in the data's user order
      status.json              {"status": "complete"}

It is built under ``<run_dir>.partial`` and renamed into place only when every file is
written, so a crashed run never looks complete. The status of a ``.partial`` folder says
``running`` (with the writer's pid), ``interrupted`` (resumable), or ``failed`` (with
the error). This module is the one place that spells these names and states; every
reader and writer of a run directory asks it. It imports nothing heavy: serving code
(``recsys.inference``) reads run directories too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import ExperimentConfig
from recsys.errors import ArtifactError

PARTIAL_SUFFIX = ".partial"

CONFIG = "config.yaml"
VOCAB = "vocab.json"
EVENT_VOCAB = "events.json"
DATA = "data.json"
METRICS = "metrics.json"
RANKS = "ranks.npz"
STATUS = "status.json"
LOGS = "logs"
CSV_LOG = Path(LOGS) / "metrics.csv"
TENSORBOARD_LOGS = Path(LOGS) / "tensorboard"
MLFLOW_STORE = Path(LOGS) / "mlflow.db"
MLFLOW_ARTIFACTS = Path(LOGS) / "mlflow-artifacts"
CURVES = "curves.png"
CHECKPOINTS = Path("checkpoints")
BEST_CHECKPOINT = CHECKPOINTS / "best.ckpt"
LAST_CHECKPOINT = CHECKPOINTS / "last.ckpt"

RUNNING = "running"
INTERRUPTED = "interrupted"
FAILED = "failed"
COMPLETE = "complete"
# A run whose process was killed outright never got to say "interrupted": it still says
# "running" (with a dead pid) and is resumable from its last checkpoint all the same.
RESUMABLE = (INTERRUPTED, RUNNING)


# ---- where ---------------------------------------------------------------------------------


def partial_dir(run_dir: str | Path) -> Path:
    """Where a run lives until it completes."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + PARTIAL_SUFFIX)


def is_partial(path: str | Path) -> bool:
    return Path(path).name.endswith(PARTIAL_SUFFIX)


def final_dir(path: str | Path) -> Path:
    """The run directory that ``path`` (the run or its ``.partial`` folder) becomes."""
    path = Path(path)
    return path.with_name(path.name[: -len(PARTIAL_SUFFIX)]) if is_partial(path) else path


# ---- JSON files ----------------------------------------------------------------------------


def write_json(path: str | Path, doc: dict, indent: int | None = 2) -> None:
    """Write ``doc`` atomically (temp file + rename): a reader sees the old file or the new."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(doc, indent=indent) + ("\n" if indent is not None else "")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ---- status --------------------------------------------------------------------------------


def read_status(run_dir: str | Path) -> dict | None:
    """``status.json`` of a run or ``.partial`` folder (None if absent or unreadable)."""
    return read_json(Path(run_dir) / STATUS)


def status_of(run_dir: str | Path) -> str | None:
    """The ``status`` field: running, interrupted, failed, complete, or None."""
    return (read_status(run_dir) or {}).get("status")


def mark_running(run_dir: str | Path) -> None:
    write_json(Path(run_dir) / STATUS, {"status": RUNNING, "pid": os.getpid()})


def mark_interrupted(run_dir: str | Path, exc: BaseException) -> None:
    write_json(Path(run_dir) / STATUS, {"status": INTERRUPTED, "error": repr(exc), "resumable": True})


def mark_failed(run_dir: str | Path, exc: BaseException) -> None:
    write_json(Path(run_dir) / STATUS, {"status": FAILED, "error": f"{type(exc).__name__}: {exc}"})


def mark_complete(run_dir: str | Path) -> None:
    write_json(Path(run_dir) / STATUS, {"status": COMPLETE})


def is_complete(run_dir: str | Path) -> bool:
    """Renamed into place by ``recsys fit`` with status ``complete``."""
    return status_of(run_dir) == COMPLETE


def running_pid(run_dir: str | Path) -> int | None:
    """The pid a ``running`` folder names (alive or not), else None."""
    status = read_status(run_dir) or {}
    return status.get("pid") if status.get("status") == RUNNING else None


def has_last_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / LAST_CHECKPOINT).is_file()


def is_resumable(partial: str | Path) -> bool:
    """A ``.partial`` folder that ``recsys fit --resume`` can continue: interrupted (or
    killed while running) after at least one epoch-end checkpoint. Whether its writer is
    still alive, and whether its config is the one wanted, is the caller's question."""
    return status_of(partial) in RESUMABLE and has_last_checkpoint(partial)


# ---- completeness --------------------------------------------------------------------------


def missing(run_dir: str | Path, names: Iterable[str | Path]) -> list[str]:
    run_dir = Path(run_dir)
    return [str(name) for name in names if not (run_dir / name).is_file()]


def require(run_dir: str | Path, names: Iterable[str | Path]) -> None:
    """Raise ``ArtifactError`` naming the files of ``names`` that ``run_dir`` lacks."""
    absent = missing(run_dir, names)
    if absent:
        raise ArtifactError(f"{run_dir} is not a complete run directory: missing {', '.join(absent)}")


def has_metrics(run_dir: str | Path) -> bool:
    return (Path(run_dir) / METRICS).is_file()


def has_results(run_dir: str | Path) -> bool:
    """Both files a finished run's numbers live in: metrics.json and ranks.npz."""
    return not missing(run_dir, (METRICS, RANKS))


# ---- the files -----------------------------------------------------------------------------


def write_config(run_dir: str | Path, cfg: ExperimentConfig) -> None:
    path = Path(run_dir) / CONFIG
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(cfg.to_yaml(), encoding="utf-8")
    os.replace(tmp, path)


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The stored config as today's code reads it (raises if it cannot)."""
    return ExperimentConfig.from_yaml(Path(run_dir) / CONFIG, stored=True)


def has_config(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def stored_config_is(run_dir: str | Path, cfg: ExperimentConfig) -> bool:
    """The stored config.yaml, read as plain YAML, is exactly ``cfg`` (False if unreadable)."""
    import yaml

    try:
        return yaml.safe_load((Path(run_dir) / CONFIG).read_text(encoding="utf-8")) == cfg.to_dict()
    except (OSError, yaml.YAMLError):
        return False


def is_stale(run_dir: str | Path, cfg: ExperimentConfig) -> bool:
    """The stored config, read with today's code, differs from ``cfg``.

    Fields added to the library since the run (stored without them, read back with their
    defaults) do not make a run stale; any changed value does."""
    return read_config(run_dir) != cfg


def write_data(run_dir: str | Path, fingerprint: str) -> None:
    write_json(Path(run_dir) / DATA, {"fingerprint": fingerprint}, indent=None)


def read_fingerprint(run_dir: str | Path) -> str:
    """The dataset fingerprint recorded in data.json."""
    return json.loads((Path(run_dir) / DATA).read_text(encoding="utf-8"))["fingerprint"]


def write_metrics(run_dir: str | Path, metrics: dict) -> None:
    write_json(Path(run_dir) / METRICS, metrics)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS).read_text(encoding="utf-8"))


def read_event_names(run_dir: str | Path) -> tuple[str, ...] | None:
    """Action-type names of a run on a log with ``data.event_col`` (None for item-only runs)."""
    path = Path(run_dir) / EVENT_VOCAB
    if not path.is_file():
        return None
    return tuple(json.loads(path.read_text(encoding="utf-8"))["names"])


def write_ranks(run_dir: str | Path, valid: np.ndarray, test: np.ndarray) -> None:
    """Per-user ranks (int32), in the data's user order."""
    np.savez_compressed(Path(run_dir) / RANKS, valid=valid.astype(np.int32), test=test.astype(np.int32))


def read_ranks(run_dir: str | Path, split: str = "test") -> np.ndarray:
    """Per-user 1-based ranks of ``split`` (valid or test)."""
    with np.load(Path(run_dir) / RANKS) as npz:
        return npz[split]
