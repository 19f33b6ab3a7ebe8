"""What every item baseline shares: its training data and its scoring contract.

A baseline is fitted on ``TrainingEvents`` (the training part of the split only: never a
validation or test target) and then scores left-padded (B, L) histories over the whole
catalogue: ``score(inputs) -> (B, n + 1)``, column ``PAD_ID`` = -inf, exactly like
``recsys.nn.heads.score_items``. Ranking, ``exclude_seen`` and metrics are then the neural
models' own code path. Scores are float64 so composite keys (count, then popularity)
stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recsys.types import PAD_ID


@dataclass(frozen=True)
class TrainingEvents:
    """User u's training events are ``items[start[u]:stop[u]]``, oldest first.

    ``timestamps`` aligns with ``items``; ``None`` when the data has positions, not times.
    """

    items: np.ndarray  # (N,) int64 token ids 1..n
    start: np.ndarray  # (U,) int64
    stop: np.ndarray  # (U,) int64
    n_items: int
    timestamps: np.ndarray | None = None  # (N,) int64 epoch seconds

    def positions(self) -> np.ndarray:
        """Flat indices into ``items`` of every training event, user by user."""
        lengths = self.stop - self.start
        offsets = np.repeat(self.start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.arange(lengths.sum()) + offsets

    def counts(self, positions: np.ndarray | None = None) -> np.ndarray:
        """(n + 1,) occurrences of each token among the given (default: all) training events."""
        pos = self.positions() if positions is None else positions
        return np.bincount(self.items[pos], minlength=self.n_items + 1).astype(np.int64)


class Baseline(Protocol):
    def fit(self, data: TrainingEvents) -> Baseline: ...

    def score(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays: what a serving artifact stores (``load_state`` reads them back)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> Baseline: ...


def with_pad_column(scores: np.ndarray) -> torch.Tensor:
    """(B, n + 1) float64 scores with column ``PAD_ID`` set to -inf."""
    out = torch.from_numpy(np.asarray(scores, dtype=np.float64).copy())
    out[:, PAD_ID] = float("-inf")
    return out


def popularity_key(counts: np.ndarray) -> np.ndarray:
    """A score < 1 that orders items by training popularity: added to an integer count it
    breaks that count's ties by popularity without ever overturning it."""
    return counts / (counts.max() + 1.0)
