"""``Recommender``: a loaded artifact behind a batched, thread-safe API in raw item ids.

>>> rec = Recommender.load("artifacts/beauty")                  # doctest: +SKIP
>>> out = rec.recommend([["B0001", "B0042"], ["B0007"]], k=10)   # doctest: +SKIP
>>> out.items[0], out.scores[0]                                  # doctest: +SKIP

Policies, fixed when the recommender is built:

- ``unknown="ignore"`` (default) drops item ids that are not in the vocabulary and counts
  them (``Recommendations.n_unknown`` per history, ``stats()`` in total); ``"raise"``
  raises ``UnknownItemError`` instead. The same applies to ``candidates`` and to the
  items passed to ``score`` (an unknown item there scores ``-inf`` under ``"ignore"``).
- ``empty="popularity"`` (default) answers a history with no known item by training-data
  popularity: ``Recommendations.fallback`` flags the row, its items are the most popular
  ones, and its ``scores`` are NaN, because the model gave none (training counts never pose
  as model scores; ``popularity()`` returns them). ``score`` gives NaN for such a history
  too. ``"raise"`` raises ``EmptyHistoryError``. Loading an artifact exported without
  counts with ``empty="popularity"`` is an ``ArtifactError``.

Histories longer than the model's ``max_len`` keep their newest ``max_len`` known items
(the model never saw longer windows; cloze models such as BERT4Rec keep ``max_len - 1``
and read a [MASK] after them, as in evaluation). ``exclude_seen`` removes every item of the whole
history, including items truncated away. ``k`` larger than the number of candidates is
clamped: a row holds ``min(k, candidates left)`` items, never padding.

``item_precision="bfloat16"`` (opt-in) scans the catalogue with a bfloat16 copy of the
item matrix, half the memory traffic that dominates million-item catalogues, and rescores
a shortlist of ``max(4k, k + 32)`` items in float32, so returned scores stay exact; the
top-k can differ from float32's only when an exact top-k item falls outside that shortlist
(measured in ``benchmarks/SERVING.md``). ``score`` and the embeddings are always float32.

Counting baselines exported with ``recsys export`` (``popularity``, ``recent_popularity``,
``transitions``) are served by the same class: their scores (float64) are those of
``recsys.baselines`` on the training side; they have no embeddings.

Per-row requests: ``recommend(..., candidates=[[...], [...]], exclude=[[...], [...]])``
restricts or trims each history's answer separately, ``score(histories, items_per_row)``
re-ranks each history's own candidates, and ``similar_items`` answers item-to-item. Every
answer converts to RecTools' long table (``to_pandas()``: user_id, item_id, score, rank).

Models trained on logs with action types (``data.event_col``) may read the action of
every event (``model.use_actions``): their requests pass ``actions``, names aligned with
the histories; ``next_action`` answers from the next-action (and purchase) heads. Models
that read time gaps (``model.time_gaps``) also need ``timestamps`` (seconds, aligned with
the histories) in every call; ``purchase_propensity`` and ``churn_risk`` answer the
marketing questions (a purchase within k events; no event in the next T days) per history.

Thread safety: the model is read-only after construction and every call runs under
``torch.inference_mode``; the only shared mutable state, the counters behind ``stats()``,
sits behind a lock. One ``Recommender`` can serve many threads.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.errors import ArtifactError
from recsys.inference.artifact import Artifact, load_artifact
from recsys.inference.inputs import (
    EMPTY_POLICIES,
    ITEM_PRECISIONS,
    UNKNOWN_POLICIES,
    EmptyHistoryError,
    EncodedBatch,
    check_actions,
    check_batch,
    check_flag,
    check_ids,
    check_k,
    check_policy,
    check_timestamps,
    encode_batch,
    encode_ids,
    unique_tokens,
)
from recsys.nn.heads import candidate_history, event_tokens, history_summary, item_relations


@dataclass(frozen=True)
class Recommendations:
    """Top-k answers, one row per input history (or query item), best first."""

    items: list[list[str]]  # raw item ids
    scores: list[np.ndarray]  # (k_row,) model scores (float32; float64 for baselines); NaN on fallback rows
    n_unknown: list[int]  # unknown ids ignored in each history
    fallback: list[bool]  # True where an empty history was ranked by training popularity (scores NaN)

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the HTTP service returns this); NaN scores become ``None``."""
        return {
            "items": self.items,
            "scores": [[None if v != v else v for v in s.tolist()] for s in self.scores],
            "n_unknown": self.n_unknown,
            "fallback": self.fallback,
        }

    def to_columns(self, users: Sequence[Any] | None = None, key: str = "user_id") -> dict[str, np.ndarray]:
        """The long table as numpy columns: ``key`` (``users[row]``, default the row number),
        ``item_id``, ``score``, ``rank`` (1 = best) and ``fallback``; one line per returned item."""
        if users is not None and len(users) != len(self.items):
            raise ValueError(f"users has {len(users)} entries for {len(self.items)} rows")
        lengths = np.fromiter((len(r) for r in self.items), dtype=np.int64, count=len(self.items))
        rows = np.repeat(np.arange(len(self.items)), lengths)
        keys = rows if users is None else np.asarray(users if isinstance(users, np.ndarray) else list(users))[rows]
        dtype = np.result_type(*[s.dtype for s in self.scores]) if self.scores else np.float32
        return {
            key: keys,
            "item_id": np.asarray([i for r in self.items for i in r], dtype=object),
            "score": np.concatenate(self.scores).astype(dtype) if self.scores else np.empty(0, dtype),
            "rank": np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1,
            "fallback": np.repeat(np.asarray(self.fallback, dtype=bool), lengths),
        }

    def to_pandas(self, users: Sequence[Any] | None = None, key: str = "user_id") -> Any:
        """RecTools' long ``DataFrame`` (user_id, item_id, score, rank) plus ``fallback``.

        Needs pandas (the ``train`` extra); imported here only, so serving without pandas
        stays possible. For ``similar_items`` pass ``key="target_item_id"`` and the query ids.
        """
        try:
            import pandas as pd  # optional: the one pandas import of recsys.inference (see setup.cfg)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError("to_pandas needs pandas: pip install pandas (or 'recsys-lab[train]'); "
                                      "to_columns gives the same table as numpy arrays", name="pandas") from exc
        return pd.DataFrame(self.to_columns(users, key))


