import numpy as np
import pytest

from recsys.eval.actions import next_action_metrics, purchase_metrics


def test_next_action_metrics_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    targets = np.array([0, 1, 1, 0])  # class 2 never occurs: it has no AUC and is not in macro-F1
    m = next_action_metrics(probs, targets, ["a", "b", "c"])
    assert m["accuracy"] == 0.5  # predictions 0, 1, 0, 2
    # class a: precision 1/2, recall 1/2 -> F1 0.5; class b: precision 1, recall 1/2 -> F1 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # AUC of a: positives score 0.7, 0.2; negatives 0.1, 0.6; pairs won: 0.7>0.1, 0.7>0.6, 0.2>0.1
    assert m["roc_auc"]["a"] == pytest.approx(3 / 4)
    assert m["roc_auc"]["c"] is None
    assert m["predicted"] == {"a": 2, "b": 1, "c": 1} and m["n"] == 4


def test_purchase_metrics_by_hand():
    m = purchase_metrics(np.array([0.9, 0.2, 0.4, 0.1]), np.array([1, 0, 1, 0]))
    assert m["roc_auc"] == 1.0 and m["positive_rate"] == 0.5
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.9])))
