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


def test_length_bucket_sampler_covers_every_row_once_and_groups_lengths():
    import torch

    from recsys.data.datamodule import LengthBucketBatchSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=1000)
    sampler = LengthBucketBatchSampler(lengths, 32, torch.Generator().manual_seed(0), window=8)
    epoch1, epoch2 = list(sampler), list(sampler)
    for epoch in (epoch1, epoch2):
        rows = np.concatenate(epoch)
        assert sorted(rows.tolist()) == list(range(1000))
        assert len(epoch) == len(sampler) == 32
    assert epoch1 != epoch2  # reshuffled each epoch
    # within a batch, lengths are much closer than in a random batch
    spread = np.mean([np.ptp(lengths[b]) for b in epoch1])
    assert spread < 0.3 * np.ptp(lengths)
    again = list(LengthBucketBatchSampler(lengths, 32, torch.Generator().manual_seed(0), window=8))
    assert again == epoch1  # same seed, same batches
