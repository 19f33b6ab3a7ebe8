"""Most-popular and recently-popular: one score vector for every user.

Counts are over training events (inputs and training targets), never over validation or
test targets. Pessimistic ties in evaluation mean an item that shares its count with
others ranks below all of them, so these numbers are never flattered by tie order.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.baselines.base import TrainingEvents, popularity_key, with_pad_column

SECONDS_PER_DAY = 86_400


class MostPopular:
    """score(item) = number of training events on the item."""

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None  # (n + 1,)

    def fit(self, data: TrainingEvents) -> MostPopular:
        self.scores = data.counts().astype(np.float64)
        return self

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return with_pad_column(np.broadcast_to(self.scores, (inputs.shape[0], len(self.scores))))

    def state(self) -> dict[str, np.ndarray]:
        """The fitted scores, for a serving artifact."""
        return {"scores": self.scores}

    def load_state(self, state: dict[str, np.ndarray]) -> MostPopular:
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        return self


class RecentPopular:
    """Popularity within the last ``days`` days of the training log.

    The window ends at the latest training timestamp, ``[t_max - days, t_max]``;
    ties (items with equal recent counts, e.g. all items unseen in the window) are broken
    by all-time training popularity. Needs real timestamps: data that only has event
    positions (S3-Rec, SASRec/BERT4Rec files) is refused rather than silently treated as time.
    """

    def __init__(self, days: float = 7.0) -> None:
        if days <= 0:
            raise ValueError(f"days must be > 0, got {days}")
        self.days = days
        self.scores: np.ndarray | None = None
        self.window: tuple[int, int] | None = None

    def fit(self, data: TrainingEvents) -> RecentPopular:
        if data.timestamps is None:
            raise ValueError(
                "recent_popularity needs real timestamps, but this data only has event positions "
                "(formats s3rec / user_item, or no data.time_col); use model.name=popularity"
            )
        pos = data.positions()
        stamps = data.timestamps[pos]
        t_max = int(stamps.max())
        t_min = t_max - int(self.days * SECONDS_PER_DAY)
        recent = data.counts(pos[stamps >= t_min]).astype(np.float64)
        self.scores = recent + popularity_key(data.counts(pos))
        self.window = (t_min, t_max)
        return self

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return with_pad_column(np.broadcast_to(self.scores, (inputs.shape[0], len(self.scores))))

    def state(self) -> dict[str, np.ndarray]:
        """The fitted scores (recent counts + popularity key), for a serving artifact."""
        return {"scores": self.scores}

    def load_state(self, state: dict[str, np.ndarray]) -> RecentPopular:
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        return self
