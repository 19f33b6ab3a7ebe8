"""The encoder run over groups of rows of similar length (``train.length_groups``).

Rows are left-padded and positions count back from the end, and no real position attends
to padding, so cutting a row's leading padding leaves its outputs unchanged (up to float
rounding). A random batch of 128 ML-1M-partial users at max length 200 holds 47% padding;
in 4 groups the encoder runs over 64% of the padded positions and 53% of the attention
area (the L x L scores, their softmax and dropout), in 8 over 58% and 46%, but smaller
products run slower (4 was the faster on 2 threads). Every row stays in its batch and the
loss still averages over the same positions, so this is the same objective; only the
dropout masks are laid out differently, so a run's trajectory differs from the ungrouped
one for the same seed.

``bucket`` > 1 widens each group's window to a multiple of ``bucket`` columns (at most L):
more leading padding, which leaves the outputs unchanged as above, and a handful of product
shapes rather than one per batch. bf16 products run through oneDNN, which builds and caches
a kernel for every shape it meets; with exact widths nearly every batch brought new shapes,
so the caches either grew without end or, capped, missed on most products (issue 18: on
the issue-6 ML-1M step, 226 ms with unbounded caches, 317 ms with 8-entry caches; with
16-column buckets and 256-entry caches, 213 to 235 ms, and the caches stop growing).

``forward`` is the encoder's plain forward, ``(inputs, events) -> (n, w, D)``; the tests
hold these functions to it (``SASRecEncoder.forward`` with ``length_groups=1``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys.types import PAD_ID

Forward = Callable[..., torch.Tensor]  # (inputs (n, w), events (n, w) | None) -> (n, w, D)


def group_by_length(inputs: torch.Tensor, groups: int, bucket: int = 1) -> list[tuple[torch.Tensor, int]]:
    """Rows of a left-padded (B, L) batch in ``groups`` groups of similar length, shortest
    first: each group's row indices and its width (its longest row, an all-padding row
    counting 1, rounded up to a multiple of ``bucket`` and at most L). Equal row counts per
    group, ties kept in batch order."""
    B, L = inputs.shape
    real = inputs != PAD_ID  # real tokens are the last `width` columns of a row
    first = torch.where(real.any(dim=1), real.to(torch.uint8).argmax(dim=1), L - 1)  # (B,)
    width = L - first  # (B,) >= 1
    order = torch.argsort(width, stable=True)
    return [(rows, min(L, -(-int(width[rows].max()) // bucket) * bucket))
            for rows in torch.tensor_split(order, min(groups, B))]


def grouped_forward(
    forward: Forward, inputs: torch.Tensor, events: torch.Tensor | None, groups: int,
    positions: torch.Tensor | None = None, bucket: int = 1,
) -> torch.Tensor:
    """``forward`` over ``groups`` groups of rows of similar length, each trimmed to its
    longest row (rounded up to a multiple of ``bucket``); (B, L, D) with zeros at padding
    positions, or with ``positions`` the
    (N, D) rows of those positions (zeros where one is padding)."""
    B, L = inputs.shape
    if positions is not None:
        return _grouped_positions(forward, inputs, events, groups, positions, bucket)
    out = None
    for rows, w in group_by_length(inputs, groups, bucket):
        ev = None if events is None else events[rows, L - w :]
        h = forward(inputs[rows, L - w :], ev)  # (n, w, D)
        if out is None:
            out = h.new_zeros(B, L, h.shape[-1])
        # written in place at the group's rows and last w columns: no padded copies,
        # no concatenation, no reordering (in forward or backward)
        out[rows, L - w :] = h
    return out * (inputs != PAD_ID).unsqueeze(-1)


def _grouped_positions(
    forward: Forward, inputs: torch.Tensor, events: torch.Tensor | None, groups: int, positions: torch.Tensor,
    bucket: int = 1,
) -> torch.Tensor:
    """``grouped_forward(...)[positions]`` without the (B, L, D) tensor: each group's
    selected real positions go straight to their rows of the (N, D) result. A training
    step skips five passes over (B, L, D) floats each way (the zeroed output, its padding
    mask, the selection) and their copies in backward; on the issue-6 step that saving was
    within the machine's run-to-run noise."""
    B, L = inputs.shape
    n = int(positions.sum())
    slot = torch.full((B, L), -1, dtype=torch.int64, device=inputs.device)
    slot[positions] = torch.arange(n, device=inputs.device)  # each selected position's output row
    selected = positions & (inputs != PAD_ID)  # padding positions stay zero, as in (B, L, D)
    out = None
    for rows, w in group_by_length(inputs, groups, bucket):
        ev = None if events is None else events[rows, L - w :]
        h = forward(inputs[rows, L - w :], ev)  # (n, w, D)
        if out is None:
            out = h.new_zeros(n, h.shape[-1])
        here = selected[rows, L - w :]  # (n, w); a real position always lies in its group's window
        out[slot[rows, L - w :][here]] = h[here]
    return out
