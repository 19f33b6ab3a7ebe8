"""Command line: ``recsys fit --config FILE [key=value ...]`` and ``recsys evaluate RUN_DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.errors import RecsysError


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


def _fit(args: argparse.Namespace) -> int:
    from recsys.config import ExperimentConfig
    from recsys.training.run import fit

    cfg = ExperimentConfig.from_yaml(args.config).with_overrides(args.overrides)
    result = fit(cfg, run_dir=args.run_dir)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description="Sequential recommendation experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train and evaluate one config into a run directory")
    p.add_argument("--config", required=True, type=Path, help="experiment YAML")
    p.add_argument("--run-dir", type=Path, default=None, help="output directory (default: output_dir/<name>-<time>)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.lr=0.002")
    p.set_defaults(func=_fit)
    p = sub.add_parser("evaluate", help="recompute metrics of a finished run from its checkpoint")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecsysError, FileExistsError) as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
