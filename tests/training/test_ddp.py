"""Multi-process training: Lightning DDP on 2 CPU processes (gloo) against one process.

One DDP run (`python -m recsys.cli fit ... train.devices=2`, a real subprocess: Lightning's
launcher re-runs the command line for rank 1, which an in-process pytest cannot host)
is compared with the same config trained in one process. Tolerances, documented in
docs/multi-process.md:

- evaluation of fixed weights: identical metrics and per-user ranks, every user once;
- training: validation NDCG@10 within ``NDCG_TOL`` and every weight within ``WEIGHT_TOL``.
  DDP's gradient is the one-process gradient summed in another order, so only float
  rounding separates the runs (measured here: identical metrics, weights within 8e-5);
  without the loss-share weighting the weights differ by ~7e-2 and NDCG@10 by ~0.013.
  Dropout is 0: DDP draws each process's dropout masks for its own slice, equal to one
  process's only in distribution.

The data has 301 users (odd, so the two processes' user shards differ: 151 and 150, in 7
and 6 evaluation batches of 25) and the batch size is 60, so every epoch ends with a
one-row global batch whose rank-1 slice is empty.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recsys import rundir
from recsys.config import DataConfig, ExperimentConfig
from recsys.data.collate import collate_eval, collate_train
from recsys.data.datamodule import SeqDataModule, shard
from recsys.data.synthetic import planted_markov_log
from recsys.errors import ConfigError
from recsys.nn.encoder import SASRecEncoder
from recsys.training import run
from recsys.training.module import SeqRecModule, TrainSettings, loss_shares
from recsys.types import PAD_ID

ROOT = Path(__file__).resolve().parents[2]
N_USERS, BATCH, EVAL_BATCH = 301, 60, 25
NDCG_TOL = 0.005  # ~4 of 301 users moving one place at the top of the ranking
WEIGHT_TOL = 2e-3  # max |w_ddp - w_one| over all weights (weights are O(1))
# Where a launcher (SLURM, torchrun) would tell Lightning to join its job instead of launching.
_LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _write_log(path: Path) -> None:
    log = planted_markov_log(n_users=N_USERS, n_items=60, p_follow=0.7, min_len=5, max_len=15, seed=3)
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_ENV and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process run dir, DDP run dir, DDP output_dir, DDP stdout)."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "events.csv"
    _write_log(data)
    cfg_path = tmp / "exp.yaml"
    cfg_path.write_text(f"""
name: ddp
seed: 5
output_dir: {tmp / 'ddp-runs'}
data: {{name: planted, format: csv, path: {data}}}
model: {{dim: 16, n_blocks: 1, n_heads: 1, max_len: 10, dropout: 0.0}}
train: {{batch_size: {BATCH}, lr: 0.01, max_epochs: 2, patience: 10, num_threads: 1, progress_bar: false,
        logit_precision: fp32, encoder_precision: fp32}}  # exact: bf16 rounding depends on each process's shapes
