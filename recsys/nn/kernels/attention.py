"""Scaled dot-product attention written out step by step, for a dropout torch does not draw.

torch's fused kernel draws its own (Bernoulli) dropout on the attention weights; with the
"uniform" sampler (``recsys.nn.kernels.dropout``) the steps are written out here instead:
the same ones torch's math kernel takes, which is the kernel it runs on CPU when dropout is
on. ``recsys.nn.layers.attend`` chooses between the two; the tests hold this one to
``F.scaled_dot_product_attention`` and to the scaled, masked softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor,
                          drop: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``softmax(q k^T / sqrt(Dh) + mask) v`` with ``drop`` applied to the weights: (B, H, Q, Dh).
    q: (B, H, Q, Dh); k, v: (B, H, L, Dh); ``attn_mask``: True where allowed."""
    B, H, Q, Dh = q.shape
    L = k.shape[2]
    # The mask as an additive bias (0 where allowed, -inf elsewhere) that the scores' product
    # adds as it scales: one batched product, where scaling and masking were two more passes
    # over the (B, H, Q, L) scores in forward and two in backward. With a power-of-two
    # scale (Dh = 4, 16, 64, ...) the scores are the same bits as scaling after the product.
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    bias = torch.where(attn_mask, zero, torch.full_like(zero, float("-inf"))).expand(B, H, Q, L)
    scores = torch.baddbmm(bias.reshape(B * H, Q, L), q.reshape(B * H, Q, Dh),
                           k.reshape(B * H, L, Dh).transpose(1, 2), alpha=1.0 / math.sqrt(Dh))
    weights = scores.softmax(dim=-1).view(B, H, Q, L)
    return drop(weights) @ v
