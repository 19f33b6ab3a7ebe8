"""Training losses as pure functions of hidden states, item weights and targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.types import PAD_ID

# Rows of the (N, V) logit matrix processed at a time by the element-wise softmax
# passes: a block of this many rows stays in cache, where a pass over all N rows would
# stream the whole matrix through memory once more.
_ROW_BLOCK = 64


class _SoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of ``h @ w.T`` against ``t``, with a hand-written backward.

    Autograd's composition (mm -> log_softmax -> nll) writes the (N, V) matrix three
    times and zero-fills a fourth; here the logits are written once and the gradient
    ``softmax - onehot`` overwrites them in place, block by block.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = h @ w.T  # (N, V)
        lse = torch.empty(h.shape[0], dtype=logits.dtype)
        for i in range(0, h.shape[0], _ROW_BLOCK):
            lse[i : i + _ROW_BLOCK] = torch.logsumexp(logits[i : i + _ROW_BLOCK], dim=1)
        target_logit = logits.gather(1, t[:, None]).squeeze(1)  # (N,)
        ctx.save_for_backward(h, w, t, logits, lse)
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
        grad[torch.arange(n), t] -= 1.0
        grad.mul_(scale)
        return grad @ w, grad.T @ h, None  # (N, D), (V, D)


def full_ce(hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue at every non-padding position.

    The SASRec+ setting (Klenitskiy & Vasilev, RecSys 2023). Padding positions are
    dropped *before* the (N, V) logits are formed, so no work is spent on them.
    hidden: (B, L, D); item_weights: (n, D) for items 1..n; targets: (B, L), PAD = none.
    """
    keep = targets != PAD_ID  # (B, L)
    h = hidden[keep]  # (N, D)
    return _SoftmaxCE.apply(h, item_weights, targets[keep] - 1)


def full_ce_reference(hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same loss through autograd's own ops; the yardstick for ``full_ce``."""
    keep = targets != PAD_ID
    return F.cross_entropy(hidden[keep] @ item_weights.T, targets[keep] - 1)


LOSSES = {"ce": full_ce}
