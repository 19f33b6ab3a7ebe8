"""Training and evaluation speed of recsys on this machine, against its measured GEMM rate.

    .venv/bin/python benchmarks/speed.py                      # all sections, writes benchmarks/SPEED.md
    .venv/bin/python benchmarks/speed.py --sections gemm step --out /tmp/SPEED.md

Sections (issue 6):

- ``gemm``: the machine's matrix-multiply rate with torch on ``--threads`` threads, fp32 and
  bf16 (bf16 inputs, fp32 accumulation), on a large square product (the peak) and on the
  training step's own logit shape.
- ``step``: one training step of SASRec with full softmax CE (forward, backward, Adam) on real
  batches of the ML-1M partial, with the issue's settings (max length 200, 2 blocks, d 64,
  1 head, dropout 0.2, batch 128, Adam 1e-3). Its FLOPs are counted from the batch shapes
  (see ``step_flops``) and divided by the measured time: achieved / peak.
- ``epoch``: median seconds per epoch of ``recsys.training.run.fit`` (Lightning, the real
  data loader, validation timed apart), the same settings, on the ML-1M partial and S3-Rec
  Beauty. Data preparation (read, vocabulary, split) is timed on its own.
- ``eval``: full-ranking evaluation of every S3-Rec Beauty user (test split: encoder on the
  newest position, scores over all 12,101 items, pessimistic ranks), batched, in users/s.
- ``peers``: SASRec side by side, same data, settings and threads: ours
  (``benchmarks/peers/run_ours.py``, ``recsys.training.run.fit``), RecTools
  (``run_rectools.py``) and RecBole (``run_recbole.py``), each in a process of its own. The
  peers run in their own environment, ``benchmarks/peers/.venv``, created here from
  ``benchmarks/peers/requirements.txt`` if missing; they are never dependencies of recsys.
  Every library gets the one leave-one-out split recsys makes, and every library's
  validation (after each epoch) and test NDCG@10 come from recsys's ranking and metric code
  (``benchmarks/peers/common.py``). A run stops after ``--peer-max-epochs``, after
  ``--patience`` epochs without a better validation NDCG@10, or after ``--budget-minutes``.

  The default budget, 60 minutes a run, lets RecBole finish one epoch on the ML-1M partial
  (about 48 minutes); the whole section takes up to about 6 hours on a quiet 2-core machine.

    .venv/bin/python benchmarks/speed.py --sections gemm step epoch eval peers    # everything
    .venv/bin/python benchmarks/speed.py --sections peers --max-users 300 --budget-minutes 2 \
        --peer-max-epochs 2 --out /tmp/SPEED.md                                    # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from _common import (  # noqa: E402
    DATA_DIR, ROOT, child_env, load_average, machine, peak_rss_gb, run_and_wait, table, table_row, write_atomic,
)

os.environ.setdefault("RECSYS_DATA_DIR", str(DATA_DIR))  # as the Makefile

from peers import report  # noqa: E402
from peers.common import prepared_from_split, save_prepared, write_peer_files  # noqa: E402
from peers.run_ours import EpochClock  # noqa: E402

from recsys.config import ExperimentConfig  # noqa: E402
from recsys.eval.metrics import summarise  # noqa: E402
from recsys.nn.encoder import group_by_length  # noqa: E402
from recsys.training.build import build_datamodule, build_module  # noqa: E402
from recsys.training.provenance import git_commit  # noqa: E402

ISSUE_SETTINGS = [  # issue 6: "max length 200, 2 blocks, hidden size 64, 1 head, dropout 0.2, batch 128, Adam lr 1e-3"
    "model.max_len=200", "model.n_blocks=2", "model.dim=64", "model.n_heads=1", "model.dropout=0.2",
    "train.batch_size=128", "train.lr=0.001", "train.loss=ce", "train.logit_precision=fp32",
]
# How ours runs the issue's settings: the same model, loss and batches, computed faster.
# - train.loss=ce_chunked: the full softmax CE, its gradients formed block by block in the
#   forward pass (recsys.nn.kernels.softmax_ce.ChunkedSoftmaxCE; 512 rows x V logits at a time);
# - train.logit_precision=bf16: its three (positions x catalogue) products on bf16 inputs and
#   torch's fused softmax over each chunk (fp32 inside, bf16 out); train.encoder_precision=bf16: the encoder's training forward under bf16
#   autocast (the issue's "bf16 autocast as a lever"; SPEED.md shows the fp32 fast path beside
#   it);
# - train.length_groups=4: each batch of 128 rows runs as 4 groups of similar length, each
#   trimmed to its longest row (SASRecEncoder.grouped_forward);
# - model.dropout_sampler=uniform: dropout masks from 16-bit uniform integers instead of bernoulli_.
# All are library defaults since issue 18; the frozen experiments pin them off, so they keep
# their exact trajectories.
FAST_PATH = ["train.loss=ce_chunked", "train.chunk_size=512", "train.logit_precision=bf16",
             "train.encoder_precision=bf16", "train.length_groups=4", "model.dropout_sampler=uniform"]
FAST_PATH_FP32 = [o for o in FAST_PATH if "precision" not in o] + ["train.logit_precision=fp32",
                                                                   "train.encoder_precision=fp32"]
DATASETS = {
    "ml-1m-partial": "experiments/ml-1m-partial/sasrec-ce.yaml",
    "s3rec-beauty": "experiments/s3rec-beauty/sasrec-ce.yaml",
}
# Reference figures for the peers, quoted from issue 6 ("measured on this machine on the ML-1M
# partial with the settings above"); not re-measured by this script.
PEER_REFERENCE = [
    ("RecTools 0.19 SASRec", "38.5 s", "validation NDCG@10 0.084 after 19 epochs (about 15 min); "
     "test NDCG@10 0.105 after 40 min, still rising", "2.3 GB"),
    ("RecBole 1.2.1 SASRec", "about 48 min (every prefix is a sample)",
     "validation NDCG@10 0.086 after 40 min", "3.9 GB"),
]


def config(name: str, extra: list[str] = ()) -> ExperimentConfig:
    return ExperimentConfig.from_yaml(ROOT / DATASETS[name]).with_overrides([*ISSUE_SETTINGS, *extra])


def defaults_config(name: str, extra: list[str] = ()) -> ExperimentConfig:
    """The issue's shape with every other setting at the library default (issue 18: the fast
    path in bf16 and the transition head), the frozen config's data and evaluation kept."""
    frozen = ExperimentConfig.from_yaml(ROOT / DATASETS[name]).to_dict()
    shape = [o for o in ISSUE_SETTINGS if o.startswith("model.") or o.split("=")[0] in ("train.batch_size", "train.lr")]
    return ExperimentConfig.from_dict(
        {"name": f"{frozen['name']}-defaults", "data": frozen["data"], "eval": frozen["eval"]}
    ).with_overrides([*shape, *extra])


