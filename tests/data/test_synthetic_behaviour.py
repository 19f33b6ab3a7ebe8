"""The planted multi-behaviour generator: its oracles against the generator itself, by brute
force on a tiny instance (Monte Carlo draws from the sampler, and every path enumerated)."""

import copy

import numpy as np
import pytest

from recsys.data.synthetic_behaviour import (
    BUY,
    CART,
    LONG,
    PV,
    SHORT,
    BehaviourOracle,
    BehaviourParams,
    UserState,
    generate,
    make_world,
    step_content,
    step_gap,
    update,
)

TINY = BehaviourParams(
    n_users=40, n_items=3, n_classes=2, theta=((-1.0, -0.5, -1.5, 0.0), (-2.0, 0.3, -1.0, 0.0)),
    buy_pending=(0.2, 0.6), max_pending=2, n_cap=3, cont_bias=0.5, cont_decay=0.4, quit_bias=-0.5, quit_decay=0.5,
    short_mean_s=120.0, long_mean_s=3 * 3600.0, arrival_days=2.0, seed=5)


def world_and_oracle(events):
    """An oracle over one user's hand-written events [(item, action, t), ...]."""
    world = generate(TINY)
    items, actions, ts = (np.array(c) for c in zip(*events))
    return world, BehaviourOracle(world, items, actions, ts, np.array([0, len(events)]))


# two carts 10 s apart: pending [0, 1], last cart, a session of 2
STATE_LOG = [(0, CART, 1000), (1, CART, 1010)]


def state_of(oracle, pos):
    return UserState(list(oracle.pending[pos]), int(oracle.last[pos]), int(oracle.n[pos]))


def test_replay_recovers_the_generators_state_from_the_events():
    world = generate(TINY)
    f = world.frame
    items = f["item"].str[1:].astype(int).to_numpy()
    actions = f["event"].map({"buy": 0, "cart": 1, "fav": 2, "pv": 3}).to_numpy()
    offsets = np.r_[0, np.cumsum(f.groupby("user", sort=False).size().to_numpy())]
    oracle = BehaviourOracle(world, items, actions, f["timestamp"].to_numpy(), offsets)
    # the generator's loop again, same seeds, recording its state after each event
    rng = np.random.default_rng(TINY.seed + 1)
    recorded = []
    for _ in range(TINY.n_users):
        state, g = UserState(), LONG
        rng.random()  # the arrival time
        while True:
            step_content(TINY, world, state, g, rng)
            recorded.append((tuple(state.pending), state.last, state.n))
            g, _ = step_gap(TINY, state, rng)
            if g is None:
                break
    assert recorded == list(zip(oracle.pending, oracle.last.tolist(), oracle.n.tolist()))
    assert len(f) == len(recorded) > 200


