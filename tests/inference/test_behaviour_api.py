"""Recommender.next_action / purchase_propensity / churn_risk on raw histories with
timestamps: equal to the training side's heads, unknown ids, empty histories, save -> load."""

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys import rundir
from recsys.config import ExperimentConfig
from recsys.inference.export import export_run
from recsys.inference.inputs import EmptyHistoryError, UnknownItemError
from recsys.inference.recommender import Recommender
from recsys.training.behaviour import model_logits
from recsys.training.build import build_datamodule, build_module
from recsys.training.run import fit

H = 3600


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for u in range(50):
        t, cart = int(rng.integers(0, 48 * H)), None
        for _ in range(int(rng.integers(8, 25))):
            t += int(rng.exponential(4 * H))
            if cart is not None and rng.random() < 0.5:
                item, action, cart = cart, "buy", None
            else:
                item, action = int(rng.integers(15)), "cart" if rng.random() < 0.2 else "pv"
                cart = item if action == "cart" else cart
            rows.append(f"u{u},i{item},{action},{t}")
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "events.csv").write_text("\n".join(rows) + "\n")
    cfg = ExperimentConfig.from_dict({
        "name": "api", "seed": 2, "output_dir": str(tmp),
        "data": {"name": "tiny", "format": "csv", "path": str(tmp / "events.csv"),
                 "names": ["user", "item", "behavior", "ts"], "user_col": "user", "item_col": "item",
                 "time_col": "ts", "event_col": "behavior", "split": "temporal",
                 "split_valid_quantile": 0.6, "split_quantile": 0.8},
        "model": {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 8, "dropout": 0.0, "use_positions": False,
                  "dropout_sampler": "bernoulli", "transition_lags": 0, "time_gaps": True, "item_relations": True,
                  "history_summary": True, "action_candidate": True},
        "train": {"batch_size": 32, "lr": 0.01, "max_epochs": 2, "progress_bar": False, "num_threads": 1,
                  "loss": "ce", "length_groups": 1, "logit_precision": "fp32", "encoder_precision": "fp32",
                  "purchase_horizon": 2, "churn_days": 0.5, "calibrate": True},
        "eval": {"ks": [1, 10], "monitor": "behaviour_nll"},
    })
    return fit(cfg, tmp / "run").run_dir


