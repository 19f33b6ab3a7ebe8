"""Fit or evaluate one experiment config into a self-describing run directory.

A run directory holds ``config.yaml`` (resolved), ``vocab.json``, ``checkpoints/best.ckpt``,
``metrics.json``, ``ranks.npz`` (per-user validation/test ranks, in the order of the
users in the data), ``status.json`` and the CSV training log. It is built under
``<run_dir>.partial`` (status ``running``, or ``failed`` with the error) and renamed into
place only when every file is written, so a crashed run never looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from recsys.config import ExperimentConfig
from recsys.data.datamodule import SeqDataModule
from recsys.data.vocab import Vocab
from recsys.errors import ArtifactError
from recsys.nn.encoder import build_encoder
from recsys.training.module import SeqRecModule
from recsys.training.provenance import git_commit, machine, versions

PROTOCOL = "full-catalogue ranking, leave-one-out, pessimistic ties"
CHECKPOINT = Path("checkpoints") / "best.ckpt"


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict


def _datamodule(cfg: ExperimentConfig, vocab: Vocab | None = None) -> SeqDataModule:
    return SeqDataModule(
        cfg.data, cfg.model.max_len, cfg.train.batch_size, cfg.eval.batch_size, cfg.seed, vocab=vocab
    ).prepare()


def _module(cfg: ExperimentConfig, n_items: int) -> SeqRecModule:
    return SeqRecModule(
        build_encoder(cfg.model, n_items),
        loss=cfg.train.loss,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        ks=cfg.eval.ks,
        exclude_seen=cfg.eval.exclude_seen,
    )


def _set_threads(cfg: ExperimentConfig) -> None:
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)


def _trainer(cfg: ExperimentConfig, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        deterministic=cfg.train.deterministic,
        enable_model_summary=False,
        enable_progress_bar=cfg.train.progress_bar,
        **kwargs,
    )


def _load_weights(module: SeqRecModule, ckpt: Path) -> None:
    # weights_only=True: a checkpoint is data, and loading it must never run code.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])


def default_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_dir) / f"{cfg.data.name}-{cfg.name}-seed{cfg.seed}-{stamp}"


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def fit(cfg: ExperimentConfig, run_dir: Path | None = None, callbacks: Sequence[pl.Callback] = ()) -> RunResult:
    """Train, pick the best epoch on validation NDCG, evaluate it on valid and test.

    ``callbacks`` are extra Lightning callbacks (e.g. a tuning pruner that reads
    ``val/<metric>`` at each validation end).
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    if run_dir.exists():
        raise FileExistsError(f"run directory {run_dir} already exists")
    partial = run_dir.with_name(run_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    _write_json(partial / "status.json", {"status": "running", "pid": os.getpid()})
    try:
        metrics = _fit_into(cfg, partial, list(callbacks))
    except BaseException as exc:
        _write_json(partial / "status.json", {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    _write_json(partial / "status.json", {"status": "complete"})
    os.replace(partial, run_dir)
    return RunResult(run_dir, metrics)


def _fit_into(cfg: ExperimentConfig, partial: Path, callbacks: list[pl.Callback]) -> dict:
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_threads(cfg)
    dm = _datamodule(cfg)
    prepared = time.perf_counter()
    (partial / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    dm.vocab.save(partial / "vocab.json")

    module = _module(cfg, dm.vocab.n_items)
    monitor = f"val/{cfg.eval.monitor}"
    checkpoint = ModelCheckpoint(
        dirpath=partial / CHECKPOINT.parent, filename=CHECKPOINT.stem, monitor=monitor, mode="max", save_top_k=1
    )
    trainer = _trainer(
        cfg,
        max_epochs=cfg.train.max_epochs,
        callbacks=[EarlyStopping(monitor=monitor, mode="max", patience=cfg.train.patience), checkpoint, *callbacks],
        logger=CSVLogger(partial, name="logs", version=""),
        gradient_clip_val=cfg.train.grad_clip or None,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    trainer.fit(module, datamodule=dm)
    trained = time.perf_counter()

    _load_weights(module, partial / CHECKPOINT)
    evaluator = _trainer(cfg, logger=False, enable_checkpointing=False)
    evaluator.validate(module, datamodule=dm, verbose=False)
    evaluator.test(module, datamodule=dm, verbose=False)
    best_epoch = max(module.val_history, key=lambda e: e[1][cfg.eval.monitor])[0] if module.val_history else None

    metrics = {
        "valid": module.last_metrics["val"],
        "test": module.last_metrics["test"],
        "protocol": PROTOCOL,
        "exclude_seen": cfg.eval.exclude_seen,
        "n_eval_users": len(dm.split.test),
        "dataset": {
            "name": cfg.data.name,
            "source": dm.events.source,
            "fingerprint": dm.events.fingerprint,
            "summary": dm.events.summary,
        },
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "best_epoch": best_epoch,
        "wall_time_s": {
            "prepare": round(prepared - started, 3),
            "train": round(trained - prepared, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
    }
    # Per-user ranks let the leaderboard bootstrap over users and pair models user by user.
    np.savez_compressed(
        partial / "ranks.npz",
        valid=module.last_ranks["val"].numpy().astype(np.int32),
        test=module.last_ranks["test"].numpy().astype(np.int32),
    )
    _write_json(partial / "metrics.json", metrics)
    return metrics


def evaluate(run_dir: Path) -> dict[str, dict[str, float]]:
    """Recompute validation and test metrics from a finished run's best checkpoint."""
    run_dir = Path(run_dir)
    needed = ["config.yaml", "vocab.json", "metrics.json", str(CHECKPOINT)]
    missing = [name for name in needed if not (run_dir / name).exists()]
    if missing:
        raise ArtifactError(f"{run_dir} is not a complete run directory: missing {', '.join(missing)}")
    cfg = ExperimentConfig.from_yaml(run_dir / "config.yaml")
    recorded = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_threads(cfg)
    try:
        dm = _datamodule(cfg, vocab=Vocab.load(run_dir / "vocab.json"))
    except KeyError as exc:
        raise ArtifactError(f"{run_dir}: the data holds items that the run's vocabulary lacks ({exc})") from exc
    if dm.events.fingerprint != recorded["dataset"]["fingerprint"]:
        raise ArtifactError(
            f"{run_dir}: dataset fingerprint {dm.events.fingerprint[:12]} differs from the run's "
            f"{recorded['dataset']['fingerprint'][:12]}; the data changed since training"
        )
    module = _module(cfg, dm.vocab.n_items)
    _load_weights(module, run_dir / CHECKPOINT)
    evaluator = _trainer(cfg, logger=False, enable_checkpointing=False)
    evaluator.validate(module, datamodule=dm, verbose=False)
    evaluator.test(module, datamodule=dm, verbose=False)
    return {"valid": module.last_metrics["val"], "test": module.last_metrics["test"]}
