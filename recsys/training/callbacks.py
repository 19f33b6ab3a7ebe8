"""Callbacks that make a run resumable with identical results.

``AtomicLastCheckpoint`` writes the run's last checkpoint after every validation (temp file +
rename, so a kill mid-write leaves the previous checkpoint intact; under DDP only rank 0
writes). ``EpochSeed`` (with ``data.datamodule.EpochBatchSampler``) makes each epoch's
randomness a function of (seed, epoch), so a resumed run sees the same shuffles, masks
and dropout as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from recsys.data.datamodule import epoch_seed


class AtomicLastCheckpoint(Checkpoint):
    """Full trainer state (weights, optimiser, loops, callbacks) after each validation.

    Subclassing ``Checkpoint`` makes Lightning run it after EarlyStopping and the best-
    model checkpoint, so their updated state is inside the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Every process calls save_checkpoint (it ends in a barrier); only rank 0 writes.
        # weights_only=False said outright: the resume needs the optimiser and loop state
        # (and Lightning logs a line each epoch when it has to choose).
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def _module_generators(module: pl.LightningModule) -> list[torch.Generator]:
    """Generators owned by the module or its direct attributes (e.g. a negative sampler)."""
    found = []
    for value in vars(module).values():
        if isinstance(value, torch.Generator):
            found.append(value)
        elif isinstance(getattr(value, "generator", None), torch.Generator):
            found.append(value.generator)
    return found


class EpochSeed(pl.Callback):
    """Reseed the global RNGs and the module's generators at each epoch's first batch.

    With the data side keyed the same way (``EpochBatchSampler``), an epoch's shuffles,
    masks, negatives and dropout are a function of (seed, epoch) alone, so a run resumed
    from an epoch-end checkpoint draws exactly what the uninterrupted run drew.

    Under DDP the module's generators (shared negatives) get the same key on every
    process, as one process would draw them; the global torch RNG (dropout) is offset by
    the process rank, so the processes' slices of a batch do not share dropout masks.
    Rank 0 keeps the one-process key.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx != 0:
            return
        key = epoch_seed(self.seed, trainer.current_epoch)
        torch.manual_seed(key + trainer.global_rank)
        np.random.seed(key % 2**32)
        random.seed(key)
        for offset, gen in enumerate(_module_generators(pl_module), start=1):
            gen.manual_seed(key + 1_000 + offset)


def best_epoch(val_history: list[tuple[int, dict[str, float]]], monitor: str, mode: str = "max") -> int:
    """The epoch a run keeps: the best ``monitor`` of its validation history (``mode``
    ``max`` or ``min``), the earliest of ties, as the best-model checkpoint keeps the first
    (it saves only on a strict improvement). 0 for an empty history (a baseline's fit)."""
    if not val_history:
        return 0
    sign = -1.0 if mode == "min" else 1.0
    return max(val_history, key=lambda e: sign * e[1][monitor])[0]
