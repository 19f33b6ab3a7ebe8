"""Leaderboard: aggregate benchmark runs into rows, render Markdown and a PNG plot.

``write_leaderboard(results, experiments, out, plot)`` is what ``recsys leaderboard``
runs. Every frozen config is a row, grouped by dataset and split. The document opens with
the summary matrix (``recsys.report.summary``), then one detailed table per dataset with
the configs that have results; configs without results are listed only under Pending,
with the reason where one cannot run at all. Published numbers appear beside each
dataset, in their own column and as rows of their own. All statistics come from
``recsys.eval.stats``; see ``STATISTICS`` for what each column means. The figure is
``recsys.report.plot``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from recsys import rundir
from recsys.eval.stats import bootstrap_ci, mean_std, paired_bootstrap_ci, paired_permutation_test, per_user
from recsys.report.cards import load_cards
from recsys.report.plot import plot_leaderboard
from recsys.report.published import DATASET_NOTES, Published, published_for
from recsys.report.results import BenchRun, MatrixEntry, is_baseline, load_matrix, load_runs
from recsys.report.summary import not_applicable, render_summary

SEEDS_EXPECTED = 3
SHORTFALL = 0.05  # a row within 5% of the best published number for its setting meets the bar
SPLIT_NAMES = {"loo": "leave-one-out", "temporal": "temporal"}
REPRODUCE = ".venv/bin/python benchmarks/runner.py"

STATISTICS = """\
- **mean ± std**: test {metric} averaged over seeds, with the sample standard deviation (ddof = 1) across seeds.
- **95% CI (users)**: percentile bootstrap over users ({n_boot:,} resamples, seed 0) of the mean per-user {metric};
  each user's value is first averaged over the row's seeds. It measures how much the number would move on
  another sample of users, which is usually larger than the seed-to-seed spread.
- **vs best baseline**: the row minus the best baseline row of the same dataset and split (highest mean {metric}),
  paired over users (same users, same order): Δ is the mean per-user difference, its interval a paired bootstrap,
  and *p* a two-sided sign-flip randomisation test of "no difference" ({n_perm:,} random sign flips; exact when at
  most 16 users differ). Pairing removes the user-to-user variance that an unpaired test would have to carry.
  p-values are not corrected for multiple comparisons. Rows show "no baseline yet" until a baseline config
  (model name in `recsys.report.results.BASELINE_MODELS`) has results.
- **train time**: mean wall-clock seconds of the training loop per seed (data loading and the final evaluation
  excluded), on the hardware listed under Provenance; epochs are the epochs run and the best (selected) epoch.
- **published**: the best published full-ranking {metric} for the same file, split and evaluation protocol, with
  its source, and our mean relative to it. A row more than {shortfall:.0%} below it is flagged, with the reason under
  Notes. A number measured another way (marked †) is shown with the difference stated, never compared.
