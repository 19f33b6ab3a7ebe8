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

Peers (RecTools, RecBole) are not run by this script yet; SPEED.md quotes the issue's
reference figures for them, measured on this machine, and says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RECSYS_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))  # as the Makefile
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import load_average, machine  # noqa: E402  (benchmarks/ is a folder of scripts)

from recsys.config import ExperimentConfig  # noqa: E402
from recsys.training.build import build_datamodule, build_module  # noqa: E402

ISSUE_SETTINGS = [  # issue 6: "max length 200, 2 blocks, hidden size 64, 1 head, dropout 0.2, batch 128, Adam lr 1e-3"
    "model.max_len=200", "model.n_blocks=2", "model.dim=64", "model.n_heads=1", "model.dropout=0.2",
    "train.batch_size=128", "train.lr=0.001", "train.loss=ce", "train.logit_precision=fp32",
]
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


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


# ---- gemm ------------------------------------------------------------------------------------


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of ``(m, k) @ (k, n)`` in ``dtype`` (median of timed repeats)."""
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


def step_flops(B: int, L: int, M: int, D: int, n_blocks: int, V: int) -> int:
    """Matrix-multiply FLOPs of one training step (forward + backward), counted as computed.

    Forward, per block over all N = B * L positions: QKV 2N*D*3D, output projection 2N*D*D,
    feed-forward (D -> D -> D) 2 * 2N*D*D, i.e. 12 N D^2; attention scores and weighted sum
    4 B L^2 D (the full L x L square: the causal mask does not skip work). Logits for the M
    positions that have a target: 2 M D V. Backward costs two products per forward product,
    so a step is 3x the forward. Element-wise work (embeddings, layer norms, softmax, Adam)
    is not counted; it is small next to these products.
    """
    forward = n_blocks * (12 * B * L * D * D + 4 * B * L * L * D) + 2 * M * D * V
    return 3 * forward


def section_step(args, n_batches: int = 12) -> dict:
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = config("ml-1m-partial", [f"train.logit_precision={precision}"])
        torch.manual_seed(cfg.seed)
        dm = build_datamodule(cfg)
        dm.setup("fit")
        module = build_module(cfg, dm).train()
        opt = module.configure_optimizers()
        batches = [b for _, b in zip(range(n_batches + 2), dm.train_dataloader())]
        times, flops = [], 0
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            hidden = module.encoder(batch["inputs"])
            loss = module._item_loss(hidden, batch["targets"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:  # the first two steps warm up allocators and kernels
                times.append(time.perf_counter() - t0)
                B, L = batch["inputs"].shape
                flops += step_flops(B, L, int((batch["targets"] != 0).sum()), cfg.model.dim, cfg.model.n_blocks,
                                    dm.vocab.n_items)
        total = sum(times)
        out[precision] = {"median_step_s": statistics.median(times), "gflops": flops / total / 1e9,
                          "steps": len(times), "mean_flops_per_step": flops / len(times)}
        print(f"   step logits {precision}: median {out[precision]['median_step_s'] * 1e3:.0f} ms, "
              f"{out[precision]['gflops']:.1f} GFLOP/s achieved")
    return out


# ---- epoch -----------------------------------------------------------------------------------


class EpochClock(pl.Callback):
    """Wall time of each epoch's training part and of its validation, and its val NDCG@10."""

    def __init__(self) -> None:
        self.train, self.val, self.val_ndcg, self._t = [], [], [], 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t = time.perf_counter()

    def on_validation_epoch_start(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.train.append(time.perf_counter() - self._t)
            self._t = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.val.append(time.perf_counter() - self._t)

    def on_train_epoch_end(self, trainer, module) -> None:
        # Called after the epoch's validation, once the module has logged its metrics
        # (callbacks' on_validation_epoch_end run before the module's).
        self.val_ndcg.append(float(trainer.callback_metrics.get("val/ndcg@10", float("nan"))))


def section_epoch(args) -> dict:
    from recsys.training.run import fit

    out = {}
    for name in args.datasets:
        cfg = config(name, [f"train.max_epochs={args.epochs}", "train.patience=1000", "train.progress_bar=false",
                            f"train.num_threads={args.threads}"])
        t0 = time.perf_counter()
        build_datamodule(cfg)
        prepare_s = time.perf_counter() - t0
        clock = EpochClock()
        with tempfile.TemporaryDirectory(prefix="recsys-speed-") as tmp:
            result = fit(cfg, Path(tmp) / "run", callbacks=[clock])
        out[name] = {
            "prepare_s": prepare_s, "epoch_train_s": clock.train, "epoch_val_s": clock.val,
            "median_epoch_s": statistics.median(clock.train), "median_val_s": statistics.median(clock.val),
            "val_ndcg10": clock.val_ndcg, "test_ndcg10": result.metrics["test"]["ndcg@10"],
            "peak_rss_gb": peak_rss_gb(),
        }
        print(f"   epoch {name}: prepare {prepare_s:.1f} s, median train {out[name]['median_epoch_s']:.1f} s, "
              f"median validation {out[name]['median_val_s']:.1f} s over {len(clock.train)} epochs")
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
                module._eval_step(batches[0])  # warm-up
                module._ranks.clear()
                module._users.clear()
                t0 = time.perf_counter()
                for batch in batches:
                    module._eval_step(batch)  # the validation / test code path: scores, exclude_seen, ranks
                model_s = time.perf_counter() - t0
            n = len(torch.cat(module._ranks))
            module._ranks.clear()
            module._users.clear()
            key = f"{label}, batch {batch_size}"
            out[key] = {"users": n, "collate_s": collate_s, "model_s": model_s, "users_per_s": n / model_s}
            print(f"   eval {key}: {n} users, model {model_s:.2f} s ({n / model_s:,.0f} users/s), "
                  f"collation {collate_s:.2f} s")
    return out


# ---- report ----------------------------------------------------------------------------------


def markdown(doc: dict) -> str:
    r, info = doc["results"], doc["machine"]
    lines = [
        "# Speed",
        "",
        f"Written by `benchmarks/speed.py` on {doc['started']}, {doc['wall_s']:.0f} s wall, {doc['threads']} threads; "
        f"load average before -> after: {doc['load_before']} -> {doc['load_after']}. "
        "Regenerate with `.venv/bin/python benchmarks/speed.py`.",
        "",
        "Settings (issue 6): SASRec, max length 200, 2 blocks, d 64, 1 head, dropout 0.2, batch 128, "
        "Adam lr 1e-3, full softmax cross-entropy at every position, fp32 unless a row says bf16.",
        "",
    ]
    if "gemm" in r:
        g = r["gemm"]
        lines += ["## Machine limit: GEMM rate (torch)", "", "| product | dtype | GFLOP/s |", "|---|---|---:|"]
        lines += [f"| {row['shape']} | {row['dtype']} | {row['gflops']:.1f} |" for row in g["rows"]]
        lines += [""]
    if "step" in r and "gemm" in r:
        s, peak = r["step"], r["gemm"]["peak_fp32"]
        lines += ["## Training step against the machine", "",
                  "FLOPs counted from each batch's shapes (`step_flops` in the script: 12 N D^2 + 4 B L^2 D per "
                  "block, 2 M D V for the logits, x3 for forward + backward), divided by the measured wall time "
                  "of forward, backward and Adam on real ML-1M-partial batches.", "",
                  "| logit products | median step | achieved GFLOP/s | of fp32 peak | target |",
                  "|---|---:|---:|---:|---|"]
        for precision, row in s.items():
            share = row["gflops"] / peak
            mark = ("✓" if share >= 0.5 else "✗") if precision == "fp32" else ""
            lines.append(f"| {precision} | {row['median_step_s'] * 1e3:.0f} ms | {row['gflops']:.1f} | "
                         f"{share:.0%} {mark} | >= 50% (fp32) |")
        lines += [""]
    if "epoch" in r:
        lines += ["## Epochs (ours; `recsys.training.run.fit`, the real pipeline)", "",
                  "| data | preparation | median s / epoch (training) | median validation | epochs | "
                  "validation NDCG@10 by epoch | test NDCG@10 (after these epochs) | peak RSS |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for name, row in r["epoch"].items():
            curve = ", ".join(f"{v:.4f}" for v in row["val_ndcg10"])
            lines.append(f"| {name} | {row['prepare_s']:.1f} s | {row['median_epoch_s']:.1f} s | "
                         f"{row['median_val_s']:.1f} s | {len(row['epoch_train_s'])} | {curve} | "
                         f"{row['test_ndcg10']:.4f} | {row['peak_rss_gb']:.2f} GB |")
        lines += [""]
    if "eval" in r:
        lines += ["## Full-ranking evaluation, all S3-Rec Beauty users", "",
                  "Test split, 22,363 users x 12,101 items, `eval.exclude_seen` as the frozen config (on): encoder on the newest position "
                  "(`SASRecEncoder.last_state`), every item scored, pessimistic ranks. Random weights (the time "
                  "does not depend on them). Target: all users in at most 2 s.", "",
                  "| model, evaluation batch size | users | model time | users / s | batch collation (apart) | target |",
                  "|---|---:|---:|---:|---:|---|"]
        for label, row in r["eval"].items():
            mark = "✓" if row["model_s"] <= 2.0 else "✗"
            lines.append(f"| {label} | {row['users']:,} | {row['model_s']:.2f} s {mark} | {row['users_per_s']:,.0f} | "
                         f"{row['collate_s']:.2f} s | <= 2 s |")
        lines += [""]
    lines += ["## Peers", "",
              "Not run by this script yet: no RecTools / RecBole side-by-side numbers here. The issue's reference "
              "figures for them, measured on this machine on the ML-1M partial with the settings above, are quoted "
              "as given, not re-measured:", "",
              "| library | s / epoch | quality reached | peak RSS |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in PEER_REFERENCE]
    lines += ["", "## Machine", ""] + [f"- **{k}**: {v}" for k, v in info.items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["gemm", "step", "epoch", "eval"],
                        choices=["gemm", "step", "epoch", "eval"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per dataset in the epoch section")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("SPEED.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "threads": args.threads,
           "load_before": load_average(), "machine": machine(), "results": {}}
    t0 = time.perf_counter()
    sections = {"gemm": section_gemm, "step": section_step, "epoch": section_epoch, "eval": section_eval}
    for name in args.sections:
        print(f"== {name}")
        doc["results"][name] = sections[name](args)
    doc["wall_s"], doc["load_after"] = time.perf_counter() - t0, load_average()
    text = markdown(doc)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, args.out)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
