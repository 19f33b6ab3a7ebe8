"""Large catalogue: a 1M-item, 20M-event log through preprocessing, training and full ranking.

    .venv/bin/python benchmarks/large_catalogue.py                     # full scale, writes LARGE_CATALOGUE.md
    .venv/bin/python benchmarks/large_catalogue.py --items 10000 --events 200000 --out /tmp/LC.md   # seconds

Issue 6, item 4. The log comes from the project's own generator
(``recsys.data.synthetic.planted_markov_log``) and is written to Parquet first, so that
preprocessing is measured from a file, as ``recsys fit`` reads one. Then, in one process:

1. **preprocess**: ``recsys.training.build.build_datamodule``, the path ``recsys fit`` takes
   before training (Parquet reader, validation, canonical order, cleaning, fingerprint,
   vocabulary, CSR sequences, leave-one-out split);
2. **train**: ``build_module`` and one Lightning epoch (every user's training window once,
   or ``--train-batches`` batches) with sampled softmax over ``--negatives`` uniform
   negatives (or ``--loss ce_chunked``); no validation pass;
3. **evaluate**: the library's test evaluation (``Trainer.test`` on the module: every
   test user, every item of the catalogue scored, pessimistic ranks), ``eval.batch_size``
   users per (B, V) score block.

Generation runs in its own process and is reported apart: it is not preprocessing. Each
stage's peak RSS is the process's high-water mark during that stage (reset at the stage's
start through ``/proc/self/clear_refs``), so it includes what earlier stages still hold
(the prepared data during training and evaluation), as it would in a real run.

Full-catalogue evaluation costs users x items score cells, so the user count, not the
event count, sets its time: the default spreads 20M events over 50,000 users of 200..600
events (mean 400), i.e. 5 * 10^10 cells.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from _common import (  # noqa: E402
    child_env, load_average, machine, process_memory_kib, run_worker, table, table_row, write_atomic,
)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from recsys.config import ExperimentConfig  # noqa: E402
from recsys.data.synthetic import optimal_metrics, planted_markov_log  # noqa: E402
from recsys.training.build import build_datamodule, build_module  # noqa: E402

TARGET_RSS_GB = 24.0  # issue 6: the whole pipeline within 24 GB of RAM
TARGET_PREPROCESS_S = 300.0  # issue 6: preprocessing in at most 5 minutes
STAGES = ("generate", "preprocess", "train", "evaluate")


@dataclasses.dataclass(frozen=True)
class Settings:
    items: int = 1_000_000
    events: int = 20_000_000
    mean_len: int = 400  # events per user; lengths are uniform on mean/2 .. 3*mean/2
    p_follow: float = 0.7
    seed: int = 0
    loss: str = "sampled"
    negatives: int = 256
    chunk_size: int = 1024
    batch_size: int = 128
    max_len: int = 50
    dim: int = 64
    n_blocks: int = 2
    eval_batch_size: int = 256
    train_batches: int = 0  # 0 = one whole epoch
    threads: int = 1

    @property
    def users(self) -> int:
        return max(1, self.events // self.mean_len)

    @property
    def min_len(self) -> int:
        return max(3, self.mean_len // 2)  # 3: train + validation + test, so cleaning drops no user

    @property
    def max_len_events(self) -> int:
        return max(self.min_len, 2 * self.mean_len - self.min_len)


def experiment_config(log: Path, s: Settings) -> ExperimentConfig:
    """The config a user would write for this log (``recsys fit --config``)."""
    return ExperimentConfig.from_dict({
        "name": f"sasrec-{s.loss}",
        "seed": s.seed,
        "data": {"name": "planted-large", "format": "parquet", "path": str(log),
                 "user_col": "user", "item_col": "item", "time_col": "timestamp"},
        "model": {"dim": s.dim, "n_blocks": s.n_blocks, "n_heads": 1, "max_len": s.max_len, "dropout": 0.2},
        "train": {"loss": s.loss, "sampler": "uniform", "n_negatives": s.negatives, "chunk_size": s.chunk_size,
                  "batch_size": s.batch_size, "lr": 1e-3, "max_epochs": 1, "num_threads": s.threads,
                  "progress_bar": False},
        "eval": {"batch_size": s.eval_batch_size, "ks": [1, 10, 20], "monitor": "ndcg@10"},
    })


# ---- measuring one stage -------------------------------------------------------------------


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def stage(record: dict, name: str):
    """Wall time, peak RSS and load average of the block, into ``record[name]``.

    Without ``clear_refs`` the peak is the process's peak so far (``ru_maxrss``): still an
    upper bound of the stage's, and marked as such. CPU time is the process's user and
    system time during the block: on a shared machine, wall time minus CPU time is mostly
    time spent waiting for a core."""
    reset = _reset_peak()
    load_before, cpu0, t0 = load_average(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    memory = process_memory_kib()
    hwm = memory.get("VmHWM") if reset else None
    peak_kib = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record[name] = {"wall_s": wall, "peak_rss_gb": peak_kib / 2**20, "peak_is_stage_only": hwm is not None,
                    "rss_after_gb": memory.get("VmRSS", 0) / 2**20,
                    "user_s": cpu.ru_utime - cpu0.ru_utime, "sys_s": cpu.ru_stime - cpu0.ru_stime,
                    "load_before": load_before, "load_after": load_average()}
    print(f"   {name}: {wall:.1f} s, peak RSS {peak_kib / 2**20:.2f} GB", flush=True)


# ---- the stages ----------------------------------------------------------------------------


def generate(s: Settings, path: Path) -> dict:
    """Write the planted log to ``path`` (Parquet); its sizes as generated."""
    record: dict = {}
    with stage(record, "generate"):
        log = planted_markov_log(s.users, s.items, p_follow=s.p_follow, min_len=s.min_len,
                                 max_len=s.max_len_events, seed=s.seed)
        frame = log.frame
        sizes = {"users": int(frame["user"].nunique()), "items": int(frame["item"].nunique()), "events": len(frame)}
        frame.to_parquet(path, index=False)
        del frame
    return {"stages": record, "generated": sizes,
            "optimal": optimal_metrics(log, (1, 10, 20)), "file_mb": path.stat().st_size / 2**20}


def _trainer(s: Settings, root: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, deterministic=True, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, **kwargs)


def pipeline(log: Path, s: Settings, root: Path) -> dict:
    """Preprocess, train, evaluate ``log`` in this process; per-stage times and peaks,
    sizes after the library's cleaning, and the test metrics over every test user."""
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        cfg = experiment_config(log, s)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        record: dict = {}
        with stage(record, "preprocess"):
            dm = build_datamodule(cfg)
        with stage(record, "train"):
            module = build_module(cfg, dm)
            limit = {"limit_train_batches": s.train_batches} if s.train_batches else {}
            trainer = _trainer(s, root, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, **limit)
            trainer.fit(module, datamodule=dm)
            steps = trainer.global_step
            loss = float(trainer.callback_metrics.get("train/loss_epoch", float("nan")))
        with stage(record, "evaluate"):
            _trainer(s, root).test(module, datamodule=dm, verbose=False)
        lengths = dm.sequences.lengths
        return {
            "stages": record,
            "summary": dm.events.summary,  # after cleaning: n_users, n_items, n_events, dropped_*
            "vocab_items": dm.vocab.n_items,
            "train_users": len(dm.split.train),
            "test_users": len(dm.split.test),
            "train_positions": int((lengths - 2 - 1).clip(max=s.max_len).sum()),  # one window per user per epoch
            "steps": steps,
            "steps_per_epoch": math.ceil(len(dm.split.train) / s.batch_size),
            "train_loss": loss,
            "n_eval_users": int(module.last_ranks["test"].numel()),
            "test": module.last_metrics["test"],
            "parameters": sum(p.numel() for p in module.parameters()),
        }
    finally:
        torch.set_num_threads(threads)


