"""The transition head: its counts, its leave-one-out training terms, its mixture loss
kernel against plain autograd, and its served probabilities."""

import numpy as np
import pytest
import torch

from recsys.data.synthetic import planted_mixture_log
from recsys.nn.encoder import SASRecEncoder
from recsys.nn.heads import EM_CHOICES, TransitionHead
from recsys.nn.losses import Mixture, chunked_ce, full_ce, sampled_softmax
from recsys.types import PAD_ID


def mixture_loss_by_hand(h, w, t, base, rest, ce_weight=0.0):
    """-mean [log(base softmax(h w^T)[t] + rest) + ce_weight log softmax(h w^T)[t]], row by row."""
    rows = []
    for i in range(h.shape[0]):
        p0 = torch.softmax(w @ h[i], dim=0)[t[i] - 1]
        rows.append(-torch.log(base[i] * p0 + rest[i]) - ce_weight * torch.log(p0))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("ce_weight", [0.0, 0.7])
@pytest.mark.parametrize("loss", ["full", "chunked"])
def test_mixture_kernel_matches_autograd_values_and_gradients(loss, ce_weight):
    torch.manual_seed(0)
    N, D, V = 37, 6, 23
    h = torch.randn(N, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    t = torch.randint(1, V + 1, (N,))
    gate_logits = torch.randn(N, 3, requires_grad=True)
    lag_p = torch.rand(N) * (torch.rand(N) > 0.3)  # some rows: no transition mass on the target

    def terms(logits):
        g = torch.softmax(logits, dim=1)
        return g[:, 0], g[:, 1] * lag_p, ce_weight

    out = (full_ce(h, w, t, mixture=Mixture(*terms(gate_logits))) if loss == "full"
           else chunked_ce(h, w, t, 8, mixture=Mixture(*terms(gate_logits))))
    (3 * out).backward()  # a weight other than 1 takes backward's scaling branch
    grads = [x.grad.clone() for x in (h, w, gate_logits)]
    for x in (h, w, gate_logits):
        x.grad = None
    ref = mixture_loss_by_hand(h, w, t, *terms(gate_logits))
    (3 * ref).backward()
    assert float(out) == pytest.approx(float(ref), rel=1e-5)
    for got, x in zip(grads, (h, w, gate_logits)):
        assert torch.allclose(got, x.grad, atol=1e-5, rtol=1e-4)


def test_mixture_kernel_in_bf16_is_close_to_fp32():
    torch.manual_seed(1)
    N, D, V = 64, 16, 300
    h, w = torch.randn(N, D) * 0.5, torch.randn(V, D) * 0.5
    t = torch.randint(1, V + 1, (N,))
    base, rest = torch.full((N,), 0.6), torch.rand(N) * 0.2
    exact = chunked_ce(h, w, t, 16, "fp32", Mixture(base, rest, 1.0))
    low = chunked_ce(h, w, t, 16, "bf16", Mixture(base, rest, 1.0))
    assert float(low) == pytest.approx(float(exact), rel=2e-2)


def head_on(sequences, n_items, lags=2, width=3, dim=4):
    head = TransitionHead(n_items, dim, lags, width)
    items = np.concatenate([np.asarray(s) for s in sequences])
    lengths = np.array([len(s) for s in sequences])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    head.fit_pattern(items, start, start + lengths)
    return head


def test_fit_pattern_counts_pairs_within_users_and_keeps_the_most_frequent():
    # lag 1 pairs: (1,2) x3, (2,3) x2, (2,4) x1, (3,1) x1, (4,2) x1; none across users
    head = head_on([[1, 2, 3, 1, 2, 4], [2, 3], [4, 2], [1, 2]], n_items=4, width=2)
    assert head.cols[0, 1].tolist() == [2, 0] and head.counts[0, 1].tolist() == [3, 0]
    assert head.cols[0, 2].tolist() == [3, 4] and head.counts[0, 2].tolist() == [2, 1]
    assert head.totals[0, 2] == 3  # every item that followed 2, kept in the width or not
    assert head.cols[1, 1].tolist() == [3, 4] and head.counts[1, 1].tolist() == [1, 1]  # 1 _ 3, 1 _ 4
    assert head.totals[0, PAD_ID] == 0 and head.counts[:, PAD_ID].sum() == 0


def test_training_terms_leave_the_own_pair_out():
    head = head_on([[1, 2, 3], [1, 2, 4], [1, 2, 4], [3, 4]], n_items=4, lags=1, width=4)
    with torch.no_grad():
        head.discount_logit.fill_(-30.0)  # discount ~0: plain relative counts
    inputs = torch.tensor([[1, 2]])
    positions = torch.tensor([[False, True]])  # target after 2
    state = torch.zeros(1, 4)
    # 2 -> 3 was seen once: without its own occurrence nothing is left to predict it
    base, rest = head.training_mixture(state, inputs, positions, torch.tensor([3]))
    assert float(rest) == pytest.approx(0.0, abs=1e-6)
    # 2 -> 4 was seen twice: the other occurrence of the 2 left (2 -> 4 once, 2 -> 3 once)
    base, rest = head.training_mixture(state, inputs, positions, torch.tensor([4]))
    g_lag = 1.0 - float(base)  # zero gate weights: equal logits, so g_lag = 1/2
    assert g_lag == pytest.approx(0.5)
    assert float(rest) == pytest.approx(g_lag * 0.5, abs=1e-6)


def test_training_finds_each_targets_slot_as_a_scan_of_its_row_would():
    """``training_mixture`` finds a target's slot through ``_kept_slots`` (sorted keys), not
    by scanning the row: for every (source, target) pair of a random table, kept or not,
    and PAD sources, the slot it reads is the one a scan of the row finds (the target's
    own count and unit, 0 when absent); the second round writes new tables into the same
    buffers, which the lookup must follow."""
    torch.manual_seed(1)
    head = TransitionHead(n_items=9, dim=4, lags=2, width=3)
    for _ in range(2):
        with torch.no_grad():  # distinct items per row; some kept, some dropped (count 0), in place
            head.cols.copy_(torch.stack([torch.randperm(10)[:3] + 1 for _ in range(2 * 11)]).view(2, 11, 3))
            head.counts.copy_(torch.randint(0, 3, (2, 11, 3)).float())
            head.units.copy_(torch.rand(2, 11, 3))
        src = torch.arange(11).repeat_interleave(11)[:, None].expand(-1, 2)  # (121, lags): every source
        targets = torch.arange(11).repeat(11)  # with every target
        lag = torch.arange(2)[None, :]
        hit = (head.cols[lag, src] == targets[:, None, None]) & (head.counts[lag, src] > 0)
        scan = (head.counts[lag, src] * hit).sum(2), (head.units[lag, src] * hit).sum(2)
        keys, slots = head._kept_slots()
        T = head.cols.shape[1]
        query = (lag * T + src) * T + targets[:, None]
        at = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
        found = keys[at] == query
        assert torch.equal(found, hit.any(2))
        assert torch.equal(head.counts.flatten()[slots[at]] * found, scan[0])
        assert torch.equal(head.units.flatten()[slots[at]] * found, scan[1])


def test_served_probabilities_sum_to_one_and_follow_the_counts():
    head = head_on([[1, 2, 3], [1, 2, 3], [1, 2, 4], [3, 4]], n_items=5, lags=2, width=4)
    torch.manual_seed(0)
    state, w = torch.randn(3, 4), torch.randn(5, 4)
    inputs = torch.tensor([[0, 1, 2], [0, 0, 5], [0, 0, 0]])
    logp = head.log_probs(state, w, inputs)  # (3, 6)
    assert torch.isneginf(logp[:, PAD_ID]).all()
    assert torch.allclose(logp[:, 1:].exp().sum(dim=1), torch.ones(3), atol=1e-6)
    # after 1, 2 the lag-1 counts favour 3 over 4 (2 vs 1): 3 gains more than 4 over the softmax
    softmax = torch.softmax(state @ w.T, dim=1)
    gain = logp[0, 1:].exp() - softmax[0] * logp[0, 1:].exp()[0] / softmax[0, 0]
    assert gain[2] > gain[3] > 0
    # an unseen source (5) or an empty history leaves only the softmax
    assert torch.allclose(logp[1:, 1:], torch.log_softmax(state[1:] @ w.T, dim=1), atol=1e-6)


def test_training_terms_and_served_scores_read_the_same_sources():
    # the pairs are seen 500 times each, so leaving one occurrence out changes little:
    # the loss's probability of each target and the served one must then agree, which
    # fails if either side reads its lags off by one position
    torch.manual_seed(0)
    enc = SASRecEncoder(6, dim=8, n_blocks=1, max_len=5, dropout=0.0, transition_lags=2, transition_width=3)
    head = enc.transitions
    seqs = [[1, 2, 3, 4, 5], [2, 1, 3, 5, 4], [6, 2, 1, 4, 3]] * 500
    items = np.concatenate(seqs)
    start = np.arange(0, len(items), 5)
    head.fit_pattern(items, start, start + 5)
    with torch.no_grad():
        head.gate.bias.copy_(torch.tensor([-3.0, 0.0, 0.0]))  # lean on the lags
    enc.eval()
    inputs = torch.tensor([[0, 1, 2, 3, 4]])
    targets = torch.tensor([2, 3, 4, 5])
    for i in range(4):
        prefix = inputs[:, : i + 2]  # (positions count back from the end: a prefix is its own input)
        state = enc.last_state(prefix)  # (1, D)
        served = float(enc.score(state, prefix)[0, targets[i]].exp())
        newest = torch.zeros(1, i + 2, dtype=torch.bool)
        newest[0, -1] = True
        base, rest = head.training_mixture(state, prefix, newest, targets[i : i + 1])
        p0 = torch.softmax(state[0] @ enc.item_weights().T, dim=0)[targets[i] - 1]
        assert float(base * p0 + rest) == pytest.approx(served, rel=1e-2)
        assert float(rest) > 0.25  # the lags carry these targets
    # causality: changing a later item leaves an earlier position's served scores unchanged
    changed = inputs.clone()
    changed[0, 4] = 6
    a = enc.score(enc.last_state(inputs[:, :3]), inputs[:, :3])
    b = enc.score(enc.last_state(changed[:, :3]), changed[:, :3])
    assert torch.equal(a, b)
    assert not torch.equal(enc.score(enc.last_state(inputs), inputs), enc.score(enc.last_state(changed), changed))


def test_sampled_softmax_takes_the_mixture():
    torch.manual_seed(0)
    h, w = torch.randn(5, 1, 4, requires_grad=True), torch.randn(9, 4)
    t = torch.randint(1, 10, (5, 1))
    neg = torch.randint(1, 10, (6,))
    plain = sampled_softmax(h, w, t, neg)
    same = sampled_softmax(h, w, t, neg, mixture=Mixture(torch.ones(5), torch.zeros(5)))
    assert float(same) == pytest.approx(float(plain), rel=1e-6)
    helped = sampled_softmax(h, w, t, neg, mixture=Mixture(torch.full((5,), 0.5), torch.full((5,), 0.5)))
    assert float(helped) < float(plain)


def test_em_counts_take_chains_out_of_the_longer_lag():
    # 1 -> 2 -> 3 and 1 -> 6 -> 7: the item two steps after 1 is 3 or 7, but the item one
    # step back always explains it better (2 -> 3 and 6 -> 7 never vary). 4 -> m -> 5: the
    # item two steps after 4 is always 5, while the middle items m are followed by anything.
    rng = np.random.default_rng(0)
    seqs = [[1, 2, 3]] * 50 + [[1, 6, 7]] * 50
    for m in range(8, 18):
        seqs += [[4, m, 5]] * 5 + [[m, int(r)] for r in rng.integers(18, 38, size=20)]
    raw = head_on(seqs, n_items=40, lags=2, width=8)
    em = TransitionHead(40, 4, lags=2, width=8, em_iterations=5)
    items = np.concatenate([np.asarray(s) for s in seqs])
    lengths = np.array([len(s) for s in seqs])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    em.fit_pattern(items, start, start + lengths)

    def count(head, lag, src, tgt):
        slot = head.cols[lag, src].tolist().index(tgt)
        return float(head.counts[lag, src, slot]), float(head.units[lag, src, slot])

    assert count(raw, 1, 1, 3) == (50.0, 1.0) and count(raw, 1, 4, 5) == (50.0, 1.0)
    chain, chain_unit = count(em, 1, 1, 3)
    planted, planted_unit = count(em, 1, 4, 5)
    # raw counts weigh both 50; EM takes the chain's echo nearly all out (it measured 1.6 vs 20.3)
    assert chain < 0.1 * 50 and planted > 0.3 * 50 and planted > 5 * chain
    assert chain_unit == pytest.approx(chain / 50) and planted_unit == pytest.approx(planted / 50)
    lag1 = count(em, 0, 2, 3)[0]
    assert lag1 > 0.8 * 50  # 2 -> 3 keeps what lag 2 lost
    assert torch.equal(em.totals, raw.totals)  # the gates' source counts stay raw


def test_leave_one_out_takes_out_one_occurrences_em_share():
    seqs = [[1, 2, 3], [1, 2, 3], [5, 2, 3], [2, 4], [6, 2, 4]]
    head = TransitionHead(6, 4, lags=1, width=4, em_iterations=3)
    items = np.concatenate([np.asarray(s) for s in seqs])
    lengths = np.array([len(s) for s in seqs])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    head.fit_pattern(items, start, start + lengths)
    with torch.no_grad():
        head.discount_logit.fill_(-30.0)  # discount ~0
    slot3, slot4 = head.cols[0, 2].tolist().index(3), head.cols[0, 2].tolist().index(4)
    c3, c4 = float(head.counts[0, 2, slot3]), float(head.counts[0, 2, slot4])
    assert 0 < c4 < 2 and 0 < c3 < 3  # responsibilities below 1 per occurrence
    base, rest = head.training_mixture(torch.zeros(1, 4), torch.tensor([[1, 2]]), torch.tensor([[False, True]]),
                                       torch.tensor([3]))
    c3_out = c3 - c3 / 3  # one of the three occurrences of 2 -> 3, at its average share
    assert float(rest) == pytest.approx((1 - float(base)) * c3_out / (c3_out + c4), rel=1e-5)


def _fit_auto(seqs, n_items, lags=2):
    items = np.concatenate([np.asarray(x) for x in seqs]).astype(np.int64)
    lengths = np.array([len(x) for x in seqs])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    head = TransitionHead(n_items, 4, lags=lags, width=8, em_iterations=None)
    head.fit_pattern(items, start, start + lengths)
    return head, (items, start, start + lengths)


def test_em_count_is_chosen_by_held_out_likelihood():
    # the planted log: lag-2 chains are an artefact of two separate lag tables, so EM wins
    log = planted_mixture_log(600, 150, seed=3)
    planted, data = _fit_auto([x + 1 for x in log.sequences], 150)
    assert set(planted.em_scores) == set(EM_CHOICES)
    assert planted.em_chosen == max(EM_CHOICES) and planted.em_scores[5] > planted.em_scores[0] + 0.05
    fixed = TransitionHead(150, 4, lags=2, width=8, em_iterations=planted.em_chosen)
    fixed.fit_pattern(*data)
    assert torch.equal(planted.counts, fixed.counts) and torch.equal(planted.cols, fixed.cols)
    # bundles: each user draws from one 5-item bundle in any order, so every pair at every lag
    # is real ("bought together" is transitive) and raw counts must win
    rng = np.random.default_rng(0)
    bundles = rng.permutation(150).reshape(30, 5) + 1
    seqs = [rng.choice(bundles[rng.integers(30)], size=int(rng.integers(3, 9))) for _ in range(600)]
    bundled, _ = _fit_auto(seqs, 150)
    assert bundled.em_chosen == 0 and bundled.em_scores[0] > bundled.em_scores[1] + 0.1
