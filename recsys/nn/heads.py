"""Hidden states -> item scores over the full catalogue, and the action-type heads."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def score_items(user_state: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
    """Dot-product scores (B, V) for token ids 0..n; the PAD column is -inf.

    user_state: (B, D); item_weights: (n, D) for real items 1..n.
    """
    needs_grad = torch.is_grad_enabled() and (user_state.requires_grad or item_weights.requires_grad)
    if needs_grad or torch.compiler.is_compiling() or torch.jit.is_tracing():
        scores = user_state @ item_weights.T  # (B, n)
        pad = torch.full_like(scores[:, :1], float("-inf"))  # column PAD_ID == 0
        return torch.cat([pad, scores], dim=1)  # (B, n + 1)
    # Eager inference: the product writes straight into columns 1..n of the result (a
    # strided view), which saves the copy of the whole (B, n) block that cat makes.
    out = user_state.new_empty((user_state.shape[0], item_weights.shape[0] + 1))
    out[:, 0] = float("-inf")  # column PAD_ID == 0
    torch.mm(user_state, item_weights.T, out=out[:, 1:])
    return out  # (B, n + 1)


# Edges (seconds) of the time-gap buckets the encoder reads with each event (``time_gaps``)
# and the candidate head with the next one: bucket 0 = no previous event, 1 = under 1 s, ...
GAP_EDGES_S = (1.0, 10.0, 60.0, 300.0, 1800.0, 3 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0)
N_GAP_BUCKETS = len(GAP_EDGES_S) + 2
# Edges of the elapsed-time buckets of the churn head (time since the last event): log-spaced
# from a minute to two weeks, so the churn probability can follow the hazard closely.
ELAPSED_EDGES_S = tuple(float(x) for x in np.geomspace(60.0, 14 * 86400.0, 24))
N_ELAPSED_BUCKETS = len(ELAPSED_EDGES_S) + 2
HEAD_NAMES = ("action", "candidate", "purchase", "churn")  # order of ActionHeads.log_temperature


def bucketize(seconds: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
    """Bucket ids (int64): 0 for a missing time (nan or negative), else 1 + the number of
    edges at or below the time (log-spaced edges: a bucketed log time)."""
    seconds = torch.as_tensor(seconds, dtype=torch.float64)
    bounds = torch.tensor(edges, dtype=torch.float64, device=seconds.device)
    ids = torch.bucketize(seconds, bounds, right=True) + 1
    return torch.where(torch.isnan(seconds) | (seconds < 0), torch.zeros_like(ids), ids)


def gap_bucket(seconds: torch.Tensor) -> torch.Tensor:
    """Bucketed log time since the user's previous event (``GAP_EDGES_S``); 0 = none."""
    return bucketize(seconds, GAP_EDGES_S)


N_RELATIONS = 3  # item_relations: new item, seen before, carted before and not bought since


def item_relations(inputs: torch.Tensor, events: torch.Tensor, cart_id: int, buy_id: int) -> torch.Tensor:
    """(B, L) how each event's item relates to the user's earlier events in the window:
    0 new (or padding), 1 seen before, 2 carted before more often than bought (an open cart).
    ``cart_id`` / ``buy_id``: those action ids (0: the log has no such action)."""
    L = inputs.shape[1]
    before = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril(-1)  # (i, j): j < i
    same = (inputs[:, :, None] == inputs[:, None, :]) & before & (inputs != 0)[:, None, :]  # (B, L, L)
    carts = (same & (events == cart_id)[:, None, :]).sum(dim=2)
    buys = (same & (events == buy_id)[:, None, :]).sum(dim=2)
    rel = torch.where(carts > buys, 2, same.any(dim=2).to(torch.int64))
    return torch.where(inputs == 0, torch.zeros_like(rel), rel)


def relation_action_ids(names, purchase_event: str = "buy") -> tuple[int, int]:
    """(cart id, purchase id) among action ``names`` (id = index + 1); 0 for one it lacks."""
    names = list(names)
    return (names.index("cart") + 1 if "cart" in names else 0,
            names.index(purchase_event) + 1 if purchase_event in names else 0)


def event_types(n_events: int, time_gaps: bool, relations: bool) -> int:
    """How many action types an encoder reading ``event_tokens`` has."""
    return n_events * (N_GAP_BUCKETS if time_gaps else 1) * (N_RELATIONS if relations else 1)


