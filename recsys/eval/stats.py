"""Statistics for comparing runs, as pure numpy functions of per-user values.

Per-user values come from per-user ranks (``ranks.npz`` of a run): ``per_user(ranks,
"ndcg", 10)``. Users are the sampling unit: a confidence interval says how much a mean
would move on another draw of users from the same population, and a paired test compares
two models on the *same* users, which removes the (large) user-to-user variance that an
unpaired test would have to carry.

- ``bootstrap_ci``: percentile bootstrap interval of the mean over users
  (``scipy.stats.bootstrap``).
- ``paired_bootstrap_ci``: the same for the mean per-user difference of two models.
- ``paired_permutation_test``: two-sided sign-flip randomisation test of "mean per-user
  difference = 0" (Fisher's randomisation test, recommended for IR comparisons by Smucker,
  Allan and Carterette, CIKM 2007). Under the null hypothesis each user's difference is
  as likely to be positive as negative, so flipping signs at random draws from the null
  distribution; the p-value is the share of flips whose |mean| reaches the observed one.
  Exact (all 2^n flips) for small n, Monte Carlo otherwise. Hand-written, for the measured
  reason its docstring gives.

Every random function takes a ``seed``, so a leaderboard renders identically twice.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats as sps

_CHUNK = 4_000_000  # elements per resampling block: bounds memory at a few tens of MB


def per_user(ranks: np.ndarray, metric: str = "ndcg", k: int = 10) -> np.ndarray:
    """Per-user ``hr``, ``ndcg`` or ``mrr`` at ``k`` from 1-based ranks, as float64.

    The same formulas as ``recsys.eval.metrics`` (which works on torch tensors).
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.size and r.min() < 1:
        raise ValueError("ranks are 1-based")
    hit = r <= k
    if metric == "hr":
        return hit.astype(np.float64)
    if metric == "ndcg":
        return np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    if metric == "mrr":
        return np.where(hit, 1.0 / r, 0.0)
    raise ValueError(f"unknown metric {metric!r}; choose hr, ndcg or mrr")


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std is NaN for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def bootstrap_ci(
    values: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (one value per user).

    ``scipy.stats.bootstrap`` with the percentile method on ``numpy.random.default_rng(seed)``,
    vectorised, in batches of ``_CHUNK // n`` resamples: each batch draws a (batch, n) block
    of users with replacement, so memory stays at a few tens of MB. In one batch, 2,000
    resamples of S3-Rec Beauty's 22,363 users took 6.4 s instead of 0.8 s (one core) and
    two 0.36 GB arrays. The batches draw the same indices as this function's hand-written
    loop before it, so the intervals equal that loop's to the last one or two of 17
    significant digits (its quantiles were ``numpy.quantile``'s, scipy's are
    ``scipy.stats.quantile``'s), and every rendered figure is unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("values must be a non-empty 1-D array")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if v.size == 1:  # every resample is the one user (scipy asks for two or more)
        return float(v[0]), float(v[0])
    result = sps.bootstrap((v,), np.mean, n_resamples=n_resamples, batch=max(1, _CHUNK // v.size), vectorized=True,
                           confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired values need two non-empty 1-D arrays of one shape, got {a.shape} and {b.shape}")
    return a - b


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)``, resampling users (pairs) together."""
    return bootstrap_ci(_paired(a, b), confidence, n_resamples, seed)


def paired_permutation_test(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10000, seed: int = 0, exact_max_n: int = 16
) -> float:
    """Two-sided sign-flip randomisation test of ``mean(a - b) == 0`` over paired users.

    Users with a zero difference cannot change the statistic and are left out of the
    flips (they still count in n, which scales every mean alike). With at most
    ``exact_max_n`` non-zero differences all 2^n sign vectors are enumerated and the
    p-value is exact; otherwise it is ``(hits + 1) / (n_resamples + 1)``, the standard
    Monte Carlo estimate that never reports 0.

    Hand-written rather than ``scipy.stats.permutation_test(..., permutation_type="samples")``
    (scipy 1.17.1), for a measured reason: on two models' per-user NDCG@10 over 22,363 users
    (S3-Rec Beauty's size), 10,000 resamples, one core, scipy took 126 s where this takes
    0.13 s (6,040 users: 8.3 s against 0.05 s), and a leaderboard runs one test per row. Its
    Monte Carlo p-value also differs by definition: two-sided is twice the smaller one-sided
    p-value, from its own draws, so every reported p would change (on that data scipy gave
    0.0002 where this gives 0.0001). The exact branch agrees with scipy's exact test to
    1e-12 (``tests/eval/test_stats.py``).
    """
    d = _paired(a, b)
    d = d[d != 0.0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-9 * np.abs(d).sum()  # flips equal to the observed sum in exact arithmetic count as hits
    if d.size <= exact_max_n:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2^n, n)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // d.size)
    hits = 0
    for lo in range(0, n_resamples, step):
        size = min(step, n_resamples - lo)
        signs = rng.integers(0, 2, size=(size, d.size)).astype(np.float64) * 2.0 - 1.0  # (b, n)
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (hits + 1) / (n_resamples + 1)
