"""Fit or evaluate one experiment config into a self-describing run directory.

The run directory's files and states are ``recsys.rundir``'s: it is built in a
``.partial`` folder and renamed into place only when every file is written, so a crashed
run never looks complete.

With ``train.devices`` x ``train.num_nodes`` > 1 the run is one Lightning DDP job: every
process trains and evaluates its share, and rank 0 alone checks, writes and renames the
run directory; the others write nothing (README, "Multi-process, multi-GPU and
multi-node training").
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger

from recsys import rundir
from recsys.config import ACTION_MONITORS, ExperimentConfig
from recsys.data.datamodule import SeqDataModule
from recsys.data.sequences import EventVocab
from recsys.data.splits import split_name
from recsys.data.vocab import Vocab
from recsys.errors import ArtifactError, ConfigError
from recsys.training.allocator import retain_freed_memory
from recsys.training import behaviour
from recsys.training.actions import action_report
from recsys.training.build import build_datamodule, build_module, is_baseline
from recsys.training import console, loggers
from recsys.training.callbacks import AtomicLastCheckpoint, EpochSeed, best_epoch
from recsys.training.curves import write_curves
from recsys.training.module import RankingModule
from recsys.training.provenance import git_commit, machine, process_alive, versions


def _datamodule_for_run(cfg: ExperimentConfig, run: Path) -> SeqDataModule:
    """The data of an existing run, checked against the vocabularies and fingerprint it saved."""
    try:
        event_vocab = EventVocab.load(run / rundir.EVENT_VOCAB) if cfg.data.event_col is not None else None
        dm = _datamodule(cfg, vocab=Vocab.load(run / rundir.VOCAB), event_vocab=event_vocab)
    except KeyError as exc:
        raise ArtifactError(f"{run}: the data holds items that the run's vocabulary lacks ({exc})") from exc
    recorded = rundir.read_fingerprint(run)
    if recorded != dm.events.fingerprint:
        raise ArtifactError(
            f"{run}: dataset fingerprint {dm.events.fingerprint[:12]} differs from the run's {recorded[:12]}; "
            "the data changed since the run was trained"
        )
    return dm


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict


def _datamodule(cfg: ExperimentConfig, vocab: Vocab | None = None, event_vocab: EventVocab | None = None) -> SeqDataModule:
    return build_datamodule(cfg, vocab, event_vocab)


def _module(cfg: ExperimentConfig, dm: SeqDataModule) -> RankingModule:
    """Baselines come back fitted (on training events only); neural models untrained."""
    try:
        return build_module(cfg, dm)
    except ValueError as exc:  # e.g. a baseline that needs timestamps the data lacks
        raise ConfigError(f"{cfg.model.name}: {exc}") from exc


def _distributed(cfg: ExperimentConfig) -> bool:
    return cfg.train.devices * cfg.train.num_nodes > 1


def _set_threads(cfg: ExperimentConfig) -> None:
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
        if _distributed(cfg):
            # Lightning's launcher sets cores // processes threads unless OMP_NUM_THREADS is
            # set; with it set, train.num_threads (per process) stands, in launched processes too.
            os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.num_threads))


def _trainer(cfg: ExperimentConfig, callbacks: Sequence[pl.Callback] = (), **kwargs) -> pl.Trainer:
    """A Trainer with the run's console (``recsys.training.console``) in place of Lightning's bars."""
    t = cfg.train
    shown = console.EpochConsole(cfg.eval.monitor, _monitor_mode(cfg), cfg.train.patience, bar=t.progress_bar)
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        # DDP when there is more than one process: Lightning launches the local processes
        # itself (re-running the command line) unless torchrun or SLURM started them.
        strategy="ddp" if _distributed(cfg) else "auto",
        # The datamodule shards batches and users itself (same global batches as one
        # process; each user scored once); a DistributedSampler would pad and repeat users.
        use_distributed_sampler=False,
        deterministic=t.deterministic,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[*callbacks, shown],
        **kwargs,
    )


def _monitor_mode(cfg: ExperimentConfig) -> str:
    """Ranking metrics and most action metrics are better high; a loss (action_nll) low."""
    return ACTION_MONITORS.get(cfg.eval.monitor, "max")


def protocol(cfg: ExperimentConfig, dm: SeqDataModule) -> str:
    """metrics.json's ``protocol``: how every number in it was computed, the split's name included."""
    d = cfg.data
    split = split_name(d.split, d.split_quantile, d.split_valid_quantile, by_time=dm.has_timestamps)
    return f"full-catalogue ranking, {split}, pessimistic ties"


def _load_weights(module: RankingModule, ckpt: Path) -> None:
    # weights_only=True: a checkpoint is data, and loading it must never run code.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])


def default_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_dir) / f"{cfg.data.name}-{cfg.name}-seed{cfg.seed}-{stamp}"


@contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C so a terminated run stops cleanly and stays resumable."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
    resume: bool = False,
) -> RunResult:
    """Train, pick the best epoch on validation NDCG, evaluate it on valid and test.

    ``callbacks`` are extra Lightning callbacks (e.g. a tuning pruner that reads
    ``val/<metric>`` at each validation end). ``resume=True`` continues the unfinished
    run in ``<run_dir>.partial`` from its last epoch-end checkpoint; the result is
    identical to an uninterrupted run with the same seed.

    The ``.partial`` folder is made only once the data is read and the model built: a run
    that fails before (a bad path, a parse error, a missing extra) leaves no folder. One
    that fails or is interrupted later keeps it, resumable. The console shows a progress
    bar and a line per epoch, without Lightning's banners (``recsys.training.console``).
    """
    with console.quiet():
        return _fit(cfg, run_dir, callbacks, resume)


def _fit(cfg: ExperimentConfig, run_dir: Path | None, callbacks: Sequence[pl.Callback], resume: bool) -> RunResult:
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    loggers.require(cfg.train.logger)
    # Made first: it knows this process's rank (from Lightning's launcher, torchrun or
    # SLURM) before anything touches the disk.
    evaluator = _trainer(cfg, logger=False, enable_checkpointing=False)
    if not evaluator.is_global_zero:
        # Rank 0 checks and writes the run directory; this process trains and evaluates
        # its share and writes nothing, so nothing races. (Its default run_dir may carry
        # another timestamp: the directory in use is rank 0's, broadcast in _fit_into.)
        metrics, partial = _fit_into(cfg, rundir.partial_dir(run_dir), list(callbacks), resume, evaluator, writer=False)
        return RunResult(rundir.final_dir(partial), metrics)
    if run_dir.exists():
        raise FileExistsError(f"run directory {run_dir} already exists")
    partial = rundir.partial_dir(run_dir)
    if resume:
        if not rundir.has_config(partial):
            raise ArtifactError(f"{partial}: no unfinished run to resume")
        # Lightning's CSV logger starts metrics.csv afresh; the epochs logged before the
        # interruption are kept beside it (metrics.before-resume-<n>.csv), not lost.
        log = partial / rundir.CSV_LOG
        if log.is_file():
            n = len(list(log.parent.glob("metrics.before-resume-*.csv"))) + 1
            os.replace(log, log.with_name(f"metrics.before-resume-{n}.csv"))
        rundir.mark_running(partial)
    elif partial.exists():
        raise FileExistsError(
            f"{partial} holds an unfinished run: resume it with `recsys fit --resume {run_dir}` or delete it"
        )
    opened = resume

    def open_run() -> None:
        nonlocal opened
        partial.mkdir(parents=True)
        opened = True
        rundir.mark_running(partial)

    try:
        with _sigterm_as_interrupt():
            metrics, _ = _fit_into(cfg, partial, list(callbacks), resume, evaluator, open_run=open_run)
    except (KeyboardInterrupt, SystemExit) as exc:
        if opened:
            rundir.mark_interrupted(partial, exc)
        raise
    except BaseException as exc:
        if opened:
            rundir.mark_failed(partial, exc)
        raise
    rundir.mark_complete(partial)
    os.replace(partial, run_dir)
    return RunResult(run_dir, metrics)


def resume(run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> RunResult:
    """Continue an unfinished run; ``run_dir`` may name the run or its ``.partial`` folder."""
    run_dir = rundir.final_dir(run_dir)
    partial = rundir.partial_dir(run_dir)
    if not rundir.has_config(partial):
        raise ArtifactError(f"{partial}: no unfinished run to resume")
    pid = rundir.running_pid(partial)
    if pid is not None and pid != os.getpid() and process_alive(pid):
        # two trainers in one folder would overwrite each other's checkpoints
        raise ArtifactError(f"{partial}: process {pid} is still training this run; stop it before resuming")
    return fit(rundir.read_config(partial), run_dir, callbacks, resume=True)


def _fit_into(cfg: ExperimentConfig, partial: Path, callbacks: list[pl.Callback], resume: bool,
              evaluator: pl.Trainer, writer: bool = True,
              open_run: Callable[[], None] | None = None) -> tuple[dict, Path]:
    """Train and evaluate; only the ``writer`` (rank 0) writes the run's files into
    ``partial``, calling ``open_run`` (which makes the folder of a new run) once the data is
    read and the model built. Every process returns the same metrics, and rank 0's ``partial``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_threads(cfg)
    if cfg.train.retain_memory:
        retain_freed_memory()
    if cfg.train.trim_memory:  # kept free pages go back at each phase switch (issue 19)
        from recsys.training.allocator import TrimFreedMemory

        callbacks = [*callbacks, TrimFreedMemory()]
    dm = _datamodule_for_run(cfg, partial) if resume else _datamodule(cfg)
    prepared, cpu_prepared = time.perf_counter(), time.process_time()
    module = _module(cfg, dm)
    if cfg.eval.monitor == "behaviour_nll" and not is_baseline(cfg):
        module.extra_validation = behaviour.BehaviourMonitor(dm, cfg)
    if writer:
        if not resume:
            if open_run is not None:
                open_run()
            rundir.write_config(partial, cfg)
            dm.vocab.save(partial / rundir.VOCAB)
            rundir.write_data(partial, dm.events.fingerprint)
        if dm.event_vocab is not None:
            dm.event_vocab.save(partial / rundir.EVENT_VOCAB)

    trackers: list[Logger] = []
    if is_baseline(cfg):  # fitted by counting: no gradient training, no checkpoint
        trained, cpu_trained, epochs, step = time.perf_counter(), time.process_time(), 0, 0
    else:
        epochs, written, trackers, step = _train(cfg, module, dm, partial, callbacks, resume, writer)
        trained, cpu_trained = time.perf_counter(), time.process_time()
        _load_weights(module, written / rundir.BEST_CHECKPOINT)
    evaluator.validate(module, datamodule=dm, verbose=False)
    evaluator.test(module, datamodule=dm, verbose=False)
    partial = Path(evaluator.strategy.broadcast(str(partial)))  # rank 0's: the one written
    # The best of the training epochs (a baseline has none: its fit is epoch 0).
    best = best_epoch(module.val_history, cfg.eval.monitor, _monitor_mode(cfg))

    metrics = {
        "valid": module.last_metrics["val"],
        "test": module.last_metrics["test"],
        "protocol": protocol(cfg, dm),
        "exclude_seen": cfg.eval.exclude_seen,
        "n_eval_users": int(module.last_ranks["test"].numel()),  # users scored, over all processes
        "dataset": {
            "name": cfg.data.name,
            "source": dm.events.source,
            "fingerprint": dm.events.fingerprint,
            "summary": dm.events.summary,
        },
        "seed": cfg.seed,
        "epochs": epochs,
        "best_epoch": best,
        "wall_time_s": {
            "prepare": round(prepared - started, 3),
            "train": round(trained - prepared, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        # CPU seconds of this process over all its threads: with one thread on an otherwise
        # idle core they equal the wall time, so they estimate a quiet run's time even when
        # other jobs shared the machine (benchmarks/runner.py --time-epochs).
        "cpu_time_s": {
            "prepare": round(cpu_prepared - cpu_started, 3),
            "train": round(cpu_trained - cpu_prepared, 3),
            "total": round(time.process_time() - cpu_started, 3),
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),  # per process
        "processes": evaluator.world_size,
    }
    if dm.item_attributes is not None:
        attrs = dm.item_attributes
        metrics["item_attributes"] = {"n_attrs": attrs.n_attrs, "items_covered": attrs.coverage}
    head = getattr(getattr(module, "encoder", None), "transitions", None)
    if head is not None:  # how the transition head counted its pairs (model.transition_em)
        metrics["transition_head"] = {"em_iterations": head.em_chosen,
                                      "held_out_log_likelihood": {str(k): round(v, 6) for k, v in head.em_scores.items()}}
    actions = action_report(module, dm)
    if actions is not None:
        metrics["next_action"] = actions
    if behaviour.applies(cfg):  # the held-out tail of time (recsys.data.behaviour)
        metrics["behaviour"] = behaviour.behaviour_report(module, dm, cfg)
        if writer and cfg.train.calibrate and not is_baseline(cfg):  # the temperatures travel with the weights
            behaviour.store_temperatures(module, partial / rundir.BEST_CHECKPOINT)
    if not writer:
        return metrics, partial
    # Per-user ranks let the leaderboard bootstrap over users and pair models user by user.
    rundir.write_ranks(partial, valid=module.last_ranks["val"].numpy(), test=module.last_ranks["test"].numpy())
    if trackers:
        loggers.log_results(trackers, metrics, step)
    if epochs:
        try:
            write_curves(partial, cfg.eval.monitor, best)
        except Exception as exc:  # a picture that cannot be drawn must not lose a trained run
            logging.getLogger(__name__).warning("could not draw %s: %s", rundir.CURVES, exc)
    rundir.write_metrics(partial, metrics)
    return metrics, partial


def _train(cfg: ExperimentConfig, module: RankingModule, dm: SeqDataModule, partial: Path,
           callbacks: list[pl.Callback], resume: bool = False,
           writer: bool = True) -> tuple[int, Path, list[Logger], int]:
    """Gradient training with early stopping on validation; the best epoch is checkpointed,
    and the full state after every epoch goes to the last checkpoint, from which ``resume`` continues.
    Returns the epochs run, the folder the checkpoints went to (rank 0's ``partial``, on
    every process), the loggers and the last step."""
    last = partial / rundir.LAST_CHECKPOINT
    monitor, mode = f"val/{cfg.eval.monitor}", _monitor_mode(cfg)
    checkpoint = ModelCheckpoint(
        dirpath=partial / rundir.BEST_CHECKPOINT.parent, filename=rundir.BEST_CHECKPOINT.stem, monitor=monitor,
        mode=mode, save_top_k=1, save_on_train_epoch_end=False,
    )
    trainer = _trainer(
        cfg,
        max_epochs=cfg.train.max_epochs,
        callbacks=[
            EpochSeed(cfg.seed),
            # Early stopping and checkpoints all act at validation end, so the last checkpoint holds
            # their state after this epoch's check, and a resume does not re-run it.
            EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience, check_on_train_epoch_end=False),
            checkpoint,
            AtomicLastCheckpoint(last),
            *callbacks,
        ],
        logger=loggers.make(cfg, partial, resume, writer),
        gradient_clip_val=cfg.train.grad_clip or None,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=last if resume and last.is_file() else None)
    return trainer.current_epoch, Path(trainer.strategy.broadcast(str(partial))), trainer.loggers, trainer.global_step


def evaluate(run_dir: Path) -> dict[str, dict[str, float]]:
    """Recompute validation and test metrics from a finished run's best checkpoint."""
    with console.quiet():
        return _evaluate(Path(run_dir))


def _evaluate(run_dir: Path) -> dict[str, dict[str, float]]:
    cfg = rundir.read_config(run_dir) if rundir.has_config(run_dir) else None
    needed = [rundir.CONFIG, rundir.VOCAB, rundir.DATA, rundir.METRICS]
    if cfg is None or not is_baseline(cfg):  # a baseline has no checkpoint: it is refitted
        needed.append(rundir.BEST_CHECKPOINT)
    if cfg is not None and cfg.data.event_col is not None:
        needed.append(rundir.EVENT_VOCAB)
    rundir.require(run_dir, needed)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_threads(cfg)
    dm = _datamodule_for_run(cfg, run_dir)
    module = _module(cfg, dm)
    if not is_baseline(cfg):
        _load_weights(module, run_dir / rundir.BEST_CHECKPOINT)
    evaluator = _trainer(cfg, logger=False, enable_checkpointing=False)
    evaluator.validate(module, datamodule=dm, verbose=False)
    evaluator.test(module, datamodule=dm, verbose=False)
    return {"valid": module.last_metrics["val"], "test": module.last_metrics["test"]}