# ---- gemm ------------------------------------------------------------------------------------


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0, trials: int = 3) -> float:
    """Sustained GFLOP/s of ``(m, k) @ (k, n)`` in ``dtype``: the best of ``trials`` trials of
    ``seconds`` each, a trial's rate being the median of its timed repeats. On a shared VM the
    rate of one trial can fall by a third when a neighbour is busy; the best trial is the
    least disturbed estimate of what the machine can do, and the strictest peak to divide by."""
    return max(_gemm_trial(m, k, n, dtype, seconds) for _ in range(trials))


def _gemm_trial(m: int, k: int, n: int, dtype: torch.dtype, seconds: float) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)
    for _ in range(3):
        a @ b
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times) / 1e9


def section_gemm(args) -> dict:
    shapes = {"square 2048": (2048, 2048, 2048), "logits (N=25,600, D=64, V=3,416)": (25_600, 64, 3_416)}
    rows = []
    for label, (m, k, n) in shapes.items():
        for dtype in (torch.float32, torch.bfloat16):
            rate = gemm_rate(m, k, n, dtype)
            rows.append({"shape": label, "dtype": str(dtype).replace("torch.", ""), "gflops": rate})
            print(f"   gemm {label:34s} {rows[-1]['dtype']:9s} {rate:8.1f} GFLOP/s")
    return {"rows": rows, "peak_fp32": max(r["gflops"] for r in rows if r["dtype"] == "float32"),
            "peak_bf16": max(r["gflops"] for r in rows if r["dtype"] == "bfloat16")}


# ---- step ------------------------------------------------------------------------------------


def step_flops(shapes: list[tuple[int, int]], M: int, D: int, n_blocks: int, V: int) -> int:
    """Matrix-multiply FLOPs of one training step (forward + backward), counted as computed.

    ``shapes``: the (rows B, width L) of each piece the encoder runs, the whole batch or,
    with ``train.length_groups``, each group trimmed to its longest row. Forward, per block
    over the N = B * L positions of a piece: QKV 2N*D*3D, output projection 2N*D*D,
    feed-forward (D -> D -> D) 2 * 2N*D*D, i.e. 12 N D^2; attention scores and weighted sum
    4 B L^2 D (the full L x L square: the causal mask does not skip work). Logits for the M
    positions that have a target: 2 M D V. Backward costs two products per forward product,
    so a step is 3x the forward. Element-wise work (embeddings, layer norms, softmax, dropout,
    Adam) is not counted.
    """
    forward = sum(n_blocks * (12 * B * L * D * D + 4 * B * L * L * D) for B, L in shapes) + 2 * M * D * V
    return 3 * forward


