"""The behaviour protocol: which moments of an event log are scored, and their labels.

Next action, purchase within k events and churn are scored on a **held-out tail of time**,
at every event in it, not once per user. With the log's events on one clock (a global
time split, as ``recsys.data.splits.temporal_split``), ``t_valid < t_test`` two cuts and
``t_end`` the last timestamp of the log:

- **training** reads events at or before ``t_valid`` only: no label of a training example
  reads an event after ``t_valid``;
- the **validation window** is ``(t_valid, t_test]``, the **test window** ``(t_test, t_end]``.

In a window ``(lo, hi]`` (``tail_moments``):

- a **moment** is the instant right after an event ``j`` with ``lo < t_j <= hi``, of a
  user with any history: its **inputs** are the user's events ``<= j`` (items, actions,
  timestamps; the model reads the last ``max_len`` of them), never a later one. Events
  before ``lo`` are inputs too, as they would be for a model deployed at ``lo``;
- **next action**: the action of the user's event ``j + 1`` if that event exists with
  ``t_{j+1} <= hi``; otherwise the moment has no next-action label. Predictors may also read
  the **candidate next event**: its item ``x_{j+1}`` and its gap ``t_{j+1} - t_j`` ("the user
  has just opened item x: view, cart, fav or buy?"); those that do are marked so;
- **purchase within k**: 1 if one of the events ``j + 1 .. j + k`` that exist with
  ``t <= hi`` is a purchase; 0 if ``k`` such events exist and none is; otherwise
  (fewer than ``k`` events before ``hi`` and no purchase among them) the label is
  censored and the moment is not scored for purchases (``NO_LABEL``);
- **churn** (``churn_snapshots``): at snapshot times ``s = lo + m * step`` (``m = 0, 1, ...``,
  ``step`` = ``SNAPSHOT_STEP_S``) with ``s + T <= hi``, every **active** user, one with an
  event in ``(s - ACTIVE_S, s]`` (three days: who is asked about is a customer, not one long
  gone): inputs are the user's events ``<= s`` and the time elapsed since the last
  of them, ``s - t_last``; the label is 1 if the user has **no event in ``(s, s + T]``**.
  Snapshots ``step`` apart overlap when ``T > step``; users are the unit of the bootstrap,
  so the overlap widens the intervals instead of hiding.

Every moment belongs to one user, and intervals resample users (``recsys.eval.behaviour``).
Windows whose cut falls on a timestamp put the events at the cut on the earlier side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.sequences import Sequences
from recsys.types import NO_LABEL, PAD_ID

#: Spacing of churn snapshots inside a window (6 hours).
SNAPSHOT_STEP_S = 6 * 3600
#: A user is asked about at a churn snapshot if their last event is this recent (three days).
ACTIVE_S = 3 * 86400


@dataclass(frozen=True)
class Window:
    """The protocol's clock: two cuts and the end of the log (timestamps, inclusive ends)."""

    t_valid: int
    t_test: int
    t_end: int

    def bounds(self, stage: str) -> tuple[int, int]:
        """``(lo, hi]`` of ``valid`` or ``test``."""
        if stage == "valid":
            return self.t_valid, self.t_test
        if stage == "test":
            return self.t_test, self.t_end
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


@dataclass(frozen=True)
class Moments:
    """Scored moments, each right after event ``pos`` (global index into ``Sequences``)."""

    pos: np.ndarray  # (M,) int64 the last input event
    user: np.ndarray  # (M,) int64 dense user index
    start: np.ndarray  # (M,) int64 the user's first event: inputs are [start, pos]
    next_action: np.ndarray  # (M,) int64 action id of event pos + 1, PAD_ID (0) = no label
    next_item: np.ndarray  # (M,) int64 token of event pos + 1, PAD_ID without a label
    next_gap: np.ndarray  # (M,) float64 seconds t_{pos+1} - t_pos, nan without a label
    purchase: np.ndarray  # (M,) float32 1 / 0 / NO_LABEL (censored or no purchase head)

    def __len__(self) -> int:
        return len(self.pos)


@dataclass(frozen=True)
class Snapshots:
    """Churn snapshots: user ``user`` at time ``time``, last event ``pos``."""

    pos: np.ndarray  # (S,) int64 the user's last event at or before the snapshot
    user: np.ndarray  # (S,) int64
    start: np.ndarray  # (S,) int64 the user's first event
    time: np.ndarray  # (S,) int64 snapshot time s
    elapsed: np.ndarray  # (S,) float64 s - t_pos, seconds
    label: np.ndarray  # (S,) float32 1 = no event in (s, s + T]

    def __len__(self) -> int:
        return len(self.pos)


