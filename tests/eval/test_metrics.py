import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from recsys.eval.metrics import hr_at_k, mrr_at_k, ndcg_at_k, summarise
from recsys.eval.ranking import target_ranks


def test_hand_computed_values():
    ranks = torch.tensor([1, 3, 10, 11])
    # HR@10: ranks 1, 3, 10 hit; 11 misses.
    assert hr_at_k(ranks, 10).tolist() == [1.0, 1.0, 1.0, 0.0]
    assert ndcg_at_k(ranks, 10).tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0.0])
    assert mrr_at_k(ranks, 10).tolist() == pytest.approx([1.0, 1 / 3, 0.1, 0.0])
    assert ndcg_at_k(ranks, 2).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    m = summarise(ranks, (1, 10))
    assert m["hr@1"] == pytest.approx(0.25)
    assert m["hr@10"] == pytest.approx(0.75)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 0.1) / 4)


def test_against_sklearn_on_random_scores():
    """Independent implementation: sklearn's ndcg_score with one relevant item per row."""
    rng = np.random.default_rng(0)
    B, V = 64, 40
    scores = rng.normal(size=(B, V))  # continuous: no ties, so tie handling cannot differ
    scores[:, 0] = -np.inf  # PAD column
    targets = rng.integers(1, V, size=B)
    ranks = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets))
    relevance = np.zeros((B, V - 1))
    relevance[np.arange(B), targets - 1] = 1
    for k in (1, 5, 10, 20):
        expected = ndcg_score(relevance, scores[:, 1:], k=k)
        assert summarise(ranks, (k,))[f"ndcg@{k}"] == pytest.approx(expected, abs=1e-12)
        order = np.argsort(-scores[:, 1:], axis=1)[:, :k] + 1
        hr = np.mean([targets[b] in order[b] for b in range(B)])
        assert summarise(ranks, (k,))[f"hr@{k}"] == pytest.approx(hr)


def test_summarise_rejects_bad_ranks():
    with pytest.raises(ValueError):
        summarise(torch.tensor([0, 1]), (1,))
    with pytest.raises(ValueError):
        summarise(torch.tensor([], dtype=torch.int64), (1,))
