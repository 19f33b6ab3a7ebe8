"""Config -> datamodule and module, for neural models and baselines alike.

``run.fit`` / ``run.evaluate`` call these so that a run directory is written the same way
whatever the model: the registries (``recsys.nn.encoder.ENCODERS``, ``LOSSES``,
``recsys.baselines.registry.BASELINES``) decide what is built, not if-chains here.
"""

from __future__ import annotations

import numpy as np
import torch

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
from recsys.baselines.base import TrainingEvents
from recsys.baselines.registry import BASELINES, build_baseline
from recsys.config import ExperimentConfig
from recsys.data.collate import collate_train
from recsys.data.datamodule import SeqDataModule
from recsys.data.sequences import EventVocab
from recsys.data.vocab import Vocab
from recsys.eval.actions import next_action_metrics, purchase_metrics
from recsys.nn.encoder import ENCODERS, build_encoder
from recsys.nn.heads import ActionHeads, event_types
from recsys.nn.losses import LOSSES, NEGATIVES_NONE
from recsys.training.module import BaselineModule, RankingModule, SeqRecModule, TrainSettings
from recsys.training.negatives import NegativeSampler
from recsys.types import NO_LABEL


def is_baseline(cfg: ExperimentConfig) -> bool:
    return cfg.model.name in BASELINES


def build_datamodule(
    cfg: ExperimentConfig, vocab: Vocab | None = None, event_vocab: EventVocab | None = None
) -> SeqDataModule:
    objective = ENCODERS[cfg.model.name].objective if cfg.model.name in ENCODERS else "next"
    return SeqDataModule(
        cfg.data, cfg.model.max_len, cfg.train.batch_size, cfg.eval.batch_size, cfg.seed, vocab=vocab,
        objective=objective, mask_prob=cfg.train.mask_prob, purchase_event=cfg.train.purchase_event,
        purchase_horizon=cfg.train.purchase_horizon, event_vocab=event_vocab,
        time_features=cfg.data.event_col is not None and (cfg.model.time_gaps or cfg.model.action_candidate),
        churn_horizon_s=cfg.train.churn_days * 86400.0,
    ).prepare()


def training_events(dm: SeqDataModule) -> TrainingEvents:
    start, stop = dm.train_ranges()
    seqs = dm.sequences
    return TrainingEvents(seqs.items, start, stop, dm.vocab.n_items, seqs.timestamps if dm.has_timestamps else None)


def encoder_event_types(cfg: ExperimentConfig, n_events: int) -> int:
    """The encoder's action-type count: 0 when it does not read actions, ``n_events``, or
    with ``model.time_gaps`` / ``model.item_relations`` one type per (action, gap bucket,
    item relation) (``recsys.nn.heads.event_tokens``)."""
    if not n_events or not cfg.model.use_actions:
        return 0
    return event_types(n_events, cfg.model.time_gaps, cfg.model.item_relations)


def build_module(cfg: ExperimentConfig, dm: SeqDataModule) -> RankingModule:
    """A fitted ``BaselineModule`` for baseline names, else an untrained ``SeqRecModule``."""
    if is_baseline(cfg):
        baseline = build_baseline(cfg.model).fit(training_events(dm))
        return BaselineModule(baseline, ks=cfg.eval.ks, exclude_seen=cfg.eval.exclude_seen)
    n_items, t = dm.vocab.n_items, cfg.train
    n_events = dm.event_vocab.n_events if dm.tracks is not None else 0
    attributes = dm.item_attributes.per_item if dm.item_attributes is not None else None
    encoder = build_encoder(cfg.model, n_items, n_events=encoder_event_types(cfg, n_events),
                            item_attributes=attributes)
    if encoder.transitions is not None:
        events = training_events(dm)  # the training part of the split only
        encoder.transitions.fit_pattern(events.items, events.start, events.stop)
        head = encoder.transitions
        if head.em_scores:
            scores = ", ".join(f"{k}: {v:.4f}" for k, v in head.em_scores.items())
            print(f"transition head: {head.em_chosen} EM iterations (held-out log-likelihood {scores})")
    sampler = None
    if LOSSES[t.loss].negatives != NEGATIVES_NONE:
        counts = torch.from_numpy(dm.train_item_counts()) if t.sampler == "popularity" else None
        sampler = NegativeSampler(t.sampler, n_items, seed=cfg.seed, item_counts=counts)
    heads = ActionHeads(cfg.model.dim, n_events, purchase=t.purchase_horizon > 0, candidate=cfg.model.action_candidate,
                        churn=t.churn_days > 0, dropout=cfg.model.head_dropout) if n_events else None
    settings = TrainSettings.from_config(cfg, event_names=dm.event_vocab.names if n_events else ())
    return SeqRecModule(encoder, settings, sampler=sampler, heads=heads)


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
