"""Fixtures for the serving tests: a tiny real run (CSV -> fit -> export) and random artifacts.

Everything is built in-process under pytest's tmp folders: no network, no /tmp state.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.config import ENCODERS, ModelConfig
from recsys.inference import random_artifact, save_artifact
from recsys.inference.artifact import Artifact
from recsys.nn.blocks import BLOCKS

N_ITEMS = 30
SMALL_MODEL = ModelConfig(dim=16, n_blocks=2, n_heads=2, max_len=8, dropout=0.1)


def write_log(path: Path, n_users: int = 60, seed: int = 0) -> None:
    """Users walk the item cycle i -> i+1 (as in tests/integration/test_cli.py)."""
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        start, length = rng.integers(N_ITEMS), rng.integers(4, 14)
        for j in range(length):
            lines.append(f"u{u},item{(start + j) % N_ITEMS:02d},{1000 + 60 * j}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory) -> Path:
    """A finished run directory from `recsys.training.run.fit` (2 epochs on a planted log)."""
    from recsys.config import ExperimentConfig
    from recsys.training.run import fit

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("run")
    log = root / "events.csv"
    write_log(log)
    cfg = ExperimentConfig.from_dict(
        {
            "name": "tiny",
            "seed": 3,
            "output_dir": str(root / "runs"),
            "data": {"name": "planted", "format": "csv", "path": str(log)},
            "model": {"dim": 16, "n_blocks": 2, "n_heads": 2, "max_len": 8, "dropout": 0.1},
            "train": {"batch_size": 16, "lr": 0.01, "max_epochs": 2, "patience": 5, "progress_bar": False},
            "eval": {"ks": [1, 10], "monitor": "ndcg@10"},
        }
    )
    return fit(cfg, run_dir=root / "run").run_dir


@pytest.fixture(scope="session")
def exported(fitted_run, tmp_path_factory) -> Path:
    """The fitted run exported with `recsys export` (training counts included)."""
    from recsys.cli import main

    out = tmp_path_factory.mktemp("exported") / "artifact"
    assert main(["export", str(fitted_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory) -> Path:
    """Random weights, 50 items, max_len 8, with popularity counts."""
    return save_artifact(random_artifact(50, SMALL_MODEL, seed=1), tmp_path_factory.mktemp("small") / "art")


# The causal models of the block registry (recsys.nn.blocks): export and serving run for each.
BLOCK_MODELS = sorted(name for name, spec in ENCODERS.items() if spec.causal and spec.block in BLOCKS)


def block_artifact(name: str, n_items: int, seed: int) -> Artifact:
    """Random ``SMALL_MODEL`` weights with model ``name``'s block, every block tensor moved off
    its init (zero biases and unit norms would hide a padding leak or a dropped bias)."""
    art = random_artifact(n_items, dataclasses.replace(SMALL_MODEL, name=name), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    moved = {k: v + 0.1 * torch.randn(v.shape, generator=gen) if k.startswith("blocks.") and v.is_floating_point()
             else v for k, v in art.state_dict.items()}
    return dataclasses.replace(art, state_dict=moved)


@pytest.fixture(scope="session", params=BLOCK_MODELS)
def onnx_artifact(request, tmp_path_factory) -> Path:
    """Random weights of each block's model with model.onnx returning every item (k = n_items)
    for full parity checks."""
    art = block_artifact(request.param, 40, seed=2)
    return save_artifact(art, tmp_path_factory.mktemp("onnx") / "art", onnx_k=40)


def _action(item: int) -> str:
    return "buy" if item % 5 == 0 else "cart" if item % 5 == 4 else "view"


@pytest.fixture(scope="session")
def zoo_run(tmp_path_factory) -> Path:
    """SASRec reading action types, with item attributes and next-action + purchase heads:
    the optional inputs and heads of the zoo in one small run (actions are causal-only)."""
    import json

    from recsys.config import ExperimentConfig
    from recsys.training.run import fit

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(1)
    rows = ["user_id,item_id,action,timestamp"]
    for u in range(60):
        start, length = rng.integers(N_ITEMS), rng.integers(4, 12)
        for j in range(length):
            item = (start + j) % N_ITEMS
            rows.append(f"u{u},item{item:02d},{_action(item)},{1000 + 60 * j}")
    (root / "events.csv").write_text("\n".join(rows) + "\n")
    (root / "attrs.json").write_text(json.dumps({f"item{i:02d}": [f"c{i % 3}", f"b{i % 4}"] for i in range(N_ITEMS)}))
    cfg = ExperimentConfig.from_dict(
        {
            "name": "zoo",
            "seed": 5,
            "output_dir": str(root / "runs"),
            "data": {"name": "planted-actions", "format": "csv", "path": str(root / "events.csv"),
                     "event_col": "action", "item_attributes": str(root / "attrs.json")},
            "model": {"name": "sasrec", "dim": 16, "n_blocks": 1, "n_heads": 2, "max_len": 6, "dropout": 0.1},
            "train": {"batch_size": 16, "lr": 0.01, "max_epochs": 1, "patience": 5, "progress_bar": False,
                      "purchase_horizon": 2, "purchase_event": "buy"},
            "eval": {"ks": [1, 10], "monitor": "ndcg@10"},
        }
    )
    return fit(cfg, run_dir=root / "run").run_dir
