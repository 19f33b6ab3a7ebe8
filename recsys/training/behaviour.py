"""The behaviour report of a run: next action, purchase within k and churn on the held-out
tail of time (protocol: ``recsys.data.behaviour``), for the model and the simple baselines,
with user-bootstrap intervals (``recsys.eval.behaviour``).

It runs for logs with action types split in time (``data.event_col`` set, ``data.split:
temporal``): the window's cuts are the split's (``t_valid``, ``t_test``) and its end the
log's last timestamp. Every predictor is fitted on the training period (events at or
before ``t_valid``; the feature models on its moments and snapshots, whose labels read
nothing later) and scored at the same moments:

- ``next_action`` (from the history alone): ``majority_class`` (training distribution),
  ``repeat_last_action`` (probability 1 on the last action), ``action_markov`` (P(next |
  last) from training pairs, add-one), ``logistic`` / ``gbm`` (``recsys.baselines.behaviour``),
  ``model`` (the next-action head);
- ``next_action_given`` (also reading the candidate next event, its item and gap):
  ``logistic`` / ``gbm`` with the candidate features, ``model`` (``model.action_candidate``);
- ``purchase`` within k: ``base_rate``, ``rate_given_last_action``, ``logistic``, ``gbm``,
  ``model`` (the purchase head);
- ``churn`` (``train.churn_days`` > 0), at snapshots: ``recency`` (a logistic fit of
  log(1 + time since the last event) alone: it ranks users by recency), ``logistic``,
  ``gbm`` (the features plus the elapsed time), ``model`` (the churn head).

With ``train.calibrate`` each head's temperature is fitted on the validation moments first
(``recsys.nn.heads.fit_temperature``) and the test figures use it; the validation figures
are those of the uncalibrated heads (the data the temperatures were fitted on).
``metrics.json`` keeps the report under ``behaviour``; ``benchmarks/next_action.py`` renders it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from recsys.baselines.actions import action_markov, action_pairs, majority_class, purchase_rate_by_last_action, repeat_last
from recsys.baselines.behaviour import EventLog, FeatureModel, history_features
from recsys.config import ExperimentConfig
from recsys.data.behaviour import Moments, Snapshots, Window, churn_snapshots, gaps, tail_moments
from recsys.data.collate import gather_float_windows, gather_windows
from recsys.data.datamodule import SeqDataModule
from recsys.data.splits import cut_time
from recsys.eval.behaviour import binary_report, next_action_report, paired_log_loss_difference, per_moment_nll
from recsys.nn.heads import candidate_history, event_tokens, fit_temperature, history_summary, item_relations
from recsys.types import NO_LABEL, PAD_ID

N_RESAMPLES = 1000  # user-bootstrap resamples of the test intervals
BATCH = 512  # moments per model forward
FEATURE_KINDS = ("logistic", "gbm")


def applies(cfg: ExperimentConfig) -> bool:
    """True when the run gets a behaviour report: action types and a time split."""
    return cfg.data.event_col is not None and cfg.data.split == "temporal"


def window(cfg: ExperimentConfig, dm: SeqDataModule) -> Window:
    ts = dm.sequences.timestamps
    return Window(cut_time(ts, cfg.data.split_valid_quantile), cut_time(ts, cfg.data.split_quantile), int(ts.max()))


@torch.no_grad()
def model_logits(module, dm: SeqDataModule, pos: np.ndarray, start: np.ndarray,
                 candidate: tuple[np.ndarray, np.ndarray] | None = None,
                 elapsed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The heads' logits right after events ``pos`` (inputs: the last ``max_len`` events of
    ``[start, pos]``), in moment order: ``action`` (M, E), ``purchase`` (M,), with
    ``candidate`` = (next item tokens, gaps) ``candidate`` (M, E), with ``elapsed`` ``churn`` (M,)."""
    seqs, encoder, heads = dm.sequences, module.encoder, module.heads
    settings = module.settings
    gap_of = gaps(seqs).astype(np.float32) if settings.time_gaps else None
    was_training = module.training
    module.eval()
    order = np.argsort(np.minimum(pos - start + 1, dm.max_len), kind="stable")  # similar lengths together
    out: dict[str, list] = {}
    for lo in range(0, len(order), BATCH):
        rows = order[lo : lo + BATCH]
        stop = pos[rows] + 1
        inputs = torch.from_numpy(gather_windows(seqs.items, start[rows], stop, dm.max_len))
        events = torch.from_numpy(gather_windows(seqs.events, start[rows], stop, dm.max_len))
        read = events
        if settings.time_gaps or settings.item_relations:
            g = torch.from_numpy(gather_float_windows(gap_of, start[rows], stop, dm.max_len)) if gap_of is not None else None
            rel = item_relations(inputs, events, *settings.relation_ids) if settings.item_relations else None
            read = event_tokens(events, heads.n_events, g, rel)
        state = encoder.last_state(inputs, read if encoder.event_emb is not None else None)  # (B, D)
        summary = None
        if settings.history_summary:
            g = torch.from_numpy(gather_float_windows(gap_of, start[rows], stop, dm.max_len))
            summary = history_summary(inputs, events, g, heads.n_events, *settings.relation_ids)[:, -1]  # (B, S)
        action, purchase = heads(state, summary)
        parts = {"action": action}
        if purchase is not None:
            parts["purchase"] = purchase
        if candidate is not None and heads.candidate is not None:
            item = torch.from_numpy(candidate[0][rows])
            history = candidate_history(inputs, events, item, heads.n_events)  # (B, E)
            parts["candidate"] = heads.candidate_logits(state, encoder.item_weights()[(item - 1).clamp(min=0)],
                                                        history, torch.from_numpy(candidate[1][rows]), summary)
        if elapsed is not None and heads.churn is not None:
            parts["churn"] = heads.churn_logit(state, torch.from_numpy(elapsed[rows]), summary)
        for k, v in parts.items():
            out.setdefault(k, []).append(v.double().numpy())
    module.train(was_training)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return {k: np.concatenate(v)[back] for k, v in out.items()}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class _Stage:
    """One window's moments, snapshots and model logits."""

    def __init__(self, report: BehaviourReport, lo: int, hi: int) -> None:
        r = report
        self.m = tail_moments(r.seqs, lo, hi, r.purchase_id, r.horizon)
        self.snaps = churn_snapshots(r.seqs, lo, hi, r.churn_s) if r.churn_s > 0 else None
        self.logits: dict[str, np.ndarray] = {}
        if r.module is not None:
            self.logits = stage_logits(r.module, r.dm, self.m, self.snaps)


