"""Behaviour metrics (next action, purchase, churn) with user-bootstrap intervals.

Every scored moment belongs to one user, and a user's moments are not independent (one
shopper's carts follow one another), so intervals resample **users**, not moments: a
resample draws ``U`` users with replacement and weighs each moment by how often its user
was drawn (a cluster bootstrap). Each metric is recomputed on every resample, and the
interval is the percentile interval of those values (``confidence`` 0.95 by default).
Point values are computed on the sample itself.

Metrics (classes given 0-based; ``probs`` column c is class c):

- ``log_loss``: mean negative log-likelihood of the target, probabilities clipped to
  ``[1e-7, 1]`` (binary: ``[1e-7, 1 - 1e-7]``), as ``recsys.eval.actions``;
- ``accuracy`` and ``macro_f1`` of ``argmax probs`` (macro-F1 averages the classes that
  occur among the targets);
- ``roc_auc``: binary ROC-AUC with ties counted one half; for next action one-vs-rest per
  class (point value only).

Pure numpy, weighted versions of the usual formulas: with all weights 1 they equal
scikit-learn's (the tests check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EPS = 1e-7
_CHUNK = 2_000_000  # resampled weights held at once (resamples x moments)


def resampled_weights(users: np.ndarray, n_resamples: int, seed: int = 0):
    """Yield blocks (r, M) of moment weights, one row per bootstrap resample of users."""
    _, dense = np.unique(np.asarray(users), return_inverse=True)
    n_users = int(dense.max()) + 1 if len(dense) else 0
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(len(dense), 1))
    for lo in range(0, n_resamples, step):
        r = min(step, n_resamples - lo)
        draws = rng.integers(0, n_users, size=(r, n_users))
        flat = (np.arange(r)[:, None] * n_users + draws).ravel()
        counts = np.bincount(flat, minlength=r * n_users).reshape(r, n_users).astype(np.float64)
        yield counts[:, dense]  # (r, M)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties 1/2) of ``scores`` (M,) for binary ``labels`` (M,) under each row of
    ``weights`` (R, M); nan where a row has no positive or no negative weight."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    pos = np.add.reduceat(w * y, starts, axis=1)  # (R, G)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    won = (pos * (below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((total_pos > 0) & (total_neg > 0), won / (total_pos * total_neg), np.nan)


def _weighted_macro_f1(pred: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    scores = []
    for c in np.unique(targets):
        tp = weights @ ((pred == c) & (targets == c))
        fp = weights @ ((pred == c) & (targets != c))
        fn = weights @ ((pred != c) & (targets == c))
        denom = 2 * tp + fp + fn
        scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0))
    return np.mean(scores, axis=0)


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [float(low), float(high)]


def _with_intervals(
    metrics: dict[str, Callable[[np.ndarray], np.ndarray]], users: np.ndarray, n_resamples: int, seed: int,
    confidence: float,
) -> dict:
    """Each metric (a function of a weight block (R, M) -> (R,)) at weights 1 and its interval."""
    ones = np.ones((1, len(users)))
    out = {name: float(fn(ones)[0]) for name, fn in metrics.items()}
    if n_resamples > 0:
        draws = {name: [] for name in metrics}
        for block in resampled_weights(users, n_resamples, seed):
            for name, fn in metrics.items():
                draws[name].append(fn(block))
        for name in metrics:
            out[f"{name}_ci"] = _interval(np.concatenate(draws[name]), confidence)
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}


def next_action_report(
    probs: np.ndarray, targets: np.ndarray, users: np.ndarray, names: Sequence[str],
    n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """probs (M, E), targets (M,) 0-based, users (M,): log-loss, accuracy and macro-F1 with
    user-bootstrap intervals, per-class ROC-AUC, the moment and user counts."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    nll = -np.log(np.clip(probs[np.arange(len(targets)), targets], EPS, 1.0))
    pred = probs.argmax(axis=1)
    correct = (pred == targets).astype(np.float64)
    metrics = {
        "log_loss": lambda w: (w @ nll) / w.sum(axis=1),
        "accuracy": lambda w: (w @ correct) / w.sum(axis=1),
        "macro_f1": lambda w: _weighted_macro_f1(pred, targets, w),
    }
    out = {"n": int(len(targets)), "n_users": int(len(np.unique(users)))}
    out.update(_with_intervals(metrics, np.asarray(users), n_resamples, seed, confidence))
    ones = np.ones((1, len(targets)))
    auc = {name: weighted_auc(probs[:, c], targets == c, ones)[0] for c, name in enumerate(names)}
    out["roc_auc"] = {k: None if np.isnan(v) else float(v) for k, v in auc.items()}
    return out


def binary_report(
    prob: np.ndarray, labels: np.ndarray, users: np.ndarray,
    n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """prob (M,) of label 1, labels (M,) 0/1, users (M,): ROC-AUC and log-loss with
    user-bootstrap intervals, the positive rate and the counts."""
    prob = np.asarray(prob, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    p = np.clip(prob, EPS, 1 - EPS)
    nll = -np.where(labels, np.log(p), np.log1p(-p))
    metrics = {
        "roc_auc": lambda w: weighted_auc(prob, labels, w),
        "log_loss": lambda w: (w @ nll) / w.sum(axis=1),
    }
    out = {"n": int(len(labels)), "n_users": int(len(np.unique(users))), "positive_rate": float(labels.mean())}
    out.update(_with_intervals(metrics, np.asarray(users), n_resamples, seed, confidence))
    return out


def paired_log_loss_difference(
    nll_a: np.ndarray, nll_b: np.ndarray, users: np.ndarray, n_resamples: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Mean per-moment ``nll_a - nll_b`` on the same moments, with its user-bootstrap
    interval: a paired comparison, tighter than two separate intervals."""
    diff = np.asarray(nll_a, dtype=np.float64) - np.asarray(nll_b, dtype=np.float64)
    return _with_intervals({"difference": lambda w: (w @ diff) / w.sum(axis=1)}, np.asarray(users),
                           n_resamples, seed, confidence)


def per_moment_nll(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(M,) negative log-likelihood of each target (clipped as ``log_loss``)."""
    probs = np.asarray(probs, dtype=np.float64)
    return -np.log(np.clip(probs[np.arange(len(targets)), np.asarray(targets)], EPS, 1.0))
