"""The analyst's recency / frequency features, by hand on a tiny log."""

import numpy as np
import pytest

from recsys.baselines.behaviour import NONE_S, EventLog, FeatureModel, history_features

PV, CART, FAV, BUY = 1, 2, 3, 4
M = 60  # a minute

# user 0: pv a, cart a, cart b, (2 h later) buy a, pv c ; user 1: pv a, cart a
ITEMS = np.array([1, 1, 2, 1, 3, 1, 1])
EVENTS = np.array([PV, CART, CART, BUY, PV, PV, CART])
TS = np.array([0, 1 * M, 2 * M, 122 * M, 123 * M, 0, 25 * 60 * M])
OFFSETS = np.array([0, 5, 7])


@pytest.fixture()
def log():
    return EventLog(ITEMS, EVENTS, TS, OFFSETS, n_events=4, cart_id=CART, buy_id=BUY)


def test_open_carts_session_and_recency(log):
    assert log.open_carts.tolist() == [0, 1, 2, 1, 1, 0, 1]  # a bought at 122 min; b stays open
    assert log.session_start.tolist() == [0, 0, 0, 3, 3, 5, 6]  # a 2 h gap starts a session
    x = history_features(log, np.array([4, 6]))
    last, length, gap = x[:, 0:4], x[:, 4], x[:, 5]
    assert last.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert length.tolist() == pytest.approx(np.log1p([5, 2]))
    assert gap.tolist() == pytest.approx(np.log1p([M, 25 * 60 * M]))
    total, recent = x[:, 6:10], x[:, 10:14]
    assert total[0].tolist() == pytest.approx(np.log1p([2, 2, 0, 1]))
    assert recent[1].tolist() == [1, 1, 0, 0]
    in_day, in_session, session_age, open_carts = x[:, 14], x[:, 15], x[:, 16], x[:, 17]
    assert in_day.tolist() == [5, 1]  # user 1's pv was 25 h earlier
    assert in_session.tolist() == [2, 1] and session_age.tolist() == pytest.approx(np.log1p([M, 0]))
    assert open_carts.tolist() == [1, 1]
    since_cart, since_buy = x[:, 18], x[:, 19]
    assert since_cart.tolist() == pytest.approx(np.log1p([121 * M, 0]))
    assert since_buy.tolist() == pytest.approx(np.log1p([M, NONE_S]))


def test_candidate_features_read_the_users_own_earlier_events_with_the_item(log):
    # after event 2 (cart b) with candidate a; after event 4 with candidate b; user 1 with b
    x = history_features(log, np.array([2, 4, 6]), candidate_item=np.array([1, 2, 2]),
                         candidate_gap=np.array([120 * M, 5.0, 5.0]))
    counts = np.expm1(x[:, 20:24]).round()
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert x[:, 24].tolist() == [1, 1, 0]  # an open cart: carted more often than bought
    assert x[:, 26].tolist() == [1, 0, 0]  # the candidate comes after a new-session gap
    with_elapsed = history_features(log, np.array([4]), elapsed=np.array([3600.0]))
    assert with_elapsed[0, -1] == pytest.approx(np.log1p(3600.0))


def test_feature_models_give_probabilities_over_every_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] > 0).astype(int)  # class 2 never seen in training
    for kind in ("logistic", "gbm"):
        p = FeatureModel(kind, 3, seed=0).fit(x, y).predict_proba(x)
        assert p.shape == (300, 3) and np.allclose(p.sum(axis=1), 1) and (p[:, 2] == 0).all()
        assert np.mean(p.argmax(axis=1) == y) > 0.9
    with pytest.raises(ValueError, match="kind"):
        FeatureModel("forest", 2)
