"""Benchmark runner: frozen experiment configs x seeds -> one run directory + result.json each.

    .venv/bin/python benchmarks/runner.py                 # whole matrix, 3 seeds, then recsys leaderboard
    .venv/bin/python benchmarks/runner.py --quick         # smoke run in minutes (LastFM, 2 seeds, 2 epochs)
    .venv/bin/python benchmarks/runner.py --datasets s3rec-lastfm --seeds 42   # one slice
    .venv/bin/python benchmarks/runner.py --dry-run       # print every cell and its status, run nothing
    .venv/bin/python benchmarks/runner.py --time-epochs   # time one epoch per config, estimate the matrix

Layout: ``<results>/<dataset>/<config-stem>/seed<N>/`` is the run directory that
``recsys fit`` writes (``recsys.rundir`` names its files; checkpoints and logs are
git-ignored), plus ``result.json``: the metrics and the provenance needed to
reproduce and compare the run (config hash, dataset fingerprint, seed, git commit,
versions, hardware, wall time).

A cell is *complete* when its run directory says ``complete`` and its ``result.json`` has
the hash of the config the runner would run now. Complete cells are skipped (``--force``
redoes them). An interrupted run stays in ``seed<N>.partial``: the next invocation
resumes it from its last epoch (same config) or starts it over (a failed run, a changed
config), so long runs accumulate over several invocations; a cell whose
frozen config changed since it ran is *stale* and is redone. Runs go through the public
CLI (``recsys fit``), one process per run, one run at a time.

Every run gets ``train.progress_bar=false`` and ``train.num_threads=1`` (``--threads``):
single-threaded runs are several times faster than two threads on a busy 2-core machine,
and make training times comparable between rows.

Run it from a clean checkout (``git worktree add --detach /tmp/bench HEAD``, then
``--results /path/to/main/benchmarks/results``): each run imports the code it finds, so
uncommitted edits in a shared checkout would leak into results (``git_commit`` in
result.json ends in ``-dirty`` when that happens).

Uses only public names from recsys (``recsys.config.ExperimentConfig``, ``recsys.rundir``,
``recsys.report.results``) and the CLI; running ``recsys fit`` in a child process and
waiting for it is ``benchmarks/_common.py``'s ``fit_in_child``, which the planted benchmark
uses too.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
# _common also puts this checkout first on sys.path (not whichever recsys is pip-installed), so
# the config hash here and the `recsys fit` children (run with cwd=ROOT) see the same code.
from _common import (  # noqa: E402
    ROOT, child_env, data_dir, fit_command, fit_in_child, hardware, run_and_wait, unfinished_action,
)

from recsys import rundir  # noqa: E402
from recsys.config import ExperimentConfig  # noqa: E402
from recsys.report.results import EXCLUDED_DATASETS, RESULT, config_hash, run_config_hash  # noqa: E402

EXPERIMENTS = ROOT / "experiments"
RESULTS = ROOT / "benchmarks" / "results"
LEADERBOARD = ROOT / "benchmarks" / "LEADERBOARD.md"
PLOT = ROOT / "benchmarks" / "leaderboard.png"
QUICK_ROOT = ROOT / "runs" / "benchmarks-quick"
DEFAULT_SEEDS = (42, 43, 44)  # 42 is the seed in every frozen config, so seed 42 reproduces it as written
QUICK = {
    "datasets": ("s3rec-lastfm",),
    "seeds": (42, 43),
    "overrides": ("train.max_epochs=2", "train.patience=2"),
}
RESULT_SCHEMA = 1


@dataclass(frozen=True)
class Cell:
    """One (config, seed) run of the matrix."""

    config_path: Path
    dataset: str
    stem: str
    seed: int

    def run_dir(self, results: Path) -> Path:
        return results / self.dataset / self.stem / f"seed{self.seed}"

    def label(self) -> str:
        return f"{self.dataset}/{self.stem} seed {self.seed}"


# ---- the matrix ----------------------------------------------------------------------------


def discover(experiments: Path, datasets: list[str] | None = None, configs: list[str] | None = None,
             include_excluded: bool = False) -> list[Path]:
    """Frozen configs ``experiments/<dataset>/<stem>.yaml``, filtered by dataset and stem."""
    found = []
    for path in sorted(experiments.glob("*/*.yaml")):
        dataset, stem = path.parent.name, path.stem
        if datasets and dataset not in datasets:
            continue
        if not datasets and not include_excluded and dataset in EXCLUDED_DATASETS:
            continue
        if configs and stem not in configs:
            continue
        found.append(path)
    return found


def _data_size(path: Path) -> int:
    """Size of the config's data file (a cheap proxy for run time), 0 when unknown."""
    try:
        data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data", {})
        rel = Path(data.get("path", ""))
        root = Path(data.get("data_dir") or data_dir())
        target = rel if rel.is_absolute() else root / rel
        return target.stat().st_size
    except (OSError, AttributeError, yaml.YAMLError):
        return 0


