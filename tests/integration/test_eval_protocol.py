"""End to end, the switches that change a reported number: ``eval.exclude_seen`` and the
[MASK] that BERT4Rec's evaluation appends.

Each test runs ``fit`` on a small planted log and checks what the run wrote
(``ranks.npz``, ``metrics.json``) against ranks recomputed here from the raw log and the
saved checkpoint: the histories are cut from the log's rows, the encoder's full forward
gives the user state, and masking and pessimistic ranking are a few lines of numpy, so
nothing of ``recsys.eval`` or of the data pipeline (collate, splits) is reused.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.config import ExperimentConfig
from recsys.data.synthetic import planted_markov_log
from recsys.nn.encoder import build_encoder
from recsys.training.run import fit

N_ITEMS = 15  # a small catalogue: many users meet their target again, many do not
EPS = 1e-4  # score gaps below this count as ties either way (float reordering across batch shapes)
KS = (1, 5, 10)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A stochastic log (next item = its successor with p 0.6, else uniform): a model cannot
    rank every target first, so masking seen items moves ranks."""
    log = planted_markov_log(n_users=160, n_items=N_ITEMS, p_follow=0.6, min_len=5, max_len=16, seed=4)
    path = tmp_path_factory.mktemp("protocol") / "events.csv"
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)
    histories = [g["item"].tolist() for _, g in log.frame.groupby("user", sort=False)]  # raw ids, time order
    return path, histories, log.frame


def _cfg(path: Path, tmp_path: Path, model: str = "sasrec", exclude_seen: bool = False,
         split: str = "loo") -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": model, "seed": 5, "output_dir": str(tmp_path),
        "data": {"name": "planted", "format": "csv", "path": str(path), "split": split},
        # the independent scorer below reads plain dot products: no transition head
        "model": {"name": model, "dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 8, "dropout": 0.1,
                  "transition_lags": 0},
        "train": {"batch_size": 32, "lr": 0.01, "max_epochs": 6, "patience": 10, "progress_bar": False,
                  "num_threads": 1},
        "eval": {"ks": list(KS), "monitor": "ndcg@10", "exclude_seen": exclude_seen},
    })


# ---- the independent scorer ---------------------------------------------------------------


def _scorer(run: Path):
    """(token of each raw id, n_items, mask token, function: list of token rows -> scores (n + 1,)).

    The weights come straight from ``best.ckpt``; the output table is read from the state
    dict (tied input embedding rows 1..n, or a separate output table)."""
    cfg = ExperimentConfig.from_yaml(run / "config.yaml")
    vocab = json.loads((run / "vocab.json").read_text())
    token = {raw: i + 1 for i, raw in enumerate(vocab["items"])}
    n = len(vocab["items"])
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    encoder = build_encoder(cfg.model, n)
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    encoder.eval()
    table = state.get("encoder.out_emb.weight", state["encoder.item_emb.weight"])
    out = table[1 : n + 1].double().numpy()  # (n, D): item j's output row is out[j - 1]

    def scores(tokens: list[int]) -> np.ndarray:
        with torch.no_grad():
            hidden = encoder(torch.tensor([tokens]))[0, -1].double().numpy()  # (D,) newest position
        return np.concatenate([[-np.inf], out @ hidden])  # column 0 = PAD

    return token, n, vocab["mask_id"], cfg.model.max_len, scores


def _rank_bounds(scores: np.ndarray, target: int, seen: set[int] | None) -> tuple[int, int]:
    """Smallest and largest pessimistic 1-based rank of ``target`` among the real items 1..n
    that a change of the scores by less than EPS allows; equal when no near-tie."""
    s = scores[1:].copy()  # PAD is never a candidate
    if seen:
        s[np.array(sorted(seen)) - 1] = -np.inf  # seen items, the target included, drop out
    t, others = s[target - 1], np.delete(s, target - 1)
    if np.isneginf(t):  # ties with every other excluded item, and ranks below them all
        return len(others) + 1, len(others) + 1
    return 1 + int((others > t + EPS).sum()), 1 + int((others >= t - EPS).sum())


