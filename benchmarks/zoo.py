"""Model zoo on S3-Rec Beauty: every loss, BERT4Rec, attributes, ablation, baselines.

    .venv/bin/python benchmarks/zoo.py                   # run the zoo configs (3 seeds), re-render the leaderboard
    .venv/bin/python benchmarks/zoo.py --seeds 42        # one seed of each
    .venv/bin/python benchmarks/zoo.py --dry-run         # list the cells and their status

The zoo is a slice of the benchmark matrix: the frozen configs in ``experiments/s3rec-beauty/``
run by ``benchmarks/runner.py`` into ``benchmarks/results`` like every other row, so its
figures are the leaderboard's (``benchmarks/LEADERBOARD.md``: the summary and the
s3rec-beauty table) and cannot disagree with it. ``benchmarks/ZOO.md`` says what each
config is and holds no figures. Extra arguments go to the runner unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "s3rec-beauty"
# Cheap rows and the rows the comparisons need first, so a partial run is useful.
CONFIGS = ("popularity", "transitions", "sasrec-ce", "sasrec-gbce", "sasrec-bce", "sasrec-sampled",
           "bert4rec-ce", "sasrec-ce-attributes", "sasrec-ce-nopos", "sasrec-ce_chunked", "sasrec-mixture")


def command(extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "runner.py"), "--datasets", DATASET,
            "--configs", *CONFIGS, *extra]


def main(argv: list[str] | None = None) -> int:
    return subprocess.run(command(list(sys.argv[1:] if argv is None else argv)), cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
