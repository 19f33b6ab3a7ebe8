"""Baselines on tiny logs whose scores can be checked by hand."""

import numpy as np
import pytest
import torch

from recsys.baselines.actions import action_markov, action_pairs, majority_class, purchase_rate_by_last_action, repeat_last
from recsys.baselines.base import TrainingEvents
from recsys.baselines.popularity import MostPopular, RecentPopular
from recsys.baselines.registry import BASELINES
from recsys.baselines.transitions import ItemTransitions
from recsys.eval.ranking import target_ranks

DAY = 86_400
# Two users over items 1..5. Training events: user 0 -> 1 2 3 1 2, user 1 -> 2 3 4.
# Their held-out events (validation / test targets) follow in the flat array and must be ignored.
ITEMS = np.array([1, 2, 3, 1, 2, 5, 5, 2, 3, 4, 5, 5])
START, STOP = np.array([0, 7]), np.array([5, 10])
STAMPS = np.array([0, 1, 2, 9, 10, 11, 12, 8, 9, 10, 11, 12]) * DAY


def _data(stamps=None):
    return TrainingEvents(ITEMS, START, STOP, n_items=5, timestamps=stamps)


def test_most_popular_counts_training_events_only():
    scores = MostPopular().fit(_data()).score(torch.tensor([[0, 1], [3, 4]]))
    # counts: item1 2, item2 3, item3 2, item4 1, item5 0 (its 4 events are all held out)
    assert scores[:, 1:].tolist() == [[2, 3, 2, 1, 0]] * 2
    assert scores[:, 0].tolist() == [float("-inf")] * 2
    ranks = target_ranks(scores, torch.tensor([2, 3]))
    assert ranks.tolist() == [1, 3]  # item 3 ties item 1: pessimistic rank 3


def test_recent_popularity_counts_the_last_days_and_breaks_ties_by_popularity():
    model = RecentPopular(days=2).fit(_data(STAMPS))
    # last training event at day 10; window [day 8, day 10]: user 0 -> 1 (d9), 2 (d10);
    # user 1 -> 2 (d8), 3 (d9), 4 (d10). Recent counts 1:1 2:2 3:1 4:1 5:0.
    assert model.window == (8 * DAY, 10 * DAY)
    s = model.score(torch.tensor([[1]]))[0, 1:]
    key = np.array([2, 3, 2, 1, 0]) / 4.0  # all-time counts / (max + 1)
    assert s.tolist() == pytest.approx((np.array([1, 2, 1, 1, 0]) + key).tolist())
    assert torch.argsort(s, descending=True).tolist()[:2] == [1, 0]  # item 2, then item 1 (more popular than 3, 4)


def test_recent_popularity_refuses_position_only_data():
    with pytest.raises(ValueError, match="real timestamps"):
        RecentPopular(days=7).fit(_data(None))


def test_transitions_count_pairs_within_users_and_back_off_to_popularity():
    model = ItemTransitions().fit(_data())
    # pairs: 1->2, 2->3, 3->1, 1->2 (user 0); 2->3, 3->4 (user 1). None crosses users.
    assert model.pair_count(1, 2) == 2 and model.pair_count(2, 3) == 2
    assert model.pair_count(3, 1) == 1 and model.pair_count(3, 4) == 1
    assert model.pair_count(2, 2) == 0 and model.counts.sum() == 6
    scores = model.score(torch.tensor([[0, 3], [2, 4], [0, 0]]))
    key = np.array([2, 3, 2, 1, 0]) / 4.0
    assert scores[0, 1:].tolist() == pytest.approx((np.array([1, 0, 0, 1, 0]) + key).tolist())
    assert target_ranks(scores[:1], torch.tensor([1])).tolist() == [1]  # 3->1 ties 3->4, popularity decides
    assert scores[1, 1:].tolist() == pytest.approx(key.tolist())  # item 4 was never followed: popularity
    assert scores[2, 1:].tolist() == pytest.approx(key.tolist())  # empty history: popularity


@pytest.mark.parametrize("name", ["popularity", "recent_popularity", "transitions"])
def test_state_restores_a_fitted_baseline_that_scores_identically(name):
    from recsys.baselines.registry import build_baseline, restore_baseline
    from recsys.config import ModelConfig

    cfg = ModelConfig(name=name, recent_days=2)
    fitted = build_baseline(cfg).fit(_data(STAMPS))
    restored = restore_baseline(cfg, {k: v.copy() for k, v in fitted.state().items()})
    inputs = torch.tensor([[0, 3], [2, 4], [0, 0], [1, 1], [0, 5]])
    assert torch.equal(restored.score(inputs), fitted.score(inputs))


