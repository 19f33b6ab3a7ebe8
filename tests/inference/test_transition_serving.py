"""A trained model with the transition head (the library default) serves what it was
evaluated with: the training side's scores, through Recommender, save/load and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.inference import Recommender, load_artifact, save_artifact
from recsys.inference.onnx_runtime import OnnxRecommender

from .test_recommender import _training_side_scores


@pytest.fixture(scope="module")
def artifact(exported):
    art = load_artifact(exported)
    assert art.model.transition_lags > 0, "the fixture run should use the default transition head"
    assert float(art.state_dict["transitions.counts"].sum()) > 0  # the pattern came from the training data
    return art


def _histories(vocab, seed=0, n=12):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(vocab.items, size=int(rng.integers(1, 9)))) for _ in range(n)]


def test_served_scores_are_the_mixture_log_probabilities(fitted_run, exported, artifact):
    rec = Recommender.load(exported)
    histories = _histories(rec.vocab)
    inputs = torch.zeros(len(histories), 8, dtype=torch.int64)
    for row, h in enumerate(histories):
        inputs[row, 8 - len(h):] = torch.from_numpy(rec.vocab.encode(h))
    expected = _training_side_scores(fitted_run, inputs)  # (B, V + 1) log-probabilities
    assert torch.allclose(expected[:, 1:].exp().sum(dim=1), torch.ones(len(histories)), atol=1e-5)
    out = rec.recommend(histories, k=rec.n_items)
    for row, h in enumerate(histories):
        tokens = rec.vocab.encode(out.items[row])
        np.testing.assert_allclose(out.scores[row], expected[row, tokens].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(rec.score(h, list(rec.vocab.items)), expected[row, 1:].numpy(), rtol=0, atol=1e-6)
    # the head matters here: the softmax alone (user @ item embeddings) ranks differently
    logits = rec.user_embeddings(histories) @ rec.item_embeddings().T
    assert not np.array_equal(np.argsort(-logits, axis=1), np.argsort(-expected[:, 1:].numpy(), axis=1))


def test_save_load_and_onnx_give_the_same_scores(tmp_path, exported, artifact):
    with_graph = save_artifact(artifact, tmp_path / "art", onnx_k=artifact.vocab.n_items)
    a, b = Recommender.load(exported), Recommender.load(with_graph)
    onnx_rec = OnnxRecommender.load(with_graph, num_threads=1)
    histories = _histories(a.vocab, seed=1, n=20)
    for exclude_seen in (False, True):
        ra = a.recommend(histories, k=10, exclude_seen=exclude_seen)
        rb = b.recommend(histories, k=10, exclude_seen=exclude_seen)
        ro = onnx_rec.recommend(histories, k=10, exclude_seen=exclude_seen)
        for row in range(len(histories)):
            assert ra.items[row] == rb.items[row]
            np.testing.assert_array_equal(ra.scores[row], rb.scores[row])
            assert ra.items[row] == ro.items[row]
            np.testing.assert_allclose(ra.scores[row], ro.scores[row], rtol=0, atol=1e-4)
