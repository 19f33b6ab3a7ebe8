"""Next action, purchase and churn on the held-out tail of time: Taobao sample and the planted log.

    .venv/bin/python benchmarks/next_action.py                     # run what is missing, write JSON + markdown
    .venv/bin/python benchmarks/next_action.py --only planted      # one dataset (taobao-sample, planted, curve)
    .venv/bin/python benchmarks/next_action.py --render            # rewrite NEXT_ACTION.md from NEXT_ACTION.json

Every figure comes from a run's ``metrics.json`` (its ``behaviour`` section, written by
``recsys fit``; protocol in ``recsys/data/behaviour.py``) and, for the planted log, from the
generator's exact optimum on the same moments (``recsys.data.synthetic_behaviour``). The runs
land in ``benchmarks/next-action-runs/<dataset>/`` (their weights and logs are not kept);
``NEXT_ACTION.json`` collects them per dataset, task and predictor, and ``NEXT_ACTION.md`` is
rendered from the JSON alone, so the page is never typed by hand.

- ``taobao-sample``: ``experiments/taobao-sample/behaviour.yaml``.
- ``planted``: the same config on a planted log of ``PLANTED_USERS`` users at Taobao-like
  rates (``BehaviourParams()`` defaults, seed 0), written to the run folder.
- ``curve``: the same config on planted logs of ``CURVE_USERS`` users (the Taobao sample has
  814): how the model's distance to the optimum and to the best baseline shrinks with data.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = ROOT / "benchmarks" / "next-action-runs"
JSON_PATH = ROOT / "benchmarks" / "NEXT_ACTION.json"
TABLE = ROOT / "benchmarks" / "NEXT_ACTION.md"
CONFIG = ROOT / "experiments" / "taobao-sample" / "behaviour.yaml"
PLANTED_USERS = 3200
CURVE_USERS = (800, 1600, 3200, 6400)  # 6,400: twice the headline size, to show the trend past it
TASKS = ("next_action", "next_action_given", "purchase", "churn")
TASK_TITLES = {
    "next_action": "Next action from the history",
    "next_action_given": "Next action given the next event's item and time",
    "purchase": "Purchase within the next 5 events",
    "churn": "Churn: no event in the next day (snapshots every 6 h)",
}
BASELINES = {
    "next_action": ("majority_class", "repeat_last_action", "action_markov", "logistic", "gbm"),
    "next_action_given": ("logistic", "gbm"),
    "purchase": ("base_rate", "rate_given_last_action", "logistic", "gbm"),
    "churn": ("recency", "logistic", "gbm"),
}
TAOBAO_FRACTIONS = (0.25, 0.5)  # the Taobao learning curve: the first quarter / half of its users, and all
PLANTED_OVERRIDES = ["data.name=planted-behaviour", "data.names=[user_id,item_id,behavior,timestamp]",
                     "data.dedup=false"]


def planted_dir(n_users: int) -> Path:
    return RUNS / "planted" / f"users{n_users}"


def run_fit(run_dir: Path, overrides: list[str]) -> None:
    """``recsys fit`` into ``run_dir`` (one thread, no bar), unless it finished already."""
    if (run_dir / "metrics.json").is_file():
        return
    recsys = Path(sys.executable).with_name("recsys")  # the CLI beside this interpreter
    command = [str(recsys), "fit", "--config", str(CONFIG), "--run-dir", str(run_dir),
               "train.num_threads=1", "train.progress_bar=false", *overrides]
    subprocess.run(command, cwd=ROOT, check=True)


def run_planted(n_users: int) -> None:
    from recsys.data.synthetic_behaviour import BehaviourParams, generate

    folder = planted_dir(n_users)
    folder.mkdir(parents=True, exist_ok=True)
    events = folder / "events.csv"
    if not events.is_file():
        generate(BehaviourParams(n_users=n_users)).to_csv(events)
    run_fit(folder / "run", [*PLANTED_OVERRIDES, f"data.path={events}"])
    optimum = folder / "optimum.json"
    if not optimum.is_file():
        optimum.write_text(json.dumps(planted_optimum(folder / "run", n_users), indent=1))


def run_taobao_subset(fraction: float) -> None:
    """The config on the Taobao sample's first ``fraction`` of users (file order), whole
    histories: training and test both shrink with the users (a learning curve in users)."""
    import pandas as pd

    from recsys.config import ExperimentConfig
    from recsys.data.events import resolve_path

    folder = RUNS / "taobao-sample" / f"users{fraction:g}"
    folder.mkdir(parents=True, exist_ok=True)
    events = folder / "events.csv"
    if not events.is_file():
        cfg = ExperimentConfig.from_yaml(CONFIG)
        frame = pd.read_csv(resolve_path(cfg.data), header=None, names=list(cfg.data.names))
        users = frame[cfg.data.user_col].drop_duplicates()
        keep = set(users.iloc[: int(round(fraction * len(users)))])
        frame[frame[cfg.data.user_col].isin(keep)].to_csv(events, header=False, index=False)
    run_fit(folder / "run", [f"data.path={events}"])


def planted_optimum(run: Path, n_users: int) -> dict:
    """The generator's optimum on exactly the run's test moments and snapshots."""
    from recsys import rundir
    from recsys.data.events import load_events
    from recsys.data.sequences import EventVocab, build_sequences
    from recsys.data.synthetic_behaviour import BehaviourParams, generate, oracle_predictions
    from recsys.data.vocab import Vocab
    from recsys.eval.behaviour import binary_report, next_action_report

    cfg = rundir.read_config(run)
    report = rundir.read_metrics(run)["behaviour"]
    frame = load_events(cfg.data).frame
    vocab, events = Vocab.build(frame["item"]), EventVocab.build(frame["event"])
    seqs = build_sequences(frame, vocab, events)
    w = report["window"]
    found = oracle_predictions(generate(BehaviourParams(n_users=n_users)), seqs, vocab.items, events.names,
                               w["t_test"], w["t_end"], report["purchase_horizon"], report["churn_days"] * 86400.0)
    out = {}
    for task, (probs, target, users) in found.items():
        if task.startswith("next_action"):
            out[task] = next_action_report(probs, target, users, events.names, 1000, cfg.seed)
        else:
            out[task] = binary_report(probs, target, users, 1000, cfg.seed)
    return out


# ---- collect -------------------------------------------------------------------------------


def _row(r: dict) -> dict:
    keep = ("n", "n_users", "log_loss", "log_loss_ci", "accuracy", "macro_f1", "macro_f1_ci", "roc_auc",
            "roc_auc_ci", "positive_rate")
    return {k: r[k] for k in keep if k in r}


def _dataset_entry(run: Path, optimum: dict | None = None) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    b = m["behaviour"]
    test = b["test"]
    entry = {
        "run": str(run.relative_to(ROOT)), "git_commit": m.get("git_commit"), "epochs": m["epochs"],
        "best_epoch": m["best_epoch"], "train_s": round(m["wall_time_s"]["train"]),
        "window": b["window"], "moments": test["moments"], "snapshots": test.get("snapshots"),
        "train_moments": b["train_moments"], "temperatures": b.get("temperatures"),
        "predictors": {t: {k: _row(v) for k, v in test[t].items()} for t in TASKS if t in test},
        "paired": {t: test[f"{t}_paired"] for t in ("next_action", "next_action_given") if f"{t}_paired" in test},
        "dataset": m["dataset"]["summary"],
    }
    if optimum is not None:
        entry["optimum"] = {t: _row(v) for t, v in optimum.items()}
    return entry


def collect() -> dict:
    out: dict = {"protocol": "recsys/data/behaviour.py", "config": str(CONFIG.relative_to(ROOT)), "datasets": {}}
    taobao = RUNS / "taobao-sample" / "run"
    if (taobao / "metrics.json").is_file():
        out["datasets"]["taobao-sample"] = _dataset_entry(taobao)
    planted = planted_dir(PLANTED_USERS)
    if (planted / "optimum.json").is_file():
        out["datasets"]["planted"] = _dataset_entry(planted / "run", json.loads((planted / "optimum.json").read_text()))
        out["datasets"]["planted"]["n_users_generated"] = PLANTED_USERS
    curve = []
    for n in CURVE_USERS:
        folder = planted_dir(n)
        if (folder / "optimum.json").is_file():
            e = _dataset_entry(folder / "run", json.loads((folder / "optimum.json").read_text()))
            curve.append({"n_users_generated": n, "n_events": e["dataset"]["n_events"], **verdict_planted(e)})
    out["planted_curve"] = curve
    taobao_curve = []
    for fraction in (*TAOBAO_FRACTIONS, 1.0):
        run = RUNS / "taobao-sample" / ("run" if fraction == 1.0 else f"users{fraction:g}/run")
        if (run / "metrics.json").is_file():
            e = _dataset_entry(run)
            p = e["predictors"]
            taobao_curve.append({"fraction": fraction, "n_users": e["dataset"]["n_users"], **{
                task: {k: p[task][k].get("log_loss" if task.startswith("next") else "roc_auc") for k in p[task]}
                for task in TASKS if task in p}, "paired": e["paired"]})
    out["taobao_curve"] = taobao_curve
    out["needed"] = needed_size(curve)
    out["done_when"] = {}
    if "planted" in out["datasets"]:
        out["done_when"]["planted"] = verdict_planted(out["datasets"]["planted"])
    if "taobao-sample" in out["datasets"]:
        out["done_when"]["taobao-sample"] = verdict_taobao(out["datasets"]["taobao-sample"])
    return out


def verdict_planted(e: dict) -> dict:
    """The planted bars: next-action log-loss closes >= 90% of the prior -> optimum gap;
    purchase and churn AUC within 0.02 of the optimum; with the best baseline beside."""
    p, opt = e["predictors"], e["optimum"]
    out = {}
    for task in ("next_action", "next_action_given"):
        if "model" not in p.get(task, {}):
            continue
        prior = p["next_action"]["majority_class"]["log_loss"]
        model, best = p[task]["model"]["log_loss"], opt[task]["log_loss"]
        base = min(p[task][k]["log_loss"] for k in BASELINES[task] if k in p[task])
        out[task] = {"prior": prior, "optimum": best, "model": model, "best_baseline": base,
                     "gap_closed": (prior - model) / (prior - best),
                     "baseline_gap_closed": (prior - base) / (prior - best),
                     "met": (prior - model) / (prior - best) >= 0.9}
    for task in ("purchase", "churn"):
        if "model" not in p.get(task, {}):
            continue
        model, best = p[task]["model"]["roc_auc"], opt[task]["roc_auc"]
        base = max(p[task][k]["roc_auc"] for k in BASELINES[task] if k in p[task] and p[task][k]["roc_auc"])
        out[task] = {"optimum": best, "model": model, "best_baseline": base, "shortfall": best - model,
                     "met": best - model <= 0.02}
    return out


def needed_size(curve: list[dict]) -> dict:
    """Users (and events) of a planted log at which the model would meet each bar, by a
    power law fitted through the curve (log shortfall against log users, least squares):
    next action, 1 - gap closed reaching 0.1; purchase and churn, the AUC shortfall reaching
    0.02. ``None`` where the curve shows no improvement to extrapolate; the first size that
    already meets a bar is reported as measured."""
    out = {}
    for task, bar in (("next_action", 0.1), ("next_action_given", 0.1), ("purchase", 0.02), ("churn", 0.02)):
        points = [(c["n_users_generated"], c["n_events"] / c["n_users_generated"],
                   1 - c[task]["gap_closed"] if task.startswith("next") else c[task]["shortfall"])
                  for c in curve if task in c]
        if not points:
            continue
        met = [p for p in points if p[2] <= bar]
        if met:
            n, per_user, _ = min(met)
            out[task] = {"users": n, "events": round(n * per_user), "how": "measured"}
            continue
        fit = [(math.log(n), math.log(v)) for n, _, v in points if v > 0]
        slope = None
        if len(fit) >= 2:
            xs, ys = zip(*fit)
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            sxx = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in fit) / sxx if sxx else None
        if slope is None or slope >= 0:
            out[task] = {"users": None, "events": None, "how": "no improvement with size to extrapolate"}
            continue
        n = math.exp(mx + (math.log(bar) - my) / slope)
        per_user = points[-1][1]
        out[task] = {"users": round(n), "events": round(n * per_user), "slope": slope, "how": "power-law extrapolation"}
    return out


def verdict_taobao(e: dict) -> dict:
    """The Taobao bars: next-action log-loss below repeat-last and the Markov chain with
    user-bootstrap intervals that do not overlap; purchase AUC above the best baseline; churn
    against recency (reported)."""
    p = e["predictors"]
    out = {}
    for task in ("next_action", "next_action_given"):
        if "model" not in p.get(task, {}):
            continue
        m = p[task]["model"]
        rivals = {k: p["next_action"][k] for k in ("repeat_last_action", "action_markov")}
        out[task] = {
            "model": m["log_loss"], "model_ci": m["log_loss_ci"],
            **{k: {"log_loss": r["log_loss"], "ci": r["log_loss_ci"], "separated": m["log_loss_ci"][1] < r["log_loss_ci"][0]}
               for k, r in rivals.items()},
        }
        out[task]["met"] = all(out[task][k]["separated"] for k in rivals)
    if "model" in p.get("purchase", {}):
        best = max(BASELINES["purchase"], key=lambda k: p["purchase"][k]["roc_auc"] or 0)
        out["purchase"] = {"model": p["purchase"]["model"]["roc_auc"], "model_ci": p["purchase"]["model"]["roc_auc_ci"],
                           "best_baseline": best, "baseline": p["purchase"][best]["roc_auc"],
                           "baseline_ci": p["purchase"][best]["roc_auc_ci"],
                           "met": p["purchase"]["model"]["roc_auc"] > p["purchase"][best]["roc_auc"]}
    if "model" in p.get("churn", {}):
        c = p["churn"]
        out["churn"] = {"model": c["model"]["roc_auc"], "model_ci": c["model"]["roc_auc_ci"],
                        "recency": c["recency"]["roc_auc"], "recency_ci": c["recency"]["roc_auc_ci"],
                        "best_baseline": max(c[k]["roc_auc"] for k in BASELINES["churn"])}
    return out


# ---- render --------------------------------------------------------------------------------


def _f(x, d=3) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def _ci(c, d=3) -> str:
    return "" if not c else f"[{c[0]:.{d}f}, {c[1]:.{d}f}]"


PROTOCOL = """\
**Protocol** (`recsys/data/behaviour.py`). One clock for every user: `t_valid` and `t_test` are the
0.7 and 0.85 quantiles of event time, `t_end` the last event. Training reads events up to `t_valid`;
every predictor is fitted there. A **moment** is the instant right after an event in the test window
`(t_test, t_end]`; its inputs are the user's events up to it, never a later one. At each moment:
**next action** = the action of the user's next event (if it is in the window), predicted from the
history alone, or also given that event's item and time gap ("the user just opened item x: view,
cart, fav or buy?"); **purchase within 5** = a buy among the next 5 events (censored, so not scored,
when the window ends before 5 events and no buy); **churn**: at snapshots every 6 h from `t_test`
(while `s + 1 day <= t_end`), every user with an event in the last 3 days, label = no event in
`(s, s + 1 day]`. Intervals: 95% percentile bootstrap over **users** (1,000 resamples; a user's
moments move together). Log-loss is the mean negative log-likelihood (probabilities clipped at 1e-7,
so the one-hot repeat-last rule pays 16 nats per miss); macro-F1 of argmax averages the classes that
occur. Validation (`(t_valid, t_test]`) selects the epoch (`eval.monitor: behaviour_nll`) and fits
each head's temperature (`train.calibrate`); it is never scored here.

