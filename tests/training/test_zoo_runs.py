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
        "model": {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 8, "dropout": 0.0},
        "train": {"batch_size": 32, "lr": 0.01, "max_epochs": 3, "patience": 10, "progress_bar": False,
                  "num_threads": 1, "n_negatives": 8},
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
    assert evaluate(run)["test"] == _metrics(run)["test"]


@pytest.mark.parametrize("over", [
    {"model": {"name": "bert4rec"}},
    {"train": {"loss": "sampled", "sampler": "in_batch"}},
    {"train": {"loss": "gbce"}},
])
def test_seeded_runs_repeat_exactly(log, tmp_path, over):
    a = _metrics(fit(_cfg(log, tmp_path, **over), tmp_path / "a").run_dir)
    b = _metrics(fit(_cfg(log, tmp_path, **over), tmp_path / "b").run_dir)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
    assert a["test"]["hr@10"] > 10 / N_ITEMS  # it learned something beyond chance


def test_fast_paths_train_the_same_model(log, tmp_path):
    """``train.length_groups`` and ``ce_chunked`` change only how the step is computed: at
    dropout 0 (nothing random in the step) they reach the plain run's metrics. The uniform
    dropout sampler is a different draw, so it is only required to learn the cycle as well."""
    plain = _metrics(fit(_cfg(log, tmp_path), tmp_path / "plain").run_dir)
    fast = _metrics(fit(_cfg(log, tmp_path, train={"length_groups": 3, "loss": "ce_chunked", "chunk_size": 7}),
                        tmp_path / "fast").run_dir)
    for split in ("valid", "test"):
        for metric, value in plain[split].items():
            assert fast[split][metric] == pytest.approx(value, abs=1e-3), (split, metric)
    sampled = _metrics(fit(_cfg(log, tmp_path, model={"dropout": 0.2, "dropout_sampler": "uniform"}),
                           tmp_path / "uniform").run_dir)
    assert sampled["test"]["hr@10"] > 0.9
    bf16 = _cfg(log, tmp_path, train={"loss": "ce_chunked", "chunk_size": 7, "logit_precision": "bf16"})
    assert build_module(bf16, build_datamodule(bf16)).loss_options == {"chunk_size": 7, "precision": "bf16"}
    assert _metrics(fit(bf16, tmp_path / "bf16").run_dir)["test"]["hr@10"] > 0.9


def test_bf16_encoder_autocast_is_close_to_fp32_and_trains(log, tmp_path):
    """``train.encoder_precision=bf16`` runs the encoder's training forward under bf16 autocast:
    its outputs differ from fp32 (autocast is really on) by bf16 rounding only, and a run
    with it learns the cycle."""
    cfgs = {p: _cfg(log, tmp_path, train={"encoder_precision": p}) for p in ("fp32", "bf16")}
    dm = build_datamodule(cfgs["fp32"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    hidden = {}
    for precision, cfg in cfgs.items():
        torch.manual_seed(0)
        module = build_module(cfg, dm).eval()  # eval: no dropout, the same weights for both
        with module._training_autocast():
            hidden[precision] = module.encoder(batch["inputs"]).float()
    assert not torch.equal(hidden["bf16"], hidden["fp32"])
    rel = (hidden["bf16"] - hidden["fp32"]).norm() / hidden["fp32"].norm()
    assert rel < 0.02, rel
    assert _metrics(fit(cfgs["bf16"], tmp_path / "bf16").run_dir)["test"]["hr@10"] > 0.9


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "length_groups", 0, "train.length_groups must be >= 1"),
    ("model", "dropout_sampler", "gauss", "model.dropout_sampler must be one of"),
    ("train", "encoder_precision", "fp16", "train.encoder_precision must be fp32 or bf16"),
])
def test_fast_path_options_are_checked(log, tmp_path, section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(log, tmp_path, **{section: {key: value}})
