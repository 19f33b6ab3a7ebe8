"""recsys: sequential recommendation with Transformers, evaluated on the full catalogue.

Public API: ``recsys.Recommender`` and ``recsys.load`` (serving, see ``recsys.inference``)
and ``__version__``. The serving names are imported on first use, so ``import recsys``
alone stays cheap for the training side and the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Recommender", "__version__", "load"]

if TYPE_CHECKING:
    from recsys.inference.recommender import Recommender, load


def __getattr__(name: str) -> Any:
    if name in ("Recommender", "load"):
        from recsys.inference import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")
