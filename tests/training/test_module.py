import torch

from recsys.nn.encoder import SASRecEncoder
from recsys.nn.heads import ActionHeads
from recsys.nn.losses import LOSSES, action_ce, bce, gbce, sampled_softmax
from recsys.training.module import SeqRecModule, TrainSettings
from recsys.training.negatives import NegativeSampler

INPUTS = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
TARGETS = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])


def _module(loss, sampler="uniform", **kw):
    torch.manual_seed(0)
    enc = SASRecEncoder(9, 8, 1, 1, 4, 0.0)
    return SeqRecModule(enc, TrainSettings(loss=loss, n_negatives=6, **kw), sampler=NegativeSampler(sampler, 9, seed=5))


def test_module_draws_negatives_from_its_seeded_sampler_and_calls_the_pure_loss():
    for name, fn, shape, extra in (
        ("sampled", sampled_softmax, (6,), "log_q"),
        ("gbce", gbce, (6,), None),
        ("bce", bce, (2, 4, 1), None),
    ):
        m = _module(name, loss_options={"t": 0.5} if name == "gbce" else {})
        hidden = m.encoder(INPUTS)
        got = m._item_loss(hidden, TARGETS)
        negatives, log_q = NegativeSampler("uniform", 9, seed=5)(TARGETS, shape)  # the same draw
        kwargs = {"negatives": negatives, **({"log_q": log_q} if extra else {}), **({"t": 0.5} if name == "gbce" else {})}
        assert torch.allclose(got, fn(hidden, m.encoder.item_weights(), TARGETS, **kwargs)), name
        assert not torch.allclose(m._item_loss(hidden, TARGETS), got)  # the next batch draws new negatives


def test_per_position_negatives_are_drawn_for_every_position():
    for name in ("sampled", "gbce"):
        m = _module(name, negatives_per="position")
        hidden = m.encoder(INPUTS)
        got = m._item_loss(hidden, TARGETS)
        negatives, log_q = NegativeSampler("uniform", 9, seed=5)(TARGETS, (2, 4, 6))  # (B, L, K)
        kwargs = {"log_q": log_q} if name == "sampled" else {}
        want = LOSSES[name].fn(hidden, m.encoder.item_weights(), TARGETS, negatives=negatives, **kwargs)
        assert torch.allclose(got, want), name
        shared = _module(name)._item_loss(hidden, TARGETS)  # same generator state, (K,) draw
        assert not torch.allclose(got, shared), name


def test_logq_correction_can_be_switched_off():
    on, off = _module("sampled"), _module("sampled", logq_correction=False)
    hidden = on.encoder(INPUTS)
    negatives, _ = NegativeSampler("uniform", 9, seed=5)(TARGETS, (6,))
    assert torch.allclose(off._item_loss(hidden, TARGETS), sampled_softmax(hidden, on.encoder.item_weights(), TARGETS, negatives))
    assert not torch.allclose(on._item_loss(hidden, TARGETS), off._item_loss(hidden, TARGETS))


def test_state_dict_has_heads_only_with_actions():
    plain = _module("ce")
    assert all(k.startswith("encoder.") for k in plain.state_dict())
    torch.manual_seed(0)
    enc = SASRecEncoder(9, 8, 1, 1, 4, 0.0, n_events=3)
    with_heads = SeqRecModule(enc, TrainSettings(event_names=("a", "b", "c")), heads=ActionHeads(8, 3, purchase=True))
    assert {k for k in with_heads.state_dict() if k.startswith("heads.")} == {
        "heads.action.weight", "heads.action.bias", "heads.purchase.weight", "heads.purchase.bias",
        "heads.log_temperature"}
    logits, _ = with_heads.heads(enc(INPUTS, torch.ones_like(INPUTS)))
    assert action_ce(logits, torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])) > 0


def test_every_registered_loss_builds():
    for name in LOSSES:
        assert _module(name).loss_spec is LOSSES[name]


def test_validation_history_survives_the_resume_checkpoint(tmp_path):
    m = _module("ce")
    m.val_history = [(0, {"ndcg@10": 0.3}), (1, {"ndcg@10": 0.5}), (2, {"ndcg@10": 0.4})]
    checkpoint = {}
    m.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "c.ckpt")
    resumed = _module("ce")
    assert resumed.val_history == []
    resumed.on_load_checkpoint(torch.load(tmp_path / "c.ckpt", weights_only=True))  # plain data only
    assert resumed.val_history == m.val_history  # so the best epoch stays 1 after a resume at epoch 2