eval: {{ks: [1, 10], batch_size: {EVAL_BATCH}, monitor: ndcg@10}}
""")
    one = run.fit(ExperimentConfig.from_yaml(cfg_path), tmp / "one").run_dir
    # No --run-dir: each process would pick its own timestamped default, so this also
    # checks that rank 1 neither creates nor reports a directory of its own.
    proc = subprocess.run([sys.executable, "-m", "recsys.cli", "fit", "--config", str(cfg_path), "train.devices=2"],
                          cwd=tmp, env=_child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "ddp-runs"
    made = sorted(out.iterdir())
    assert len(made) == 1, made  # one run directory: rank 0's, complete (no .partial left)
    return one, made[0], out, proc.stdout


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_ddp_training_matches_one_process(runs):
    one, ddp, _, _ = runs
    m1, m2 = _metrics(one), _metrics(ddp)
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert ExperimentConfig.from_yaml(ddp / "config.yaml").train.devices == 2
    assert (m2["epochs"], m2["best_epoch"]) == (m1["epochs"], m1["best_epoch"])
    assert abs(m2["valid"]["ndcg@10"] - m1["valid"]["ndcg@10"]) <= NDCG_TOL
    assert abs(m2["test"]["ndcg@10"] - m1["test"]["ndcg@10"]) <= NDCG_TOL
    w1, w2 = _weights(one), _weights(ddp)
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= WEIGHT_TOL


def _evaluate_in_one_process(run_dir: Path) -> tuple[dict, dict]:
    """Metrics and per-user ranks of a run's best checkpoint, evaluated by one process."""
    cfg = ExperimentConfig.from_yaml(run_dir / "config.yaml").with_overrides(["train.devices=1"])
    dm = run._datamodule_for_run(cfg, run_dir)
    module = run._module(cfg, dm)
    run._load_weights(module, run_dir / rundir.BEST_CHECKPOINT)
    trainer = run._trainer(cfg, logger=False, enable_checkpointing=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    return module.last_metrics, module.last_ranks


def test_ddp_evaluation_scores_every_user_exactly_once(runs):
    _, ddp, _, _ = runs
    recorded = _metrics(ddp)  # evaluated by 2 processes (151 + 150 users)
    assert recorded["n_eval_users"] == N_USERS  # a padding DistributedSampler would give 302
    metrics, ranks = _evaluate_in_one_process(ddp)
    assert recorded["valid"] == metrics["val"] and recorded["test"] == metrics["test"]  # identical, not close
    saved = np.load(ddp / "ranks.npz")
    for split, stage in (("valid", "val"), ("test", "test")):
        assert saved[split].shape == (N_USERS,)
        np.testing.assert_array_equal(saved[split], ranks[stage].numpy())  # same users, same order


def test_only_rank_zero_writes_the_run_directory(runs):
    one, ddp, out, stdout = runs
    assert ddp.parent == out and not ddp.name.endswith(".partial")
    files = {p.relative_to(ddp) for p in ddp.rglob("*") if p.is_file()}
    assert files == {p.relative_to(one) for p in one.rglob("*") if p.is_file()}  # nothing extra, no .tmp
    assert json.loads((ddp / "status.json").read_text()) == {"status": "complete"}
    rows = [r.split(",") for r in (ddp / "logs" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("val/ndcg@10")
    assert sum(1 for r in rows[1:] if r[col]) == 2  # one validation row per epoch, not one per process
    # Both processes report rank 0's directory (rank 1 learns it by broadcast).
    assert stdout.count(f"run directory: {ddp}\n") == 2


# ---- the pieces, in one process --------------------------------------------------------------


def test_shards_cover_every_row_once():
    for world in range(1, 5):
        for n in range(0, 13):
            parts = [shard(n, r, world) for r in range(world)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp-data") / "events.csv"
    _write_log(path)
    return DataConfig(name="planted", format="csv", path=str(path))


def _datamodule(events: DataConfig, objective: str, rank: int, world: int) -> SeqDataModule:
    dm = SeqDataModule(events, max_len=10, batch_size=BATCH, eval_batch_size=EVAL_BATCH, seed=5,
                       objective=objective).prepare()
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)  # what Lightning attaches
    return dm


@pytest.mark.parametrize("objective", ["next", "cloze"])
def test_process_slices_of_each_training_batch_make_the_one_process_batch(events, objective):
    loaders = [_datamodule(events, objective, r, w).train_dataloader() for r, w in ((0, 1), (0, 2), (1, 2))]
    for epoch in (0, 1):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        batches = [list(loader) for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == len(batches[2]) == -(-N_USERS // BATCH)  # no rank waits
        assert batches[2][-1]["inputs"].shape[0] == 0  # the one-row last batch leaves rank 1 nothing
        for whole, a, b in zip(*batches):
            assert whole.keys() == a.keys() == b.keys()
            for key in whole:  # cloze masks included: drawn once for the global batch
                assert torch.equal(torch.cat([a[key], b[key]]), whole[key]), key


def test_evaluation_shards_hold_every_user_once(events):
    for world in (1, 2, 3):
        users = [batch["users"] for r in range(world)
                 for batch in _datamodule(events, "next", r, world).val_dataloader()]
        assert torch.equal(torch.cat(users).sort().values, torch.arange(N_USERS))
        for r in range(world):  # each process keeps its contiguous shard, whatever the order within it
            part = shard(N_USERS, r, world)
            got = torch.cat([b["users"] for b in _datamodule(events, "next", r, world).val_dataloader()])
            assert sorted(got.tolist()) == list(range(part.start, part.stop))
    with pytest.raises(ValueError, match="no evaluation users for process 301 of 302"):
        _datamodule(events, "next", 301, 302).val_dataloader()


def test_evaluation_batches_run_in_length_order_and_rank_as_unpadded_single_rows(events):
    dm = _datamodule(events, "next", 0, 1)
    held = dm.split.valid
    batches = list(dm.val_dataloader())
    real = torch.cat([(b["inputs"] != PAD_ID).sum(1) for b in batches])  # history length of each row
    assert (real[1:] >= real[:-1]).all() and real[0] < real[-1]  # shortest first, and the lengths differ
    assert len(batches) == -(-N_USERS // EVAL_BATCH) and all(len(b["users"]) == EVAL_BATCH for b in batches[:-1])
    lengths = np.minimum(held.end - held.start, 10)  # in user order
    in_user_order = sum(int(lengths[r : r + EVAL_BATCH].max()) * len(lengths[r : r + EVAL_BATCH])
                        for r in range(0, len(held), EVAL_BATCH))
    assert sum(b["inputs"].numel() for b in batches) < in_user_order  # the point: fewer padded positions
    torch.manual_seed(0)
    module = SeqRecModule(SASRecEncoder(dm.vocab.n_items, 8, 1, 1, 10, 0.0), TrainSettings(loss="ce")).eval()
    with torch.inference_mode():
        ranks = {}
        for b in batches:
            ranks.update(zip(b["users"].tolist(), module.rank(b).tolist()))
        # each user alone: no padding at all
        alone = [int(module.rank(collate_eval(dm.sequences.items, held, np.array([row]), 10))[0])
                 for row in range(len(held))]
    assert [ranks[int(u)] for u in held.user] == alone


def test_loss_shares_make_the_averaged_gradient_the_one_process_gradient(events):
    dm = _datamodule(events, "next", 0, 1)
    batch = collate_train(dm.sequences.items, dm.split.train, np.arange(7), 10)
    torch.manual_seed(0)
    module = SeqRecModule(SASRecEncoder(dm.vocab.n_items, 8, 1, 1, 10, 0.0), TrainSettings(loss="ce"))
    params = list(module.parameters())

    def grads(rows: slice, weight: float = 1.0) -> list[torch.Tensor]:
        hidden = module.encoder(batch["inputs"][rows])
        return torch.autograd.grad(weight * module._item_loss(hidden, batch["targets"][rows]), params)

    one = grads(slice(None))
    parts = [slice(0, 4), slice(4, 7)]
    local = torch.stack([(batch["targets"][p] != PAD_ID).sum() for p in parts])
    assert local[0] != local[1]  # unequal positions: plain averaging would be wrong
    shares = [loss_shares(local[r : r + 1], local.sum(0, keepdim=True), 2)[0] for r in range(2)]
    weighted = [grads(p, s) for p, s in zip(parts, shares)]
    plain = [grads(p) for p in parts]
    for g, a, b, pa, pb in zip(one, *weighted, *plain):
        assert torch.allclose((a + b) / 2, g, atol=1e-6)  # what DDP's mean of the weighted gradients gives
    assert not all(torch.allclose((pa + pb) / 2, g, atol=1e-6) for g, pa, pb in zip(one, *plain))


def test_device_settings_are_checked():
    with pytest.raises(ConfigError, match="train.accelerator"):
        ExperimentConfig().with_overrides(["train.accelerator=tpu"])
    with pytest.raises(ConfigError, match="train.devices"):
        ExperimentConfig().with_overrides(["train.devices=0"])
    with pytest.raises(ConfigError, match="num_nodes"):
        ExperimentConfig().with_overrides(["train.num_nodes=0"])

