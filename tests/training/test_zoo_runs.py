"""End-to-end zoo runs on a tiny planted log: baselines, action heads, BERT4Rec, sampled losses.

Each user walks the item cycle i -> i + 1, so the next item is fully determined by the
last one, and the action of an event is a function of its item (every 5th item is bought,
the one before it carted), so the next action is predictable from the last item.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.config import ExperimentConfig
from recsys.data.synthetic import optimal_metrics, planted_markov_log, successor_hit_rate
from recsys.errors import ConfigError
from recsys.training.build import build_datamodule, build_module
from recsys.training.run import evaluate, fit

N_ITEMS = 30


def _action(item: int) -> str:
    return "buy" if item % 5 == 0 else "cart" if item % 5 == 4 else "pv"


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("zoo") / "events.csv"
    rows = []
    for u in range(120):
        start, length, t0 = rng.integers(N_ITEMS), rng.integers(4, 12), int(rng.integers(10**6))
        for j in range(length):
            item = (start + j) % N_ITEMS
            rows.append(f"u{u},item{item:02d},{_action(item)},{t0 + 3600 * j}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _cfg(log: Path, tmp_path: Path, **sections) -> ExperimentConfig:
    raw = {
        "name": "zoo", "seed": 3, "output_dir": str(tmp_path),
        "data": {"name": "planted", "format": "csv", "path": str(log), "names": ["user", "item", "behavior", "ts"],
                 "user_col": "user", "item_col": "item", "time_col": "ts"},
        # the plain path, pinned: each test switches on what it is about (the library
        # defaults are the fast path in bf16 and the transition head, tested on their own)
        "model": {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 8, "dropout": 0.0,
                  "dropout_sampler": "bernoulli", "transition_lags": 0},
        "train": {"batch_size": 32, "lr": 0.01, "max_epochs": 3, "patience": 10, "progress_bar": False,
                  "num_threads": 1, "n_negatives": 8, "loss": "ce", "length_groups": 1,
                  "logit_precision": "fp32", "encoder_precision": "fp32"},
        "eval": {"ks": [1, 10], "monitor": "ndcg@10"},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return ExperimentConfig.from_dict(raw)


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_baseline_runs_write_a_run_directory_without_training(log, tmp_path):
    run = fit(_cfg(log, tmp_path, model={"name": "transitions"}), tmp_path / "transitions").run_dir
    m = _metrics(run)
    assert m["epochs"] == 0 and not (run / "checkpoints").exists()
    assert m["test"]["hr@1"] == 1.0  # every last -> next transition was seen in training
    ranks = np.load(run / "ranks.npz")
    assert ranks["test"].shape == (120,) and (ranks["test"] == 1).all()
    assert evaluate(run) == {"valid": m["valid"], "test": m["test"]}
    pop = _metrics(fit(_cfg(log, tmp_path, model={"name": "popularity"}), tmp_path / "pop").run_dir)
    assert pop["test"]["hr@1"] < 0.2  # one ranking for everyone cannot follow the cycle
    recent = _metrics(fit(_cfg(log, tmp_path, model={"name": "recent_popularity", "recent_days": 0.2}),
                          tmp_path / "recent").run_dir)
    assert recent["test"]["hr@10"] != pop["test"]["hr@10"] or recent["test"]["ndcg@10"] != pop["test"]["ndcg@10"]


def test_recent_popularity_refuses_data_without_timestamps(tmp_path):
    s3rec = tmp_path / "s.txt"
    s3rec.write_text("\n".join(f"u{u} " + " ".join(str(1 + (u + j) % 9) for j in range(5)) for u in range(20)) + "\n")
    cfg = ExperimentConfig.from_dict({"data": {"name": "s", "format": "s3rec", "path": str(s3rec)},
                                      "model": {"name": "recent_popularity"}, "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="real timestamps"):
        fit(cfg, tmp_path / "r")


def test_action_model_reports_next_action_and_purchase_beside_baselines(log, tmp_path):
    cfg = _cfg(log, tmp_path, data={"event_col": "behavior"},
               train={"max_epochs": 8, "purchase_horizon": 2, "action_loss_weight": 1.0},
               eval={"monitor": "action_nll"})
    run = fit(cfg, tmp_path / "actions").run_dir
    # selection on validation next-action log-loss: the best epoch is its minimum
    import csv

    rows = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r.get("val/action_nll")]
    nll = {int(r["epoch"]): float(r["val/action_nll"]) for r in rows}
    assert _metrics(run)["best_epoch"] == min(nll, key=nll.get)
    assert json.loads((run / "events.json").read_text())["names"] == ["buy", "cart", "pv"]
    report = _metrics(run)["next_action"]
    assert report["actions"] == ["buy", "cart", "pv"] and report["purchase_horizon"] == 2
    test = report["test"]
    assert set(test["next_action"]) == {"model", "model_prior_corrected", "majority_class", "repeat_last_action",
                                        "action_markov", "action_markov_prior_corrected",
                                        "model_valid_weighted", "action_markov_valid_weighted"}
    weights = report["valid_fitted_class_weights"]
    assert set(weights) == {"model", "action_markov"} and set(weights["model"]) == {"buy", "cart", "pv"}
    assert weights["model"]["buy"] == 1.0  # class 0 is the reference weight
    assert sum(report["train_next_action_distribution"].values()) == pytest.approx(1.0)
    assert test["next_action"]["model"]["n"] == 120
    assert set(test["next_action"]["model"]["roc_auc"]) == {"buy", "cart", "pv"}
    # the next action follows from the last item, which the model reads and the baselines do not
    f1 = {k: v["macro_f1"] for k, v in test["next_action"].items()}
    assert f1["model"] > max(f1["majority_class"], f1["repeat_last_action"]), f1
    assert test["purchase"]["model"]["roc_auc"] > 0.5
    assert set(test["purchase"]) == {"model", "base_rate", "rate_given_last_action"}
    # Horizon 2 from the held-out event, but a validation label stops at the validation event
    # (the next one is the test event) and a test label at the log's end: both labels are
    # "the held-out event is a buy", counted here from the raw rows.
    actions = {}
    for line in log.read_text().splitlines():
        user, _, action, _ = line.split(",")
        actions.setdefault(user, []).append(action)
    for key, from_end in (("valid", 2), ("test", 1)):
        bought = np.mean([a[-from_end] == "buy" for a in actions.values()])
        assert report[key]["purchase"]["model"]["positive_rate"] == pytest.approx(bought, abs=1e-12), key
    leaky = np.mean(["buy" in a[-2:] for a in actions.values()])
    assert report["valid"]["purchase"]["model"]["positive_rate"] < leaky  # the test event's buys are out
    assert evaluate(run)["test"] == _metrics(run)["test"]


@pytest.fixture(scope="module")
def popularity(log, tmp_path_factory) -> dict:
    """The history-blind baseline on this log: what a model that ignores the sequence gets."""
    tmp = tmp_path_factory.mktemp("pop")
    return _metrics(fit(_cfg(log, tmp, model={"name": "popularity"}), tmp / "pop").run_dir)


@pytest.mark.parametrize("over", [
    {"model": {"name": "bert4rec"}},
    {"train": {"loss": "sampled", "sampler": "in_batch"}},
    {"train": {"loss": "gbce"}},
])
def test_seeded_runs_repeat_exactly(log, tmp_path, over, popularity):
    """Three epochs leave these models short of the cycle (metrics well below 1), so equal
    metrics are not equal saturation: ranks and weights must repeat bit for bit too."""
    a, b = (fit(_cfg(log, tmp_path, **over), tmp_path / name).run_dir for name in ("a", "b"))
    ma, mb = _metrics(a), _metrics(b)
    assert ma["valid"] == mb["valid"] and ma["test"] == mb["test"]
    ra, rb = np.load(a / "ranks.npz"), np.load(b / "ranks.npz")
    assert all(np.array_equal(ra[s], rb[s]) for s in ("valid", "test"))
    wa, wb = (torch.load(r / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # it reads the sequence: it beats the best ranking that ignores it, by more than noise
    assert ma["test"]["ndcg@10"] > popularity["test"]["ndcg@10"] + 0.05, (ma["test"], popularity["test"])


def _epoch_losses(run: Path) -> list[float]:
    import csv

    rows = csv.DictReader(open(run / "logs" / "metrics.csv"))
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


def test_fast_paths_train_the_same_model(log, tmp_path, monkeypatch):
    """``train.length_groups`` and ``ce_chunked`` change only how the step is computed: at
    dropout 0 (nothing random in the step) each epoch's mean training loss, the mean over
    every target position of the epoch, is the plain run's up to float rounding, and so
    are the metrics (three epochs leave them below 1, so they can tell)."""
    import recsys.nn.kernels.grouped as grouped

    buckets = []  # the bucket each training step grouped with, as fit passed the settings down
    group_by_length = grouped.group_by_length
    monkeypatch.setattr(grouped, "group_by_length", lambda x, g, b=1: buckets.append(b) or group_by_length(x, g, b))
    plain_run = fit(_cfg(log, tmp_path), tmp_path / "plain").run_dir
    assert not buckets
    fast_run = fit(_cfg(log, tmp_path, train={"length_groups": 3, "length_bucket": 1, "loss": "ce_chunked",
                                              "chunk_size": 7}), tmp_path / "fast").run_dir
    # widths rounded up to multiples of 4 columns: more padding, the same model again
    bucket_cfg = _cfg(log, tmp_path, train={"length_groups": 3, "length_bucket": 4})
    assert build_module(bucket_cfg, build_datamodule(bucket_cfg)).settings.length_bucket == 4
    assert buckets and set(buckets) == {1}
    buckets.clear()
    bucket_run = fit(bucket_cfg, tmp_path / "bucket").run_dir
    assert buckets and set(buckets) == {4}
    plain = _metrics(plain_run)
    assert plain["test"]["ndcg@10"] < 0.95
    losses = _epoch_losses(plain_run)
    assert len(losses) == plain["epochs"] and losses[-1] < losses[0]
    for run in (fast_run, bucket_run):
        got = _metrics(run)
        for split in ("valid", "test"):
            for metric, value in plain[split].items():
                assert got[split][metric] == pytest.approx(value, abs=1e-3), (run.name, split, metric)
        assert _epoch_losses(run) == pytest.approx(losses, rel=1e-4), run.name
    bf16 = _cfg(log, tmp_path, train={"loss": "ce_chunked", "chunk_size": 7, "logit_precision": "bf16"})
    assert build_module(bf16, build_datamodule(bf16)).settings.loss_options == {"chunk_size": 7, "precision": "bf16"}


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    """A log a model cannot saturate, with a known optimum (``recsys.data.synthetic``), and
    the plain run's share of that optimum (test NDCG@10) at dropout 0.2."""
    tmp = tmp_path_factory.mktemp("markov")
    planted = planted_markov_log(n_users=1200, n_items=200, p_follow=0.7, min_len=6, max_len=14, seed=3)
    path = tmp / "planted.csv"
    planted.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)
    best = optimal_metrics(planted, (10,), q=successor_hit_rate(planted, 1))["ndcg@10"]

    def share(overrides: list[str], name: str) -> float:
        cfg = ExperimentConfig.from_dict({
            "name": "planted", "seed": 0, "output_dir": str(tmp),
            "data": {"name": "planted", "format": "csv", "path": str(path)},
            # the plain path, pinned (the library defaults are the fast path and the head)
            "model": {"dim": 32, "n_blocks": 1, "n_heads": 1, "max_len": 10, "dropout": 0.2,
                      "dropout_sampler": "bernoulli", "transition_lags": 0},
            "train": {"batch_size": 128, "lr": 0.005, "max_epochs": 8, "patience": 3, "progress_bar": False,
                      "num_threads": 1, "loss": "ce", "length_groups": 1},
            "eval": {"ks": [10], "monitor": "ndcg@10"},
        }).with_overrides(overrides)
        return fit(cfg, tmp / name).metrics["test"]["ndcg@10"] / best

    return share, share([], "plain")


