"""The summary matrix at the top of LEADERBOARD.md: dataset x model, per split.

Each cell is one model's best config on one dataset and split, picked on **validation**
(the pick a deployment could make; test decides only the winner), and shows that config's
test mean ± sd over seeds with the number of seeds. The winner of a line is the cell with
the highest test mean; it is compared with the runner-up paired over users. Rows are the
leaderboard's ``Row`` objects (``recsys.report.leaderboard``); this module only groups them.

It also says which configs cannot run on a dataset at all (``not_applicable``): such a
config is listed with its reason instead of waiting as pending for ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.eval.stats import paired_permutation_test
from recsys.report.published import Published, published_for

if TYPE_CHECKING:  # leaderboard imports this module; the type is only for annotations
    from recsys.report.leaderboard import Row

# Columns of the matrix, in this order; a model not listed here goes after them, by name.
MODEL_ORDER = ("sasrec", "bsarec", "hstu", "ligr", "bert4rec", "transitions", "recent_popularity", "popularity")
MODEL_LABELS = {"sasrec": "SASRec", "bsarec": "BSARec", "hstu": "HSTU", "ligr": "LiGR", "bert4rec": "BERT4Rec",
                "transitions": "transitions", "recent_popularity": "recent popularity", "popularity": "popularity"}

# Models that read event times, not only their order: recsys.baselines.popularity refuses
# ``recent_popularity`` on a file whose events carry positions only.
NEEDS_TIMESTAMPS = frozenset({"recent_popularity"})


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def model_sort_key(model: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


def not_applicable(model: str, card: dict | None) -> str | None:
    """Why a config of ``model`` cannot run on the dataset described by ``card``, or None."""
    if model in NEEDS_TIMESTAMPS and card is not None and card.get("timestamps") != "real":
        return f"needs real timestamps; `{card.get('file', 'the file')}` orders events by position only"
    return None


def valid_mean(row: Row, metric: str) -> float:
    return float(np.mean([r.valid[metric] for r in row.runs]))


@dataclass
class SummaryLine:
    """One dataset and split: the best config of each model, the winner and the runner-up."""

    dataset: str
    split: str
    cells: dict[str, Row]  # model -> its config picked on validation
    n_configs: dict[str, int]  # model -> configs with results it was picked from
    winner: str | None = None
    runner_up: str | None = None
    delta: float = math.nan  # winner minus runner-up, mean over users
    p_value: float = math.nan
    published: list[Published] = field(default_factory=list)


def summary_lines(rows: list[Row], metric: str = "ndcg@10", n_perm: int = 10000) -> list[SummaryLine]:
    """One line per (dataset, split) that has results, datasets in name order, leave-one-out first."""
    keys = sorted({(r.dataset, r.split) for r in rows if not r.pending}, key=lambda k: (k[1] != "loo", k[1], k[0]))
    lines = []
    for dataset, split in keys:
        done = [r for r in rows if r.dataset == dataset and r.split == split and not r.pending]
        by_model: dict[str, list[Row]] = {}
        for row in done:
            by_model.setdefault(row.model, []).append(row)
        # ties on validation (deterministic baselines) go to more seeds, then the config name
        cells = {m: max(group, key=lambda r: (valid_mean(r, metric), len(r.runs), r.config))
                 for m, group in by_model.items()}
        line = SummaryLine(dataset, split, cells, {m: len(g) for m, g in by_model.items()},
                           published=published_for(dataset, split, metric))
        ranked = sorted(cells, key=lambda m: -cells[m].mean)
        if ranked:
            line.winner = ranked[0]
        if len(ranked) > 1:
            line.runner_up = ranked[1]
            a, b = cells[ranked[0]], cells[ranked[1]]
            if a.user_values is not None and b.user_values is not None and len(a.user_values) == len(b.user_values):
                line.delta = float(np.mean(a.user_values - b.user_values))
                line.p_value = paired_permutation_test(a.user_values, b.user_values, n_resamples=n_perm)
        lines.append(line)
    return lines


def _cell(row: Row, winner: bool, n_configs: int) -> str:
    n = len(row.runs)
    value = f"{row.mean:.4f} ± {row.std:.4f}" if n > 1 else f"{row.mean:.4f}"
    if winner:
        value = f"**{value}** ◆"
    picked = f" (best of {n_configs})" if n_configs > 1 else ""
    return f"{value} (n={n}) `{row.config}`{picked}"


def _empty(rows: list[Row], dataset: str, split: str, model: str, cards: dict[str, dict | None]) -> str:
    """A cell without results: "n/a" when every config of the model cannot run on this file."""
    configs = [r for r in rows if r.dataset == dataset and r.split == split and r.model == model]
    if configs and all(not_applicable(model, cards.get(dataset)) for _ in configs):
        return "n/a"
    return "—"


def _published_cell(line: SummaryLine) -> str:
    if not line.published:
        return "—"
    best = line.published[0]
    same = [p for p in line.published if p.same_protocol]
    ours = line.cells[line.winner].mean if line.winner else math.nan
    parts = [f"{best.value:.4f} {best.model.split(' (')[0]} ([{best.cite}]({best.url}))" + ("" if best.same_protocol else " †")]
    if same and same[0] is not best:
        parts.append(f"same protocol: {same[0].value:.4f} {same[0].model.split(' (')[0]} ([{same[0].cite}]({same[0].url}))")
    if same and not math.isnan(ours):
        parts.append(f"ours {ours / same[0].value - 1:+.1%}")
    return "; ".join(parts)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def render_summary(rows: list[Row], cards: dict[str, dict | None], metric: str = "ndcg@10",
                   n_perm: int = 10000) -> list[str]:
    """The "Summary" section of LEADERBOARD.md, as lines."""
    name = metric.upper()
    out = [
        "## Summary",
        "",
        f"Test **{name}**, mean ± sd over seeds (n = seeds). A cell is the model's best config on that dataset",
        f"and split, picked on **validation** {name} among its configs with results ('best of k'; the",
        "detailed tables below have every config). **Bold ◆** marks the dataset's winner on test; *vs runner-up*",
        "is the winner minus the next model, paired over users, with a sign-flip p-value. — : no result yet;",
        "n/a: the model cannot run on that file (see Pending for both). The two splits test different users:",
        "compare within a table, not across.",
        "",
    ]
    lines = summary_lines(rows, metric, n_perm)
    daggers: dict[Published, None] = {}
    for split, title in (("loo", "Leave-one-out"), ("temporal", "Temporal")):
        split_lines = [line for line in lines if line.split == split]
        in_matrix = sorted({r.model for r in rows if r.split == split}, key=model_sort_key)
        if not in_matrix:
            continue
        out += [f"### {title}", ""]
        if split == "temporal":
            out += ["Per-position on files without timestamps (see Protocol); no published numbers exist for these splits.",
                    ""]
        head = "| dataset | " + " | ".join(model_label(m) for m in in_matrix) + " | winner vs runner-up |"
        if split == "loo":
            head += f" best published {name} |"
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        for line in split_lines:
            cells = [_cell(line.cells[m], m == line.winner, line.n_configs[m]) if m in line.cells
                     else _empty(rows, line.dataset, split, m, cards) for m in in_matrix]
            if line.runner_up is None:
                versus = "—"
            elif math.isnan(line.delta):
                versus = f"{model_label(line.winner)} (not paired: different users)"
            else:
                versus = f"{model_label(line.winner)} {line.delta:+.4f}, p {_p(line.p_value)}"
            label = line.dataset
            card = cards.get(line.dataset)
            if split == "temporal" and card and card.get("timestamps") != "real":
                label += " (per-position)"
            text = f"| {label} | " + " | ".join(cells) + f" | {versus} |"
            if split == "loo":
                text += f" {_published_cell(line)} |"
                daggers.update({p: None for p in line.published[:1] if not p.same_protocol})
            out.append(text)
        waiting = sorted({r.dataset for r in rows if r.split == split} - {line.dataset for line in split_lines})
        if waiting:
            out += ["", f"No {title.lower()} result yet: " + ", ".join(waiting) + "."]
        out.append("")
    for p in daggers:
        out.append(f"† {p.model} on {p.dataset}: {p.protocol}. Shown as the best published figure, not compared.")
    if daggers:
        out.append("")
    return out


def summary_frame(rows: list[Row], metric: str = "ndcg@10", n_perm: int = 10000):
    """The summary matrix as a long DataFrame (one row per cell), for notebooks."""
    import pandas as pd

    return pd.DataFrame([
        {"split": line.split, "dataset": line.dataset, "model": model_label(model), "config": row.config,
         "seeds": len(row.runs), "mean": row.mean, "std": row.std, "winner": model == line.winner,
         "picked_from": line.n_configs[model]}
        for line in summary_lines(rows, metric, n_perm)
        for model, row in sorted(line.cells.items(), key=lambda kv: model_sort_key(kv[0]))
    ])
