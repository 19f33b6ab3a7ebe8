"""RecBole's SASRec (``recbole.model.sequential_recommender.SASRec``) on the harness's split; run with
the peers' Python.

    benchmarks/peers/.venv/bin/python benchmarks/peers/run_recbole.py --data DIR --out recbole.json

RecBole reads ``DIR/recbole/recbole.inter`` (every event, ``timestamp`` = position) and splits it
itself (``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}``); the runner checks
that each user's validation and test target are ours. Training is RecBole's own epoch
(``Trainer._train_epoch``: its data loader, its loss, its Adam), with ``loss_type: CE``, the full
softmax over the catalogue; RecBole makes every prefix of a user's training sequence one sample
and puts the loss on its last position only, so an epoch has about as many samples as events.

After every epoch every user is scored over the full catalogue with RecBole's
``full_sort_predict`` on RecBole's own evaluation batches; the scores are ranked by
``benchmarks/peers/common.py`` (recsys's masking of seen items, pessimistic ranks, NDCG@10).
RecBole's own evaluator is not used: for sequential models it does not remove seen items, and
its top-k breaks ties optimistically.

An epoch can outlast the whole budget (about 48 minutes on the ML-1M partial), so this runner
also checks the budget between batches: an epoch cut short is recorded as partial, with the
share of its batches that ran, and its model is still validated and tested.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Evaluator, Schedule, load_prepared, ndcg10, peer_arguments, write_record  # noqa: E402


class UntilDeadline:
    """Iterates a RecBole training loader, stopping before the first batch past ``deadline``."""

    def __init__(self, loader, deadline: float) -> None:
        self.loader, self.deadline = loader, deadline
        self.done, self.cut = 0, False

    def __getattr__(self, name):  # shuffle, sampler, ... as the loader's
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.done, self.cut = 0, False
        for batch in self.loader:
            if time.perf_counter() >= self.deadline:
                self.cut = True
                return
            self.done += 1
            yield batch


def score_users(model, loader, prepared, stage: str, user_ours: np.ndarray, item_ours: np.ndarray) -> torch.Tensor:
    """Per-user ranks of ``stage``'s targets from RecBole's full_sort_predict on its own batches."""
    evaluator = Evaluator(prepared, stage)
    targets = prepared.targets(stage)
    cols = torch.from_numpy(item_ours[1:])  # RecBole item j (j >= 1; 0 is [PAD]) -> our id
    model.eval()
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in loader:
            users = user_ours[interaction["user_id"].numpy()]
            if len(positive_u) != len(users) or not np.array_equal(item_ours[positive_i.numpy()][np.argsort(
                    positive_u.numpy())], targets[users]):
                raise RuntimeError(f"RecBole's {stage} targets differ from the harness's split")
            logits = model.full_sort_predict(interaction).view(len(users), -1)  # (B, 1 + I)
            scores = torch.full((len(users), prepared.n_items + 1), float("-inf"))
            scores[:, cols] = logits[:, 1:]
            evaluator.add(users, scores)
    model.train()
    return evaluator.result()


def main(argv: list[str] | None = None) -> int:
    args = peer_arguments(__doc__).parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value settings from the command line

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    prepared = load_prepared(args.data)  # the evaluation's targets and seen items, not RecBole's preparation
    settings = {
        "MAX_ITEM_LIST_LENGTH": args.max_len, "n_layers": args.blocks, "n_heads": args.heads,
        "hidden_size": args.dim, "inner_size": args.dim,  # feed-forward D -> D, as ours and RecTools'
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout, "hidden_act": "gelu",
        "loss_type": "CE", "train_neg_sample_args": None, "train_batch_size": args.batch_size,
        "learner": "adam", "learning_rate": args.lr, "weight_decay": 0.0, "eval_batch_size": args.eval_batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="recbole-") as scratch:
        t0 = time.perf_counter()
        config = Config(model="SASRec", dataset="recbole", config_dict={
            **settings, "data_path": str(args.data), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "device": "cpu", "use_gpu": False, "seed": args.seed, "reproducibility": True, "show_progress": False,
            "checkpoint_dir": scratch, "worker": 0,
        })
        init_seed(config["seed"], config["reproducibility"])
        torch.set_num_threads(args.threads)
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        prepare_s = time.perf_counter() - t0

        user_ours = np.array([-1 if t == "[PAD]" else int(t) for t in dataset.field2id_token["user_id"]], dtype=np.int64)
        item_ours = np.array([0 if t == "[PAD]" else int(t) for t in dataset.field2id_token["item_id"]], dtype=np.int64)
        model = SASRec(config, train_data.dataset)
        trainer = Trainer(config, model)
        schedule = Schedule(args.budget_minutes * 60, args.max_epochs, args.patience)
        epochs, partial, stopped, best_state = [], None, None, None
        schedule.start()
        while stopped is None:
            loader = UntilDeadline(train_data, schedule.deadline)
            t0 = time.perf_counter()
            trainer._train_epoch(loader, schedule.epochs, show_progress=False)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ranks = score_users(model, valid_data, prepared, "valid", user_ours, item_ours)
            val_s = time.perf_counter() - t0
            ndcg = ndcg10(ranks)
            if schedule.record(ndcg):
                best_state = copy.deepcopy(model.state_dict())
            row = {"epoch": schedule.epochs, "train_s": train_s, "val_s": val_s, "val_ndcg10": ndcg}
            if loader.cut:
                row.update(partial=True, batches_done=loader.done, batches=len(train_data))
                partial, stopped = row, "budget, within an epoch"
            epochs.append(row)
            print(f"   recbole epoch {schedule.epochs}{' (partial)' if loader.cut else ''}: train {train_s:.1f} s, "
                  f"validation {val_s:.1f} s, NDCG@10 {ndcg:.4f}", flush=True)
            stopped = stopped or schedule.stop_reason()

        model.load_state_dict(best_state)
        t0 = time.perf_counter()
        test_ranks = score_users(model, test_data, prepared, "test", user_ours, item_ours)
        test_s = time.perf_counter() - t0
    train_users = np.unique(train_data.dataset.inter_feat["user_id"].numpy())
    record = {
        "library": "recbole", "version": recbole.__version__, "torch": torch.__version__,
        "model": "recbole.model.sequential_recommender.SASRec",
        "loss": "CE: full softmax cross-entropy over the catalogue at the last position of every training prefix "
                "(loss_type='CE')",
        "settings": settings | {"adam_betas": [0.9, 0.999], "max_epochs": args.max_epochs, "patience": args.patience,
                                "budget_s": args.budget_minutes * 60, "seed": args.seed,
                                "train_samples": len(train_data.dataset)},
        "n_users": dataset.user_num - 1, "n_train_users": len(train_users), "n_items": dataset.item_num - 1,
        "n_items_unscorable": 0, "n_eval_users": prepared.n_users,
        "prepare_s": prepare_s, "epochs": [e for e in epochs if not e.get("partial")], "partial_epoch": partial,
        "stopped": stopped, "best_epoch": schedule.best_epoch,
        "test_ndcg10": ndcg10(test_ranks), "test_eval_s": test_s,
    }
    write_record(args.out, record, test_ranks, name="recbole")
    return 0


if __name__ == "__main__":
    sys.exit(main())