"""


@dataclass(frozen=True)
class Comparison:
    """A row against the best baseline of its dataset and split, paired over users."""

    reference: str  # config of the baseline
    delta: float
    ci: tuple[float, float]
    p_value: float
    n_users: int


@dataclass
class Row:
    dataset: str
    split: str
    config: str
    model: str
    baseline: bool
    config_path: Path | None
    runs: list[BenchRun] = field(default_factory=list)
    mean: float = float("nan")
    std: float = float("nan")
    hr_mean: float = float("nan")
    hr_std: float = float("nan")
    ci: tuple[float, float] | None = None
    train_time_s: float = float("nan")
    epochs: float = float("nan")
    best_epoch: float = float("nan")
    comparison: Comparison | None = None
    published: Published | None = None
    notes: list[str] = field(default_factory=list)
    user_values: np.ndarray | None = field(default=None, repr=False)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def pending(self) -> bool:
        return not self.runs

    @property
    def gap(self) -> float | None:
        """Relative difference to the published number: -0.03 means 3% below it."""
        if self.published is None or self.pending:
            return None
        return self.mean / self.published.value - 1.0


def _hr_name(metric: str) -> str:
    return "hr@" + metric.split("@")[1]


def _row_stats(row: Row, metric: str, n_boot: int) -> None:
    values = [r.test[metric] for r in row.runs]
    row.mean, row.std = mean_std(values)
    row.hr_mean, row.hr_std = mean_std([r.test[_hr_name(metric)] for r in row.runs])
    row.train_time_s = float(np.mean([r.train_time_s for r in row.runs]))
    row.epochs = float(np.mean([r.epochs for r in row.runs if r.epochs is not None] or [math.nan]))
    row.best_epoch = float(np.mean([r.best_epoch for r in row.runs if r.best_epoch is not None] or [math.nan]))
    if len({r.fingerprint for r in row.runs}) > 1:
        row.notes.append("seeds ran on different data (fingerprints differ)")
    if len({r.config_hash for r in row.runs}) > 1:
        row.notes.append("seeds ran different configs (config hashes differ)")
    if any(r.quick for r in row.runs):
        row.notes.append("QUICK smoke run (shrunk epochs): not a benchmark number")
    name, k = metric.split("@")
    per_seed = [per_user(r.ranks("test"), name, int(k)) for r in row.runs]
    if len({len(v) for v in per_seed}) == 1:
        row.user_values = np.mean(per_seed, axis=0)  # (U,) per-user metric averaged over seeds
        row.ci = bootstrap_ci(row.user_values, n_resamples=n_boot)
    else:
        row.notes.append("seeds evaluated different numbers of users: no interval")


def build_rows(matrix: list[MatrixEntry], runs: list[BenchRun], metric: str = "ndcg@10",
               n_boot: int = 2000, n_perm: int = 10000) -> list[Row]:
    """One row per config of the matrix (and per config that has runs but left the matrix)."""
    by_key: dict[tuple[str, str], list[BenchRun]] = {}
    for run in runs:
        by_key.setdefault((run.dataset, run.config), []).append(run)
    rows = []
    for entry in matrix:
        rows.append(Row(entry.dataset, entry.split, entry.config, entry.model, entry.is_baseline, entry.path,
                        sorted(by_key.pop((entry.dataset, entry.config), []), key=lambda r: r.seed)))
    for (dataset, config), extra in sorted(by_key.items()):  # results whose config is gone: still shown
        first = extra[0]
        row = Row(dataset, first.split, config, first.model, is_baseline(first.model, config), None,
                  sorted(extra, key=lambda r: r.seed))
        row.notes.append("no frozen config in experiments/ any more")
        rows.append(row)

    for row in rows:
        if row.runs:
            _row_stats(row, metric, n_boot)
        best = published_for(row.dataset, row.split, metric, same_protocol=True)
        row.published = best[0] if best else None

    for (dataset, split), group in _groups(rows).items():
        baselines = [r for r in group if r.baseline and not r.pending]
        if not baselines:
            continue
        ref = max(baselines, key=lambda r: r.mean)
        for row in group:
            if row is ref or row.pending:
                continue
            if row.user_values is None or ref.user_values is None or len(row.user_values) != len(ref.user_values):
                row.notes.append(f"not paired with {ref.config}: different users")
                continue
            if {r.fingerprint for r in row.runs} != {r.fingerprint for r in ref.runs}:
                row.notes.append(f"not paired with {ref.config}: different data")
                continue
            row.comparison = Comparison(
                reference=ref.config,
                delta=float(np.mean(row.user_values - ref.user_values)),
                ci=paired_bootstrap_ci(row.user_values, ref.user_values, n_resamples=n_boot),
                p_value=paired_permutation_test(row.user_values, ref.user_values, n_resamples=n_perm),
                n_users=len(row.user_values),
            )
    return rows


def _groups(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.split), []).append(row)
    return groups


def rows_frame(rows: list[Row]):
    """The leaderboard as a DataFrame (one row per config), for notebooks."""
    import pandas as pd

    return pd.DataFrame([
        {"dataset": r.dataset, "split": r.split, "config": r.config, "model": r.model, "baseline": r.baseline,
         "seeds": len(r.runs),
         "mean": r.mean, "std": r.std, "ci_low": r.ci[0] if r.ci else math.nan,
         "ci_high": r.ci[1] if r.ci else math.nan, "train_time_s": r.train_time_s,
         "vs_baseline": r.comparison.delta if r.comparison else math.nan,
         "p_value": r.comparison.p_value if r.comparison else math.nan,
         "published": r.published.value if r.published else math.nan,
         "gap": r.gap if r.gap is not None else math.nan}
        for r in rows
    ])


# ---- formatting --------------------------------------------------------------------------


def _f(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _mean_std(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f} (1 seed)"


def format_seconds(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _link(row: Row, base: Path) -> str:
    if row.config_path is None:
        return f"`{row.config}`"
    return f"[`{row.config}`]({Path(_relative(row.config_path, base)).as_posix()})"


def _comparison_cell(row: Row, group: list[Row]) -> str:
    if row.pending:
        return "—"
    if row.comparison is not None:
        c = row.comparison
        return f"{c.delta:+.4f} [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}], p {_p(c.p_value)} vs `{c.reference}`"
    done_baselines = [r for r in group if r.baseline and not r.pending]
    if row.baseline and done_baselines and row is max(done_baselines, key=lambda r: r.mean):
        return "reference (best baseline)"
    return "no baseline yet" if not done_baselines else "—"


def _published_cell(row: Row) -> tuple[str, str]:
    p = row.published
    if p is None or row.baseline:
        return "—", "—"
    cell = f"{p.value:.4f} ({p.model.split(' (')[0]}, [{p.cite}]({p.url}))"
    gap = row.gap
    if gap is None:
        return cell, "—"
    mark = "meets the 5% bar" if gap >= -SHORTFALL else "**short**"
    return cell, f"{gap:+.1%} ({mark})"


def _card_line(dataset: str, card: dict | None) -> str:
    note = DATASET_NOTES.get(dataset, "")
    if card is None:
        return f"- **{dataset}**: data not present here, no card. {note}".rstrip()
    median = card["median_length"]
    median_s = f"{median:.0f}" if float(median).is_integer() else f"{median:.1f}"
    return (f"- **{dataset}**: {card['users']:,} users · {card['items']:,} items · {card['events']:,} events · "
            f"median length {median_s} · fingerprint `{card['fingerprint'][:12]}` · `{card['file']}` · "
            f"timestamps: {card['timestamps']}" + (f". {note}" if note else ""))


def _run_config(run: BenchRun) -> dict:
    try:
        return yaml.safe_load((run.path / rundir.CONFIG).read_text(encoding="utf-8")) or {}
    except OSError:
        return {}


def _shortfall_note(row: Row) -> str:
    p = row.published
    cfg = _run_config(row.runs[0])
    model, train = cfg.get("model", {}), cfg.get("train", {})
    ours = (f"n_blocks {model.get('n_blocks')}, n_heads {model.get('n_heads')}, dim {model.get('dim')}, "
            f"dropout {model.get('dropout')}, max_len {model.get('max_len')}, {train.get('loss')} loss, "
            f"lr {train.get('lr')}, up to {train.get('max_epochs')} epochs with patience {train.get('patience')}")
    why = [f"ours ({ours}; {row.epochs:.0f} epochs run on average) is a frozen, untuned config",
           f"the published model: {p.setup or p.model}"]
    if len(row.runs) < SEEDS_EXPECTED:
        why.append(f"only {len(row.runs)} of {SEEDS_EXPECTED} seeds so far")
    if row.ci is not None and row.ci[1] >= p.value * (1 - SHORTFALL):
        why.append("the 95% interval over users reaches the 5% band, so the gap is within user-sampling noise")
    return (f"- **{row.dataset} / {row.config}**: {row.mean:.4f} vs published {p.value:.4f} "
            f"({row.gap:+.1%}). Why: " + "; ".join(why) + ".")


def _description(row: Row) -> str:
    """The first header line of the row's frozen config: what the config is, in words."""
    if row.config_path is None:
        return ""
    try:
        first = row.config_path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def _split_label(split: str, dataset: str, cards: dict[str, dict | None]) -> str:
    label = SPLIT_NAMES.get(split, split)
    card = cards.get(dataset)
    if split == "temporal" and card and card.get("timestamps") != "real":
        label = "temporal (per-position)"
    return label


