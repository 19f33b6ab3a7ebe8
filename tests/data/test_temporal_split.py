"""Global temporal split: properties (hypothesis) and one case worked by hand."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from recsys.config import ExperimentConfig
from recsys.data.collate import collate_eval, collate_train
from recsys.data.sequences import Sequences
from recsys.data.splits import cut_time, temporal_split
from recsys.errors import ConfigError

# A user is a list of (time step, item); times are sorted per user below.
users_st = st.lists(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 25)), min_size=3, max_size=20), min_size=2, max_size=12
)
quantiles_st = st.tuples(st.floats(0.05, 0.9), st.floats(0.02, 0.5)).map(lambda t: (t[0], min(t[0] + t[1], 0.98)))


def _seqs(users):
    users = [sorted(u, key=lambda e: e[0]) for u in users]
    offsets = np.concatenate([[0], np.cumsum([len(u) for u in users])]).astype(np.int64)
    items = np.array([i for u in users for _, i in u], dtype=np.int64)
    times = np.array([t for u in users for t, _ in u], dtype=np.int64)
    return users, Sequences(np.array([f"u{k}" for k in range(len(users))], dtype=object), offsets, items, times)


@settings(max_examples=200, deadline=None)
@given(users_st, quantiles_st, st.integers(1, 30))
def test_temporal_split_properties(raw, quantiles, max_len):
    valid_q, test_q = quantiles
    assume(valid_q < test_q)
    users, seqs = _seqs(raw)
    try:
        split = temporal_split(seqs, test_q, valid_q)
    except ValueError as exc:
        assert "leaves no" in str(exc)
        return
    t_test, t_valid = cut_time(seqs.timestamps, test_q), cut_time(seqs.timestamps, valid_q)
    items, ts = seqs.items, seqs.timestamps

    # No training event (input or target) is later than the validation cut, hence the test cut.
    train_rows = np.arange(len(split.train))
    for u, s, e in zip(split.train.user, split.train.start, split.train.end):
        assert ts[s : e + 1].max() <= t_valid
        assert e + 1 == seqs.offsets[u + 1] or ts[e + 1] > t_valid  # and every event up to the cut is used
    batch = collate_train(items, split.train, train_rows, max_len)
    for row, u in enumerate(split.train.user):
        expected = [i for t, i in users[u] if t <= t_valid]
        assert [x for x in batch["targets"][row].tolist() if x] == expected[1:][-max_len:]

    for held, cut, name in ((split.test, t_test, "test"), (split.valid, t_valid, "valid")):
        rows = np.arange(len(held))
        batch = collate_eval(items, held, rows, max_len)
        for row, u in enumerate(held.user):
            history = [i for t, i in users[u] if t <= cut]
            after = [(t, i) for t, i in users[u] if t > cut]
            # target: the user's first event after the cut
            assert ts[held.end[row]] > cut and ts[held.end[row]] == after[0][0]
            assert int(batch["targets"][row]) == after[0][1]
            # the target event is never in its own input: the input is exactly the history before it
            assert held.end[row] - held.start[row] == len(history)
            assert [x for x in batch["inputs"][row].tolist() if x] == history[-max_len:]
            assert batch["seen_items"][batch["seen_rows"] == row].tolist() == history
            if name == "valid":
                assert ts[held.end[row]] <= t_test  # validation targets never come from the test period
        # every user with history before the cut and an event after it is evaluated
        eligible = [u for u, ev in enumerate(users)
                    if any(t <= cut for t, _ in ev) and any(t > cut for t, _ in ev)
                    and (name == "test" or min(t for t, _ in ev if t > cut) <= t_test)]
        assert held.user.tolist() == eligible


def test_temporal_split_by_hand():
    # times:        u0: 1 2 5 8      u1: 3 4 9      u2: 6 7 10 11
    _, seqs = _seqs([[(1, 11), (2, 12), (5, 13), (8, 14)], [(3, 21), (4, 22), (9, 23)],
                     [(6, 31), (7, 32), (10, 33), (11, 34)]])
    # 11 event times sorted: 1 2 3 4 5 6 7 8 9 10 11; 'lower' quantiles: 0.5 -> 6, 0.7 -> 8
    assert cut_time(seqs.timestamps, 0.5) == 6 and cut_time(seqs.timestamps, 0.7) == 8
    split = temporal_split(seqs, quantile=0.7, valid_quantile=0.5)
    items = seqs.items
    # test (cut 8): u0 has no event after 8; u1 -> target 23 after [21, 22]; u2 -> 33 after [31, 32]
    assert split.test.user.tolist() == [1, 2]
    assert items[split.test.end].tolist() == [23, 33]
    assert [items[s:e].tolist() for s, e in zip(split.test.start, split.test.end)] == [[21, 22], [31, 32]]
    # valid (cut 6): u0 -> 14 (time 8 <= 8); u1's first later event is at 9 > 8: not validated;
    # u2 -> 32 after [31]
    assert split.valid.user.tolist() == [0, 2]
    assert items[split.valid.end].tolist() == [14, 32]
    # training: events at times <= 6, users with >= 2 of them: u0 [11 12 13], u1 [21 22]
    assert split.train.user.tolist() == [0, 1]
    assert [items[s:e + 1].tolist() for s, e in zip(split.train.start, split.train.end)] == [[11, 12, 13], [21, 22]]


def test_temporal_split_rejects_bad_input():
    _, seqs = _seqs([[(1, 1), (2, 2), (3, 3)], [(1, 4), (2, 5), (3, 6)]])
    with pytest.raises(ValueError, match="valid_quantile"):
        temporal_split(seqs, 0.5, 0.6)
    bad = Sequences(seqs.users, seqs.offsets, seqs.items, np.array([3, 2, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match="non-decreasing"):
        temporal_split(bad, 0.9, 0.5)
    # every event at one time: nothing is after any cut
    flat = Sequences(seqs.users, seqs.offsets, seqs.items, np.zeros(6, dtype=np.int64))
    with pytest.raises(ValueError, match="leaves no test users"):
        temporal_split(flat, 0.9, 0.5)


def test_config_split_fields_validate():
    cfg = ExperimentConfig().with_overrides(["data.split=temporal", "data.split_quantile=0.95"])
    assert (cfg.data.split, cfg.data.split_quantile, cfg.data.split_valid_quantile) == ("temporal", 0.95, 0.8)
    assert ExperimentConfig().data.split == "loo"
    with pytest.raises(ConfigError, match="data.split must be one of"):
        ExperimentConfig().with_overrides(["data.split=random"])
    with pytest.raises(ConfigError, match="0 < valid < test < 1"):
        ExperimentConfig().with_overrides(["data.split_valid_quantile=0.95"])
