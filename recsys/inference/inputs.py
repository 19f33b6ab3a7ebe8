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

    ``inputs`` keeps each history's newest ``max_len`` known items, left-padded to the
    longest kept history of the batch (not to ``max_len``: positions count back from
    the newest item, so the narrower batch gives the same states for less work).
    """

    inputs: np.ndarray  # (B, L) int64, PAD_ID on the left; L = max(1, longest kept history)
    lengths: np.ndarray  # (B,) int64 known items kept per history (0: empty history)
    n_unknown: np.ndarray  # (B,) int64 unknown ids dropped per history
    seen: list[np.ndarray]  # every known token of each whole history (before truncation)

    @property
    def empty(self) -> np.ndarray:
        return self.lengths == 0  # (B,) bool


def encode_batch(vocab: Vocab, histories: Sequence[Sequence[str]], max_len: int, unknown: str) -> EncodedBatch:
    """Checked raw-id histories -> ``EncodedBatch``. Long histories lose their oldest items."""
    seen, n_unknown = [], []
    for i, history in enumerate(histories):
        tokens, missing = encode_ids(vocab, history, unknown, f"histories[{i}]")
        seen.append(tokens)
        n_unknown.append(missing)
    lengths = np.fromiter((min(len(t), max_len) for t in seen), dtype=np.int64, count=len(seen))
    width = max(1, int(lengths.max(initial=0)))
    inputs = np.full((len(seen), width), PAD_ID, dtype=np.int64)  # (B, L)
    for row, (tokens, n) in enumerate(zip(seen, lengths)):
        if n:
            inputs[row, width - n :] = tokens[len(tokens) - n :]
    return EncodedBatch(inputs, lengths, np.asarray(n_unknown, dtype=np.int64), seen)


def unique_tokens(vocab: Vocab, ids: Sequence[str], unknown: str, where: str) -> tuple[np.ndarray, int]:
    """Known token ids of ``ids`` without duplicates, in first-seen order, and the unknown count."""
    tokens, missing = encode_ids(vocab, ids, unknown, where)
    _, first = np.unique(tokens, return_index=True)
    return tokens[np.sort(first)], missing
