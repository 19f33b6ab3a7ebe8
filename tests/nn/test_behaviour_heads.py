"""The behaviour heads: time buckets, (action, gap) tokens, the candidate's history, the
candidate and churn heads, temperatures."""

import math

import pytest
import torch

from recsys.nn.heads import (
    GAP_EDGES_S,
    N_GAP_BUCKETS,
    ActionHeads,
    bucketize,
    candidate_history,
    event_tokens,
    fit_temperature,
    event_types,
    gap_bucket,
    item_relations,
)

NAN = float("nan")


def test_gap_buckets_and_tokens_by_hand():
    seconds = torch.tensor([NAN, -1.0, 0.0, 0.99, 1.0, 59.0, 60.0, 1799.0, 1800.0, 1e7])
    assert gap_bucket(seconds).tolist() == [0, 0, 1, 1, 2, 3, 4, 5, 6, 10]
    assert N_GAP_BUCKETS == len(GAP_EDGES_S) + 2 == 11
    assert bucketize(torch.tensor([5.0, 50.0]), (10.0, 100.0)).tolist() == [1, 2]
    events = torch.tensor([[0, 2, 1, 4]])
    gaps = torch.tensor([[NAN, NAN, 30.0, 7200.0]])
    # action + 4 * bucket; padding stays 0; a first event (no gap) is bucket 0
    assert event_tokens(events, 4, gaps).tolist() == [[0, 2, 1 + 4 * 3, 4 + 4 * 6]]
    rel = torch.tensor([[0, 0, 1, 2]])
    assert event_tokens(events, 4, relations=rel).tolist() == [[0, 2, 1 + 4, 4 + 8]]
    assert event_tokens(events, 4, gaps, rel).tolist() == [[0, 2, 1 + 4 * (3 + 11), 4 + 4 * (6 + 22)]]
    assert event_types(4, True, True) == 4 * 11 * 3 and event_types(4, False, False) == 4


def test_candidate_history_counts_only_earlier_events():
    inputs = torch.tensor([[0, 5, 7, 5, 5]])
    events = torch.tensor([[0, 2, 1, 3, 2]])  # 5 carted (2), 7 viewed (1), 5 bought (3), 5 carted
    # candidates after each position: the next item
    cand = torch.tensor([[5, 7, 5, 5, 9]])
    counts = torch.expm1(candidate_history(inputs, events, cand, 3)).round()
    assert counts[0].tolist() == [
        [0, 0, 0],  # after PAD: nothing seen (PAD never matches)
        [0, 0, 0],  # after (5, cart): candidate 7 unseen
        [0, 1, 0],  # after (7, view): candidate 5 carted once
        [0, 1, 1],  # after (5, buy): 5 carted, bought
        [0, 0, 0],  # candidate 9 unseen
    ]
    last = torch.expm1(candidate_history(inputs, events, torch.tensor([5]), 3)).round()
    assert last.tolist() == [[0, 2, 1]]


def test_heads_shapes_and_temperature():
    torch.manual_seed(0)
    heads = ActionHeads(8, 4, purchase=True, candidate=True, churn=True, dropout=0.5).eval()
    state = torch.randn(3, 8)
    action, purchase = heads(state)
    assert action.shape == (3, 4) and purchase.shape == (3,)
    cand = heads.candidate_logits(state, torch.randn(3, 8), torch.zeros(3, 4), torch.tensor([1.0, NAN, 1e5]))
    churn = heads.churn_logit(state, torch.tensor([0.0, 3600.0, 1e6]))
    assert cand.shape == (3, 4) and churn.shape == (3,)
    heads.set_temperature("candidate", 2.0)
    args = (state, torch.ones(3, 8), torch.zeros(3, 4), torch.ones(3))
    assert torch.allclose(heads.candidate_logits(*args), heads.candidate(*args) / 2.0)
    assert torch.allclose(heads(state)[0], action)  # the other heads keep temperature 1
    # weights saved before temperatures existed load with temperature 1
    old = {k: v for k, v in heads.state_dict().items() if k != "log_temperature"}
    fresh = ActionHeads(8, 4, purchase=True, candidate=True, churn=True)
    fresh.load_state_dict(old, strict=True)
    assert fresh.log_temperature.tolist() == [0.0] * 4


