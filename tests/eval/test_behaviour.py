"""Behaviour metrics with user-bootstrap intervals: point values against scikit-learn, and
the bootstrap resamples users, not moments."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from recsys.eval.behaviour import (
    binary_report,
    next_action_report,
    paired_log_loss_difference,
    resampled_weights,
    weighted_auc,
)


def test_weighted_auc_equals_sklearn_with_ties_and_integer_weights():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    ones = np.ones((1, 200))
    assert weighted_auc(scores, labels, ones)[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # integer weights are repeated rows
    w = rng.integers(0, 3, size=200)
    rep = np.repeat(np.arange(200), w)
    assert weighted_auc(scores, labels, w[None, :].astype(float))[0] == pytest.approx(
        roc_auc_score(labels[rep], scores[rep]), abs=1e-12)
    assert np.isnan(weighted_auc(scores, np.zeros(200, bool), ones)[0])


def test_next_action_point_values_equal_sklearn():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=300)
    targets = rng.integers(0, 3, size=300)  # class 3 never occurs
    users = rng.integers(0, 40, size=300)
    r = next_action_report(probs, targets, users, ["a", "b", "c", "d"], n_resamples=200)
    assert r["n"] == 300 and r["n_users"] == len(np.unique(users))
    assert r["log_loss"] == pytest.approx(log_loss(targets, probs, labels=range(4)), abs=1e-12)
    pred = probs.argmax(axis=1)
    assert r["macro_f1"] == pytest.approx(f1_score(targets, pred, labels=[0, 1, 2], average="macro"), abs=1e-12)
    assert r["accuracy"] == pytest.approx(np.mean(pred == targets))
    assert r["roc_auc"]["a"] == pytest.approx(roc_auc_score(targets == 0, probs[:, 0]))
    assert r["roc_auc"]["d"] is None
    for key in ("log_loss", "accuracy", "macro_f1"):
        low, high = r[f"{key}_ci"]
        assert low < r[key] < high


def test_binary_report_and_paired_difference():
    rng = np.random.default_rng(2)
    labels = rng.random(500) < 0.2
    prob = np.clip(0.2 + 0.3 * labels + rng.normal(0, 0.2, 500), 0.01, 0.99)
    users = rng.integers(0, 50, size=500)
    r = binary_report(prob, labels, users, n_resamples=300)
    assert r["roc_auc"] == pytest.approx(roc_auc_score(labels, prob))
    assert r["log_loss"] == pytest.approx(log_loss(labels, prob))
    assert r["positive_rate"] == pytest.approx(labels.mean())
    assert r["roc_auc_ci"][0] < r["roc_auc"] < r["roc_auc_ci"][1]
    d = paired_log_loss_difference(np.full(500, 1.0), np.full(500, 0.5), users, n_resamples=50)
    assert d["difference"] == 0.5 and d["difference_ci"] == [0.5, 0.5]


def test_the_bootstrap_resamples_users_not_moments():
    users = np.repeat([7, 3, 9], [1, 5, 2])  # 3 users, 8 moments
    block = next(resampled_weights(users, 100, seed=0))
    assert block.shape == (100, 8)
    # every moment of a user carries the user's count, and counts add up to the number of users
    assert (block[:, 1:6] == block[:, [1]]).all() and (block[:, 6:] == block[:, [6]]).all()
    assert np.array_equal(block[:, [0, 1, 6]].sum(axis=1), np.full(100, 3.0))
    # one user with many moments is one draw: the interval is as wide as that user's spread
    values = np.r_[np.zeros(50), np.ones(50)]
    constant = np.full(100, 0.9)  # costs 0.105 nats on a 1, 2.303 on a 0
    one_each = binary_report(constant, values, np.arange(100), n_resamples=500)
    two_users = binary_report(constant, values, np.repeat([0, 1], 50), n_resamples=500)
    w1 = one_each["log_loss_ci"][1] - one_each["log_loss_ci"][0]
    w2 = two_users["log_loss_ci"][1] - two_users["log_loss_ci"][0]
    assert w2 > 3 * w1
