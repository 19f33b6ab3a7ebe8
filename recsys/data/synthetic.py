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


# ---- a harder planted log: mixture of lag-1 / lag-k transitions and a latent taste -------


@dataclass(frozen=True)
class MixtureLog:
    """A log from ``planted_mixture_log`` and everything its exact oracle needs.

    Item ``i`` (0-based) is written as ``i<i>``, user ``u`` as ``u<u>``. ``succ[l]`` (V, S)
    and ``succ_weight[l]`` (V, S) are the lag-``lags[l]`` successor tables; ``taste`` (C, V)
    is each cluster's next-item distribution, ``prior`` (C,) the clusters' shares, and
    ``mix`` the component weights ``(lag_1, ..., lag_m, taste)``.
    """

    frame: pd.DataFrame  # user, item, timestamp
    sequences: list[np.ndarray]  # per user, item indices oldest first
    clusters: np.ndarray  # (U,) each user's latent cluster (the oracle never reads it)
    lags: tuple[int, ...]
    succ: np.ndarray  # (m, V, S) int64
    succ_weight: np.ndarray  # (m, V, S) float64, rows sum to 1
    taste: np.ndarray  # (C, V) float64, rows sum to 1
    prior: np.ndarray  # (C,)
    mix: np.ndarray  # (m + 1,): lags' weights, then the taste's
    n_items: int

    def transition_matrix(self, lag_index: int) -> np.ndarray:
        """Dense (V, V) ``A[s, j]``: P(j | the item ``lags[lag_index]`` steps back is s)."""
        V = self.n_items
        out = np.zeros((V, V))
        rows = np.repeat(np.arange(V), self.succ.shape[2])
        np.add.at(out, (rows, self.succ[lag_index].ravel()), self.succ_weight[lag_index].ravel())
        return out


