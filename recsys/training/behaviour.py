"""The behaviour report of a run: next action, purchase within k and churn on the held-out
tail (protocol: ``recsys.data.behaviour``), for the model and the simple baselines, with
user-bootstrap intervals (``recsys.eval.behaviour``).

It runs for logs with action types split in time (``data.event_col`` set, ``data.split:
temporal``): the window's cuts are the split's (``t_valid``, ``t_test``) and its end the
log's last timestamp. Every predictor is fitted on the training period (events at or
before ``t_valid``) and scored at the same moments:

- next action, from the history alone: ``majority_class`` (training distribution),
  ``repeat_last_action`` (probability 1 on the last action), ``action_markov`` (P(next |
  last) from training pairs, add-one), ``logistic`` / ``gbm`` (``recsys.baselines.behaviour``),
  ``model`` (the next-action head);
- purchase within k: ``base_rate``, ``rate_given_last_action``, ``logistic``, ``gbm``,
  ``model`` (the purchase head);

``metrics.json`` keeps the report under ``behaviour``; ``benchmarks/next_action.py`` renders it.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.baselines.actions import action_markov, action_pairs, majority_class, purchase_rate_by_last_action, repeat_last
from recsys.baselines.behaviour import EventLog, FeatureModel, history_features
from recsys.config import ExperimentConfig
from recsys.data.behaviour import Moments, Window, tail_moments
from recsys.data.collate import gather_windows
from recsys.data.datamodule import SeqDataModule
from recsys.data.splits import cut_time
from recsys.eval.behaviour import binary_report, next_action_report, paired_log_loss_difference, per_moment_nll
from recsys.types import NO_LABEL, PAD_ID

N_RESAMPLES = 1000  # user-bootstrap resamples of the test intervals
BATCH = 512  # moments per model forward


def applies(cfg: ExperimentConfig) -> bool:
    """True when the run gets a behaviour report: action types and a time split."""
    return cfg.data.event_col is not None and cfg.data.split == "temporal"


def window(cfg: ExperimentConfig, dm: SeqDataModule) -> Window:
    ts = dm.sequences.timestamps
    return Window(cut_time(ts, cfg.data.split_valid_quantile), cut_time(ts, cfg.data.split_quantile), int(ts.max()))


@torch.no_grad()
def model_outputs(module, dm: SeqDataModule, pos: np.ndarray, start: np.ndarray) -> dict[str, np.ndarray]:
    """The heads' outputs right after events ``pos`` (inputs: the last ``max_len`` events of
    ``[start, pos]``), in moment order: ``action`` (M, E) probabilities, ``purchase`` (M,)."""
    seqs, encoder, heads = dm.sequences, module.encoder, module.heads
    was_training = module.training
    module.eval()
    order = np.argsort(np.minimum(pos - start + 1, dm.max_len), kind="stable")  # similar lengths together
    out: dict[str, list] = {"action": [], "purchase": []}
    for lo in range(0, len(order), BATCH):
        rows = order[lo : lo + BATCH]
        inputs = torch.from_numpy(gather_windows(seqs.items, start[rows], pos[rows] + 1, dm.max_len))
        events = torch.from_numpy(gather_windows(seqs.events, start[rows], pos[rows] + 1, dm.max_len))
        state = encoder.last_state(inputs, events if encoder.event_emb is not None else None)  # (B, D)
        action, purchase = heads(state)
        out["action"].append(action.softmax(dim=-1).double().numpy())
        if purchase is not None:
            out["purchase"].append(purchase.sigmoid().double().numpy())
    module.train(was_training)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return {k: np.concatenate(v)[back] for k, v in out.items() if v}


def _training_moments(dm: SeqDataModule, w: Window) -> Moments:
    """Moments of the training period: labels read no event after ``t_valid``."""
    ts = dm.sequences.timestamps
    purchase_id = dm.event_vocab.id(dm.purchase_event) if dm.purchase_horizon > 0 else None
    return tail_moments(dm.sequences, int(ts.min()) - 1, w.t_valid, purchase_id, dm.purchase_horizon)


def behaviour_report(module, dm: SeqDataModule, cfg: ExperimentConfig, n_resamples: int = N_RESAMPLES) -> dict:
    """The report (module docstring); validation figures without intervals."""
    seqs, names = dm.sequences, dm.event_vocab.names
    E = len(names)
    w = window(cfg, dm)
    purchase_id = dm.event_vocab.id(dm.purchase_event) if dm.purchase_horizon > 0 else None
    ids = {n: i + 1 for i, n in enumerate(names)}
    log = EventLog(seqs.items, seqs.events, seqs.timestamps, seqs.offsets, E, ids.get("cart"), purchase_id or ids.get("buy"))

    train = _training_moments(dm, w)
    labelled = train.next_action != PAD_ID
    now, nxt = action_pairs(seqs.events, *dm.train_ranges())
    features = history_features(log, train.pos[labelled])
    action_models = {kind: FeatureModel(kind, E, seed=cfg.seed).fit(features, train.next_action[labelled] - 1)
                     for kind in ("logistic", "gbm")}
    purchase_models = {}
    if purchase_id is not None:
        has = train.purchase != NO_LABEL
        p_features = history_features(log, train.pos[has])
        purchase_models = {kind: FeatureModel(kind, 2, seed=cfg.seed).fit(p_features, train.purchase[has])
                           for kind in ("logistic", "gbm")}
        train_rate = float(train.purchase[has].mean())
        rate_last, rate_label = seqs.events[train.pos[has]], train.purchase[has]

    report: dict = {
        "window": {"t_valid": w.t_valid, "t_test": w.t_test, "t_end": w.t_end},
        "actions": list(names),
        "purchase_horizon": dm.purchase_horizon,
        "purchase_event": dm.purchase_event if purchase_id is not None else None,
        "train_moments": int(labelled.sum()),
    }
    for stage in ("valid", "test"):
        lo, hi = w.bounds(stage)
        m = tail_moments(seqs, lo, hi, purchase_id, dm.purchase_horizon)
        resamples = n_resamples if stage == "test" else 0
        outputs = model_outputs(module, dm, m.pos, m.start) if getattr(module, "heads", None) is not None else {}
        section: dict = {"moments": len(m)}
        # next action from the history alone
        keep = m.next_action != PAD_ID
        pos, last, target, users = m.pos[keep], seqs.events[m.pos[keep]], m.next_action[keep] - 1, m.user[keep]
        feats = history_features(log, pos)
        preds = {
            "majority_class": majority_class(nxt, E, len(pos)),
            "repeat_last_action": repeat_last(last, E),
            "action_markov": action_markov(now, nxt, last, E),
            **{kind: model.predict_proba(feats) for kind, model in action_models.items()},
        }
        if "action" in outputs:
            preds["model"] = outputs["action"][keep]
        section["next_action"] = {k: next_action_report(p, target, users, names, resamples, cfg.seed)
                                  for k, p in preds.items()}
        if resamples and "model" in preds:
            nll = {k: per_moment_nll(p, target) for k, p in preds.items()}
            section["next_action_paired"] = {
                f"model - {k}": paired_log_loss_difference(nll["model"], nll[k], users, resamples, cfg.seed)
                for k in preds if k != "model"}
        if purchase_id is not None:
            has = m.purchase != NO_LABEL
            labels, users_p = m.purchase[has], m.user[has]
            p_feats = history_features(log, m.pos[has])
            p_preds = {
                "base_rate": np.full(len(labels), train_rate),
                "rate_given_last_action": purchase_rate_by_last_action(rate_last, rate_label, seqs.events[m.pos[has]], E),
                **{kind: model.predict_proba(p_feats)[:, 1] for kind, model in purchase_models.items()},
            }
            if "purchase" in outputs:
                p_preds["model"] = outputs["purchase"][has]
            section["purchase"] = {k: binary_report(p, labels, users_p, resamples, cfg.seed)
                                   for k, p in p_preds.items()}
        report[stage] = section
    return report
