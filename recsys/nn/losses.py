"""Training losses as pure functions of hidden states, item weights, targets (and negatives).

Every item loss takes ``hidden`` (B, L, D), ``item_weights`` (n, D) for items 1..n and
``targets`` (B, L) with ``PAD_ID`` = no loss at that position, and averages over the
positions that have a target. Losses that need negatives take them as a tensor of token
ids (1..n) and never sample: sampling is seeded and lives in the training layer.
``negatives`` is either (K,), shared by every position of the batch, or (B, L, K), one set
per position. A negative equal to its position's target (an "accidental hit") is dropped.

``LOSSES`` is the registry ``train.loss`` picks from; ``LossSpec`` says what each entry
needs from the training layer (how many negatives, which config options).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recsys.types import NO_LABEL, PAD_ID

# Rows of the (N, V) logit matrix processed at a time by the element-wise softmax
# passes: a block of this many rows stays in cache, where a pass over all N rows would
# stream the whole matrix through memory once more.
_ROW_BLOCK = 64


class _SoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of ``h @ w.T`` against ``t``, with a hand-written backward.

    Autograd's composition (mm -> log_softmax -> nll) writes the (N, V) matrix three
    times and zero-fills a fourth; here the logits are written once and the gradient
    ``softmax - onehot`` overwrites them in place, block by block.

    ``mm_dtype=torch.bfloat16`` runs the three (N, V)-sized matrix products on bf16
    inputs (the kernel accumulates in fp32 but returns bf16: torch has no CPU bf16 x bf16 -> fp32
    product, so each logit is rounded to bf16, about 3 significant digits, then widened; the
    softmax itself stays fp32). On CPUs with AVX512-BF16 the bf16 GEMM is faster than fp32
    (2.4x on a large square product on the 2-core test machine; see benchmarks/SPEED.md),
    much as TF32 is on a GPU.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, mm_dtype: torch.dtype) -> torch.Tensor:
        logits = _mm(h, w.T, mm_dtype)  # (N, V)
        lse = torch.empty(h.shape[0], dtype=logits.dtype, device=logits.device)
        for i in range(0, h.shape[0], _ROW_BLOCK):
            lse[i : i + _ROW_BLOCK] = torch.logsumexp(logits[i : i + _ROW_BLOCK], dim=1)
        target_logit = logits.gather(1, t[:, None]).squeeze(1)  # (N,)
        ctx.save_for_backward(h, w, t, logits, lse)
        ctx.mm_dtype = mm_dtype
        return (lse - target_logit).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, w, t, logits, lse = ctx.saved_tensors
        n = h.shape[0]
        scale = grad_out / n
        grad = logits  # reused in place: forward's logits are not needed again
        for i in range(0, n, _ROW_BLOCK):
            block = grad[i : i + _ROW_BLOCK]
            block.sub_(lse[i : i + _ROW_BLOCK, None]).exp_()  # softmax
        grad[torch.arange(n, device=grad.device), t] -= 1.0
        grad.mul_(scale)
        if ctx.mm_dtype != grad.dtype:
            grad = grad.to(ctx.mm_dtype)  # one cast serves both products
        return _mm(grad, w, ctx.mm_dtype), _mm(grad.T, h, ctx.mm_dtype), None, None  # (N, D), (V, D)


def _mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a @ b`` with inputs cast to ``dtype``, returned as fp32 (for bf16: a bf16 product, widened)."""
    if dtype == a.dtype == b.dtype:
        return a @ b
    return (a.to(dtype) @ b.to(dtype)).float()


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
    ``precision``: ``fp32``, or ``bf16`` for the logit matrix products (see _SoftmaxCE).
    With ``mixture`` the softmax is one component of a mixture (``Mixture``): the loss is
    computed by ``chunked_ce``'s kernel over all rows at once.
    """
    h, t = kept_positions(hidden, targets)
    if mixture is not None:
        return chunked_ce(h, item_weights, t, max(h.shape[0], 1), precision, mixture)
    return _SoftmaxCE.apply(h, item_weights, t - 1, _matmul_dtype(precision))


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


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Full softmax CE that never holds more than ``chunk`` rows of logits at once.

    The loss is the last node of the graph, so its gradient is known up to the scalar that
    backward brings: forward forms each chunk's logits, its log-sum-exp and, when an input
    needs a gradient, at once the chunk's ``softmax - onehot`` and its share of both
    gradients, while the chunk is still in cache; backward only scales them. There is no
    (N, V) matrix, no recomputed product, and peak extra memory is ``chunk * V`` floats
    however many positions the batch has. On the issue-6 training step (13.5k positions x
    3,416 items, 2 threads) this takes about half the time of ``_SoftmaxCE``, which writes
    the whole matrix and streams it through memory several times.

    The gradients are the ones the earlier form of this function made in backward (same
    products on the same chunks, in the same order), bit for bit when the loss enters the
    total with weight 1, so runs made with it repeat exactly.

    ``mm_dtype=torch.bfloat16`` runs the three products on bf16 inputs, as ``_SoftmaxCE``
    does (each logit rounded to bf16; each chunk's gradient products on bf16 inputs, summed
    in fp32). Casting a chunk that is still in cache costs little, unlike casting the whole
    (N, V) matrix, so here bf16 pays: the K = 64 logit product runs about 4x faster in bf16
    on AVX512-BF16. The softmax is torch's own over the bf16 logits, which computes in fp32
    and rounds each probability to bf16 once: one fused pass per chunk, against six
    element-wise passes (widen, max, exp, sum, scale, narrow) written out in fp32.
    ``softmax - onehot`` is formed in bf16, its target entry as minus the sum of the other
    probabilities (``p_t - 1`` would cancel when ``p_t`` is near 1), and the mean's 1 / N
    scales the products, not the probabilities: each chunk's (bf16) share of the hidden
    states' gradient, and the weights' gradient once its chunks are summed in fp32. The
    logits, probabilities and gradient of every chunk share one buffer (the softmax runs in
    place), which stays in cache. Each row's loss is ``-log p_t`` from the bf16 probability
    (``-log1p(-rest)`` above 1/2), so within 2^-8 of the exact value; that touches only the
    logged loss, not the gradient. A probability that underflows to 0 gets the exact
    log-sum-exp instead, from its logits formed again.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk: int,
                mm_dtype: torch.dtype = torch.float32, mix_base: torch.Tensor | None = None,
                mix_rest: torch.Tensor | None = None, mix_ce: float = 0.0) -> torch.Tensor:
        if mm_dtype != h.dtype:
            return _ChunkedSoftmaxCE._forward_low_precision(ctx, h, w, t, chunk, mm_dtype, mix_base, mix_rest, mix_ce)
        n = h.shape[0]
        lse = torch.empty(n, dtype=h.dtype, device=h.device)
        target_logit = (h * w[t]).sum(dim=1)  # (N,)
        mixed = mix_base is not None
        with_grad = any(ctx.needs_input_grad[i] for i in (0, 1, 5, 6))
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros_like(w) if with_grad else None
        scale = h.new_ones(()) / n  # d mean / d row
        for i in range(0, n, chunk):
            hc = h[i : i + chunk]
            g = hc @ w.T  # (chunk, V)
            lse[i : i + chunk] = torch.logsumexp(g, dim=1)
            if with_grad:
                g.sub_(lse[i : i + chunk, None]).exp_()  # softmax
                g[torch.arange(hc.shape[0], device=g.device), t[i : i + chunk]] -= 1.0
                if mixed:  # each row's share: its responsibility r, plus the softmax's own CE weight
                    r = _mixture_terms(target_logit[i : i + chunk] - lse[i : i + chunk],
                                       mix_base[i : i + chunk], mix_rest[i : i + chunk])[1]
                    g.mul_(((r + mix_ce) * scale)[:, None])
                else:
                    g.mul_(scale)
                grad_h[i : i + chunk] = g @ w
                grad_w.addmm_(g.T, hc)
        if not mixed:
            ctx.save_for_backward(grad_h, grad_w, None, None)
            return (lse - target_logit).mean()
        loss_rows, _, d_base, d_rest = _mixture_terms(target_logit - lse, mix_base, mix_rest)
        ctx.save_for_backward(grad_h, grad_w, d_base * scale, d_rest * scale)
        return (loss_rows + mix_ce * (lse - target_logit)).mean()

    @staticmethod
    def _forward_low_precision(ctx, h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk: int,
                               mm_dtype: torch.dtype, mix_base: torch.Tensor | None = None,
                               mix_rest: torch.Tensor | None = None, mix_ce: float = 0.0) -> torch.Tensor:
        n = h.shape[0]
        h_lo, w_lo = h.to(mm_dtype), w.to(mm_dtype)  # (N, D), (V, D): cast once, small
        mixed = mix_base is not None
        with_grad = any(ctx.needs_input_grad[i] for i in (0, 1, 5, 6))
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros_like(w) if with_grad else None
        # One buffer serves every chunk's logits, then (in place) its probabilities, then its
        # gradient: it stays in cache from one product to the next, where a fresh tensor per
        # step would be written to memory and read back.
        buf = h_lo.new_empty(min(chunk, n), w.shape[0])
        gw = h_lo.new_empty(w.shape) if with_grad else None
        p_t = h_lo.new_empty(n)  # each row's target probability, as rounded
        rest = h_lo.new_empty(n)  # and the sum of its other probabilities
        arange = torch.arange(buf.shape[0], device=h.device)
        for i in range(0, n, chunk):
            rows, tc = slice(i, i + chunk), t[i : i + chunk]
            p, at = buf[: tc.shape[0]], arange[: tc.shape[0]]
            torch.mm(h_lo[rows], w_lo.T, out=p)  # (chunk, V) logits, rounded to mm_dtype
            # torch's softmax over a low-precision row works in fp32 and rounds once, at the
            # end: one fused pass, where widening, max, exp, sum, scaling and narrowing are
            # six. The probabilities come out in mm_dtype, ready for the gradient products,
            # written over the logits (each row is read before it is written).
            torch.ops.aten._softmax.out(p, 1, False, out=p)
            p_t[rows] = p[at, tc]
            # 1 - p_t as the sum of the other probabilities (accumulated in fp32, then
            # rounded): no cancellation when p_t is near 1, so the target's gradient keeps
            # bf16's relative precision
            p[at, tc] = 0.0
            torch.sum(p, dim=1, out=rest[rows])
            if with_grad:
                p[at, tc] = rest[rows].neg()  # softmax - onehot; the 1 / n after the products
                if mixed:  # each row's responsibility r (``_mixture_terms``), applied to the
                    # products' small operands and results, not to the (chunk, V) buffer
                    log_p = p_t[rows].float().log()
                    r = _mixture_terms(log_p, mix_base[rows], mix_rest[rows])[1] + mix_ce  # (chunk,)
                    grad_h[rows] = (p @ w_lo).float().mul_((r / n)[:, None])
                    grad_w += torch.mm(p.T, (h_lo[rows] * r.to(h_lo.dtype)[:, None]), out=gw)
                else:
                    grad_h[rows] = (p @ w_lo).div_(n)
                    grad_w += torch.mm(p.T, h_lo[rows], out=gw)
        if with_grad:
            grad_w.div_(n)
        # each row's loss, all rows at once: -log p_t, or -log(1 - rest) above 1/2
        p_t, rest = p_t.to(h.dtype), rest.to(h.dtype)
        loss_rows = torch.where(p_t < 0.5, p_t.log().neg(), rest.neg().log1p_().neg_())
        lost = p_t == 0  # underflowed (a logit gap beyond ~90): the exact value instead
        if lost.any():  # rare: their logits again, from the same rounded inputs
            g_lost = (h_lo[lost] @ w_lo.T).to(h.dtype)
            loss_rows[lost] = torch.logsumexp(g_lost, dim=1) - g_lost.gather(1, t[lost, None]).squeeze(1)
        if not mixed:
            ctx.save_for_backward(grad_h, grad_w, None, None)
            return loss_rows.mean()
        mix_rows, _, d_base, d_rest = _mixture_terms(-loss_rows, mix_base, mix_rest)
        ctx.save_for_backward(grad_h, grad_w, d_base / n, d_rest / n)
        return (mix_rows + mix_ce * loss_rows).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w, d_base, d_rest = ctx.saved_tensors
        if grad_out.device.type == "cpu" and float(grad_out) == 1.0:
            # the loss entered the total with weight 1 (a plain training step): the gradients
            # are forward's as they are, without a pass over each to multiply it by 1
            return grad_h, grad_w, None, None, None, d_base, d_rest, None
        scaled = [None if g is None else g * grad_out for g in (grad_h, grad_w, d_base, d_rest)]
        return scaled[0], scaled[1], None, None, None, scaled[2], scaled[3], None


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
    ``fp32``, or ``bf16`` for the logit products (see ``_ChunkedSoftmaxCE``).
    ``mixture``: the catalogue softmax is one component of a mixture (see ``Mixture``)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    h, t = kept_positions(hidden, targets)
    base, rest = (None, None) if mixture is None else _mixture_rows(mixture, h)
    ce = 0.0 if mixture is None else float(mixture.ce_weight)
    return _ChunkedSoftmaxCE.apply(h, item_weights, t - 1, chunk_size, _matmul_dtype(precision), base, rest, ce)


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


def _mixture_terms(
    log_p0: torch.Tensor, base: torch.Tensor, rest: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``-log(base p0 + rest)``: the loss, the softmax's responsibility
    ``r = base p0 / (base p0 + rest)`` (the weight of its usual CE gradient), and the
    derivatives with respect to ``base`` and ``rest``. Worked in log space, so a target
    probability that underflows stays finite."""
    log_base_p0 = torch.log(base) + log_p0
    log_total = torch.logaddexp(log_base_p0, torch.log(rest))
    r = torch.exp(log_base_p0 - log_total).nan_to_num_(0.0)
    inv_total = torch.exp(-log_total)
    return -log_total, r, -torch.exp(log_p0) * inv_total, -inv_total


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
