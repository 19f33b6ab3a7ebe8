"""Training losses as pure functions of hidden states, item weights, targets (and negatives).

Every item loss takes ``hidden`` (B, L, D), ``item_weights`` (n, D) for items 1..n and
``targets`` (B, L) with ``PAD_ID`` = no loss at that position, and averages over the
positions that have a target. Losses that need negatives take them as a tensor of token
ids (1..n) and never sample: sampling is seeded and lives in the training layer.
``negatives`` is either (K,), shared by every position of the batch, or (B, L, K), one set
per position. A negative equal to its position's target (an "accidental hit") is dropped.

``LOSSES`` is the registry ``train.loss`` picks from; ``LossSpec`` says what each entry
needs from the training layer (how many negatives, which config options).

The full-catalogue softmax losses run on hand-written kernels
(``recsys.nn.kernels.softmax_ce``); ``full_ce_reference`` is their yardstick in autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recsys.nn.kernels.softmax_ce import ChunkedSoftmaxCE, SoftmaxCE
from recsys.types import NO_LABEL, PAD_ID

MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _matmul_dtype(precision: str) -> torch.dtype:
    if precision not in MATMUL_DTYPES:
        raise ValueError(f"precision must be one of {tuple(MATMUL_DTYPES)}, got {precision!r}")
    return MATMUL_DTYPES[precision]


def full_ce(
    hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor, precision: str = "fp32",
    mixture: Mixture | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue at every non-padding position.

    The SASRec+ setting (Klenitskiy & Vasilev, RecSys 2023). Padding positions are
    dropped *before* the (N, V) logits are formed, so no work is spent on them.
    hidden: (B, L, D); item_weights: (n, D) for items 1..n; targets: (B, L), PAD = none.
    Or positions already selected: hidden (N, D), targets (N,) (see ``kept_positions``).
    ``precision``: ``fp32``, or ``bf16`` for the logit matrix products (see
    ``recsys.nn.kernels.softmax_ce.SoftmaxCE``).
    With ``mixture`` the softmax is one component of a mixture (``Mixture``): the loss is
    computed by ``chunked_ce``'s kernel over all rows at once.
    """
    h, t = kept_positions(hidden, targets)
    if mixture is not None:
        return chunked_ce(h, item_weights, t, max(h.shape[0], 1), precision, mixture)
    return SoftmaxCE.apply(h, item_weights, t - 1, _matmul_dtype(precision))


