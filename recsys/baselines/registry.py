"""``model.name`` -> baseline, built from its ``ModelConfig`` fields."""

from __future__ import annotations

from collections.abc import Callable

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
    if cfg.name not in BASELINES:
        raise ValueError(f"unknown baseline {cfg.name!r}; choose from {sorted(BASELINES)}")
    return BASELINES[cfg.name](cfg)