def test_step_loss_is_the_weighted_sum_of_the_pure_losses():
    """``step_loss`` (what benchmarks/speed.py times) is the item loss plus the weighted
    action and purchase losses, each computed here by hand from the encoder's outputs."""
    from recsys.nn.losses import full_ce, purchase_bce

    torch.manual_seed(0)
    enc = SASRecEncoder(9, 8, 1, 1, 4, 0.0, n_events=3)
    m = SeqRecModule(enc, TrainSettings(loss="ce", action_loss_weight=0.3, purchase_loss_weight=0.7),
                     heads=ActionHeads(8, 3, purchase=True))
    events = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 2]])
    batch = {"inputs": INPUTS, "targets": TARGETS, "events": events,
             "next_events": torch.tensor([[0, 2, 3, 1], [1, 2, 2, 3]]),
             "purchase": torch.tensor([[-1.0, 0.0, 1.0, 0.0], [1.0, 0.0, -1.0, 1.0]])}
    hidden = enc(INPUTS, events)
    action_logits, purchase_logits = m.heads(hidden)
    want = {"item": full_ce(hidden, enc.item_weights(), TARGETS),
            "action": action_ce(action_logits, batch["next_events"]),
            "purchase": purchase_bce(purchase_logits, batch["purchase"])}
    terms = m.loss_terms(batch)
    assert terms.keys() == want.keys()
    for name in want:
        assert torch.allclose(terms[name], want[name]), name
    total = want["item"] + 0.3 * want["action"] + 0.7 * want["purchase"]
    assert torch.allclose(m.step_loss(batch), total)
    assert torch.allclose(m.total_loss(terms, (2.0, 0.5, 0.0)), 2.0 * want["item"] + 0.15 * want["action"])


def test_rank_is_the_recorded_evaluation_and_keeps_nothing():
    from recsys.eval.ranking import mask_seen, target_ranks

    m = _module("ce", exclude_seen=True).eval()
    batch = {"inputs": INPUTS, "targets": torch.tensor([3, 9]), "users": torch.tensor([1, 0]),
             "seen_rows": torch.tensor([0, 0, 1]), "seen_items": torch.tensor([1, 3, 9])}
    with torch.no_grad():
        ranks = m.rank(batch)
        want = target_ranks(mask_seen(m.score(INPUTS), batch["seen_rows"], batch["seen_items"]), batch["targets"])
    assert torch.equal(ranks, want) and ranks.tolist() == [9, 9]  # both targets seen: ranked last of 9 items
    assert m._ranks == [] and m._users == []
    m.validation_step(batch, 0)
    assert torch.equal(m._ranks[0], ranks) and torch.equal(m._users[0], batch["users"])


def test_settings_take_every_value_from_the_config():
    """``TrainSettings.from_config`` relays each field from the config: a config whose values
    all differ from the settings' own defaults gives settings equal to those values."""
    import dataclasses

    from recsys.config import ExperimentConfig

    cfg = ExperimentConfig().with_overrides([
        "train.loss=gbce", "train.lr=0.005", "train.weight_decay=0.1", "train.n_negatives=17",
        "train.negatives_per=position", "train.logq_correction=false", "train.action_loss_weight=0.25",
        "train.purchase_loss_weight=0.75", "train.length_groups=3", "train.encoder_precision=bf16",
        "train.gbce_t=0.5", "eval.ks=[2,7]", "eval.monitor=ndcg@7", "eval.exclude_seen=true",
        "data.event_col=behavior", "model.time_gaps=true", "model.item_relations=true",
        "model.history_summary=true", "train.churn_loss_weight=0.3",
        "train.head_weight_decay=0.01", "train.item_loss_weight=0.5"])
    s = TrainSettings.from_config(cfg, event_names=["view", "buy", "cart"])
    defaults = TrainSettings()
    for f in dataclasses.fields(TrainSettings):
        assert getattr(s, f.name) != getattr(defaults, f.name), f.name  # the config's value reached it
    assert (s.loss, s.lr, s.n_negatives, s.negatives_per, s.length_groups, s.ks) == (
        "gbce", 0.005, 17, "position", 3, (2, 7))
    assert s.loss_options == {"t": 0.5, "prior_offset": cfg.train.prior_offset}
    assert s.event_names == ("view", "buy", "cart") and s.relation_ids == (3, 2)
