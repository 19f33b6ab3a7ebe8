"""First-order item-to-item transitions (a Markov chain on items), backed off to popularity.

score(j | history) = #(last item -> j in training sequences) + popularity_key(j): the
transition count ranks first, and training popularity (< 1) orders the items that share
a count, including every item when the last item was never followed by anything.

The counts are a CSR table in three numpy arrays (``indptr``, ``indices``, ``counts``):
row ``a`` lists the items that followed ``a`` and how often. Plain arrays, so a fitted
model saves into a serving artifact (``state`` / ``load_state``) and scores without scipy.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.baselines.base import TrainingEvents, popularity_key, with_pad_column


class ItemTransitions:
    def __init__(self) -> None:
        self.indptr: np.ndarray | None = None  # (n + 2,) int64: row a is indices[indptr[a]:indptr[a + 1]]
        self.indices: np.ndarray | None = None  # (P,) int64 next items, ascending within a row
        self.counts: np.ndarray | None = None  # (P,) float64 how often each pair occurred
        self.backoff: np.ndarray | None = None  # (n + 1,) popularity key in [0, 1)

    def fit(self, data: TrainingEvents) -> ItemTransitions:
        pos = data.positions()
        # Consecutive pairs inside one user's training events: drop each user's last event
        # as a source, so no pair crosses from one user into the next.
        is_last = np.zeros(len(data.items) + 1, dtype=bool)
        is_last[data.stop - 1] = True
        src = pos[~is_last[pos]]
        n = data.n_items + 1
        pairs, counts = np.unique(data.items[src].astype(np.int64) * n + data.items[src + 1], return_counts=True)
        rows = pairs // n
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
        self.indices = (pairs % n).astype(np.int64)
        self.counts = counts.astype(np.float64)
        self.backoff = popularity_key(data.counts(pos))
        return self

    def pair_count(self, a: int, b: int) -> float:
        """How often item ``b`` followed item ``a`` in the training events."""
        lo, hi = self.indptr[a], self.indptr[a + 1]
        hit = np.flatnonzero(self.indices[lo:hi] == b)
        return float(self.counts[lo + hit[0]]) if len(hit) else 0.0

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        last = inputs[:, -1].numpy()  # left-padded: the newest item is the last column
        scores = np.repeat(self.backoff[None, :], len(last), axis=0)  # (B, n + 1); PAD rows keep popularity only
        lo, hi = self.indptr[last], self.indptr[last + 1]  # PAD (0) has no successors
        rows = np.repeat(np.arange(len(last)), hi - lo)
        at = np.arange(int((hi - lo).sum())) + np.repeat(lo - np.concatenate([[0], np.cumsum(hi - lo)[:-1]]), hi - lo)
        scores[rows, self.indices[at]] = self.counts[at] + self.backoff[self.indices[at]]
        return with_pad_column(scores)

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays, for a serving artifact."""
        return {"indptr": self.indptr, "indices": self.indices, "counts": self.counts, "backoff": self.backoff}

    def load_state(self, state: dict[str, np.ndarray]) -> ItemTransitions:
        indptr, indices = np.asarray(state["indptr"], np.int64), np.asarray(state["indices"], np.int64)
        counts, backoff = np.asarray(state["counts"], np.float64), np.asarray(state["backoff"], np.float64)
        n = len(backoff)
        if indptr.shape != (n + 1,) or indices.shape != counts.shape or indptr[-1] != len(indices) or (
            len(indices) and (indices.min() < 0 or indices.max() >= n)
        ):
            raise ValueError("the transition table's arrays do not fit together")
        self.indptr, self.indices, self.counts, self.backoff = indptr, indices, counts, backoff
        return self
