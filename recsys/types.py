"""Shared constants and typed containers. Imports nothing from ``recsys``."""

from __future__ import annotations

from typing import TypedDict

import torch

#: Token id of padding. Never a real item, never ranked.
PAD_ID = 0


def mask_id(n_items: int) -> int:
    """Token id reserved for [MASK]: one past the last real item.

    Real items occupy ids ``1..n_items``; the embedding table has ``n_items + 2`` rows.
    """
    return n_items + 1


class Batch(TypedDict):
    """A training batch. Sequences are left-padded with ``PAD_ID``.

    ``inputs[b, j]`` is followed by ``targets[b, j]`` in user ``b``'s history, so the
    target is always the next item and never sits in its own input prefix.
    """

    inputs: torch.Tensor  # (B, L) int64
    targets: torch.Tensor  # (B, L) int64, PAD_ID where there is no target


class EvalBatch(TypedDict):
    """An evaluation batch: one history and one held-out target per user."""

    inputs: torch.Tensor  # (B, L) int64, left-padded history
    targets: torch.Tensor  # (B,) int64
    users: torch.Tensor  # (B,) int64 dense user index
    seen_rows: torch.Tensor  # (S,) int64 row in batch of each seen (row, item) pair
    seen_items: torch.Tensor  # (S,) int64 every item in the row's whole input history


class RankingOutput(TypedDict):
    """Per-user results of full-catalogue ranking."""

    ranks: torch.Tensor  # (N,) int64, 1-based, pessimistic on ties
    users: torch.Tensor  # (N,) int64
