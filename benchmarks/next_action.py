"""Next-action table on the Taobao UserBehavior sample (pv / cart / fav / buy).

    .venv/bin/python benchmarks/next_action.py               # run what is missing, write NEXT_ACTION.md
    .venv/bin/python benchmarks/next_action.py --table-only  # rewrite the table from finished runs

Runs the frozen configs in ``experiments/taobao-sample/`` through the public CLI (one
process at a time, single-threaded) and reads the ``next_action`` section of their
``metrics.json``: the model's next-action accuracy, macro-F1 and per-class ROC-AUC on the
held-out (test) event, beside majority-class, repeat-last-action and action-Markov
baselines fitted on training pairs, and the purchase-within-k head against the base rate.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import ROOT, run_config, status  # noqa: E402

from recsys import rundir  # noqa: E402  (zoo put the checkout on sys.path)

EXPERIMENTS = ROOT / "experiments" / "taobao-sample"
RUNS = ROOT / "benchmarks" / "next-action-runs"
TABLE = ROOT / "benchmarks" / "NEXT_ACTION.md"
# (config stem, description); the first two carry the action heads.
CONFIGS = (
    ("sasrec-ce-actions", "SASRec + action tokens + next-action & purchase heads"),
    ("sasrec-ce-noactions", "same heads, actions not embedded (ablation)"),
    ("sasrec-ce", "frozen taobao-sample/sasrec-ce.yaml (action tokens, next-action head, no purchase head)"),
    ("popularity", "most popular"),
    ("recent_popularity", "popular in the last day"),
    ("transitions", "item-to-item transitions + popularity back-off"),
)
ACTION_ROWS = (
    ("model", "model, argmax"),
    ("model_prior_corrected", "model, argmax p/prior"),
    ("model_valid_weighted", "model, argmax p·w (w fit on validation)"),
    ("majority_class", "majority class"),
    ("repeat_last_action", "repeat last action"),
    ("action_markov", "action Markov-1, argmax"),
    ("action_markov_prior_corrected", "action Markov-1, argmax p/prior"),
    ("action_markov_valid_weighted", "action Markov-1, argmax p·w (w fit on validation)"),
)
PURCHASE_ROWS = (("model", "model head"), ("base_rate", "training base rate"),
                 ("rate_given_last_action", "rate given last action"))


def _f(x, d=3):
    return "n/a" if x is None else f"{x:.{d}f}"


def _extra(threads: int) -> list[str]:
    return [f"train.num_threads={threads}", "train.progress_bar=false"]


def table() -> str:
    done = {k: rundir.read_metrics(RUNS / k) for k, _ in CONFIGS if rundir.has_metrics(RUNS / k)}
    out = [
        "# Next action on the Taobao UserBehavior sample",
        "",
        "Regenerate: `.venv/bin/python benchmarks/next_action.py`. Data: the shared sample (814 users,",
        "55,233 items, ~84k events after exact-duplicate removal; pv / cart / fav / buy with timestamps).",
        "Leave-one-out: the test event is each user's last, so every table row scores **814 test events**",
        "(small: one event moves accuracy by 0.12 points; treat differences of a few points as noise).",
        "The model reads item + action + position per event and predicts the next event's action",
        "(head 1) and whether a `buy` happens within the next 5 events (head 2). Baselines are fitted",
        "on training pairs only. Macro-F1 averages the classes present among the test targets.",
        "`argmax p/prior` divides each class probability by its training frequency before the argmax",
        "(fixed in advance, nothing tuned on test): with `pv` at ~90% plain argmax rarely says",
        "anything else, which macro-F1 punishes. `argmax p·w` multiplies each class probability by a",
        "weight fitted to **validation** macro-F1 (coordinate ascent over a fixed grid; the weights are in",
        "metrics.json), for the model and the action Markov chain alike: the threshold a deployment would",
        "set on held-out data. It is the rule the verdict below uses, declared before the test figures were",
        "seen. Log-loss is the mean negative log-likelihood of the",
        "true next action (probabilities clipped at 1e-7, so the one-hot repeat-last rule pays ~16",
        "nats per miss). The two action-head configs select their epoch on validation next-action",
        "log-loss (`eval.monitor: action_nll`); the frozen `sasrec-ce.yaml` selects on item NDCG@10.",
        "",
    ]
    for key, title in CONFIGS[:3]:
        m = done.get(key)
        if m is None:
            out += [f"## {key}: {title}", "", "pending", ""]
            continue
        report = m["next_action"]
        names = report["actions"]
        test = report["test"]
        out += [f"## {key}: {title}", "",
                f"Config [`{key}.yaml`](../experiments/taobao-sample/{key}.yaml); epochs {m['epochs']} "
                f"(best {m['best_epoch']}), train {m['wall_time_s']['train']:.0f} s. Training next-action mix: "
                + ", ".join(f"{k} {v:.3f}" for k, v in report["train_next_action_distribution"].items()) + ".",
                "",
                "| predictor | accuracy | macro-F1 | log-loss | " + " | ".join(f"AUC {n}" for n in names) + " |",
                "|---|---:|---:|---:|" + "---:|" * len(names)]
        for row, label in ACTION_ROWS:
            r = test["next_action"].get(row)
            if r is None:  # a run from before this row existed
                out.append(f"| {label} | n/a | | | " + " | " * len(names))
                continue
            out.append(f"| {label} | {_f(r['accuracy'])} | {_f(r['macro_f1'])} | {_f(r['log_loss'])} | "
                       + " | ".join(_f(r["roc_auc"][n]) for n in names) + " |")
        if "purchase" in test:
            p = test["purchase"]
            out += ["", f"Purchase within the next {report['purchase_horizon']} events (test positives: "
                    f"{p['model']['positive_rate']:.3f}; the log ends after the test event, so most test "
                    "horizons hold only it):", "",
                    "| predictor | ROC-AUC | log-loss |", "|---|---:|---:|"]
            for row, label in PURCHASE_ROWS:
                out.append(f"| {label} | {_f(p[row]['roc_auc'])} | {_f(p[row]['log_loss'])} |")
        out.append("")
    out += ["## Next item (same runs, test)", "", "| config | model | NDCG@10 | HR@10 |", "|---|---|---:|---:|"]
    for key, title in CONFIGS:
        m = done.get(key)
        vals = ("pending", "") if m is None else (_f(m["test"]["ndcg@10"], 4), _f(m["test"]["hr@10"], 4))
        out.append(f"| [{key}](../experiments/taobao-sample/{key}.yaml) | {title} | {vals[0]} | {vals[1]} |")
    out += ["", verdict(done), "", *diagnosis(done), "",
            f"Table written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    return "\n".join(out)


def diagnosis(done: dict) -> list[str]:
    """Why the verdict is what it is, from the run's own figures (validation and test)."""
    m = done.get("sasrec-ce-actions")
    if m is None or "valid_fitted_class_weights" not in m["next_action"]:
        return []
    na = m["next_action"]
    rows = ("model", "model_valid_weighted", "majority_class", "repeat_last_action", "action_markov")

    def cell(stage: str, row: str) -> str:
        r = na[stage]["next_action"][row]
        return f"{r['macro_f1']:.3f} / {r['log_loss']:.3f}"

    log = RUNS / "sasrec-ce-actions" / "logs" / "metrics.csv"
    losses = {}
    if log.is_file():
        import csv

        losses = {int(r["epoch"]): float(r["train/action_loss"]) for r in csv.DictReader(log.open())
                  if r.get("train/action_loss")}
    weights = ", ".join(f"{k} x{v:g}" for k, v in na["valid_fitted_class_weights"]["model"].items())
    out = ["## Reading the verdict (sasrec-ce-actions)", "",
           "Macro-F1 / log-loss of the model and the baselines on both held-out events:", "",
           "| predictor | validation | test |", "|---|---:|---:|"]
    out += [f"| {dict(ACTION_ROWS)[r]} | {cell('valid', r)} | {cell('test', r)} |" for r in rows]
    best = m["best_epoch"]
    out += ["",
            f"- The head is selected on validation log-loss (best epoch {best}). There it is only just better "
            "calibrated than the constant training prior (the majority-class row) and the action Markov chain; "
            "on the test event it is worse than both, so what it learned beyond the last action does not "
            "carry one event further.",
            f"- It overfits fast: the training next-action loss falls from {losses.get(0, float('nan')):.3f} "
            f"(epoch 0) to {losses.get(best, float('nan')):.3f} at the selected epoch and "
            f"{losses[max(losses)] if losses else float('nan'):.3f} at the last, while the validation "
            "log-loss rises after the selected epoch. 814 users (about 84k training events over 55k "
            "items) are too few for a 2-block encoder whose hidden state is shared with next-item prediction.",
            f"- Macro-F1 rewards predicting the rare classes. The weights fitted on validation ({weights}) "
            "did not transfer to test, and `repeat last action` gets its macro-F1 from runs of the same "
            "action (cart after cart), which the per-class AUCs show the model ranks no better than the "
            "Markov chain does.",
            "- Next step, not done here: train on the full UserBehavior log (100M events) rather than this "
            "sample, or give the head the last action directly and regularise it apart from the item loss."]
    return out


