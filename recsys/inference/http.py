"""Optional HTTP service: ``recsys serve ARTIFACT`` (needs the ``serve`` extra).

Endpoints (JSON):

- ``GET /health`` -> ``{"status": "ok", "n_items", "model", "dataset", "recsys_version", "stats"}``;
- ``POST /recommend`` ``{"histories": [["a", "b"], ...], "k": 10, "exclude_seen": false,
  "candidates": null, "exclude": null}`` -> ``{"items", "scores", "n_unknown", "fallback"}``
  (see ``Recommendations``; a fallback row's scores are ``null``). ``candidates`` is one
  list shared by every history or one list per history; ``exclude`` one list per history;
- ``POST /score`` ``{"history": ["a", "b"], "items": ["c", "d"]}`` -> ``{"scores": [...]}``,
  with ``null`` for items outside the vocabulary (JSON has no ``-inf``) and for every item of
  an empty history (no model score: it is NaN in ``Recommender.score``);
- ``POST /next_action`` ``{"history": ["a", "b"]}`` -> ``NextAction.to_dict()``, for models
  with an action head (501 otherwise).

Models that read action types take ``"actions"`` (names aligned with the histories) in
every request.

Requests are validated strictly (item ids must be JSON strings, unknown fields are
refused): a malformed request gets 422 with pydantic's reason; an unknown id or empty
history under a ``raise`` policy gets 400 with the reason. Handlers are plain ``def``
functions, so uvicorn runs them on its thread pool against one shared, thread-safe
``Recommender``. Not imported by ``recsys.inference``.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from recsys.inference.inputs import EmptyHistoryError, UnknownItemError
from recsys.inference.recommender import Recommender

#: Request size limits: one call should not hold the model for seconds.
MAX_BATCH = 1024
MAX_HISTORY = 10_000
MAX_ITEMS = 100_000
MAX_K = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class RecommendRequest(_Strict):
    histories: list[list[str]] = Field(min_length=1, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = False
    candidates: list[str] | list[list[str]] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    exclude: list[list[str]] | None = None
    actions: list[list[str]] | None = None


class ScoreRequest(_Strict):
    history: list[str] = Field(max_length=MAX_HISTORY)
    items: list[str] = Field(min_length=1, max_length=MAX_ITEMS)
    actions: list[str] | None = None


class NextActionRequest(_Strict):
    history: list[str] = Field(max_length=MAX_HISTORY)
    actions: list[str] | None = None


def create_app(recommender: Recommender) -> FastAPI:
    """A FastAPI app serving ``recommender``."""
    app = FastAPI(title="recsys", version=recommender.artifact.recsys_version or "unknown")
    artifact = recommender.artifact

    def _refuse(exc: Exception) -> HTTPException:
        return HTTPException(status_code=400, detail=str(exc))

    refused = (UnknownItemError, EmptyHistoryError, ValueError)  # policies, action mismatches

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "n_items": recommender.n_items,
            "model": artifact.manifest()["model"],
            "dataset": {k: artifact.dataset.get(k) for k in ("name", "fingerprint")},
            "recsys_version": artifact.recsys_version,
            "policies": {"unknown": recommender.unknown, "empty": recommender.empty},
            "actions": {"types": list(recommender.action_types), "required": recommender.reads_actions},
            "stats": recommender.stats(),
        }

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> dict:
        if any(len(h) > MAX_HISTORY for h in request.histories):
            raise HTTPException(status_code=422, detail=f"a history may hold at most {MAX_HISTORY} items")
        try:
            out = recommender.recommend(
                request.histories,
                k=request.k,
                exclude_seen=request.exclude_seen,
                candidates=request.candidates,
                actions=request.actions,
                exclude=request.exclude,
            )
        except refused as exc:
            raise _refuse(exc) from None
        return out.to_dict()

    @app.post("/score")
    def score(request: ScoreRequest) -> dict:
        try:
            values = recommender.score(request.history, request.items, actions=request.actions)
        except refused as exc:
            raise _refuse(exc) from None
        return {"scores": [None if math.isinf(v) or math.isnan(v) else float(v) for v in values.tolist()]}

    @app.post("/next_action")
    def next_action(request: NextActionRequest) -> dict:
        try:
            return recommender.next_action(request.history, actions=request.actions).to_dict()
        except NotImplementedError as exc:
            raise HTTPException(status_code=501, detail=str(exc)) from None
        except refused as exc:
            raise _refuse(exc) from None

    return app


def serve(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(recommender), host=host, port=port, log_level=log_level)