def planted_mixture_log(
    n_users: int,
    n_items: int,
    n_clusters: int = 20,
    n_successors: int = 4,
    lags: tuple[int, ...] = (1, 2),
    mix: tuple[float, ...] = (0.3, 0.25, 0.45),
    popularity_exponent: float = 0.8,
    cluster_focus: float = 0.9,
    mean_len: float = 48.0,
    min_len: int = 5,
    max_len: int = 200,
    seed: int = 0,
) -> MixtureLog:
    """A log with stochastic, overlapping, high-rank structure and an exact oracle.

    Each user has a latent taste cluster ``z`` (drawn from ``prior``, never written). Event
    ``t`` (0-based) is drawn from a mixture: with weight ``mix[l]`` one of the
    ``n_successors`` fixed, weighted successors of the item ``lags[l]`` steps back (when
    ``t >= lags[l]``), otherwise (``mix[-1]``, plus the weight of every lag not yet
    reachable) from the cluster's taste. Popularity is skewed: items carry Zipf weights
    (``popularity_exponent``) that shape both the tastes and which items are successors.
    A taste puts ``cluster_focus`` of its mass on its own cluster's items (a random
    partition of the catalogue) and the rest on the whole catalogue. Lengths are
    ``min_len`` plus a geometric draw with mean ``mean_len - min_len``, cut at ``max_len``.

    The successor tables are sparse and unrelated across items, so the lag-1 table alone
    has rank up to V: a single d-dimensional dot product cannot express it for d << V
    (the softmax bottleneck, Yang et al., ICLR 2018), and the taste must be inferred from the
    whole history. ``mixture_oracle_scores`` gives the exact posterior predictive.
    """
    mix_arr = np.asarray(mix, dtype=np.float64)
    if len(mix_arr) != len(lags) + 1 or (mix_arr < 0).any() or not np.isclose(mix_arr.sum(), 1.0):
        raise ValueError("mix needs one weight per lag plus the taste's, non-negative, summing to 1")
    if sorted(set(lags)) != list(lags) or lags[0] < 1:
        raise ValueError("lags must be distinct, increasing and >= 1")
    if n_items < n_successors + 1 or n_clusters < 1 or not 1 <= min_len <= max_len:
        raise ValueError("need n_items > n_successors, n_clusters >= 1 and 1 <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    V, C, S, m = n_items, n_clusters, n_successors, len(lags)
    popularity = 1.0 / np.arange(1, V + 1) ** popularity_exponent
    popularity = popularity[rng.permutation(V)]
    popularity /= popularity.sum()
    member = rng.integers(C, size=V)  # each item's home cluster
    taste = (1 - cluster_focus) * popularity[None, :] + cluster_focus * np.where(
        member[None, :] == np.arange(C)[:, None], popularity[None, :], 0.0
    ) / np.maximum(np.bincount(member, weights=popularity, minlength=C)[:, None], 1e-300)
    taste /= taste.sum(axis=1, keepdims=True)
    prior = rng.dirichlet(np.full(C, 5.0))
    succ = np.empty((m, V, S), dtype=np.int64)
    succ_weight = np.empty((m, V, S))
    for l in range(m):
        for s in range(V):
            p = popularity.copy()
            p[s] = 0.0  # an item is never its own successor
            succ[l, s] = rng.choice(V, size=S, replace=False, p=p / p.sum())
        succ_weight[l] = rng.dirichlet(np.full(S, 1.0), size=V)
    clusters = rng.choice(C, size=n_users, p=prior)
    extra = rng.geometric(1.0 / max(mean_len - min_len + 1, 1.0), size=n_users) - 1
    lengths = np.minimum(min_len + extra, max_len)
    T = int(lengths.max())
    steps = np.zeros((n_users, T), dtype=np.int64)  # (U, T)
    taste_cdf = np.cumsum(taste, axis=1)
    succ_cdf = np.cumsum(succ_weight, axis=2)
    for t in range(T):
        reachable = [l for l, k in enumerate(lags) if t >= k]
        weights = np.zeros(m + 1)
        weights[reachable] = mix_arr[reachable]
        weights[m] = 1.0 - weights[:m].sum()
        comp = rng.choice(m + 1, size=n_users, p=weights)
        u = rng.random(n_users)
        draw = np.minimum((taste_cdf[clusters] < u[:, None]).sum(axis=1), V - 1)
        for l in reachable:
            src = steps[:, t - lags[l]]
            j = np.minimum((succ_cdf[l, src] < u[:, None]).sum(axis=1), S - 1)
            draw = np.where(comp == l, succ[l, src, j], draw)
        steps[:, t] = draw
    keep = np.arange(T)[None, :] < lengths[:, None]
    user_idx = np.broadcast_to(np.arange(n_users)[:, None], keep.shape)[keep]
    items = steps[keep]
    timestamps = np.broadcast_to(np.arange(T)[None, :], keep.shape)[keep] * 60 + 1_600_000_000
    frame = pd.DataFrame({
        "user": np.char.add("u", user_idx.astype(str)).astype(object),
        "item": np.char.add("i", items.astype(str)).astype(object),
        "timestamp": timestamps.astype(np.int64),
    })
    sequences = [steps[u, : lengths[u]].copy() for u in range(n_users)]
    return MixtureLog(frame, sequences, clusters, tuple(lags), succ, succ_weight, taste, prior, mix_arr, V)


def _component_weights(log: MixtureLog, t: np.ndarray) -> np.ndarray:
    """Mixture weights ``(lag_1..lag_m, taste)`` at 0-based steps ``t`` (N,), as generated:
    (N, m + 1); a lag not yet reachable gives its weight to the taste."""
    t = np.asarray(t)
    reach = t[:, None] >= np.asarray(log.lags)[None, :]  # (N, m)
    w = np.where(reach, log.mix[None, : len(log.lags)], 0.0)
    return np.concatenate([w, 1.0 - w.sum(axis=1, keepdims=True)], axis=1)


def mixture_oracle_probs(log: MixtureLog, histories: list[np.ndarray]) -> np.ndarray:
    """The exact posterior predictive P(next item | history), (B, V), for B histories.

    Given the cluster z, step t's law is the known mixture, so the likelihood of a history
    is a product of mixture probabilities and P(z | history) follows by Bayes' rule; the
    predictive is the lags' successor mass plus the taste's weight times the posterior mix
    of tastes. Ranking by it maximises the expected HR@k and NDCG@k of every k: no ranker
    that sees only the history can do better in expectation."""
    B, V, m = len(histories), log.n_items, len(log.lags)
    lens = np.array([len(h) for h in histories], dtype=np.int64)
    T = int(lens.max()) if B else 0
    steps = np.zeros((B, max(T, 1)), dtype=np.int64)
    for b, h in enumerate(histories):
        steps[b, : len(h)] = h
    log_post = np.tile(np.log(log.prior), (B, 1))  # (B, C)
    for t in range(T):
        live = np.flatnonzero(lens > t)
        x = steps[live, t]
        w = _component_weights(log, np.full(len(live), t))  # (n, m + 1)
        p = w[:, m, None] * log.taste[:, x].T  # (n, C)
        for l, k in enumerate(log.lags):
            if t >= k:
                src = steps[live, t - k]
                hit = (log.succ[l, src] == x[:, None]) * log.succ_weight[l, src]  # (n, S)
                p += (w[:, l] * hit.sum(axis=1))[:, None]
        log_post[live] += np.log(p)
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    post /= post.sum(axis=1, keepdims=True)
    w = _component_weights(log, lens)  # (B, m + 1) at the step being predicted
    out = w[:, m, None] * (post @ log.taste)  # (B, V)
    rows = np.arange(B)[:, None]
    for l, k in enumerate(log.lags):
        ok = lens >= k
        src = steps[rows[ok, 0], lens[ok] - k]
        np.add.at(out, (rows[ok], log.succ[l, src]), w[ok, l, None] * log.succ_weight[l, src])
    return out


def mixture_oracle_ranks(log: MixtureLog, from_end: int = 1, block: int = 2048) -> np.ndarray:
    """1-based rank of each user's held-out target under the oracle, ties pessimistic: the
    event ``from_end`` before the end (1 = the leave-one-out test target, 2 = validation),
    ranked among all V items from the history before it."""
    ranks = []
    for i in range(0, len(log.sequences), block):
        seqs = log.sequences[i : i + block]
        probs = mixture_oracle_probs(log, [s[: len(s) - from_end] for s in seqs])  # (b, V)
        target = np.array([s[len(s) - from_end] for s in seqs])
        p_t = probs[np.arange(len(seqs)), target]
        ranks.append((probs >= p_t[:, None]).sum(axis=1))
    return np.concatenate(ranks)


def mixture_oracle_metrics(
    log: MixtureLog, from_end: int = 1, ks: tuple[int, ...] = (1, 5, 10, 20)
) -> dict[str, float]:
    """HR@k, NDCG@k, MRR@k of the oracle on the log's own held-out targets."""
    ranks = mixture_oracle_ranks(log, from_end)
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
    return out
