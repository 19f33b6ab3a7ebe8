import numpy as np

from recsys.data.collate import collate_eval, collate_train, gather_windows
from recsys.data.sequences import Sequences
from recsys.data.splits import leave_one_out


def _seqs(histories):
    lengths = [len(h) for h in histories]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate(histories).astype(np.int64)
    return Sequences(np.array([str(i) for i in range(len(histories))], dtype=object), offsets, items,
                     np.arange(len(items), dtype=np.int64))


def test_gather_windows_left_pads_and_truncates_from_the_left():
    items = np.array([1, 2, 3, 4, 5, 6, 7])
    out = gather_windows(items, np.array([0, 4]), np.array([4, 6]), width=3)
    assert out.tolist() == [[2, 3, 4], [0, 5, 6]]


def test_collate_train_shifts_and_masks_padding():
    split = leave_one_out(_seqs([[1, 2, 3, 4, 5], [6, 7, 8]]))
    batch = collate_train(split.sequences.items, split.train, np.array([0, 1]), max_len=50)
    # user 0 trains on 1 2 3 (4 = valid target, 5 = test target); user 1 on 6 only.
    assert batch["inputs"].tolist() == [[1, 2], [0, 0]]
    assert batch["targets"].tolist() == [[2, 3], [0, 0]]
    batch = collate_train(split.sequences.items, split.train, np.array([0]), max_len=1)
    assert batch["inputs"].tolist() == [[2]] and batch["targets"].tolist() == [[3]]


def test_collate_eval_inputs_targets_and_seen():
    split = leave_one_out(_seqs([[1, 2, 3, 4, 5], [6, 7, 8]]))
    items = split.sequences.items
    valid = collate_eval(items, split.valid, np.array([0, 1]), max_len=2)
    assert valid["inputs"].tolist() == [[2, 3], [0, 6]]
    assert valid["targets"].tolist() == [4, 7]
    test = collate_eval(items, split.test, np.array([0, 1]), max_len=2)
    assert test["inputs"].tolist() == [[3, 4], [6, 7]]
    assert test["targets"].tolist() == [5, 8]
    # seen covers the whole history, not just the window of 2
    assert test["seen_rows"].tolist() == [0, 0, 0, 0, 1, 1]
    assert test["seen_items"].tolist() == [1, 2, 3, 4, 6, 7]


# ---- cloze (BERT4Rec) -----------------------------------------------------------------


def _cloze(histories, max_len=50, p=0.5, seed=0):
    import torch

    from recsys.data.collate import collate_cloze

    split = leave_one_out(_seqs(histories))
    rows = np.arange(len(histories))
    gen = torch.Generator().manual_seed(seed)
    return split, collate_cloze(split.sequences.items, split.train, rows, max_len, p, mask_token=99, generator=gen)


def test_cloze_window_stops_before_validation_and_test_targets():
    # user 0 trains on 1 2 3 (4 = valid, 5 = test), user 1 on 6 only (7, 8 held out)
    _, batch = _cloze([[1, 2, 3, 4, 5], [6, 7, 8]], p=0.99)
    restored = np.where(batch["targets"].numpy() > 0, batch["targets"].numpy(), batch["inputs"].numpy())
    assert restored.tolist() == [[1, 2, 3], [0, 0, 6]]
    assert batch["inputs"].tolist() == [[99, 99, 99], [0, 0, 99]]  # p near 1: every real item hidden
    assert batch["targets"].tolist() == [[1, 2, 3], [0, 0, 6]]


def test_cloze_never_masks_padding_always_hides_its_targets_and_masks_every_row():
    rng = np.random.default_rng(0)
    histories = [list(rng.integers(1, 40, size=rng.integers(3, 30))) for _ in range(200)]
    for p in (0.05, 0.2, 0.6):
        _, batch = _cloze(histories, max_len=12, p=p, seed=1)
        inputs, targets = batch["inputs"], batch["targets"]
        pad = inputs == 0
        assert (targets[pad] == 0).all()  # padding is never a target ...
        assert not ((inputs == 99) & pad).any()  # ... and never masked
        has_target = targets != 0
        assert (inputs[has_target] == 99).all()  # a target never sits in its own input
        assert ((inputs == 99) == has_target).all()
        assert has_target.any(dim=1).all()  # at least one masked position in every row
        rate = has_target.sum().item() / (~pad).sum().item()
        assert abs(rate - p) < 0.05 + (0.1 if p < 0.1 else 0)  # roughly p (rows with none get one)