def simulate_next(world, state, draws, seed=0):
    """(gap type or None, item, action) of many next events drawn from ``state``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        s = copy.deepcopy(state)
        g, dt = step_gap(TINY, s, rng)
        if g is None:
            out.append((None, -1, -1, dt))
            continue
        item, action = step_content(TINY, world, s, g, rng)
        out.append((g, item, action, dt))
    return out


def test_next_action_oracles_match_the_sampler():
    world, oracle = world_and_oracle(STATE_LOG)
    state = state_of(oracle, 1)
    assert state.pending == [0, 1] and state.last == CART and state.n == 2
    draws = simulate_next(world, state, 40_000)
    alive = [d for d in draws if d[0] is not None]
    freq = np.bincount([d[2] for d in alive], minlength=4) / len(alive)
    assert np.abs(freq - oracle.next_action(np.array([1]))[0]).max() < 0.01
    for item, g, gap in ((0, SHORT, 10.0), (2, LONG, 5000.0), (1, LONG, 1800.0)):
        sel = [d[2] for d in alive if d[1] == item and d[0] == g]
        freq = np.bincount(sel, minlength=4) / len(sel)
        given = oracle.next_action_given(np.array([1]), np.array([item]), np.array([gap]))[0]
        assert np.abs(freq - given).max() < 0.03, (item, g, freq, given)
    # the gap-type boundary: 1799 s is a short gap, 1800 s a long one
    assert not np.allclose(oracle.next_action_given(np.array([1, 1]), np.array([0, 0]), np.array([1799, 1800]))[0],
                           oracle.next_action_given(np.array([1, 1]), np.array([0, 0]), np.array([1799, 1800]))[1])


def enumerate_purchase(world, state, horizon):
    """(P(buy within horizon), P(no buy and horizon events)) over every path, item by item."""
    p = TINY
    if horizon == 0:
        return 0.0, 1.0
    pc, q = float(p.p_cont(state.last, state.n)), float(p.q(state.n))
    bought = survived = 0.0
    for g, w in ((SHORT, pc), (LONG, (1 - pc) * (1 - q))):
        outcomes = []  # (probability, item, action)
        beta = p.buy_pending[g] if state.pending else 0.0
        for item in state.pending:
            outcomes.append((beta / len(state.pending), item, BUY))
        for item in range(p.n_items):
            probs = p.action_probs(world.item_class[item], state.last, g)
            for action in range(4):
                outcomes.append(((1 - beta) * world.pop[item] * probs[action], item, action))
        for prob, item, action in outcomes:
            if action == BUY:
                bought += w * prob
                continue
            nxt = copy.deepcopy(state)
            update(p, nxt, item, action, g)
            b, s = enumerate_purchase(world, nxt, horizon - 1)
            bought += w * prob * b
            survived += w * prob * s
    return bought, survived


@pytest.mark.parametrize("events", [STATE_LOG, [(2, PV, 0)], [(1, CART, 0), (1, CART, 5), (2, BUY, 9000)]])
def test_purchase_recursion_equals_every_path_enumerated(events):
    world, oracle = world_and_oracle(events)
    pos = len(events) - 1
    for horizon in (1, 2, 3):
        b, s = enumerate_purchase(world, state_of(oracle, pos), horizon)
        assert oracle.purchase(np.array([pos]), horizon)[0] == pytest.approx(b / (b + s), abs=1e-12)


def test_purchase_oracle_matches_the_sampler():
    world, oracle = world_and_oracle(STATE_LOG)
    rng = np.random.default_rng(1)
    outcomes = []
    for _ in range(20_000):
        state = state_of(oracle, 1)
        label = None
        for _ in range(3):
            g, _ = step_gap(TINY, state, rng)
            if g is None:
                break  # churned first: censored
            if step_content(TINY, world, state, g, rng)[1] == BUY:
                label = 1
                break
        else:
            label = 0
        if label is not None:
            outcomes.append(label)
    assert np.mean(outcomes) == pytest.approx(oracle.purchase(np.array([1]), 3)[0], abs=0.012)


@pytest.fixture(scope="module")
def gap_draws():
    """Seconds to the next event (inf: churned) drawn from the state of STATE_LOG."""
    world, oracle = world_and_oracle(STATE_LOG)
    state = state_of(oracle, 1)
    rng = np.random.default_rng(2)
    gaps = []
    for _ in range(100_000):
        g, dt = step_gap(TINY, copy.deepcopy(state), rng)
        gaps.append(np.inf if g is None else dt)
    return oracle, np.array(gaps)


@pytest.mark.parametrize("elapsed,horizon", [(0, 60), (30, 600), (1800, 3600), (7200, 86400), (20, 1780)])
def test_churn_oracle_matches_the_sampler(gap_draws, elapsed, horizon):
    oracle, gaps = gap_draws
    quiet_so_far = gaps > elapsed
    freq = np.mean(gaps[quiet_so_far] > elapsed + horizon)
    exact = oracle.churn(np.array([1]), np.array([float(elapsed)]), horizon)[0]
    assert freq == pytest.approx(exact, abs=0.01)
    assert oracle.survival(np.array([1]), np.array([0.0]))[0] == pytest.approx(np.mean(gaps > 0), abs=0.01)


def test_the_world_is_seeded():
    a, b = generate(TINY), generate(TINY)
    assert a.frame.equals(b.frame)
    cls, pop = make_world(TINY)
    assert pop.sum() == pytest.approx(1.0) and set(cls) <= {0, 1}


def test_oracle_over_the_data_pipelines_sequences_replays_the_same_states():
    from recsys.data.sequences import EventVocab, build_sequences
    from recsys.data.synthetic_behaviour import oracle_for
    from recsys.data.vocab import Vocab

    world = generate(TINY)
    vocab, events = Vocab.build(world.frame["item"]), EventVocab.build(world.frame["event"])
    seqs = build_sequences(world.frame, vocab, events)
    via_pipeline = oracle_for(world, seqs, vocab.items, events.names)
    f = world.frame
    direct = BehaviourOracle(world, f["item"].str[1:].astype(int).to_numpy(),
                             f["event"].map({"buy": 0, "cart": 1, "fav": 2, "pv": 3}).to_numpy(),
                             f["timestamp"].to_numpy(), seqs.offsets)
    assert via_pipeline.pending == direct.pending and np.array_equal(via_pipeline.n, direct.n)
