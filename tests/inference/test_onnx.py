"""ONNX graph vs eager torch: same top-k ids and scores within 1e-4, any batch and length."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.inference import OnnxRecommender, Recommender, load_artifact, random_artifact, save_artifact
from recsys.inference.onnx_export import TopKGraph

from .conftest import SMALL_MODEL

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def both(onnx_artifact):
    return Recommender.load(onnx_artifact), OnnxRecommender.load(onnx_artifact, num_threads=1)


def test_graph_matches_torch_on_random_token_batches(onnx_artifact, both):
    """Raw graph parity over every (batch, length) shape, with padding and exclusions."""
    _, onnx_rec = both
    art = load_artifact(onnx_artifact)
    graph = TopKGraph(art.build_encoder(), k=art.vocab.n_items).eval()
    rng = np.random.default_rng(0)
    for batch, length in [(1, 1), (1, 8), (3, 5), (17, 8), (64, 2)]:
        inputs = rng.integers(1, art.vocab.n_items + 1, size=(batch, length))
        pads = rng.integers(0, length, size=batch)  # left padding of each row
        inputs[np.arange(length)[None, :] < pads[:, None]] = 0
        exclude = np.concatenate([inputs, np.zeros((batch, 1), dtype=np.int64)], axis=1)
        with torch.inference_mode():
            ids, scores = graph(torch.from_numpy(inputs), torch.from_numpy(exclude))
        got_ids, got_scores = onnx_rec.run_graph(inputs, exclude)
        assert got_ids.shape == (batch, art.vocab.n_items)
        # Compare score by token id (order among equal scores may differ), -inf included.
        expected = np.full((batch, art.vocab.n_items + 1), np.nan, dtype=np.float32)
        actual = expected.copy()
        np.put_along_axis(expected, ids.numpy(), scores.numpy(), axis=1)
        np.put_along_axis(actual, got_ids, got_scores, axis=1)
        finite = np.isfinite(expected)
        assert (finite == np.isfinite(actual)).all()
        np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=1e-4)
        excluded = (exclude[:, :, None] == np.arange(art.vocab.n_items + 1)).any(1)  # (B, V + 1)
        assert not np.isfinite(actual[excluded]).any()  # excluded items never score
        assert np.isfinite(actual[:, 1:][~excluded[:, 1:]]).all()  # every other item does


def test_onnx_recommender_matches_torch_recommender_in_raw_ids(both):
    rec, onnx_rec = both
    rng = np.random.default_rng(1)
    histories = [[f"i{j}" for j in rng.integers(0, 45, rng.integers(0, 20))] for _ in range(25)]
    for exclude_seen in (False, True):
        a = rec.recommend(histories, k=10, exclude_seen=exclude_seen)
        b = onnx_rec.recommend(histories, k=10, exclude_seen=exclude_seen)
        assert a.n_unknown == b.n_unknown and a.fallback == b.fallback
        for row in range(len(histories)):
            if a.fallback[row]:  # ties in popularity may order differently; counts must agree
                np.testing.assert_array_equal(a.scores[row], b.scores[row])
                continue
            assert a.items[row] == b.items[row]
            np.testing.assert_allclose(a.scores[row], b.scores[row], rtol=0, atol=1e-4)


def test_onnx_recommender_limits(both, onnx_artifact):
    _, onnx_rec = both
    with pytest.raises(ValueError, match="exported with"):
        onnx_rec.recommend([["i1"]], k=41)
    with pytest.raises(NotImplementedError, match="candidates"):
        onnx_rec.recommend([["i1"]], candidates=["i2"])
    with pytest.raises(TypeError, match="histories"):
        onnx_rec.recommend(["i1"])


def test_artifact_without_graph_is_refused(tmp_path):
    from recsys.errors import ArtifactError

    out = save_artifact(random_artifact(5, SMALL_MODEL), tmp_path / "a")
    with pytest.raises(ArtifactError, match="--onnx"):
        OnnxRecommender.load(out)
