"""Recommender behaviour: parity with the training side, policies, types, k, threads."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from recsys.errors import ArtifactError
from recsys.inference import (
    EmptyHistoryError,
    Recommender,
    UnknownItemError,
    load_artifact,
    random_artifact,
    save_artifact,
)

from .conftest import SMALL_MODEL


def _training_side_scores(run_dir, inputs: torch.Tensor) -> torch.Tensor:
    """Scores (B, V + 1) from the run's checkpoint through the training LightningModule."""
    from recsys.config import ExperimentConfig
    from recsys.data.vocab import Vocab
    from recsys.nn.encoder import build_encoder
    from recsys.training.module import SeqRecModule

    cfg = ExperimentConfig.from_yaml(run_dir / "config.yaml")
    module = SeqRecModule(build_encoder(cfg.model, Vocab.load(run_dir / "vocab.json").n_items))
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    with torch.no_grad():
        return module.eval().score(inputs)


def test_exported_run_scores_identically_to_the_training_side(fitted_run, exported):
    rec = Recommender.load(exported)
    vocab = rec.vocab
    rng = np.random.default_rng(0)
    # The first history fills the window, so the recommender's batch is max_len wide, as
    # the training side's is: identical inputs must give bit-identical scores.
    lengths = [8, 3, 1, 5]
    histories = [list(rng.choice(vocab.items, size=n)) for n in lengths]
    inputs = torch.zeros(len(histories), 8, dtype=torch.int64)
    for row, h in enumerate(histories):
        inputs[row, 8 - len(h):] = torch.from_numpy(vocab.encode(h))
    expected = _training_side_scores(fitted_run, inputs)  # (B, V + 1), column = token id

    out = rec.recommend(histories, k=vocab.n_items)
    for row in range(len(histories)):
        tokens = torch.from_numpy(vocab.encode(out.items[row]))
        assert len(tokens) == vocab.n_items
        assert torch.equal(torch.from_numpy(out.scores[row]), expected[row, tokens])
        assert (np.diff(out.scores[row]) <= 0).all()  # best first
    # score() gathers item rows before the product: same numbers up to float rounding.
    for row, h in enumerate(histories):
        got = rec.score(h, list(vocab.items))
        np.testing.assert_allclose(got, expected[row, 1:].numpy(), rtol=0, atol=1e-6)
    # Embeddings reproduce the scores: user @ items.T (of a model without the transition
    # head: with it they are the softmax component's logits, test_transition_serving.py).
    users = rec.user_embeddings(histories)
    if not rec.artifact.model.transition_lags:
        np.testing.assert_allclose(users @ rec.item_embeddings().T, expected[:, 1:].numpy(), rtol=0, atol=1e-6)


def test_export_keeps_metrics_fingerprint_and_training_counts(fitted_run, exported):
    import json

    art = load_artifact(exported)
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    assert art.metrics["test"] == metrics["test"]
    assert art.dataset["fingerprint"] == metrics["dataset"]["fingerprint"]
    # Counts of the training split: every event but each user's last two (leave-one-out).
    events = (fitted_run.parent / "events.csv").read_text().split("\n")[1:-1]
    by_user: dict[str, list[str]] = {}
    for line in events:
        user, item, _ = line.split(",")
        by_user.setdefault(user, []).append(item)
    expected = np.zeros(art.vocab.n_items + 1, dtype=np.int64)
    for items in by_user.values():
        for item in items[:-2]:
            expected[art.vocab.encode([item])[0]] += 1
    np.testing.assert_array_equal(art.item_counts, expected)


@pytest.fixture(scope="module")
def rec(small_artifact):
    return Recommender.load(small_artifact)


def test_unknown_ids_are_ignored_and_counted_or_raise(small_artifact, rec):
    before = rec.stats()["unknown_ids"]
    plain = rec.recommend([["i1", "i2", "i3"]], k=5)
    noisy = rec.recommend([["nope", "i1", "i2", "??", "i3"]], k=5)
    assert noisy.items == plain.items and noisy.n_unknown == [2] and plain.n_unknown == [0]
    np.testing.assert_allclose(noisy.scores[0], plain.scores[0], atol=1e-6)
    assert rec.stats()["unknown_ids"] == before + 2
    strict = Recommender.load(small_artifact, unknown="raise")
    with pytest.raises(UnknownItemError, match=r"histories\[1\]: unknown item id 'nope'"):
        strict.recommend([["i1"], ["i2", "nope"]])
    with pytest.raises(KeyError):  # UnknownItemError is a KeyError too
        strict.score(["i1"], ["i2", "zzz"])
    with pytest.raises(UnknownItemError, match="candidates"):
        strict.recommend([["i1"]], candidates=["i2", "zzz"])
    scores = rec.score(["i1"], ["i2", "zzz", "i3"])
    assert scores[1] == -np.inf and np.isfinite(scores[[0, 2]]).all()