def _leave_one_out(histories: list[list[str]]) -> dict[str, list[tuple[list[str], str]]]:
    """(input, target) of every user: validation = the second-to-last event, test = the last,
    each with everything before it as input."""
    return {split: [(h[: len(h) - drop], h[len(h) - drop]) for h in histories]
            for split, drop in (("valid", 2), ("test", 1))}


def _expected(run: Path, cases: dict[str, list[tuple[list[str], str]]], exclude_seen: bool,
              mask: bool) -> dict[str, np.ndarray]:
    """Per split, (U, 2) rank bounds of each (input, target) case, in the order given."""
    token, n, mask_id, max_len, scores = _scorer(run)
    out = {}
    for split, pairs in cases.items():
        bounds = []
        for raw_history, raw_target in pairs:
            history, target = [token[x] for x in raw_history], token[raw_target]
            window = history[-(max_len - 1):] + [mask_id] if mask else history[-max_len:]
            bounds.append(_rank_bounds(scores(window), target, set(history) if exclude_seen else None))
        out[split] = np.array(bounds)
    return out


def _metrics_of(ranks: np.ndarray) -> dict[str, float]:
    out = {}
    for k in KS:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.mean()
        out[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(ranks + 1.0), 0.0).mean()
        out[f"mrr@{k}"] = np.where(hit, 1 / ranks, 0.0).mean()
    return out


def _written(run: Path) -> tuple[dict, dict[str, np.ndarray]]:
    ranks = np.load(run / "ranks.npz")
    return json.loads((run / "metrics.json").read_text()), {s: ranks[s] for s in ("valid", "test")}


def _assert_within(recorded: np.ndarray, bounds: np.ndarray, what: str) -> None:
    lo, hi = bounds[:, 0], bounds[:, 1]
    bad = np.flatnonzero((recorded < lo) | (recorded > hi))
    assert len(bad) == 0, f"{what}: users {bad[:10].tolist()} ranked {recorded[bad[:10]].tolist()}, " \
                          f"expected between {lo[bad[:10]].tolist()} and {hi[bad[:10]].tolist()}"
    assert (lo == hi).mean() > 0.95  # the check pins almost every rank exactly


def _assert_metrics_follow_ranks(metrics: dict, ranks: dict[str, np.ndarray]) -> None:
    for split in ("valid", "test"):
        want = _metrics_of(ranks[split])
        assert metrics[split] == pytest.approx(want, rel=1e-12, abs=1e-12), split


# ---- exclude_seen ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seen_runs(planted, tmp_path_factory):
    path, histories, _ = planted
    tmp = tmp_path_factory.mktemp("seen")
    runs = {flag: fit(_cfg(path, tmp, exclude_seen=flag), tmp / f"exclude-{flag}").run_dir for flag in (True, False)}
    return runs, histories


def test_exclude_seen_run_writes_ranks_of_the_masked_catalogue(seen_runs):
    runs, histories = seen_runs
    run = runs[True]
    metrics, recorded = _written(run)
    assert metrics["exclude_seen"] is True
    masked = _expected(run, _leave_one_out(histories), exclude_seen=True, mask=False)
    unmasked = _expected(run, _leave_one_out(histories), exclude_seen=False, mask=False)
    for split in ("valid", "test"):
        _assert_within(recorded[split], masked[split], f"{split}, exclude_seen")
    _assert_metrics_follow_ranks(metrics, recorded)

    # Both kinds of user are in the log, and for both the flag changes the rank.
    drop = {"valid": 2, "test": 1}
    for split in ("valid", "test"):
        seen_target = np.array([h[len(h) - drop[split]] in h[: len(h) - drop[split]] for h in histories])
        assert 0.2 < seen_target.mean() < 0.8, split
        # a seen target drops out with the rest and ranks last, below every tied excluded item
        assert (recorded[split][seen_target] == N_ITEMS).all(), split
        assert (unmasked[split][seen_target, 1] < N_ITEMS).any(), split  # unmasked it ranks higher
        # an unseen target climbs past the seen items that outscored it
        fresh = ~seen_target
        assert (recorded[split][fresh] < unmasked[split][fresh, 0]).any(), split
        assert (recorded[split][fresh] <= unmasked[split][fresh, 1]).all(), split