# ---- driver: each part in its own process --------------------------------------------------


def _worker(args) -> int:
    s = Settings(**json.loads(args.settings))
    log = Path(args.log)
    result = generate(s, log) if args.worker == "generate" else pipeline(log, s, log.parent)
    Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def _run_worker(kind: str, s: Settings, log: Path) -> dict:
    return run_worker(Path(__file__).resolve(),
                      ["--worker", kind, "--log", str(log), "--settings", json.dumps(dataclasses.asdict(s))],
                      log.parent / f"{kind}.json",
                      env=child_env(OMP_NUM_THREADS=str(s.threads), MKL_NUM_THREADS=str(s.threads)))


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _cells(row: dict) -> str:
    cpu = f"{row['user_s'] + row['sys_s']:.1f} s ({row['user_s']:.1f} + {row['sys_s']:.1f})"
    return f"{row['wall_s']:.1f} s | {cpu} | {row['peak_rss_gb']:.2f} GB | {row['rss_after_gb']:.2f} GB"


def markdown(doc: dict) -> str:
    s, gen, pipe = doc["settings"], doc["generate"], doc["pipeline"]
    stages = {**gen["stages"], **pipe["stages"]}
    summary = pipe["summary"]
    worst = max(stages[n]["peak_rss_gb"] for n in ("preprocess", "train", "evaluate"))
    lines = [
        "# Large catalogue",
        "",
        f"Written by `benchmarks/large_catalogue.py` on {doc['started']} ({doc['wall_s'] / 60:.1f} min wall in all). "
        f"Regenerate with `{doc['command']}`.",
        "",
        f"A planted-Markov log (`recsys.data.synthetic.planted_markov_log`, p_follow {s['p_follow']}, seed "
        f"{s['seed']}): **{summary['n_items']:,} items, {summary['n_events']:,} events, {summary['n_users']:,} "
        f"users** of {Settings(**s).min_len}..{Settings(**s).max_len_events} events each, written to Parquet "
        f"({gen['file_mb']:.1f} MB), then read by the library as `recsys fit` reads it (`data.format=parquet`).",
        "",
        *table(["stage", "what", "wall time", "CPU time (user + sys)", "peak RSS", "RSS at the end", "target"],
               "llrrrrl"),
        f"| generate | generator + `DataFrame.to_parquet` (own process; not preprocessing) | "
        f"{_cells(stages['generate'])} | |",
    ]
    what = {
        "preprocess": "`build_datamodule`: read Parquet, validate, order, clean, fingerprint, vocabulary, "
                      "sequences, leave-one-out split",
        "train": f"`build_module` + {pipe['steps']:,} steps ({'one epoch' if not s['train_batches'] else 'limited'}"
                 f", {pipe['steps_per_epoch']:,} per epoch), train.loss={s['loss']}",
        "evaluate": f"`Trainer.test`: {pipe['n_eval_users']:,} users x {pipe['vocab_items']:,} items, "
                    f"{s['eval_batch_size']} users per block",
    }
    for name in ("preprocess", "train", "evaluate"):
        row = stages[name]
        target = []
        if name == "preprocess":
            target.append(f"<= 5 min {_mark(row['wall_s'] <= TARGET_PREPROCESS_S)}")
        target.append(f"<= 24 GB {_mark(row['peak_rss_gb'] <= TARGET_RSS_GB)}")
        lines.append(table_row([name, what[name], _cells(row), ", ".join(target)]))
    total = sum(stages[n]["wall_s"] for n in ("preprocess", "train", "evaluate"))
    lines += [
        f"| **pipeline** | preprocess + train + evaluate, one process | {total:.1f} s | | {worst:.2f} GB | | "
        f"<= 24 GB {_mark(worst <= TARGET_RSS_GB)} |",
        "",
        "Peak RSS of a stage is the process's high-water mark during it (reset at its start through "
        "`/proc/self/clear_refs`), so the training and evaluation peaks include the prepared data that "
        "stays in memory. "
        + ("" if all(stages[n]["peak_is_stage_only"] for n in stages) else
           "This kernel could not reset the mark for some stage: those peaks are the process's peak so far. ")
        + "CPU time is the process's user + system time in the stage: the machine was shared (see below), "
        "so wall time minus CPU time is mostly time spent waiting for a core.",
        "",
        "## Sizes and results",
        "",
        f"- generated: {gen['generated']['users']:,} users, {gen['generated']['items']:,} distinct items, "
        f"{gen['generated']['events']:,} events",
        f"- after the library's cleaning (`data.json` summary): {summary['n_users']:,} users, {summary['n_items']:,} "
        f"items, {summary['n_events']:,} events; dropped: {summary['dropped_short_users']} rows of short users, "
        f"{summary['dropped_duplicates']} duplicates, {summary['dropped_kcore']} by k-core",
        f"- training: {pipe['train_users']:,} users, {pipe['train_positions']:,} next-item positions per epoch "
        f"(each user's newest {s['max_len']} training targets), {pipe['parameters']:,} parameters; mean training "
        f"loss {pipe['train_loss']:.3f}",
        f"- evaluation: {pipe['n_eval_users']:,} of {pipe['test_users']:,} test users ranked over all "
        f"{pipe['vocab_items']:,} items",
        "",
        *table(["test metric", "after this training", "Bayes optimum (expected)"], "lrr",
               ([key, f"{value:.4f}", f"{gen['optimal'][key]:.4f}"] for key, value in pipe["test"].items())),
        "",
        "The metrics show that evaluation ranked the whole catalogue, nothing more: one epoch is far from the "
        "planted optimum, and this benchmark measures time and memory, not quality.",
        "",
        "## Settings",
        "",
        f"SASRec, d {s['dim']}, {s['n_blocks']} blocks, 1 head, max length {s['max_len']}, dropout 0.2, batch "
        f"{s['batch_size']}, Adam lr 1e-3, train.loss={s['loss']}"
        + (f", {s['negatives']} uniform negatives shared by the batch, logQ correction" if s["loss"] == "sampled"
           else f", chunk size {s['chunk_size']}")
        + f"; eval.batch_size {s['eval_batch_size']}, eval.exclude_seen off (the default); "
        f"{s['threads']} torch thread(s) in each process.",
        "",
        f"Full-catalogue evaluation scores users x items cells, so the user count sets its cost: the "
        f"{summary['n_events']:,} events are spread over {summary['n_users']:,} users "
        f"({summary['n_users'] * summary['n_items']:.1e} cells), where users of 20 events would make "
        f"{summary['n_events'] / 20 * summary['n_items']:.1e}.",
        "",
        "## Machine and load",
        "",
        "The machine was shared with other long benchmark jobs during the run, and this run was deprioritised "
        "below them (`echo 19 > /proc/$$/autogroup`), so wall times are inflated by an amount that this file "
        "cannot separate out. Load average (1, 5, 15 min) at each stage's start and end:",
        "",
        *table(["stage", "load before", "load after"], "lll",
               ([n, stages[n]["load_before"], stages[n]["load_after"]] for n in STAGES)),
    ]
    lines += ["", *[f"- **{k}**: {v}" for k, v in doc["machine"].items()], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    parser.add_argument("--items", type=int, default=d.items)
    parser.add_argument("--events", type=int, default=d.events, help="about this many events (lengths are random)")
    parser.add_argument("--mean-len", type=int, default=d.mean_len, help="mean events per user")
    parser.add_argument("--loss", choices=["sampled", "ce_chunked"], default=d.loss)
    parser.add_argument("--negatives", type=int, default=d.negatives)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--max-len", type=int, default=d.max_len)
    parser.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    parser.add_argument("--train-batches", type=int, default=d.train_batches, help="0 = one whole epoch")
    parser.add_argument("--threads", type=int, default=d.threads)
    parser.add_argument("--workdir", type=Path, default=None, help="where the Parquet log goes (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("LARGE_CATALOGUE.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    parser.add_argument("--worker", choices=["generate", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    s = Settings(items=args.items, events=args.events, mean_len=args.mean_len, loss=args.loss,
                 negatives=args.negatives, batch_size=args.batch_size, max_len=args.max_len,
                 eval_batch_size=args.eval_batch_size, train_batches=args.train_batches, threads=args.threads)
    given = sys.argv[1:] if argv is None else argv
    doc = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": " ".join([".venv/bin/python benchmarks/large_catalogue.py", *given]),
           "settings": dataclasses.asdict(s), "machine": machine()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-large-", dir=args.workdir) as tmp:
        log = Path(tmp) / "events.parquet"
        print(f"== generate: {s.users:,} users x {s.min_len}..{s.max_len_events} events, {s.items:,} items")
        doc["generate"] = _run_worker("generate", s, log)
        print("== pipeline: preprocess, train, evaluate")
        doc["pipeline"] = _run_worker("pipeline", s, log)
    doc["wall_s"] = time.perf_counter() - t0
    text = markdown(doc)
    write_atomic(args.out, text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print("\n" + text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
