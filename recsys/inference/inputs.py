"""Raw-id requests -> left-padded token batches, with the checks and policies they need.

Shared by the torch and ONNX recommenders so both treat unknown ids, empty histories,
long histories and wrong types the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys.data.vocab import Vocab
from recsys.errors import RecsysError
from recsys.types import PAD_ID

#: ``unknown=``: what an item id outside the vocabulary does.
UNKNOWN_POLICIES = ("ignore", "raise")
#: ``empty=``: what a history with no known item does.
EMPTY_POLICIES = ("popularity", "raise")
#: ``item_precision=``: dtype of the item matrix scanned by ``recommend`` (see Recommender).
ITEM_PRECISIONS = ("float32", "bfloat16")


class UnknownItemError(RecsysError, KeyError):
    """An item id is not in the model's vocabulary (raised with ``unknown="raise"``)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class EmptyHistoryError(RecsysError, ValueError):
    """A history holds no known item (raised with ``empty="raise"``)."""


def check_policy(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_ids(ids: object, where: str) -> Sequence[str]:
    """A flat sequence of raw ids (``str``); anything else is a ``TypeError`` naming the spot."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(
            f"{where} must be a list of item ids, got a single {type(ids).__name__} {ids[:40]!r}; "
            "a history is a list like ['item1', 'item2'] (and a batch of histories a list of those)"
        )
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise TypeError(f"{where} must be one-dimensional, got an array of shape {ids.shape}")
    elif not isinstance(ids, (list, tuple)):
        raise TypeError(f"{where} must be a list or tuple of item ids (str), got {type(ids).__name__}")
    for j, x in enumerate(ids):
        if not isinstance(x, str):
            hint = f" (raw ids are strings: use {str(x)!r})" if isinstance(x, (int, np.integer)) else ""
            raise TypeError(f"{where}[{j}] is {type(x).__name__} {x!r}, not a str item id{hint}")
    return ids


def check_batch(histories: object) -> Sequence[Sequence[str]]:
    """A batch of histories: a list/tuple of lists of raw ids."""
    if isinstance(histories, (str, bytes)) or not isinstance(histories, (list, tuple)):
        raise TypeError(
            f"histories must be a list of histories (lists of str item ids), got {type(histories).__name__}"
        )
    for i, h in enumerate(histories):
        if isinstance(h, str):
            raise TypeError(
                f"histories[{i}] is a str, not a list of item ids; for one user pass [history], "
                "e.g. recommend([['item1', 'item2']])"
            )
        check_ids(h, f"histories[{i}]")
    return histories


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def encode_ids(vocab: Vocab, ids: Sequence[str], unknown: str, where: str) -> tuple[np.ndarray, int]:
    """Token ids of the known ``ids`` (unknown ones dropped) and how many were unknown.

    ``unknown="raise"`` raises ``UnknownItemError`` at the first unknown id instead.
    """
    if unknown == "raise":
        try:
            return vocab.encode(ids), 0
        except KeyError as exc:
            raise UnknownItemError(f"{where}: {exc.args[0]}") from None
    tokens = vocab.encode(ids, unknown=PAD_ID)
    known = tokens[tokens != PAD_ID]
    return known, len(tokens) - len(known)


@dataclass(frozen=True)
class EncodedBatch:
    """Histories as the encoder reads them.

    ``inputs`` keeps each history's newest known items (``max_len`` of them, or
    ``max_len - 1`` and a [MASK] in the last column for cloze models), left-padded to the
    longest kept history of the batch rather than to ``max_len``: positions count back
    from the newest item, so the narrower batch gives the same states for less work.
    """

    inputs: np.ndarray  # (B, L) int64, PAD_ID on the left
    lengths: np.ndarray  # (B,) int64 known items kept per history (0: empty history)
    n_unknown: np.ndarray  # (B,) int64 unknown ids dropped per history
    seen: list[np.ndarray]  # every known token of each whole history (before truncation)
    events: np.ndarray | None = None  # (B, L) int64 action ids aligned with inputs (0: none)
    gaps: np.ndarray | None = None  # (B, L) float32 seconds since the previous known event (nan: none)
    last_time: np.ndarray | None = None  # (B,) float64 time of the newest known event (nan: empty)

    @property
    def empty(self) -> np.ndarray:
        return self.lengths == 0  # (B,) bool


def check_actions(actions: object, histories: Sequence[Sequence[str]], names: tuple[str, ...]) -> list[np.ndarray]:
    """Action ids (1-based) per history; ``actions`` must mirror ``histories`` in shape."""
    if isinstance(actions, (str, bytes)) or not isinstance(actions, (list, tuple)):
        raise TypeError(f"actions must be a list of lists of action names, got {type(actions).__name__}")
    if len(actions) != len(histories):
        raise ValueError(f"actions has {len(actions)} rows for {len(histories)} histories")
    index = {name: i + 1 for i, name in enumerate(names)}
    out = []
    for i, (row, history) in enumerate(zip(actions, histories)):
        check_ids(row, f"actions[{i}]")
        if len(row) != len(history):
            raise ValueError(f"actions[{i}] has {len(row)} entries for a history of {len(history)} items")
        try:
            out.append(np.fromiter((index[a] for a in row), dtype=np.int64, count=len(row)))
        except KeyError as exc:
            raise ValueError(f"actions[{i}]: unknown action type {exc.args[0]!r}; the model knows {list(names)}") from None
    return out


def check_timestamps(timestamps: object, histories: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Seconds per history (float64), aligned with ``histories`` and non-decreasing."""
    if isinstance(timestamps, (str, bytes)) or not isinstance(timestamps, (list, tuple)):
        raise TypeError(f"timestamps must be a list of lists of numbers (seconds), got {type(timestamps).__name__}")
    if len(timestamps) != len(histories):
        raise ValueError(f"timestamps has {len(timestamps)} rows for {len(histories)} histories")
    out = []
    for i, (row, history) in enumerate(zip(timestamps, histories)):
        try:
            t = np.asarray(row, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(f"timestamps[{i}] must hold numbers (seconds)") from None
        if len(t) != len(history):
            raise ValueError(f"timestamps[{i}] has {len(t)} entries for a history of {len(history)} items")
        if np.isnan(t).any() or (np.diff(t) < 0).any():
            raise ValueError(f"timestamps[{i}] must be numbers in time order (oldest first)")
        out.append(t)
    return out


def encode_batch(
    vocab: Vocab,
    histories: Sequence[Sequence[str]],
    max_len: int,
    unknown: str,
    mask_token: int | None = None,
    actions: list[np.ndarray] | None = None,
    timestamps: list[np.ndarray] | None = None,
) -> EncodedBatch:
    """Checked raw-id histories -> ``EncodedBatch``. Long histories lose their oldest items.

    ``actions`` (from ``check_actions``) and ``timestamps`` (``check_timestamps``) follow
    their items: an ignored unknown item drops its action and its time too, and gaps are
    measured between the known events, as if the unknown ones were not there.
    """
    seen, n_unknown, kept_events, kept_times = [], [], [], []
    for i, history in enumerate(histories):
        if unknown == "raise":
            tokens, missing = encode_ids(vocab, history, "raise", f"histories[{i}]")
            keep = None
        else:
            tokens = vocab.encode(history, unknown=PAD_ID)
            keep = tokens != PAD_ID
            tokens = tokens[keep]
            missing = len(keep) - len(tokens)
        seen.append(tokens)
        n_unknown.append(missing)
        if actions is not None:
            kept_events.append(actions[i] if keep is None else actions[i][keep])
        if timestamps is not None:
            kept_times.append(timestamps[i] if keep is None else timestamps[i][keep])
    window = max_len if mask_token is None else max_len - 1
    lengths = np.fromiter((min(len(t), window) for t in seen), dtype=np.int64, count=len(seen))
    width = max(1, int(lengths.max(initial=0))) if mask_token is None else int(lengths.max(initial=0)) + 1
    inputs = np.full((len(seen), width), PAD_ID, dtype=np.int64)  # (B, L)
    events = None if actions is None else np.zeros((len(seen), width), dtype=np.int64)
    gaps = None if timestamps is None else np.full((len(seen), width), np.nan, dtype=np.float32)
    last_time = None if timestamps is None else np.full(len(seen), np.nan)
    end = width if mask_token is None else width - 1  # cloze: the last column is [MASK]
    for row, (tokens, n) in enumerate(zip(seen, lengths)):
        if n:
            inputs[row, end - n : end] = tokens[len(tokens) - n :]
            if events is not None:
                events[row, end - n : end] = kept_events[row][len(tokens) - n :]
            if gaps is not None:
                t = kept_times[row]
                g = np.r_[np.nan, np.diff(t)]  # the first known event has no predecessor
                gaps[row, end - n : end] = g[len(t) - n :]
                last_time[row] = t[-1]
    if mask_token is not None:
        inputs[:, -1] = mask_token
    return EncodedBatch(inputs, lengths, np.asarray(n_unknown, dtype=np.int64), seen, events, gaps, last_time)


def unique_tokens(vocab: Vocab, ids: Sequence[str], unknown: str, where: str) -> tuple[np.ndarray, int]:
    """Known token ids of ``ids`` without duplicates, in first-seen order, and the unknown count."""
    tokens, missing = encode_ids(vocab, ids, unknown, where)
    _, first = np.unique(tokens, return_index=True)
    return tokens[np.sort(first)], missing