def pending_rows(rows: list[Row], cards: dict[str, dict | None]) -> list[tuple[Row, str | None]]:
    """Rows short of their seeds, with the reason where the config cannot run on its data."""
    out = []
    for row in sorted(rows, key=lambda r: (r.dataset, r.config)):
        reason = not_applicable(row.model, cards.get(row.dataset))
        if len(row.runs) < SEEDS_EXPECTED or reason is not None:
            out.append((row, reason))
    return out


def render_markdown(rows: list[Row], cards: dict[str, dict | None], metric: str = "ndcg@10",
                    base: Path = Path("."), results_label: str = "benchmarks/results",
                    n_boot: int = 2000, n_perm: int = 10000, plot_name: str | None = "leaderboard.png") -> str:
    """The whole LEADERBOARD.md as a string; deterministic for fixed inputs."""
    runs = [r for row in rows for r in row.runs]
    hr = _hr_name(metric)
    out = [
        "# Leaderboard",
        "",
        f"Generated by `recsys leaderboard` from {len(runs)} runs in `{results_label}`; do not edit by hand.",
        f"Reproduce everything with `{REPRODUCE}` (finished runs are skipped, so it can accumulate over several",
        "invocations; see the README for its wall time), or one slice with `--datasets NAME --seeds 42`.",
        "",
    ]
    if any(r.quick for r in runs):
        out += ["> **QUICK SMOKE RESULTS.** These runs were shrunk (`--quick`) and are not benchmark numbers.", ""]
    out += render_summary(rows, cards, metric, n_perm)
    if plot_name:
        out += [f"![{metric} per config with 95% intervals over users, per dataset and split]({plot_name})", ""]
    out += [
        "## Protocol",
        "",
        "Every number ranks the target against the **full catalogue** (no sampled negatives) with **pessimistic**",
        f"tie-breaking; the headline metric is test **{metric.upper()}**. Two splits:",
        "",
        "- **leave-one-out** (`data.split: loo`): each user's last event is the test target, the one before it the",
        "  validation target. Training sees other users' events from after a user's test time: the leakage that",
        "  Ji et al. (TOIS 2023) describe.",
        "- **temporal** (`data.split: temporal`): one global cut at the `split_quantile` quantile of event time;",
        "  test targets are users' first events after the cut, inputs their history before it; validation uses an",
        "  earlier cut (`split_valid_quantile`); no training event is later than the validation cut. Files without",
        "  timestamps (S3-Rec, SASRec, BERT4Rec preprocessing) only order events within a user, so there the cut is",
        "  on event *position* (labelled per-position): it is **not** a global time split.",
        "",
        "Test users differ between the two splits, so compare splits by the conclusions they support (model",
        "order, gaps), not by paired tests.",
        "",
        "## Statistics",
        "",
        STATISTICS.format(metric=metric.upper(), n_boot=n_boot, n_perm=n_perm, shortfall=SHORTFALL).rstrip(),
        "",
        "## Datasets",
        "",
        "Computed from the data with the training reader and cleaning (users with fewer than 3 events dropped).",
        "",
    ]
    out += [_card_line(d, c) for d, c in sorted(cards.items())]
    out += ["", "## Results", "",
            "Configs with at least one finished seed; configs without results are under Pending.", ""]
    header = (f"| config | split | seeds | {metric.upper()} mean ± std | 95% CI (users) | {hr.upper()} mean ± std | "
              f"vs best baseline: Δ{metric.upper()} [95% CI], p | train time / seed | epochs (best) | "
              f"published {metric.upper()} (source) | ours vs published |")
    sep = "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"
    groups = _groups(rows)
    for dataset in sorted({r.dataset for r in rows if not r.pending}):
        out += [f"### {dataset}", ""]
        if DATASET_NOTES.get(dataset):
            out += [f"{DATASET_NOTES[dataset]}.", ""]
        out += [header, sep]
        shown = []
        for split in sorted({r.split for r in rows if r.dataset == dataset}, key=lambda s: (s != "loo", s)):
            group = groups[(dataset, split)]
            done = sorted((r for r in group if not r.pending), key=lambda r: -r.mean)
            split_label = _split_label(split, dataset, cards)
            for row in done:
                shown.append(row)
                label = _link(row, base) + (" (baseline)" if row.baseline else "")
                if row.notes:
                    label += " ⚠"
                pub, gap = _published_cell(row)
                ci = f"[{row.ci[0]:.4f}, {row.ci[1]:.4f}]" if row.ci else "—"
                epochs = "—" if math.isnan(row.epochs) else f"{row.epochs:.0f} ({row.best_epoch:.0f})"
                out.append(
                    f"| {label} | {split_label} | {len(row.runs)}/{SEEDS_EXPECTED} | "
                    f"{_mean_std(row.mean, row.std, len(row.runs))} | {ci} | "
                    f"{_mean_std(row.hr_mean, row.hr_std, len(row.runs))} | {_comparison_cell(row, group)} | "
                    f"{format_seconds(row.train_time_s)} | {epochs} | {pub} | {gap} |"
                )
            for p in published_for(dataset, split, metric):
                mark = "" if p.same_protocol else " †"
                out.append(f"| *published:* {p.model}{mark} | {split_label} | — | — | — | — | — | — | — | "
                           f"{p.value:.4f} ([{p.source}]({p.url})) | — |")
        out.append("")
        described = [(row.config, _description(row)) for row in shown]
        out += [f"- `{config}`: {text}" for config, text in described if text]
        out.append("")

    notes = []
    for row in rows:
        if row.gap is not None and not row.baseline and row.gap < -SHORTFALL:
            notes.append(_shortfall_note(row))
        for note in row.notes:
            notes.append(f"- **{row.dataset} / {row.config}** ⚠ {note}.")
    for p in sorted({p for row in rows for p in published_for(row.dataset, row.split, metric) if p.note or p.protocol},
                    key=lambda p: (p.dataset, -p.value)):
        text = "; ".join(t for t in (p.note, f"† protocol differs: {p.protocol}" if p.protocol else "") if t)
        notes.append(f"- published {p.dataset} {p.model} {p.value:.4f}: {text}.")
    out += ["## Notes", ""] + (notes or ["- none"]) + [""]

    out += ["## Pending", "",
            f"Configs short of {SEEDS_EXPECTED} seeds, and configs that cannot run on their data (reason given: "
            "these are not waiting for a run).", ""]
    waiting = pending_rows(rows, cards)
    if waiting:
        out += ["| dataset | config | split | seeds (have) | reason |", "|---|---|---|---|---|"]
        for row, reason in waiting:
            have = ", ".join(str(s) for s in row.seeds) or "none"
            why = f"**not applicable**: {reason}" if reason else "not run yet"
            out.append(f"| {row.dataset} | {_link(row, base)} | {_split_label(row.split, row.dataset, cards)} | "
                       f"{len(row.runs)} of {SEEDS_EXPECTED} ({have}) | {why} |")
    else:
        out.append("- none")
    out += ["", "## Provenance", ""]
    commits = sorted({r.git_commit or "unknown" for r in runs})
    hardware = sorted({_hardware_label(r) for r in runs})
    versions = sorted({_versions_label(r) for r in runs})
    out += [f"- git commits of the runs: {', '.join(f'`{c}`' for c in commits) or '—'}",
            f"- hardware: {'; '.join(hardware) or '—'}",
            f"- versions: {'; '.join(versions) or '—'}",
            "- every run directory holds `result.json` (config hash, dataset fingerprint, seed, commit, versions,",
            "  hardware, wall time), `metrics.json`, `config.yaml` and per-user `ranks.npz`.", ""]
    return "\n".join(out)


