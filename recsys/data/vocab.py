"""Raw item ids <-> dense token ids. PAD = 0, real items 1..n, MASK = n + 1.

Imports only numpy and the standard library: ranking services load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.types import PAD_ID, mask_id

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Vocab:
    """Item vocabulary. ``items[i]`` is the raw id of token ``i + 1``."""

    items: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {raw: i + 1 for i, raw in enumerate(self.items)}
        if len(index) != len(self.items):
            raise ValueError("vocabulary holds duplicate raw ids")
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, raw_items: Iterable[str]) -> Vocab:
        """Tokens in order of first appearance, so a rebuild on the same data is identical."""
        return cls(tuple(dict.fromkeys(str(x) for x in raw_items)))

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def mask_id(self) -> int:
        return mask_id(self.n_items)

    @property
    def size(self) -> int:
        """Embedding rows: PAD + items + MASK."""
        return self.n_items + 2

    def encode(self, raw: Sequence[str], unknown: int | None = None) -> np.ndarray:
        """Token ids of ``raw``; unknown ids raise ``KeyError`` unless ``unknown`` is given."""
        if unknown is None:
            try:
                return np.fromiter((self._index[str(x)] for x in raw), dtype=np.int64, count=len(raw))
            except KeyError as exc:
                raise KeyError(f"unknown item id {exc.args[0]!r}") from None
        return np.fromiter((self._index.get(str(x), unknown) for x in raw), dtype=np.int64, count=len(raw))

    def decode(self, tokens: Iterable[int]) -> list[str]:
        out = []
        for t in tokens:
            t = int(t)
            if not 1 <= t <= self.n_items:
                raise KeyError(f"token {t} is not a real item (PAD={PAD_ID}, MASK={self.mask_id})")
            out.append(self.items[t - 1])
        return out

    def to_json(self) -> str:
        doc = {"format_version": FORMAT_VERSION, "pad_id": PAD_ID, "mask_id": self.mask_id, "items": list(self.items)}
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        doc = json.loads(text)
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported vocabulary format_version {doc.get('format_version')!r}")
        vocab = cls(tuple(doc["items"]))
        if doc["pad_id"] != PAD_ID or doc["mask_id"] != vocab.mask_id:
            raise ValueError("vocabulary special ids do not match this version of recsys")
        return vocab

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