def encoder_shapes(inputs: torch.Tensor, groups: int) -> list[tuple[int, int]]:
    """The (rows, width) pieces ``SASRecEncoder.forward(inputs, length_groups=groups)`` runs."""
    B, L = inputs.shape
    if groups <= 1 or B == 1:
        return [(B, L)]
    return [(len(rows), width) for rows, width in group_by_length(inputs, groups)]


STEP_VARIANTS = {  # label -> overrides of the issue's settings
    "plain (ce, whole batch)": ["train.logit_precision=fp32"],
    "plain, bf16 logit products": ["train.logit_precision=bf16"],
    "fast path, fp32 (logits and encoder)": FAST_PATH_FP32,
    "fast path (ours in the epoch and peers sections)": FAST_PATH,
}


def section_step(args, n_batches: int = 12) -> dict:
    out = {}
    for label, extra in STEP_VARIANTS.items():
        cfg = config("ml-1m-partial", extra)
        torch.manual_seed(cfg.seed)
        dm = build_datamodule(cfg)
        dm.setup("fit")
        module = build_module(cfg, dm).train()
        opt = module.configure_optimizers()
        batches = [b for _, b in zip(range(n_batches + 2), dm.train_dataloader())]
        times, flops = [], 0
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            loss = module.step_loss(batch)  # the training step's loss, as training_step computes it
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:  # the first two steps warm up allocators and kernels
                times.append(time.perf_counter() - t0)
                shapes = encoder_shapes(batch["inputs"], cfg.train.length_groups)
                flops += step_flops(shapes, int((batch["targets"] != 0).sum()), cfg.model.dim, cfg.model.n_blocks,
                                    dm.vocab.n_items)
        total = sum(times)
        out[label] = {"median_step_s": statistics.median(times), "gflops": flops / total / 1e9,
                      "steps": len(times), "mean_flops_per_step": flops / len(times),
                      "logit_precision": cfg.train.logit_precision, "encoder_precision": cfg.train.encoder_precision}
        print(f"   step {label}: median {out[label]['median_step_s'] * 1e3:.0f} ms, "
              f"{out[label]['gflops']:.1f} GFLOP/s achieved, {flops / len(times) / 1e9:.1f} GFLOP a step")
    return out


# ---- epoch -----------------------------------------------------------------------------------


def section_epoch(args) -> dict:
    from recsys.training.run import fit

    out = {}
    # ("defaults", extra): the library defaults with these overrides only (issue 18)
    variants = {"fast path": FAST_PATH, "fast path, fp32": FAST_PATH_FP32, "plain": [],
                "defaults, no flags": ("defaults", []),
                "defaults without the transition head": ("defaults", ["model.transition_lags=0"])}
    variants = {k: v for k, v in variants.items() if not args.variants or k in args.variants}
    for name, (variant, extra) in itertools.product(args.datasets, variants.items()):
        common = [f"train.max_epochs={args.epochs}", "train.patience=1000", "train.progress_bar=false",
                  f"train.num_threads={args.threads}"]
        if isinstance(extra, tuple):
            cfg = defaults_config(name, [*common, *extra[1]])
        else:
            cfg = config(name, [*common, *extra])
        t0 = time.perf_counter()
        build_datamodule(cfg)
        prepare_s = time.perf_counter() - t0
        clock = EpochClock()
        with tempfile.TemporaryDirectory(prefix="recsys-speed-") as tmp:
            result = fit(cfg, Path(tmp) / "run", callbacks=[clock])
        label = f"{name}, {variant}"
        out[label] = {
            "prepare_s": prepare_s, "epoch_train_s": clock.train, "epoch_val_s": clock.val,
            "median_epoch_s": statistics.median(clock.train), "median_val_s": statistics.median(clock.val),
            "val_ndcg10": clock.val_ndcg, "test_ndcg10": result.metrics["test"]["ndcg@10"],
            "peak_rss_gb": peak_rss_gb(),
        }
        print(f"   epoch {label}: prepare {prepare_s:.1f} s, median train {out[label]['median_epoch_s']:.1f} s, "
              f"median validation {out[label]['median_val_s']:.1f} s over {len(clock.train)} epochs")
    return out


# ---- eval ------------------------------------------------------------------------------------


