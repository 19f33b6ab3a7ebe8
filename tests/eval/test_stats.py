"""Bootstrap intervals and the paired randomisation test, on inputs checkable by hand."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from recsys.eval.metrics import summarise
from recsys.eval.stats import (
    bootstrap_ci,
    mean_std,
    paired_bootstrap_ci,
    paired_permutation_test,
    per_user,
)


def test_per_user_metrics_by_hand_and_against_eval_metrics():
    ranks = np.array([1, 3, 10, 11])
    np.testing.assert_allclose(per_user(ranks, "ndcg", 10), [1.0, 0.5, 1 / math.log2(11), 0.0])
    np.testing.assert_allclose(per_user(ranks, "hr", 10), [1, 1, 1, 0])
    np.testing.assert_allclose(per_user(ranks, "mrr", 5), [1.0, 1 / 3, 0.0, 0.0])
    many = np.random.default_rng(0).integers(1, 50, size=500)
    torch_metrics = summarise(torch.from_numpy(many), (5, 10))
    for name in ("hr", "ndcg", "mrr"):
        for k in (5, 10):
            assert per_user(many, name, k).mean() == pytest.approx(torch_metrics[f"{name}@{k}"], abs=1e-12)
    with pytest.raises(ValueError, match="1-based"):
        per_user(np.array([0, 1]))


def test_mean_std():
    assert mean_std([0.1, 0.2, 0.3]) == pytest.approx((0.2, 0.1))  # sample std, ddof=1
    mean, std = mean_std([0.25])
    assert mean == 0.25 and math.isnan(std)


def test_bootstrap_ci_degenerate_and_two_point_cases():
    assert bootstrap_ci(np.full(50, 0.3)) == pytest.approx((0.3, 0.3))
    # Two users, values 0 and 1: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% percentiles are 0 and 1.
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.0, 1.0)


def test_bootstrap_ci_matches_the_normal_interval_for_a_large_binary_sample():
    # 10,000 users, 30% hits: the interval is 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 10000) = 0.3 +- 0.00898
    values = np.zeros(10_000)
    values[:3000] = 1.0
    low, high = bootstrap_ci(values, n_resamples=4000, seed=1)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 10_000)
    assert low == pytest.approx(0.3 - half, abs=0.0015)
    assert high == pytest.approx(0.3 + half, abs=0.0015)
    # seeded: identical twice
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


def test_bootstrap_ci_agrees_with_scipy():
    values = np.random.default_rng(5).exponential(size=400)
    ours = bootstrap_ci(values, n_resamples=5000, seed=0)
    ref = sps.bootstrap((values,), np.mean, n_resamples=5000, method="percentile", random_state=0).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.02)


def test_paired_bootstrap_ci_is_the_interval_of_the_differences():
    a = np.array([1.0, 1.0, 1.0, 1.0])
    b = np.array([0.5, 0.5, 0.5, 0.5])
    assert paired_bootstrap_ci(a, b) == pytest.approx((0.5, 0.5))
    rng = np.random.default_rng(2)
    x, y = rng.random(300), rng.random(300)
    assert paired_bootstrap_ci(x, y, seed=4) == bootstrap_ci(x - y, seed=4)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap_ci(np.ones(3), np.ones(4))


def test_paired_permutation_test_exact_by_hand():
    # differences 1, 2, 3: of the 8 sign vectors only +++ and --- reach |sum| = 6
    assert paired_permutation_test(np.array([1.0, 2, 3]), np.zeros(3)) == pytest.approx(2 / 8)
    # differences 1, 2, 3, 4 (sum 10): |sum| >= 10 for ++++, ----: 2 of 16; sum 8 etc. do not count
    assert paired_permutation_test(np.array([1.0, 2, 3, 4]), np.zeros(4)) == pytest.approx(2 / 16)
    # differences 3, 1, 1, 1 (sum 6): flipping any one sign gives |sum| <= 4, so again 2 of 16
    assert paired_permutation_test(np.array([3.0, 1, 1, 1]), np.zeros(4)) == pytest.approx(2 / 16)
    # differences 1, 1, -1: |sum| = 1, and every signed sum of three ones is odd, so all 8 reach it
    assert paired_permutation_test(np.array([1.0, 1, -1]), np.zeros(3)) == pytest.approx(1.0)
    # zero differences are dropped; identical models give p = 1
    assert paired_permutation_test(np.array([5.0, 1, 2, 3]), np.array([5.0, 0, 0, 0])) == pytest.approx(2 / 8)
    assert paired_permutation_test(np.ones(7), np.ones(7)) == 1.0
    # symmetric in its arguments
    x, y = np.array([0.3, 0.1, 0.0, 0.9]), np.array([0.1, 0.2, 0.0, 0.4])
    assert paired_permutation_test(x, y) == paired_permutation_test(y, x)


def test_paired_permutation_test_agrees_with_scipy_exact():
    rng = np.random.default_rng(7)
    a, b = rng.random(10), rng.random(10) + 0.15
    ours = paired_permutation_test(a, b)  # exact, 2^10 flips
    ref = sps.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                               n_resamples=np.inf).pvalue
    assert ours == pytest.approx(ref, abs=1e-12)


def test_paired_permutation_test_monte_carlo_close_to_exact():
    rng = np.random.default_rng(11)
    a, b = rng.random(14), rng.random(14) + 0.1
    exact = paired_permutation_test(a, b, exact_max_n=16)
    approx = paired_permutation_test(a, b, exact_max_n=0, n_resamples=20000, seed=0)
    assert approx == pytest.approx(exact, abs=0.01)
    # a large, clear difference: the p-value is the Monte Carlo floor 1 / (n_resamples + 1)
    big_a = np.r_[np.ones(300), np.zeros(700)]
    big_b = np.r_[np.zeros(150), np.ones(50), np.zeros(800)]
    assert paired_permutation_test(big_a, big_b, n_resamples=999) == pytest.approx(1 / 1000)
