"""Vectorised batch assembly: index ranges -> left-padded tensors. No per-sample Python.

Sequences are left-padded so that the most recent item is always the last column: the
causal encoder's last output is the user state, and learned positions count back from
the end, so trimming a batch to its longest row never changes a row's positions.

Two training objectives share the windows: ``collate_train`` (next item at every
position, SASRec) and ``collate_cloze`` (masked items, BERT4Rec). With action types
(``EventTracks``) batches also carry the action of each input, the next action and the
purchase-within-k label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.splits import HeldOut
from recsys.types import NO_LABEL, PAD_ID, Batch, EvalBatch


@dataclass(frozen=True)
class EventTracks:
    """Per-event side information aligned with ``Sequences.items``.

    ``purchase_cum[b] - purchase_cum[a]`` counts purchases in ``items[a:b]``;
    ``seq_end[p]`` is one past the last event of the user that event ``p`` belongs to.
    ``horizon``: k of "a purchase within the next k events"; 0 = no purchase labels.
    ``gaps`` (logs with timestamps): seconds since the user's previous event (nan: none).
    ``churn_elapsed`` / ``churn_label`` (``churn_snapshot_labels``): each training event's
    churn snapshot; with them, training windows end at the last training event (an input
    with no next-event target) so that a user's last event is a churn example too.
    """

    events: np.ndarray  # (N,) int64 action ids 1..E
    seq_end: np.ndarray  # (N,) int64
    purchase_cum: np.ndarray | None = None  # (N + 1,) int64
    horizon: int = 0
    gaps: np.ndarray | None = None  # (N,) float32
    churn_elapsed: np.ndarray | None = None  # (N,) float32
    churn_label: np.ndarray | None = None  # (N,) float32, NO_LABEL = none

    @classmethod
    def build(cls, events: np.ndarray, offsets: np.ndarray, purchase_id: int | None, horizon: int,
              gaps: np.ndarray | None = None, churn: tuple[np.ndarray, np.ndarray] | None = None) -> EventTracks:
        seq_end = np.repeat(offsets[1:], np.diff(offsets)).astype(np.int64)
        cum = None
        if horizon > 0:
            if purchase_id is None:
                raise ValueError("purchase labels need the purchase action id")
            cum = np.concatenate([[0], np.cumsum(events == purchase_id)]).astype(np.int64)
        churn_elapsed, churn_label = churn if churn is not None else (None, None)
        return cls(events.astype(np.int64), seq_end, cum, horizon,
                   None if gaps is None else gaps.astype(np.float32), churn_elapsed, churn_label)


def churn_snapshot_labels(
    timestamps: np.ndarray, held: HeldOut, visible_until: int, horizon_s: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One churn snapshot per training event: ``(elapsed, label)`` arrays (N,).

    Event ``p`` of user ``u``'s training events ``[start, end]`` gets a snapshot time ``s``
    drawn uniformly (seeded) while the user is quiet after it: in ``[t_p, t_{p+1})``, or for
    the last training event in ``[t_p, visible_until - T]`` (none when that is empty). Its
    label is 1 when no event follows in ``(s, s + T]``, which the training events answer
    without reading past ``visible_until`` (the validation cut). ``elapsed = s - t_p``,
    what the churn head reads beside the state at ``p``. Other events: ``NO_LABEL``."""
    ts = timestamps.astype(np.float64)
    n = len(ts)
    elapsed = np.zeros(n, dtype=np.float32)
    label = np.full(n, NO_LABEL, dtype=np.float32)
    u = np.random.default_rng(seed).random(n)
    lengths = held.end - held.start + 1
    before = np.cumsum(lengths) - lengths  # events of the earlier users
    pos = np.arange(lengths.sum()) + np.repeat(held.start - before, lengths)  # every training event
    is_last = np.zeros(n, dtype=bool)
    is_last[held.end] = True
    inner = pos[~is_last[pos]]
    s = ts[inner] + u[inner] * (ts[inner + 1] - ts[inner])
    elapsed[inner] = s - ts[inner]
    label[inner] = ts[inner + 1] > s + horizon_s
    last = held.end[ts[held.end] <= visible_until - horizon_s]
    s = ts[last] + u[last] * (visible_until - horizon_s - ts[last])
    elapsed[last] = s - ts[last]
    label[last] = 1.0
    return elapsed, label


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