def section_eval(args) -> dict:
    out = {}
    shapes = (("1 block x 128 (the demo shape)", []), ("issue settings (2 x 64, max length 200)", ISSUE_SETTINGS))
    for label, extra in shapes:
        for batch_size in args.eval_batch_sizes:
            cfg = ExperimentConfig.from_yaml(ROOT / DATASETS["s3rec-beauty"]).with_overrides(
                [*extra, f"eval.batch_size={batch_size}"])
            dm = build_datamodule(cfg)
            dm.setup("test")
            module = build_module(cfg, dm).eval()
            t0 = time.perf_counter()
            batches = list(dm.test_dataloader())  # collation, timed apart from the model
            collate_s = time.perf_counter() - t0
            with torch.inference_mode():
                module.rank(batches[0])  # warm-up
                t0 = time.perf_counter()
                # the validation / test code path: scores, exclude_seen, ranks
                n = sum(len(module.rank(batch)) for batch in batches)
                model_s = time.perf_counter() - t0
            key = f"{label}, batch {batch_size}"
            out[key] = {"users": n, "collate_s": collate_s, "model_s": model_s, "users_per_s": n / model_s}
            print(f"   eval {key}: {n} users, model {model_s:.2f} s ({n / model_s:,.0f} users/s), "
                  f"collation {collate_s:.2f} s")
    return out


# ---- peers -----------------------------------------------------------------------------------

PEERS = Path(__file__).resolve().with_name("peers")
PEER_LIBRARIES = ("rectools", "recbole")
TORCH_PIN = "torch==2.13.0"  # installed first: it resolves to the local CPU wheel, not GBs of CUDA


def peers_python(venv: Path) -> Path:
    """The peers' interpreter; (re)creates ``venv`` when it is missing or requirements.txt changed."""
    python, requirements = venv / "bin" / "python", PEERS / "requirements.txt"
    stamp = venv / "requirements.sha256"
    digest = hashlib.sha256(f"{TORCH_PIN}\n".encode() + requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"   creating the peers' environment {venv} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-qq", TORCH_PIN], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-qq", "-r", str(requirements)], check=True)
    stamp.write_text(digest + "\n")
    return python


def peers_config(name: str, args, folder: Path) -> tuple[list[str], Path]:
    """Overrides for ours (the issue's settings, the run's epochs, patience and threads) and the
    config file they apply to. With ``--max-users N`` the log is cut to its first N users (in the
    canonical order, so no draw), written as a CSV that ours and the split read alike."""
    overrides = [*ISSUE_SETTINGS, *FAST_PATH, f"train.max_epochs={args.peer_max_epochs}", f"train.patience={args.patience}",
                 "train.progress_bar=false", f"train.num_threads={args.threads}"]
    if args.max_users:
        frame = build_datamodule(config(name)).events.frame
        users = frame["user"].drop_duplicates().iloc[: args.max_users]
        path = folder / "events.csv"
        frame[frame["user"].isin(users)].to_csv(path, index=False)
        overrides += ["data.format=csv", f"data.path={path}", "data.user_col=user", "data.item_col=item",
                      "data.time_col=timestamp"]
    return overrides, ROOT / DATASETS[name]


def budget_minutes(args, name: str) -> float:
    """``--budget-minutes`` for dataset ``name``: a ``name=minutes`` item if one names it, else the plain number."""
    plain = [float(b) for b in args.budget_minutes if "=" not in b]
    named = dict(b.split("=", 1) for b in args.budget_minutes if "=" in b)
    return float(named[name]) if name in named else (plain[-1] if plain else 60.0)


