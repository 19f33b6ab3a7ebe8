"""Shared constants and typed containers. Imports nothing from ``recsys``."""

from __future__ import annotations

from typing import NotRequired, TypedDict

import torch

#: Token id of padding. Never a real item, never ranked.
PAD_ID = 0

#: Label of a position with no purchase label (padding, or a horizon cut short by the split).
NO_LABEL = -1


def mask_id(n_items: int) -> int:
    """Token id reserved for [MASK]: one past the last real item.

    Real items occupy ids ``1..n_items``; the embedding table has ``n_items + 2`` rows.
    """
    return n_items + 1


class Batch(TypedDict):
    """A training batch. Sequences are left-padded with ``PAD_ID``.

    Next-item objective: ``inputs[b, j]`` is followed by ``targets[b, j]`` in user ``b``'s
    history, so the target is always the next item and never sits in its own input prefix.
    Cloze objective (BERT4Rec): ``targets[b, j]`` is the item hidden behind a [MASK] at
    ``inputs[b, j]``. Either way ``PAD_ID`` marks a position with no item loss.

    The optional keys exist only when the log has an action-type column (``data.event_col``):
    action ids are 1..E with 0 = padding / no action.
    """

    inputs: torch.Tensor  # (B, L) int64
    targets: torch.Tensor  # (B, L) int64, PAD_ID where there is no target
    events: NotRequired[torch.Tensor]  # (B, L) int64 action of each input position
    next_events: NotRequired[torch.Tensor]  # (B, L) int64 action of the next event, 0 = none
    purchase: NotRequired[torch.Tensor]  # (B, L) float32 1/0 purchase within the horizon, NO_LABEL = none
    gaps: NotRequired[torch.Tensor]  # (B, L) float32 seconds since the user's previous event, nan = none
    next_gaps: NotRequired[torch.Tensor]  # (B, L) float32 seconds from each input to the next event, nan = none
    churn_elapsed: NotRequired[torch.Tensor]  # (B, L) float32 seconds from each input to its churn snapshot
    churn_label: NotRequired[torch.Tensor]  # (B, L) float32 1/0 no event in the T days after it, NO_LABEL = none


class EvalBatch(TypedDict):
    """An evaluation batch: one history and one held-out target per user."""

    inputs: torch.Tensor  # (B, L) int64, left-padded history
    targets: torch.Tensor  # (B,) int64
    users: torch.Tensor  # (B,) int64 dense user index
    seen_rows: torch.Tensor  # (S,) int64 row in batch of each seen (row, item) pair
    seen_items: torch.Tensor  # (S,) int64 every item in the row's whole input history
    events: NotRequired[torch.Tensor]  # (B, L) int64 action of each input position
    next_events: NotRequired[torch.Tensor]  # (B,) int64 action of the held-out event
    purchase: NotRequired[torch.Tensor]  # (B,) float32 purchase within the horizon from the target on
    gaps: NotRequired[torch.Tensor]  # (B, L) float32 seconds since the user's previous event, nan = none


class RankingOutput(TypedDict):
    """Per-user results of full-catalogue ranking."""

    ranks: torch.Tensor  # (N,) int64, 1-based, pessimistic on ties
    users: torch.Tensor  # (N,) int64
