"""Hidden states -> item scores over the full catalogue, and the action-type heads."""

from __future__ import annotations

import torch
from torch import nn


def score_items(user_state: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
    """Dot-product scores (B, V) for token ids 0..n; the PAD column is -inf.

    user_state: (B, D); item_weights: (n, D) for real items 1..n.
    """
    needs_grad = torch.is_grad_enabled() and (user_state.requires_grad or item_weights.requires_grad)
    if needs_grad or torch.compiler.is_compiling() or torch.jit.is_tracing():
        scores = user_state @ item_weights.T  # (B, n)
        pad = torch.full_like(scores[:, :1], float("-inf"))  # column PAD_ID == 0
        return torch.cat([pad, scores], dim=1)  # (B, n + 1)
    # Eager inference: the product writes straight into columns 1..n of the result (a
    # strided view), which saves the copy of the whole (B, n) block that cat makes.
    out = user_state.new_empty((user_state.shape[0], item_weights.shape[0] + 1))
    out[:, 0] = float("-inf")  # column PAD_ID == 0
    torch.mm(user_state, item_weights.T, out=out[:, 1:])
    return out  # (B, n + 1)


class ActionHeads(nn.Module):
    """Multi-task heads on the encoder's hidden states, for logs with action types.

    ``action``: logits over the E action types of the *next* event (id c + 1 is column c).
    ``purchase`` (optional): one logit, "a purchase happens within the next k events",
    a conversion signal; k is a property of the labels, not of the head.
    """

    def __init__(self, dim: int, n_events: int, purchase: bool = False) -> None:
        super().__init__()
        self.action = nn.Linear(dim, n_events)
        self.purchase = nn.Linear(dim, 1) if purchase else None

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden: (..., D) -> action logits (..., E) and purchase logits (...) or None."""
        purchase = self.purchase(hidden).squeeze(-1) if self.purchase is not None else None
        return self.action(hidden), purchase