def stage_logits(module, dm: SeqDataModule, m, snaps) -> dict[str, np.ndarray]:
    """The model's logits on a window: ``action``, ``purchase`` over all moments,
    ``candidate`` over the moments with a next action, ``churn`` over the snapshots."""
    keep = m.next_action != PAD_ID
    logits = model_logits(module, dm, m.pos, m.start, candidate=(m.next_item, m.next_gap.astype(np.float32)))
    if "candidate" in logits:
        logits["candidate"] = logits["candidate"][keep]  # (moments with a next action, E)
    if snaps is not None and len(snaps):
        churn = model_logits(module, dm, snaps.pos, snaps.start, elapsed=snaps.elapsed.astype(np.float32))
        if "churn" in churn:
            logits["churn"] = churn["churn"]
    return logits


MONITOR_MOMENTS = 8000  # the most validation moments BehaviourMonitor scores per epoch


class BehaviourMonitor:
    """``eval.monitor: behaviour_nll``: at each validation, the heads' mean log-loss on the
    moments (and churn snapshots) of the validation window, summed over the heads the model
    has (``tail_<head>_nll`` each): model selection on the protocol's own validation data.
    Above ``MONITOR_MOMENTS`` moments it scores a fixed, seeded subset of users (all their
    moments and snapshots) holding about that many, so an epoch's check stays cheap."""

    def __init__(self, dm: SeqDataModule, cfg: ExperimentConfig, max_moments: int = MONITOR_MOMENTS) -> None:
        w = window(cfg, dm)
        purchase_id = dm.event_vocab.id(dm.purchase_event) if dm.purchase_horizon > 0 else None
        lo, hi = w.bounds("valid")
        self.dm = dm
        m = tail_moments(dm.sequences, lo, hi, purchase_id, dm.purchase_horizon)
        churn_s = cfg.train.churn_days * 86400.0
        snaps = churn_snapshots(dm.sequences, lo, hi, churn_s) if churn_s > 0 else None
        if len(m) > max_moments:  # users in a seeded order until the moments reach the cap
            order = np.random.default_rng(cfg.seed).permutation(dm.sequences.n_users)
            per_user = np.bincount(m.user, minlength=dm.sequences.n_users)[order]
            chosen = np.zeros(dm.sequences.n_users, dtype=bool)
            chosen[order[: int(np.searchsorted(np.cumsum(per_user), max_moments)) + 1]] = True
            m = Moments(*(getattr(m, f.name)[chosen[m.user]] for f in dataclasses.fields(m)))
            if snaps is not None:
                snaps = Snapshots(*(getattr(snaps, f.name)[chosen[snaps.user]] for f in dataclasses.fields(snaps)))
        self.m, self.snaps = m, snaps

    def __call__(self, module) -> dict[str, float]:
        logits, m = stage_logits(module, self.dm, self.m, self.snaps), self.m
        keep = m.next_action != PAD_ID
        target = torch.from_numpy(m.next_action[keep] - 1)
        out = {}
        for head in ("action", "candidate"):
            if head in logits:
                z = torch.from_numpy(logits[head][keep] if head == "action" else logits[head])
                out[f"tail_{head}_nll"] = float(torch.nn.functional.cross_entropy(z, target))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        if "purchase" in logits:
            has = m.purchase != NO_LABEL
            out["tail_purchase_nll"] = float(bce(torch.from_numpy(logits["purchase"][has]),
                                                 torch.from_numpy(m.purchase[has]).double()))
        if "churn" in logits:
            out["tail_churn_nll"] = float(bce(torch.from_numpy(logits["churn"]),
                                              torch.from_numpy(self.snaps.label).double()))
        out["behaviour_nll"] = sum(out.values())
        return out


