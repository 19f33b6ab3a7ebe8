"""The mixture generator's oracle is the exact posterior predictive: checked against
brute-force enumeration of every latent path, and against the generator's own draws."""

import itertools

import numpy as np
import pytest

from recsys.data.synthetic import (
    mixture_oracle_metrics,
    mixture_oracle_probs,
    mixture_oracle_ranks,
    planted_mixture_log,
)


def tiny_log(**kw):
    args = dict(n_users=10, n_items=5, n_clusters=2, n_successors=2, lags=(1, 2), mix=(0.4, 0.3, 0.3),
                min_len=4, max_len=4, seed=3)
    args.update(kw)
    return planted_mixture_log(**args)


def brute_force_predictive(log, history):
    """P(next | history) by summing P(z, components, items) over every cluster and every
    step's component choice, written from the generative story, not from the oracle."""
    V, m = log.n_items, len(log.lags)
    A = [log.transition_matrix(l) for l in range(m)]
    seq_len = len(history) + 1
    joint = np.zeros(V)
    for nxt in range(V):
        seq = list(history) + [nxt]
        for z in range(len(log.prior)):
            for comps in itertools.product(range(m + 1), repeat=seq_len):
                p = log.prior[z]
                for t, c in enumerate(comps):
                    reachable = [l for l, k in enumerate(log.lags) if t >= k]
                    if c < m and c not in reachable:
                        p = 0.0
                        break
                    if c < m:
                        p *= log.mix[c] * A[c][seq[t - log.lags[c]], seq[t]]
                    else:  # the taste takes its own weight plus every lag not reachable yet
                        w = log.mix[m] + sum(log.mix[l] for l in range(m) if l not in reachable)
                        p *= w * log.taste[z, seq[t]]
                joint[nxt] += p
    return joint / joint.sum()


def test_oracle_equals_brute_force_enumeration():
    log = tiny_log()
    for history in ([0], [3, 1], [2, 2, 4], [4, 0, 1, 3]):
        exact = brute_force_predictive(log, history)
        assert mixture_oracle_probs(log, [np.array(history)])[0] == pytest.approx(exact, rel=1e-9, abs=1e-12)
    # a batch of histories of different lengths gives each its own answer
    batch = mixture_oracle_probs(log, [np.array([0]), np.array([4, 0, 1, 3])])
    assert batch[1] == pytest.approx(brute_force_predictive(log, [4, 0, 1, 3]), rel=1e-9)


def test_generator_draws_follow_the_oracle():
    # 60k users of length 3: the empirical law of the third item given the first two
    log = tiny_log(n_users=60000, min_len=3, max_len=3, seed=5)
    seqs = np.stack(log.sequences)  # (U, 3)
    checked = 0
    for a, b in itertools.product(range(5), repeat=2):
        rows = (seqs[:, 0] == a) & (seqs[:, 1] == b)
        if rows.sum() < 2000:
            continue
        empirical = np.bincount(seqs[rows, 2], minlength=5) / rows.sum()
        expected = mixture_oracle_probs(log, [np.array([a, b])])[0]
        assert empirical == pytest.approx(expected, abs=4 * np.sqrt(0.25 / rows.sum()))
        checked += 1
    assert checked >= 3


def test_log_shape_popularity_and_oracle_metrics():
    log = planted_mixture_log(400, 200, seed=2)
    lengths = np.array([len(s) for s in log.sequences])
    assert lengths.min() >= 5 and lengths.max() <= 200 and lengths.std() > 5  # variable lengths
    f = log.frame
    assert len(f) == lengths.sum() and f["user"].nunique() == 400
    counts = np.bincount(np.concatenate(log.sequences), minlength=200)
    top = np.sort(counts)[::-1]
    assert top[:20].sum() > 3 * top[-20:].sum()  # popularity is skewed
    ranks = mixture_oracle_ranks(log, 1)
    m = mixture_oracle_metrics(log, 1, ks=(1, 10))
    assert m["hr@10"] == pytest.approx(np.mean(ranks <= 10))
    assert m["ndcg@10"] == pytest.approx(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)))
    # the posterior over tastes matters: the lags plus the *prior* taste (no inference of
    # the user's cluster) rank the same targets clearly worse than the oracle
    A = [log.transition_matrix(l) for l in range(2)]
    blind = []
    for seq in log.sequences:
        h, target = seq[:-1], seq[-1]
        p = log.mix[0] * A[0][h[-1]] + log.mix[1] * A[1][h[-2]] + log.mix[2] * (log.prior @ log.taste)
        r = (p >= p[target]).sum()
        blind.append(1 / np.log2(r + 1) if r <= 10 else 0.0)
    assert np.mean(blind) < m["ndcg@10"] - 0.03


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mix"):
        planted_mixture_log(10, 20, mix=(0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="lags"):
        planted_mixture_log(10, 20, lags=(2, 1), mix=(0.3, 0.3, 0.4))
