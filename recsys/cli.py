"""Command line, one subcommand per task (``recsys CMD --help`` for each):

- ``recsys fit --config FILE [key=value ...]`` (or ``--resume RUN_DIR``): train and evaluate
  one config into a run directory;
- ``recsys evaluate RUN_DIR``: recompute a finished run's metrics from its checkpoint;
- ``recsys export RUN_DIR --out DIR [--onnx]``: write a serving artifact;
- ``recsys recommend ARTIFACT --histories FILE --k N --out FILE``: offline top-k for every
  user of an event log (the ``serve`` extra);
- ``recsys serve ARTIFACT``: the HTTP service (the ``serve`` extra);
- ``recsys leaderboard``: render benchmarks/LEADERBOARD.md and its plot from benchmark results;
- ``recsys tune --config FILE --space FILE``: an Optuna study; the best trial as a config
  (the ``tune`` extra).

``fit``, ``evaluate``, ``export`` and ``leaderboard`` need the ``train`` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.errors import ConfigError, RecsysError


def format_table(metrics: dict[str, dict[str, float]], ks: tuple[int, ...] | None = None) -> str:
    """Plain-text table: one row per split, one column per metric."""
    names = list(next(iter(metrics.values())).keys())
    if ks is not None:
        names = [n for n in names if int(n.split("@")[1]) in ks]
    width = max(len(n) for n in names) + 2
    lines = ["split ".ljust(7) + "".join(n.rjust(width) for n in names)]
    for split, values in metrics.items():
        lines.append(split.ljust(7) + "".join(f"{values[n]:.4f}".rjust(width) for n in names))
    return "\n".join(lines)


#: The frozen configs shipped in the package (a link to the checkout's experiments/ folder).
SHIPPED_EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


def shipped_config(path: Path) -> Path:
    """``path`` if it exists, else the frozen config of that name shipped with the package:
    ``experiments/s3rec-beauty/sasrec-ce.yaml``, ``s3rec-beauty/sasrec-ce.yaml`` and
    ``s3rec-beauty/sasrec-ce`` all name it, so the README's commands work after a plain
    ``pip install`` from any directory. A path found in neither place is returned as given."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("experiments",) else path.parts
    for candidate in (SHIPPED_EXPERIMENTS.joinpath(*parts), SHIPPED_EXPERIMENTS.joinpath(*parts).with_suffix(".yaml")):
        if parts and candidate.is_file():
            return candidate
    return path


def _interrupted(run_dir: Path, exc: BaseException) -> int:
    """After Ctrl-C or SIGTERM: say whether anything was kept and how to go on. Exits with
    128 + the signal's number, as a shell does (130 Ctrl-C, 143 SIGTERM)."""
    import re
    import shlex

    from recsys import rundir

    # The run raises KeyboardInterrupt("signal 15") on SIGTERM; Lightning may turn it into
    # SystemExit(1), with the KeyboardInterrupt as its context.
    code, seen = 130, exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            found = re.fullmatch(r"signal (\d+)", str(seen))
            code = 128 + int(found.group(1)) if found else 130
            break
        seen = seen.__context__
    partial = rundir.partial_dir(run_dir)
    if rundir.status_of(partial) == rundir.INTERRUPTED:
        print(f"\nrecsys: interrupted; the unfinished run is kept in {partial}\n"
              f"resume it with: recsys fit --resume {shlex.quote(str(run_dir))}", file=sys.stderr)
        return code
    if isinstance(exc, KeyboardInterrupt) and not partial.exists():
        print("\nrecsys: interrupted before training started; nothing was written", file=sys.stderr)
        return code
    raise exc


