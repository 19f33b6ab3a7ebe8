"""What the peer runners and the harness share: the handed-over split, the evaluator, the run record.

This file runs in two environments: ours (``.venv``) and the peers' (``benchmarks/peers/.venv``,
which has torch, numpy and pandas but not recsys's other dependencies). So it imports only
numpy and torch at the top, and from recsys only ``recsys.eval`` (plain torch): every library's
validation and test NDCG@10 come from the same ranking and metric code as ours.

The split (``split.npz``) is recsys's own leave-one-out split, handed over in our item ids
(1..n_items; 0 is padding): user ``u``'s training events are
``train_items[train_offsets[u]:train_offsets[u + 1]]``; its validation target follows them, and
its test target follows the validation target. A stage's input history (and the items excluded
from its candidates, ``eval.exclude_seen``) is everything before its target.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the peers' environment does not install recsys
    sys.path.insert(0, str(ROOT))

from recsys.eval.metrics import ndcg_at_k  # noqa: E402  (plain torch)
from recsys.eval.ranking import mask_seen, target_ranks  # noqa: E402

SPLIT_FILE = "split.npz"
STAGES = ("valid", "test")


@dataclass(frozen=True)
class Prepared:
    n_items: int  # real items, ids 1..n_items
    train_offsets: np.ndarray  # (U + 1,) int64
    train_items: np.ndarray  # (N,) int64, our item ids, each user's training events in time order
    valid_target: np.ndarray  # (U,) int64
    test_target: np.ndarray  # (U,) int64

    @property
    def n_users(self) -> int:
        return len(self.valid_target)

    def history(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, items) of every user's input history for ``stage`` ("train" = the training
        events; "valid" = the same; "test" = the training events and the validation target)."""
        if stage in ("train", "valid"):
            return self.train_offsets, self.train_items
        if stage != "test":
            raise ValueError(f"unknown stage {stage!r}")
        return append_each(self.train_offsets, self.train_items, self.valid_target)

    def targets(self, stage: str) -> np.ndarray:
        return {"valid": self.valid_target, "test": self.test_target}[stage]