def run_library(lib: str, command: list[str], folder: Path, args, budget: float) -> dict:
    """One runner in a process of its own; its JSON record, or a failure with the log's tail.

    With ``--reuse-records`` a record (and its ranks) that an earlier run left in the folder is
    read instead, marked ``reused_from`` with the time it was written, but only if that run's
    command (``LIB.command.json``, written beside the record after a successful run) is this
    one's: a record made with other settings, or by a harness too old to say, is run again.
    Ours' command also names the recsys commit it ran, so a record of other recsys code is
    run again too, and one from a checkout with local changes is never reused."""
    out, log = folder / f"{lib}.json", folder / f"{lib}.log"
    ranks_path, stamp = out.with_suffix(".ranks.npy"), folder / f"{lib}.command.json"
    # the interpreter's path aside: the runner and every argument (+ the code, for ours)
    commit = git_commit() if lib == "ours" else None
    wanted = json.dumps(command[1:] + ([f"recsys@{commit}"] if lib == "ours" else []))
    reusable = lib != "ours" or (commit is not None and not commit.endswith("-dirty"))
    if args.reuse_records and reusable and out.exists() and ranks_path.exists():
        if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
            written = dt.datetime.fromtimestamp(out.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            print(f"   {lib}: reusing {out} (written {written})", flush=True)
            record = json.loads(out.read_text(encoding="utf-8"))
            record["reused_from"] = {"path": str(out), "written": written}
            record["test_ndcg10_harness"] = summarise(torch.from_numpy(np.load(ranks_path)), [10])["ndcg@10"]
            return record
        print(f"   {lib}: not reusing {out}: {'made by another command' if stamp.exists() else 'no command recorded'}",
              flush=True)
    out.unlink(missing_ok=True)  # a record left by an earlier run must not pass for this one's
    stamp.unlink(missing_ok=True)
    env = child_env(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                    PYTHONPATH=str(ROOT) if lib == "ours" else "")
    limit = budget * 60 + 1800  # the budget, then the last epoch, its validation and the test
    print(f"   {lib}: {' '.join(command[:2])} ... (log {log})", flush=True)
    run = run_and_wait([*command, "--out", str(out)], log=log, env=env, cwd=folder, timeout=limit)
    if not run.ok or not out.exists():
        tail = run.tail(20)
        error = f"exit {run.returncode} after {run.wall_s:.0f} s" if run.returncode is not None else \
            f"killed after {limit:.0f} s"
        print(f"   {lib} failed ({error}):\n      " + "\n      ".join(tail), flush=True)
        return {"library": lib, "status": "failed", "error": "\n".join([*tail, error])}
    stamp.write_text(wanted, encoding="utf-8")
    record = json.loads(out.read_text(encoding="utf-8"))
    ranks = torch.from_numpy(np.load(ranks_path))
    record["test_ndcg10_harness"] = summarise(ranks, [10])["ndcg@10"]  # recomputed here, from its ranks
    record["wall_s"] = run.wall_s
    return record


def section_peers(args) -> dict:
    python = peers_python(args.peers_venv) if args.peers else None
    out = {}
    with tempfile.TemporaryDirectory(prefix="recsys-peers-") as tmp:
        work = Path(args.peers_dir or tmp)
        for name in args.peers_datasets or args.datasets:
            folder = work / name
            folder.mkdir(parents=True, exist_ok=True)
            overrides, config_file = peers_config(name, args, folder)
            cfg = ExperimentConfig.from_yaml(config_file).with_overrides(overrides)
            dm = build_datamodule(cfg)
            prepared = prepared_from_split(dm.split, dm.vocab.n_items)
            save_prepared(prepared, folder)
            write_peer_files(prepared, folder)
            del dm
            minutes = budget_minutes(args, name)
            budget = ["--budget-minutes", str(minutes)]
            print(f"   {name}: {prepared.n_users:,} users, {prepared.n_items:,} items, "
                  f"{len(prepared.train_items):,} training events -> {folder}", flush=True)
            records = {"ours": run_library("ours", [sys.executable, str(PEERS / "run_ours.py"), "--config",
                                                    str(config_file), "--data", str(folder), *budget,
                                                    "--set", *overrides], folder, args, minutes)}
            m, t = cfg.model, cfg.train  # the peers get ours' settings, one source for all
            peer_args = [*budget, "--threads", str(args.threads), "--max-epochs", str(t.max_epochs),
                         "--patience", str(t.patience), "--seed", str(cfg.seed), "--max-len", str(m.max_len),
                         "--dim", str(m.dim), "--blocks", str(m.n_blocks), "--heads", str(m.n_heads),
                         "--dropout", str(m.dropout), "--batch-size", str(t.batch_size), "--lr", str(t.lr),
                         "--eval-batch-size", str(cfg.eval.batch_size)]
            for lib in args.peers:
                records[lib] = run_library(lib, [str(python), str(PEERS / f"run_{lib}.py"), "--data", str(folder),
                                                 *peer_args], folder, args, minutes)
            target, target_from = report.target_ndcg(records, list(args.peers))
            if args.target_ndcg is not None:
                target, target_from = args.target_ndcg, "given"
            out[name] = {"records": records, "peers": list(args.peers), "target": target, "target_from": target_from,
                         "max_users": args.max_users, "budget_minutes": minutes,
                         "max_epochs": args.peer_max_epochs, "patience": args.patience,
                         "table": report.compare(records, list(args.peers), target)}
            for lib, row in out[name]["table"].items():
                print(f"   {name} {lib}: " + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -"
                                                    for k, v in row["values"].items()), flush=True)
    return out


# ---- report ----------------------------------------------------------------------------------


