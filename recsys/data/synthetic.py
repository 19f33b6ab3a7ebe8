"""Synthetic event logs with planted structure whose Bayes-optimal ranking is known.

Each item ``i`` has one fixed successor ``succ[i]`` (a random permutation). A user's
next item is ``succ[last]`` with probability ``p_follow`` and otherwise uniform over the
whole catalogue. Given the history, the best possible ranking therefore puts
``succ[last]`` first and leaves every other item equally likely, so the optimal metrics
have a closed form (``optimal_metrics``). A trained model should come close to them; a
model that beats them by more than noise is seeing something it should not: leakage.

Generation is vectorised over users (one numpy step per position), so 20M events take
seconds, which also makes this the large-catalogue load generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PlantedLog:
    frame: pd.DataFrame  # user, item, timestamp: the canonical event-log columns
    successor: np.ndarray  # (n_items,) succ[i] for item index i (0-based)
    p_follow: float
    n_items: int

    @property
    def p_target_is_successor(self) -> float:
        """P(next == succ[last]): followed the chain, or jumped there by chance."""
        return self.p_follow + (1.0 - self.p_follow) / self.n_items


def planted_markov_log(
    n_users: int,
    n_items: int,
    p_follow: float = 0.7,
    min_len: int = 5,
    max_len: int = 20,
    seed: int = 0,
) -> PlantedLog:
    """Users with ``min_len..max_len`` events; ids are ``u<k>`` and ``i<k>`` strings."""
    if not 0.0 <= p_follow <= 1.0:
        raise ValueError("p_follow must be in [0, 1]")
    if n_items < 2 or min_len < 1 or max_len < min_len:
        raise ValueError("need n_items >= 2 and 1 <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    successor = rng.permutation(n_items)
    lengths = rng.integers(min_len, max_len + 1, size=n_users)
    steps = np.empty((n_users, max_len), dtype=np.int64)  # (U, T) item index per step
    steps[:, 0] = rng.integers(n_items, size=n_users)
    for t in range(1, max_len):
        follow = rng.random(n_users) < p_follow
        jump = rng.integers(n_items, size=n_users)
        steps[:, t] = np.where(follow, successor[steps[:, t - 1]], jump)
    keep = np.arange(max_len)[None, :] < lengths[:, None]  # (U, T)
    user_idx = np.broadcast_to(np.arange(n_users)[:, None], keep.shape)[keep]
    items = steps[keep]
    timestamps = np.broadcast_to(np.arange(max_len)[None, :], keep.shape)[keep] * 60 + 1_600_000_000
    frame = pd.DataFrame(
        {
            "user": np.char.add("u", user_idx.astype(str)).astype(object),
            "item": np.char.add("i", items.astype(str)).astype(object),
            "timestamp": timestamps.astype(np.int64),
        }
    )
    return PlantedLog(frame, successor, p_follow, n_items)


def successor_hit_rate(log: PlantedLog, from_end: int) -> float:
    """Share of users whose target ``from_end`` events before the end (1 = test target,
    2 = validation target) is the successor of the event just before it."""
    items = log.frame["item"].str[1:].astype(np.int64).to_numpy()
    ends = np.flatnonzero(np.r_[log.frame["user"].to_numpy()[1:] != log.frame["user"].to_numpy()[:-1], True])
    target, previous = items[ends - from_end + 1], items[ends - from_end]
    return float(np.mean(log.successor[previous] == target))


def optimal_metrics(
    log: PlantedLog, ks: tuple[int, ...] = (1, 5, 10, 20), q: float | None = None
) -> dict[str, float]:
    """Expected metrics of the Bayes-optimal ranker for one next-item target.

    With probability q the target is ``succ[last]`` (rank 1). Otherwise it is one of the
    other ``V - 1`` equally likely items, and no ranker can beat placing it uniformly at
    ranks ``2..V``. ``q`` defaults to its expectation; pass ``successor_hit_rate`` to get
    the optimum on the very targets of a sample, which removes the sampling noise of q.
    The catalogue ``V`` counts every item id the generator can emit.
    """
    q = log.p_target_is_successor if q is None else q
    V = log.n_items
    out = {}
    for k in ks:
        rest_ranks = range(2, min(k, V) + 1)
        out[f"hr@{k}"] = q + (1 - q) * len(rest_ranks) / (V - 1)
        out[f"ndcg@{k}"] = q + (1 - q) * sum(1 / math.log2(r + 1) for r in rest_ranks) / (V - 1)
        out[f"mrr@{k}"] = q + (1 - q) * sum(1 / r for r in rest_ranks) / (V - 1)
    return out