def test_empty_history_falls_back_to_popularity_or_raises(small_artifact, rec):
    counts = load_artifact(small_artifact).item_counts
    out = rec.recommend([[], ["unknown-only"], ["i1"]], k=4)
    assert out.fallback == [True, True, False]
    # fallback rows are ranked by training counts, but carry no model scores (NaN)
    assert rec.popularity(out.items[0]).tolist() == sorted(counts[1:], reverse=True)[:4]
    assert np.isnan(out.scores[0]).all() and len(out.scores[0]) == 4
    assert np.isfinite(out.scores[2]).all()
    assert out.items[0] == out.items[1]
    assert rec.popularity(["i3", "nope"]).tolist() == [counts[4], -1]
    within = rec.recommend([[]], k=2, candidates=["i3", "i7", "i11"]).items[0]
    assert within == sorted(["i3", "i7", "i11"], key=lambda i: -counts[int(i[1:]) + 1])[:2]
    assert np.isnan(rec.score([], ["i3", "i7"])).all()
    assert rec.score([], ["i3", "nope"])[1] == -np.inf
    table = out.to_pandas(users=["a", "b", "c"])
    assert table["fallback"].tolist() == [True] * 8 + [False] * 4
    assert table["score"][:8].isna().all() and table["score"][8:].notna().all()
    assert not rec.user_embeddings([[]]).any()
    strict = Recommender.load(small_artifact, empty="raise")
    with pytest.raises(EmptyHistoryError, match=r"histories\[1\]"):
        strict.recommend([["i1"], []])
    with pytest.raises(EmptyHistoryError):
        strict.user_embeddings([["nope"]])
    # An artifact without counts cannot promise a popularity fallback.
    bare = random_artifact(5, SMALL_MODEL, with_counts=False)
    with pytest.raises(ArtifactError, match="popularity"):
        Recommender(bare)
    assert Recommender(bare, empty="raise").recommend([["i1"]], k=2).items[0]


def test_wrong_types_give_clear_type_errors(rec):
    cases = [
        ("i1", r"histories must be a list of histories"),
        (["i1", "i2"], r"histories\[0\] is a str.*pass \[history\]"),
        ([[1, 2]], r"histories\[0\]\[0\] is int 1, not a str item id \(raw ids are strings: use '1'\)"),
        ([["i1", None]], r"histories\[0\]\[1\] is NoneType"),
        ([{"i1"}], r"histories\[0\] must be a list or tuple"),
        (np.array([["i1"]]), r"histories must be a list"),
    ]
    for histories, message in cases:
        with pytest.raises(TypeError, match=message):
            rec.recommend(histories)
    with pytest.raises(TypeError, match="k must be an int"):
        rec.recommend([["i1"]], k=2.5)
    with pytest.raises(TypeError, match="k must be an int"):
        rec.recommend([["i1"]], k=True)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rec.recommend([["i1"]], k=0)
    with pytest.raises(TypeError, match="exclude_seen must be True or False"):
        rec.recommend([["i1"]], exclude_seen="yes")
    with pytest.raises(TypeError, match="candidates"):
        rec.recommend([["i1"]], candidates="i2")
    with pytest.raises(TypeError, match=r"history must be a list"):
        rec.score("i1", ["i2"])
    with pytest.raises(TypeError, match=r"items\[0\] is int"):
        rec.score(["i1"], [2])
    with pytest.raises(ValueError, match="unknown must be one of"):
        Recommender.load("unused", unknown="skip")  # checked before any file is read
    # numpy string arrays are fine as histories
    assert rec.recommend([np.array(["i1", "i2"])], k=3).items == rec.recommend([["i1", "i2"]], k=3).items


def test_oversized_k_is_clamped_to_what_is_left(rec):
    n = rec.n_items
    out = rec.recommend([["i1", "i2"], []], k=10 * n)
    assert [len(r) for r in out.items] == [n, n] and len(set(out.items[0])) == n
    out = rec.recommend([["i1", "i2", "i2"]], k=n, exclude_seen=True)
    assert len(out.items[0]) == n - 2 and not {"i1", "i2"} & set(out.items[0])
    out = rec.recommend([["i1"]], k=100, candidates=["i5", "i1", "i5", "i9"], exclude_seen=True)
    assert sorted(out.items[0]) == ["i5", "i9"]
    full = dict(zip(rec.recommend([["i1"]], k=n).items[0], rec.recommend([["i1"]], k=n).scores[0]))
    np.testing.assert_allclose(out.scores[0], [full[i] for i in out.items[0]], rtol=0, atol=1e-6)


def test_long_histories_keep_their_newest_items(rec):
    old = [f"i{j}" for j in range(30)]
    recent = ["i40", "i41", "i42", "i43", "i44", "i45", "i46", "i47"]  # max_len = 8
    a = rec.recommend([old + recent], k=10)
    b = rec.recommend([recent], k=10)
    assert a.items == b.items
    np.testing.assert_allclose(a.scores[0], b.scores[0], atol=1e-6)
    # ...but exclude_seen removes the whole history, truncated part included.
    c = rec.recommend([old + recent], k=50, exclude_seen=True)
    assert len(c.items[0]) == 50 - 38 and not set(c.items[0]) & set(old + recent)