def markdown_peers(results: dict) -> list[str]:
    first = next(iter(results.values()))
    smoke = [f"**Smoke run on the first {first['max_users']:,} users of each log: not the benchmark.**", ""] \
        if first["max_users"] else []
    lines = ["## Peers: SASRec side by side", "", *smoke,
             "Each library trains its own SASRec with the issue's settings (max length 200, 2 blocks, hidden size 64, "
             "1 head, dropout 0.2, batch 128, Adam lr 1e-3, seed 42) on 2 threads, in a process of its own "
             "(`benchmarks/peers/run_*.py`; the peers in `benchmarks/peers/.venv`, pinned in "
             "`benchmarks/peers/requirements.txt`). "
             f"A run stops after {first['max_epochs']} epochs, after {first['patience']} epochs without a better "
             "validation NDCG@10, or at the first epoch end past its budget ("
             + ", ".join(f"{name} {r['budget_minutes']:g} min" for name, r in results.items()) + ") "
             "(RecBole, whose epochs can outlast the budget, also stops within an epoch, recorded as partial).", "",
             "Protocol, one for all: recsys's leave-one-out split is handed to every library (RecTools: the "
             "training events; RecBole: every event, split again by RecBole and checked target by target). After "
             "every epoch each library scores every user over the full catalogue with its own model and inference "
             "code, and recsys's code ranks the scores (items of the user's history removed, as "
             "`eval.exclude_seen: true`; pessimistic ties) and computes NDCG@10; the peers' own evaluators are "
             "not used. Test NDCG@10 is of each library's best-validation epoch, recomputed by the harness from "
             "the per-user ranks.", "",
             "Columns: data preparation = ours: read the raw log, vocabulary, split (`fit`'s own timing); RecTools: "
             "read the handed-over CSV, `Dataset.construct`, its data preparator's training set and loader; "
             "RecBole: `Config`, `create_dataset`, `data_preparation` (its prefix samples included). Time to "
             "target = training seconds (validation excluded) until the first epoch at or above the target. "
             "Full-ranking evaluation = median wall time of one validation pass over all users. Ratios in "
             "brackets are peer / ours: above 1 is slower or larger, or, for NDCG, better.", ""]
    reused = [f"{report.LIBRARIES[lib]} on {name} (written {r['reused_from']['written']})"
              for name, result in results.items() for lib, r in result["records"].items() if r.get("reused_from")]
    if reused:
        lines += ["Records read from an earlier run's folder (`--reuse-records`), not re-measured by this one: "
                  + "; ".join(reused) + ".", ""]
    for name, result in results.items():
        lines += report.markdown_dataset(name, result)
    losses = {}
    for result in results.values():
        for lib, record in result["records"].items():
            if report.ok(record):
                losses[lib] = record["loss"]
    lines += ["Losses used:", ""] + [f"- {report.LIBRARIES[lib]}: {loss}" for lib, loss in losses.items()] + [""]
    lines += ["Differences that remain: each library keeps its own SASRec block (ours pre-norm with GELU; "
              "RecTools the SASRec authors' block with ReLU; RecBole post-norm with GELU, its feed-forward set to "
              "64 wide to match), initialisation and Adam betas (RecTools 0.9/0.98, the others 0.9/0.999); RecBole "
              "trains on every prefix with the loss on its last position, the others on each user's sequence with "
              "the loss at every position; RecTools cannot score items that occur only as validation or test "
              "targets (they rank last; counted above).", ""]
    return lines


def merge_docs(docs: list[dict]) -> dict:
    """One document from the runs' JSON, sections of later runs replacing earlier ones; each
    section keeps the time, load average and wall time of the run that measured it."""
    if len(docs) == 1:
        return docs[0]
    merged = {**docs[-1], "results": {}, "measured": {}}
    for doc in docs:
        for name, result in doc["results"].items():
            merged["results"][name] = result
            merged["measured"][name] = {k: doc.get(k) for k in ("started", "commit", "wall_s", "load_before", "load_after")}
    order = ["gemm", "step", "epoch", "eval", "peers"]
    merged["results"] = {k: merged["results"][k] for k in order if k in merged["results"]}
    return merged


def regenerate_command(doc: dict) -> str:
    """The command line that measures what ``doc`` holds, from what it recorded."""
    parts = [".venv/bin/python benchmarks/speed.py", "--sections", *doc["results"]]
    if doc["threads"] != 2:
        parts += ["--threads", str(doc["threads"])]
    peers = doc["results"].get("peers")
    if peers:
        if list(peers) != list(DATASETS):
            parts += ["--peers-datasets", *peers]
        budgets = {name: result["budget_minutes"] for name, result in peers.items()}
        common = max(set(budgets.values()), key=list(budgets.values()).count)
        parts += ["--budget-minutes", f"{common:g}",
                  *(f"{name}={minutes:g}" for name, minutes in budgets.items() if minutes != common)]
        first = next(iter(peers.values()))
        if first.get("max_users"):
            parts += ["--max-users", str(first["max_users"])]
    return " ".join(parts)


def _at(commit: str | None) -> str:
    """`` at recsys COMMIT`` (12 characters) for a run that recorded its commit; runs made
    before the harness recorded one say nothing."""
    return f" at recsys {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''}" if commit else ""