def test_fit_temperature_recovers_the_scaling_of_calibrated_logits():
    gen = torch.Generator().manual_seed(0)
    true = torch.randn(20_000, 4, generator=gen) * 2.0
    targets = torch.multinomial(true.softmax(dim=1), 1, generator=gen).squeeze(1)
    assert fit_temperature(true * 3.0, targets) == pytest.approx(3.0, rel=0.05)  # overconfident by 3
    p = torch.rand(20_000, generator=gen)
    labels = (torch.rand(20_000, generator=gen) < p).double()
    logit = torch.log(p / (1 - p))
    assert fit_temperature(logit * 0.5, labels, binary=True) == pytest.approx(0.5, rel=0.05)
    assert math.isfinite(fit_temperature(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long)))


def test_item_relations_by_hand():
    CART, BUY, VIEW = 2, 3, 1
    inputs = torch.tensor([[0, 5, 5, 7, 5, 5, 7]])
    events = torch.tensor([[0, VIEW, CART, VIEW, BUY, VIEW, CART]])
    # 5 new; 5 seen; 7 new; 5 carted before (open); 5 carted once, bought once (closed: seen);
    # 7 seen (its cart is this very event, not an earlier one)
    assert item_relations(inputs, events, CART, BUY).tolist() == [[0, 0, 1, 0, 2, 1, 1]]
    assert item_relations(inputs, events, 0, 0).tolist() == [[0, 0, 1, 0, 1, 1, 1]]  # no cart action


def test_history_summary_by_hand():
    from recsys.nn.heads import RECENT_CARTS, history_summary, recent_open_carts, summary_size

    CART, BUY, VIEW = 2, 3, 1
    inputs = torch.tensor([[0, 5, 5, 7, 5, 8, 9, 8]])
    events = torch.tensor([[0, VIEW, CART, CART, BUY, CART, CART, BUY]])
    gaps = torch.tensor([[NAN, NAN, 60.0, 7200.0, 30.0, 5.0, 5.0, 5.0]])
    # the latest carts, newest first: 1 = still open (no buy of its item since)
    assert recent_open_carts(inputs, events, CART, BUY)[0].tolist() == [
        [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0],  # the buy of 5 closes 5's cart
        [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0]]  # carts 5 7 8 9; the buy of 8 closes 8's
    s = history_summary(inputs, events, gaps, 3, CART, BUY)[0]
    assert s.shape == (8, summary_size(3)) == (8, 3 + RECENT_CARTS + 3) and (s[0] == 0).all()  # padding
    last, any_open, rest = s[:, :3], s[:, 3:7], torch.expm1(s[:, 7:])
    assert last.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert any_open.tolist() == [[0] * 4, [0] * 4, [1] * 4, [1] * 4, [1] * 4, [1] * 4, [1] * 4, [1] * 4]
    n_open, in_session, age = rest[:, 0], rest[:, 1], rest[:, 2]
    assert n_open.round().tolist() == [0, 0, 1, 2, 1, 2, 3, 2]
    assert in_session.round().tolist() == [0, 1, 2, 1, 2, 3, 4, 5]  # the 2 h gap starts a session
    assert age.tolist() == pytest.approx([0, 0, 60, 0, 30, 35, 40, 45], abs=1e-3)
    # only the latest carts count: the oldest of five carts, still open, is not "recent"
    inputs = torch.tensor([[1, 2, 3, 4, 5, 2, 3, 4, 5]])
    events = torch.tensor([[CART, CART, CART, CART, CART, BUY, BUY, BUY, BUY]])
    s = history_summary(inputs, events, torch.full((1, 9), 5.0), 3, CART, BUY)[0]
    assert s[-1, 3:7].tolist() == [0, 0, 0, 0] and s[4, 3:7].tolist() == [1, 1, 1, 1]


def test_with_a_summary_the_action_head_combines_its_features():
    # next action = XOR of two summary features (the state says nothing): a linear head on
    # [state, summary] cannot fit it, the SummaryMLP one can
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]).repeat(16, 1)
    y = (x[:, 0] != x[:, 1]).long()
    for summary, fits in ((2, True), (0, False)):
        heads = ActionHeads(8, 2, summary=summary)
        opt = torch.optim.Adam(heads.parameters(), lr=0.03)
        state = torch.zeros(len(x), 8) if summary else torch.cat([x, torch.zeros(len(x), 6)], dim=1)
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(heads(state, x if summary else None)[0], y)
            loss.backward()
            opt.step()
        assert (heads(state, x if summary else None)[0].argmax(-1) == y).all().item() is fits
