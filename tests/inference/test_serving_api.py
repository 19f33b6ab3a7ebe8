"""The serving API of issue 23: batched score, per-row candidates and exclusions,
similar_items, the RecTools-shaped table, fallback rows, and exported baselines, each
checked against numbers computed another way (the training side, numpy by hand, or the
full-catalogue answer)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recsys.cli import main
from recsys.inference import Recommender, UnknownItemError, random_artifact

from .conftest import SMALL_MODEL, write_log
from .test_recommender import _training_side_scores


def _padded(vocab, histories, width=8):
    inputs = torch.zeros(len(histories), width, dtype=torch.int64)
    for row, h in enumerate(histories):
        tokens = vocab.encode(h)[-width:]
        if len(tokens):
            inputs[row, width - len(tokens):] = torch.from_numpy(tokens)
    return inputs


@pytest.fixture(scope="module")
def small(small_artifact):
    return Recommender.load(small_artifact)


@pytest.fixture(scope="module")
def plain():
    """Without the transition head: scores are the product user state x item embedding."""
    rec = Recommender(random_artifact(50, dataclasses.replace(SMALL_MODEL, transition_lags=0), seed=3))
    assert rec._encoder.transitions is None
    return rec


@pytest.fixture(scope="module")
def mixture(exported):
    rec = Recommender.load(exported)
    assert rec.artifact.model.transition_lags > 0
    return rec


def _histories(items, seed, n=6):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(items, size=int(rng.integers(1, 9)))) for _ in range(n)]


# ---- batched score ------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["small", "plain", "mixture"])
def test_batched_score_equals_one_history_at_a_time_and_the_full_ranking(which, request):
    rec = request.getfixturevalue(which)
    histories = _histories(list(rec.items), seed=1)
    rng = np.random.default_rng(2)
    per_row = [list(rng.choice(rec.items, size=int(rng.integers(1, 6)), replace=False)) + ["nope"]
               for _ in histories]
    batched = rec.score(histories, per_row)
    assert isinstance(batched, list) and len(batched) == len(histories)
    full = rec.recommend(histories, k=rec.n_items)
    for row, (h, items) in enumerate(zip(histories, per_row)):
        np.testing.assert_allclose(batched[row], rec.score(h, items), rtol=0, atol=1e-6)
        assert batched[row][-1] == -np.inf  # unknown candidate
        by_item = dict(zip(full.items[row], full.scores[row]))
        np.testing.assert_allclose(batched[row][:-1], [by_item[i] for i in items[:-1]], rtol=0, atol=1e-5)
    shared = rec.score(histories, [rec.items[0], "nope"])
    assert len(shared) == len(histories) and all(len(s) == 2 and s[1] == -np.inf for s in shared)
    with pytest.raises(TypeError, match="one list of item ids per history"):
        rec.score(histories, [["x"]])  # wrong number of rows


def test_batched_score_of_an_empty_history_is_nan(small):
    out = small.score([["i1"], []], [["i2", "i3"], ["i2", "zzz"]])
    assert np.isfinite(out[0]).all()
    assert np.isnan(out[1][0]) and out[1][1] == -np.inf


# ---- per-row candidates and exclusions ------------------------------------------------------
@pytest.mark.parametrize("which", ["small", "plain", "mixture"])
def test_per_row_candidates_and_exclusions_pick_from_the_full_ranking(which, request):
    rec = request.getfixturevalue(which)
    items = list(rec.items)
    histories = _histories(items, seed=3) + [[]]
    rng = np.random.default_rng(4)
    cands = [list(rng.choice(items, size=int(rng.integers(2, 10)), replace=False)) for _ in histories]
    excl = [list(rng.choice(items, size=3, replace=False)) + ["nope"] for _ in histories]
    full = rec.recommend(histories, k=rec.n_items)
    out = rec.recommend(histories, k=4, candidates=cands, exclude=excl, exclude_seen=True)
    for row, h in enumerate(histories):
        allowed = set(cands[row]) - set(excl[row]) - set(h)
        expected = [i for i in full.items[row] if i in allowed][:4]  # the full ranking, filtered
        assert len(out.items[row]) == min(4, len(allowed)) and set(out.items[row]) <= allowed
        if out.fallback[row]:
            assert out.items[row] == expected and np.isnan(out.scores[row]).all()
            continue
        # A product over the candidate columns alone may round differently from the whole
        # catalogue's (plain models): equal scores to float precision, and a top-4 up to ties.
        by_item = dict(zip(full.items[row], full.scores[row]))
        np.testing.assert_allclose(out.scores[row], [by_item[i] for i in out.items[row]], rtol=0, atol=1e-6)
        left = [by_item[i] for i in allowed - set(out.items[row])]
        assert not left or min(out.scores[row]) >= max(left) - 1e-6
        if which == "mixture":  # the dense path scores every item once: the same order exactly
            assert out.items[row] == expected
        alone = rec.recommend([h], k=4, candidates=cands[row], exclude=[excl[row]], exclude_seen=True)
        assert set(alone.items[0]) == set(out.items[row])
    with pytest.raises(ValueError, match="candidates has 1 rows"):
        rec.recommend(histories, candidates=[cands[0]])
    with pytest.raises(ValueError, match="exclude has 1 rows"):
        rec.recommend(histories, exclude=[excl[0]])
    with pytest.raises(TypeError, match="exclude must be one list"):
        rec.recommend(histories, exclude="i1")


def test_mixture_scores_stay_exact_with_per_row_candidates(fitted_run, mixture):
    """The transition-head path: served scores are the training side's, bit for bit."""
    histories = [h[-8:] for h in _histories(list(mixture.items), seed=5)]
    histories[0] = list(mixture.items[:8])  # one full window: the batch is max_len wide, as in training
    expected = _training_side_scores(fitted_run, _padded(mixture.vocab, histories))  # (B, V + 1)
    rng = np.random.default_rng(6)
    cands = [list(rng.choice(mixture.items, size=7, replace=False)) for _ in histories]
    out = mixture.recommend(histories, k=5, candidates=cands, exclude=[[c[0]] for c in cands])
    for row in range(len(histories)):
        tokens = torch.from_numpy(mixture.vocab.encode(out.items[row]))
        assert len(tokens) == 5 and cands[row][0] not in out.items[row]
        assert torch.equal(torch.from_numpy(out.scores[row]), expected[row, tokens])


