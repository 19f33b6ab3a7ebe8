"""Next-action baselines: class probabilities (N, E) over action ids 1..E (column c = id c + 1).

Fitted on training (action, next action) pairs only. They answer "what will the user do
next?" without reading items, and set the bar the next-action head has to clear.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score


def action_pairs(events: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(current, next) action ids of every consecutive pair inside ``events[start:stop]``."""
    lengths = stop - start
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    pos = np.arange(lengths.sum()) + offsets
    is_last = np.zeros(len(events) + 1, dtype=bool)
    is_last[stop - 1] = True
    src = pos[~is_last[pos]]
    return events[src], events[src + 1]


def majority_class(train_next: np.ndarray, n_events: int, n_rows: int) -> np.ndarray:
    """The training distribution of next actions for every row: argmax is the majority class."""
    prior = np.bincount(train_next - 1, minlength=n_events).astype(np.float64)
    prior /= prior.sum()
    return np.broadcast_to(prior, (n_rows, n_events)).copy()


def repeat_last(last_events: np.ndarray, n_events: int) -> np.ndarray:
    """Probability 1 on the action of the last input event."""
    out = np.zeros((len(last_events), n_events))
    out[np.arange(len(last_events)), last_events - 1] = 1.0
    return out


def action_markov(train_now: np.ndarray, train_next: np.ndarray, last_events: np.ndarray, n_events: int) -> np.ndarray:
    """P(next action | last action) from training pair counts, add-one smoothed."""
    counts = np.ones((n_events, n_events))
    np.add.at(counts, (train_now - 1, train_next - 1), 1.0)
    table = counts / counts.sum(axis=1, keepdims=True)
    return table[last_events - 1]


def purchase_rate_by_last_action(
    train_last: np.ndarray, train_labels: np.ndarray, last_events: np.ndarray, n_events: int
) -> np.ndarray:
    """P(purchase within the horizon | last action) from labelled training positions,
    add-one smoothed (Laplace): the purchase head's simple baseline."""
    pos = np.bincount(train_last - 1, weights=train_labels, minlength=n_events)
    tot = np.bincount(train_last - 1, minlength=n_events)
    return ((pos + 1.0) / (tot + 2.0))[last_events - 1]


def prior_corrected(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``probs / prior``, renormalised per row: the decision rule that weighs classes
    equally (with calibrated ``probs`` its argmax maximises balanced accuracy), where plain
    argmax favours the majority class. The per-row renormalisation can move per-class
    ROC-AUC a little; metrics are reported for each variant as computed."""
    scaled = probs / np.maximum(prior, 1e-12)[None, :]
    return scaled / scaled.sum(axis=1, keepdims=True)


WEIGHT_GRID = np.geomspace(1 / 16, 64, 31)  # per-class multipliers tried by fit_class_weights


def fit_class_weights(probs: np.ndarray, targets: np.ndarray, sweeps: int = 3,
                      grid: np.ndarray = WEIGHT_GRID) -> np.ndarray:
    """Per-class multipliers ``w`` (E,) for the decision ``argmax p(c | x) w_c`` that
    maximise macro-F1 on ``(probs, targets)``, by coordinate ascent over ``grid`` (class 0
    keeps weight 1; a change is kept only if it strictly improves, so the result is
    deterministic). Fit on validation and applied to test, it is the tuned counterpart of
    ``prior_corrected``: the decision threshold a deployment would pick on held-out data.
    targets: (N,) 0-based classes."""
    n_classes = probs.shape[1]
    present = np.unique(targets)

    def score(w: np.ndarray) -> float:
        pred = (probs * w[None, :]).argmax(axis=1)
        return f1_score(targets, pred, labels=present, average="macro", zero_division=0)

    w = np.ones(n_classes)
    best = score(w)
    for _ in range(sweeps):
        improved = False
        for c in range(1, n_classes):
            for value in grid:
                trial = w.copy()
                trial[c] = value
                s = score(trial)
                if s > best + 1e-12:
                    best, w, improved = s, trial, True
        if not improved:
            break
    return w


def reweighted(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``probs * weights``, renormalised per row (its argmax is the weighted decision)."""
    scaled = probs * weights[None, :]
    return scaled / scaled.sum(axis=1, keepdims=True)
