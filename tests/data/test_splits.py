import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.collate import collate_eval, collate_train
from recsys.data.sequences import Sequences
from recsys.data.splits import leave_one_out

histories = st.lists(st.lists(st.integers(1, 30), min_size=3, max_size=25), min_size=1, max_size=12)


def _seqs(hs):
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in hs])]).astype(np.int64)
    items = np.concatenate(hs).astype(np.int64)
    return Sequences(np.array([str(i) for i in range(len(hs))], dtype=object), offsets, items,
                     np.arange(len(items), dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(histories, st.integers(1, 30))
def test_no_target_event_in_its_own_input(hs, max_len):
    """Each input is exactly the history strictly before its target event."""
    split = leave_one_out(_seqs(hs))
    items = split.sequences.items
    rows = np.arange(len(hs))
    for held, drop in ((split.valid, 2), (split.test, 1)):
        batch = collate_eval(items, held, rows, max_len)
        for u, h in enumerate(hs):
            target_pos = len(h) - drop
            assert batch["targets"][u] == h[target_pos]
            history = h[:target_pos]  # everything before the target, nothing after
            window = [x for x in batch["inputs"][u].tolist() if x != 0]
            assert window == history[-max_len:]
            seen = batch["seen_items"][batch["seen_rows"] == u].tolist()
            assert seen == history
    train = collate_train(items, split.train, rows, max_len)
    for u, h in enumerate(hs):
        t = [x for x in train["targets"][u].tolist() if x != 0]
        x = [x for x in train["inputs"][u].tolist() if x != 0]
        # training never reaches the validation or test events
        assert t == h[1 : len(h) - 2][-max_len:]
        assert x == h[: len(h) - 3][-max_len:]


def test_leave_one_out_needs_three_events():
    with pytest.raises(ValueError, match="at least 3"):
        leave_one_out(_seqs([[1, 2]]))
