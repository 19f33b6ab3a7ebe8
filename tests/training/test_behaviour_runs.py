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
