"""Hidden states -> item scores over the full catalogue."""

from __future__ import annotations

import torch


def score_items(user_state: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
    """Dot-product scores (B, V) for token ids 0..n; the PAD column is -inf.

    user_state: (B, D); item_weights: (n, D) for real items 1..n.
    """
    scores = user_state @ item_weights.T  # (B, n)
    pad = torch.full_like(scores[:, :1], float("-inf"))  # column PAD_ID == 0
    return torch.cat([pad, scores], dim=1)  # (B, n + 1)


def last_state(hidden: torch.Tensor) -> torch.Tensor:
    """Left-padded inputs put the newest position last: (B, L, D) -> (B, D)."""
    return hidden[:, -1]
