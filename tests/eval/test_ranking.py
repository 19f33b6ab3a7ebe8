import pytest
import torch

from recsys.eval.metrics import summarise
from recsys.eval.ranking import mask_seen, target_ranks


def test_ranks_are_one_based_and_ignore_pad():
    # columns: PAD, item1..item4; PAD gets a huge score but must never be ranked.
    scores = torch.tensor([[100.0, 0.1, 0.9, 0.5, 0.3]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [1]
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [4]


def test_ties_are_pessimistic():
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.1]])
    # target 2 ties with items 1 and 3: it ranks below both.
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]
    constant = torch.zeros(3, 101)
    ranks = target_ranks(constant, torch.tensor([1, 50, 100]))
    assert ranks.tolist() == [100, 100, 100]
    assert summarise(ranks, (10,))["ndcg@10"] == 0.0


def test_exclude_seen_masks_history_and_a_seen_target_ranks_last():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6], [0.0, 0.9, 0.8, 0.7, 0.6]])
    masked = mask_seen(scores, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3]))
    assert scores[0, 1] == 0.9  # input untouched
    # row 0: items 1, 2 seen, target 3 moves from rank 3 to rank 1.
    assert target_ranks(masked, torch.tensor([3, 4])).tolist() == [1, 3]
    # row 1: target 3 is itself seen: it is excluded with the others and ranks last.
    assert target_ranks(masked[1:], torch.tensor([3])).tolist() == [4]


def test_metrics_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    scores = torch.randn(103, 51).round(decimals=1)  # rounding creates many ties
    targets = torch.randint(1, 51, (103,))
    whole = summarise(target_ranks(scores, targets), (1, 5, 10, 20))
    for bs in (1, 7, 64):
        ranks = torch.cat([target_ranks(scores[i : i + bs], targets[i : i + bs]) for i in range(0, 103, bs)])
        assert summarise(ranks, (1, 5, 10, 20)) == whole


def test_invalid_input():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="real item"):
        target_ranks(torch.zeros(1, 3), torch.tensor([0]))
