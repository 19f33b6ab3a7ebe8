"""recsys's SASRec through ``recsys.training.run.fit``, as a run of the peers harness; run with our Python.

    .venv/bin/python benchmarks/peers/run_ours.py --config experiments/ml-1m-partial/sasrec-ce.yaml \
        --set model.max_len=200 ... --data DIR --out ours.json

A process of its own, like the peers' runners, so its peak RSS is its own. ``fit`` prepares
the data itself (read, vocabulary, leave-one-out split: the split the harness handed to the
peers is built by the same code from the same config), validates after every epoch with its
Lightning validation (full catalogue, ``eval.exclude_seen``, pessimistic ties) and tests its
best-validation checkpoint. ``train.patience`` and ``train.max_epochs`` come with ``--set``;
the budget is checked after each epoch, as in the peers' runners.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_prepared, write_record  # noqa: E402


class EpochClock(pl.Callback):
    """Wall time of each epoch's training part and of its validation, and its val NDCG@10."""

    def __init__(self) -> None:
        self.train, self.val, self.val_ndcg, self._t = [], [], [], 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t = time.perf_counter()

    def on_validation_epoch_start(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.train.append(time.perf_counter() - self._t)
            self._t = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.val.append(time.perf_counter() - self._t)

    def on_train_epoch_end(self, trainer, module) -> None:
        # Called after the epoch's validation, once the module has logged its metrics
        # (callbacks' on_validation_epoch_end run before the module's).
        self.val_ndcg.append(float(trainer.callback_metrics.get("val/ndcg@10", float("nan"))))


class Budget(pl.Callback):
    """Stop after the first epoch that ends ``seconds`` or more after training started."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.hit, self._t0 = seconds, False, 0.0

    def on_train_start(self, trainer, module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if time.perf_counter() - self._t0 >= self.seconds:
            self.hit = trainer.should_stop = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    parser.add_argument("--data", type=Path, required=True, help="the harness's folder (for the user counts)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    args = parser.parse_args(argv)

    import recsys
    from recsys import rundir
    from recsys.config import ExperimentConfig
    from recsys.training.run import fit

    cfg = ExperimentConfig.from_yaml(args.config).with_overrides(args.set)
    clock, budget = EpochClock(), Budget(args.budget_minutes * 60)
    with tempfile.TemporaryDirectory(prefix="recsys-peers-") as tmp:
        result = fit(cfg, Path(tmp) / "run", callbacks=[clock, budget])
        test_ranks = torch.from_numpy(rundir.read_ranks(result.run_dir, "test").astype(np.int64))
    m = result.metrics
    epochs = [{"epoch": i + 1, "train_s": t, "val_s": v, "val_ndcg10": n}
              for i, (t, v, n) in enumerate(zip(clock.train, clock.val, clock.val_ndcg))]
    if budget.hit:
        stopped = "budget"
    elif m["epochs"] >= cfg.train.max_epochs:
        stopped = "max_epochs"
    else:
        stopped = "patience"
    prepared = load_prepared(args.data)
    record = {
        "library": "ours", "version": recsys.__version__, "torch": torch.__version__,
        "model": f"recsys {cfg.model.name} via recsys.training.run.fit",
        "loss": f"{cfg.train.loss}: full softmax cross-entropy over the catalogue at every position "
                f"(train.loss={cfg.train.loss}, {cfg.train.logit_precision} logits; batches in "
                f"train.length_groups={cfg.train.length_groups} length groups, encoder {cfg.train.encoder_precision}, "
                f"model.dropout_sampler={cfg.model.dropout_sampler})",
        "settings": {"config": cfg.to_dict(), "adam_betas": [0.9, 0.999], "budget_s": args.budget_minutes * 60},
        "n_users": m["dataset"]["summary"]["n_users"],
        "n_train_users": int((np.diff(prepared.train_offsets) >= 2).sum()),  # users with a training pair
        "n_items": m["dataset"]["summary"]["n_items"], "n_items_unscorable": 0, "n_eval_users": m["n_eval_users"],
        "prepare_s": m["wall_time_s"]["prepare"], "epochs": epochs, "partial_epoch": None, "stopped": stopped,
        "best_epoch": None if m["best_epoch"] is None else m["best_epoch"] + 1,  # fit counts from 0
        "test_ndcg10": m["test"]["ndcg@10"], "test_eval_s": None,
    }
    write_record(args.out, record, test_ranks, name="ours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
