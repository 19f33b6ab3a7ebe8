"""How much of the planted oracle survives when its true successor tables are replaced by the
transition head's estimated ones: the ceiling that table estimation puts on the head.

    .venv/bin/python benchmarks/planted_tables.py            # the 6k x 3k planted log of PLANTED.md

The log is ``benchmarks/planted.py``'s small size. The tables are counted from each user's
training events (all but the last two, as the leave-one-out split) by
``recsys.nn.heads.TransitionHead.fit_pattern`` (a head with the generator's lags, 1 and 2) with 0, 1, 2
and 5 EM iterations, discounted
(d = 0.75, the head's starting discount), normalised and put in place of the generator's own
lag tables; everything else the oracle knows (the tastes, the cluster prior, the mixture
weights) stays exact, and it ranks the test targets by its posterior predictive again. The
result isolates one cause: how well the counts alone recover what the lags drive. Prints a
markdown table; no files written.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.synthetic import mixture_oracle_metrics, planted_mixture_log  # noqa: E402
from recsys.nn.heads import EM_CHOICES, TransitionHead  # noqa: E402

USERS, ITEMS, SEED = 6000, 3000, 1  # benchmarks/planted.py, size "small"
WIDTH, DISCOUNT = 32, 0.75


def estimated_tables(log, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(succ, succ_weight) of shape (lags, V, WIDTH) for the generator's lags, from the head."""
    train = [s[:-2] + 1 for s in log.sequences]  # token ids; the last two events are held out
    items = np.concatenate(train)
    lengths = np.array([len(s) for s in train])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    lags = max(log.lags)
    head = TransitionHead(log.n_items, 4, lags, WIDTH, em_iterations=iterations)
    head.fit_pattern(items, start, start + lengths)
    rows = np.asarray(log.lags) - 1
    succ = head.cols.numpy()[rows, 1:-1] - 1  # item rows 1..n, back to 0-based items
    weight = np.maximum(head.counts.numpy()[rows, 1:-1].astype(np.float64) - DISCOUNT, 0.0)
    weight[succ < 0] = 0.0
    total = weight.sum(axis=2, keepdims=True)
    weight = np.where(total > 0, weight / np.maximum(total, 1e-300), 0.0)
    weight[:, :, 0] += total[:, :, 0] == 0  # a source never seen: all on its first slot (unused)
    return np.maximum(succ, 0), weight


def main() -> None:
    log = planted_mixture_log(USERS, ITEMS, seed=SEED)
    exact = mixture_oracle_metrics(log, 1, (10,))["ndcg@10"]
    print(f"planted log {USERS:,} users x {ITEMS:,} items (seed {SEED}); oracle test NDCG@10 {exact:.4f}\n")
    print("| tables | test NDCG@10 | of the oracle | seconds |")
    print("|---|---:|---:|---:|")
    print(f"| the generator's own | {exact:.4f} | 1.000 | |")
    for iterations in EM_CHOICES:
        start = time.perf_counter()
        succ, weight = estimated_tables(log, iterations)
        ndcg = mixture_oracle_metrics(dataclasses.replace(log, succ=succ, succ_weight=weight), 1, (10,))["ndcg@10"]
        label = "raw counts" if iterations == 0 else f"EM, {iterations} iteration{'s' if iterations > 1 else ''}"
        print(f"| {label}, discounted {DISCOUNT} | {ndcg:.4f} | {ndcg / exact:.3f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
