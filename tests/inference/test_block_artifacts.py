"""Every block's model through the artifact: save -> load scores identically, and serving's
one-query path scores as the training forward's newest position does (tests/inference/test_onnx.py
checks the ONNX graph of each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.inference import Recommender, save_artifact

from .conftest import BLOCK_MODELS, block_artifact

HISTORIES = [["i3", "i7", "i1"], ["i5"], [f"i{j}" for j in range(25)], ["i2", "i2", "i9", "i11", "i0"]]


@pytest.mark.parametrize("name", BLOCK_MODELS)
def test_save_load_gives_identical_scores(name, tmp_path):
    art = block_artifact(name, 30, seed=3)
    every = [f"i{j}" for j in range(30)]
    before = Recommender(art).score(HISTORIES, every)
    after = Recommender.load(save_artifact(art, tmp_path / "a")).score(HISTORIES, every)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before[0], before[1])  # the scores read the history


@pytest.mark.parametrize("name", BLOCK_MODELS)
def test_serving_scores_equal_the_full_forward_at_the_newest_position(name):
    art = block_artifact(name, 30, seed=4)
    rec, encoder = Recommender(art), art.build_encoder()
    every = [f"i{j}" for j in range(30)]
    served = rec.score(HISTORIES, every)
    L = art.model.max_len
    with torch.inference_mode():
        for history, got in zip(HISTORIES, served):
            tokens = [art.vocab.items.index(i) + 1 for i in history][-L:]
            x = torch.tensor([[0] * (L - len(tokens)) + tokens])
            full = encoder.score(encoder(x)[:, -1], x)[0, 1:]  # (n,) in token order = raw order here
            np.testing.assert_allclose(got, full.numpy(), rtol=1e-5, atol=1e-5)