@pytest.mark.parametrize("overrides", [
    ["model.dropout_sampler=uniform"],
    ["train.loss=ce_chunked", "train.chunk_size=7", "train.logit_precision=bf16"],
    ["train.encoder_precision=bf16"],
], ids=["uniform-dropout", "bf16-logits", "bf16-encoder"])
def test_fast_path_options_reach_the_plain_runs_share_of_the_optimum(markov, overrides):
    """Options that change the arithmetic (bf16) or the random draws (the uniform sampler)
    cannot repeat the plain run, but must train as well: on a log whose optimum is known,
    the plain run gets close to it (and never above: that would be leakage), and each
    option gets within 3 points of the plain run's share."""
    share, plain = markov
    assert 0.93 <= plain <= 1.02, plain
    got = share(overrides, "-".join(overrides))
    assert abs(got - plain) <= 0.03 and got <= 1.02, (got, plain)


def test_bf16_encoder_autocast_is_close_to_fp32(log, tmp_path):
    """``train.encoder_precision=bf16`` runs the encoder's training forward under bf16 autocast:
    its outputs differ from fp32 (autocast is really on) by bf16 rounding only. (That a run
    with it trains as well: ``test_fast_path_options_reach_the_plain_runs_share_of_the_optimum``.)"""
    cfgs = {p: _cfg(log, tmp_path, train={"encoder_precision": p}) for p in ("fp32", "bf16")}
    dm = build_datamodule(cfgs["fp32"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    hidden = {}
    for precision, cfg in cfgs.items():
        torch.manual_seed(0)
        module = build_module(cfg, dm).eval()  # eval: no dropout, the same weights for both
        with module.training_autocast():
            hidden[precision] = module.encoder(batch["inputs"]).float()
    assert not torch.equal(hidden["bf16"], hidden["fp32"])
    rel = (hidden["bf16"] - hidden["fp32"]).norm() / hidden["fp32"].norm()
    assert rel < 0.02, rel


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "length_groups", 0, "train.length_groups must be >= 1"),
    ("train", "length_bucket", 0, "train.length_bucket must be >= 1"),
    ("model", "dropout_sampler", "gauss", "model.dropout_sampler must be one of"),
    ("train", "encoder_precision", "fp16", "train.encoder_precision must be fp32 or bf16"),
])
def test_fast_path_options_are_checked(log, tmp_path, section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(log, tmp_path, **{section: {key: value}})