def test_transitions_score_equals_a_dense_count_table_by_hand():
    """The CSR scoring against a dense (n + 1, n + 1) table built pair by pair."""
    rng = np.random.default_rng(0)
    items = rng.integers(1, 8, size=60)
    start, stop = np.array([0, 20, 45]), np.array([18, 44, 60])
    data = TrainingEvents(items, start, stop, n_items=7)
    model = ItemTransitions().fit(data)
    table = np.zeros((8, 8))
    for s, e in zip(start, stop):
        for a, b in zip(items[s:e - 1], items[s + 1:e]):
            table[a, b] += 1
    key = np.bincount(np.concatenate([items[s:e] for s, e in zip(start, stop)]), minlength=8) / 1.0
    key = key / (key.max() + 1)
    inputs = torch.tensor([[0, a] for a in range(8)])
    expected = table + key[None, :]
    expected[0] = key  # PAD as the last item: popularity only
    expected[:, 0] = -np.inf
    assert torch.equal(model.score(inputs), torch.from_numpy(expected))


def test_registry_matches_config_names():
    from recsys.config import BASELINE_NAMES, ModelConfig

    assert set(BASELINES) == set(BASELINE_NAMES)
    assert isinstance(BASELINES["recent_popularity"](ModelConfig(name="recent_popularity", recent_days=3)), RecentPopular)


def test_action_baselines_by_hand():
    events = np.array([1, 1, 2, 1, 3, 1, 1, 2])  # user 0 -> 1 1 2 1 3, user 1 -> 1 1 2
    now, nxt = action_pairs(events, np.array([0, 5]), np.array([5, 8]))
    assert now.tolist() == [1, 1, 2, 1, 1, 1] and nxt.tolist() == [1, 2, 1, 3, 1, 2]
    assert majority_class(nxt, 3, 2).tolist() == [[0.5, 2 / 6, 1 / 6]] * 2
    assert repeat_last(np.array([2, 3]), 3).tolist() == [[0, 1, 0], [0, 0, 1]]
    # from action 1: next 1 x2, 2 x2, 3 x1 -> add-one smoothed (3, 3, 2) / 8
    assert action_markov(now, nxt, np.array([1]), 3)[0].tolist() == pytest.approx([3 / 8, 3 / 8, 2 / 8])
    rate = purchase_rate_by_last_action(np.array([1, 1, 2]), np.array([1.0, 0.0, 1.0]), np.array([1, 2, 3]), 3)
    assert rate.tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 2])


def test_class_weights_fitted_to_macro_f1_recover_a_minority_class():
    from sklearn.metrics import f1_score

    from recsys.baselines.actions import fit_class_weights, reweighted

    # class 1 is never the argmax, but its probability ranks its rows first: a weight w on it
    # with 0.3 w > 0.7 and 0.1 w < 0.9, i.e. 7/3 < w < 9, classifies every row correctly
    probs = np.array([[0.7, 0.3], [0.7, 0.3], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    targets = np.array([1, 1, 0, 0, 0])
    assert f1_score(targets, probs.argmax(1), average="macro", labels=[0, 1], zero_division=0) == pytest.approx(0.375)
    w = fit_class_weights(probs, targets)
    assert w[0] == 1.0 and 7 / 3 < w[1] < 9
    out = reweighted(probs, w)
    assert out.argmax(1).tolist() == targets.tolist()
    assert out.sum(1) == pytest.approx(np.ones(5))
    # nothing to gain: the weights stay at one
    assert fit_class_weights(np.eye(2)[targets] * 0.8 + 0.1, targets).tolist() == [1.0, 1.0]


def test_prior_correction_divides_by_the_prior_and_renormalises():
    from recsys.baselines.actions import prior_corrected

    probs = np.array([[0.8, 0.2], [0.95, 0.05]])
    out = prior_corrected(probs, np.array([0.9, 0.1]))
    # row 0: (0.8/0.9, 0.2/0.1) = (0.889, 2) -> class 1 wins; row 1: (1.056, 0.5) -> class 0
    assert out.argmax(1).tolist() == [1, 0]
    assert out[0].tolist() == pytest.approx([0.8 / 0.9 / (0.8 / 0.9 + 2), 2 / (0.8 / 0.9 + 2)])
