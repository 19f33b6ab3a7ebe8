"""A study's report (trials CSV, plots) and its best trial as a frozen experiment config.

Plots come from ``optuna.visualization``: interactive HTML through plotly (the page loads
``plotly.min.js`` from the same folder, so the report works offline) and PNG through
Optuna's matplotlib backend (no browser needed, unlike plotly's kaleido export). A plot
whose library is missing, or that the study cannot support yet (importances need two
complete trials that differ), is skipped with a note; the CSV is always written.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from recsys.tuning.storage import FINISHED, WORKER_ATTR, redact

IMPORTANCE_SEED = 0


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value, parameters, validation metrics, provenance."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        worker = t.user_attrs.get(WORKER_ATTR) or {}
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs_reported": len(t.intermediate_values),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "epochs": t.user_attrs.get("epochs"),
            "train_s": t.user_attrs.get("train_s"),
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
            "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
            "retry_of": t.system_attrs.get("failed_trial"),
            "surplus": bool(t.user_attrs.get("surplus", False)),
            "host": worker.get("host") if worker.get("trial") == t.number else None,
            "pid": worker.get("pid") if worker.get("trial") == t.number else None,
            "run_dir": t.user_attrs.get("run_dir"),
            "note": (t.user_attrs.get("failed_reason") or t.user_attrs.get("error")
                     or ("stopped at the time limit; queued again" if t.user_attrs.get("timeout") else None)
                     or ("interrupted; queued again" if t.user_attrs.get("interrupted") else None)),
        }
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row.update({f"valid:{k}": v for k, v in (t.user_attrs.get("valid") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _plots(study: optuna.Study, target_name: str):
    from optuna.importance import FanovaImportanceEvaluator

    evaluator = FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    return {
        "history": (lambda v: v.plot_optimization_history(study, target_name=target_name)),
        "importances": (lambda v: v.plot_param_importances(study, evaluator=evaluator, target_name=target_name)),
        "intermediate": (lambda v: v.plot_intermediate_values(study)),
    }


def _can_plot(study: optuna.Study, name: str) -> str | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no complete trial yet"
    if name == "importances":
        varied = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
        if len(complete) < 2 or not varied:
            return "importances need two complete trials with different parameters"
        if len({t.value for t in complete}) < 2:  # fANOVA has no variance to split
            return "importances need complete trials with different objective values"
    if name == "intermediate" and not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return "no intermediate values reported"
    return None


def write_report(study: optuna.Study, setup) -> list[Path]:
    """``trials.csv`` and ``{history,importances,intermediate}.{html,png}`` in the study
    folder; prints a note for each plot it had to skip. Returns the files written."""
    out = Path(setup.study_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    frame = trials_frame(study)
    frame.to_csv(out / "trials.csv", index=False)
    written.append(out / "trials.csv")
    target = f"valid {setup.monitor}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for the matplotlib backend
        for name, plot in _plots(study, target).items():
            why = _can_plot(study, name)
            if why is not None:
                print(f"report: {name} plot skipped ({why})", flush=True)
                continue
            written += _html(plot, out / f"{name}.html") + _png(plot, out / f"{name}.png")
    return written


def _html(plot, path: Path) -> list[Path]:
    try:
        import optuna.visualization as vis

        fig = plot(vis)
    except ImportError as exc:
        print(f"report: {path.name} skipped (plotly missing: pip install 'recsys[tune]'; {exc})", flush=True)
        return []
    fig.write_html(path, include_plotlyjs="directory")
    return [path]


def _png(plot, path: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as vis

        ax = plot(vis)
    except ImportError as exc:
        print(f"report: {path.name} skipped (matplotlib missing: pip install 'recsys[tune]'; {exc})", flush=True)
        return []
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return "unreadable"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def export_best(study: optuna.Study, setup) -> dict[str, Any] | None:
    """Write ``best.yaml``: the base config with the fixed overrides and the best trial's
    parameters, every field resolved, under a header that says where it came from and how
    to refit it. Returns the best trial's summary, or None without a complete trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
    best = max(complete, key=lambda t: (sign * t.value, -t.number))  # ties: the earliest trial
    cfg = setup.space.config_for(setup.base, best.params)
    finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    pruned = finished - len(complete)
    path = Path(setup.study_dir) / "best.yaml"
    chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in setup.space.fixed.items()) or "none"
    header = [
        f"# Best trial of Optuna study '{setup.name}': trial {best.number} of {finished} finished "
        f"({len(complete)} complete, {pruned} pruned).",
        f"# Selected on validation {setup.monitor} = {best.value:.6f} (best epoch {best.user_attrs.get('best_epoch')}); "
        "test metrics were not read during the search.",
        f"# Search space: {setup.space_path} (sha256 {_sha(setup.space_path)}); "
        f"base config: {setup.config_path} (sha256 {_sha(setup.config_path)}).",
        f"# Storage: {redact(setup.storage_url)}; the trial's run: {best.user_attrs.get('run_dir')}",
        f"# Chosen: {chosen}",
        f"# Fixed for the search: {fixed}",
        "# Refit (same seed and code give the validation metric above; the output adds test):",
        f"#   recsys fit --config {path}",
        f"#   recsys fit --config {path} seed={cfg.seed + 1}    # other seeds for a mean",
    ]
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text("\n".join(header) + "\n" + cfg.to_yaml(), encoding="utf-8")
    tmp.replace(path)
    return {
        "trial": best.number,
        "value": best.value,
        "params": dict(best.params),
        "valid": best.user_attrs.get("valid"),
        "best_epoch": best.user_attrs.get("best_epoch"),
        "run_dir": best.user_attrs.get("run_dir"),
        "config": str(path),
    }
