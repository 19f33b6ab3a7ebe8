"""``model.name`` -> baseline, built from its ``ModelConfig`` fields, or restored from the
arrays its ``state()`` returned (a serving artifact holds them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recsys.baselines.base import Baseline
from recsys.baselines.popularity import MostPopular, RecentPopular
from recsys.baselines.transitions import ItemTransitions
from recsys.config import ModelConfig

BASELINES: dict[str, Callable[[ModelConfig], Baseline]] = {
    "popularity": lambda cfg: MostPopular(),
    "recent_popularity": lambda cfg: RecentPopular(days=cfg.recent_days),
    "transitions": lambda cfg: ItemTransitions(),
}


def build_baseline(cfg: ModelConfig) -> Baseline:
    """An unfitted baseline of ``cfg.name``."""
    if cfg.name not in BASELINES:
        raise ValueError(f"unknown baseline {cfg.name!r}; choose from {sorted(BASELINES)}")
    return BASELINES[cfg.name](cfg)


def restore_baseline(cfg: ModelConfig, state: dict[str, np.ndarray]) -> Baseline:
    """The fitted baseline of ``cfg.name`` from its ``state()`` arrays (no refitting)."""
    if cfg.name not in BASELINES:
        raise ValueError(f"unknown baseline {cfg.name!r}; choose from {sorted(BASELINES)}")
    return BASELINES[cfg.name](cfg).load_state(state)
