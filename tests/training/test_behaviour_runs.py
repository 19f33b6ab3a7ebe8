"""End to end through ``fit``: the behaviour report on the held-out tail of time."""

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.config import ExperimentConfig
from recsys.training.run import fit

H = 3600


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """60 users over 10 days: views, carts of the viewed item, buys of carted items."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        t = int(rng.integers(0, 48 * H))
        cart = None
        for _ in range(int(rng.integers(8, 30))):
            t += int(rng.exponential(4 * H))
            if cart is not None and rng.random() < 0.5:
                item, action, cart = cart, "buy", None
            else:
                item = int(rng.integers(20))
                action = "cart" if rng.random() < 0.2 else "pv"
                cart = item if action == "cart" else cart
            rows.append(f"u{u},i{item},{action},{t}")
    path = tmp_path_factory.mktemp("behaviour") / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def cfg_for(log: Path, tmp_path: Path, **sections) -> ExperimentConfig:
    raw = {
        "name": "behaviour", "seed": 1, "output_dir": str(tmp_path),
        "data": {"name": "tiny", "format": "csv", "path": str(log), "names": ["user", "item", "behavior", "ts"],
                 "user_col": "user", "item_col": "item", "time_col": "ts", "event_col": "behavior",
                 "split": "temporal", "split_valid_quantile": 0.6, "split_quantile": 0.8},
        "model": {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 20, "dropout": 0.0,
                  "dropout_sampler": "bernoulli", "transition_lags": 0},
        "train": {"batch_size": 32, "lr": 0.01, "max_epochs": 2, "patience": 10, "progress_bar": False,
                  "num_threads": 1, "loss": "ce", "length_groups": 1, "logit_precision": "fp32",
                  "encoder_precision": "fp32", "purchase_horizon": 2},
        "eval": {"ks": [1, 10], "monitor": "action_nll"},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return ExperimentConfig.from_dict(raw)


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_fit_reports_every_tail_moment_for_the_model_and_the_baselines(log, tmp_path):
    report = metrics(fit(cfg_for(log, tmp_path), tmp_path / "run").run_dir)["behaviour"]
    w = report["window"]
    # counted from the raw rows: every event after the test cut is a moment; the ones with a
    # next event of the same user are next-action moments
    rows = [line.split(",") for line in log.read_text().splitlines()]
    by_user: dict[str, list[int]] = {}
    for user, _, _, t in rows:
        by_user.setdefault(user, []).append(int(t))
    moments = sum(t > w["t_test"] for ts in by_user.values() for t in ts)
    with_next = sum(t > w["t_test"] for ts in by_user.values() for t in ts[:-1])
    test = report["test"]
    assert test["moments"] == moments
    expected = {"majority_class", "repeat_last_action", "action_markov", "logistic", "gbm", "model"}
    assert set(test["next_action"]) == expected
    assert all(r["n"] == with_next for r in test["next_action"].values())
    assert set(test["purchase"]) == {"base_rate", "rate_given_last_action", "logistic", "gbm", "model"}
    model = test["next_action"]["model"]
    assert model["log_loss_ci"][0] <= model["log_loss"] <= model["log_loss_ci"][1]
    assert "log_loss_ci" not in report["valid"]["next_action"]["model"]  # validation: no intervals
    assert set(test["next_action_paired"]) == {f"model - {k}" for k in expected - {"model"}}
    assert w["t_valid"] < w["t_test"] < w["t_end"]


def test_no_report_under_leave_one_out(log, tmp_path):
    m = metrics(fit(cfg_for(log, tmp_path, data={"split": "loo"}, train={"max_epochs": 1}), tmp_path / "loo").run_dir)
    assert "behaviour" not in m and "next_action" in m


# ---- every switch that changes a reported number, on and off through fit ---------------

HEADS = {"model": {"action_candidate": True}, "train": {"churn_days": 0.5}}


def _with(base: dict, **sections) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


@pytest.fixture(scope="module")
def base_run(log, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    return fit(cfg_for(log, tmp, **_with(HEADS)), tmp / "base").run_dir


def _model_figures(report: dict) -> tuple:
    t = report["test"]
    return (t["next_action"]["model"]["log_loss"], t["next_action_given"]["model"]["log_loss"],
            t["purchase"]["model"]["log_loss"], t["churn"]["model"]["log_loss"])


def test_candidate_and_churn_heads_are_reported_beside_their_baselines(log, base_run, tmp_path):
    from recsys.data.behaviour import churn_snapshots
    from recsys.data.events import load_events
    from recsys.data.sequences import EventVocab, build_sequences
    from recsys.data.vocab import Vocab

    report = metrics(base_run)["behaviour"]
    test = report["test"]
    assert set(test["next_action_given"]) == {"logistic", "gbm", "model"}
    assert set(test["churn"]) == {"recency", "logistic", "gbm", "model"}
    assert report["churn_days"] == 0.5 and report["train_snapshots"] > 0
    # the snapshots are the protocol's, on the window the report states
    cfg = cfg_for(log, tmp_path, **_with(HEADS))
    frame = load_events(cfg.data).frame
    seqs = build_sequences(frame, Vocab.build(frame["item"]), EventVocab.build(frame["event"]))
    w = report["window"]
    snaps = churn_snapshots(seqs, w["t_test"], w["t_end"], 0.5 * 86400)
    assert test["snapshots"] == len(snaps) == test["churn"]["model"]["n"]
    assert test["churn"]["model"]["positive_rate"] == pytest.approx(snaps.label.mean())
    plain = metrics(fit(cfg_for(log, tmp_path), tmp_path / "plain").run_dir)["behaviour"]
    assert "churn" not in plain["test"] and "model" not in plain["test"]["next_action_given"]


@pytest.mark.parametrize("switch", [
    {"model": {"time_gaps": True}},
    {"model": {"item_relations": True}},
    {"model": {"time_gaps": True, "history_summary": True}},
    {"model": {"head_dropout": 0.3}},
    {"train": {"head_weight_decay": 0.5}},
    {"train": {"churn_loss_weight": 2.0}},
    {"train": {"item_loss_weight": 0.0}},
])
def test_each_head_switch_changes_what_fit_reports(log, base_run, tmp_path, switch):
    on = fit(cfg_for(log, tmp_path, **_with(HEADS, **switch)), tmp_path / "on").run_dir
    assert _model_figures(metrics(on)["behaviour"]) != _model_figures(metrics(base_run)["behaviour"])
    if switch.get("train", {}).get("item_loss_weight") == 0.0:
        import csv

        rows = [r for r in csv.DictReader(open(on / "logs" / "metrics.csv")) if r.get("train/item_loss")]
        assert rows and all(float(r["train/item_loss"]) == 0.0 for r in rows)  # no catalogue softmax
    if switch.get("model", {}).get("time_gaps") and not switch["model"].get("history_summary"):
        import torch

        from recsys.nn.heads import N_GAP_BUCKETS

        rows = {run: torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"][
            "encoder.event_emb.weight"].shape[0] for run in (on, base_run)}
        assert rows == {on: 3 * N_GAP_BUCKETS + 1, base_run: 3 + 1}  # (buy, cart, pv) x gap bucket vs actions


def test_calibration_only_rescales_the_heads(log, base_run, tmp_path):
    import math

    import torch

    on = fit(cfg_for(log, tmp_path, **_with(HEADS, train={"calibrate": True})), tmp_path / "cal").run_dir
    cal, raw = metrics(on)["behaviour"], metrics(base_run)["behaviour"]
    assert "temperatures" in cal and "temperatures" not in raw
    assert set(cal["temperatures"]) == {"action", "candidate", "purchase", "churn"}
    # same training; validation figures are the uncalibrated heads', the test ones are rescaled
    assert cal["valid"]["next_action_given"]["model"] == raw["valid"]["next_action_given"]["model"]
    assert _model_figures(cal) != _model_figures(raw)
    for head in ("candidate", "churn"):  # calibration cannot make the fitted-on data worse
        task = "next_action_given" if head == "candidate" else "churn"
        assert cal["test"][task]["model"]["roc_auc" if head == "churn" else "accuracy"] == pytest.approx(
            raw["test"][task]["model"]["roc_auc" if head == "churn" else "accuracy"])  # ranks unchanged
    saved = torch.load(on / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]["heads.log_temperature"]
    from recsys.nn.heads import HEAD_NAMES

    assert saved.tolist() == pytest.approx([math.log(cal["temperatures"][h]) for h in HEAD_NAMES])


def test_selection_on_the_validation_windows_log_loss(log, tmp_path):
    import csv

    cfg = cfg_for(log, tmp_path, **_with(HEADS, train={"max_epochs": 3}, eval={"monitor": "behaviour_nll"}))
    run = fit(cfg, tmp_path / "sel").run_dir
    rows = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r.get("val/behaviour_nll")]
    nll = {int(r["epoch"]): float(r["val/behaviour_nll"]) for r in rows}
    assert len(nll) == 3 and metrics(run)["best_epoch"] == min(nll, key=nll.get)
    parts = sum(float(rows[0][f"val/tail_{h}_nll"]) for h in ("action", "candidate", "purchase", "churn"))
    assert float(rows[0]["val/behaviour_nll"]) == pytest.approx(parts)


def test_the_monitor_scores_a_seeded_subset_of_users_above_its_cap(log, tmp_path):
    from recsys.training.behaviour import BehaviourMonitor
    from recsys.training.build import build_datamodule

    cfg = cfg_for(log, tmp_path, **_with(HEADS))
    dm = build_datamodule(cfg)
    whole = BehaviourMonitor(dm, cfg)
    part = BehaviourMonitor(dm, cfg, max_moments=len(whole.m) // 3)
    users = set(part.m.user.tolist())
    assert len(whole.m) // 3 <= len(part.m) < len(whole.m)
    # whole users: every moment and snapshot of a chosen user, none of the others
    assert (np.bincount(part.m.user, minlength=60) == np.bincount(whole.m.user, minlength=60) * np.isin(
        np.arange(60), list(users))).all()
    full = np.bincount(whole.snaps.user, minlength=60)
    kept = np.bincount(part.snaps.user, minlength=60)
    assert ((kept == full) | (kept == 0)).all() and 0 < kept.sum() < full.sum()
    again = BehaviourMonitor(dm, cfg, max_moments=len(whole.m) // 3)
    assert np.array_equal(again.m.pos, part.m.pos)  # seeded
