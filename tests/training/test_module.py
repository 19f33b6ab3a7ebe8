import torch

from recsys.nn.encoder import SASRecEncoder
from recsys.nn.heads import ActionHeads
from recsys.nn.losses import LOSSES, action_ce, bce, gbce, sampled_softmax
from recsys.training.module import SeqRecModule
from recsys.training.negatives import NegativeSampler

INPUTS = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
TARGETS = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])


def _module(loss, sampler="uniform", **kw):
    torch.manual_seed(0)
    enc = SASRecEncoder(9, 8, 1, 1, 4, 0.0)
    return SeqRecModule(enc, loss=loss, sampler=NegativeSampler(sampler, 9, seed=5), n_negatives=6, **kw)


def test_module_draws_negatives_from_its_seeded_sampler_and_calls_the_pure_loss():
    for name, fn, shape, extra in (
        ("sampled", sampled_softmax, (6,), "log_q"),
        ("gbce", gbce, (6,), None),
        ("bce", bce, (2, 4, 1), None),
    ):
        m = _module(name, loss_options={"t": 0.5} if name == "gbce" else None)
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
    with_heads = SeqRecModule(enc, heads=ActionHeads(8, 3, purchase=True), event_names=("a", "b", "c"))
    assert {k for k in with_heads.state_dict() if k.startswith("heads.")} == {
        "heads.action.weight", "heads.action.bias", "heads.purchase.weight", "heads.purchase.bias"}
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
