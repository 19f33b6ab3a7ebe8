import math

import pytest
import torch

from recsys.training.negatives import SAMPLERS, NegativeSampler

TARGETS = torch.tensor([[0, 0, 3, 3], [0, 5, 3, 7]])  # in-batch pool: 3 x3, 5, 7


def test_sampler_names_match_config():
    from recsys.config import SAMPLER_NAMES

    assert set(SAMPLERS) == set(SAMPLER_NAMES)


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_same_seed_same_negatives_other_seed_other_negatives(kind):
    counts = torch.arange(11, dtype=torch.float32)
    draws = [NegativeSampler(kind, 10, seed, counts)(TARGETS, (2, 4, 16)) for seed in (0, 0, 1)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], draws[2][0])
    negatives = draws[0][0]
    assert negatives.shape == (2, 4, 16) and negatives.min() >= 1 and negatives.max() <= 10  # never PAD


def test_uniform_log_q():
    negatives, log_q = NegativeSampler("uniform", 10, 0)(TARGETS, (5,))
    assert torch.allclose(log_q, torch.full((5,), -math.log(10)))


def test_popularity_follows_counts_and_reports_its_q():
    counts = torch.tensor([0.0, 1, 0, 3, 6])  # items 1..4 drawn 1:0:3:6
    negatives, log_q = NegativeSampler("popularity", 4, 0, counts)(TARGETS, (20000,))
    freq = torch.bincount(negatives, minlength=5)[1:].float() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.3, 0.6]), atol=0.01)
    assert torch.allclose(log_q, torch.tensor([0.1, 0.0, 0.3, 0.6])[negatives - 1].log())


def test_in_batch_draws_batch_targets_with_their_exact_frequency():
    negatives, log_q = NegativeSampler("in_batch", 10, 0)(TARGETS, (400,))
    assert set(negatives.tolist()) == {3, 5, 7}
    expected = {3: 0.6, 5: 0.2, 7: 0.2}
    assert torch.allclose(log_q.exp(), torch.tensor([expected[i] for i in negatives.tolist()]))