def test_unknown_candidates_follow_the_policy(small_artifact, small):
    out = small.recommend([["i1"], ["i2"]], k=3, candidates=[["i5", "nope"], ["i6"]])
    assert out.items == [["i5"], ["i6"]]
    strict = Recommender.load(small_artifact, unknown="raise")
    with pytest.raises(UnknownItemError, match=r"candidates\[0\]"):
        strict.recommend([["i1"], ["i2"]], candidates=[["i5", "nope"], ["i6"]])


# ---- similar_items ------------------------------------------------------------------------
def test_similar_items_is_cosine_of_the_item_embeddings(small_artifact, small):
    emb = small.item_embeddings().astype(np.float64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = small.similar_items(["i3", "nope", "i10"], k=5)
    assert out.n_unknown == [0, 1, 0] and out.items[1] == [] and out.fallback == [False] * 3
    for row, query in ((0, 3), (2, 10)):
        sims = unit @ unit[query]
        sims[query] = -np.inf  # the item itself is left out
        order = np.argsort(-sims, kind="stable")[:5]
        assert out.items[row] == [small.items[j] for j in order]
        np.testing.assert_allclose(out.scores[row], sims[order], rtol=0, atol=1e-6)
    within = small.similar_items(["i3"], k=2, candidates=["i3", "i4", "i5", "i6"])
    sims = {i: unit[int(i[1:])] @ unit[3] for i in ("i4", "i5", "i6")}
    assert within.items[0] == sorted(sims, key=lambda i: -sims[i])[:2]
    with pytest.raises(UnknownItemError):
        Recommender.load(small_artifact, unknown="raise").similar_items(["nope"])
    table = out.to_pandas(["i3", "nope", "i10"], key="target_item_id")
    assert list(table.columns) == ["target_item_id", "item_id", "score", "rank", "fallback"]
    assert table["target_item_id"].tolist() == ["i3"] * 5 + ["i10"] * 5


# ---- the RecTools-shaped table ----------------------------------------------------------------
def test_to_pandas_is_the_long_user_item_score_rank_table(small):
    out = small.recommend([["i1", "i2"], [], ["i7"]], k=3)
    table = out.to_pandas(users=["u1", "u2", "u3"])
    assert list(table.columns) == ["user_id", "item_id", "score", "rank", "fallback"]
    assert table["user_id"].tolist() == ["u1"] * 3 + ["u2"] * 3 + ["u3"] * 3
    assert table["rank"].tolist() == [1, 2, 3] * 3
    assert table["item_id"].tolist() == [i for row in out.items for i in row]
    np.testing.assert_array_equal(table["score"].to_numpy()[:3], out.scores[0])
    assert table["fallback"].tolist() == [False] * 3 + [True] * 3 + [False] * 3
    assert table["score"][3:6].isna().all()
    assert out.to_pandas()["user_id"].tolist() == [0] * 3 + [1] * 3 + [2] * 3  # row numbers by default
    assert out.to_dict()["scores"][1] == [None, None, None]  # JSON has no NaN
    with pytest.raises(ValueError, match="users has 2 entries"):
        out.to_columns(users=["a", "b"])


# ---- exported baselines ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=["popularity", "transitions"])
def baseline_run(request, tmp_path_factory):
    from recsys.config import ExperimentConfig
    from recsys.training.run import fit

    root = tmp_path_factory.mktemp(f"baseline-{request.param}")
    write_log(root / "events.csv")
    cfg = ExperimentConfig.from_dict({
        "name": request.param, "seed": 1, "output_dir": str(root / "runs"),
        "data": {"name": "planted", "format": "csv", "path": str(root / "events.csv")},
        "model": {"name": request.param, "max_len": 8},
        "train": {"progress_bar": False}, "eval": {"ks": [1, 10], "monitor": "ndcg@10"},
    })
    run = fit(cfg, run_dir=root / "run").run_dir
    out = root / "artifact"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return cfg, run, out


def test_exported_baseline_serves_the_training_side_scores(baseline_run):
    from recsys.data.vocab import Vocab
    from recsys.training.build import build_datamodule, build_module

    cfg, run, artifact = baseline_run
    rec = Recommender.load(artifact)
    assert rec.is_baseline and rec.artifact.model.name == cfg.model.name
    vocab = Vocab.load(run / "vocab.json")
    module = build_module(cfg, build_datamodule(cfg, vocab=vocab))  # fitted as `recsys fit` fits it
    histories = _histories(list(vocab.items), seed=7, n=8)
    # what evaluation ranks (BaselineModule._eval_scores reads only the batch's inputs)
    expected = module._eval_scores({"inputs": _padded(vocab, histories)}).numpy()  # (B, V + 1) float64
    out = rec.recommend(histories, k=vocab.n_items)
    for row, h in enumerate(histories):
        tokens = vocab.encode(out.items[row])
        assert out.scores[row].dtype == np.float64
        np.testing.assert_array_equal(out.scores[row], expected[row, tokens])  # exact
        np.testing.assert_array_equal(rec.score(h, list(vocab.items)), expected[row, 1:])
    if cfg.model.name == "transitions":  # the last item decides: the pattern i -> i+1 was learnt
        assert rec.recommend([["item03"]], k=1).items == [["item04"]]
    empty = rec.recommend([[]], k=3)
    assert empty.fallback == [True] and np.isnan(empty.scores[0]).all()
    with pytest.raises(NotImplementedError, match="baseline"):
        rec.similar_items(["item01"])
    with pytest.raises(NotImplementedError, match="baseline"):
        rec.user_embeddings([["item01"]])