def plan(config_paths: list[Path], seeds: list[int]) -> list[Cell]:
    """Seed-major order (every config once before any config twice), smallest data first,
    so an interrupted or partial run still gives one seed of as many rows as possible."""
    ordered = sorted(config_paths, key=lambda p: (_data_size(p), p.parent.name, p.stem))
    return [Cell(p, p.parent.name, p.stem, seed) for seed in seeds for p in ordered]


def fit_overrides(cell: Cell, overrides: list[str]) -> list[str]:
    """What ``recsys fit --config <the cell's frozen config>`` gets: its seed, then the extra overrides."""
    return [f"seed={cell.seed}", "train.progress_bar=false", *overrides]


def resolve_config(cell: Cell, overrides: list[str]) -> ExperimentConfig:
    """The exact config a cell runs: the frozen file, its seed, then extra overrides."""
    return ExperimentConfig.from_yaml(cell.config_path).with_overrides(fit_overrides(cell, overrides))


# ---- status of a cell ----------------------------------------------------------------------


def cell_status(run_dir: Path, expected_hash: str) -> str:
    """``complete`` | ``recoverable`` (run done, result.json missing) | ``stale`` | ``missing``.

    Only a run directory that ``recsys fit`` renamed into place with status ``complete``
    counts; a crashed run lives in ``<run_dir>.partial`` and so is ``missing`` here. The
    run's stored ``config.yaml`` is read with today's code and hashed like the config the
    runner would run now, so a config field added to the library since (with its default)
    does not make old results stale, while any changed value does.
    """
    if not rundir.is_complete(run_dir):
        return "missing"
    if run_config_hash(run_dir) != expected_hash:  # None when config.yaml no longer loads
        return "stale"
    if rundir.read_json(run_dir / RESULT) is not None:
        return "complete"
    if rundir.has_results(run_dir):
        return "recoverable"
    return "stale"


# ---- provenance ----------------------------------------------------------------------------