def event_tokens(events: torch.Tensor, n_events: int, gaps: torch.Tensor | None = None,
                 relations: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids (B, L) of (action, gap bucket, item relation) triples for an encoder with
    ``event_types(...)`` action types: ``action + E * (bucket + G * relation)``, where a part
    left out (None) counts as 0 and ``G`` is ``N_GAP_BUCKETS`` with gaps, else 1. Padding
    (action 0) stays 0. events: (B, L) action ids 1..E; gaps: (B, L) seconds (nan: none)
    (``model.time_gaps``); relations: ``item_relations`` (``model.item_relations``)."""
    index = torch.zeros_like(events)
    if gaps is not None:
        index = index + gap_bucket(gaps).to(events.device)
    if relations is not None:
        index = index + (N_GAP_BUCKETS if gaps is not None else 1) * relations
    return torch.where(events > 0, events + n_events * index, events)


def candidate_history(inputs: torch.Tensor, events: torch.Tensor, candidates: torch.Tensor,
                      n_events: int) -> torch.Tensor:
    """How often the user acted on each candidate before, per action: log(1 + count).

    inputs, events: (B, L) the history (items, action ids 1..E). ``candidates`` (B, L): the
    candidate after each position, which may count only positions up to its own (causal);
    or (B,): one candidate after the whole history. Returns (B, L, E) or (B, E)."""
    onehot = F.one_hot(events.clamp(min=0), n_events + 1)[..., 1:].to(torch.float32)  # (B, L, E)
    if candidates.dim() == 1:
        same = (inputs == candidates[:, None]) & (inputs != 0)  # (B, L)
        return torch.log1p(torch.einsum("bl,ble->be", same.to(torch.float32), onehot))
    L = inputs.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()  # (j, i): i <= j
    same = (candidates[:, :, None] == inputs[:, None, :]) & causal & (inputs != 0)[:, None, :]  # (B, L, L)
    return torch.log1p(torch.einsum("bji,bie->bje", same.to(torch.float32), onehot))


SESSION_GAP_S = 1800.0  # history_summary: a gap this long starts a new session (30 minutes)
RECENT_CARTS = 4  # history_summary: how many of the latest carts it reports open or closed


def summary_size(n_events: int) -> int:
    """Width of ``history_summary``'s features."""
    return n_events + RECENT_CARTS + 3


def history_summary(inputs: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, n_events: int, cart_id: int,
                    buy_id: int) -> torch.Tensor:
    """(B, L, E + RECENT_CARTS + 3) the user's state after each position (causal), the
    features the heads read beside the encoder's (``model.history_summary``): what an
    attention average over the window cannot count, and nothing that grows with the length
    of the history (a head fitted on the short histories of the training period then reads
    the long ones of the test period alike):

    - the last action (one-hot);
    - the latest carts: for k = 1 .. ``RECENT_CARTS``, 1 if any of the user's last k carts
      is still open (no buy of its item since), and log(1 + how many of the last
      ``RECENT_CARTS`` are open): a recent open cart is what a purchase follows;
    - log(1 + events in the current session) and log(1 + its age in seconds) (a gap of
      ``SESSION_GAP_S`` or more starts a session).

    Padding positions get zeros. gaps: (B, L) seconds, nan = none."""
    real = inputs != 0
    last = F.one_hot(events.clamp(min=0), n_events + 1)[..., 1:].to(torch.float32)  # (B, L, E)
    g = torch.nan_to_num(gaps.to(torch.float32), nan=0.0)
    start = real & (torch.isnan(gaps) | (gaps >= SESSION_GAP_S) | ~torch.roll(real, 1, dims=1))
    L = inputs.shape[1]
    index = torch.arange(L, device=inputs.device).expand_as(inputs)
    last_start = torch.cummax(torch.where(start, index, torch.zeros_like(index)), dim=1).values
    in_session = (index - last_start + 1).to(torch.float32)
    elapsed = g.cumsum(dim=1)
    age = elapsed - elapsed.gather(1, last_start)
    recent = recent_open_carts(inputs, events, cart_id, buy_id)  # (B, L, K)
    parts = [last, (recent.cumsum(dim=-1) > 0).to(torch.float32),
             torch.log1p(torch.stack([recent.sum(dim=-1), in_session, age], dim=-1))]
    out = torch.cat(parts, dim=-1)
    return torch.where(real[..., None], out, torch.zeros_like(out))


def recent_open_carts(inputs: torch.Tensor, events: torch.Tensor, cart_id: int, buy_id: int,
                      k: int = RECENT_CARTS) -> torch.Tensor:
    """(B, L, k) after each position i, column c: 1 if the user's (c + 1)-th latest cart
    up to i is still open (no buy of its item after it, up to i), else 0 (also: no such cart)."""
    L = inputs.shape[1]
    cart = (events == cart_id) & (inputs != 0)  # (B, L)
    same = inputs[:, :, None] == inputs[:, None, :]  # (B, j, m)
    later = torch.ones(L, L, dtype=torch.bool, device=inputs.device).triu(1)  # (j, m): m > j
    closes = (same & later & (events == buy_id)[:, None, :]).to(torch.float32).cumsum(dim=2)  # (B, j, i)
    open_at = cart[:, :, None] & (closes == 0) & later.logical_not().transpose(0, 1)  # (B, j, i): j <= i, not bought
    carts_cum = cart.to(torch.float32).cumsum(dim=1)  # (B, L)
    rank = carts_cum[:, None, :] - carts_cum[:, :, None]  # (B, j, i): carts in (j, i]: 0 = the latest
    cols = [(open_at & (rank == c)).any(dim=1).to(torch.float32) for c in range(k)]
    return torch.stack(cols, dim=-1)  # (B, L, k)


class SummaryMLP(nn.Linear):
    """The action or purchase head on the state and the window's summary: the linear head
    (its ``weight`` and ``bias``) behind one hidden layer, so the summary's parts combine
    (last action x open carts x session length) instead of adding up."""

    def __init__(self, dim: int, summary: int, n_out: int) -> None:
        super().__init__(dim, n_out)
        self.hidden = nn.Linear(dim + summary, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D + S) -> (..., n_out) logits."""
        return super().forward(F.gelu(self.hidden(x)))


class CandidateActionHead(nn.Module):
    """Logits over the E actions of the next event given its candidate: the item's
    embedding ``e``, the user's earlier actions on it (``candidate_history``) and the
    bucketed gap before it. A small MLP on ``[h, e, h * e, history, gap]``: the product lets
    the state ask "is this item one I carted?", the history counts answer it exactly."""

    def __init__(self, dim: int, n_events: int, dropout: float = 0.0, summary: int = 0) -> None:
        super().__init__()
        self.gap = nn.Embedding(N_GAP_BUCKETS, 16)
        self.hidden = nn.Linear(3 * dim + n_events + 16 + summary, dim)
        self.out = nn.Linear(dim, n_events)
        self.dropout = nn.Dropout(dropout)

    def forward(self, state: torch.Tensor, item: torch.Tensor, history: torch.Tensor, gap: torch.Tensor,
                summary: torch.Tensor | None = None) -> torch.Tensor:
        """state, item: (..., D); history: (..., E); gap: (...) seconds; summary: (..., S)
        (``history_summary``) when the head reads one -> (..., E) logits."""
        g = self.gap(gap_bucket(gap).to(state.device))
        x = torch.cat([state, item, state * item, history, g, *([] if summary is None else [summary])], dim=-1)
        return self.out(self.dropout(F.gelu(self.hidden(x))))


class ChurnHead(nn.Module):
    """One logit, "no event in the next T days", from the state at the last event and the
    bucketed time elapsed since it (``ELAPSED_EDGES_S``); T is a property of the labels."""

    def __init__(self, dim: int, dropout: float = 0.0, summary: int = 0) -> None:
        super().__init__()
        self.elapsed = nn.Embedding(N_ELAPSED_BUCKETS, 16)
        self.hidden = nn.Linear(dim + 16 + summary, dim)
        self.out = nn.Linear(dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, state: torch.Tensor, elapsed: torch.Tensor, summary: torch.Tensor | None = None) -> torch.Tensor:
        """state: (..., D); elapsed: (...) seconds; summary: (..., S) if read -> (...) logits."""
        e = self.elapsed(bucketize(elapsed, ELAPSED_EDGES_S).to(state.device))
        x = torch.cat([state, e, *([] if summary is None else [summary])], dim=-1)
        return self.out(self.dropout(F.gelu(self.hidden(x)))).squeeze(-1)


class ActionHeads(nn.Module):
    """Multi-task heads on the encoder's hidden states, for logs with action types.

    ``action``: logits over the E action types of the *next* event (id c + 1 is column c).
    ``purchase`` (optional): one logit, "a purchase happens within the next k events",
    a conversion signal; k is a property of the labels, not of the head.
    ``candidate`` (optional, ``CandidateActionHead``): next-action logits given the next
    event's item and gap. ``churn`` (optional, ``ChurnHead``): "no event in the next T days".

    ``summary`` > 0 (``model.history_summary``): every head also reads that many summary
    features of the window (``history_summary``) beside the state, and the action and
    purchase heads become ``SummaryMLP`` (one hidden layer) instead of linear.
    ``dropout`` is the heads' own, applied to the state each head reads. Every head's logits
    are divided by its temperature ``exp(log_temperature[k])`` (``HEAD_NAMES`` order; 1 until
    ``calibrate`` fits them on validation, a buffer saved with the weights).
    """

    def __init__(self, dim: int, n_events: int, purchase: bool = False, candidate: bool = False,
                 churn: bool = False, dropout: float = 0.0, summary: int = 0) -> None:
        super().__init__()
        self.n_events, self.summary = n_events, summary
        # with a summary the two are small MLPs (``SummaryMLP``); without one, linear as before
        head = (lambda n_out: SummaryMLP(dim, summary, n_out)) if summary else (lambda n_out: nn.Linear(dim, n_out))
        self.action = head(n_events)
        self.purchase = head(1) if purchase else None
        self.candidate = CandidateActionHead(dim, n_events, dropout, summary) if candidate else None
        self.churn = ChurnHead(dim, dropout, summary) if churn else None
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("log_temperature", torch.zeros(len(HEAD_NAMES)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before temperatures existed: temperature 1, as they were served
        state_dict.setdefault(prefix + "log_temperature", torch.zeros(len(HEAD_NAMES)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _scaled(self, logits: torch.Tensor, head: str) -> torch.Tensor:
        return logits / self.log_temperature[HEAD_NAMES.index(head)].exp()

    def forward(self, hidden: torch.Tensor, summary: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden: (..., D) (and summary (..., S) for heads that read one) -> action logits
        (..., E) and purchase logits (...) or None."""
        h = self.dropout(hidden)
        if summary is not None:
            h = torch.cat([h, summary], dim=-1)
        purchase = self._scaled(self.purchase(h).squeeze(-1), "purchase") if self.purchase is not None else None
        return self._scaled(self.action(h), "action"), purchase

    def candidate_logits(self, hidden: torch.Tensor, item: torch.Tensor, history: torch.Tensor,
                         gap: torch.Tensor, summary: torch.Tensor | None = None) -> torch.Tensor:
        """(..., E) next-action logits given the candidate (``CandidateActionHead``)."""
        return self._scaled(self.candidate(self.dropout(hidden), item, history, gap, summary), "candidate")

    def churn_logit(self, hidden: torch.Tensor, elapsed: torch.Tensor, summary: torch.Tensor | None = None) -> torch.Tensor:
        """(...) logits of "no event in the next T days" after ``elapsed`` quiet seconds."""
        return self._scaled(self.churn(self.dropout(hidden), elapsed, summary), "churn")

    def set_temperature(self, head: str, temperature: float) -> None:
        self.log_temperature[HEAD_NAMES.index(head)] = math.log(temperature)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, binary: bool = False) -> float:
    """The temperature ``T`` minimising the NLL of ``logits / T`` (targets: class ids, or
    0/1 labels with ``binary``): a 1-D convex problem in ``log T``, solved by golden-section
    search on ``[1/20, 20]``. Temperature scaling (Guo et al., ICML 2017)."""
    logits, targets = logits.double(), targets.long() if not binary else targets.double()

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        if binary:
            return float(F.binary_cross_entropy_with_logits(z, targets))
        return float(F.cross_entropy(z, targets))

    lo, hi = math.log(1 / 20), math.log(20)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