@dataclass(frozen=True)
class NextAction:
    """What the next event of a history will be, for models with an action head."""

    probabilities: dict[str, float]  # action type -> probability, summing to 1
    purchase_probability: float | None  # P(purchase_event within purchase_horizon events), if the model has it
    purchase_event: str | None
    purchase_horizon: int
    next_item: str | None = None  # the candidate the probabilities are conditioned on, if any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Recommender:
    """Top-k recommendation, candidate scoring, item-to-item and embeddings for raw-id histories."""

    #: Scores computed at once in ``recommend`` (B x items); larger products go in chunks.
    score_chunk: int = 1 << 22

    def __init__(
        self,
        artifact: Artifact,
        *,
        unknown: str = "ignore",
        empty: str = "popularity",
        item_precision: str = "float32",
    ) -> None:
        self.unknown = check_policy("unknown", unknown, UNKNOWN_POLICIES)
        self.empty = check_policy("empty", empty, EMPTY_POLICIES)
        self.item_precision = check_policy("item_precision", item_precision, ITEM_PRECISIONS)
        if empty == "popularity" and artifact.item_counts is None:
            raise ArtifactError(
                "this artifact holds no item popularity counts, so empty='popularity' has nothing to "
                "fall back on; load it with empty='raise' or re-export with the training data"
            )
        self.artifact = artifact
        self.vocab = artifact.vocab
        self.max_len = artifact.model.max_len
        self._ids = np.asarray(self.vocab.items, dtype=object)  # token t -> raw id at t - 1
        self._popularity = (
            None if artifact.item_counts is None else torch.from_numpy(artifact.item_counts[1:].astype(np.float32))
        )  # (n,)
        self._baseline = artifact.build_baseline() if artifact.is_baseline else None
        self._encoder, self._heads, self._item_w, self._item_w_lowp = None, None, None, None
        self._mask_token, self._actions = None, None
        if self._baseline is None:
            self._encoder = artifact.build_encoder().requires_grad_(False)
            self._heads = artifact.build_heads()
            self._mask_token = artifact.mask_token  # cloze models read a [MASK] after the history
            self._actions = artifact.actions
            self._item_w = self._encoder.item_weights().detach()  # (n, D) view of rows 1..n
            # Optional half-size copy for the full-catalogue scan (memory-bound at 1M items);
            # its shortlist is rescored in float32, so returned scores are always float32.
            self._item_w_lowp = self._item_w.to(torch.bfloat16) if item_precision == "bfloat16" else None
        self._unit_items: torch.Tensor | None = None  # (n, D) unit rows for similar_items, made on first use
        self._lock = threading.Lock()
        self._stats = {"histories": 0, "unknown_ids": 0, "empty_histories": 0, "unknown_candidates": 0}

    @classmethod
    def load(
        cls, path: str | Path, *, unknown: str = "ignore", empty: str = "popularity", item_precision: str = "float32"
    ) -> Recommender:
        """Load an artifact folder written by ``recsys export`` (never unpickles)."""
        check_policy("unknown", unknown, UNKNOWN_POLICIES)  # fail before reading a large file
        check_policy("empty", empty, EMPTY_POLICIES)
        check_policy("item_precision", item_precision, ITEM_PRECISIONS)
        return cls(load_artifact(path), unknown=unknown, empty=empty, item_precision=item_precision)

    # ---- description -----------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    @property
    def items(self) -> tuple[str, ...]:
        """Raw ids in the row order of ``item_embeddings()``."""
        return self.vocab.items

    @property
    def dim(self) -> int:
        self._need_embeddings("dim")
        return int(self._item_w.shape[1])

    @property
    def is_baseline(self) -> bool:
        """True when a counting baseline (no encoder, no embeddings) is served."""
        return self._baseline is not None

    def stats(self) -> dict[str, int]:
        """Running totals since load: histories served, unknown ids ignored, fallbacks used."""
        with self._lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                self._stats[key] += int(value)

    @property
    def action_types(self) -> tuple[str, ...]:
        """Action names the model knows (empty for item-only models)."""
        return () if self._actions is None else self._actions.names

    @property
    def reads_actions(self) -> bool:
        """True when every request must pass ``actions`` aligned with its histories."""
        return self._actions is not None and self._actions.reads

    def popularity(self, items: Sequence[str]) -> np.ndarray:
        """(len(items),) int64 training-event counts of ``items`` (what fallback rows are ranked
        by); -1 for an unknown id under ``unknown="ignore"``."""
        if self._popularity is None:
            raise ArtifactError("this artifact holds no item popularity counts")
        tokens = self._tokens(check_ids(items, "items"), "items")
        out = np.full(len(tokens), -1, dtype=np.int64)
        known = tokens != 0
        out[known] = self.artifact.item_counts[tokens[known]]
        return out

    def _need_embeddings(self, what: str) -> None:
        if self._baseline is not None:
            raise NotImplementedError(
                f"{what} needs a neural model; this artifact serves the {self.artifact.model.name!r} baseline, "
                "which has no embeddings (recommend and score work)"
            )

    # ---- shared steps ------------------------------------------------------------------
    def _encode(self, histories: object, actions: object = None, timestamps: object = None,
                need_times: bool = False) -> EncodedBatch:
        histories = check_batch(histories)
        spec = self._actions
        if timestamps is None and (need_times or (spec is not None and spec.reads and spec.time_gaps)):
            raise ValueError("this call needs the time of every event: pass timestamps=[[seconds, ...], ...] "
                             "aligned with the histories")
        times = None if timestamps is None else check_timestamps(timestamps, histories)
        action_ids = None
        if self.reads_actions:
            if actions is None:
                raise ValueError(
                    f"this model reads the action type of every event: pass actions=[[...], ...] aligned with "
                    f"the histories, with names from {list(self.action_types)}"
                )
            action_ids = check_actions(actions, histories, self.action_types)
        elif actions is not None:
            raise ValueError("this model does not read action types; leave actions=None")
        batch = encode_batch(self.vocab, histories, self.max_len, self.unknown, self._mask_token, action_ids, times)
        empty = batch.empty
        if self.empty == "raise" and empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise EmptyHistoryError(
                f"histories[{row}] holds no known item ({int(batch.n_unknown[row])} unknown ids); "
                "use empty='popularity' for a popularity fallback"
            )
        self._count(histories=len(empty), unknown_ids=batch.n_unknown.sum(), empty_histories=empty.sum())
        return batch

    def _tokens(self, ids: Sequence[str], where: str) -> np.ndarray:
        """Token ids of ``ids`` in place, 0 for unknown ones (or ``UnknownItemError`` under "raise")."""
        tokens = self.vocab.encode(ids, unknown=0)
        if self.unknown == "raise" and not (tokens != 0).all():
            encode_ids(self.vocab, ids, "raise", where)  # raises UnknownItemError naming the id
        return tokens

    def _user_states(self, batch: EncodedBatch) -> torch.Tensor:
        """(B, D) state after each history's newest item (or at the [MASK] after it, for
        cloze models). Call under inference_mode."""
        return self._encoder.last_state(torch.from_numpy(batch.inputs), self._event_input(batch))  # (B, D)

    def _event_input(self, batch: EncodedBatch) -> torch.Tensor | None:
        """What the encoder reads beside the items: action ids, or (action, gap bucket, item
        relation) tokens for models trained with ``time_gaps`` / ``item_relations``."""
        if batch.events is None:
            return None
        events, spec = torch.from_numpy(batch.events), self._actions
        if not (spec.time_gaps or spec.item_relations):
            return events
        inputs = torch.from_numpy(batch.inputs)
        relations = item_relations(inputs, events, *spec.relation_ids) if spec.item_relations else None
        gaps = torch.from_numpy(batch.gaps) if spec.time_gaps else None
        return event_tokens(events, len(spec.names), gaps, relations)

    def _dense_scores(self, batch: EncodedBatch, states: torch.Tensor | None) -> torch.Tensor | None:
        """(B, n) scores of models that cannot be scored as ``states @ items.T``: the mixture
        head's log-probabilities and the baselines' counts. None for plain encoders."""
        if self._baseline is not None:
            return self._baseline.score(torch.from_numpy(batch.inputs))[:, 1:]  # (B, n) float64
        if self._encoder.transitions is not None and states is not None:
            return self._mixture_scores(batch, states, None)  # (B, n)
        return None

    # ---- public API --------------------------------------------------------------------
    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude_seen: bool = False,
        candidates: Sequence[str] | Sequence[Sequence[str]] | None = None,
        actions: Sequence[Sequence[str]] | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
        timestamps: Sequence[Sequence[float]] | None = None,
    ) -> Recommendations:
        """Top ``k`` items for each history (a list of lists of raw ids, oldest first).

        ``candidates`` restricts the answer: one list of raw ids shared by every history, or
        one list per history (``[[...], [...]]``, as many as histories). ``exclude`` (one
        list per history) removes those items from that history's answer, and
        ``exclude_seen`` every item the history holds. ``k`` above the number of items left
        is clamped, so rows can be shorter than ``k``. ``actions`` (action names aligned
        with ``histories``) is required by models that read action types and refused by
        the others. The scores of a row do not depend on the other rows, on
        ``candidates`` or on ``exclude``: they only choose which items are returned.
        """
        k = check_k(k)
        exclude_seen = check_flag("exclude_seen", exclude_seen)
        batch = self._encode(histories, actions, timestamps)
        B, empty = len(batch.lengths), batch.empty
        cand, allowed = self._candidate_columns(candidates, B)
        removed = self._excluded_tokens(exclude, B)
        if exclude_seen:
            removed = batch.seen if removed is None else [np.concatenate([a, b]) for a, b in zip(batch.seen, removed)]
        n_columns = self.n_items if cand is None else len(cand)
        kk = min(k, n_columns)
        with torch.inference_mode():
            if kk == 0:
                values, columns = np.empty((B, 0), np.float32), np.empty((B, 0), np.int64)
            else:
                pick = None if cand is None else torch.from_numpy(cand - 1)
                states = None if empty.all() or self._baseline is not None else self._user_states(batch)  # (B, D)
                pop = None
                if empty.any():
                    pop = self._popularity if pick is None else self._popularity[pick]
                blocked = None if removed is None else self._blocked_columns(removed, cand)
                allow = None if allowed is None else torch.from_numpy(allowed)
                dense = self._dense_scores(batch, states)  # a baseline scores even all-empty batches
                if dense is not None:
                    dense = dense if pick is None else dense[:, pick]  # (B, C)
                    top_values, top_columns = self._scan(dense, None, torch.from_numpy(empty), pop, blocked, kk, allow)
                else:
                    weights = self._item_w if pick is None else self._item_w[pick]  # (C, D)
                    lowp = None
                    if self._item_w_lowp is not None and states is not None:
                        lowp = self._item_w_lowp if pick is None else self._item_w_lowp[pick]
                    top_values, top_columns = self._top_columns(
                        states, weights, torch.from_numpy(empty), pop, blocked, kk, lowp, allow
                    )
                values, columns = top_values.numpy(), top_columns.numpy()
        tokens = columns + 1 if cand is None else cand[columns]  # (B, kk)
        items, out_scores = [], []
        for row in range(B):
            keep = values[row] > float("-inf")  # excluded items sort last; drop them
            n = int(keep.sum())
            items.append(self._ids[tokens[row, :n] - 1].tolist())
            # a fallback row was ranked by training counts: the model gave it no scores
            out_scores.append(np.full(n, np.nan, values.dtype) if empty[row] else values[row, :n].copy())
        return Recommendations(items, out_scores, batch.n_unknown.tolist(), empty.tolist())

    def _candidate_columns(self, candidates: object, B: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Scored columns (token ids, None = the whole catalogue) and, for per-row candidates,
        the (B, C) mask of each row's own candidates among them (their union)."""
        if candidates is None:
            return None, None
        per_row = isinstance(candidates, (list, tuple)) and len(candidates) > 0 and all(
            not isinstance(c, str) for c in candidates
        )
        if not per_row:
            cand, missing = unique_tokens(self.vocab, check_ids(candidates, "candidates"), self.unknown, "candidates")
            self._count(unknown_candidates=missing)
            return cand, None
        if len(candidates) != B:
            raise ValueError(f"candidates has {len(candidates)} rows for {B} histories (one list per history)")
        rows = []
        for i, row in enumerate(candidates):
            tokens, missing = encode_ids(self.vocab, check_ids(row, f"candidates[{i}]"), self.unknown, f"candidates[{i}]")
            self._count(unknown_candidates=missing)
            rows.append(tokens)
        cand = np.unique(np.concatenate(rows)) if rows else np.empty(0, np.int64)
        allowed = np.zeros((B, len(cand)), dtype=bool)
        for i, tokens in enumerate(rows):
            allowed[i, np.searchsorted(cand, tokens)] = True
        return cand, allowed

    def _excluded_tokens(self, exclude: object, B: int) -> list[np.ndarray] | None:
        """Token ids to remove from each row (unknown ids are ignored: nothing to remove)."""
        if exclude is None:
            return None
        if isinstance(exclude, (str, bytes)) or not isinstance(exclude, (list, tuple)):
            raise TypeError(f"exclude must be one list of item ids per history, got {type(exclude).__name__}")
        if len(exclude) != B:
            raise ValueError(f"exclude has {len(exclude)} rows for {B} histories (one list per history)")
        out = []
        for i, row in enumerate(exclude):
            tokens = self.vocab.encode(check_ids(row, f"exclude[{i}]"), unknown=0)
            out.append(tokens[tokens != 0])
        return out

    def _blocked_columns(self, removed: list[np.ndarray], cand: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of every removed token among the scored columns."""
        rows = np.repeat(np.arange(len(removed)), [len(s) for s in removed])
        tokens = np.concatenate(removed) if removed else np.empty(0, np.int64)
        if cand is None:
            cols = tokens - 1
        else:  # column of each removed token among the candidates, if it is one
            order = np.argsort(cand)
            pos = np.searchsorted(cand[order], tokens).clip(max=max(len(cand) - 1, 0))
            hit = cand[order][pos] == tokens if len(cand) else np.zeros(len(tokens), bool)
            rows, cols = rows[hit], order[pos[hit]]
        return torch.from_numpy(rows), torch.from_numpy(cols)

    def _top_columns(
        self,
        states: torch.Tensor | None,
        weights: torch.Tensor,
        empty: torch.Tensor,
        pop: torch.Tensor | None,
        blocked: tuple[torch.Tensor, torch.Tensor] | None,
        k: int,
        lowp: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` (scores, columns) per row, best first; see ``_scan``.

        With a bfloat16 item matrix ``lowp``, the scan keeps a shortlist of
        ``max(4k, k + 32)`` columns, which are then rescored exactly in float32: returned
        scores are float32 products, and the answer differs from the float32 scan only if
        an exact top-k item falls outside the bfloat16 shortlist (see benchmarks/SERVING.md).
        """
        if lowp is None or states is None:
            return self._scan(states, weights, empty, pop, blocked, k, allowed)
        shortlist = min(weights.shape[0], max(4 * k, k + 32))
        values, columns = self._scan(states.to(lowp.dtype), lowp, empty, pop, blocked, shortlist, allowed)
        exact = torch.einsum("bd,bsd->bs", states, weights[columns])  # (B, S) float32
        if pop is not None:
            exact[empty] = pop[columns[empty]]
        exact[values == float("-inf")] = float("-inf")  # removed and non-candidate items stay out
        top = torch.topk(exact, k)
        return top.values, columns.gather(1, top.indices)

    def _mixture_scores(self, batch: EncodedBatch, states: torch.Tensor, cand: np.ndarray | None) -> torch.Tensor:
        """(B, C) log-probabilities of a transition-head model over the scored columns
        (``recsys.nn.encoder.SASRecEncoder.score``, without its PAD column)."""
        scores = self._encoder.score(states, torch.from_numpy(batch.inputs))[:, 1:]  # (B, n)
        return scores if cand is None else scores[:, torch.from_numpy(cand - 1)]

    def _scan(
        self,
        states: torch.Tensor | None,
        weights: torch.Tensor | None,
        empty: torch.Tensor,
        pop: torch.Tensor | None,
        blocked: tuple[torch.Tensor, torch.Tensor] | None,
        k: int,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` (scores, columns) per row over the columns of ``weights``, best first.

        Scores are ``states @ weights.T`` (the product of ``nn.heads.score_items``, minus
        its PAD column), or ``states`` themselves, already (B, C) scores, when ``weights``
        is None (they are then overwritten in place: pass a tensor nobody else reads);
        popularity on empty rows, ``-inf`` on ``blocked`` (row, column) pairs and wherever
        ``allowed`` (B, C) is False. Products over large catalogues go ``score_chunk``
        scores at a time: a running top-k never holds the (B, C) matrix (1 GB for 256 users
        x 1M items), and a chunk stays in cache.
        """
        if weights is None:
            weights, states, given = states.T, None, states  # only shapes and dtype are read from weights
        else:
            given = None
        B, C = empty.shape[0], weights.shape[0]
        # given scores are already whole (and the caller's own copy): one pass, edited in place
        step = C if given is not None else max(k, self.score_chunk // max(B, 1))
        parts = []
        for lo in range(0, C, step):
            hi = min(C, lo + step)
            if given is not None:
                scores = given  # (B, C), a fresh tensor of the caller's
            elif states is None:
                scores = torch.empty(B, hi - lo, dtype=weights.dtype)
            else:
                scores = states @ weights[lo:hi].T  # (B, c)
            if pop is not None:
                scores[empty] = pop[lo:hi].to(scores.dtype)
            if blocked is not None:
                rows, cols = blocked
                inside = (cols >= lo) & (cols < hi)
                scores[rows[inside], cols[inside] - lo] = float("-inf")
            if allowed is not None:
                scores.masked_fill_(~allowed[:, lo:hi], float("-inf"))
            top = torch.topk(scores, min(k, hi - lo))  # sorted, best first
            parts.append((top.values, top.indices + lo))
        if len(parts) == 1:
            return parts[0]
        values, columns = torch.cat([v for v, _ in parts], 1), torch.cat([c for _, c in parts], 1)
        top = torch.topk(values, k)
        return top.values, columns.gather(1, top.indices)

    def score(
        self,
        histories: Sequence[str] | Sequence[Sequence[str]],
        items: Sequence[str] | Sequence[Sequence[str]],
        actions: Sequence[str] | Sequence[Sequence[str]] | None = None,
        timestamps: Sequence[float] | Sequence[Sequence[float]] | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Scores of candidate ``items`` for re-ranking, the same numbers ``recommend`` ranks by.

        One history (a flat list of raw ids, ``[]`` included) and its items: a
        (len(items),) array. A batch (a list of histories) and one item list per history,
        or one list shared by all: a list of arrays, one per history. Float32 (float64 for
        baselines). An unknown item scores ``-inf`` under ``unknown="ignore"``; every item
        of an empty history scores NaN under ``empty="popularity"`` (no model score exists;
        ``popularity(items)`` gives the training counts).
        """
        single = isinstance(histories, (str, bytes)) or (
            isinstance(histories, (list, tuple, np.ndarray)) and all(isinstance(x, str) for x in histories)
        )
        if single:
            check_ids(histories, "history")
            per_row = [check_ids(items, "items")]
            batch = self._encode([histories], None if actions is None else [actions],
                                 None if timestamps is None else [timestamps])
        else:
            batch = self._encode(histories, actions, timestamps)
            B = len(batch.lengths)
            shared = isinstance(items, np.ndarray) or (
                isinstance(items, (list, tuple)) and all(isinstance(x, str) for x in items)
            )
            if shared:
                per_row = [check_ids(items, "items")] * B
            else:
                if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)) or len(items) != B:
                    raise TypeError(
                        f"items must be one list of item ids per history ({B}), or one list shared by all"
                    )
                per_row = [check_ids(row, f"items[{i}]") for i, row in enumerate(items)]
        tokens = [self._tokens(row, "items") for row in per_row]
        self._count(unknown_candidates=sum(int((t == 0).sum()) for t in tokens))
        rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
        flat = np.concatenate(tokens) if tokens else np.empty(0, np.int64)
        known = flat != 0
        dtype = np.float64 if self._baseline is not None else np.float32
        values = np.full(len(flat), float("-inf"), dtype=dtype)
        live = known & ~batch.empty[rows]
        values[known & batch.empty[rows]] = np.nan
        if live.any():
            with torch.inference_mode():
                states = None if self._baseline is not None else self._user_states(batch)  # (B, D)
                dense = self._dense_scores(batch, states)
                r, t = torch.from_numpy(rows[live]), torch.from_numpy(flat[live] - 1)
                if dense is not None:
                    got = dense[r, t]
                else:
                    got = (self._item_w[t] * states[r]).sum(dim=1)  # (P,) one dot product per pair
                values[live] = got.numpy()
        out = np.split(values, np.cumsum([len(t) for t in tokens])[:-1])
        return out[0] if single else out

    def similar_items(self, item_ids: Sequence[str], k: int = 10, candidates: Sequence[str] | None = None) -> Recommendations:
        """The ``k`` items most similar to each of ``item_ids``: cosine similarity of the
        model's output item embeddings (the rows of ``item_embeddings()``, which score items
        in ``recommend``), the query item itself left out. One row per query item; an
        unknown id gives an empty row (counted in ``n_unknown``) or raises under
        ``unknown="raise"``. ``candidates`` (raw ids) restricts the answers.

        This is "items like this one", symmetric and history-free. "What comes next after
        this item" is ``recommend([[item_id]])``, the model's own next-item answer (for a
        transition-head model it includes the transition counts, which cosine ignores).
        Neural models only: a baseline has no embeddings.
        """
        self._need_embeddings("similar_items")
        k = check_k(k)
        tokens = self._tokens(check_ids(item_ids, "item_ids"), "item_ids")
        cand = None
        if candidates is not None:
            cand, missing = unique_tokens(self.vocab, check_ids(candidates, "candidates"), self.unknown, "candidates")
            self._count(unknown_candidates=missing)
        unknown = tokens == 0
        with torch.inference_mode():
            if self._unit_items is None:  # a benign race: two threads may both build the same table
                self._unit_items = torch.nn.functional.normalize(self._item_w, dim=1)  # (n, D)
            unit = self._unit_items
            weights = unit if cand is None else unit[torch.from_numpy(cand - 1)]
            kk = min(k, weights.shape[0])
            queries = unit[torch.from_numpy(np.where(unknown, 1, tokens) - 1)]  # (Q, D); unknown rows dropped below
            removed = [np.asarray([t]) if t else np.empty(0, np.int64) for t in tokens]
            blocked = self._blocked_columns(removed, cand)
            no_rows = torch.zeros(len(tokens), dtype=torch.bool)
            if kk == 0 or len(tokens) == 0:
                values, columns = np.empty((len(tokens), 0), np.float32), np.empty((len(tokens), 0), np.int64)
            else:
                top_values, top_columns = self._scan(queries, weights, no_rows, None, blocked, kk)
                values, columns = top_values.numpy(), top_columns.numpy()
        found = columns + 1 if cand is None else cand[columns]
        items, scores = [], []
        for row in range(len(tokens)):
            n = 0 if unknown[row] else int((values[row] > float("-inf")).sum())
            items.append(self._ids[found[row, :n] - 1].tolist())
            scores.append(values[row, :n].copy())
        return Recommendations(items, scores, unknown.astype(int).tolist(), [False] * len(tokens))

    def user_embeddings(
        self, histories: Sequence[Sequence[str]], actions: Sequence[Sequence[str]] | None = None,
        timestamps: Sequence[Sequence[float]] | None = None,
    ) -> np.ndarray:
        """(B, D) float32 user states; ``user_embeddings(h) @ item_embeddings().T`` are the scores
        (of a model with a transition head, ``model.transition_lags`` > 0, only its softmax
        component's logits: ``recommend`` and ``score`` serve the whole mixture).

        An empty history gives a zero vector under ``empty="popularity"`` (no personal
        signal: every item scores 0) and raises under ``empty="raise"``.
        """
        self._need_embeddings("user_embeddings")
        batch = self._encode(histories, actions, timestamps)
        with torch.inference_mode():
            states = self._user_states(batch)  # (B, D)
            states[torch.from_numpy(batch.empty)] = 0.0
            return states.numpy().copy()

    def item_embeddings(self) -> np.ndarray:
        """(n_items, D) float32 output embeddings; row i is item ``self.items[i]``. Read-only view."""
        self._need_embeddings("item_embeddings")
        view = self._item_w.numpy()
        view.flags.writeable = False
        return view

    def _need_heads(self, what: str) -> None:
        if self._heads is None:
            raise NotImplementedError(
                f"{what} needs a model with action heads (trained on a log with data.event_col); "
                f"this artifact's {self.artifact.model.name!r} model predicts the next item only"
            )

    def next_action(
        self, history: Sequence[str], actions: Sequence[str] | None = None, timestamps: Sequence[float] | None = None,
        next_item: str | None = None, at: float | None = None,
    ) -> NextAction:
        """Action type of the history's next event (and the purchase probability, if the
        model has a purchase head). Needs a model trained with ``data.event_col``.

        ``timestamps`` (seconds, aligned with ``history``) are needed by models that read
        time gaps. With ``next_item`` and ``at`` (the next event's time) a model with a
        candidate head (``model.action_candidate``) answers "the user's next event is this
        item, now: view, cart, fav or buy?"; an unknown ``next_item`` is ignored (or raises,
        under ``unknown="raise"``) and the answer is the unconditioned one (``next_item`` None).
        A history with no known item raises ``EmptyHistoryError`` whatever ``empty`` says:
        there is no popularity fallback for actions.
        """
        self._need_heads("next_action")
        spec = self._actions
        candidate = None
        if next_item is not None:
            if not spec.candidate:
                raise NotImplementedError("next_item needs a model with a candidate head (model.action_candidate)")
            if at is None or timestamps is None:
                raise ValueError("next_item needs the history's timestamps and at= (the time of the next event)")
            token = int(self._tokens([next_item], "next_item")[0])
            candidate = token if token != 0 else None
        batch = self._encode([check_ids(history, "history")], None if actions is None else [actions],
                             None if timestamps is None else [timestamps])
        if batch.empty[0]:
            raise EmptyHistoryError("next_action needs at least one known item in the history")
        with torch.inference_mode():
            state = self._user_states(batch)  # (1, D)
            logits, purchase = self._heads(state, self._summary(batch))  # (1, E), (1,) | None
            if candidate is not None:
                logits = self._candidate_logits(batch, state, np.array([candidate]),
                                                np.array([float(at) - batch.last_time[0]]))
            probs = logits.softmax(dim=-1)[0].tolist()
        return NextAction(
            probabilities=dict(zip(spec.names, probs)),
            purchase_probability=None if purchase is None else float(purchase.sigmoid()[0]),
            purchase_event=spec.purchase_event if purchase is not None else None,
            purchase_horizon=spec.purchase_horizon if purchase is not None else 0,
            next_item=None if candidate is None else next_item,
        )

    def _summary(self, batch: EncodedBatch) -> torch.Tensor | None:
        """(B, S) the heads' wide features of each history (``model.history_summary``), or None."""
        spec = self._actions
        if not spec.history_summary:
            return None
        return history_summary(torch.from_numpy(batch.inputs), torch.from_numpy(batch.events),
                               torch.from_numpy(batch.gaps), len(spec.names), *spec.relation_ids)[:, -1]

    def _candidate_logits(self, batch: EncodedBatch, state: torch.Tensor, tokens: np.ndarray,
                          gaps: np.ndarray) -> torch.Tensor:
        """(B, E) next-action logits given each row's next item (token) and gap (seconds)."""
        items = torch.from_numpy(tokens.astype(np.int64))
        history = candidate_history(torch.from_numpy(batch.inputs), torch.from_numpy(batch.events), items,
                                    len(self._actions.names))
        item = self._encoder.item_weights()[(items - 1).clamp(min=0)]
        return self._heads.candidate_logits(state, item, history, torch.from_numpy(gaps.astype(np.float32)),
                                            self._summary(batch))

    def _known_states(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """States (and summaries) of the histories with a known item, and which rows those are."""
        known = torch.from_numpy(~batch.empty)
        summary = self._summary(batch)
        return self._user_states(batch)[known], None if summary is None else summary[known], known.numpy()

    def purchase_propensity(
        self, histories: Sequence[Sequence[str]], actions: Sequence[Sequence[str]] | None = None,
        timestamps: Sequence[Sequence[float]] | None = None,
    ) -> np.ndarray:
        """(B,) P(a ``purchase_event`` among each history's next ``purchase_horizon`` events)
        from the purchase head; ``nan`` for a history with no known item (under
        ``empty="raise"`` such a history raises ``EmptyHistoryError``)."""
        self._need_heads("purchase_propensity")
        if self._heads.purchase is None:
            raise NotImplementedError("this model has no purchase head (train with train.purchase_horizon > 0)")
        batch = self._encode(histories, actions, timestamps)
        out = np.full(len(batch.lengths), np.nan)
        with torch.inference_mode():
            state, summary, known = self._known_states(batch)
            if known.any():
                out[known] = self._heads(state, summary)[1].sigmoid().double().numpy()
        return out

    def churn_risk(
        self, histories: Sequence[Sequence[str]], actions: Sequence[Sequence[str]] | None = None,
        timestamps: Sequence[Sequence[float]] | None = None, now: float | Sequence[float] | None = None,
    ) -> np.ndarray:
        """(B,) P(no event in the ``churn_days`` days after ``now``), given the history and
        that it has had no event since its newest one. ``now``: one time for every history
        or one per history (seconds); None: each history's newest timestamp. ``nan`` for a
        history with no known item (``empty="raise"``: ``EmptyHistoryError``)."""
        self._need_heads("churn_risk")
        if self._heads.churn is None:
            raise NotImplementedError("this model has no churn head (train with train.churn_days > 0)")
        batch = self._encode(histories, actions, timestamps, need_times=True)
        at = batch.last_time if now is None else np.broadcast_to(np.asarray(now, dtype=np.float64),
                                                                  batch.last_time.shape)
        elapsed = at - batch.last_time
        if (elapsed < 0).any():
            raise ValueError("now is before a history's newest event")
        out = np.full(len(batch.lengths), np.nan)
        with torch.inference_mode():
            state, summary, known = self._known_states(batch)
            if known.any():
                logit = self._heads.churn_logit(state, torch.from_numpy(elapsed[known].astype(np.float32)), summary)
                out[known] = logit.sigmoid().double().numpy()
        return out

    def __repr__(self) -> str:
        m = self.artifact.model
        if self._baseline is not None:
            return f"Recommender({m.name} baseline, n_items={self.n_items}, unknown={self.unknown!r}, empty={self.empty!r})"
        return (
            f"Recommender({m.name}, n_items={self.n_items}, dim={m.dim}, max_len={m.max_len}, "
            f"unknown={self.unknown!r}, empty={self.empty!r}, item_precision={self.item_precision!r})"
        )


def load(
    path: str | Path, *, unknown: str = "ignore", empty: str = "popularity", item_precision: str = "float32"
) -> Recommender:
    """``Recommender.load(path, ...)``."""
    return Recommender.load(path, unknown=unknown, empty=empty, item_precision=item_precision)