def _hardware_label(run: BenchRun) -> str:
    hw = run.extra.get("hardware") or {}
    threads = run.extra.get("torch_threads")
    return (f"{hw.get('cpu', '?')}, {hw.get('cpus', '?')} CPUs, {hw.get('memory_gb', '?')} GB"
            + (f", torch threads: {threads}" if threads else ""))


def _versions_label(run: BenchRun) -> str:
    v = run.extra.get("versions") or {}
    return ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "pytorch-lightning", "numpy") if k in v)


# ---- entry point -------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    markdown: Path
    plot: Path | None
    rows: int
    with_results: int
    runs: int


def write_leaderboard(results: str | Path, experiments: str | Path, out: str | Path, plot: str | Path | None,
                      metric: str = "ndcg@10", data_dir: str | None = None, refresh_cards: bool = False,
                      n_boot: int = 2000, n_perm: int = 10000) -> Written:
    """Load results and configs, write the Markdown (and the PNG unless ``plot`` is None)."""
    results, out = Path(results), Path(out)
    matrix = load_matrix(experiments)
    runs = load_runs(results)
    rows = build_rows(matrix, runs, metric, n_boot=n_boot, n_perm=n_perm)
    cards = load_cards(matrix, results, data_dir=data_dir, refresh=refresh_cards)
    for run in runs:  # datasets with results but no config still get their card slot
        cards.setdefault(run.dataset, None)
    plot_path = Path(plot) if plot is not None else None
    plot_name = None if plot_path is None else Path(_relative(plot_path, out.parent)).as_posix()
    text = render_markdown(rows, cards, metric, base=out.parent, results_label=_relative(results, out.parent),
                           n_boot=n_boot, n_perm=n_perm, plot_name=plot_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if plot_path is not None:
        fig = plot_leaderboard(rows, metric, cards)
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot_path, dpi=110)
    return Written(out, plot_path, len(rows), sum(not r.pending for r in rows), len(runs))


def _relative(path: str | Path, base: str | Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())
