"""Dataset cards: one line per dataset (users, items, events, median length, fingerprint).

Computed from the data with the same reader and cleaning as training (``load_events``
on the config's ``data`` section), so the card describes exactly what the models saw. A
card is cached as ``<results>/<dataset>/dataset.json`` and recomputed when the data
file's size changes or on request; a dataset whose file is absent gets no card (and is
never downloaded from here).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from recsys.config import DataConfig, ExperimentConfig
from recsys.data.events import data_root, load_events
from recsys.report.results import MatrixEntry

POSITION_FORMATS = ("s3rec", "user_item")


def local_data_file(cfg: DataConfig) -> Path | None:
    """The data file if it is on disk (plain or gzipped), else None. Never downloads."""
    rel = Path(cfg.path).expanduser()
    target = rel if rel.is_absolute() else data_root(cfg) / rel
    names = [target, target.with_suffix("")] if target.suffix == ".gz" else [target, target.with_name(target.name + ".gz")]
    return next((p for p in names if p.is_file()), None)


def dataset_card(cfg: DataConfig) -> dict:
    """Counts after cleaning, the median events per user and the events fingerprint."""
    log = load_events(cfg)
    lengths = log.frame.groupby("user", sort=False).size().to_numpy()
    has_time = cfg.format not in POSITION_FORMATS and cfg.time_col is not None
    source = local_data_file(cfg)
    return {
        "dataset": cfg.name,
        "users": int(log.summary["n_users"]),
        "items": int(log.summary["n_items"]),
        "events": int(log.summary["n_events"]),
        "median_length": float(np.median(lengths)),
        "fingerprint": log.fingerprint,
        "file": cfg.path,
        "file_bytes": source.stat().st_size if source else None,
        "timestamps": "real" if has_time else "positions only",
    }


def _card_config(entries: list[MatrixEntry]) -> DataConfig | None:
    """The data section of the dataset's leave-one-out config (any config if none is)."""
    for entry in sorted(entries, key=lambda e: (e.split != "loo", e.config)):
        try:
            return ExperimentConfig.from_yaml(entry.path).data
        except Exception:  # a config this version cannot read: try the next one
            continue
    return None


def load_cards(matrix: list[MatrixEntry], cache_root: str | Path, data_dir: str | None = None,
               refresh: bool = False) -> dict[str, dict | None]:
    """A card per dataset of the matrix: cached, computed from local data, or None."""
    cache_root = Path(cache_root)
    by_dataset: dict[str, list[MatrixEntry]] = {}
    for entry in matrix:
        by_dataset.setdefault(entry.dataset, []).append(entry)
    cards: dict[str, dict | None] = {}
    for dataset, entries in sorted(by_dataset.items()):
        cache = cache_root / dataset / "dataset.json"
        cached = None
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text(encoding="utf-8"))
            except ValueError:
                cached = None
        cfg = _card_config(entries)
        if cfg is not None and data_dir is not None:
            cfg = dataclasses.replace(cfg, data_dir=data_dir)
        source = local_data_file(cfg) if cfg is not None else None
        fresh = cached is not None and (source is None or cached.get("file_bytes") == source.stat().st_size)
        if fresh and not refresh:
            cards[dataset] = cached
        elif source is not None:
            card = dataset_card(cfg)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            cards[dataset] = card
        else:
            cards[dataset] = cached
    return cards
