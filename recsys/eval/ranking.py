"""Scores to ranks over the full catalogue.

Every real item (ids ``1..V-1``) is a candidate; ``PAD_ID`` is never ranked. Ties are
pessimistic: a target that scores the same as other items ranks *below* all of them,
so a model that outputs constants gets rank ``V - 1`` rather than a lucky rank 1.
"""

from __future__ import annotations

import torch

from recsys.types import PAD_ID


def mask_seen(scores: torch.Tensor, seen_rows: torch.Tensor, seen_items: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``scores`` with ``(seen_rows[i], seen_items[i])`` set to ``-inf``.

    A target that is itself among the seen items is excluded with them and therefore
    ranks last: excluding it would need knowledge of the target, which is leakage.
    """
    scores = scores.clone()
    scores[seen_rows, seen_items] = float("-inf")
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based pessimistic rank of each target among all real items.

    scores: (B, V) with column ``PAD_ID`` ignored; targets: (B,) item ids in ``1..V-1``.
    rank = 1 + #{items j != target, j != PAD : score_j >= score_target}.
    """
    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"expected scores (B, V) and targets (B,), got {tuple(scores.shape)}, {tuple(targets.shape)}")
    # One cheap reduction first: a row sum is NaN if the row holds a NaN (or both +inf and
    # -inf); only then pay for the element-wise check, which decides.
    if torch.isnan(scores.sum(dim=1)).any() and torch.isnan(scores).any():
        raise ValueError("scores contain NaN; ranking is undefined")
    if (targets <= PAD_ID).any() or (targets >= scores.shape[1]).any():
        raise ValueError("targets must be real item ids in 1..V-1")
    real = scores[:, PAD_ID + 1 :]  # (B, V-1): PAD is never a candidate
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    # The target always counts itself once in ">=", so subtracting 1 and adding 1 cancel.
    # Counting the bools as bytes into int32 skips the (B, V) int64 copy that bool.sum() makes.
    at_or_above = (real >= target_scores).view(torch.uint8)  # (B, V-1)
    return at_or_above.sum(dim=1, dtype=torch.int32).to(torch.int64)  # (B,)
