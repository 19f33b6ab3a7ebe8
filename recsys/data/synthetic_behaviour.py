"""A planted multi-behaviour log (view / cart / fav / buy with timestamps) whose optimal
next-action, purchase and churn predictions are computed exactly.

The sibling of ``recsys.data.synthetic`` (planted next *items*). Every user is a small
stochastic process whose state after each event is a function of the observed past, so
the Bayes-optimal prediction at any moment is a closed form or a short exact recursion.

**State after an event**: the pending carts ``P`` (a list of items, oldest first, at most
``max_pending``), the last action ``a``, and ``n``, the number of events in the current
session. Actions are ``ACTIONS = ("buy", "cart", "fav", "pv")`` (the order of the
library's action vocabulary), item ``x`` has a class ``c(x)`` and a popularity ``pop(x)``.

**Next event** (what follows the state):

1. *gap type*: the session continues with ``p_cont(a, n) = sigmoid(cont_bias + cont_action[a]
   - cont_decay * min(n, n_cap))``: a short gap (whole seconds, geometric with mean about
   ``short_mean_s``, below ``session_gap_s``). Otherwise the session ends and the user
   **churns** with ``q(n) = sigmoid(quit_bias - quit_decay * min(n, n_cap))`` (short
   sessions, little recent activity: a higher hazard): no more events, ever. Otherwise a
   long gap, ``session_gap_s`` + geometric with mean about ``long_mean_s``, opens a new session.
2. *content*, given the gap type ``g`` (short / long): with ``P`` non-empty and probability
   ``buy_pending[g]`` the user **buys a pending cart** (purchases follow carts with a delay,
   likelier after a long gap): an item drawn uniformly from ``P``. Otherwise the user
   browses an item ``x ~ pop`` and acts ``a' ~ softmax(theta[c(x)] + phi[a] + psi[g])``; a cart
   appends ``x`` to ``P`` (dropping the oldest beyond ``max_pending``).
3. *update*: any buy of an item in ``P`` removes its oldest occurrence (so the state is a
   function of the observed events); ``n`` becomes ``n + 1`` after a short gap, 1 after a long one.

A user's first event is a long-gap event from the empty state (``a`` = ``none``), at a
uniform time in ``[0, arrival_days]``; users live until they churn, so the log holds every
event that ever happens: no label is cut short by the end of the log.

**Oracles** (``BehaviourOracle``), at the moment right after an event, with the protocol of
``recsys.data.behaviour``:

- ``next_action``: P(next action | past, a next event exists), summing the gap types with
  weights ``p_cont`` and ``(1 - p_cont)(1 - q)``;
- ``next_action_given``: P(next action | past, next item ``x``, gap ``dt``): ``dt`` tells the
  gap type exactly (``dt < session_gap_s``), and Bayes' rule over the pending-buy and browse
  branches for ``x``;
- ``purchase``: P(a buy among the next k events | past, the label is observed), where
  observed means a buy within k events or k events at all (a churned user's horizon is
  censored, as in the protocol): an exact backward recursion over (pending count, last
  action, session length, alive), k steps;
- ``churn``: P(no event in ``(s, s + T]`` | past, no event in ``(t_last, s]``) =
  ``S(s - t_last + T) / S(s - t_last)`` with ``S`` the survival function of the next event's
  time (churn, short and long gaps).

``tests/data/test_synthetic_behaviour.py`` checks each oracle against the generator by
brute force on a tiny instance (Monte Carlo, and the purchase recursion against an
enumeration of every path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ACTIONS = ("buy", "cart", "fav", "pv")
BUY, CART, FAV, PV, NONE = 0, 1, 2, 3, 4
SHORT, LONG = 0, 1
T0 = 1_500_000_000  # the clock's origin (seconds)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class BehaviourParams:
    """The generator's parameters. The defaults give Taobao-like rates: 90% views, 4% carts,
    2.5% favs, 3.5% buys (Taobao sample: 90 / 5.3 / 2.8 / 2.1), gaps of about a minute inside
    sessions and hours between them, 60 events per user on average over a lifetime of days."""

    n_users: int = 3000
    n_items: int = 500
    n_classes: int = 3
    zipf: float = 0.6
    arrival_days: float = 20.0
    # theta[c]: action logits (buy, cart, fav, pv) of a browse event on an item of class c
    theta: tuple = ((-4.5, -3.0, -3.8, 0.0), (-6.0, -2.5, -2.9, 0.0), (-7.5, -5.0, -5.0, 0.0))
    # phi[a]: added after last action a (buy, cart, fav, pv, none)
    phi: tuple = ((-1.0, -0.5, 0.0, 0.0), (1.0, 1.5, 0.0, 0.0), (0.0, 0.5, 1.5, 0.0), (0.0,) * 4, (0.0,) * 4)
    # psi[g]: added after a short / long gap
    psi: tuple = ((0.0, 0.0, 0.0, 0.0), (1.0, -0.5, 0.3, 0.0))
    buy_pending: tuple = (0.05, 0.45)  # P(buy a pending cart) after a short / long gap
    max_pending: int = 3
    cont_bias: float = 2.4
    cont_action: tuple = (-1.0, 0.5, 0.0, 0.0, 0.0)  # by last action (buy, cart, fav, pv, none)
    cont_decay: float = 0.08
    quit_bias: float = -0.3
    quit_decay: float = 0.35
    n_cap: int = 40
    short_mean_s: float = 60.0
    session_gap_s: float = 1800.0
    long_mean_s: float = 10 * 3600.0
    seed: int = 0

    def p_cont(self, a, n):
        return _sigmoid(self.cont_bias + np.asarray(self.cont_action)[a] - self.cont_decay * np.minimum(n, self.n_cap))

    def q(self, n):
        return _sigmoid(self.quit_bias - self.quit_decay * np.minimum(n, self.n_cap))

    def action_probs(self, c, a, g) -> np.ndarray:
        """softmax(theta[c] + phi[a] + psi[g]) over ACTIONS, broadcast over the inputs: (..., 4)."""
        logits = np.asarray(self.theta)[c] + np.asarray(self.phi)[a] + np.asarray(self.psi)[g]
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)


@dataclass
class UserState:
    pending: list = field(default_factory=list)  # items, oldest first
    last: int = NONE
    n: int = 0


def step_gap(params: BehaviourParams, state: UserState, rng: np.random.Generator) -> tuple[int | None, int]:
    """Gap type and whole seconds to the next event; ``(None, -1)`` when the user churns.

    Gaps are integers (timestamps are whole seconds): a short gap is geometric on
    ``0 .. session_gap_s - 1`` with ``P(k) ~ exp(-k / short_mean_s)``, a long one
    ``session_gap_s + k`` with ``P(k) ~ exp(-k / long_mean_s)``, ``k >= 0``."""
    if rng.random() < params.p_cont(state.last, state.n):
        r, tau = np.exp(-1.0 / params.short_mean_s), int(params.session_gap_s)
        u = 1.0 - rng.random() * (1.0 - r**tau)  # in (r^tau, 1]: the truncation
        return SHORT, min(int(np.floor(np.log(u) / np.log(r))), tau - 1)
    if rng.random() < params.q(state.n):
        return None, -1
    r = np.exp(-1.0 / params.long_mean_s)
    return LONG, int(params.session_gap_s) + int(np.floor(np.log(1.0 - rng.random()) / np.log(r)))


def step_content(params: BehaviourParams, world: PlantedBehaviour, state: UserState, g: int,
                 rng: np.random.Generator) -> tuple[int, int]:
    """(item, action) of the next event after a gap of type ``g``; updates ``state``."""
    if state.pending and rng.random() < params.buy_pending[g]:
        item, action = state.pending[int(rng.integers(len(state.pending)))], BUY
    else:
        item = int(np.searchsorted(world.pop_cdf, rng.random(), side="right"))
        item = min(item, params.n_items - 1)
        probs = params.action_probs(world.item_class[item], state.last, g)
        action = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
        action = min(action, 3)
    update(params, state, item, action, g)
    return item, action


def update(params: BehaviourParams, state: UserState, item: int, action: int, g: int) -> None:
    """The state after an event (item, action) that followed a gap of type ``g``."""
    if action == BUY and item in state.pending:
        state.pending.remove(item)  # its oldest occurrence
    elif action == CART:
        state.pending.append(item)
        if len(state.pending) > params.max_pending:
            state.pending.pop(0)
    state.last = action
    state.n = state.n + 1 if g == SHORT else 1


@dataclass(frozen=True)
class PlantedBehaviour:
    """A generated log and the world it came from."""

    params: BehaviourParams
    item_class: np.ndarray  # (n_items,) class of item index i
    pop: np.ndarray  # (n_items,) popularity, summing to 1
    frame: pd.DataFrame  # user, item, timestamp, event: the canonical event-log columns

    @property
    def pop_cdf(self) -> np.ndarray:
        return np.cumsum(self.pop)

    @property
    def class_mass(self) -> np.ndarray:
        """(n_classes,) popularity mass of each class."""
        return np.bincount(self.item_class, weights=self.pop, minlength=self.params.n_classes)

    def to_csv(self, path) -> None:
        """``user,item,behavior,timestamp`` rows without a header (Taobao's column order, no category)."""
        self.frame[["user", "item", "event", "timestamp"]].to_csv(path, header=False, index=False)


def make_world(params: BehaviourParams) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(params.seed)
    item_class = rng.integers(params.n_classes, size=params.n_items)
    pop = 1.0 / np.arange(1, params.n_items + 1) ** params.zipf
    pop = rng.permutation(pop / pop.sum())
    return item_class, pop


def generate(params: BehaviourParams = BehaviourParams()) -> PlantedBehaviour:
    """Every user's events until churn, in user order (ids ``u<k>``, items ``i<k>``)."""
    item_class, pop = make_world(params)
    world = PlantedBehaviour(params, item_class, pop, pd.DataFrame())
    rng = np.random.default_rng(params.seed + 1)
    users, items, actions, times = [], [], [], []
    for u in range(params.n_users):
        state = UserState()
        t, g = T0 + int(rng.random() * params.arrival_days * 86400.0), LONG
        while True:
            item, action = step_content(params, world, state, g, rng)
            users.append(u)
            items.append(item)
            actions.append(action)
            times.append(t)
            g, dt = step_gap(params, state, rng)
            if g is None:
                break
            t += dt
    users, items = np.array(users), np.array(items)
    frame = pd.DataFrame({
        "user": np.char.add("u", users.astype(str)).astype(object),
        "item": np.char.add("i", items.astype(str)).astype(object),
        "timestamp": np.array(times, dtype=np.int64),
        "event": np.array(ACTIONS, dtype=object)[np.array(actions)],
    })
    return PlantedBehaviour(params, item_class, pop, frame)


class BehaviourOracle:
    """Exact predictions for a log of this world (module docstring).

    ``items`` are item *indices* (``i<k>`` -> k), ``actions`` indices into ``ACTIONS``,
    ``timestamps`` seconds, ``offsets`` the user boundaries (CSR, time order within a user).
    ``replay`` recovers the state after every event from the observed events alone."""

    def __init__(self, world: PlantedBehaviour, items: np.ndarray, actions: np.ndarray, timestamps: np.ndarray,
                 offsets: np.ndarray) -> None:
        self.world, self.p = world, world.params
        self.items, self.actions = np.asarray(items, np.int64), np.asarray(actions, np.int64)
        self.ts, self.offsets = np.asarray(timestamps, np.float64), np.asarray(offsets, np.int64)
        self.pending: list[tuple] = []
        n_events = len(self.items)
        self.last = np.empty(n_events, np.int64)
        self.n = np.empty(n_events, np.int64)
        for u in range(len(self.offsets) - 1):
            state = UserState()
            for j in range(self.offsets[u], self.offsets[u + 1]):
                first = j == self.offsets[u]
                g = LONG if first or self.ts[j] - self.ts[j - 1] >= self.p.session_gap_s else SHORT
                update(self.p, state, int(self.items[j]), int(self.actions[j]), g)
                self.pending.append(tuple(state.pending))
                self.last[j], self.n[j] = state.last, state.n
        self.m = np.array([len(x) for x in self.pending], dtype=np.int64)

    def _gap_weights(self, pos: np.ndarray) -> np.ndarray:
        """(M, 2) P(short), P(long) next gap, given that a next event exists."""
        pc = self.p.p_cont(self.last[pos], self.n[pos])
        w = np.stack([pc, (1 - pc) * (1 - self.p.q(self.n[pos]))], axis=1)
        return w / w.sum(axis=1, keepdims=True)

    def next_action(self, pos: np.ndarray) -> np.ndarray:
        """(M, 4) P(next action | events <= pos, a next event exists)."""
        pos = np.asarray(pos, np.int64)
        mass = self.world.class_mass  # (C,)
        out = np.zeros((len(pos), 4))
        for g, weight in zip((SHORT, LONG), self._gap_weights(pos).T):
            beta = np.where(self.m[pos] > 0, self.p.buy_pending[g], 0.0)
            browse = np.einsum("c,mca->ma", mass, self.p.action_probs(
                np.arange(self.p.n_classes)[None, :], self.last[pos][:, None], g))  # (M, 4)
            probs = (1 - beta)[:, None] * browse
            probs[:, BUY] += beta
            out += weight[:, None] * probs
        return out

    def next_action_given(self, pos: np.ndarray, item: np.ndarray, gap: np.ndarray) -> np.ndarray:
        """(M, 4) P(next action | events <= pos, next item index ``item``, gap ``gap`` seconds)."""
        pos, item = np.asarray(pos, np.int64), np.asarray(item, np.int64)
        g = np.where(np.asarray(gap) >= self.p.session_gap_s, LONG, SHORT)
        beta = np.where(self.m[pos] > 0, np.asarray(self.p.buy_pending)[g], 0.0)
        share = np.array([self.pending[j].count(x) / max(len(self.pending[j]), 1) for j, x in zip(pos, item)])
        joint = ((1 - beta) * self.world.pop[item])[:, None] * self.p.action_probs(
            self.world.item_class[item], self.last[pos], g)  # (M, 4)
        joint[:, BUY] += beta * share
        return joint / joint.sum(axis=1, keepdims=True)

    def purchase_table(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(bought, survived): arrays (max_pending + 1, 5, n_cap + 1) over the state after an
        event (pending count, last action, session length capped at n_cap): P(a buy within
        ``horizon`` events) and P(no buy and ``horizon`` more events)."""
        p, M, N = self.p, self.p.max_pending, self.p.n_cap
        mass = self.world.class_mass
        m_, a_, n_ = np.meshgrid(np.arange(M + 1), np.arange(5), np.arange(N + 1), indexing="ij")
        bought, survived = np.zeros(m_.shape), np.ones(m_.shape)
        pc, q = p.p_cont(a_, n_), p.q(n_)
        for _ in range(horizon):
            new_b, new_s = np.zeros(m_.shape), np.zeros(m_.shape)
            for g, w in ((SHORT, pc), (LONG, (1 - pc) * (1 - q))):
                beta = np.where(m_ > 0, p.buy_pending[g], 0.0)
                new_b += w * beta
                n_next = np.minimum(n_ + 1, N) if g == SHORT else np.ones_like(n_)
                for act in range(4):
                    pa = (1 - beta) * (p.action_probs(np.arange(p.n_classes)[None, None, None, :],
                                                      a_[..., None], g)[..., act] * mass).sum(axis=-1)
                    if act == BUY:
                        new_b += w * pa
                        continue
                    m_next = np.minimum(m_ + 1, M) if act == CART else m_
                    new_b += w * pa * bought[m_next, act, n_next]
                    new_s += w * pa * survived[m_next, act, n_next]
            bought, survived = new_b, new_s
        return bought, survived

    def purchase(self, pos: np.ndarray, horizon: int) -> np.ndarray:
        """(M,) P(a buy among the next ``horizon`` events | events <= pos, the label is observed)."""
        pos = np.asarray(pos, np.int64)
        bought, survived = self.purchase_table(horizon)
        idx = (self.m[pos], self.last[pos], np.minimum(self.n[pos], self.p.n_cap))
        b, s = bought[idx], survived[idx]
        return b / (b + s)

    def survival(self, pos: np.ndarray, t: np.ndarray) -> np.ndarray:
        """P(no event within ``t`` seconds after event ``pos``), i.e. P(gap > t) or churn;
        gaps are whole seconds, so gap > t means gap >= floor(t) + 1."""
        p = self.p
        j = np.floor(np.asarray(t, np.float64)) + 1.0
        pc, q = p.p_cont(self.last[pos], self.n[pos]), p.q(self.n[pos])
        tau = p.session_gap_s
        rs, rl = np.exp(-1.0 / p.short_mean_s), np.exp(-1.0 / p.long_mean_s)
        short = np.where(j < tau, (rs ** np.minimum(j, tau) - rs**tau) / (1 - rs**tau), 0.0)
        long = np.where(j <= tau, 1.0, rl ** np.maximum(j - tau, 0.0))
        return pc * short + (1 - pc) * (q + (1 - q) * long)

    def churn(self, pos: np.ndarray, elapsed: np.ndarray, horizon_s: float) -> np.ndarray:
        """(S,) P(no event in (s, s + T] | events <= pos, none in (t_pos, s]), ``elapsed = s - t_pos``."""
        pos = np.asarray(pos, np.int64)
        return self.survival(pos, np.asarray(elapsed) + horizon_s) / self.survival(pos, elapsed)


def oracle_for(world: PlantedBehaviour, seqs, item_names, action_names) -> BehaviourOracle:
    """The oracle over ``seqs`` (``recsys.data.sequences.Sequences`` built from ``world.frame``):
    token ``t`` is raw item ``item_names[t - 1]`` (``i<k>``), action id ``e`` is ``action_names[e - 1]``."""
    index = np.array([int(str(name)[1:]) for name in item_names], dtype=np.int64)
    action_index = np.array([ACTIONS.index(name) for name in action_names], dtype=np.int64)
    return BehaviourOracle(world, index[seqs.items - 1], action_index[seqs.events - 1], seqs.timestamps, seqs.offsets)


def item_indices(item_names, tokens: np.ndarray) -> np.ndarray:
    """Raw item index (``i<k>`` -> k) of token ids."""
    index = np.array([int(str(name)[1:]) for name in item_names], dtype=np.int64)
    return index[np.asarray(tokens) - 1]


def oracle_predictions(world: PlantedBehaviour, seqs, item_names, action_names, lo: int, hi: int,
                       horizon: int, churn_s: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The optimum on the protocol's window ``(lo, hi]`` (``recsys.data.behaviour``): task ->
    (probabilities, targets or labels, users), on exactly the moments and snapshots every
    predictor of the behaviour report is scored on. Next-action probabilities are columns
    in ``action_names`` order (the log's action ids), targets 0-based."""
    from recsys.data.behaviour import churn_snapshots, tail_moments
    from recsys.types import NO_LABEL, PAD_ID

    oracle = oracle_for(world, seqs, item_names, action_names)
    to_ids = np.array([ACTIONS.index(name) for name in action_names])  # column of each action id
    buy = list(action_names).index("buy") + 1
    m = tail_moments(seqs, lo, hi, buy, horizon)
    keep = m.next_action != PAD_ID
    target, users = m.next_action[keep] - 1, m.user[keep]
    out = {
        "next_action": (oracle.next_action(m.pos[keep])[:, to_ids], target, users),
        "next_action_given": (oracle.next_action_given(
            m.pos[keep], item_indices(item_names, m.next_item[keep]), m.next_gap[keep])[:, to_ids], target, users),
    }
    if horizon > 0:
        has = m.purchase != NO_LABEL
        out["purchase"] = (oracle.purchase(m.pos[has], horizon), m.purchase[has], m.user[has])
    if churn_s > 0:
        s = churn_snapshots(seqs, lo, hi, churn_s)
        out["churn"] = (oracle.churn(s.pos, s.elapsed, churn_s), s.label, s.user)
    return out