def user_of_events(seqs: Sequences) -> np.ndarray:
    """(N,) dense user index of every event."""
    return np.repeat(np.arange(seqs.n_users, dtype=np.int64), seqs.lengths)


def gaps(seqs: Sequences) -> np.ndarray:
    """(N,) seconds since the user's previous event, ``nan`` at a user's first event."""
    ts = seqs.timestamps.astype(np.float64)
    out = np.full(len(ts), np.nan)
    out[1:] = ts[1:] - ts[:-1]
    out[seqs.offsets[:-1][seqs.lengths > 0]] = np.nan
    return out


def tail_moments(
    seqs: Sequences, lo: int, hi: int, purchase_id: int | None = None, horizon: int = 0
) -> Moments:
    """Every moment of the window ``(lo, hi]`` (module docstring); ``purchase_id`` and
    ``horizon`` (k) > 0 give purchase labels, else they are all ``NO_LABEL``."""
    if seqs.events is None:
        raise ValueError("the behaviour protocol needs action types (data.event_col)")
    ts, events = seqs.timestamps, seqs.events
    user = user_of_events(seqs)
    pos = np.flatnonzero((ts > lo) & (ts <= hi)).astype(np.int64)
    # the user's events at or before hi form a prefix: label_end is one past its last
    before_hi = np.bincount(user, weights=ts <= hi, minlength=seqs.n_users).astype(np.int64)
    label_end = seqs.offsets[:-1] + before_hi  # (U,)
    end = label_end[user[pos]]  # (M,) exclusive: events a label may read
    has_next = pos + 1 < end
    nxt = np.minimum(pos + 1, len(ts) - 1)
    next_action = np.where(has_next, events[nxt], PAD_ID).astype(np.int64)
    next_item = np.where(has_next, seqs.items[nxt], PAD_ID).astype(np.int64)
    next_gap = np.where(has_next, ts[nxt].astype(np.float64) - ts[pos], np.nan)
    purchase = np.full(len(pos), NO_LABEL, dtype=np.float32)
    if purchase_id is not None and horizon > 0:
        cum = np.concatenate([[0], np.cumsum(events == purchase_id)])
        stop = np.minimum(pos + 1 + horizon, end)  # exclusive end of the visible horizon
        bought = cum[stop] - cum[pos + 1] > 0
        complete = pos + 1 + horizon <= end
        purchase = np.where(bought, 1.0, np.where(complete, 0.0, NO_LABEL)).astype(np.float32)
    return Moments(pos, user[pos], seqs.offsets[:-1][user[pos]], next_action, next_item, next_gap, purchase)


def snapshot_times(lo: int, hi: int, horizon_s: float, step_s: int = SNAPSHOT_STEP_S) -> np.ndarray:
    """``lo + m * step`` for ``m = 0, 1, ...`` while ``+ horizon_s <= hi``."""
    if horizon_s <= 0 or step_s <= 0:
        raise ValueError("the churn horizon and the snapshot step must be > 0")
    n = int(np.floor((hi - horizon_s - lo) / step_s)) + 1
    return lo + step_s * np.arange(max(n, 0), dtype=np.int64)


def churn_snapshots(
    seqs: Sequences, lo: int, hi: int, horizon_s: float, step_s: int = SNAPSHOT_STEP_S, active_s: float = ACTIVE_S
) -> Snapshots:
    """Churn snapshots of the window ``(lo, hi]`` with ``T = horizon_s`` seconds (module
    docstring): label 1 when the user has no event in ``(s, s + T]``."""
    ts = seqs.timestamps
    user = user_of_events(seqs)
    starts = seqs.offsets[:-1]
    rows = []
    for s in snapshot_times(lo, hi, horizon_s, step_s):
        n_before = np.bincount(user, weights=ts <= s, minlength=seqs.n_users).astype(np.int64)
        n_through = np.bincount(user, weights=ts <= s + horizon_s, minlength=seqs.n_users).astype(np.int64)
        active = np.flatnonzero(n_before > 0)
        last = starts[active] + n_before[active] - 1
        recent = ts[last] > s - active_s
        active, last = active[recent], last[recent]
        rows.append((last, active, np.full(len(active), s, dtype=np.int64), (n_through == n_before)[active]))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return Snapshots(empty, empty, empty, empty, np.zeros(0), np.zeros(0, dtype=np.float32))
    pos, users, time, quiet = (np.concatenate(c) for c in zip(*rows))
    return Snapshots(pos, users, starts[users], time, (time - ts[pos]).astype(np.float64), quiet.astype(np.float32))
