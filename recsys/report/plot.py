"""The leaderboard figure: test metric per config with its user-bootstrap interval.

One panel per dataset and split; leave-one-out panels and temporal panels sit in separate
blocks of the figure, because they test different users. In a panel each config with
results is a line, best on top: the dot is the mean over seeds, the bar the 95% bootstrap
interval over users that the tables show (``Row.ci``), the small ticks the single seeds.
Colour says the model and is the same in every panel (``model_colour``); a hollow square
is a counting baseline, a filled dot a trained model. Dashed lines are published numbers.
Training time per seed is in the line's label, so baselines (no training) are not piled
up at time zero.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

from recsys.report.published import published_for
from recsys.report.summary import model_label, model_sort_key

if TYPE_CHECKING:
    from recsys.report.leaderboard import Row

# Fixed colours (matplotlib's tab10), so a model looks the same in every panel and every render.
MODEL_COLOURS = {"sasrec": "#1f77b4", "bert4rec": "#ff7f0e", "transitions": "#2ca02c",
                 "popularity": "#7f7f7f", "recent_popularity": "#8c564b",
                 "bsarec": "#9467bd", "hstu": "#d62728", "ligr": "#17becf"}
_SPARE = ("#e377c2", "#bcbd22")
SPLIT_TITLES = {"loo": "Leave-one-out", "temporal": "Temporal split"}
COLS = 3


def model_colour(model: str) -> str:
    """The model's colour: fixed for known models, a stable pick from spare colours otherwise."""
    return MODEL_COLOURS.get(model) or _SPARE[zlib.crc32(model.encode("utf-8")) % len(_SPARE)]


def _time(row: Row) -> str:
    seconds = row.train_time_s
    if row.baseline:
        return "counting"
    if math.isnan(seconds):
        return "time unknown"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def _label(row: Row) -> str:
    n = len(row.runs)
    return f"{row.config}  ({n} seed{'s' if n != 1 else ''}, {_time(row)})"


def published_lines(dataset: str, split: str, metric: str):
    """The published numbers a panel draws: the best of our protocol, and a higher one measured another way."""
    every = published_for(dataset, split, metric)
    same = [p for p in every if p.same_protocol][:1]
    other = [p for p in every if not p.same_protocol and (not same or p.value > same[0].value)][:1]
    return other + same


def _panel(ax, rows: list[Row], dataset: str, split: str, metric: str, title: str) -> None:
    rows = sorted(rows, key=lambda r: r.mean)  # best at the top (largest y)
    top = 0.0
    for y, row in enumerate(rows):
        colour = model_colour(row.model)
        low, high = row.ci if row.ci else (row.mean, row.mean)
        ax.errorbar([row.mean], [y], xerr=[[row.mean - low], [high - row.mean]], fmt="none", ecolor=colour,
                    elinewidth=1.6, capsize=3)
        ax.plot([row.mean], [y], ls="none", marker="s" if row.baseline else "o", markersize=7,
                markerfacecolor="white" if row.baseline else colour, markeredgecolor=colour, markeredgewidth=1.6,
                gid=f"model:{row.model}")
        seeds = [r.test[metric] for r in row.runs]
        if len(seeds) > 1 and max(seeds) > min(seeds):
            ax.plot(seeds, [y] * len(seeds), ls="none", marker="|", markersize=9, color=colour, alpha=0.6)
        top = max(top, high)
    for k, p in enumerate(published_lines(dataset, split, metric)):
        ax.axvline(p.value, ls="--" if p.same_protocol else ":", lw=1, color="black", alpha=0.7)
        ax.annotate(f"{p.model.split(' (')[0]}{'' if p.same_protocol else ' †'} {p.value:.4f}",
                    xy=(p.value, 1.0), xycoords=("data", "axes fraction"), xytext=(-2, -9 - 10 * k),
                    textcoords="offset points", fontsize=7, ha="right",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        top = max(top, p.value)
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(0, top * 1.12 if top > 0 else 1)
    ax.set_xlabel(f"test {metric.upper()} (95% CI over users)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)


def plot_leaderboard(rows: list[Row], metric: str = "ndcg@10", cards: dict[str, dict | None] | None = None):
    """The leaderboard figure (a bare matplotlib Figure: no pyplot, no global state)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cards = cards or {}
    done = [r for r in rows if not r.pending]
    blocks = []  # (split, [(dataset, rows)])
    for split in sorted({r.split for r in done}, key=lambda s: (s != "loo", s)):
        datasets = sorted({r.dataset for r in done if r.split == split})
        blocks.append((split, [(d, [r for r in done if r.dataset == d and r.split == split]) for d in datasets]))
    # height of a panel row: the longest panel in it decides
    heights = []
    for _, panels in blocks:
        for start in range(0, len(panels), COLS):
            longest = max(len(p[1]) for p in panels[start:start + COLS])
            heights.append(1.5 + 0.32 * longest)
    fig = Figure(figsize=(6.2 * COLS, sum(heights) + 1.2 + 0.5 * len(blocks)), layout="constrained")
    if not blocks:
        fig.text(0.5, 0.5, "no results yet", ha="center", va="center")
        return fig
    block_heights = []
    offset = 0
    for _, panels in blocks:
        n_rows = math.ceil(len(panels) / COLS)
        block_heights.append(sum(heights[offset:offset + n_rows]) + 0.5)
        offset += n_rows
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=block_heights, squeeze=False)[:, 0]
    offset = 0
    for subfig, (split, panels) in zip(subfigs, blocks):
        n_rows = math.ceil(len(panels) / COLS)
        axes = subfig.subplots(n_rows, COLS, squeeze=False, height_ratios=heights[offset:offset + n_rows])
        offset += n_rows
        subfig.suptitle(SPLIT_TITLES.get(split, split), fontsize=12, fontweight="bold", x=0.01, ha="left")
        for ax, (dataset, group) in zip(axes.flat, panels):
            title = dataset
            card = cards.get(dataset)
            if split == "temporal" and card and card.get("timestamps") != "real":
                title += " (per-position)"
            _panel(ax, group, dataset, split, metric, title)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
    models = sorted({r.model for r in done}, key=model_sort_key)
    handles = [Line2D([], [], ls="none", marker="o", markersize=7, color=model_colour(m), label=model_label(m))
               for m in models]
    handles += [Line2D([], [], ls="none", marker="o", markersize=7, color="black", label="trained model"),
                Line2D([], [], ls="none", marker="s", markersize=7, markerfacecolor="white", color="black",
                       label="counting baseline"),
                Line2D([], [], ls="--", color="black", label="published, same protocol"),
                Line2D([], [], ls=":", color="black", label="published, other protocol (†)")]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 9), fontsize=9, frameon=False)
    return fig