def test_cloze_masks_are_seeded():
    histories = [[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6], [9, 8, 7, 6, 5]]
    first = _cloze(histories, seed=3)[1]["inputs"].tolist()
    assert _cloze(histories, seed=3)[1]["inputs"].tolist() == first  # same seed, same masks
    assert any(_cloze(histories, seed=s)[1]["inputs"].tolist() != first for s in (4, 5, 6))


def test_eval_appends_mask_and_keeps_window_width():
    split = leave_one_out(_seqs([[1, 2, 3, 4, 5], [6, 7, 8]]))
    items = split.sequences.items
    test = collate_eval(items, split.test, np.array([0, 1]), max_len=3, mask_token=99)
    assert test["inputs"].tolist() == [[3, 4, 99], [6, 7, 99]]  # max_len counts the [MASK]
    assert test["targets"].tolist() == [5, 8]
    assert test["seen_items"].tolist() == [1, 2, 3, 4, 6, 7]  # whole history, mask excluded


# ---- action tokens ---------------------------------------------------------------------


def _with_events(histories, actions):
    from recsys.data.sequences import Sequences

    s = _seqs(histories)
    return Sequences(s.users, s.offsets, s.items, s.timestamps, np.concatenate(actions).astype(np.int64))


def test_collate_train_carries_actions_next_actions_and_purchase_labels():
    from recsys.data.collate import EventTracks

    # actions: 1 = view, 2 = buy. User 0 trains on items 1..5 (6 = valid, 7 = test).
    seqs = _with_events([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]], [[1, 1, 2, 1, 1, 1, 2], [1, 2, 1]])
    split = leave_one_out(seqs)
    tracks = EventTracks.build(seqs.events, seqs.offsets, purchase_id=2, horizon=2)
    batch = collate_train(seqs.items, split.train, np.array([0, 1]), max_len=50, tracks=tracks)
    assert batch["inputs"].tolist() == [[1, 2, 3, 4], [0, 0, 0, 0]]  # user 1 trains on item 8 alone
    assert batch["events"].tolist() == [[1, 1, 2, 1], [0, 0, 0, 0]]
    assert batch["next_events"].tolist() == [[1, 2, 1, 1], [0, 0, 0, 0]]
    # purchase within the next 2 events, never looking past the final training target (item 5):
    # after 1: {2, 3} has a buy; after 2: {3, 4} yes; after 3: {4, 5} no, fully visible;
    # after 4: {5, ?} no buy seen, horizon cut by the split -> unknown (-1). The test buy
    # of item 7 is never used. User 1 has one training event and no pairs.
    assert batch["purchase"].tolist() == [[1, 1, 0, -1], [-1, -1, -1, -1]]


def test_collate_eval_next_action_and_purchase_label_from_the_target_on():
    from recsys.data.collate import EventTracks

    seqs = _with_events([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]], [[1, 1, 2, 1, 1, 1, 2], [1, 2, 1]])
    split = leave_one_out(seqs)
    tracks = EventTracks.build(seqs.events, seqs.offsets, purchase_id=2, horizon=2)
    valid = collate_eval(seqs.items, split.valid, np.array([0, 1]), max_len=3, tracks=tracks,
                         label_through_target=True)
    assert valid["events"].tolist() == [[2, 1, 1], [0, 0, 1]]
    assert valid["next_events"].tolist() == [1, 2]
    # user 0: the validation event 6 is a view; the buy of 7 within the horizon is the test
    # event, which a validation label never reads; user 1: the validation event 9 is a buy
    assert valid["purchase"].tolist() == [0.0, 1.0]
    # without the limit the horizon runs on into the test event (what a test-time label does)
    unlimited = collate_eval(seqs.items, split.valid, np.array([0, 1]), max_len=3, tracks=tracks)
    assert unlimited["purchase"].tolist() == [1.0, 1.0]
    test = collate_eval(seqs.items, split.test, np.array([0, 1]), max_len=3, tracks=tracks)
    assert test["next_events"].tolist() == [2, 1]
    assert test["purchase"].tolist() == [1.0, 0.0]  # the log ends after the test event
