"""Per-user token sequences in CSR form: one flat item array plus user offsets.

User ``u``'s time-ordered history is ``items[offsets[u]:offsets[u + 1]]``. Every later
stage (splits, collation) indexes into this one array instead of holding Python lists.
Side information per event (action type) is another flat array aligned with ``items``;
side information per item (attributes) is indexed by token id.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.vocab import Vocab

EVENTS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Sequences:
    users: np.ndarray  # (U,) object: raw user ids
    offsets: np.ndarray  # (U + 1,) int64
    items: np.ndarray  # (N,) int64 token ids
    timestamps: np.ndarray  # (N,) int64
    events: np.ndarray | None = None  # (N,) int64 action ids 1..E (see EventVocab), if the log has them

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class EventVocab:
    """Action types (view, cart, ...) <-> ids. ``names[i]`` is the action of id ``i + 1``;
    id 0 is padding / no action. Names are sorted, so the ids do not depend on row order."""

    names: tuple[str, ...]

    @classmethod
    def build(cls, raw: pd.Series | np.ndarray) -> EventVocab:
        return cls(tuple(sorted({str(x) for x in pd.unique(np.asarray(raw))})))

    @property
    def n_events(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"unknown action type {name!r}; the log has {list(self.names)}")
        return self.names.index(name) + 1

    def encode(self, raw: pd.Series | np.ndarray) -> np.ndarray:
        codes = pd.Index(self.names).get_indexer(np.asarray(raw, dtype=object).astype(str)) + 1
        if (codes == 0).any():
            raise KeyError("the log holds action types missing from the action vocabulary")
        return codes.astype(np.int64)

    def to_json(self) -> str:
        return json.dumps({"format_version": EVENTS_FORMAT_VERSION, "pad_id": 0, "names": list(self.names)})

    @classmethod
    def from_json(cls, text: str) -> EventVocab:
        doc = json.loads(text)
        if doc.get("format_version") != EVENTS_FORMAT_VERSION:
            raise ValueError(f"unsupported action vocabulary format_version {doc.get('format_version')!r}")
        return cls(tuple(doc["names"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> EventVocab:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def build_sequences(frame: pd.DataFrame, vocab: Vocab, events: EventVocab | None = None) -> Sequences:
    """``frame`` must be in canonical order: grouped by user, time-ordered within a user.

    With ``events``, ``frame["event"]`` is encoded into ``Sequences.events``.
    """
    codes, users = pd.factorize(frame["user"], sort=False)
    if len(codes) and np.any(np.diff(codes) < 0):
        raise ValueError("event frame is not grouped by user; load it with data.events.load_events")
    counts = np.bincount(codes, minlength=len(users))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item_index = pd.Index(vocab.items)
    items = item_index.get_indexer(frame["item"].to_numpy()) + 1
    if (items == 0).any():
        raise KeyError("event frame holds items missing from the vocabulary")
    return Sequences(
        users=np.asarray(users, dtype=object),
        offsets=offsets,
        items=items.astype(np.int64),
        timestamps=frame["timestamp"].to_numpy(dtype=np.int64),
        events=None if events is None else events.encode(frame["event"]),
    )


@dataclass(frozen=True)
class ItemAttributes:
    """Categorical attributes per item token: ``per_item[i]`` holds the attribute ids
    (1..n_attrs) of token ``i + 1``. Raw attribute ids are renumbered densely in sorted order."""

    per_item: tuple[tuple[int, ...], ...]
    n_attrs: int

    @property
    def coverage(self) -> int:
        """Items with at least one attribute."""
        return sum(1 for a in self.per_item if a)


def read_item_attributes(path: str | Path, vocab: Vocab) -> ItemAttributes:
    """An S3-Rec ``*_item2attributes.json`` (optionally gzipped): ``{"item": [attr, ...]}``.

    Items of the vocabulary missing from the file get no attributes; items in the file but
    not in the vocabulary (filtered out, or never seen) are ignored.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object item -> [attribute, ...]")
    doc = {str(k): v for k, v in doc.items()}
    used = [doc.get(item, []) for item in vocab.items]
    names = sorted({a for attrs in used for a in attrs}, key=lambda a: (isinstance(a, str), a))
    index = {a: i + 1 for i, a in enumerate(names)}
    per_item = tuple(tuple(sorted({index[a] for a in attrs})) for attrs in used)
    return ItemAttributes(per_item, len(names))
