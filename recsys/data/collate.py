"""Vectorised batch assembly: index ranges -> left-padded tensors. No per-sample Python.

Sequences are left-padded so that the most recent item is always the last column: the
causal encoder's last output is the user state, and learned positions count back from
the end, so trimming a batch to its longest row never changes a row's positions.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.splits import HeldOut
from recsys.types import PAD_ID, Batch, EvalBatch


def gather_windows(items: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """Rows ``items[max(start, end - width):end]``, left-padded with PAD to the longest row.

    Returns (B, L) int64 with ``L = min(width, max(end - start))``.
    """
    length = np.minimum(end - start, width)  # (B,)
    L = int(length.max()) if len(length) else 0
    idx = end[:, None] - L + np.arange(L)[None, :]  # (B, L) absolute positions
    valid = idx >= (end - length)[:, None]
    out = np.where(valid, items[np.clip(idx, 0, None)], PAD_ID)
    return out.astype(np.int64, copy=False)


def collate_train(items: np.ndarray, held: HeldOut, rows: np.ndarray, max_len: int) -> Batch:
    """Next-item training pairs for ``rows`` of a training ``HeldOut``.

    The window is the last ``max_len + 1`` items up to and including the final target;
    ``inputs`` drops its last column and ``targets`` its first, so ``targets[:, j]`` is
    the item after ``inputs[:, j]``.
    """
    window = gather_windows(items, held.start[rows], held.end[rows] + 1, max_len + 1)  # (B, L+1)
    inputs = window[:, :-1]
    targets = np.where(inputs == PAD_ID, PAD_ID, window[:, 1:])
    return Batch(inputs=torch.from_numpy(np.ascontiguousarray(inputs)), targets=torch.from_numpy(targets))


def collate_eval(items: np.ndarray, held: HeldOut, rows: np.ndarray, max_len: int) -> EvalBatch:
    """Histories (last ``max_len`` items before the target), targets and user indices."""
    start, end = held.start[rows], held.end[rows]
    inputs = gather_windows(items, start, end, max_len)
    seen_rows, seen_items = seen_pairs(items, start, end)
    return EvalBatch(
        inputs=torch.from_numpy(inputs),
        targets=torch.from_numpy(items[end].astype(np.int64)),
        users=torch.from_numpy(held.user[rows].astype(np.int64)),
        seen_rows=seen_rows,
        seen_items=seen_items,
    )


def seen_pairs(items: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) pairs for every item in each row's *whole* history ``items[start:end]``.

    Used by ``exclude_seen``; covers the full history, not only the model's window.
    """
    counts = end - start
    batch_rows = np.repeat(np.arange(len(start)), counts)
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    positions = np.arange(counts.sum()) + offsets
    return torch.from_numpy(batch_rows.astype(np.int64)), torch.from_numpy(items[positions].astype(np.int64))