**Predictors.** Majority class, repeat-last-action and the action Markov chain (P(next | last),
add-one) read actions only; `logistic` / `gbm` are scikit-learn's logistic regression and gradient
boosting on the analyst's recency / frequency features (`recsys/baselines/behaviour.py`: last action,
counts, events in the last day and in the session, time since the last cart and buy, open carts, and
for the candidate the user's earlier actions on that item and the gap); `rate_given_last_action` and
`base_rate` for purchases; `recency` for churn (a logistic fit of log time since the last event:
ranks by recency). `model`: the config's heads, temperature-scaled; besides the encoder's state they
read a summary of the user's state after the event (`recsys.nn.heads.history_summary`: last action,
which of the latest carts are still open, session length and age; nothing that grows with the
history), the action and purchase heads through one hidden layer."""


def render(doc: dict) -> str:
    out = ["# Next action, purchase and churn on the held-out tail of time", "",
           "Generated by `.venv/bin/python benchmarks/next_action.py` from `benchmarks/NEXT_ACTION.json`"
           " (the runs in `benchmarks/next-action-runs/`); do not edit by hand. Config: "
           f"[`{doc.get('config', CONFIG.relative_to(ROOT))}`](../experiments/taobao-sample/behaviour.yaml), "
           "the same on both logs.", "", PROTOCOL, ""]
    out += _done_when(doc)
    names = {"taobao-sample": "Taobao UserBehavior sample", "planted": "Planted log (exact optimum)"}
    for key in ("taobao-sample", "planted"):
        e = doc.get("datasets", {}).get(key)
        out += [f"## {names[key]}", ""]
        if e is None:
            out += ["pending", ""]
            continue
        s = e["dataset"]
        out += [f"{s.get('n_users', '?'):,} users, {s.get('n_items', '?'):,} items, {s.get('n_events', '?'):,} events"
                + (f" (generated: {e['n_users_generated']:,} users, seed 0)" if "n_users_generated" in e else "")
                + f"; {e['moments']:,} test moments, {e.get('snapshots') or 0:,} churn snapshots; "
                f"{e['train_moments']:,} training moments. Epochs {e['epochs']} (best {e['best_epoch']}), "
                f"train {e['train_s']} s; temperatures "
                + (", ".join(f"{k} {v:.2f}" for k, v in (e.get("temperatures") or {}).items()) or "none")
                + f"; code `{(e.get('git_commit') or 'unknown')[:12]}`.", ""]
        if "optimum" in e:
            out += ["Users live until they churn, so no label is cut short by the log's end; **optimum** is the "
                    "generator's exact probability on the same moments and snapshots "
                    "(`recsys/data/synthetic_behaviour.py`; its tests check it against the sampler).", ""]
        for task in TASKS:
            rows = e["predictors"].get(task)
            if not rows:
                continue
            out += [f"### {TASK_TITLES[task]}", ""]
            opt = e.get("optimum", {}).get(task)
            if task.startswith("next_action"):
                out += ["| predictor | log-loss | 95% interval | accuracy | macro-F1 |", "|---|---:|---|---:|---:|"]
                for k, r in rows.items():
                    out.append(f"| {k} | {_f(r['log_loss'], 4)} | {_ci(r.get('log_loss_ci'), 4)} | "
                               f"{_f(r['accuracy'])} | {_f(r['macro_f1'])} |")
                if opt:
                    out.append(f"| **optimum** | {_f(opt['log_loss'], 4)} | {_ci(opt.get('log_loss_ci'), 4)} | "
                               f"{_f(opt['accuracy'])} | {_f(opt['macro_f1'])} |")
                n = next(iter(rows.values()))["n"]
                out += ["", f"{n:,} moments."]
                paired = e.get("paired", {}).get(task)
                if paired:
                    out += ["", "Paired log-loss difference, model minus each (negative: the model is better): "
                            + "; ".join(f"{k.split(' - ')[1]} {v['difference']:+.4f} {_ci(v['difference_ci'], 4)}"
                                        for k, v in paired.items()) + "."]
            else:
                out += ["| predictor | ROC-AUC | 95% interval | log-loss |", "|---|---:|---|---:|"]
                for k, r in rows.items():
                    out.append(f"| {k} | {_f(r['roc_auc'], 4)} | {_ci(r.get('roc_auc_ci'), 4)} | {_f(r['log_loss'], 4)} |")
                if opt:
                    out.append(f"| **optimum** | {_f(opt['roc_auc'], 4)} | {_ci(opt.get('roc_auc_ci'), 4)} | "
                               f"{_f(opt['log_loss'], 4)} |")
                r0 = next(iter(rows.values()))
                out += ["", f"{r0['n']:,} {'snapshots' if task == 'churn' else 'moments'}, positive rate "
                        f"{r0['positive_rate']:.3f}."]
            out.append("")
    out += _curve(doc)
    out += _taobao_curve(doc)
    return "\n".join(out) + "\n"


def _taobao_curve(doc: dict) -> list[str]:
    curve = doc.get("taobao_curve") or []
    out = ["## Learning curve on the Taobao sample", ""]
    if not curve:
        return out + ["pending", ""]
    out += ["The config on the sample's first quarter, half and all of its users (whole histories, the same "
            "cuts): test log-loss of next action (model / logistic / Markov), model minus logistic with its "
            "paired interval, and ROC-AUC of purchase and churn (model / best baseline).", "",
            "| users | next action | model - logistic | given item | purchase AUC | churn AUC |",
            "|---:|---|---|---|---|---|"]
    for c in curve:
        na, given = c.get("next_action", {}), c.get("next_action_given", {})
        diff = c.get("paired", {}).get("next_action", {}).get("model - logistic")
        pur, ch = c.get("purchase", {}), c.get("churn", {})

        def best(d, names, pick=max):
            vals = [d[k] for k in names if d.get(k) is not None]
            return pick(vals) if vals else None

        out.append(
            f"| {c['n_users']:,} | {_f(na.get('model'), 4)} / {_f(na.get('logistic'), 4)} / {_f(na.get('action_markov'), 4)} | "
            + ("n/a" if diff is None else f"{diff['difference']:+.4f} {_ci(diff['difference_ci'], 4)}")
            + f" | {_f(given.get('model'), 4)} / {_f(best(given, BASELINES['next_action_given'], min), 4)}"
            + f" | {_f(pur.get('model'), 4)} / {_f(best(pur, BASELINES['purchase']), 4)}"
            + f" | {_f(ch.get('model'), 4)} / {_f(best(ch, BASELINES['churn']), 4)} |")
    return out + [""]


def _done_when(doc: dict) -> list[str]:
    dw = doc.get("done_when", {})
    out = ["## Done-when (issue 24)", ""]
    p = dw.get("planted")
    if p:
        for task in ("next_action", "next_action_given"):
            if task in p:
                v = p[task]
                out.append(f"- Planted, {TASK_TITLES[task].lower()}: the model closes {v['gap_closed']:.1%} of the "
                           f"prior -> optimum log-loss gap ({v['prior']:.4f} -> {v['optimum']:.4f}; model "
                           f"{v['model']:.4f}; best baseline {v['best_baseline']:.4f} = {v['baseline_gap_closed']:.1%}): "
                           + ("**met** (>= 90%)." if v["met"] else "**not met** (< 90%)."))
        for task in ("purchase", "churn"):
            if task in p:
                v = p[task]
                out.append(f"- Planted, {task} ROC-AUC: model {v['model']:.4f}, optimum {v['optimum']:.4f} "
                           f"(shortfall {v['shortfall']:.4f}; best baseline {v['best_baseline']:.4f}): "
                           + ("**met** (within 0.02)." if v["met"] else "**not met** (more than 0.02 below)."))
    else:
        out.append("- Planted: pending.")
    t = dw.get("taobao-sample")
    if t:
        for task in ("next_action", "next_action_given"):
            if task in t:
                v = t[task]

                def versus(name: str, label: str) -> str:
                    r = v[name]
                    how = ("better, intervals apart" if r["separated"] else
                           "better, intervals overlap" if v["model"] < r["log_loss"] else "worse")
                    return f"{label} {r['log_loss']:.4f} {_ci(r['ci'], 4)} ({how})"

                out.append(f"- Taobao, {TASK_TITLES[task].lower()}: model log-loss {v['model']:.4f} "
                           f"{_ci(v['model_ci'], 4)} vs {versus('repeat_last_action', 'repeat-last')} and "
                           f"{versus('action_markov', 'Markov')}: " + ("**met**." if v["met"] else "**not met**."))
        if "purchase" in t:
            v = t["purchase"]
            out.append(f"- Taobao, purchase ROC-AUC: model {v['model']:.4f} {_ci(v['model_ci'], 4)} vs the best "
                       f"baseline ({v['best_baseline']}) {v['baseline']:.4f} {_ci(v['baseline_ci'], 4)}: "
                       + ("**met**." if v["met"] else "**not met**."))
        if "churn" in t:
            v = t["churn"]
            out.append(f"- Taobao, churn under the time split: model ROC-AUC {v['model']:.4f} {_ci(v['model_ci'], 4)} "
                       f"vs recency {v['recency']:.4f} {_ci(v['recency_ci'], 4)} (best baseline {v['best_baseline']:.4f}).")
    else:
        out.append("- Taobao: pending.")
    return out + [""]


def _curve(doc: dict) -> list[str]:
    curve = doc.get("planted_curve") or []
    out = ["## Learning curve on the planted log (Taobao-like rates)", ""]
    if not curve:
        return out + ["pending", ""]
    out += ["Same config, planted logs of growing size (the Taobao sample has 814 users). Next action given "
            "the candidate: share of the prior -> optimum log-loss gap closed; purchase and churn: ROC-AUC "
            "shortfall from the optimum (model / best baseline).", "",
            "| users | next action | given item | purchase shortfall | churn shortfall |",
            "|---:|---:|---:|---:|---:|"]
    for c in curve:
        def gap(t):
            return "n/a" if t not in c else f"{c[t]['gap_closed']:.1%} / {c[t]['baseline_gap_closed']:.1%}"

        def short(t):
            return "n/a" if t not in c else f"{c[t]['shortfall']:.4f} / {c[t]['optimum'] - c[t]['best_baseline']:.4f}"

        out.append(f"| {c['n_users_generated']:,} | {gap('next_action')} | {gap('next_action_given')} | "
                   f"{short('purchase')} | {short('churn')} |")
    needed = doc.get("needed") or {}
    if needed:
        out += ["", "Size at which the model would meet each planted bar (a power law through the curve's "
                "shortfalls; events at the largest log's events per user):", ""]
        for task, v in needed.items():
            where = ("no estimate: " + v["how"]) if v["users"] is None else \
                f"{v['users']:,} users ({v['events']:,} events), {v['how']}"
            out.append(f"- {TASK_TITLES[task]}: {where}.")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated: taobao-sample, planted, curve, taobao-curve")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the JSON")
    args = parser.parse_args(argv)
    if not args.render:
        only = set(args.only.split(",")) if args.only else {"taobao-sample", "planted", "curve", "taobao-curve"}
        if "taobao-sample" in only:
            run_fit(RUNS / "taobao-sample" / "run", [])
        if "planted" in only:
            run_planted(PLANTED_USERS)
        if "curve" in only:
            for n in CURVE_USERS:
                run_planted(n)
        if "taobao-curve" in only:
            for fraction in TAOBAO_FRACTIONS:
                run_taobao_subset(fraction)
        JSON_PATH.write_text(json.dumps(collect(), indent=1) + "\n")
    TABLE.write_text(render(json.loads(JSON_PATH.read_text())))
    print(f"wrote {TABLE.relative_to(ROOT)} and {JSON_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
