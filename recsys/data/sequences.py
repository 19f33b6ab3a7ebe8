"""Per-user token sequences in CSR form: one flat item array plus user offsets.

User ``u``'s time-ordered history is ``items[offsets[u]:offsets[u + 1]]``. Every later
stage (splits, collation) indexes into this one array instead of holding Python lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.vocab import Vocab


@dataclass(frozen=True)
class Sequences:
    users: np.ndarray  # (U,) object: raw user ids
    offsets: np.ndarray  # (U + 1,) int64
    items: np.ndarray  # (N,) int64 token ids
    timestamps: np.ndarray  # (N,) int64

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def build_sequences(frame: pd.DataFrame, vocab: Vocab) -> Sequences:
    """``frame`` must be in canonical order: grouped by user, time-ordered within a user."""
    codes, users = pd.factorize(frame["user"], sort=False)
    if len(codes) and np.any(np.diff(codes) < 0):
        raise ValueError("event frame is not grouped by user; load it with data.events.load_events")
    counts = np.bincount(codes, minlength=len(users))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item_index = pd.Index(vocab.items)
    items = item_index.get_indexer(frame["item"].to_numpy()) + 1
    if (items == 0).any():
        raise KeyError("event frame holds items missing from the vocabulary")
    return Sequences(
        users=np.asarray(users, dtype=object),
        offsets=offsets,
        items=items.astype(np.int64),
        timestamps=frame["timestamp"].to_numpy(dtype=np.int64),
    )
