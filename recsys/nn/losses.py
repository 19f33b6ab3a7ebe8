"""Training losses as pure functions of hidden states, item weights and targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.types import PAD_ID


def full_ce(hidden: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue at every non-padding position.

    The SASRec+ setting (Klenitskiy & Vasilev, RecSys 2023). Padding positions are
    dropped *before* the (N, V) logits are formed, so no work is spent on them.
    hidden: (B, L, D); item_weights: (n, D) for items 1..n; targets: (B, L), PAD = none.
    """
    keep = targets != PAD_ID  # (B, L)
    h = hidden[keep]  # (N, D)
    logits = h @ item_weights.T  # (N, n)
    return F.cross_entropy(logits, targets[keep] - 1)


LOSSES = {"ce": full_ce}