def _fit(args: argparse.Namespace) -> int:
    from recsys import rundir
    from recsys.config import ExperimentConfig
    from recsys.training.run import default_run_dir, fit, resume

    if args.resume is not None:
        if args.config is not None or args.overrides:
            raise ConfigError("--resume takes the config stored in the run; drop --config and overrides")
        cfg, run_dir = None, rundir.final_dir(args.resume)
        print(f"resuming {run_dir}", flush=True)
    elif args.config is None:
        raise ConfigError("recsys fit needs --config FILE (or --resume RUN_DIR)")
    else:
        cfg = ExperimentConfig.from_yaml(shipped_config(args.config)).with_overrides(args.overrides)
        run_dir = args.run_dir if args.run_dir is not None else default_run_dir(cfg)
        print(f"fitting {cfg.name} on {cfg.data.name} (seed {cfg.seed}) into {run_dir}", flush=True)
    try:
        result = resume(args.resume) if cfg is None else fit(cfg, run_dir=run_dir)
    except (KeyboardInterrupt, SystemExit) as exc:  # Lightning turns Ctrl-C into SystemExit(1)
        return _interrupted(run_dir, exc)
    m = result.metrics
    print(f"\nrun directory: {result.run_dir}")
    print(f"dataset {m['dataset']['name']} ({m['dataset']['fingerprint'][:12]}), {m['protocol']}, "
          f"exclude_seen={m['exclude_seen']}, {m['n_eval_users']} users")
    print(f"epochs {m['epochs']} (best {m['best_epoch']}), train {m['wall_time_s']['train']:.0f}s, "
          f"total {m['wall_time_s']['total']:.0f}s")
    print(format_table({"valid": m["valid"], "test": m["test"]}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from recsys.training.run import evaluate

    print(format_table(evaluate(args.run_dir)))
    return 0


def _training_item_counts(run_dir: Path):
    """Per-token counts of the run's training split, recomputed from its data.

    Refuses data whose fingerprint differs from the one the run recorded."""
    import numpy as np

    from recsys import rundir
    from recsys.data.datamodule import SeqDataModule
    from recsys.data.vocab import Vocab
    from recsys.errors import ArtifactError

    cfg = rundir.read_config(run_dir)
    vocab = Vocab.load(run_dir / rundir.VOCAB)
    recorded = rundir.read_metrics(run_dir)["dataset"]["fingerprint"]
    try:
        dm = SeqDataModule(cfg.data, cfg.model.max_len, cfg.train.batch_size, cfg.eval.batch_size, cfg.seed,
                           vocab=vocab).prepare()
    except KeyError as exc:
        raise ArtifactError(f"{run_dir}: the data holds items the run's vocabulary lacks ({exc})") from exc
    if dm.events.fingerprint != recorded:
        raise ArtifactError(f"{run_dir}: the data changed since training (fingerprint {dm.events.fingerprint[:12]} "
                            f"!= {recorded[:12]}); pass --no-popularity to export without counts")
    train, items = dm.split.train, dm.split.sequences.items
    # Training sequence of a user: items[start:end + 1] (inputs and next-item targets).
    lengths = train.end + 1 - train.start
    positions = np.repeat(train.start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return np.bincount(items[positions], minlength=vocab.n_items + 1).astype(np.int64)


def _refit_baseline(run_dir: Path):
    """A baseline run's model, refitted on its training split as ``recsys evaluate`` does
    (baselines keep no checkpoint). Refuses data whose fingerprint changed."""
    from recsys import rundir
    from recsys.baselines.registry import build_baseline
    from recsys.data.vocab import Vocab
    from recsys.errors import ArtifactError
    from recsys.training.build import build_datamodule, training_events

    cfg = rundir.read_config(run_dir)
    recorded = rundir.read_metrics(run_dir)["dataset"]["fingerprint"]
    dm = build_datamodule(cfg, vocab=Vocab.load(run_dir / rundir.VOCAB))
    if dm.events.fingerprint != recorded:
        raise ArtifactError(f"{run_dir}: the data changed since training (fingerprint {dm.events.fingerprint[:12]} "
                            f"!= {recorded[:12]}); a baseline is refitted from it, so it cannot be exported")
    return build_baseline(cfg.model).fit(training_events(dm))


def _export(args: argparse.Namespace) -> int:
    from recsys import rundir
    from recsys.baselines.registry import BASELINES
    from recsys.inference.export import export_run

    baseline = None
    if rundir.has_config(args.run_dir) and rundir.read_config(args.run_dir).model.name in BASELINES:
        baseline = _refit_baseline(args.run_dir)
    counts = None if args.no_popularity else _training_item_counts(args.run_dir)
    onnx_k = args.onnx_k if args.onnx else None
    out = export_run(args.run_dir, args.out, item_counts=counts, overwrite=args.overwrite, onnx_k=onnx_k,
                     baseline=baseline)
    print(f"artifact: {out}" + (f" (with model.onnx, top-{onnx_k})" if onnx_k else ""))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    import torch

    from recsys.inference.offline import recommend_file
    from recsys.inference.recommender import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
    rec = Recommender.load(args.artifact, unknown=args.unknown, empty=args.empty, item_precision=args.item_precision)
    done = recommend_file(rec, args.histories, args.out, k=args.k, exclude_seen=args.exclude_seen,
                          user_col=args.user_col, item_col=args.item_col, time_col=args.time_col or None,
                          sep=args.sep, fmt=args.format, batch_size=args.batch_size,
                          partition_rows=args.partition_rows, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {done.out}: top-{args.k} for {done.users:,} users ({done.fallback_users:,} by popularity "
          f"fallback), {done.rows:,} rows, from {done.events:,} events in {done.seconds:.1f}s")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import torch

    from recsys.inference.http import serve
    from recsys.inference.recommender import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
    rec = Recommender.load(args.artifact, unknown=args.unknown, empty=args.empty, item_precision=args.item_precision)
    serve(rec, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from recsys.report.leaderboard import write_leaderboard

    written = write_leaderboard(args.results, args.experiments, args.out, None if args.no_plot else args.plot,
                                metric=args.metric, refresh_cards=args.refresh_cards)
    print(f"wrote {written.markdown} ({written.rows} rows, {written.with_results} with results, {written.runs} runs)"
          + (f" and {written.plot}" if written.plot else ""))
    return 0


def _tune(args: argparse.Namespace) -> int:
    import time

    from recsys.tuning.storage import redact
    from recsys.tuning.study import prepare, tune, worker_main

    setup = prepare(args.config, args.space, args.trials, args.timeout, args.storage, args.study)
    if args.worker_index is not None:
        return worker_main(setup, args.worker_index)
    started = time.perf_counter()
    try:
        result = tune(setup, workers=args.workers)
    except KeyboardInterrupt:
        print(f"recsys: interrupted; study {setup.name} keeps its trials, re-run the same command to resume",
              file=sys.stderr)
        return 130
    c = result.counts
    print(f"\nstudy {result.name} in {result.study_dir} ({c['finished']} finished: {c['complete']} complete, "
          f"{c['pruned']} pruned; {c['fail']} failed), {time.perf_counter() - started:.0f}s")
    if result.best is not None:
        b = result.best
        print(f"best trial {b['trial']}: valid {setup.monitor} {b['value']:.4f} with "
              + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items()))
        print(f"best config: {b['config']}  (refit: recsys fit --config {b['config']})")
    print(f"report: {result.study_dir}/trials.csv and plots; dashboard: optuna-dashboard {redact(result.storage_url)}")
    for error in result.worker_errors:
        print(f"recsys: warning: {error}", file=sys.stderr)
    if not result.complete:
        print(f"recsys: {c['finished']} of {setup.n_trials} trials finished; re-run the same command to resume",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from recsys import __version__

    parser = argparse.ArgumentParser(prog="recsys", description="Sequential recommendation experiments.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train and evaluate one config into a run directory")
    p.add_argument("--config", type=Path, help="experiment YAML")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="output directory (default: <output_dir>/<data.name>-<name>-seed<seed>-<YYYYmmdd-HHMMSS>, "
                        "the start time in UTC); it is written as <run dir>.partial and renamed when the run completes")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.lr=0.002")
    p.set_defaults(func=_fit)
    p = sub.add_parser("evaluate", help="recompute metrics of a finished run from its checkpoint")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("export", help="write a serving artifact (safetensors + JSON) from a finished run "
                                      "(neural, or a counting baseline: refitted on the run's training split)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", required=True, type=Path, help="artifact folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    p.add_argument("--no-popularity", action="store_true",
                   help="skip the training-data item counts (the empty-history fallback); no data needed")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (needs the onnx extra)")
    p.add_argument("--onnx-k", type=int, default=100, help="top-k the ONNX graph returns (default 100)")
    p.set_defaults(func=_export)
    p = sub.add_parser("recommend", help="offline top-k for every user of a CSV / Parquet event log, to a file",
                       description="Top-k for every user of an event log (CSV or Parquet, one event per row), "
                                   "written as user_id,item_id,score,rank,fallback (CSV or Parquet, by --out's "
                                   "name). Streams the log and spills it by user into temporary partitions, so "
                                   "memory stays bounded; the output is renamed into place when complete. "
                                   "Needs pyarrow (the serve extra).")
    p.add_argument("artifact", type=Path)
    p.add_argument("--histories", type=Path, required=True, help="event log: .csv(.gz) or .parquet")
    p.add_argument("--out", type=Path, required=True, help="output file: .csv or .parquet")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--exclude-seen", action="store_true", help="drop every item of the user's own history")
    p.add_argument("--user-col", default="user_id")
    p.add_argument("--item-col", default="item_id")
    p.add_argument("--time-col", default="timestamp",
                   help="orders each user's events (ties keep file order); '' for file order")
    p.add_argument("--sep", default=",", help="CSV delimiter")
    p.add_argument("--format", choices=("csv", "parquet"), default=None, help="input format (default: by name)")
    p.add_argument("--batch-size", type=int, default=1024, help="users per Recommender.recommend call")
    p.add_argument("--partition-rows", type=int, default=4_000_000,
                   help="events per partition held in memory at once (sets peak memory)")
    p.add_argument("--unknown", choices=("ignore", "raise"), default="ignore", help="unknown item ids")
    p.add_argument("--empty", choices=("popularity", "raise"), default="popularity", help="empty histories")
    p.add_argument("--item-precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_recommend)
    p = sub.add_parser("serve", help="serve an artifact over HTTP (needs the serve extra)")
    p.add_argument("artifact", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--unknown", choices=("ignore", "raise"), default="ignore", help="unknown item ids")
    p.add_argument("--empty", choices=("popularity", "raise"), default="popularity", help="empty histories")
    p.add_argument("--item-precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: faster full-catalogue scan, float32 rescoring (see benchmarks/SERVING.md)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_serve)
    p = sub.add_parser("leaderboard", help="render benchmarks/LEADERBOARD.md and its plot from benchmark results")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="folder the runner wrote")
    p.add_argument("--experiments", type=Path, default=Path("experiments"), help="frozen configs: one row each")
    p.add_argument("--out", type=Path, default=Path("benchmarks/LEADERBOARD.md"))
    p.add_argument("--plot", type=Path, default=Path("benchmarks/leaderboard.png"))
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--metric", default="ndcg@10", help="headline metric (hr|ndcg|mrr@K)")
    p.add_argument("--refresh-cards", action="store_true", help="recompute dataset cards from the data")
    p.set_defaults(func=_leaderboard)
    p = sub.add_parser("tune", help="Optuna search over config keys; exports the best trial as a config")
    p.add_argument("--config", type=Path, required=True, help="base experiment YAML")
    p.add_argument("--space", type=Path, required=True, help="search space YAML (see recsys.tuning.space)")
    p.add_argument("--trials", type=int, default=None,
                   help="finished (complete + pruned) trials the whole study should hold, over all workers and re-runs")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which no worker starts a new trial")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL (default: sqlite:///<output_dir>/studies/<study>/study.db; "
                        "postgresql://user:pass@host/db for many machines)")
    p.add_argument("--study", default=None, help="study name (default: <data.name>-<name> of the config)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: this process)")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_tune)
    return parser


#: Commands that train, and so run under jemalloc when RECSYS_ALLOCATOR asks (``recsys.training.preload``).
TRAINING_COMMANDS = ("fit", "tune")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if argv is None and args.command in TRAINING_COMMANDS:  # a program, not a call from Python
            from recsys.training.preload import reexecute_under_jemalloc

            reexecute_under_jemalloc(sys.argv[1:])
        return args.func(args)
    except (RecsysError, FileExistsError) as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # a command whose extra is not installed (the base install serves only)
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"recsys: error: `recsys {args.command}` needs the {extra} extra ({exc}): "
              f"pip install 'recsys-lab[{extra}]'", file=sys.stderr)
        return 2


#: Third-party packages -> the extra of pyproject.toml that installs them.
EXTRAS = {
    "pytorch_lightning": "train", "lightning": "train", "lightning_utilities": "train", "pandas": "train",
    "sklearn": "train", "matplotlib": "train", "pyarrow": "serve", "optuna": "tune", "sqlalchemy": "tune",
    "fastapi": "serve", "uvicorn": "serve", "pydantic": "serve", "onnx": "onnx", "onnxscript": "onnx",
    "onnxruntime": "onnx",
}


if __name__ == "__main__":
    sys.exit(main())
