"""First-order item-to-item transitions (a Markov chain on items), backed off to popularity.

score(j | history) = #(last item -> j in training sequences) + popularity_key(j): the
transition count ranks first, and training popularity (< 1) orders the items that share
a count, including every item when the last item was never followed by anything.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.baselines.base import TrainingEvents, popularity_key, with_pad_column
from recsys.types import PAD_ID


class ItemTransitions:
    def __init__(self) -> None:
        self.transitions: sp.csr_matrix | None = None  # (n + 1, n + 1) counts a -> b
        self.backoff: np.ndarray | None = None  # (n + 1,) popularity key in [0, 1)

    def fit(self, data: TrainingEvents) -> ItemTransitions:
        pos = data.positions()
        # Consecutive pairs inside one user's training events: drop each user's last event
        # as a source, so no pair crosses from one user into the next.
        is_last = np.zeros(len(data.items) + 1, dtype=bool)
        is_last[data.stop - 1] = True
        src = pos[~is_last[pos]]
        n = data.n_items + 1
        ones = np.ones(len(src), dtype=np.float64)
        self.transitions = sp.csr_matrix((ones, (data.items[src], data.items[src + 1])), shape=(n, n))
        self.transitions.sum_duplicates()
        self.backoff = popularity_key(data.counts(pos))
        return self

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        last = inputs[:, -1].numpy()  # left-padded: the newest item is the last column
        scores = self.transitions[last].toarray() + self.backoff[None, :]  # (B, n + 1)
        scores[last == PAD_ID] = self.backoff  # an empty history gets popularity only
        return with_pad_column(scores)
