"""``curves.png``: a run's training loss and validation metrics by epoch, from its CSV log.

The numbers come from the run's own CSV log (``rundir.CSV_LOG``, and the
``metrics.before-resume-<n>.csv`` files a resume keeps beside it), so the picture shows
what the run recorded. Drawn with matplotlib's Agg canvas (no display, no pyplot state)
and written atomically; without matplotlib the picture is skipped with one log line.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from recsys import rundir

log = logging.getLogger(__name__)

LOSS = "train/loss_epoch"


def epoch_log(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """``{epoch: {"train/loss_epoch": ..., "val/ndcg@10": ...}}`` from a run's CSV logs.

    Lightning writes an epoch's numbers over several rows (one per logging call); they are
    merged by epoch. Logs written before a resume come first, so where an epoch was logged
    twice, the later value stands."""
    log_file = Path(run_dir) / rundir.CSV_LOG
    before = sorted(log_file.parent.glob("metrics.before-resume-*.csv"),
                    key=lambda p: int(re.search(r"(\d+)\.csv$", p.name).group(1)))
    epochs: dict[int, dict[str, float]] = {}
    for path in [*before, log_file]:
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                values = {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v not in ("", None)}
                epochs.setdefault(int(row["epoch"]), {}).update(values)
    return dict(sorted(epochs.items()))


def write_curves(run_dir: str | Path, monitor: str, best_epoch: int | None = None) -> Path | None:
    """Draw ``rundir.CURVES`` in ``run_dir``; returns its path, or None when there was
    nothing to draw (no epochs) or no matplotlib."""
    epochs = epoch_log(run_dir)
    if not epochs:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no %s for this run (pip install matplotlib)", rundir.CURVES)
        return None
    xs = list(epochs)
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, val_ax = fig.subplots(1, 2)
    losses = [(e, m[LOSS]) for e, m in epochs.items() if LOSS in m]
    if losses:
        loss_ax.plot(*zip(*losses), marker="o", label="training loss")
    loss_ax.set(title="training loss", xlabel="epoch")
    names = sorted({k for m in epochs.values() for k in m if k.startswith("val/")})
    monitored = f"val/{monitor}"
    shown = [n for n in names if re.fullmatch(r"val/(ndcg|hr)@\d+", n) or n == monitored]
    for name in shown:
        points = [(e, m[name]) for e, m in epochs.items() if name in m]
        val_ax.plot(*zip(*points), marker="o", linewidth=2.5 if name == monitored else 1.2,
                    label=name.removeprefix("val/"))
    if best_epoch is not None and best_epoch in epochs:
        val_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    val_ax.set(title="validation", xlabel="epoch")
    for ax in (loss_ax, val_ax):
        ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    path = Path(run_dir) / rundir.CURVES
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path
