"""``OnnxRecommender``: top-k through onnxruntime, with the same inputs and policies.

The graph (``onnx_export.TopKGraph``) works in token ids; this class encodes raw-id histories
with the artifact's vocabulary exactly as ``Recommender`` does, runs the graph, and maps
the returned token ids back to raw ids. Empty histories are answered by popularity in
Python (the graph never sees them; their scores are NaN, as in ``Recommender``). ``candidates`` is not supported here: rank the
candidates with ``Recommender.score`` or restrict results after the call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.errors import ArtifactError
from recsys.inference.artifact import ONNX_FILE, Artifact, load_artifact
from recsys.inference.inputs import (
    EMPTY_POLICIES,
    UNKNOWN_POLICIES,
    EmptyHistoryError,
    check_batch,
    check_flag,
    check_k,
    check_policy,
    encode_batch,
)
from recsys.inference.recommender import Recommendations
from recsys.types import PAD_ID


class OnnxRecommender:
    """``recommend`` served by onnxruntime from an artifact holding ``model.onnx``."""

    def __init__(
        self,
        artifact: Artifact,
        onnx_path: str | Path,
        *,
        unknown: str = "ignore",
        empty: str = "popularity",
        num_threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("OnnxRecommender needs onnxruntime: pip install 'recsys[onnx]'") from exc
        self.unknown = check_policy("unknown", unknown, UNKNOWN_POLICIES)
        self.empty = check_policy("empty", empty, EMPTY_POLICIES)
        if artifact.onnx is None:
            raise ArtifactError("artifact has no ONNX graph; export with `recsys export ... --onnx`")
        if empty == "popularity" and artifact.item_counts is None:
            raise ArtifactError("artifact holds no popularity counts; use empty='raise'")
        self.artifact, self.vocab = artifact, artifact.vocab
        self._mask_token = artifact.mask_token  # cloze models: [MASK] after the history, as in Recommender
        self.max_len, self.k_max = artifact.model.max_len, int(artifact.onnx["k"])
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        # InferenceSession.run is thread-safe, so one session serves all threads.
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._ids = np.asarray(self.vocab.items, dtype=object)
        if artifact.item_counts is not None:
            counts = artifact.item_counts[1:]
            self._pop_order = np.argsort(-counts, kind="stable")  # column order, most popular first
            self._pop_scores = counts[self._pop_order].astype(np.float32)
        self._lock = threading.Lock()
        self._stats = {"histories": 0, "unknown_ids": 0, "empty_histories": 0}

    @classmethod
    def load(
        cls, path: str | Path, *, unknown: str = "ignore", empty: str = "popularity", num_threads: int | None = None
    ) -> OnnxRecommender:
        artifact = load_artifact(path)
        if artifact.onnx is None:
            raise ArtifactError(f"{path} holds no ONNX graph; export with `recsys export RUN_DIR --out DIR --onnx`")
        return cls(artifact, Path(path) / artifact.onnx.get("file", ONNX_FILE), unknown=unknown, empty=empty,
                   num_threads=num_threads)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def run_graph(self, inputs: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw graph call: (B, L) token ids -> (token_ids, scores), each (B, k_max)."""
        if exclude is None:
            exclude = np.zeros((inputs.shape[0], 1), dtype=np.int64)
        return tuple(self._session.run(None, {"inputs": inputs, "exclude": exclude}))

    def recommend(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = False, candidates: None = None
    ) -> Recommendations:
        """As ``Recommender.recommend``; ``k`` may not exceed the exported graph's k."""
        k = check_k(k)
        exclude_seen = check_flag("exclude_seen", exclude_seen)
        if candidates is not None:
            raise NotImplementedError("OnnxRecommender does not take candidates; use Recommender.score to re-rank")
        if k > self.k_max:
            raise ValueError(f"k={k} exceeds the k={self.k_max} this ONNX graph was exported with; re-export with "
                             "a larger --onnx-k")
        batch = encode_batch(self.vocab, check_batch(histories), self.max_len, self.unknown, self._mask_token)
        empty = batch.empty
        if self.empty == "raise" and empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise EmptyHistoryError(f"histories[{row}] holds no known item; use empty='popularity' for a fallback")
        with self._lock:
            self._stats["histories"] += len(empty)
            self._stats["unknown_ids"] += int(batch.n_unknown.sum())
            self._stats["empty_histories"] += int(empty.sum())
        B = len(empty)
        tokens = np.zeros((B, k), dtype=np.int64)
        values = np.full((B, k), -np.inf, dtype=np.float32)
        live = np.flatnonzero(~empty)
        if len(live):
            exclude = None
            if exclude_seen:
                width = max(1, max(len(batch.seen[r]) for r in live))
                exclude = np.full((len(live), width), PAD_ID, dtype=np.int64)
                for i, r in enumerate(live):
                    exclude[i, : len(batch.seen[r])] = batch.seen[r]
            t, v = self.run_graph(batch.inputs[live], exclude)
            tokens[live], values[live] = t[:, :k], v[:, :k]
        if empty.any():
            n = min(k, len(self._pop_order))
            tokens[empty, :n] = self._pop_order[:n] + 1
            values[empty, :n] = self._pop_scores[:n]
        items, scores = [], []
        for row in range(B):
            n = int((values[row] > -np.inf).sum())
            items.append(self._ids[tokens[row, :n] - 1].tolist())
            # a fallback row is ranked by training counts and has no model scores, as in Recommender
            scores.append(np.full(n, np.nan, np.float32) if empty[row] else values[row, :n].copy())
        return Recommendations(items, scores, batch.n_unknown.tolist(), empty.tolist())