def written_by(doc: dict) -> str:
    """When and under what load the sections were measured (each section's own run if merged)."""
    if "measured" not in doc:
        return (f"Written by `benchmarks/speed.py` on {doc['started']}{_at(doc.get('commit'))}, {doc['wall_s']:.0f} s "
                f"wall, {doc['threads']} threads; load average before -> after: {doc['load_before']} -> {doc['load_after']}.")
    runs = "; ".join(f"{name} on {m['started']}{_at(m.get('commit'))} (a run of {m['wall_s']:.0f} s wall, load average "
                     f"{m['load_before']} -> {m['load_after']})" for name, m in doc["measured"].items())
    return f"Written by `benchmarks/speed.py --render` from runs on {doc['threads']} threads, each section as measured: {runs}."


def markdown(doc: dict) -> str:
    r, info = doc["results"], doc["machine"]
    lines = [
        "# Speed",
        "",
        written_by(doc) + f" Regenerate with `RECSYS_DATA_DIR=../shared/datasets {regenerate_command(doc)}`.",
        "",
        "Settings (issue 6): SASRec, max length 200, 2 blocks, d 64, 1 head, dropout 0.2, batch 128, "
        "Adam lr 1e-3, full softmax cross-entropy at every position, fp32 unless a row says bf16. Ours runs them "
        "on its fast path (" + ", ".join(f"`{o}`" for o in FAST_PATH) + "): the same model, loss and batches, "
        "computed with less work (docs/fast-path.md); the tables also show the plain path.",
        "",
    ]
    if "gemm" in r:
        g = r["gemm"]
        lines += ["## Machine limit: GEMM rate (torch)", "",
                  *table(["product", "dtype", "GFLOP/s"], "llr",
                         ([row["shape"], row["dtype"], f"{row['gflops']:.1f}"] for row in g["rows"])), ""]
    if "step" in r and "gemm" in r:
        s, peak, peak_bf16 = r["step"], r["gemm"]["peak_fp32"], r["gemm"]["peak_bf16"]
        lines += ["## Training step against the machine", "",
                  "FLOPs counted as computed from each batch's shapes (`step_flops` in the script: 12 N D^2 + "
                  "4 B L^2 D per block over the positions the encoder runs, 2 M D V for the logits of the M "
                  "positions with a target, x3 for forward + backward), divided by the measured wall time "
                  "of forward, backward and Adam on the same 12 real ML-1M-partial batches. The fast path runs "
                  "fewer FLOPs a step (its groups skip most padding), so its rate and its step time are both "
                  "shown. The fast path's settings: " + ", ".join(f"`{o}`" for o in FAST_PATH) + ".", "",
                  *table(["step", "logit products, encoder", "median step", "GFLOP a step", "achieved GFLOP/s",
                          "of fp32 peak (the bar: >= 50%)", "of bf16 peak"], "llrrrrr")]
        for label, row in s.items():
            share = row["gflops"] / peak
            precision = (row.get("logit_precision", "fp32" if row.get("fp32", True) else "bf16") + ", "
                         + row.get("encoder_precision", "fp32"))
            lines.append(table_row([label, precision, f"{row['median_step_s'] * 1e3:.0f} ms",
                                 f"{row['mean_flops_per_step'] / 1e9:.1f}", f"{row['gflops']:.1f}",
                                 f"{share:.0%} {'✓' if share >= 0.5 else '✗'}", f"{row['gflops'] / peak_bf16:.0%}"]))
        lines += ["", "The peaks are the best of three one-second trials of the square products above. With "
                  "bf16 products (logits, or the encoder under autocast) the step runs part of its FLOPs on the faster "
                  "bf16 units, so its rate is "
                  "shown against both peaks."]
        lines += [""]
    if "epoch" in r:
        lines += ["## Epochs (ours; `recsys.training.run.fit`, the real pipeline)", "",
                  "Fast path as in the step table; plain = the issue's settings on the plain path the frozen "
                  "configs pin (`ce`, whole batches, Bernoulli dropout, fp32); defaults, no flags = the issue's shape "
                  "with every other setting at the library default (issue 18: the fast path and the transition "
                  "mixture head, its counts weighed by EM), and the same without the head. Peak RSS is the "
                  "benchmark process's high-water mark so far.", "",
                  *table(["data", "preparation", "median s / epoch (training)", "median validation", "epochs",
                          "validation NDCG@10 by epoch", "test NDCG@10 (after these epochs)", "peak RSS"], "lrrrrlrr",
                         ([name, f"{row['prepare_s']:.1f} s", f"{row['median_epoch_s']:.1f} s",
                           f"{row['median_val_s']:.1f} s", len(row["epoch_train_s"]),
                           ", ".join(f"{v:.4f}" for v in row["val_ndcg10"]), f"{row['test_ndcg10']:.4f}",
                           f"{row['peak_rss_gb']:.2f} GB"] for name, row in r["epoch"].items())), ""]
    if "eval" in r:
        lines += ["## Full-ranking evaluation, all S3-Rec Beauty users", "",
                  "Test split, 22,363 users x 12,101 items, `eval.exclude_seen` as the frozen config (on): encoder on the newest position "
                  "(`SASRecEncoder.last_state`), every item scored, pessimistic ranks. Random weights (the time "
                  "does not depend on them). Target: all users in at most 2 s.", "",
                  *table(["model, evaluation batch size", "users", "model time", "users / s", "batch collation (apart)",
                          "target"], "lrrrrl",
                         ([label, f"{row['users']:,}",
                           f"{row['model_s']:.2f} s " + ("✓" if row["model_s"] <= 2.0 else "✗"),
                           f"{row['users_per_s']:,.0f}", f"{row['collate_s']:.2f} s", "<= 2 s"]
                          for label, row in r["eval"].items())), ""]
    if "peers" in r:
        lines += markdown_peers(r["peers"])
    else:
        lines += ["## Peers", "",
                  "Not measured in this file (`--sections peers` does). The issue's reference figures, measured on "
                  "this machine on the ML-1M partial with the settings above, quoted as given:", "",
                  *table(["library", "s / epoch", "quality reached", "peak RSS"], "llll", PEER_REFERENCE)]
    lines += ["", "## Machine", ""] + [f"- **{k}**: {v}" for k, v in info.items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["gemm", "step", "epoch", "eval"],
                        choices=["gemm", "step", "epoch", "eval", "peers"],
                        help="peers is not in the default: it takes hours (see --budget-minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per dataset in the epoch section")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="epoch section: only these variants (fast path, 'fast path, fp32', plain, "
                             "'defaults, no flags', 'defaults without the transition head')")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("SPEED.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    peers = parser.add_argument_group("peers section")
    peers.add_argument("--peers", nargs="*", default=list(PEER_LIBRARIES), choices=PEER_LIBRARIES,
                       help="peers to run beside ours (none: ours alone)")
    peers.add_argument("--budget-minutes", nargs="+", default=["60"],
                       help="wall-time budget of each library's run on each dataset (training + validation), in "
                            "minutes: a number for every dataset, and/or NAME=MINUTES for one")
    peers.add_argument("--peer-max-epochs", type=int, default=200)
    peers.add_argument("--patience", type=int, default=10, help="epochs without a better validation NDCG@10")
    peers.add_argument("--max-users", type=int, default=None,
                       help="cut each log to its first N users: a smoke run, not the benchmark")
    peers.add_argument("--target-ndcg", type=float, default=None,
                       help="validation NDCG@10 target (default: the lowest final value among the peers)")
    peers.add_argument("--peers-venv", type=Path, default=Path(__file__).resolve().with_name("peers") / ".venv")
    peers.add_argument("--peers-dir", type=Path, default=None,
                       help="keep the split, the runs' records and logs here (default: a temporary folder)")
    peers.add_argument("--peers-datasets", nargs="+", default=None, choices=list(DATASETS),
                       help="datasets of the peers section (default: --datasets)")
    peers.add_argument("--reuse-records", action="store_true",
                       help="read a library's record from --peers-dir where an earlier run left one, instead of "
                            "running it again (SPEED.md says which, and when they were written)")
    parser.add_argument("--render", type=Path, nargs="+", default=None, metavar="JSON",
                        help="measure nothing: rewrite --out from --json files earlier runs wrote (a section "
                             "in a later file replaces the same section of an earlier one)")
    args = parser.parse_args(argv)
    if args.render:
        docs = [json.loads(p.read_text(encoding="utf-8")) for p in args.render]
        text = markdown(merge_docs([d for d in docs if "results" in d]))
        memory = [d for d in docs if "variants" in d]  # benchmarks/memory.py's SPEED-memory.json
        if memory:
            from memory import markdown_memory  # here: memory.py imports this file

            head, sep, tail = text.partition("\n## Machine\n")
            text = head + "\n".join(markdown_memory(memory[-1])) + sep + tail
        write_atomic(args.out, text)
        print(f"wrote {args.out} from {', '.join(map(str, args.render))}")
        return 0
    torch.set_num_threads(args.threads)
    doc = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "threads": args.threads,
           "commit": git_commit(), "load_before": load_average(), "machine": machine(), "results": {}}
    t0 = time.perf_counter()
    sections = {"gemm": section_gemm, "step": section_step, "epoch": section_epoch, "eval": section_eval,
                "peers": section_peers}
    for name in args.sections:
        print(f"== {name}")
        doc["results"][name] = sections[name](args)
    doc["wall_s"], doc["load_after"] = time.perf_counter() - t0, load_average()
    write_atomic(args.out, markdown(doc))
    if args.json:
        write_atomic(args.json, json.dumps(doc, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