def append_each(offsets: np.ndarray, items: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR sequences ``(offsets, items)`` with ``extra[u]`` appended to user ``u``'s."""
    new_offsets = offsets + np.arange(len(offsets))  # user u gains one item, after the u before it
    out = np.empty(len(items) + len(extra), dtype=np.int64)
    last = new_offsets[1:] - 1
    keep = np.ones(len(out), dtype=bool)
    keep[last] = False
    out[keep], out[last] = items, extra
    return new_offsets, out


def prepared_from_split(split, n_items: int) -> Prepared:
    """A recsys leave-one-out ``Split`` (``recsys.data.splits.leave_one_out``) as ``Prepared``."""
    seqs = split.sequences
    start, train_end = split.train.start, split.train.end + 1  # training events: items[start:train_end]
    if not (np.array_equal(split.valid.start, start) and np.array_equal(split.valid.end, train_end)
            and np.array_equal(split.test.start, start) and np.array_equal(split.test.end, train_end + 1)):
        raise ValueError("the peers harness needs the leave-one-out split (data.split: loo)")
    for held in (split.train, split.valid, split.test):
        if not np.array_equal(held.user, np.arange(seqs.n_users)):
            raise ValueError("every user must be in every stage of the split")
    lengths = train_end - start
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
    return Prepared(n_items, offsets, seqs.items[positions].astype(np.int64),
                    seqs.items[split.valid.end].astype(np.int64), seqs.items[split.test.end].astype(np.int64))


def save_prepared(prepared: Prepared, folder: Path) -> Path:
    path = Path(folder) / SPLIT_FILE
    np.savez(path, n_items=prepared.n_items, train_offsets=prepared.train_offsets, train_items=prepared.train_items,
             valid_target=prepared.valid_target, test_target=prepared.test_target)
    return path


def load_prepared(folder: Path) -> Prepared:
    with np.load(Path(folder) / SPLIT_FILE) as z:
        return Prepared(int(z["n_items"]), z["train_offsets"], z["train_items"], z["valid_target"], z["test_target"])


def _user_positions(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, position within the user) of every event of a CSR history."""
    lengths = np.diff(offsets)
    users = np.repeat(np.arange(len(lengths)), lengths)
    return users, np.arange(offsets[-1]) - offsets[:-1][users]


def write_peer_files(prepared: Prepared, folder: Path) -> dict[str, Path]:
    """The split in each peer's input format, users as indices and items as our ids.

    - ``rectools.csv``: the training events (``user_id,item_id,weight,datetime``; weight 1,
      datetime = the event's position in the user's history, so RecTools' sort keeps our order);
    - ``recbole/recbole.inter``: every event, training, validation and test target, with
      ``timestamp`` = position; RecBole's own leave-one-out split (``LS: valid_and_test``,
      ``order: TO``) of it is ours, which its runner checks user by user.
    """
    folder = Path(folder)
    users, pos = _user_positions(prepared.train_offsets)
    rows = np.stack([users, prepared.train_items, np.ones_like(users), pos], axis=1)
    np.savetxt(folder / "rectools.csv", rows, fmt="%d", delimiter=",", header="user_id,item_id,weight,datetime",
               comments="")
    full_offsets, full = append_each(*prepared.history("test"), prepared.test_target)
    users, pos = _user_positions(full_offsets)
    (folder / "recbole").mkdir(exist_ok=True)
    np.savetxt(folder / "recbole" / "recbole.inter", np.stack([users, full, pos], axis=1), fmt="%d", delimiter="\t",
               header="user_id:token\titem_id:token\ttimestamp:float", comments="")
    return {"rectools": folder / "rectools.csv", "recbole": folder / "recbole" / "recbole.inter"}


# ---- evaluation: every library's scores go through our masking, ranking and metric --------


class Evaluator:
    """Ranks of one stage's targets, fed with score blocks in our item ids.

    ``add(users, scores)``: ``users`` (B,) user indices, ``scores`` (B, n_items + 1) with our
    item ``i`` in column ``i`` (column 0, padding, is never ranked; an item the peer cannot
    score is ``-inf``, so as a target it ranks last). Seen items (the user's whole input
    history) are removed as with ``eval.exclude_seen: true``; ties are pessimistic.
    """

    def __init__(self, prepared: Prepared, stage: str) -> None:
        self.offsets, self.items = prepared.history(stage)
        self.target = torch.from_numpy(prepared.targets(stage))
        self.n_cols = prepared.n_items + 1
        self.ranks = torch.zeros(prepared.n_users, dtype=torch.int64)  # 0 = not scored yet

    def seen(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, item) pairs of every item in each user's input history."""
        start, end = self.offsets[users], self.offsets[users + 1]
        counts = end - start
        rows = np.repeat(np.arange(len(users)), counts)
        positions = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(self.items[positions])

    def add(self, users: np.ndarray, scores: torch.Tensor) -> None:
        users = np.asarray(users, dtype=np.int64)
        if scores.shape != (len(users), self.n_cols):
            raise ValueError(f"expected scores ({len(users)}, {self.n_cols}), got {tuple(scores.shape)}")
        if (self.ranks[users] != 0).any():
            raise ValueError("a user was scored twice")
        rows, items = self.seen(users)
        masked = mask_seen(scores.float(), rows, items)
        self.ranks[users] = target_ranks(masked, self.target[users])

    def result(self) -> torch.Tensor:
        if (self.ranks == 0).any():
            raise ValueError(f"{int((self.ranks == 0).sum())} users were not scored")
        return self.ranks


def ndcg10(ranks: torch.Tensor) -> float:
    return float(ndcg_at_k(ranks, 10).mean())


def input_windows(offsets: np.ndarray, items: np.ndarray, users: np.ndarray, width: int,
                  to_peer: np.ndarray | None = None) -> np.ndarray:
    """(B, width) left-padded (0) windows of the users' most recent ``width`` history items,
    optionally mapped through ``to_peer`` (our id -> the peer's id; 0 drops the item)."""
    out = np.zeros((len(users), width), dtype=np.int64)
    for row, u in enumerate(users):
        seq = items[offsets[u]:offsets[u + 1]]
        if to_peer is not None:
            seq = to_peer[seq]
            seq = seq[seq > 0]
        seq = seq[-width:]
        if len(seq):
            out[row, width - len(seq):] = seq
    return out


# ---- the run record ------------------------------------------------------------------------


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Schedule:
    """When to stop, the same rule for every library: after ``max_epochs``, after ``patience``
    epochs without a new best validation NDCG@10, or once ``budget_s`` of wall time (training
    and validation, from the first batch) has passed; checked after each epoch."""

    def __init__(self, budget_s: float, max_epochs: int, patience: int) -> None:
        self.budget_s, self.max_epochs, self.patience = budget_s, max_epochs, patience
        self.started = time.perf_counter()
        self.best, self.best_epoch, self.epochs = -math.inf, 0, 0

    def start(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def record(self, val_ndcg: float) -> bool:
        """Count one finished epoch; True if it is a new best (strictly)."""
        self.epochs += 1
        if val_ndcg > self.best:
            self.best, self.best_epoch = val_ndcg, self.epochs
            return True
        return False

    def stop_reason(self) -> str | None:
        if self.epochs >= self.max_epochs:
            return "max_epochs"
        if self.epochs - self.best_epoch >= self.patience:
            return "patience"
        if self.elapsed >= self.budget_s:
            return "budget"
        return None


def write_record(path: Path, record: dict, test_ranks: torch.Tensor | None = None, name: str | None = None) -> None:
    """The run's JSON record, and its per-user test ranks beside it (``<path>.ranks.npy``), from
    which the harness recomputes test NDCG@10 with ``recsys.eval.metrics``. With ``name``, a
    one-line summary of the run is printed for the harness's log."""
    path = Path(path)
    if test_ranks is not None:
        np.save(path.with_suffix(".ranks.npy"), test_ranks.numpy().astype(np.int64))
    record.setdefault("peak_rss_gb", peak_rss_gb())
    record.setdefault("torch_threads", torch.get_num_threads())
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    if name is not None:
        print(f"   {name}: test NDCG@10 {record['test_ndcg10']:.4f} (epoch {record['best_epoch']}), "
              f"peak RSS {record['peak_rss_gb']:.2f} GB", flush=True)


def peer_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every peer runner takes: where the split is, where the record goes, and
    the issue's settings (the harness passes them; the defaults are the issue's)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    return parser
