"""The behaviour protocol (recsys.data.behaviour) on hand-written logs: which moments are
scored, what they read, and their next-action, purchase and churn labels."""

import numpy as np
import pytest

from recsys.data.behaviour import Window, churn_snapshots, gaps, snapshot_times, tail_moments
from recsys.data.sequences import Sequences
from recsys.types import NO_LABEL

PV, CART, BUY = 1, 2, 3
H = 3600


def _seqs(users: list[list[tuple[int, int, int]]]) -> Sequences:
    """users: per user [(item, action, time), ...] in time order."""
    flat = [e for u in users for e in u]
    offsets = np.concatenate([[0], np.cumsum([len(u) for u in users])]).astype(np.int64)
    return Sequences(
        users=np.array([f"u{i}" for i in range(len(users))], dtype=object), offsets=offsets,
        items=np.array([e[0] for e in flat], dtype=np.int64), timestamps=np.array([e[2] for e in flat], dtype=np.int64),
        events=np.array([e[1] for e in flat], dtype=np.int64))


LOG = _seqs([
    # user 0: events at 0, 10, 20, 30, 40 (hours)
    [(1, PV, 0), (2, CART, 10 * H), (2, PV, 20 * H), (2, BUY, 30 * H), (3, PV, 40 * H)],
    # user 1: starts inside the window
    [(4, PV, 25 * H), (5, PV, 26 * H), (4, CART, 50 * H)],
])


def test_moments_are_every_event_in_the_window_with_labels_that_stop_at_its_end():
    m = tail_moments(LOG, lo=10 * H, hi=40 * H, purchase_id=BUY, horizon=2)
    # events with 10h < t <= 40h: user 0's at 20, 30, 40 (positions 2, 3, 4); user 1's at 25, 26 (5, 6)
    assert m.pos.tolist() == [2, 3, 4, 5, 6]
    assert m.user.tolist() == [0, 0, 0, 1, 1] and m.start.tolist() == [0, 0, 0, 5, 5]
    # next action: the next event if it is at or before hi; user 1's cart at 50h is after it
    assert m.next_action.tolist() == [BUY, PV, 0, PV, 0]
    assert m.next_item.tolist() == [2, 3, 0, 5, 0]
    assert m.next_gap[:2].tolist() == [10 * H, 10 * H] and np.isnan(m.next_gap[2])
    # purchase within 2: pos 2 sees the buy; pos 3 has one visible event (pv) and no buy: censored;
    # pos 5 has one visible event, no buy: censored; the last events see nothing: censored
    assert m.purchase.tolist() == [1, NO_LABEL, NO_LABEL, NO_LABEL, NO_LABEL]
    full = tail_moments(LOG, lo=-1, hi=50 * H, purchase_id=BUY, horizon=2)
    # position 0 (pv at 0h): events 1, 2 are cart, pv -> no buy among a complete horizon: 0
    assert full.purchase[:3].tolist() == [0, 1, 1]


def test_moments_never_read_an_event_after_the_window_for_labels():
    w = Window(t_valid=10 * H, t_test=30 * H, t_end=50 * H)
    valid = tail_moments(LOG, *w.bounds("valid"), purchase_id=BUY, horizon=1)
    # validation moments at 20h, 30h (user 0) and 25h, 26h (user 1); a validation label reads
    # events up to 30h only: the buy at 30h, not the pv at 40h nor the cart at 50h
    assert valid.pos.tolist() == [2, 3, 5, 6]
    assert valid.next_action.tolist() == [BUY, 0, PV, 0]
    assert valid.purchase.tolist() == [1, NO_LABEL, 0, NO_LABEL]
    with pytest.raises(ValueError, match="stage"):
        w.bounds("train")


def test_gaps_are_seconds_since_the_users_previous_event():
    g = gaps(LOG)
    assert np.isnan(g[0]) and np.isnan(g[5])
    assert g[1:5].tolist() == [10 * H] * 4 and g[6] == H and g[7] == 24 * H


def test_churn_snapshots_by_hand():
    assert snapshot_times(0, 24 * H, 12 * H, step_s=6 * H).tolist() == [0, 6 * H, 12 * H]
    snaps = churn_snapshots(LOG, lo=20 * H, hi=50 * H, horizon_s=10 * H, step_s=6 * H)
    # snapshots at 20, 26, 32, 38 h (38 + 10 <= 50; 44 + 10 > 50)
    rows = sorted(zip(snaps.time.tolist(), snaps.user.tolist(), snaps.pos.tolist(), snaps.elapsed.tolist(),
                      snaps.label.tolist()))
    assert rows == [
        (20 * H, 0, 2, 0.0, 0.0),  # user 0 last at 20h, next at 30h: inside (20, 30]
        (26 * H, 0, 2, 6.0 * H, 0.0),  # next at 30h in (26, 36]
        (26 * H, 1, 6, 0.0, 1.0),  # user 1 at 26h, next at 50h: nothing in (26, 36]
        (32 * H, 0, 3, 2.0 * H, 0.0),  # last at 30h, next at 40h in (32, 42]
        (32 * H, 1, 6, 6.0 * H, 1.0),
        (38 * H, 0, 3, 8.0 * H, 0.0),  # next at 40h
        (38 * H, 1, 6, 12.0 * H, 1.0),  # next at 50h > 48h
    ]  # user 1 has no event at or before 20h: not in the first snapshot
    assert np.array_equal(snaps.start, np.where(snaps.user == 0, 0, 5))
    # a user is asked about only while active: with a 10 h lookback, user 1 (last event at
    # 26 h) drops out at 38 h, user 0 (last at 30 h) stays
    recent = churn_snapshots(LOG, lo=20 * H, hi=50 * H, horizon_s=10 * H, step_s=6 * H, active_s=10 * H)
    assert sorted(zip(recent.time.tolist(), recent.user.tolist())) == [
        (20 * H, 0), (26 * H, 0), (26 * H, 1), (32 * H, 0), (32 * H, 1), (38 * H, 0)]