def test_batching_does_not_change_answers(rec):
    rng = np.random.default_rng(1)
    histories = [[f"i{j}" for j in rng.integers(0, 50, rng.integers(1, 12))] for _ in range(9)]
    together = rec.recommend(histories, k=7)
    for row, h in enumerate(histories):
        alone = rec.recommend([h], k=7)
        assert alone.items[0] == together.items[row]
        np.testing.assert_allclose(alone.scores[0], together.scores[row], atol=1e-5)


def test_concurrent_calls_match_sequential_ones(rec):
    rng = np.random.default_rng(2)
    histories = [[f"i{j}" for j in rng.integers(0, 50, rng.integers(0, 12))] for _ in range(16)]
    expected = [rec.recommend([h], k=5).items[0] for h in histories]
    before = rec.stats()["histories"]
    results: dict[int, list[str]] = {}
    errors = []

    def worker(t: int) -> None:
        try:
            for _ in range(10):
                for i in range(t, len(histories), 4):
                    results[i] = rec.recommend([histories[i]], k=5).items[0]
                    assert results[i] == expected[i]
        except Exception as exc:  # noqa: BLE001 -- surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(results) == len(histories)
    assert rec.stats()["histories"] == before + 10 * len(histories)


def test_next_action_says_there_is_no_action_head(rec):
    with pytest.raises(NotImplementedError, match="action head"):
        rec.next_action(["i1"])


def test_public_api_from_the_top_package(small_artifact):
    import recsys

    assert recsys.Recommender is Recommender
    rec = recsys.load(small_artifact)
    assert rec.recommend([["i1"]], k=3).items[0] == Recommender.load(small_artifact).recommend([["i1"]], k=3).items[0]
    with pytest.raises(AttributeError):
        recsys.not_a_name  # noqa: B018


def test_item_embeddings_are_a_read_only_view(rec):
    emb = rec.item_embeddings()
    assert emb.shape == (rec.n_items, rec.dim) and len(rec.items) == rec.n_items
    with pytest.raises(ValueError):
        emb[0, 0] = 1.0


@pytest.mark.parametrize("model", [SMALL_MODEL, dataclasses.replace(SMALL_MODEL, tied_output=False)])
def test_save_load_round_trip_scores_identically(tmp_path, model):
    art = random_artifact(25, model, seed=5)
    before = Recommender(art).recommend([["i1", "i4"], ["i9"]], k=25)
    after = Recommender.load(save_artifact(art, tmp_path / "a")).recommend([["i1", "i4"], ["i9"]], k=25)
    assert before.items == after.items
    for x, y in zip(before.scores, after.scores):
        assert np.array_equal(x, y)


def test_chunked_scoring_gives_the_same_top_k(small_artifact):
    """Large B x items products are scored in chunks with a running top-k: same answer."""
    whole = Recommender.load(small_artifact)
    chunked = Recommender.load(small_artifact)
    chunked.score_chunk = 7  # 7 // B columns at a time, but never fewer than k
    rng = np.random.default_rng(3)
    histories = [[f"i{j}" for j in rng.integers(0, 50, rng.integers(0, 12))] for _ in range(5)]
    for kwargs in ({"k": 6}, {"k": 6, "exclude_seen": True}, {"k": 60, "exclude_seen": True},
                   {"k": 4, "candidates": [f"i{j}" for j in range(0, 50, 3)], "exclude_seen": True}):
        a, b = whole.recommend(histories, **kwargs), chunked.recommend(histories, **kwargs)
        for row in range(len(histories)):
            np.testing.assert_allclose(a.scores[row], b.scores[row], rtol=0, atol=1e-6)
            if not a.fallback[row]:  # popularity ties may order differently
                assert a.items[row] == b.items[row]


def test_bfloat16_scan_with_float32_rescoring_matches_float32(small_artifact):
    exact = Recommender.load(small_artifact)
    fast = Recommender.load(small_artifact, item_precision="bfloat16")
    rng = np.random.default_rng(4)
    histories = [[f"i{j}" for j in rng.integers(0, 50, rng.integers(0, 12))] for _ in range(20)]
    for kwargs in ({"k": 5}, {"k": 5, "exclude_seen": True}, {"k": 3, "candidates": ["i1", "i2", "i3", "i4"]}):
        a, b = exact.recommend(histories, **kwargs), fast.recommend(histories, **kwargs)
        for row in range(len(histories)):
            np.testing.assert_allclose(b.scores[row], a.scores[row], rtol=0, atol=1e-6)  # float32 scores
            if not a.fallback[row]:
                assert a.items[row] == b.items[row]
    with pytest.raises(ValueError, match="item_precision"):
        Recommender.load(small_artifact, item_precision="float16")