@pytest.fixture(scope="module")
def training_side(run):
    cfg = rundir.read_config(run)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    state = torch.load(run / rundir.BEST_CHECKPOINT, weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return dm, module


@pytest.fixture(scope="module")
def served(run, training_side, tmp_path_factory):
    out = export_run(run, tmp_path_factory.mktemp("artifact") / "a", item_counts=training_side[0].train_item_counts())
    return out, Recommender.load(out)


def _history(dm, start, pos):
    s = dm.sequences
    items = [dm.vocab.items[t - 1] for t in s.items[start : pos + 1]]
    actions = [dm.event_vocab.names[e - 1] for e in s.events[start : pos + 1]]
    return items, actions, s.timestamps[start : pos + 1].astype(float).tolist()


def test_the_served_heads_equal_the_training_side(served, training_side):
    _, rec = served
    dm, module = training_side
    s = dm.sequences
    assert rec._heads.log_temperature.abs().sum() > 0  # calibrated temperatures travelled with the weights
    pos = np.array([s.offsets[u + 1] - 2 for u in range(6)])  # each user's one-but-last event
    start = s.offsets[:-1][:6]
    nxt, gap = s.items[pos + 1], (s.timestamps[pos + 1] - s.timestamps[pos]).astype(np.float32)
    elapsed = np.full(6, 7200.0, dtype=np.float32)
    want = model_logits(module, dm, pos, start, candidate=(nxt, gap), elapsed=elapsed)
    hist = [_history(dm, a, b) for a, b in zip(start, pos)]
    items, actions, times = (list(c) for c in zip(*hist))
    got = rec.purchase_propensity(items, actions, times)
    assert got == pytest.approx(1 / (1 + np.exp(-want["purchase"])), abs=1e-5)
    churn = rec.churn_risk(items, actions, times, now=[t[-1] + 7200.0 for t in times])
    assert churn == pytest.approx(1 / (1 + np.exp(-want["churn"])), abs=1e-5)
    for row in range(6):
        na = rec.next_action(items[row], actions[row], times[row], next_item=dm.vocab.items[nxt[row] - 1],
                             at=times[row][-1] + float(gap[row]))
        p = np.exp(want["candidate"][row] - want["candidate"][row].max())
        assert list(na.probabilities.values()) == pytest.approx((p / p.sum()).tolist(), abs=1e-5)
        plain = rec.next_action(items[row], actions[row], times[row])
        q = np.exp(want["action"][row] - want["action"][row].max())
        assert list(plain.probabilities.values()) == pytest.approx((q / q.sum()).tolist(), abs=1e-5)
        assert na.next_item is not None and plain.next_item is None


def test_unknown_ids_are_dropped_with_their_actions_and_times(served):
    out, rec = served
    items, actions, times = ["i1", "i3", "i1"], ["cart", "pv", "pv"], [0.0, 60.0, 600.0]
    base = rec.purchase_propensity([items], [actions], [times])
    noisy = rec.purchase_propensity([["i1", "nope", "i3", "i1"]], [["cart", "buy", "pv", "pv"]],
                                    [[0.0, 30.0, 60.0, 600.0]])
    assert noisy == pytest.approx(base, abs=1e-7)
    assert rec.churn_risk([items + ["nope"]], [actions + ["pv"]], [times + [700.0]], now=900.0) == pytest.approx(
        rec.churn_risk([items], [actions], [times], now=900.0), abs=1e-7)
    unknown_candidate = rec.next_action(items, actions, times, next_item="nope", at=700.0)
    assert unknown_candidate.next_item is None
    assert unknown_candidate.probabilities == rec.next_action(items, actions, times).probabilities
    strict = Recommender.load(out, unknown="raise")
    with pytest.raises(UnknownItemError, match="nope"):
        strict.purchase_propensity([["i1", "nope"]], [["pv", "pv"]], [[0.0, 1.0]])


def test_empty_histories_get_no_estimate(served):
    out, rec = served
    got = rec.churn_risk([[], ["nope"], ["i2"]], [[], ["pv"], ["pv"]], [[], [5.0], [5.0]], now=100.0)
    assert np.isnan(got[:2]).all() and 0 < got[2] < 1
    assert np.isnan(rec.purchase_propensity([[]], [[]], [[]])).all()
    with pytest.raises(EmptyHistoryError):
        rec.next_action([], [], [])
    with pytest.raises(EmptyHistoryError):
        Recommender.load(out, empty="raise").purchase_propensity([[]], [[]], [[]])


def test_time_gap_models_need_timestamps_in_order(served):
    _, rec = served
    with pytest.raises(ValueError, match="timestamps"):
        rec.purchase_propensity([["i1"]], [["pv"]])
    with pytest.raises(ValueError, match="time order"):
        rec.churn_risk([["i1", "i2"]], [["pv", "pv"]], [[5.0, 1.0]])
    with pytest.raises(ValueError, match="before"):
        rec.churn_risk([["i1"]], [["pv"]], [[5.0]], now=1.0)
    with pytest.raises(ValueError, match="at="):
        rec.next_action(["i1"], ["pv"], [0.0], next_item="i2")


def test_save_then_load_answers_identically(served, tmp_path):
    from recsys.inference.artifact import load_artifact
    from recsys.inference.export import save_artifact

    out, rec = served
    again = Recommender.load(save_artifact(load_artifact(out), tmp_path / "copy"))
    hist = ([["i1", "i2", "i1"], ["i4"]], [["cart", "pv", "buy"], ["fav" if "fav" in rec.action_types else "pv"]],
            [[0.0, 100.0, 9000.0], [50.0]])
    assert np.array_equal(again.purchase_propensity(*hist), rec.purchase_propensity(*hist))
    assert np.array_equal(again.churn_risk(*hist, now=20000.0), rec.churn_risk(*hist, now=20000.0))
    a = again.next_action(hist[0][0], hist[1][0], hist[2][0], next_item="i2", at=9100.0)
    assert a == rec.next_action(hist[0][0], hist[1][0], hist[2][0], next_item="i2", at=9100.0)
    assert again.artifact.actions == rec.artifact.actions and rec.artifact.actions.churn_days == 0.5
