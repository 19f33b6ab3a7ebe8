"""Config -> datamodule and module, for neural models and baselines alike.

``run.fit`` / ``run.evaluate`` call these so that a run directory is written the same way
whatever the model: the registries (``recsys.nn.encoder.ENCODERS``, ``LOSSES``,
``recsys.baselines.registry.BASELINES``) decide what is built, not if-chains here.
"""

from __future__ import annotations

import torch

from recsys.baselines.base import TrainingEvents
from recsys.baselines.registry import BASELINES, build_baseline
from recsys.config import ExperimentConfig
from recsys.data.datamodule import SeqDataModule
from recsys.data.sequences import EventVocab
from recsys.data.vocab import Vocab
from recsys.nn.encoder import ENCODERS, build_encoder
from recsys.nn.heads import ActionHeads, event_types, summary_size
from recsys.nn.losses import LOSSES, NEGATIVES_NONE
from recsys.training.module import BaselineModule, RankingModule, SeqRecModule, TrainSettings
from recsys.training.negatives import NegativeSampler


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
                        churn=t.churn_days > 0, dropout=cfg.model.head_dropout,
                        summary=summary_size(n_events) if cfg.model.history_summary else 0) if n_events else None
    settings = TrainSettings.from_config(cfg, event_names=dm.event_vocab.names if n_events else ())
    return SeqRecModule(encoder, settings, sampler=sampler, heads=heads)
