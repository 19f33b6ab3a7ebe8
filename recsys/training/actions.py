"""The action report of a run with next-action heads (``metrics.json['actions']``): the model's
next-action and purchase-within-k metrics on the leave-one-out validation and test targets,
beside simple baselines fitted on the training events. ``run.fit`` calls ``action_report``;
the held-out-tail behaviour evaluation of temporal splits is ``recsys.training.behaviour``.
"""

from __future__ import annotations

import numpy as np

from recsys.baselines.actions import (
    action_markov,
    action_pairs,
    fit_class_weights,
    majority_class,
    prior_corrected,
    purchase_rate_by_last_action,
    repeat_last,
    reweighted,
)
from recsys.data.collate import collate_train
from recsys.data.datamodule import SeqDataModule
from recsys.eval.actions import next_action_metrics, purchase_metrics
from recsys.training.module import RankingModule
from recsys.types import NO_LABEL


def action_report(module: RankingModule, dm: SeqDataModule) -> dict | None:
    """Next-action (and purchase) metrics of the model on valid/test, beside baselines
    fitted on training pairs: majority class, repeat-last-action, and a first-order
    action Markov chain; for purchases the base rate and the rate given the last action.

    ``*_prior_corrected`` rows decide by ``argmax p(c | x) / prior(c)`` (the training class
    distribution) instead of ``argmax p(c | x)``: with one class at ~90%, argmax almost
    always says the majority class, which macro-F1 punishes. The correction is fixed in
    advance: nothing is tuned on validation or test. ``*_valid_weighted`` rows decide by
    ``argmax p(c | x) w_c`` with per-class weights fitted to validation macro-F1
    (``fit_class_weights``), for the model and the action Markov chain alike; their
    validation figures are in-sample, their test figures are not. The weights are reported."""
    outputs = getattr(module, "last_action_outputs", {})
    if not outputs:
        return None
    names, n_events = dm.event_vocab.names, dm.event_vocab.n_events
    events = dm.sequences.events
    start, stop = dm.train_ranges()
    now, nxt = action_pairs(events, start, stop)
    prior = majority_class(nxt, n_events, 1)[0]  # training distribution of next actions
    report: dict = {
        "actions": list(names),
        "purchase_horizon": dm.purchase_horizon,
        "train_next_action_distribution": dict(zip(names, prior.round(6).tolist())),
    }
    train_purchase = _training_purchase_labels(dm) if dm.purchase_horizon > 0 else None
    val = outputs["val"]
    weights = {
        "model": fit_class_weights(val["probs"], val["targets"]),
        "action_markov": fit_class_weights(action_markov(now, nxt, val["last"] + 1, n_events), val["targets"]),
    }
    report["valid_fitted_class_weights"] = {k: dict(zip(names, w.round(4).tolist())) for k, w in weights.items()}
    for stage, key in (("val", "valid"), ("test", "test")):
        out = outputs[stage]
        last = out["last"] + 1
        markov = action_markov(now, nxt, last, n_events)
        models = {
            "model": out["probs"],
            "model_prior_corrected": prior_corrected(out["probs"], prior),
            "majority_class": majority_class(nxt, n_events, len(last)),
            "repeat_last_action": repeat_last(last, n_events),
            "action_markov": markov,
            "action_markov_prior_corrected": prior_corrected(markov, prior),
            "model_valid_weighted": reweighted(out["probs"], weights["model"]),
            "action_markov_valid_weighted": reweighted(markov, weights["action_markov"]),
        }
        section = {"next_action": {k: next_action_metrics(p, out["targets"], names) for k, p in models.items()}}
        if "purchase_prob" in out:
            labels = out["purchase_label"]
            t_last, t_label = train_purchase
            base_rate = np.full(len(labels), t_label.mean())
            section["purchase"] = {
                "model": purchase_metrics(out["purchase_prob"], labels),
                "base_rate": purchase_metrics(base_rate, labels),
                "rate_given_last_action": purchase_metrics(
                    purchase_rate_by_last_action(t_last, t_label, last, n_events), labels
                ),
            }
        report[key] = section
    return report


def _training_purchase_labels(dm: SeqDataModule) -> tuple[np.ndarray, np.ndarray]:
    """(action, purchase label) of every labelled training position (via the training collate)."""
    held = dm.split.train
    width = int((held.end - held.start).max()) + 1  # whole histories, not the model's window
    batch = collate_train(dm.sequences.items, held, np.arange(len(held)), width, tracks=dm.tracks)
    labels = batch["purchase"].numpy()
    keep = labels != NO_LABEL
    return batch["events"].numpy()[keep], labels[keep]
