"""Softmax cross-entropy over the whole catalogue with hand-written gradients.

The kernels behind ``recsys.nn.losses.full_ce`` and ``chunked_ce``, which state the loss and
check its arguments; ``full_ce_reference`` there is the same loss through autograd's own
ops, and the tests hold both kernels to it. Each kernel takes the kept rows ``h`` (N, D),
the item weights ``w`` (V, D) and 0-based targets ``t`` (N,), and returns the mean loss.

- ``SoftmaxCE``: the (N, V) logits written once, the gradient formed over them in place;
- ``ChunkedSoftmaxCE``: at most ``chunk`` rows of logits at a time, the gradient formed in
  forward while each chunk is in cache; it also takes the terms of a mixture
  (``recsys.nn.losses.Mixture``) whose one component is the catalogue softmax.
"""

from __future__ import annotations

import torch

# Rows of the (N, V) logit matrix processed at a time by the element-wise softmax
# passes: a block of this many rows stays in cache, where a pass over all N rows would
# stream the whole matrix through memory once more.
_ROW_BLOCK = 64

# The last chunk of ``ChunkedSoftmaxCE``'s low-precision path is padded to a multiple of this
# many rows, so its products take few shapes (see there).
ROW_BUCKET = 32


class SoftmaxCE(torch.autograd.Function):
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


class ChunkedSoftmaxCE(torch.autograd.Function):
    """Full softmax CE that never holds more than ``chunk`` rows of logits at once.

    The loss is the last node of the graph, so its gradient is known up to the scalar that
    backward brings: forward forms each chunk's logits, its log-sum-exp and, when an input
    needs a gradient, at once the chunk's ``softmax - onehot`` and its share of both
    gradients, while the chunk is still in cache; backward only scales them. There is no
    (N, V) matrix, no recomputed product, and peak extra memory is ``chunk * V`` floats
    however many positions the batch has. On the issue-6 training step (13.5k positions x
    3,416 items, 2 threads) this takes about half the time of ``SoftmaxCE``, which writes
    the whole matrix and streams it through memory several times.

    The gradients are the ones the earlier form of this function made in backward (same
    products on the same chunks, in the same order), bit for bit when the loss enters the
    total with weight 1, so runs made with it repeat exactly.

    ``mm_dtype=torch.bfloat16`` runs the three products on bf16 inputs, as ``SoftmaxCE``
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
            return ChunkedSoftmaxCE._forward_low_precision(ctx, h, w, t, chunk, mm_dtype, mix_base, mix_rest, mix_ce)
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
        # The last chunk's rows are padded to a multiple of ROW_BUCKET with zero rows (no
        # share in any gradient; their outputs are cut off below), so its products take one
        # of chunk / ROW_BUCKET shapes: low-precision products run through oneDNN, which
        # builds a kernel per shape, and a new shape every step filled its caches.
        n_pad = -(-n // ROW_BUCKET) * ROW_BUCKET
        if n_pad != n:
            h_lo = torch.cat([h_lo, h_lo.new_zeros(n_pad - n, h_lo.shape[1])])
            t = torch.cat([t, t.new_zeros(n_pad - n)])
            if mixed:
                mix_base = torch.cat([mix_base, mix_base.new_ones(n_pad - n)])
                mix_rest = torch.cat([mix_rest, mix_rest.new_ones(n_pad - n)])
        grad_h = h.new_empty(n_pad, h.shape[1]) if with_grad else None
        grad_w = torch.zeros_like(w) if with_grad else None
        # One buffer serves every chunk's logits, then (in place) its probabilities, then its
        # gradient: it stays in cache from one product to the next, where a fresh tensor per
        # step would be written to memory and read back.
        buf = h_lo.new_empty(min(chunk, n_pad), w.shape[0])
        gw = h_lo.new_empty(w.shape) if with_grad else None
        p_t = h_lo.new_empty(n_pad)  # each row's target probability, as rounded
        rest = h_lo.new_empty(n_pad)  # and the sum of its other probabilities
        arange = torch.arange(buf.shape[0], device=h.device)
        for i in range(0, n_pad, chunk):
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
            grad_h = grad_h[:n]
        h_lo, t = h_lo[:n], t[:n]
        if mixed:
            mix_base, mix_rest = mix_base[:n], mix_rest[:n]
        # each row's loss, all rows at once: -log p_t, or -log(1 - rest) above 1/2
        p_t, rest = p_t[:n].to(h.dtype), rest[:n].to(h.dtype)
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