def test_run_without_exclude_seen_ranks_every_item(seen_runs):
    runs, histories = seen_runs
    run = runs[False]
    metrics, recorded = _written(run)
    assert metrics["exclude_seen"] is False
    unmasked = _expected(run, _leave_one_out(histories), exclude_seen=False, mask=False)
    for split in ("valid", "test"):
        _assert_within(recorded[split], unmasked[split], f"{split}, all items")
    _assert_metrics_follow_ranks(metrics, recorded)


# ---- BERT4Rec's [MASK] -----------------------------------------------------------------


def test_bert4rec_is_evaluated_at_an_appended_mask(planted, tmp_path):
    """The cloze model is trained to fill [MASK] positions: its evaluation appends one after
    the last ``max_len - 1`` items and reads the state there. The recorded ranks are those
    of that path, and reading the state at the last item instead (no [MASK]) gives other
    ranks and other metrics, so a run that dropped the [MASK] could not pass."""
    path, histories, _ = planted
    run = fit(_cfg(path, tmp_path, model="bert4rec"), tmp_path / "bert4rec").run_dir
    metrics, recorded = _written(run)
    with_mask = _expected(run, _leave_one_out(histories), exclude_seen=False, mask=True)
    without = _expected(run, _leave_one_out(histories), exclude_seen=False, mask=False)
    for split in ("valid", "test"):
        _assert_within(recorded[split], with_mask[split], f"{split}, [MASK] appended")
        outside = (recorded[split] < without[split][:, 0]) | (recorded[split] > without[split][:, 1])
        assert outside.mean() > 0.3, split  # the two paths rank most users differently
        assert metrics[split]["ndcg@10"] != pytest.approx(_metrics_of(without[split][:, 0])["ndcg@10"], abs=1e-3)
    _assert_metrics_follow_ranks(metrics, recorded)


# ---- the global temporal split ---------------------------------------------------------


def test_temporal_run_is_labelled_and_ranks_each_users_first_event_after_the_cut(planted, tmp_path):
    """docs/protocol.md: the test cut is the 0.9 quantile of all event times (an event's
    own time, 'lower'), the target the user's first event after it, the input the user's
    whole history up to it; validation the same at the 0.8 quantile, for users whose target
    is not after the test cut. metrics.json names the split."""
    path, _, frame = planted
    run = fit(_cfg(path, tmp_path, split="temporal", exclude_seen=True), tmp_path / "temporal").run_dir
    metrics, recorded = _written(run)
    assert metrics["protocol"] == ("full-catalogue ranking, temporal (test cut at the 0.9 quantile of event time, "
                                   "validation cut at the 0.8 quantile), pessimistic ties")
    times = frame["timestamp"].to_numpy()
    t_test, t_valid = (np.sort(times)[int(np.floor(q * (len(times) - 1)))] for q in (0.9, 0.8))
    cases = {"valid": [], "test": []}
    for _, user in frame.groupby("user", sort=False):
        items, ts = user["item"].tolist(), user["timestamp"].to_numpy()
        for split, cut in (("valid", t_valid), ("test", t_test)):
            before, after = int((ts <= cut).sum()), np.flatnonzero(ts > cut)
            if before and len(after) and (split == "test" or ts[after[0]] <= t_test):
                cases[split].append((items[:before], items[after[0]]))
    assert metrics["n_eval_users"] == len(cases["test"]) < frame["user"].nunique()
    expected = _expected(run, cases, exclude_seen=True, mask=False)
    for split in ("valid", "test"):
        assert len(recorded[split]) == len(cases[split]) > 0, split
        _assert_within(recorded[split], expected[split], f"temporal {split}")
    _assert_metrics_follow_ranks(metrics, recorded)