def _window_positions(start: np.ndarray, end: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute positions (B, L) of ``gather_windows``' cells and whether each is real."""
    length = np.minimum(end - start, width)
    L = int(length.max()) if len(length) else 0
    idx = end[:, None] - L + np.arange(L)[None, :]
    return idx, idx >= (end - length)[:, None]


def _purchase_labels(tracks: EventTracks, pos: np.ndarray, real: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Label of "a purchase among events pos+1 .. pos+k", looking no further than ``stop``
    (exclusive, per row). 1 if a purchase is seen; 0 if the whole horizon is visible and
    holds none; ``NO_LABEL`` if it is cut short (unknown) or the cell is padding."""
    k, cum = tracks.horizon, tracks.purchase_cum
    safe = np.where(real, pos, 0)
    last = np.minimum(safe + k + 1, stop[:, None])  # exclusive end of the visible horizon
    bought = (cum[last] - cum[np.minimum(safe + 1, last)]) > 0
    complete = safe + k + 1 <= stop[:, None]
    label = np.where(bought, 1.0, np.where(complete, 0.0, NO_LABEL))
    return np.where(real, label, NO_LABEL).astype(np.float32)


def collate_train(
    items: np.ndarray, held: HeldOut, rows: np.ndarray, max_len: int, tracks: EventTracks | None = None
) -> Batch:
    """Next-item training pairs for ``rows`` of a training ``HeldOut``.

    The window is the last ``max_len + 1`` items up to and including the final target;
    ``inputs`` drops its last column and ``targets`` its first, so ``targets[:, j]`` is
    the item after ``inputs[:, j]``. With ``tracks``, the same shift gives each input's
    action and the next action; purchase labels never look past the final target.
    """
    start, stop = held.start[rows], held.end[rows] + 1
    if tracks is not None and tracks.churn_label is not None:
        return _collate_train_through_last(items, start, stop, max_len, tracks)
    window = gather_windows(items, start, stop, max_len + 1)  # (B, L+1)
    inputs = window[:, :-1]
    targets = np.where(inputs == PAD_ID, PAD_ID, window[:, 1:])
    batch = Batch(inputs=torch.from_numpy(np.ascontiguousarray(inputs)), targets=torch.from_numpy(targets))
    if tracks is not None:
        ev = gather_windows(tracks.events, start, stop, max_len + 1)
        batch["events"] = torch.from_numpy(np.ascontiguousarray(ev[:, :-1]))
        batch["next_events"] = torch.from_numpy(np.where(inputs == PAD_ID, PAD_ID, ev[:, 1:]))
        if tracks.horizon > 0:
            pos, real = _window_positions(start, stop, max_len + 1)
            labels = _purchase_labels(tracks, pos[:, :-1], real[:, :-1], stop)
            batch["purchase"] = torch.from_numpy(np.ascontiguousarray(labels))
        if tracks.gaps is not None:
            g = gather_float_windows(tracks.gaps, start, stop, max_len + 1)
            batch["gaps"] = torch.from_numpy(np.ascontiguousarray(g[:, :-1]))
            batch["next_gaps"] = torch.from_numpy(np.where(inputs == PAD_ID, np.nan, g[:, 1:]).astype(np.float32))
    return batch


def gather_float_windows(values: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """``gather_windows`` for a float per-event array: (B, L) float32, nan in padding."""
    idx, real = _window_positions(start, end, width)
    return np.where(real, values[np.clip(idx, 0, max(len(values) - 1, 0))], np.nan).astype(np.float32)


def _collate_train_through_last(items, start, stop, max_len, tracks: EventTracks) -> Batch:
    """Training rows whose inputs end at the last training event (with churn labels): the
    last ``max_len`` events are inputs, each with the next event as its target, except the
    last input, which has none (its churn snapshot is its only label)."""
    idx, real = _window_positions(start, stop, max_len)  # (B, L) positions of the inputs
    safe = np.clip(idx, 0, len(items) - 1)
    has_next = real & (idx + 1 < stop[:, None])
    nxt = np.clip(idx + 1, 0, len(items) - 1)
    inputs = np.where(real, items[safe], PAD_ID).astype(np.int64)
    batch = Batch(inputs=torch.from_numpy(inputs),
                  targets=torch.from_numpy(np.where(has_next, items[nxt], PAD_ID).astype(np.int64)))
    batch["events"] = torch.from_numpy(np.where(real, tracks.events[safe], PAD_ID).astype(np.int64))
    batch["next_events"] = torch.from_numpy(np.where(has_next, tracks.events[nxt], PAD_ID).astype(np.int64))
    if tracks.horizon > 0:
        batch["purchase"] = torch.from_numpy(_purchase_labels(tracks, idx, real, stop))
    if tracks.gaps is not None:
        batch["gaps"] = torch.from_numpy(np.where(real, tracks.gaps[safe], np.nan).astype(np.float32))
        batch["next_gaps"] = torch.from_numpy(np.where(has_next, tracks.gaps[nxt], np.nan).astype(np.float32))
    batch["churn_elapsed"] = torch.from_numpy(np.where(real, tracks.churn_elapsed[safe], 0.0).astype(np.float32))
    batch["churn_label"] = torch.from_numpy(np.where(real, tracks.churn_label[safe], NO_LABEL).astype(np.float32))
    return batch


def cloze_mask(real: torch.Tensor, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Positions to hide: each real position with probability ``mask_prob``, and one
    random real position in any row that drew none, so every row has a loss. Padding
    is never masked. real: (B, L) bool -> (B, L) bool."""
    masked = (torch.rand(real.shape, generator=generator) < mask_prob) & real
    fallback = torch.rand(real.shape, generator=generator).masked_fill(~real, -1.0).argmax(dim=1)  # (B,)
    empty = ~masked.any(dim=1) & real.any(dim=1)
    masked[empty, fallback[empty]] = True
    return masked


def collate_cloze(
    items: np.ndarray,
    held: HeldOut,
    rows: np.ndarray,
    max_len: int,
    mask_prob: float,
    mask_token: int,
    generator: torch.Generator,
) -> Batch:
    """Cloze (BERT4Rec) training rows: the last ``max_len`` items of each training sequence
    (which ends at its final training target, so validation and test events never enter),
    with masked positions replaced by ``mask_token`` in ``inputs`` and kept in ``targets``;
    every other target is PAD. ``generator`` (owned by the datamodule) makes it repeatable."""
    window = torch.from_numpy(gather_windows(items, held.start[rows], held.end[rows] + 1, max_len))  # (B, L)
    masked = cloze_mask(window != PAD_ID, mask_prob, generator)
    return Batch(
        inputs=torch.where(masked, torch.full_like(window, mask_token), window),
        targets=torch.where(masked, window, torch.full_like(window, PAD_ID)),
    )


def collate_eval(
    items: np.ndarray,
    held: HeldOut,
    rows: np.ndarray,
    max_len: int,
    tracks: EventTracks | None = None,
    mask_token: int | None = None,
    label_through_target: bool = False,
) -> EvalBatch:
    """Histories (last ``max_len`` items before the target), targets and user indices.

    With ``mask_token`` (cloze models) the history is the last ``max_len - 1`` items and a
    [MASK] is appended in the last column, where the model predicts the held-out item.
    With ``tracks``: input actions, the held-out event's action, and the purchase label of
    events ``end .. end + k - 1`` as far as the user's log goes, or with
    ``label_through_target`` (validation) no further than the held-out event itself: what
    follows a validation target is the test period (under leave-one-out, the test event),
    and a validation label must not read it.
    """
    start, end = held.start[rows], held.end[rows]
    width = max_len if mask_token is None else max_len - 1
    inputs = gather_windows(items, start, end, width)
    if mask_token is not None:
        inputs = np.concatenate([inputs, np.full((len(rows), 1), mask_token, dtype=np.int64)], axis=1)
    seen_rows, seen_items = seen_pairs(items, start, end)
    batch = EvalBatch(
        inputs=torch.from_numpy(inputs),
        targets=torch.from_numpy(items[end].astype(np.int64)),
        users=torch.from_numpy(held.user[rows].astype(np.int64)),
        seen_rows=seen_rows,
        seen_items=seen_items,
    )
    if tracks is not None:
        ev = gather_windows(tracks.events, start, end, width)
        if mask_token is not None:
            ev = np.concatenate([ev, np.zeros((len(rows), 1), dtype=np.int64)], axis=1)
        batch["events"] = torch.from_numpy(ev)
        batch["next_events"] = torch.from_numpy(tracks.events[end].astype(np.int64))
        if tracks.horizon > 0:
            stop = np.minimum(end + tracks.horizon, tracks.seq_end[end])  # exclusive
            if label_through_target:
                stop = np.minimum(stop, end + 1)
            bought = tracks.purchase_cum[stop] - tracks.purchase_cum[end] > 0
            batch["purchase"] = torch.from_numpy(bought.astype(np.float32))
        if tracks.gaps is not None and mask_token is None:
            batch["gaps"] = torch.from_numpy(gather_float_windows(tracks.gaps, start, end, width))
    return batch


def seen_pairs(items: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) pairs for every item in each row's *whole* history ``items[start:end]``.

    Used by ``exclude_seen``; covers the full history, not only the model's window.
    """
    counts = end - start
    batch_rows = np.repeat(np.arange(len(start)), counts)
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    positions = np.arange(counts.sum()) + offsets
    return torch.from_numpy(batch_rows.astype(np.int64)), torch.from_numpy(items[positions].astype(np.int64))
