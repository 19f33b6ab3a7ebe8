"""The marketing analyst's baselines: hand-made recency / frequency features of a user's
history, and a scikit-learn logistic regression or gradient boosting on them.

A log is given as flat per-event arrays, user by user and oldest first (``items``,
``events`` 1..E, ``timestamps`` in seconds) and each scored moment as ``(start, pos)``:
the user's first event and the last event the moment may read. ``history_features``
reads events ``start..pos`` only. Features (all numbers, one row per moment):

- the last action (one-hot), log history length, log seconds since the previous event;
- per action: log count over the whole history and count among the last 10 events;
- events in the last 24 hours, events in the current session (a gap over 30 minutes
  starts a new one), log seconds since the session started;
- log seconds since the last cart and since the last purchase (a week when none);
- open carts: items whose last cart is later than their last purchase;
- with a candidate next event (item, gap): the user's earlier count of each action on that
  item, whether it is an open cart, and the log gap;
- with an elapsed time (churn snapshots): log seconds since the last event.

``FeatureModel`` standardises the features and fits ``LogisticRegression`` (multinomial,
L2, ``C=1``) or ``HistGradientBoostingClassifier`` (fixed seed, 10% early-stopping split),
on moments of the training period only.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SESSION_GAP_S = 30 * 60
DAY_S = 24 * 3600
NONE_S = 7 * DAY_S  # "seconds since" when there was no such event
LAST_N = 10
FEATURE_MODELS = ("logistic", "gbm")


class EventLog:
    """Per-event lookups the features need, built once per log (no per-moment Python)."""

    def __init__(self, items: np.ndarray, events: np.ndarray, timestamps: np.ndarray, offsets: np.ndarray,
                 n_events: int, cart_id: int | None, buy_id: int | None) -> None:
        self.items, self.events = np.asarray(items, np.int64), np.asarray(events, np.int64)
        self.ts = np.asarray(timestamps, np.float64)
        self.offsets, self.n_events = np.asarray(offsets, np.int64), n_events
        self.cart_id, self.buy_id = cart_id, buy_id
        n = len(self.items)
        lengths = np.diff(self.offsets)
        self.user = np.repeat(np.arange(len(lengths)), lengths)
        self.first = np.repeat(self.offsets[:-1], lengths)
        onehot = np.zeros((n + 1, n_events))
        onehot[np.arange(1, n + 1), self.events - 1] = 1.0
        self.cum = np.cumsum(onehot, axis=0)  # (N + 1, E): cum[j] counts events before j
        gap = np.full(n, np.inf)
        gap[1:] = self.ts[1:] - self.ts[:-1]
        gap[self.first == np.arange(n)] = np.inf
        idx = np.arange(n)
        self.session_start = np.maximum.accumulate(np.where(gap > SESSION_GAP_S, idx, 0))
        self.gap = np.where(np.isinf(gap), np.nan, gap)
        # user-major time keys: events of user u within 24 h before t are a contiguous range
        span = float(self.ts.max() - self.ts.min() + 10 * DAY_S) if n else 1.0
        self.key = self.user * span + (self.ts - (self.ts.min() if n else 0.0))
        self.last_of = {a: self._last_index(a) for a in (cart_id, buy_id) if a is not None}
        self.open_carts = self._open_carts()
        # (user, item) pairs in time order, for a candidate's history with the user
        pair = self.user * (int(self.items.max()) + 2 if n else 1) + self.items
        self.pair_order = np.lexsort((idx, pair))
        self.pair_sorted = pair[self.pair_order]
        self.pair_base = int(self.items.max()) + 2 if n else 1
        self.pair_cum = np.vstack([np.zeros((1, n_events)), np.cumsum(onehot[1:][self.pair_order], axis=0)])

    def _last_index(self, action: int) -> np.ndarray:
        """(N,) index of the user's last ``action`` at or before each event, -1 if none."""
        idx = np.where(self.events == action, np.arange(len(self.events)), -1)
        last = np.maximum.accumulate(idx) if len(idx) else idx
        return np.where(last >= self.first, last, -1)

    def _open_carts(self) -> np.ndarray:
        """(N,) items of the user whose last cart is later than their last purchase, after each event."""
        out = np.zeros(len(self.items))
        if self.cart_id is None:
            return out
        state: dict[int, bool] = {}
        user = -1
        n_open = 0
        for j, (u, item, a) in enumerate(zip(self.user.tolist(), self.items.tolist(), self.events.tolist())):
            if u != user:
                state, user, n_open = {}, u, 0
            if a == self.cart_id and not state.get(item, False):
                state[item] = True
                n_open += 1
            elif a == self.buy_id and state.get(item, False):
                state[item] = False
                n_open -= 1
            out[j] = n_open
        return out

    def candidate_counts(self, pos: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(M, E) the user's events on ``items[m]`` at or before ``pos[m]``, per action."""
        pair = self.user[pos] * self.pair_base + items
        lo = np.searchsorted(self.pair_sorted, pair, side="left")
        hi = np.searchsorted(self.pair_sorted, pair, side="right")
        # events of the pair are in index order: count those at or before pos
        within = np.zeros(len(pos), dtype=np.int64)
        for m in np.flatnonzero(hi > lo):  # few moments have a history with their candidate
            within[m] = np.searchsorted(self.pair_order[lo[m]:hi[m]], pos[m], side="right")
        return self.pair_cum[lo + within] - self.pair_cum[lo]


def history_features(log: EventLog, pos: np.ndarray, candidate_item: np.ndarray | None = None,
                     candidate_gap: np.ndarray | None = None, elapsed: np.ndarray | None = None) -> np.ndarray:
    """(M, F) features of the moments right after events ``pos`` (module docstring)."""
    pos = np.asarray(pos, dtype=np.int64)
    E = log.n_events
    first = log.first[pos]
    last = np.zeros((len(pos), E))
    last[np.arange(len(pos)), log.events[pos] - 1] = 1.0
    total = log.cum[pos + 1] - log.cum[first]
    recent = log.cum[pos + 1] - log.cum[np.maximum(first, pos + 1 - LAST_N)]
    gap = log.gap[pos]
    day_lo = np.searchsorted(log.key, log.key[pos] - DAY_S, side="left")
    in_day = pos + 1 - np.maximum(day_lo, first)
    sess = log.session_start[pos]
    cols = [
        last,
        np.log1p(pos - first + 1.0)[:, None],
        np.log1p(np.nan_to_num(gap, nan=NONE_S))[:, None],
        np.log1p(total),
        recent,
        in_day[:, None].astype(np.float64),
        (pos - sess + 1.0)[:, None],
        np.log1p(log.ts[pos] - log.ts[sess])[:, None],
        log.open_carts[pos][:, None],
    ]
    for action in (log.cart_id, log.buy_id):
        if action is not None:
            li = log.last_of[action][pos]
            since = np.where(li >= 0, log.ts[pos] - log.ts[np.maximum(li, 0)], NONE_S)
            cols.append(np.log1p(since)[:, None])
    if candidate_item is not None:
        counts = log.candidate_counts(pos, np.asarray(candidate_item, dtype=np.int64))
        cols.append(np.log1p(counts))
        if log.cart_id is not None and log.buy_id is not None:
            cols.append((counts[:, log.cart_id - 1] > counts[:, log.buy_id - 1]).astype(np.float64)[:, None])
        cols.append(np.log1p(np.asarray(candidate_gap, dtype=np.float64))[:, None])
        cols.append((np.asarray(candidate_gap) > SESSION_GAP_S).astype(np.float64)[:, None])
    if elapsed is not None:
        cols.append(np.log1p(np.asarray(elapsed, dtype=np.float64))[:, None])
    return np.hstack(cols)


class FeatureModel:
    """Logistic regression or gradient boosting on ``history_features``; ``predict_proba``
    returns (M, C) over the classes ``0..n_classes - 1`` (a class absent from training gets 0)."""

    def __init__(self, kind: str, n_classes: int, seed: int = 0) -> None:
        if kind not in FEATURE_MODELS:
            raise ValueError(f"kind must be one of {FEATURE_MODELS}, got {kind!r}")
        self.kind, self.n_classes, self.seed = kind, n_classes, seed
        if kind == "logistic":
            self.model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        else:
            self.model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, early_stopping=True,
                                                        validation_fraction=0.1, random_state=seed)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> FeatureModel:
        self.model.fit(features, np.asarray(labels, dtype=np.int64))
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raw = self.model.predict_proba(features)
        out = np.zeros((len(features), self.n_classes))
        out[:, self.model.classes_] = raw
        return out
