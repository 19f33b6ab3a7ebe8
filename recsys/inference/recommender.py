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
  popularity (its scores are the items' training counts, and ``Recommendations.fallback``
  flags the row); ``"raise"`` raises ``EmptyHistoryError``. Loading an artifact exported
  without counts with ``empty="popularity"`` is an ``ArtifactError``.

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

Models trained on logs with action types (``data.event_col``) may read the action of
every event (``model.use_actions``): their requests pass ``actions``, names aligned with
the histories; ``next_action`` answers from the next-action (and purchase) heads.

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
    encode_batch,
    encode_ids,
    unique_tokens,
)


@dataclass(frozen=True)
class Recommendations:
    """Top-k answers, one row per input history, best first."""

    items: list[list[str]]  # raw item ids
    scores: list[np.ndarray]  # (k_row,) float32 model scores; training counts where fallback
    n_unknown: list[int]  # unknown ids ignored in each history
    fallback: list[bool]  # True where an empty history was answered by popularity

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the HTTP service returns this)."""
        return {
            "items": self.items,
            "scores": [s.tolist() for s in self.scores],
            "n_unknown": self.n_unknown,
            "fallback": self.fallback,
        }


@dataclass(frozen=True)
class NextAction:
    """What the next event of a history will be, for models with an action head."""

    probabilities: dict[str, float]  # action type -> probability, summing to 1
    purchase_probability: float | None  # P(purchase_event within purchase_horizon events), if the model has it
    purchase_event: str | None
    purchase_horizon: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Recommender:
    """Top-k recommendation, candidate scoring and embeddings for raw-id histories."""

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
        self._encoder = artifact.build_encoder().requires_grad_(False)
        self._heads = artifact.build_heads()
        self._mask_token = artifact.mask_token  # cloze models read a [MASK] after the history
        self._actions = artifact.actions
        self._item_w = self._encoder.item_weights().detach()  # (n, D) view of rows 1..n
        # Optional half-size copy for the full-catalogue scan (memory-bound at 1M items);
        # its shortlist is rescored in float32, so returned scores are always float32.
        self._item_w_lowp = self._item_w.to(torch.bfloat16) if item_precision == "bfloat16" else None
        self._ids = np.asarray(self.vocab.items, dtype=object)  # token t -> raw id at t - 1
        self._popularity = (
            None if artifact.item_counts is None else torch.from_numpy(artifact.item_counts[1:].astype(np.float32))
        )  # (n,)
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
        return int(self._item_w.shape[1])

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

    # ---- shared steps ------------------------------------------------------------------
    def _encode(self, histories: object, actions: object = None) -> EncodedBatch:
        histories = check_batch(histories)
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
        batch = encode_batch(self.vocab, histories, self.max_len, self.unknown, self._mask_token, action_ids)
        empty = batch.empty
        if self.empty == "raise" and empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise EmptyHistoryError(
                f"histories[{row}] holds no known item ({int(batch.n_unknown[row])} unknown ids); "
                "use empty='popularity' for a popularity fallback"
            )
        self._count(histories=len(empty), unknown_ids=batch.n_unknown.sum(), empty_histories=empty.sum())
        return batch

    def _user_states(self, batch: EncodedBatch) -> torch.Tensor:
        """(B, D) state after each history's newest item (or at the [MASK] after it, for
        cloze models). Call under inference_mode."""
        events = None if batch.events is None else torch.from_numpy(batch.events)
        return self._encoder.last_state(torch.from_numpy(batch.inputs), events)  # (B, D)

    # ---- public API --------------------------------------------------------------------
    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude_seen: bool = False,
        candidates: Sequence[str] | None = None,
        actions: Sequence[Sequence[str]] | None = None,
    ) -> Recommendations:
        """Top ``k`` items for each history (a list of lists of raw ids, oldest first).

        ``candidates`` (raw ids, shared by all histories) restricts the answer to those
        items; ``exclude_seen`` drops every item the history holds. ``k`` above the number
        of items left is clamped, so rows can be shorter than ``k``. ``actions`` (action
        names aligned with ``histories``) is required by models that read action types
        and refused by the others.
        """
        k = check_k(k)
        exclude_seen = check_flag("exclude_seen", exclude_seen)
        cand = None
        if candidates is not None:
            cand, missing = unique_tokens(self.vocab, check_ids(candidates, "candidates"), self.unknown, "candidates")
            self._count(unknown_candidates=missing)
        batch = self._encode(histories, actions)
        B, empty = len(batch.lengths), batch.empty
        with torch.inference_mode():
            weights = self._item_w if cand is None else self._item_w[torch.from_numpy(cand - 1)]  # (C, D)
            kk = min(k, weights.shape[0])
            if kk == 0:
                values, columns = np.empty((B, 0), np.float32), np.empty((B, 0), np.int64)
            else:
                states = None if empty.all() else self._user_states(batch)  # (B, D)
                pop = None
                if empty.any():
                    pop = self._popularity if cand is None else self._popularity[torch.from_numpy(cand - 1)]
                seen = self._seen_columns(batch, cand) if exclude_seen else None
                lowp = None
                if self._item_w_lowp is not None and states is not None:
                    lowp = self._item_w_lowp if cand is None else self._item_w_lowp[torch.from_numpy(cand - 1)]
                if self._encoder.transitions is not None and states is not None:
                    # a mixture head: its log-probabilities need the whole catalogue's softmax
                    dense = self._mixture_scores(batch, states, cand)  # (B, C)
                    top_values, top_columns = self._scan(dense, None, torch.from_numpy(empty), pop, seen, kk)
                else:
                    top_values, top_columns = self._top_columns(
                        states, weights, torch.from_numpy(empty), pop, seen, kk, lowp
                    )
                values, columns = top_values.numpy(), top_columns.numpy()
        tokens = columns + 1 if cand is None else cand[columns]  # (B, kk)
        items, out_scores = [], []
        for row in range(B):
            keep = values[row] > float("-inf")  # excluded items sort last; drop them
            n = int(keep.sum())
            items.append(self._ids[tokens[row, :n] - 1].tolist())
            out_scores.append(values[row, :n].copy())
        return Recommendations(items, out_scores, batch.n_unknown.tolist(), empty.tolist())

    def _seen_columns(self, batch: EncodedBatch, cand: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of every history item among the scored columns."""
        rows = np.repeat(np.arange(len(batch.seen)), [len(s) for s in batch.seen])
        seen = np.concatenate(batch.seen) if batch.seen else np.empty(0, np.int64)
        if cand is None:
            cols = seen - 1
        else:  # column of each seen token among the candidates, if it is one
            order = np.argsort(cand)
            pos = np.searchsorted(cand[order], seen).clip(max=len(cand) - 1)
            hit = cand[order][pos] == seen
            rows, cols = rows[hit], order[pos[hit]]
        return torch.from_numpy(rows), torch.from_numpy(cols)

    def _top_columns(
        self,
        states: torch.Tensor | None,
        weights: torch.Tensor,
        empty: torch.Tensor,
        pop: torch.Tensor | None,
        seen: tuple[torch.Tensor, torch.Tensor] | None,
        k: int,
        lowp: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` (scores, columns) per row, best first; see ``_scan``.

        With a bfloat16 item matrix ``lowp``, the scan keeps a shortlist of
        ``max(4k, k + 32)`` columns, which are then rescored exactly in float32: returned
        scores are float32 products, and the answer differs from the float32 scan only if
        an exact top-k item falls outside the bfloat16 shortlist (see benchmarks/SERVING.md).
        """
        if lowp is None or states is None:
            return self._scan(states, weights, empty, pop, seen, k)
        shortlist = min(weights.shape[0], max(4 * k, k + 32))
        values, columns = self._scan(states.to(lowp.dtype), lowp, empty, pop, seen, shortlist)
        exact = torch.einsum("bd,bsd->bs", states, weights[columns])  # (B, S) float32
        if pop is not None:
            exact[empty] = pop[columns[empty]]
        exact[values == float("-inf")] = float("-inf")  # seen items stay excluded
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
        seen: tuple[torch.Tensor, torch.Tensor] | None,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` (scores, columns) per row over the columns of ``weights``, best first.

        Scores are ``states @ weights.T`` (the product of ``nn.heads.score_items``, minus
        its PAD column), or ``states`` themselves, already (B, C) scores, when ``weights``
        is None; popularity on empty rows, ``-inf`` on seen items. Large batches
        over large catalogues go ``score_chunk`` scores at a time: a running top-k never
        holds the (B, C) matrix (1 GB for 256 users x 1M items), and a chunk stays in cache.
        """
        if weights is None:
            weights, states, given = states.T, None, states  # only shapes and dtype are read from weights
        else:
            given = None
        B, C = empty.shape[0], weights.shape[0]
        step = max(k, self.score_chunk // max(B, 1))
        parts = []
        for lo in range(0, C, step):
            hi = min(C, lo + step)
            if given is not None:
                scores = given[:, lo:hi].clone()
            elif states is None:
                scores = torch.empty(B, hi - lo, dtype=weights.dtype)
            else:
                scores = states @ weights[lo:hi].T  # (B, c)
            if pop is not None:
                scores[empty] = pop[lo:hi]
            if seen is not None:
                rows, cols = seen
                inside = (cols >= lo) & (cols < hi)
                scores[rows[inside], cols[inside] - lo] = float("-inf")
            top = torch.topk(scores, min(k, hi - lo))  # sorted, best first
            parts.append((top.values, top.indices + lo))
        if len(parts) == 1:
            return parts[0]
        values, columns = torch.cat([v for v, _ in parts], 1), torch.cat([c for _, c in parts], 1)
        top = torch.topk(values, k)
        return top.values, columns.gather(1, top.indices)

    def score(
        self, history: Sequence[str], items: Sequence[str], actions: Sequence[str] | None = None
    ) -> np.ndarray:
        """Scores (len(items),) float32 of ``items`` for one history, for re-ranking.

        An unknown item scores ``-inf`` under ``unknown="ignore"``. An empty history scores
        items by training counts under ``empty="popularity"``.
        """
        batch = self._encode([check_ids(history, "history")], None if actions is None else [actions])
        tokens = self.vocab.encode(check_ids(items, "items"), unknown=0)
        known = tokens != 0
        if self.unknown == "raise" and not known.all():
            encode_ids(self.vocab, items, "raise", "items")  # raises UnknownItemError naming the id
        self._count(unknown_candidates=(~known).sum())
        out = np.full(len(tokens), float("-inf"), dtype=np.float32)
        if not known.any():
            return out
        index = torch.from_numpy(tokens[known] - 1)
        with torch.inference_mode():
            if batch.empty[0]:
                values = self._popularity[index]
            elif self._encoder.transitions is not None:
                values = self._mixture_scores(batch, self._user_states(batch), None)[0, index]  # (C,)
            else:
                values = self._item_w[index] @ self._user_states(batch)[0]  # (C,)
        out[known] = values.numpy()
        return out

    def user_embeddings(
        self, histories: Sequence[Sequence[str]], actions: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """(B, D) float32 user states; ``user_embeddings(h) @ item_embeddings().T`` are the scores
        (of a model with a transition head, ``model.transition_lags`` > 0, only its softmax
        component's logits: ``recommend`` and ``score`` serve the whole mixture).

        An empty history gives a zero vector under ``empty="popularity"`` (no personal
        signal: every item scores 0) and raises under ``empty="raise"``.
        """
        batch = self._encode(histories, actions)
        with torch.inference_mode():
            states = self._user_states(batch)  # (B, D)
            states[torch.from_numpy(batch.empty)] = 0.0
            return states.numpy().copy()

    def item_embeddings(self) -> np.ndarray:
        """(n_items, D) float32 output embeddings; row i is item ``self.items[i]``. Read-only view."""
        view = self._item_w.numpy()
        view.flags.writeable = False
        return view

    def next_action(self, history: Sequence[str], actions: Sequence[str] | None = None) -> NextAction:
        """Action type of the history's next event (and the purchase probability, if the
        model has a purchase head). Needs a model trained with ``data.event_col``.

        A history with no known item raises ``EmptyHistoryError`` whatever ``empty`` says:
        there is no popularity fallback for actions.
        """
        if self._heads is None:
            raise NotImplementedError(
                "next_action needs a model with an action head (trained on a log with data.event_col); "
                f"this artifact's {self.artifact.model.name!r} model predicts the next item only"
            )
        batch = self._encode([check_ids(history, "history")], None if actions is None else [actions])
        if batch.empty[0]:
            raise EmptyHistoryError("next_action needs at least one known item in the history")
        with torch.inference_mode():
            logits, purchase = self._heads(self._user_states(batch))  # (1, E), (1,) | None
            probs = logits.softmax(dim=-1)[0].tolist()
        spec = self._actions
        return NextAction(
            probabilities=dict(zip(spec.names, probs)),
            purchase_probability=None if purchase is None else float(purchase.sigmoid()[0]),
            purchase_event=spec.purchase_event if purchase is not None else None,
            purchase_horizon=spec.purchase_horizon if purchase is not None else 0,
        )

    def __repr__(self) -> str:
        m = self.artifact.model
        return (
            f"Recommender({m.name}, n_items={self.n_items}, dim={m.dim}, max_len={m.max_len}, "
            f"unknown={self.unknown!r}, empty={self.empty!r}, item_precision={self.item_precision!r})"
        )


def load(
    path: str | Path, *, unknown: str = "ignore", empty: str = "popularity", item_precision: str = "float32"
) -> Recommender:
    """``Recommender.load(path, ...)``."""
    return Recommender.load(path, unknown=unknown, empty=empty, item_precision=item_precision)
