"""Training batches for the behaviour heads: time gaps, churn snapshot labels and windows
that end at the last training event."""

import numpy as np
import pytest

from recsys.data.collate import EventTracks, churn_snapshot_labels, collate_eval, collate_train
from recsys.data.sequences import Sequences
from recsys.data.splits import HeldOut, temporal_split
from recsys.types import NO_LABEL

H = 3600.0
# user 0: events at 0, 1, 10, 30 h (the last after the cut at 20 h); user 1: 2, 3 h
TIMES = np.array([0, 1, 10, 30, 2, 3]) * 3600
SEQS = Sequences(np.array(["a", "b"], dtype=object), np.array([0, 4, 6]), np.array([1, 2, 3, 4, 5, 6]),
                 TIMES.astype(np.int64), np.array([1, 2, 1, 3, 1, 1]))
TRAIN = HeldOut(np.array([0, 1]), np.array([0, 4]), np.array([2, 5]))  # training events [start, end]


def test_churn_snapshot_labels_by_hand():
    elapsed, label = churn_snapshot_labels(SEQS.timestamps, TRAIN, visible_until=int(20 * H), horizon_s=5 * H, seed=0)
    u = np.random.default_rng(0).random(6)
    # event 0 (0 h, next at 1 h): s in [0, 1 h), next within 5 h -> 0
    assert elapsed[0] == pytest.approx(u[0] * H, rel=1e-6) and label[0] == 0
    # event 1 (1 h, next at 10 h): s = 1 h + u * 9 h; quiet through s + 5 h iff s + 5 h < 10 h
    s = H + u[1] * 9 * H
    assert label[1] == float(10 * H > s + 5 * H)
    # event 2: the last training event (10 h): s in [10 h, 20 h - 5 h], quiet: label 1
    assert 0 <= elapsed[2] <= 5 * H and label[2] == 1
    # event 3 is after the cut (not a training event); user 1's last (3 h): s in [3 h, 15 h]
    assert label[3] == NO_LABEL and label[5] == 1 and elapsed[5] == pytest.approx(u[5] * 12 * H, rel=1e-6)
    # no snapshot fits when the last training event is within T of the cut
    _, late = churn_snapshot_labels(SEQS.timestamps, TRAIN, visible_until=int(12 * H), horizon_s=5 * H, seed=0)
    assert late[2] == NO_LABEL and late[5] == 1


def test_training_rows_with_churn_end_at_the_last_training_event():
    elapsed, label = churn_snapshot_labels(SEQS.timestamps, TRAIN, int(20 * H), 5 * H, seed=0)
    gaps = np.array([np.nan, 1, 9, 20, np.nan, 1]) * H
    tracks = EventTracks.build(SEQS.events, SEQS.offsets, purchase_id=3, horizon=1, gaps=gaps,
                               churn=(elapsed, label))
    b = collate_train(SEQS.items, TRAIN, np.array([0, 1]), max_len=3, tracks=tracks)
    assert b["inputs"].tolist() == [[1, 2, 3], [0, 5, 6]]  # the last training event is an input
    assert b["targets"].tolist() == [[2, 3, 0], [0, 6, 0]]  # ... without a next-event target
    assert b["events"].tolist() == [[1, 2, 1], [0, 1, 1]]
    assert b["next_events"].tolist() == [[2, 1, 0], [0, 1, 0]]
    assert b["purchase"].tolist() == [[0, 0, NO_LABEL], [NO_LABEL, 0, NO_LABEL]]  # the buy at 30 h is unseen
    assert np.allclose(b["gaps"].numpy(), np.array([[np.nan, H, 9 * H], [np.nan, np.nan, H]]), equal_nan=True)
    assert np.allclose(b["next_gaps"].numpy(), np.array([[H, 9 * H, np.nan], [np.nan, H, np.nan]]), equal_nan=True)
    assert b["churn_label"].tolist() == [label[[0, 1, 2]].tolist(), [NO_LABEL, label[4], label[5]]]
    # without churn labels the rows stop one earlier, as before
    plain = collate_train(SEQS.items, TRAIN, np.array([0]), max_len=3,
                          tracks=EventTracks.build(SEQS.events, SEQS.offsets, None, 0, gaps=gaps))
    assert plain["inputs"].tolist() == [[1, 2]] and plain["targets"].tolist() == [[2, 3]]
    assert np.allclose(plain["next_gaps"].numpy(), [[H, 9 * H]])


def test_eval_batches_carry_the_gaps_of_the_history():
    split = temporal_split(SEQS, quantile=0.8, valid_quantile=0.5)
    gaps = np.array([np.nan, 1, 9, 20, np.nan, 1]) * H
    tracks = EventTracks.build(SEQS.events, SEQS.offsets, None, 0, gaps=gaps)
    b = collate_eval(SEQS.items, split.test, np.arange(len(split.test)), max_len=5, tracks=tracks)
    assert b["inputs"].tolist() == [[1, 2, 3]] and np.allclose(b["gaps"].numpy(), [[np.nan, H, 9 * H]], equal_nan=True)
