"""RecTools' SASRec (``rectools.models.SASRecModel``) on the harness's split; run with the peers' Python.

    benchmarks/peers/.venv/bin/python benchmarks/peers/run_rectools.py --data DIR --out rectools.json

Trains on ``DIR/rectools.csv`` (each user's training events, our item ids, ``datetime`` = the
event's position) with RecTools' own fit (its Lightning module, data preparator and loss), and
after every epoch scores every user over the full catalogue with RecTools' own inference path
(``_get_user_item_embeddings``: its encoder on the newest position, dot product with its item
table). The scores are ranked by ``benchmarks/peers/common.py`` (recsys's masking, pessimistic
ranks and NDCG@10), not by RecTools' ``recommend``, so every library is scored by one metric code.

RecTools builds its item table from the training interactions: an item that occurs only as a
validation or test target cannot be scored (its target ranks last), and is dropped from a test
input history, as RecTools' ``recommend`` drops unknown items. The record says how many.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Evaluator,
    Schedule,
    input_windows,
    load_prepared,
    ndcg10,
    peer_arguments,
    write_record,
)

RUN: dict = {}  # shared with the callback: RecTools deep-copies the Trainer (and its callbacks) in fit


def score_users(module, stage: str) -> torch.Tensor:
    """Per-user ranks of ``stage``'s targets, from RecTools' encoder and item table."""
    prepared, bs, width = RUN["prepared"], RUN["eval_batch_size"], RUN["max_len"]
    dp = module.data_preparator
    n_extra = dp.n_item_extra_tokens  # padding token(s) first in RecTools' item ids
    ours = np.asarray(dp.item_id_map.external_ids[n_extra:], dtype=np.int64)  # RecTools id n_extra + j -> our id
    to_peer = np.zeros(prepared.n_items + 1, dtype=np.int64)
    to_peer[ours] = np.arange(n_extra, n_extra + len(ours))
    offsets, items = prepared.history(stage)
    blocks = [np.arange(s, min(s + bs, prepared.n_users)) for s in range(0, prepared.n_users, bs)]
    batches = [{"x": torch.from_numpy(input_windows(offsets, items, users, width, to_peer))} for users in blocks]
    user_embs, item_embs = module._get_user_item_embeddings(batches, "cpu")  # (U, D), (n_extra + I, D); eval mode
    evaluator = Evaluator(prepared, stage)
    with torch.no_grad():
        for users in blocks:
            logits = module.torch_model.similarity_module._get_full_catalog_logits(
                user_embs[users], item_embs)  # (B, n_extra + I)
            scores = torch.full((len(users), prepared.n_items + 1), float("-inf"))
            scores[:, torch.from_numpy(ours)] = logits[:, n_extra:]
            evaluator.add(users, scores)
    module.train()
    return evaluator.result()


def make_trainer():
    import pytorch_lightning as pl

    class EpochEval(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            RUN["schedule"].start()

        def on_train_epoch_start(self, trainer, module) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            train_s = time.perf_counter() - self.t0
            t0 = time.perf_counter()
            ranks = score_users(module, "valid")
            val_s = time.perf_counter() - t0
            ndcg = ndcg10(ranks)
            schedule = RUN["schedule"]
            if schedule.record(ndcg):
                RUN["best_state"] = copy.deepcopy(module.torch_model.state_dict())
            RUN["epochs"].append({"epoch": schedule.epochs, "train_s": train_s, "val_s": val_s, "val_ndcg10": ndcg})
            print(f"   rectools epoch {schedule.epochs}: train {train_s:.1f} s, validation {val_s:.1f} s, "
                  f"NDCG@10 {ndcg:.4f}", flush=True)
            reason = schedule.stop_reason()
            if reason:
                RUN["stopped"] = reason
                trainer.should_stop = True

    return pl.Trainer(
        max_epochs=RUN["max_epochs"], accelerator="cpu", devices=1, deterministic=True, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[EpochEval()],
    )


def timed(record: dict, key: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        record[key] = record.get(key, 0.0) + time.perf_counter() - t0
        return out
    return wrapper


def main(argv: list[str] | None = None) -> int:
    args = peer_arguments(__doc__).parse_args(argv)
    torch.set_num_threads(args.threads)

    import pandas as pd
    import pytorch_lightning as pl
    import rectools
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    pl.seed_everything(args.seed, verbose=False)
    prepared = load_prepared(args.data)  # the evaluation's inputs and targets, not RecTools' preparation
    RUN.update(prepared=prepared, eval_batch_size=args.eval_batch_size, max_len=args.max_len, epochs=[],
               max_epochs=args.max_epochs, stopped="max_epochs",
               schedule=Schedule(args.budget_minutes * 60, args.max_epochs, args.patience))
    prep: dict = {}
    t0 = time.perf_counter()
    frame = pd.read_csv(args.data / "rectools.csv")
    dataset = Dataset.construct(frame)
    prep["read_and_construct_s"] = time.perf_counter() - t0
    del frame
    settings = dict(n_blocks=args.blocks, n_heads=args.heads, n_factors=args.dim, dropout_rate=args.dropout,
                    session_max_len=args.max_len, batch_size=args.batch_size, lr=args.lr, loss="softmax",
                    epochs=args.max_epochs, deterministic=True, recommend_batch_size=args.eval_batch_size)
    model = SASRecModel(**settings, get_trainer_func=make_trainer)
    # RecTools' own data preparation happens inside fit: time it apart from the first epoch.
    dp = model.data_preparator
    dp.process_dataset_train = timed(prep, "process_dataset_train_s", dp.process_dataset_train)
    dp.get_dataloader_train = timed(prep, "get_dataloader_train_s", dp.get_dataloader_train)
    model.fit(dataset)

    module = model.lightning_model
    module.torch_model.load_state_dict(RUN["best_state"])
    t0 = time.perf_counter()
    test_ranks = score_users(module, "test")
    test_s = time.perf_counter() - t0
    dp = model.data_preparator
    n_items = len(dp.item_id_map.external_ids) - dp.n_item_extra_tokens
    schedule = RUN["schedule"]
    record = {
        "library": "rectools", "version": rectools.__version__, "torch": torch.__version__,
        "model": "rectools.models.SASRecModel",
        "loss": "softmax: full softmax cross-entropy over the catalogue at every position (loss='softmax')",
        "settings": {k: v for k, v in settings.items() if k != "epochs"} | {
            "adam_betas": list(module.adam_betas), "feed_forward": "D -> D, ReLU (SASRec authors' block)",
            "max_epochs": args.max_epochs, "patience": args.patience, "budget_s": args.budget_minutes * 60,
            "seed": args.seed},
        "n_users": prepared.n_users, "n_train_users": len(dp.train_dataset.user_id_map.external_ids),
        "n_items": n_items, "n_items_unscorable": prepared.n_items - n_items, "n_eval_users": prepared.n_users,
        "n_items_in_training_events": len(np.unique(prepared.train_items)),  # what RecTools' table should hold
        "prepare_s": sum(prep.values()), "prepare_parts_s": prep,
        "epochs": RUN["epochs"], "partial_epoch": None, "stopped": RUN["stopped"], "best_epoch": schedule.best_epoch,
        "test_ndcg10": ndcg10(test_ranks), "test_eval_s": test_s,
    }
    write_record(args.out, record, test_ranks, name="rectools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