class BehaviourReport:
    """Fits the baselines on the training period, then scores each window (module docstring)."""

    def __init__(self, module, dm: SeqDataModule, cfg: ExperimentConfig) -> None:
        self.module = module if getattr(module, "heads", None) is not None else None
        self.dm, self.cfg, self.seqs = dm, cfg, dm.sequences
        self.names = dm.event_vocab.names
        self.E = len(self.names)
        self.w = window(cfg, dm)
        self.horizon = dm.purchase_horizon
        self.purchase_id = dm.event_vocab.id(dm.purchase_event) if self.horizon > 0 else None
        self.churn_s = cfg.train.churn_days * 86400.0
        ids = {n: i + 1 for i, n in enumerate(self.names)}
        seqs = self.seqs
        self.log = EventLog(seqs.items, seqs.events, seqs.timestamps, seqs.offsets, self.E, ids.get("cart"),
                            self.purchase_id or ids.get("buy"))
        self._fit_baselines()

    # ---- baselines, on the training period ----------------------------------------------
    def _fit_baselines(self) -> None:
        seqs, seed, ts = self.seqs, self.cfg.seed, self.seqs.timestamps
        train = tail_moments(seqs, int(ts.min()) - 1, self.w.t_valid, self.purchase_id, self.horizon)
        self.now, self.nxt = action_pairs(seqs.events, *self.dm.train_ranges())
        has = train.next_action != PAD_ID
        self.train_moments = int(has.sum())
        target = train.next_action[has] - 1
        x = history_features(self.log, train.pos[has])
        self.action_models = {k: FeatureModel(k, self.E, seed).fit(x, target) for k in FEATURE_KINDS}
        xg = history_features(self.log, train.pos[has], train.next_item[has], train.next_gap[has])
        self.given_models = {k: FeatureModel(k, self.E, seed).fit(xg, target) for k in FEATURE_KINDS}
        if self.purchase_id is not None:
            has = train.purchase != NO_LABEL
            x = history_features(self.log, train.pos[has])
            self.purchase_models = {k: FeatureModel(k, 2, seed).fit(x, train.purchase[has]) for k in FEATURE_KINDS}
            self.train_rate = float(train.purchase[has].mean())
            self.rate_last, self.rate_label = seqs.events[train.pos[has]], train.purchase[has]
        if self.churn_s > 0:
            lo = cut_time(ts, 0.01)  # snapshots from the first percentile of time (outliers before it)
            snaps = churn_snapshots(seqs, lo, self.w.t_valid, self.churn_s)
            self.train_snapshots = len(snaps)
            x = history_features(self.log, snaps.pos, elapsed=snaps.elapsed)
            self.churn_models = {k: FeatureModel(k, 2, seed).fit(x, snaps.label) for k in FEATURE_KINDS}
            self.recency = FeatureModel("logistic", 2, seed).fit(np.log1p(snaps.elapsed)[:, None], snaps.label)

    # ---- one window -------------------------------------------------------------------
    def _predictions(self, st: _Stage) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """task -> (predictor -> probabilities, targets or labels, users)."""
        seqs, m, E, out = self.seqs, st.m, self.E, {}
        keep = m.next_action != PAD_ID
        pos, users, target = m.pos[keep], m.user[keep], m.next_action[keep] - 1
        last = seqs.events[pos]
        x = history_features(self.log, pos)
        preds = {
            "majority_class": majority_class(self.nxt, E, len(pos)),
            "repeat_last_action": repeat_last(last, E),
            "action_markov": action_markov(self.now, self.nxt, last, E),
            **{k: model.predict_proba(x) for k, model in self.action_models.items()},
        }
        if "action" in st.logits:
            preds["model"] = _softmax(st.logits["action"][keep])
        out["next_action"] = (preds, target, users)
        xg = history_features(self.log, pos, m.next_item[keep], m.next_gap[keep])
        preds = {k: model.predict_proba(xg) for k, model in self.given_models.items()}
        if "candidate" in st.logits:
            preds["model"] = _softmax(st.logits["candidate"])
        out["next_action_given"] = (preds, target, users)
        if self.purchase_id is not None:
            has = m.purchase != NO_LABEL
            x = history_features(self.log, m.pos[has])
            preds = {
                "base_rate": np.full(int(has.sum()), self.train_rate),
                "rate_given_last_action": purchase_rate_by_last_action(self.rate_last, self.rate_label,
                                                                       seqs.events[m.pos[has]], E),
                **{k: model.predict_proba(x)[:, 1] for k, model in self.purchase_models.items()},
            }
            if "purchase" in st.logits:
                preds["model"] = _sigmoid(st.logits["purchase"][has])
            out["purchase"] = (preds, m.purchase[has], m.user[has])
        if st.snaps is not None and len(st.snaps):
            s = st.snaps
            x = history_features(self.log, s.pos, elapsed=s.elapsed)
            preds = {"recency": self.recency.predict_proba(np.log1p(s.elapsed)[:, None])[:, 1],
                     **{k: model.predict_proba(x)[:, 1] for k, model in self.churn_models.items()}}
            if "churn" in st.logits:
                preds["model"] = _sigmoid(st.logits["churn"])
            out["churn"] = (preds, s.label, s.user)
        return out

    def _section(self, st: _Stage, resamples: int) -> dict:
        seed = self.cfg.seed
        section: dict = {"moments": len(st.m)}
        if st.snaps is not None:
            section["snapshots"] = len(st.snaps)
        for task, (preds, target, users) in self._predictions(st).items():
            if task.startswith("next_action"):
                section[task] = {k: next_action_report(p, target, users, self.names, resamples, seed)
                                 for k, p in preds.items()}
                if resamples and "model" in preds:
                    nll = {k: per_moment_nll(p, target) for k, p in preds.items()}
                    section[f"{task}_paired"] = {
                        f"model - {k}": paired_log_loss_difference(nll["model"], nll[k], users, resamples, seed)
                        for k in preds if k != "model"}
            else:
                section[task] = {k: binary_report(p, target, users, resamples, seed) for k, p in preds.items()}
        return section

    def calibrate(self, st: _Stage) -> dict[str, float]:
        """Fit each head's temperature on the validation stage's logits and set it."""
        heads, m = self.module.heads, st.m
        keep = m.next_action != PAD_ID
        found: dict[str, float] = {}
        targets = torch.from_numpy(m.next_action[keep] - 1)
        if "action" in st.logits:
            found["action"] = fit_temperature(torch.from_numpy(st.logits["action"][keep]), targets)
        if "candidate" in st.logits:
            found["candidate"] = fit_temperature(torch.from_numpy(st.logits["candidate"]), targets)
        if "purchase" in st.logits:
            has = m.purchase != NO_LABEL
            found["purchase"] = fit_temperature(torch.from_numpy(st.logits["purchase"][has]),
                                                torch.from_numpy(m.purchase[has]), binary=True)
        if "churn" in st.logits:
            found["churn"] = fit_temperature(torch.from_numpy(st.logits["churn"]),
                                             torch.from_numpy(st.snaps.label), binary=True)
        for head, t in found.items():
            heads.set_temperature(head, t)
        return found

    def run(self, n_resamples: int = N_RESAMPLES) -> dict:
        report: dict = {
            "window": {"t_valid": self.w.t_valid, "t_test": self.w.t_test, "t_end": self.w.t_end},
            "actions": list(self.names),
            "purchase_horizon": self.horizon,
            "purchase_event": self.dm.purchase_event if self.purchase_id is not None else None,
            "churn_days": self.cfg.train.churn_days,
            "train_moments": self.train_moments,
        }
        if self.churn_s > 0:
            report["train_snapshots"] = self.train_snapshots
        valid = _Stage(self, *self.w.bounds("valid"))
        report["valid"] = self._section(valid, 0)
        if self.module is not None and self.cfg.train.calibrate:
            report["temperatures"] = self.calibrate(valid)
        test = _Stage(self, *self.w.bounds("test"))
        report["test"] = self._section(test, n_resamples)
        return report


def behaviour_report(module, dm: SeqDataModule, cfg: ExperimentConfig, n_resamples: int = N_RESAMPLES) -> dict:
    """The report (module docstring); validation figures without intervals."""
    return BehaviourReport(module, dm, cfg).run(n_resamples)


def store_temperatures(module, checkpoint) -> None:
    """Write the heads' fitted temperatures into the run's best checkpoint, which the
    artifact is exported from (``recsys.inference.export.read_run``)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["heads.log_temperature"] = module.heads.log_temperature.detach().cpu().clone()
    torch.save(ckpt, checkpoint)
