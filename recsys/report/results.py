"""Load benchmark result files and the experiment matrix they come from.

A results folder holds ``<dataset>/<config>/seed<N>/`` run directories written by
``benchmarks/runner.py``; a run counts only if ``recsys.rundir`` calls it complete and
it has a ``result.json`` (a crashed run stays in ``seed<N>.partial`` and is never read).
The matrix is the set of frozen configs ``experiments/<dataset>/<config>.yaml``: every
config is a leaderboard row, with or without results, so a new model config shows up as a
(pending) row without touching this code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from recsys import rundir
from recsys.config import BASELINE_NAMES, ENCODERS, LEGACY_VALUES, ExperimentConfig

# Beside the run directory's own files (``recsys.rundir``): what benchmarks/runner.py adds.
RESULT = "result.json"

# Model names (``model.name`` in a config, or the first word of its file name) that count
# as baselines: each model is tested against the best of these on its dataset and split.
# The library's own baselines (``recsys.config.BASELINE_NAMES``) are always included.
BASELINE_MODELS = frozenset(BASELINE_NAMES) | {"pop", "random", "markov", "itemknn", "sknn", "baseline"}


# Datasets with configs in experiments/ that are not leaderboard benchmarks: the Taobao file
# is an 814-user development sample of a 100M-row log.
EXCLUDED_DATASETS = frozenset({"taobao-sample"})


# Config fields that do not define the experiment: where files go, whether a progress bar is
# drawn, and how the work is scheduled. Metrics do not depend on the evaluation batch size
# (ranks are pooled over all users before averaging; tests/eval checks it). The torch thread
# count changes only the order of float sums; a result records it (``torch_threads``), and a
# bit-identical rerun needs the same count, but a run on 2 threads is the same experiment as
# one on 1, so the runner does not redo it when ``--threads`` differs. ``retain_memory`` and
# ``trim_memory`` are allocator settings: same numbers either way. ``logger`` picks where the curves are shown
# (TensorBoard, MLflow, ...) beside the CSV log every run keeps: same numbers either way.
COSMETIC = (("output_dir",), ("data", "data_dir"), ("train", "progress_bar"), ("eval", "batch_size"),
            ("train", "num_threads"), ("train", "retain_memory"), ("train", "trim_memory"),
            ("train", "logger"))
# Fields added after results existed, with the value that reproduces the older behaviour
# (``recsys.config.LEGACY_VALUES``): at that value they are left out of the hash, so adding a
# field does not make every finished run stale, while a run that sets another value hashes
# differently.
ADDED_FIELDS = LEGACY_VALUES


def _unread(doc: dict) -> list[tuple[str, str]]:
    """Fields the rest of the config makes unread, so they cannot change a result: the
    transition head's settings without the head, the chunk size of a loss that does not
    chunk, the options of blocks the model does not use (``model.<block>_*``), the width
    bucket of an ungrouped batch."""
    out = []
    spec = ENCODERS.get(doc["model"].get("name"))
    for block in {s.block for s in ENCODERS.values()} - {spec.block if spec else None}:
        out += [("model", k) for k in doc["model"] if k.startswith(f"{block}_")]
    if not doc["model"].get("transition_lags"):
        out += [("model", k) for k in ("transition_width", "transition_ce_weight", "transition_em")]
    if doc["train"].get("loss") != "ce_chunked":
        out.append(("train", "chunk_size"))
    if doc["train"].get("length_groups", 1) == 1:
        out.append(("train", "length_bucket"))
    return out


@dataclass(frozen=True)
class MatrixEntry:
    """One frozen config: a leaderboard row."""

    dataset: str
    config: str  # file stem, e.g. sasrec-ce
    path: Path
    model: str
    loss: str
    split: str

    @property
    def is_baseline(self) -> bool:
        return is_baseline(self.model, self.config)


@dataclass(frozen=True)
class BenchRun:
    """One finished run (one seed of one config)."""

    dataset: str
    config: str
    seed: int
    split: str
    model: str
    loss: str
    test: dict[str, float]
    valid: dict[str, float]
    train_time_s: float
    total_time_s: float
    epochs: int | None
    best_epoch: int | None
    n_eval_users: int | None
    fingerprint: str
    config_hash: str  # without the seed: equal across the seeds of one row
    git_commit: str | None
    quick: bool
    path: Path
    extra: dict = field(default_factory=dict, repr=False, compare=False)  # the whole result.json

    @property
    def is_baseline(self) -> bool:
        return is_baseline(self.model, self.config)

    def ranks(self, split: str = "test") -> np.ndarray:
        """Per-user 1-based ranks of this run, in the data's user order."""
        return rundir.read_ranks(self.path, split)