def verdict(done: dict) -> str:
    m = done.get("sasrec-ce-actions")
    if m is None:
        return "Verdict: pending."
    t = m["next_action"]["test"]["next_action"]
    if "model_valid_weighted" not in t:
        return "Verdict: pending (the run predates the validation-weighted decision rule)."
    model = t["model_valid_weighted"]["macro_f1"]
    bars = {k: t[k]["macro_f1"] for k in ("majority_class", "repeat_last_action")}
    beats = all(model > v for v in bars.values())
    return (f"Verdict (test macro-F1, sasrec-ce-actions, `argmax p·w`): model {model:.3f} vs majority "
            f"{bars['majority_class']:.3f}, repeat-last {bars['repeat_last_action']:.3f}: the model "
            + ("beats both simple baselines." if beats else "does NOT beat both; see 'Reading the verdict' below."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated config stems")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / ".gitignore").write_text("*\n")
    if not args.table_only:
        for key, _ in CONFIGS:
            if args.only and key not in args.only.split(","):
                continue
            config, run = EXPERIMENTS / f"{key}.yaml", RUNS / key
            state = status(config, run, _extra(args.threads))
            print(f"{key:22s} {state}", flush=True)
            if state == "complete" and not args.force:
                continue
            run_config(config, run, _extra(args.threads))
            TABLE.write_text(table())
    TABLE.write_text(table())
    print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
