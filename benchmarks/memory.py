"""Resident memory of a long training run, epoch by epoch (issue 19, item 5).

    RECSYS_DATA_DIR=../shared/datasets taskset -c 1 env OMP_NUM_THREADS=1 \
        .venv/bin/python benchmarks/memory.py --variants "ml-1m-partial, before"   # one variant, ~20 min
    .venv/bin/python benchmarks/memory.py --list                                  # the variants

Each variant is one ``recsys.training.run.fit`` (the real pipeline: Lightning, the data
loader, validation every epoch, checkpoints) of ``--epochs`` epochs (patience above it, so
no early stop), in a fresh process of its own, so its peak is its own. At every epoch end
(after the epoch's validation) it records:

- ``rss_mb``: current RSS (``VmRSS``), and ``anon_mb`` / ``file_mb`` (``RssAnon`` /
  ``RssFile``) from ``/proc/self/status``;
- ``peak_mb``: the process's RSS high-water mark so far (``VmHWM``);
- glibc's own view (``mallinfo2``, summed over its arenas): ``heap_mb`` (bytes taken from
  the system by ``brk``/arena heaps), ``in_use_mb`` (of those, handed out), ``free_mb``
  (free inside the heaps: kept, whether resident or not), ``mmap_mb`` (live ``mmap``'d
  blocks) and the number of arenas (``malloc_info``);
- the epoch's training and validation wall time, the process's CPU time (user, system)
  and minor page faults over the whole epoch, and the load average;
- ``rss_next_start_mb``: RSS when the next epoch starts, after the epoch-end hooks (the
  trim, where it is on); the row's ``rss_mb`` is read before them.

Runs:

- ``ml-1m-partial``: the issue-6 shape (SASRec, max length 200, 2 blocks, d 64, 1 head,
  dropout 0.2, batch 128, Adam 1e-3), every other setting at the library default (as
  ``benchmarks/speed.py``'s "defaults, no flags" row: chunked CE in bf16, length groups,
  the transition head);
- ``1m-items``: a planted-Markov log (``recsys.data.synthetic.planted_markov_log``) of
  ``LARGE_USERS`` users with ``LARGE_EVENTS`` events each over a 1,000,000-item
  catalogue (about 997k items occur), written to Parquet once under ``--workdir`` and read
  as ``recsys fit`` reads it; library defaults with ``train.loss=sampled`` (full CE over a
  million items takes minutes an epoch on one thread) and max length 50.

``jemalloc`` runs the library as shipped with jemalloc preloaded, as ``RECSYS_ALLOCATOR=jemalloc``
makes the ``recsys`` command do (``recsys.training.preload``; skipped where no library is found:
``RECSYS_JEMALLOC`` names one). ``before`` runs the library with ``train.trim_memory=false`` (no trim, oneDNN's kernel
caches at their default 1,024 entries: the library before issue 19); ``trim only`` with
the trim but the caches' default capacities named in the environment; ``after`` as
shipped (trim, caches capped by ``recsys.training.allocator.bound_kernel_caches``). Each finished variant is merged into ``--json``
(``benchmarks/SPEED-memory.json``), replacing the same variant of an earlier run, so
variants can be (re)run one at a time; ``benchmarks/speed.py --render`` shows them in SPEED.md.
Progress goes to ``--workdir``/``<variant>.progress.json`` after every epoch.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from _common import (  # noqa: E402
    DATA_DIR, atomic_path, child_env, load_average, machine, process_memory_kib, run_worker, table, table_row,
    write_atomic,
)

os.environ.setdefault("RECSYS_DATA_DIR", str(DATA_DIR))  # as the Makefile

import pytorch_lightning as pl  # noqa: E402

from speed import ISSUE_SETTINGS, defaults_config  # noqa: E402  (the shape of speed.py's "defaults" row)

from recsys.config import ExperimentConfig  # noqa: E402
from recsys.training.allocator import KERNEL_CACHE_CAPACITY  # noqa: E402
from recsys.training.preload import jemalloc_library, preload_env  # noqa: E402
from recsys.training.provenance import git_commit  # noqa: E402

LARGE_ITEMS, LARGE_USERS, LARGE_EVENTS = 1_000_000, 500, 12_000  # 6M events: ~99.75% of the items occur
DEFAULT_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}  # oneDNN's defaults
STATES = {  # state -> (config overrides, environment of the measured process)
    "before": (["train.trim_memory=false"], {}),  # no trim, kernel caches at their defaults
    "trim only": ([], DEFAULT_CACHES),  # the trim, with the caches' default capacities named
    "after": ([], {}),  # as shipped under glibc: trim and capped kernel caches
    "jemalloc": ([], None),  # the above with RECSYS_ALLOCATOR=jemalloc: malloc from jemalloc
}
DATASETS = ("ml-1m-partial", "1m-items")
VARIANTS = [f"{d}, {s}" for d in DATASETS for s in STATES]


# ---- reading the process's memory -------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, (ctypes.c_char_p, ctypes.c_char_p)
        libc.fclose.argtypes = (ctypes.c_void_p,)
        libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
        return libc
    except (OSError, AttributeError):
        return None


LIBC = _libc()


def status_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in MiB (Linux)."""
    keys = {"VmRSS": "rss_mb", "VmHWM": "peak_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    return {keys[k]: kib / 1024 for k, kib in process_memory_kib().items()}


def malloc_mb() -> dict[str, float]:
    """glibc malloc's totals over all arenas (mallinfo2) in MiB, and the arena count."""
    if LIBC is None:
        return {}
    m = LIBC.mallinfo2()
    out = {"heap_mb": m.arena / 2**20, "in_use_mb": m.uordblks / 2**20, "free_mb": m.fordblks / 2**20,
           "top_free_mb": m.keepcost / 2**20, "mmap_mb": m.hblkhd / 2**20, "mmap_blocks": m.hblks}
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        fp = LIBC.fopen(tmp.name.encode(), b"w")
        if fp:
            LIBC.malloc_info(0, fp)
            LIBC.fclose(fp)
            out["arenas"] = len(re.findall(r'<heap nr="\d+"', Path(tmp.name).read_text()))
    return out


class MemoryProbe(pl.Callback):
    """One row per epoch end (after validation): memory, times, load; written to ``progress``."""

    def __init__(self, progress: Path) -> None:
        self.rows: list[dict] = []
        self.progress, self._t, self._train = progress, 0.0, 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        if self.rows:  # after the last epoch's end hooks (the trim, where it is on)
            self.rows[-1]["rss_next_start_mb"] = round(status_mb()["rss_mb"], 1)
        self._t, self._usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    def on_validation_epoch_start(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self._train, self._t = time.perf_counter() - self._t, time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        row = {"epoch": trainer.current_epoch + 1, "train_s": round(self._train, 3),
               "val_s": round(time.perf_counter() - self._t, 3),
               "user_s": round(usage.ru_utime - self._usage.ru_utime, 3),
               "sys_s": round(usage.ru_stime - self._usage.ru_stime, 3),
               "minor_faults": usage.ru_minflt - self._usage.ru_minflt, "load": load_average()}
        row.update({k: round(v, 1) for k, v in {**status_mb(), **malloc_mb()}.items()})
        self.rows.append(row)
        print(f"   epoch {row['epoch']:3d}: rss {row['rss_mb']:7.0f} MB, peak {row['peak_mb']:7.0f} MB, "
              f"heap {row.get('heap_mb', 0):6.0f} (free {row.get('free_mb', 0):6.0f}), "
              f"mmap {row.get('mmap_mb', 0):6.0f}, train {row['train_s']:.1f} s, val {row['val_s']:.1f} s", flush=True)
        self.progress.write_text(json.dumps(self.rows), encoding="utf-8")


# ---- SPEED.md ---------------------------------------------------------------------------------


def _drift(rows: list[dict], key: str, base: int = 10) -> tuple[float, float] | None:
    """Largest rise and largest fall relative to epoch ``base``'s value, over epochs ``base``..."""
    ref = next((r.get(key) for r in rows if r["epoch"] == base), None)
    later = [r[key] / ref - 1 for r in rows if r["epoch"] >= base and r.get(key) is not None] if ref else []
    return (max(later), min(later)) if later else None


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def markdown_memory(doc: dict) -> list[str]:
    """The memory section of SPEED.md (``benchmarks/speed.py --render ... SPEED-memory.json``)."""
    variants = doc["variants"]
    lines = ["## Memory over a long run (`benchmarks/memory.py`)", "",
             "RSS of one `fit` process at every epoch end (after validation, before the epoch-end hooks), "
             "current (`VmRSS`) and peak so far (`VmHWM`). `before`: `train.trim_memory=false`, the library "
             "before issue 19; `trim only`: `malloc_trim(0)` before validation and at each epoch's end, oneDNN's "
             "kernel caches at their default 1,024 entries; `after`: the trim and both kernel caches capped at "
             f"{KERNEL_CACHE_CAPACITY} entries (`recsys.training.allocator`, whose docstring gives the cause "
             "and the evidence), glibc's malloc, the default; `jemalloc`: the same, with jemalloc preloaded as "
             "`RECSYS_ALLOCATOR=jemalloc` makes the `recsys` command do (`recsys.training.preload`, whose docstring gives its "
             "settings): freed pages kept in the process and purged where glibc's are trimmed, buffers over "
             "32 MiB returned at once. One torch thread on one core (`taskset -c 1`) of a 2-core machine that other "
             "jobs shared, so wall times (and, less so, CPU times) move with their load: compare speed only "
             "between rows of similar load. The issue's bar: within 5% of the epoch-10 value through epoch 100.",
             ""]
    for dataset in DATASETS:
        runs = {state: variants.get(f"{dataset}, {state}") for state in STATES}
        done = {k: v for k, v in runs.items() if v}
        if not done:
            continue
        first = next(iter(done.values()))
        summary = first["dataset"]
        lines += [f"### {dataset}: {summary['n_users']:,} users, {summary['n_items']:,} items, "
                  f"{summary['n_events']:,} events", ""]
        short = max(len(r["rows"]) for r in done.values())
        if short < 100:
            lines += [f"**Runs of at most {short} epochs: short of the issue's 100.**", ""]
        lines += [f"- {state}: " + (f"{len(r['rows'])} epochs from {r['started']} at recsys {str(r['commit'])[:12]}, "
                                    f"load average {r['load_before']} -> {r['load_after']}" if r else "not measured")
                  for state, r in runs.items()]
        columns = [(state, key) for state in done for key in ("rss_mb", "rss_next_start_mb", "peak_mb")
                   if key != "rss_next_start_mb" or state != "before"]  # before: no epoch-end hooks
        names = {"rss_mb": "RSS", "rss_next_start_mb": "RSS after hooks", "peak_mb": "peak"}
        lines += ["", *table(["epoch", *(f"{names[k]} ({s})" for s, k in columns)], "r" * (len(columns) + 1))]
        epochs = sorted({r["epoch"] for run in done.values() for r in run["rows"]})
        for epoch in [e for e in epochs if e in (1, 2, 3, 5) or e % 5 == 0]:
            cells = []
            for state, key in columns:
                row = next((r for r in done[state]["rows"] if r["epoch"] == epoch), None)
                cells.append(f"{row[key] / 1024:.2f} GB" if row and row.get(key) is not None else "")
            lines.append(table_row([epoch, *cells]))
        cells = []
        for state, key in columns:
            drift = _drift(done[state]["rows"], key)
            cells.append("" if drift is None else
                         f"{drift[0]:+.1%} / {drift[1]:+.1%} {'✓' if max(drift[0], -drift[1]) <= 0.05 else '✗'}")
        lines.append(table_row(["**largest rise / fall from epoch 10**", *cells]))
        lines += ["", "RSS is read at the epoch's end before the epoch-end hooks (the trim), RSS after hooks when "
                  "the next epoch starts (the last epoch has none)."]
        lines += ["", "| | " + " | ".join(done) + " |", "|---|" + "---:|" * len(done)]
        stats = {"median training s / epoch (wall)": lambda rows: _median([r["train_s"] for r in rows]),
                 "median CPU s / epoch (user + sys, training and validation)":
                     lambda rows: _median([r["user_s"] + r["sys_s"] for r in rows]),
                 "median system s / epoch": lambda rows: _median([r["sys_s"] for r in rows]),
                 "median validation s (wall)": lambda rows: _median([r["val_s"] for r in rows]),
                 "median minor page faults / epoch": lambda rows: _median([r["minor_faults"] for r in rows])}
        for label, stat in stats.items():
            values = [stat(run["rows"]) for run in done.values()]
            fmt = "{:,.0f}" if "faults" in label else "{:.1f} s"
            lines.append(table_row([label, *(fmt.format(v) for v in values)]))
        lines.append("")
    return lines


# ---- the runs ---------------------------------------------------------------------------------


def large_log(workdir: Path) -> Path:
    """The 1M-item Parquet log, generated once (in the calling process, not the measured one)."""
    path = workdir / f"planted-{LARGE_ITEMS}-{LARGE_USERS}x{LARGE_EVENTS}.parquet"
    if not path.is_file():
        from recsys.data.synthetic import planted_markov_log

        log = planted_markov_log(LARGE_USERS, LARGE_ITEMS, min_len=LARGE_EVENTS, max_len=LARGE_EVENTS, seed=0)
        with atomic_path(path) as tmp:
            log.frame.to_parquet(tmp, index=False)
    return path


def variant_config(variant: str, epochs: int, workdir: Path) -> ExperimentConfig:
    dataset, state = variant.split(", ")
    common = [f"train.max_epochs={epochs}", f"train.patience={epochs + 1}", "train.progress_bar=false",
              "train.num_threads=1", *STATES[state][0]]
    if dataset == "ml-1m-partial":
        return defaults_config(dataset, common)
    shape = [o for o in ISSUE_SETTINGS if o.startswith("model.") and not o.startswith("model.max_len")]
    return ExperimentConfig.from_dict({
        "name": "sasrec-1m-items", "seed": 0,
        "data": {"name": "planted-1m-items", "format": "parquet", "path": str(large_log(workdir)),
                 "user_col": "user", "item_col": "item", "time_col": "timestamp"},
    }).with_overrides([*shape, "model.max_len=50", "train.loss=sampled", "train.batch_size=128", *common])


def run_variant(variant: str, epochs: int, workdir: Path) -> dict:
    """In this process: fit the variant; its config, per-epoch rows and summary."""
    from recsys.training.run import fit

    cfg = variant_config(variant, epochs, workdir)
    probe = MemoryProbe(workdir / f"{variant.replace(', ', '-')}.progress.json")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-memory-", dir=workdir) as tmp:
        result = fit(cfg, Path(tmp) / "run", callbacks=[probe])
    return {"config": cfg.to_dict(), "rows": probe.rows, "wall_s": time.perf_counter() - t0,
            "dataset": result.metrics["dataset"]["summary"], "test_ndcg10": result.metrics["test"]["ndcg@10"]}


def _worker(args) -> int:
    record = run_variant(args.worker, args.epochs, args.workdir)
    Path(args.result).write_text(json.dumps(record), encoding="utf-8")
    return 0


def _others() -> list[str]:
    """What else was running: the busiest processes (name, %CPU, elapsed), not their arguments."""
    out = subprocess.run(["ps", "-eo", "pcpu,etime,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return [" ".join(line.split()) for line in out.splitlines()[1:9]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-memory")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("SPEED-memory.json"))
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(VARIANTS))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return _worker(args)
    for variant in args.variants:
        if variant.startswith("1m-items"):
            large_log(args.workdir)  # generated here, so the measured process does not carry it
        print(f"== {variant}", flush=True)
        result = args.workdir / f"{variant.replace(', ', '-')}.result.json"
        state_env = STATES[variant.split(", ")[1]][1]
        env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(state_env or {}))
        if state_env is None:  # jemalloc, preloaded as the recsys command does (recsys.training.preload)
            library = jemalloc_library()
            if library is None:
                print(f"   skipped {variant}: no jemalloc library (install libjemalloc2 or set RECSYS_JEMALLOC)")
                continue
            env = preload_env(library, env)
        started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        meta = {"started": started, "commit": git_commit(), "load_before": load_average(), "others_before": _others(),
                "env": {k: env[k] for k in (*DEFAULT_CACHES, "LD_PRELOAD", "MALLOC_CONF") if k in env}}
        # one thread: the worker inherits OMP_NUM_THREADS=1 and the config sets train.num_threads=1
        measured = run_worker(Path(__file__).resolve(), ["--worker", variant, "--epochs", str(args.epochs),
                                                         "--workdir", str(args.workdir)], result, env=env)
        record = {**meta, **measured, "load_after": load_average(), "others_after": _others(),
                  "affinity": sorted(os.sched_getaffinity(0))}
        doc = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {"variants": {}}
        doc["machine"], doc["variants"][variant] = machine(), record
        doc["variants"] = {v: doc["variants"][v] for v in VARIANTS if v in doc["variants"]}
        write_atomic(args.json, json.dumps(doc, indent=1))
        print(f"   wrote {variant} into {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