# EM iteration counts ``TransitionHead.fit_pattern`` chooses among (0: raw counts).
EM_CHOICES = (0, 1, 2, 5)


class TransitionHead(nn.Module):
    """A mixture of the catalogue softmax and item-to-item transitions from the last items.

    One d-dimensional dot product cannot express a mixture of sparse, unrelated next-item
    distributions: the log-probability matrix of "item s is followed by one of its few
    successors" has rank up to V (the softmax bottleneck, Yang et al., ICLR 2018). This head
    predicts

        P(j | history) = g_0 softmax(h W^T)_j + sum_k g_k T_k(j | s_k),
        T_k(j | s) = max(c_k(s, j) - d_k, 0) / sum_j' max(c_k(s, j') - d_k, 0)

    where ``s_k`` is the item k steps back (k = 1..``lags``), ``c_k(s, j)`` how often ``j``
    followed ``s`` at lag k in the training events (for the ``width`` most frequent ``j``;
    the rest count 0; with ``em_iterations`` > 0, the occurrences the lag explains, by EM:
    ``fit_pattern``) and ``d_k`` in (0, 1) a learned absolute discount (Ney, Essen & Kneser
    1994): a pair seen once, as background draws often are, keeps little weight, a repeated
    one nearly all of it, so ``T_k`` estimates the part of the next-item law that the
    lag-k item itself drives, not the whole conditional. ``g = softmax(G h + A f)`` are
    learned gates (component 0 the softmax) that read the encoder's state ``h`` and, per
    lag, ``f = (log(1 + n_k(s)), m_k(s))``: how often the source had an item k steps later
    and which share of those counts survives the discount, so the model decides in context
    how far to trust each lag. A sparse,
    full-rank term beside the low-rank one, mixed in probability, as in mixture-of-softmaxes
    and pointer-generator heads. In training, a position's own pair is taken out of the
    counts it reads (leave-one-out), so the gates and discounts learn how well the counts
    predict pairs they have not seen, as at test time; a source with no other occurrence
    gives its lag no weight.

    Training (``recsys.nn.losses.Mixture``): the mixture's negative log-likelihood plus
    ``ce_weight`` times the softmax's own cross-entropy. The mixture's gradient reaches the
    softmax only in proportion to its responsibility for each target; alone, it leaves the
    softmax a specialist in what the counts miss, which on sparse real data (S3-Rec Beauty)
    scored below plain SASRec.

    Buffers (token ids): ``cols`` (lags, n + 2, width) the target items (0 in unused
    slots), ``counts`` their (EM-weighted) counts, ``totals`` (lags, n + 2) the ``n_k(s)``;
    ``units`` (not saved: ``fit_pattern`` rebuilds it) one occurrence's share of each count.
    """

    def __init__(
        self, n_items: int, dim: int, lags: int, width: int, ce_weight: float = 1.0, em_iterations: int | None = 0
    ) -> None:
        super().__init__()
        if lags < 1 or width < 1 or ce_weight < 0 or (em_iterations is not None and em_iterations < 0):
            raise ValueError("lags and width must be >= 1, ce_weight and em_iterations >= 0, got "
                             f"{lags}, {width}, {ce_weight}, {em_iterations}")
        self.n_items, self.lags, self.width, self.ce_weight = n_items, lags, width, ce_weight
        self.em_iterations = em_iterations  # None: chosen by fit_pattern (EM_CHOICES)
        self.em_chosen: int | None = em_iterations
        self.em_scores: dict[int, float] = {}  # held-out log-likelihood per choice, when chosen
        shape = (lags, n_items + 2, width)  # rows: PAD, items 1..n, MASK
        self.register_buffer("cols", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(shape))
        self.register_buffer("totals", torch.zeros(shape[:2]))
        # one occurrence's share of each kept count (1 for raw counts): what leave-one-out takes
        # out in training. Rebuilt by fit_pattern, so not saved with the model.
        self.register_buffer("units", torch.ones(shape), persistent=False)
        self._slot_keys: tuple | None = None  # (the tables' state, keys, slots): see _kept_slots
        self.gate = nn.Linear(dim, lags + 1)  # component 0: the catalogue softmax
        self.count_weight = nn.Parameter(torch.zeros(2, lags))  # A: (log(1 + n), kept share) per lag
        self.discount_logit = nn.Parameter(torch.full((lags,), math.log(0.75 / 0.25)))  # d = 0.75 at start
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    @torch.no_grad()
    def fit_pattern(self, items, start, stop) -> None:
        """Fill the buffers from training events: user u's events are token ids
        ``items[start[u]:stop[u]]``, oldest first (numpy arrays). Only pairs inside one
        user's training events count.

        With EM iterations > 0 a pair's count is the sum of its occurrences'
        responsibilities under a mixture fitted by expectation-maximisation, not the number
        of occurrences (``_em_weights``): an event that the item one step back explains
        well counts little for the pair two steps back, so ``T_2`` stops echoing ``T_1``'s
        chains (a -> b -> c also puts c after a at lag 2), and popular items that follow
        everything count little for any source. Whether that helps depends on the data: on
        a log whose chains are an artefact it does, on real logs where "bought together"
        is transitive it can hurt. ``em_iterations=None`` picks the count among
        ``EM_CHOICES`` by held-out likelihood (``_choose_em``)."""
        items, start, stop = np.asarray(items), np.asarray(start), np.asarray(stop)
        iterations = self.em_iterations
        if iterations is None:
            iterations, self.em_scores = self._choose_em(items, start, stop)
        self.em_chosen = iterations
        stats = self._pair_stats(items, start, stop)
        sources, pairs, raw = stats["sources"], stats["pairs"], stats["raw"]
        weight = self._em_weights(items, stats, iterations) if iterations else raw
        V = self.n_items + 2
        cols = np.zeros((self.lags, V, self.width), dtype=np.int64)
        counts = np.zeros((self.lags, V, self.width), dtype=np.float32)
        units = np.ones((self.lags, V, self.width), dtype=np.float32)
        totals = np.zeros((self.lags, V), dtype=np.float32)
        for k in range(self.lags):
            totals[k] = np.bincount(sources[k], minlength=V)
            s, t = pairs[k] // V, pairs[k] % V
            order = np.lexsort((t, -raw[k], -weight[k], s))  # per source: heaviest first, ties by id
            s, t, w, n = s[order], t[order], weight[k][order], raw[k][order]
            slot = np.arange(len(s)) - np.searchsorted(s, s, side="left")
            keep = slot < self.width
            cols[k, s[keep], slot[keep]] = t[keep]
            counts[k, s[keep], slot[keep]] = w[keep]
            units[k, s[keep], slot[keep]] = w[keep] / n[keep]
        self.cols.copy_(torch.from_numpy(cols))
        self.counts.copy_(torch.from_numpy(counts))
        self.units.copy_(torch.from_numpy(units))
        self.totals.copy_(torch.from_numpy(totals))

    def _pair_stats(self, items, start, stop) -> dict:
        """Per lag k: the events with a source k steps back (``targets``: positions in
        ``items``), their ``sources`` (token ids), the distinct ``pairs`` (source * V +
        target, sorted), each event's pair (``inverse``) and each pair's count (``raw``)."""
        lengths = stop - start
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pos = np.arange(int(lengths.sum())) + np.repeat(start - first, lengths)  # every training event
        step = np.arange(int(lengths.sum())) - np.repeat(first, lengths)  # its index in its user's events
        V = self.n_items + 2
        targets = [pos[step >= k] for k in range(1, self.lags + 1)]
        sources = [items[t - k].astype(np.int64) for k, t in enumerate(targets, start=1)]
        pairs, inverse = [], []
        for src, tgt in zip(sources, targets):
            p, inv = np.unique(src * V + items[tgt], return_inverse=True)
            pairs.append(p)
            inverse.append(inv.ravel())
        raw = [np.bincount(inv, minlength=len(p)).astype(np.float64) for p, inv in zip(pairs, inverse)]
        return {"targets": targets, "sources": sources, "pairs": pairs, "inverse": inverse, "raw": raw}

    def _em_weights(self, items, stats: dict, iterations: int) -> list[np.ndarray]:
        """Per lag, each pair's summed responsibility (float64, aligned with ``pairs[k]``).

        The mixture explains each training event ``x_t`` (with at least one source) as
        ``pi_0 q(x_t) + sum_k pi_k A_k(x_t | x_{t-k})`` over the lags it has, where ``q`` is
        the items' overall frequency (what no source explains) and ``A_k`` the lag-k
        transition law. EM from uniform weights and relative counts: the E step gives each
        event's responsibilities, the M step re-estimates ``A_k`` from the summed
        responsibilities of each pair and ``pi`` from their means. Deterministic (float64)."""
        targets, sources, pairs, inverse = stats["targets"], stats["sources"], stats["pairs"], stats["inverse"]
        V = self.n_items + 2
        anchor = targets[0]  # lag 1's events: every event with a source (the others' are subsets)
        index = np.full(int(anchor.max()) + 1 if len(anchor) else 0, -1, dtype=np.int64)
        index[anchor] = np.arange(len(anchor))
        slots = [index[t] for t in targets]  # each lag's events as rows of the anchor
        q = np.bincount(items[anchor], minlength=V) / max(len(anchor), 1)
        q_event = q[items[anchor]]
        pi = np.full(self.lags + 1, 1.0 / (self.lags + 1))  # (background, lag 1, ..., lag L)
        resp = [np.ones(len(inv)) for inv in inverse]
        for _ in range(iterations):
            law = []
            for k in range(self.lags):  # M step for A_k from the current responsibilities
                w = np.bincount(inverse[k], weights=resp[k], minlength=len(pairs[k]))
                row = np.bincount(pairs[k] // V, weights=w, minlength=V)
                law.append(w[inverse[k]] / np.maximum(row[sources[k]], 1e-300))
            total = pi[0] * q_event
            parts = [pi[k + 1] * law[k] for k in range(self.lags)]
            for k in range(self.lags):
                total = total + np.bincount(slots[k], weights=parts[k], minlength=len(anchor))
            resp = [parts[k] / np.maximum(total[slots[k]], 1e-300) for k in range(self.lags)]  # E step
            share = np.array([r.sum() for r in resp]) / max(len(anchor), 1)
            pi = np.concatenate([[max(1.0 - share.sum(), 1e-6)], share])
        return [np.bincount(inv, weights=r, minlength=len(p)) for p, inv, r in zip(pairs, inverse, resp)]

    def _choose_em(self, items, start, stop) -> tuple[int, dict[int, float]]:
        """The EM iteration count (of ``EM_CHOICES``) whose tables best predict held-out
        events, and every choice's score.

        Each user's newest training event is held out (users with at least two); the
        tables are counted from the rest, discounted as the head starts (d = 0.75, untruncated),
        and each held-out event scored by a mixture of the items' overall frequency (add-one)
        and the lags' tables, whose weights are fitted on the held-out events themselves
        (a few numbers: the comparison is of the tables, not of the weights). Score: mean
        log-likelihood; ties go to fewer iterations."""
        lengths = stop - start
        held = np.flatnonzero(lengths >= 2)
        fit_stop = stop.copy()
        fit_stop[held] -= 1
        stats = self._pair_stats(items, start, fit_stop)
        V = self.n_items + 2
        fit_items = np.concatenate([items[a:b] for a, b in zip(start, fit_stop)]) if len(start) else items[:0]
        q = (np.bincount(fit_items, minlength=V) + 1.0) / (len(fit_items) + V)
        target = items[stop[held] - 1].astype(np.int64)
        columns = [q[target]]
        scores: dict[int, float] = {}
        for iterations in EM_CHOICES:
            weight = self._em_weights(items, stats, iterations) if iterations else stats["raw"]
            probs = []
            for k in range(self.lags):
                kept = np.maximum(weight[k] - 0.75, 0.0)
                row = np.bincount(stats["pairs"][k] // V, weights=kept, minlength=V)
                p_k = np.zeros(len(held))
                has = lengths[held] > k + 1  # a source k + 1 steps before the held-out event
                src = items[stop[held][has] - 2 - k].astype(np.int64)
                key = src * V + target[has]
                at = np.minimum(np.searchsorted(stats["pairs"][k], key), max(len(kept) - 1, 0))
                found = (stats["pairs"][k][at] == key) if len(kept) else np.zeros(len(key), bool)
                p_k[has] = np.where(found, kept[at] if len(kept) else 0.0, 0.0) / np.maximum(row[src], 1e-300)
                probs.append(p_k)
            comp = np.stack(columns + probs, axis=1)  # (H, 1 + lags)
            mix = np.full(comp.shape[1], 1.0 / comp.shape[1])
            for _ in range(50):  # the mixture weights, by EM on the held-out events
                resp = comp * mix
                resp /= resp.sum(axis=1, keepdims=True)
                mix = resp.mean(axis=0)
            scores[iterations] = float(np.log(comp @ mix).mean()) if len(held) else 0.0
        best = max(EM_CHOICES, key=lambda i: (round(scores[i], 6), -i))
        return best, scores

    def sources(self, inputs: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Source items of each scored position, (N, lags): the input at the position and
        the ones before it (PAD before the history starts). ``positions`` (B, L) bool
        selects positions (row-major, as a loss reads them); ``None`` takes each row's
        newest position, (B, lags)."""
        if positions is None:
            # padded on the left by `lags` PADs, so the k-th newest column exists for any L
            # (no branch on L: the exported graph serves every length)
            padded = F.pad(inputs, (self.lags, 0))  # (B, lags + L)
            return torch.stack([padded[:, -k] for k in range(1, self.lags + 1)], dim=1)  # (B, lags)
        shifted = [F.pad(inputs, (k, 0))[:, : inputs.shape[1]] for k in range(self.lags)]  # k steps back
        return torch.stack([s[positions] for s in shifted], dim=1)  # (N, lags)

    def _gates(self, state: torch.Tensor, totals: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
        """Mixture weights (N, lags + 1) from the states, the sources' counts ``totals``
        (N, lags) and their discounted mass (N, lags); a lag with no mass gets weight 0."""
        logits = self.gate(state)  # (N, lags + 1)
        share = mass / totals.clamp(min=1.0)
        lag_logits = logits[:, 1:] + self.count_weight[0] * torch.log1p(totals) + self.count_weight[1] * share
        lag_logits = lag_logits.masked_fill(mass <= 0, float("-inf"))
        return torch.softmax(torch.cat([logits[:, :1], lag_logits], dim=1), dim=1)

    def _discounted(self, counts: torch.Tensor) -> torch.Tensor:
        """max(c - d_k, 0) for counts (N, lags, width)."""
        d = torch.sigmoid(self.discount_logit)[None, :, None]
        return (counts - d).clamp(min=0.0)

    def _kept_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every kept slot (count > 0) as a sorted key ``(lag * T + source) * T + target``
        (T tokens), and its flat index into the (lags, T, width) tables. Training looks up
        each position's target in it (``searchsorted``, (N, lags) work) rather than comparing
        the target with all ``width`` slots of its row ((N, lags, width) work, twice the
        bytes of the counts). Rebuilt whenever ``cols`` or ``counts`` change (``fit_pattern``,
        ``load_state_dict``, a move to another device)."""
        state = (self.cols._version, self.counts._version, self.cols.data_ptr(), self.counts.data_ptr())
        if self._slot_keys is None or self._slot_keys[0] != state:
            T, W = self.cols.shape[1], self.cols.shape[2]
            slots = (self.counts > 0).flatten().nonzero().squeeze(1)  # (K,)
            keys = (slots // (T * W) * T + slots // W % T) * T + self.cols.flatten()[slots]
            keys, order = keys.sort()  # a row's items are distinct, so keys are too
            self._slot_keys = (state, keys, slots[order])
        return self._slot_keys[1], self._slot_keys[2]

    def training_mixture(
        self, state: torch.Tensor, inputs: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the softmax's weight g_0 (N,), the lags' probability of the target (N,)) at the
        selected positions, for ``recsys.nn.losses.Mixture``; each position's own pair is
        left out of the counts (leave-one-out). ``state`` (N, D), ``targets`` (N,) token ids."""
        src = self.sources(inputs, positions)  # (N, lags)
        lag = torch.arange(self.lags, device=src.device)[None, :]
        counts = self.counts[lag, src]  # (N, lags, width)
        keys, slots = self._kept_slots()
        T = self.cols.shape[1]
        query = (lag * T + src) * T + targets[:, None]  # (N, lags): the (lag, source, target) key
        at = torch.searchsorted(keys, query).clamp_(max=max(len(keys) - 1, 0))
        found = keys[at] == query if len(keys) else torch.zeros_like(query, dtype=torch.bool)  # the target kept
        slot = slots[at] if len(keys) else torch.zeros_like(query)  # its flat slot (any slot when absent)
        own = self.counts.flatten()[slot] * found  # the target's count (0 if absent)
        unit = self.units.flatten()[slot] * found  # one occurrence's share of it
        # the mass with this occurrence taken out: every slot discounted, the target's slot
        # then swapped for its count less one occurrence (only (N, lags) work beyond the sum)
        d = torch.sigmoid(self.discount_logit)[None, :]
        left = (own - unit - d).clamp(min=0.0)
        mass = self._discounted(counts).sum(dim=2) - (own - d).clamp(min=0.0) + left  # (N, lags)
        totals = self.totals[lag, src] - (src != 0).to(counts.dtype)  # a real source's pair was counted
        g = self._gates(state, totals, mass)  # (N, lags + 1)
        target_p = left / mass.clamp(min=1e-6)  # (N, lags)
        return g[:, 0], (g[:, 1:] * target_p).sum(dim=1)

    def log_probs(self, state: torch.Tensor, item_weights: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """log P(token | history) (B, n + 1) for the newest positions; column PAD is -inf."""
        src = self.sources(inputs)  # (B, lags)
        lag = torch.arange(self.lags, device=src.device)[None, :]
        kept = self._discounted(self.counts[lag, src])  # (B, lags, width)
        mass = kept.sum(dim=2)  # (B, lags)
        g = self._gates(state, self.totals[lag, src], mass)  # (B, lags + 1)
        kept = kept * (g[:, 1:] / mass.clamp(min=1e-6))[:, :, None]  # each lag's share of P
        probs = torch.softmax(state @ item_weights.T, dim=1) * g[:, :1]  # (B, n)
        probs = torch.cat([torch.zeros_like(probs[:, :1]), probs], dim=1)  # (B, n + 1), PAD column
        probs = probs.scatter_add(1, self.cols[lag, src].flatten(1), kept.flatten(1))
        log_p = torch.log(probs)
        return torch.cat([torch.full_like(log_p[:, :1], float("-inf")), log_p[:, 1:]], dim=1)
