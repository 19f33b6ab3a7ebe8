"""Next-action and purchase metrics (scikit-learn) from predicted probabilities.

Classes are action ids 1..E, given here 0-based (column c of ``probs`` = id c + 1).
Macro-F1 averages over the classes that occur among the targets, so every model on
one split is averaged over the same classes. Per-class ROC-AUC is one-vs-rest on the
class's probability and ``None`` when the targets hold only one side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def next_action_metrics(probs: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> dict:
    """probs: (N, E); targets: (N,) 0-based classes. Accuracy, macro-F1, multi-class
    log-loss (mean negative log-likelihood) and per-class AUC."""
    pred = probs.argmax(axis=1)
    present = np.unique(targets)
    return {
        "n": int(len(targets)),
        "accuracy": float(accuracy_score(targets, pred)),
        "macro_f1": float(f1_score(targets, pred, labels=present, average="macro", zero_division=0)),
        "log_loss": float(log_loss(targets, np.clip(probs, 1e-7, 1.0), labels=np.arange(probs.shape[1]))),
        "roc_auc": {name: _auc(targets == c, probs[:, c]) for c, name in enumerate(names)},
        "predicted": {name: int((pred == c).sum()) for c, name in enumerate(names)},
    }


def purchase_metrics(prob: np.ndarray, labels: np.ndarray) -> dict:
    """prob: (N,) predicted probability of a purchase within the horizon; labels: (N,) 0/1."""
    labels = labels.astype(np.int64)
    clipped = np.clip(prob, 1e-7, 1 - 1e-7)
    return {
        "n": int(len(labels)),
        "positive_rate": float(labels.mean()),
        "roc_auc": _auc(labels, prob),
        "log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
    }