def kept_positions(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states (N, D) and targets (N,) of the positions that have a target.

    From (B, L, D) and (B, L): those where the target is not PAD. Positions already
    selected, (N, D) and (N,) without a PAD (as ``SASRecEncoder.forward(..., positions=)``
    gives them), pass through uncopied; with a PAD, its rows are dropped."""
    if hidden.ndim != targets.ndim + 1 or hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} does not match targets {tuple(targets.shape)}")
    keep = targets != PAD_ID
    if targets.ndim == 1 and bool(keep.all()):
        return hidden, targets
    return hidden[keep], targets[keep]


def full_ce_reference(hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same loss through autograd's own ops; the yardstick for ``full_ce``."""
    keep = targets != PAD_ID
    return F.cross_entropy(hidden[keep] @ item_weights.T, targets[keep] - 1)


def chunked_ce(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 512,
    precision: str = "fp32",
    mixture: Mixture | None = None,
) -> torch.Tensor:
    """``full_ce`` for catalogues too large to hold (B*L) x V logits: at most
    ``chunk_size`` x V logits exist at a time, in forward and in backward. ``precision``:
    ``fp32``, or ``bf16`` for the logit products (see
    ``recsys.nn.kernels.softmax_ce.ChunkedSoftmaxCE``).
    ``mixture``: the catalogue softmax is one component of a mixture (see ``Mixture``)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    h, t = kept_positions(hidden, targets)
    base, rest = (None, None) if mixture is None else _mixture_rows(mixture, h)
    ce = 0.0 if mixture is None else float(mixture.ce_weight)
    return ChunkedSoftmaxCE.apply(h, item_weights, t - 1, chunk_size, _matmul_dtype(precision), base, rest, ce)


class Mixture(NamedTuple):
    """The catalogue softmax ``p0`` as one component of a mixture at each kept position
    (rows in the row-major order ``kept_positions`` selects): the loss is
    ``-log(base * p0(target) + rest) - ce_weight * log p0(target)``, where ``base`` (N,) is
    the softmax's mixture weight and ``rest`` (N,) the other components' probability of the
    target, both >= 0 and differentiable. The mixture's gradient reaches the softmax only in
    proportion to its responsibility for each target, so on its own the softmax learns only
    what the other components miss; ``ce_weight`` > 0 keeps it a full next-item model too.
    ``recsys.nn.heads.TransitionHead`` makes these."""

    base: torch.Tensor  # (N,)
    rest: torch.Tensor  # (N,)
    ce_weight: float = 0.0


def _mixture_rows(mixture: Mixture, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if mixture.base.shape != (h.shape[0],) or mixture.rest.shape != (h.shape[0],):
        raise ValueError(f"mixture terms must be ({h.shape[0]},), one per kept position")
    return mixture.base.to(h.dtype), mixture.rest.to(h.dtype)


def _mixture_log_prob(log_p0: torch.Tensor, mixture: Mixture) -> torch.Tensor:
    """``log(base p0 + rest)`` through autograd; ``rest`` is floored at 1e-30 so that a
    zero (no transition mass on the target) keeps its gradient finite."""
    return torch.logaddexp(torch.log(mixture.base) + log_p0, torch.log(mixture.rest.clamp(min=1e-30)))


def _pos_neg_scores(
    hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of each kept position's target (N,) and negatives (N, K), the negatives' ids
    (N, K) and a (N, K) mask of accidental hits (negative == target)."""
    keep = targets != PAD_ID  # (B, L)
    h = hidden[keep]  # (N, D)
    t = targets[keep]  # (N,)
    pos = (h * item_weights[t - 1]).sum(dim=1)  # (N,)
    if negatives.ndim == 1:  # shared by all positions: one (N, D) x (D, K) matmul
        neg = h @ item_weights[negatives - 1].T  # (N, K)
        neg_ids = negatives.expand(h.shape[0], -1)  # (N, K)
    elif negatives.ndim == 3 and negatives.shape[:2] == targets.shape:
        neg_ids = negatives[keep]  # (N, K)
        neg = torch.einsum("nd,nkd->nk", h, item_weights[neg_ids - 1])  # (N, K)
    else:
        raise ValueError(f"negatives must be (K,) or (B, L, K) with (B, L) = {tuple(targets.shape)}")
    return pos, neg, neg_ids, neg_ids == t[:, None]


def sampled_softmax(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor | None = None,
    mixture: Mixture | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy over the target and K sampled negatives.

    With ``log_q`` (log-probability that one draw of the sampler returns each negative,
    same shape as ``negatives``) each negative logit becomes ``s - log(K q)``: the
    importance weight that makes ``sum_j exp(s_j) / (K q_j)`` an unbiased estimate of the
    partition function over the catalogue (Bengio & Senecal 2008; Jean et al. 2015). The
    target keeps its raw logit. Without it, a popular sampler over-penalises popular items
    (Yi et al., RecSys 2019, on the "logQ correction").
    """
    pos, neg, _, hit = _pos_neg_scores(hidden, item_weights, targets, negatives)
    if log_q is not None:
        lq = log_q if log_q.ndim == 1 else log_q[targets != PAD_ID]
        neg = neg - (lq + math.log(neg.shape[1]))  # broadcasts (K,) or (N, K)
    neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + K); the target is column 0
    log_p0 = F.log_softmax(logits, dim=1)[:, 0]  # (N,) the sampled estimate of log p0(target)
    if mixture is not None:  # the estimate stands in for the catalogue softmax's probability
        return (-_mixture_log_prob(log_p0, mixture) - mixture.ce_weight * log_p0).mean()
    return -log_p0.mean()


def prior_logit_offset(beta: float, n_negatives: int) -> float:
    """``log(beta / K)``: the constant score that minimises ``beta softplus(-s) + K softplus(s)``,
    the (g)BCE of one position when every score is equal. Added to every score, it starts a
    model whose scores are all near 0 at that minimum, instead of spending its first steps
    pushing every score down together (which, with many negatives and small ``beta``, pulls
    all item vectors onto one direction and stalls learning). Ranking does not change."""
    return math.log(beta / n_negatives)


def bce(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    prior_offset: bool = False,
) -> torch.Tensor:
    """Binary cross-entropy, target vs negatives: ``-log s(s+) - sum_k log(1 - s(s_k))``
    per position, averaged over positions. With one uniform negative per position this is
    the original SASRec loss (Kang & McAuley, ICDM 2018). ``prior_offset`` adds
    ``prior_logit_offset(1, K)`` to every score (0 for one negative)."""
    pos, neg, _, hit = _pos_neg_scores(hidden, item_weights, targets, negatives)
    if prior_offset:
        c = prior_logit_offset(1.0, negatives.shape[-1])
        pos, neg = pos + c, neg + c
    neg_term = F.softplus(neg).masked_fill(hit, 0.0).sum(dim=1)  # -log(1 - sigmoid(s)) = softplus(s)
    return (F.softplus(-pos) + neg_term).mean()  # -log sigmoid(s) = softplus(-s)


def gbce_beta(t: float, n_negatives: int, n_items: int) -> float:
    """gSASRec's calibration exponent: ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` with
    sampling rate ``alpha = K / (n - 1)`` (Petrov & Macdonald, RecSys 2023).
    ``t = 0`` gives beta = 1 (plain BCE); ``t = 1`` gives beta = alpha."""
    alpha = n_negatives / (n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    t: float = 0.75,
    prior_offset: bool = False,
) -> torch.Tensor:
    """Generalised BCE of gSASRec (Petrov & Macdonald, "gSASRec: Reducing Overconfidence
    in Sequential Recommendation Trained with Negative Sampling", RecSys 2023).

    The positive probability is raised to the power ``beta = gbce_beta(t, K, n)``, which
    counteracts the overconfidence that training on K uniform negatives out of n - 1
    induces: per position ``-(beta log s(s+) + sum_k log(1 - s(s_k))) / (K + 1)``, the mean
    over the K + 1 scored items, as in the paper and its reference code. ``-beta log s(s+)`` equals the
    reference code's BCE on the transformed logit ``log(1 / (s(s+)^-beta - 1))`` but needs
    no clamping. Negatives are meant to be uniform (the calibration assumes it).
    ``prior_offset`` adds ``prior_logit_offset(beta, K)`` to every score (not in the paper).
    """
    k = negatives.shape[-1]
    beta = gbce_beta(t, k, item_weights.shape[0])
    pos, neg, _, hit = _pos_neg_scores(hidden, item_weights, targets, negatives)
    if prior_offset:
        c = prior_logit_offset(beta, k)
        pos, neg = pos + c, neg + c
    neg_term = F.softplus(neg).masked_fill(hit, 0.0).sum(dim=1)
    return ((beta * F.softplus(-pos) + neg_term) / (k + 1)).mean()


# ---- auxiliary heads ----------------------------------------------------------------------


def action_ce(logits: torch.Tensor, next_events: torch.Tensor) -> torch.Tensor:
    """Next-action cross-entropy. logits: (..., E) over action ids 1..E; next_events: (...)
    with 0 = no next action (padding). Returns 0 when no position has a label."""
    keep = next_events != PAD_ID
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], next_events[keep] - 1)


def purchase_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of the purchase-within-horizon head. labels: 1 / 0, ``NO_LABEL`` = skip."""
    keep = labels != NO_LABEL
    if not keep.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep], labels[keep].to(logits.dtype))


# ---- registry ---------------------------------------------------------------------------

NEGATIVES_NONE, NEGATIVES_ONE, NEGATIVES_SHARED = "none", "one", "shared"


@dataclass(frozen=True)
class LossSpec:
    """One ``train.loss`` entry.

    ``negatives``: ``none``; ``one`` per position, (B, L, 1); or ``shared``,
    ``train.n_negatives`` of them per batch, (K,). ``options`` maps a keyword argument of
    ``fn`` to the ``TrainConfig`` field that sets it. ``log_q``: ``fn`` takes the
    sampler's log-probabilities (when ``train.logq_correction`` is on).
    """

    fn: Callable[..., torch.Tensor]
    negatives: str = NEGATIVES_NONE
    options: Mapping[str, str] = field(default_factory=dict)
    log_q: bool = False


LOSSES: dict[str, LossSpec] = {
    "ce": LossSpec(full_ce, options={"precision": "logit_precision"}),
    "ce_chunked": LossSpec(chunked_ce, options={"chunk_size": "chunk_size", "precision": "logit_precision"}),
    "sampled": LossSpec(sampled_softmax, NEGATIVES_SHARED, log_q=True),
    "bce": LossSpec(bce, NEGATIVES_ONE, options={"prior_offset": "prior_offset"}),
    "gbce": LossSpec(gbce, NEGATIVES_SHARED, options={"t": "gbce_t", "prior_offset": "prior_offset"}),
}