def build_result(cell: Cell, cfg: ExperimentConfig, run_dir: Path, overrides: list[str], quick: bool,
                 command: list[str] | None, process_s: float | None, process_cpu_s: float | None = None) -> dict:
    """result.json: the run's metrics plus everything needed to reproduce and compare it."""
    metrics = rundir.read_metrics(run_dir)
    split = cfg.data.split
    split_label = "leave-one-out" if split == "loo" else (
        f"temporal (test cut at the {cfg.data.split_quantile} quantile of event time, "
        f"validation cut at {cfg.data.split_valid_quantile})"
    )
    try:
        config_path = str(cell.config_path.resolve().relative_to(ROOT))
    except ValueError:
        config_path = str(cell.config_path)
    return {
        "schema": RESULT_SCHEMA,
        "dataset": cell.dataset,
        "config": cell.stem,
        "config_path": config_path,
        "seed": cell.seed,
        "model": cfg.model.name,
        "loss": cfg.train.loss,
        "split": split,
        "protocol": f"full-catalogue ranking, {split_label}, pessimistic ties, exclude_seen={cfg.eval.exclude_seen}",
        "overrides": list(overrides),
        "quick": quick,
        "config_hash": config_hash(cfg),
        "config_hash_without_seed": config_hash(cfg, with_seed=False),
        "valid": metrics["valid"],
        "test": metrics["test"],
        "n_eval_users": metrics.get("n_eval_users"),
        "dataset_fingerprint": metrics["dataset"]["fingerprint"],
        "dataset_summary": metrics["dataset"]["summary"],
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "wall_time_s": {**metrics.get("wall_time_s", {}),
                        "process": None if process_s is None else round(process_s, 3)},
        "cpu_time_s": {**metrics.get("cpu_time_s", {}),
                       "process": None if process_cpu_s is None else round(process_cpu_s, 3)},
        "git_commit": metrics.get("git_commit"),
        "versions": metrics.get("versions"),
        "machine": metrics.get("machine"),
        "torch_threads": metrics.get("torch_threads"),
        "hardware": hardware(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": None if command is None else shlex.join(command),
        "files": {"config": rundir.CONFIG, "metrics": rundir.METRICS, "ranks": rundir.RANKS},
    }


# ---- running -------------------------------------------------------------------------------


def todo_action(status: str, force: bool) -> str | None:
    """What to do with a cell: ``run``, ``recover`` (write result.json only) or None (skip)."""
    if force:
        return "run"
    return {"complete": None, "recoverable": "recover"}.get(status, "run")


def run_cell(cell: Cell, results: Path, overrides: list[str], quick: bool) -> dict:
    """Fit one cell through ``recsys fit`` and write its result.json. Raises on failure.

    An interrupted run of the same config is resumed (``unfinished_action``); its wall and
    CPU times then cover the resumed part only."""
    cfg = resolve_config(cell, overrides)
    run_dir = cell.run_dir(results)
    try:
        run = fit_in_child(cell.config_path, run_dir, fit_overrides(cell, overrides), config_hash(cfg),
                           log=run_dir.with_name(run_dir.name + ".log"))
    except RuntimeError as exc:
        raise RuntimeError(f"{cell.label()}: {exc}") from None
    result = build_result(cell, cfg, run_dir, overrides, quick, run.command, run.wall_s, run.cpu_s)
    rundir.write_json(run_dir / RESULT, result)
    return result


def _lock(results: Path):
    """One runner per results folder: two would race on the same run directories."""
    results.mkdir(parents=True, exist_ok=True)
    handle = (results / ".runner.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another benchmark runner is using {results}") from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def render(results: Path, out: Path, plot: Path, experiments: Path) -> int:
    """Render the leaderboard through the public CLI."""
    command = [sys.executable, "-m", "recsys.cli", "leaderboard", "--results", str(results), "--experiments",
               str(experiments), "--out", str(out), "--plot", str(plot)]
    return run_and_wait(command, env=child_env()).returncode


def time_epochs(configs: list[Path], overrides: list[str], results: Path, seeds: int,
                assume_epochs: int) -> dict:
    """Time one real epoch (training + one validation pass) of every config and estimate the matrix.

    Each config runs once with ``train.max_epochs=1`` into a scratch folder. A config's
    estimate is epoch time x epochs per run + the run's other time (data preparation, final
    evaluation), times the seeds. For a one-thread run the times are its CPU seconds: what it
    takes on an idle core, however many other jobs shared the machine while it was timed
    (wall time inflates with each). For a multi-thread run they are wall seconds. Epochs per
    run come from the config's finished results when there are any (early stopping decides
    them), else ``assume_epochs`` (or the config's ``max_epochs`` if lower). Writes
    ``<results>/epoch_times.json``.
    """
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, path in enumerate(configs):
            cell = Cell(path, path.parent.name, path.stem, DEFAULT_SEEDS[0])
            run_dir = Path(scratch) / f"run{i}"
            command = fit_command(path, run_dir, fit_overrides(cell, [*overrides, "train.max_epochs=1"]))
            run = run_and_wait(command, log=Path(scratch) / f"run{i}.log", env=child_env())
            if not run.ok:
                print(f"  {cell.dataset}/{cell.stem}: failed ({run.tail(1)})")
                continue
            metrics = rundir.read_metrics(run_dir)
            wall, cpu_s = metrics["wall_time_s"], metrics.get("cpu_time_s")
            finished = (results / cell.dataset / cell.stem).glob(f"seed*/{RESULT}")
            done = [r for r in map(rundir.read_json, finished) if r is not None and r.get("epochs")]
            resolved = resolve_config(cell, overrides)
            if metrics.get("epochs") == 0:  # a baseline: fitted by counting, no epochs
                epochs, done = 0, []
            else:
                epochs = sum(r["epochs"] for r in done) / len(done) if done else min(assume_epochs, resolved.train.max_epochs)
            # One thread: its CPU seconds are what the epoch takes on an idle core, however
            # busy the machine was while it was timed. More threads: only the wall time says.
            basis = "cpu" if cpu_s and resolved.train.num_threads == 1 else "wall"
            times = cpu_s if basis == "cpu" else wall
            per_seed = times["train"] * epochs + (times["total"] - times["train"])
            rows.append({"dataset": cell.dataset, "config": cell.stem, "basis": basis, "epoch_s": times["train"],
                         "overhead_s": round(times["total"] - times["train"], 3), "epoch_wall_s": wall["train"],
                         "process_cpu_s": round(run.cpu_s, 1), "process_wall_s": wall.get("total"), "epochs_per_run": epochs,
                         "epochs_from": "results" if done else "assumed" if epochs else "baseline", "per_seed_s": round(per_seed, 1),
                         "all_seeds_s": round(per_seed * seeds, 1)})
            r = rows[-1]
            print(f"  {cell.dataset + '/' + cell.stem:<42} epoch {r['epoch_s']:7.1f} s ({basis}; wall {wall['train']:.1f} s)"
                  f"  x {epochs:5.1f} epochs ({r['epochs_from']})  = {per_seed / 3600:5.2f} h/seed, "
                  f"{per_seed * seeds / 3600:5.2f} h for {seeds} seeds", flush=True)
    measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        r["measured_at"] = measured_at
    # Timings accumulate like results: rows of configs not timed now are kept from the last
    # file when they were taken with the same overrides and seeds.
    previous = rundir.read_json(results / "epoch_times.json") or {}
    if previous.get("overrides") == overrides and previous.get("seeds") == seeds:
        timed = {(r["dataset"], r["config"]) for r in rows}
        rows = [r for r in previous.get("configs", []) if (r["dataset"], r["config"]) not in timed] + rows
    total = sum(r["all_seeds_s"] for r in rows)
    doc = {"hardware": hardware(), "overrides": overrides, "seeds": seeds, "assume_epochs": assume_epochs,
           "measured_at": measured_at, "configs": rows, "total_s": round(total, 1)}
    results.mkdir(parents=True, exist_ok=True)
    rundir.write_json(results / "epoch_times.json", doc)
    print(f"estimated wall time of the matrix: {total / 3600:.1f} h ({len(rows)} configs x {seeds} seeds, one run at a time)")
    return doc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", type=Path, default=EXPERIMENTS, help="folder of <dataset>/<config>.yaml")
    p.add_argument("--results", type=Path, default=None, help=f"results folder (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("--datasets", nargs="+", default=None, help="only these datasets (folder names)")
    p.add_argument("--configs", nargs="+", default=None, help="only these config stems, e.g. sasrec-ce")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help=f"seeds (default {list(DEFAULT_SEEDS)})")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE", help="extra config overrides for every run")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (train.num_threads; default 1: on a shared CPU, more threads than "
                        "free cores slows training several-fold, and one thread keeps training times comparable)")
    p.add_argument("--force", action="store_true", help="redo runs that are already complete")
    p.add_argument("--quick", action="store_true",
                   help="smoke run in minutes: LastFM, seeds 42 43, 2 epochs, into runs/benchmarks-quick/")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each cell's status; run nothing")
    p.add_argument("--no-render", action="store_true", help="do not render the leaderboard at the end")
    p.add_argument("--keep-going", action="store_true", help="after a failed run, go on with the next one")
    p.add_argument("--time-epochs", action="store_true",
                   help="time one epoch of every selected config and estimate the matrix's wall time; no results")
    p.add_argument("--assume-epochs", type=int, default=50,
                   help="epochs per run for --time-epochs where no finished result says (default 50)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [f"train.num_threads={args.threads}", *args.override]
    datasets, seeds = args.datasets, args.seeds or list(DEFAULT_SEEDS)
    results, out, plot = args.results or RESULTS, LEADERBOARD, PLOT
    if args.quick:
        datasets = datasets or list(QUICK["datasets"])
        seeds = args.seeds or list(QUICK["seeds"])
        overrides = [*QUICK["overrides"], *overrides]
        results = args.results or QUICK_ROOT / "results"
        out, plot = QUICK_ROOT / "LEADERBOARD.md", QUICK_ROOT / "leaderboard.png"
    cells = plan(discover(args.experiments, datasets, args.configs), seeds)
    if not cells:
        print("no configs match", file=sys.stderr)
        return 2
    if args.time_epochs:
        time_epochs(sorted({c.config_path for c in cells}, key=_data_size), overrides, results, len(seeds),
                    args.assume_epochs)
        return 0

    todo = []
    for cell in cells:
        expected = config_hash(resolve_config(cell, overrides))
        status = cell_status(cell.run_dir(results), expected)
        action = todo_action(status, args.force)
        shown = action or "skip"
        if action == "run" and status == "missing":  # what run_cell will do with a leftover .partial
            unfinished = unfinished_action(cell.run_dir(results), expected)
            shown = shown if unfinished == "fresh" else unfinished
        print(f"  {status:<12} {shown:<8} {cell.label()}")
        if action:
            todo.append((cell, action))
    print(f"{len(cells)} cells, {len(cells) - len(todo)} complete, {len(todo)} to do; results in {results}")
    if args.dry_run:
        return 0

    lock = _lock(results)
    failed = []
    try:
        for i, (cell, action) in enumerate(todo, 1):
            run_dir = cell.run_dir(results)
            if action == "recover":  # the run finished but its result.json was never written
                cfg = resolve_config(cell, overrides)
                rundir.write_json(run_dir / RESULT, build_result(cell, cfg, run_dir, overrides, args.quick, None, None))
                print(f"[{i}/{len(todo)}] {cell.label()}: result.json rebuilt from the finished run")
                continue
            print(f"[{i}/{len(todo)}] {cell.label()} ...", flush=True)
            try:
                result = run_cell(cell, results, overrides, args.quick)
            except RuntimeError as exc:
                print(f"FAILED {exc}", file=sys.stderr)
                failed.append(cell)
                if not args.keep_going:
                    break
                continue
            print(f"    test ndcg@10 {result['test']['ndcg@10']:.4f}  hr@10 {result['test']['hr@10']:.4f}  "
                  f"epochs {result['epochs']} (best {result['best_epoch']})  "
                  f"train {result['wall_time_s'].get('train', float('nan')):.0f}s  "
                  f"process {result['wall_time_s']['process']:.0f}s", flush=True)
    finally:
        lock.close()
    if not args.no_render:
        rc = render(results, out, plot, args.experiments)
        if rc != 0:
            return rc
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