def config_hash(cfg: ExperimentConfig, with_seed: bool = True) -> str:
    """sha256 of the canonical resolved config, minus fields that cannot change a result."""
    doc = cfg.to_dict()
    for path in COSMETIC + (() if with_seed else (("seed",),)):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    for section, key in _unread(doc):
        doc[section].pop(key, None)
    for (section, key), old in ADDED_FIELDS.items():
        if doc.get(section, {}).get(key) == old:
            del doc[section][key]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def run_config_hash(run_dir: str | Path, with_seed: bool = True) -> str | None:
    """``config_hash`` of a run's stored ``config.yaml`` as today's code reads it (None if it cannot)."""
    try:
        return config_hash(rundir.read_config(run_dir), with_seed)
    except Exception:  # a config this code cannot read (a field was removed or retyped)
        return None


def is_baseline(model: str, config: str) -> bool:
    return model.lower() in BASELINE_MODELS or config.split("-")[0].lower() in BASELINE_MODELS


def load_matrix(experiments: str | Path, exclude: frozenset[str] = EXCLUDED_DATASETS) -> list[MatrixEntry]:
    """Every ``<dataset>/<config>.yaml`` under ``experiments`` (minus ``exclude``d datasets).

    Configs are read as plain YAML with the library defaults filled in, so a config with
    sections this version does not know still appears as a row.
    """
    defaults = ExperimentConfig()
    entries = []
    for path in sorted(Path(experiments).glob("*/*.yaml")):
        if path.parent.name in exclude:
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data, model, train = (raw.get(k) or {} for k in ("data", "model", "train"))
        entries.append(MatrixEntry(
            dataset=path.parent.name,
            config=path.stem,
            path=path,
            model=str(model.get("name", defaults.model.name)),
            loss=str(train.get("loss", defaults.train.loss)),
            split=str(data.get("split", defaults.data.split)),
        ))
    return entries


def load_run(run_dir: str | Path) -> BenchRun | None:
    """A finished run, or None if the directory is not a complete benchmark run."""
    run_dir = Path(run_dir)
    doc = rundir.read_json(run_dir / RESULT)
    if not rundir.is_complete(run_dir) or doc is None:
        return None
    if not (run_dir / rundir.RANKS).is_file():
        return None
    wall = doc.get("wall_time_s") or {}
    return BenchRun(
        dataset=doc["dataset"],
        config=doc["config"],
        seed=int(doc["seed"]),
        split=doc.get("split", "loo"),
        model=doc.get("model", ""),
        loss=doc.get("loss", ""),
        test=doc["test"],
        valid=doc["valid"],
        train_time_s=float(wall.get("train", float("nan"))),
        total_time_s=float(wall.get("total", float("nan"))),
        epochs=doc.get("epochs"),
        best_epoch=doc.get("best_epoch"),
        n_eval_users=doc.get("n_eval_users"),
        fingerprint=doc.get("dataset_fingerprint", ""),
        config_hash=run_config_hash(run_dir, with_seed=False) or doc.get("config_hash_without_seed", ""),
        git_commit=doc.get("git_commit"),
        quick=bool(doc.get("quick", False)),
        path=run_dir,
        extra=doc,
    )


def load_runs(results: str | Path) -> list[BenchRun]:
    """Every complete run under ``results``, sorted by dataset, config and seed."""
    runs = [load_run(p.parent) for p in sorted(Path(results).glob(f"*/*/seed*/{RESULT}"))]
    return sorted((r for r in runs if r is not None), key=lambda r: (r.dataset, r.config, r.seed))


def runs_frame(runs: list[BenchRun]):
    """One row per run, for notebooks: dataset, config, seed, split, test metrics, times."""
    import pandas as pd

    return pd.DataFrame([
        {"dataset": r.dataset, "config": r.config, "seed": r.seed, "split": r.split, "model": r.model,
         "baseline": r.is_baseline, **{f"test_{k}": v for k, v in r.test.items()},
         "train_time_s": r.train_time_s, "total_time_s": r.total_time_s, "epochs": r.epochs,
         "best_epoch": r.best_epoch, "n_eval_users": r.n_eval_users, "quick": r.quick}
        for r in runs
    ])
