"""Serving the model zoo: action inputs, item attributes and the next-action / purchase
heads checked against the training side; BERT4Rec's [MASK] against the training collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.inference import OnnxRecommender, Recommender, load_artifact
from recsys.inference.onnx_export import export_onnx


@pytest.fixture(scope="module")
def zoo(zoo_run, tmp_path_factory):
    from recsys.cli import main

    out = tmp_path_factory.mktemp("zoo-export") / "artifact"
    assert main(["export", str(zoo_run), "--out", str(out)]) == 0
    return zoo_run, out


def _training_module(run_dir):
    """The run's SeqRecModule (encoder + heads) with its best weights, built as training builds it."""
    from recsys.config import ExperimentConfig
    from recsys.data.sequences import EventVocab
    from recsys.data.vocab import Vocab
    from recsys.training.build import build_datamodule, build_module

    cfg = ExperimentConfig.from_yaml(run_dir / "config.yaml")
    dm = build_datamodule(cfg, Vocab.load(run_dir / "vocab.json"), EventVocab.load(run_dir / "events.json"))
    module = build_module(cfg, dm)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    return module.eval()


def test_actions_attributes_and_heads_match_the_training_side(zoo):
    run, out = zoo
    art = load_artifact(out)
    assert art.model.name == "sasrec" and art.mask_token is None
    assert art.actions.names == ("buy", "cart", "view") and art.actions.reads and art.actions.purchase_horizon == 2
    assert "attr_ids" in art.state_dict
    rec = Recommender.load(out)
    module = _training_module(run)
    vocab, names = rec.vocab, rec.action_types
    # Histories of max_len = 6 items, so both sides see the same unpadded (2, 6) input.
    histories = [["item03", "item04", "item05", "item06", "item07", "item08"],
                 ["item10", "item11", "item12", "item13", "item14", "item15"]]
    actions = [["view", "cart", "buy", "view", "view", "cart"], ["view", "view", "view", "cart", "buy", "buy"]]
    inputs = torch.tensor([list(vocab.encode(h)) for h in histories])
    events = torch.tensor([[names.index(a) + 1 for a in row] for row in actions])
    with torch.no_grad():
        state = module.encoder(inputs, events)[:, -1]
        expected = module.score(inputs, events)  # (B, V + 1)
        action_logits, purchase_logits = module.heads(state)
    out_all = rec.recommend(histories, k=vocab.n_items, actions=actions)
    for row in range(2):
        tokens = torch.from_numpy(vocab.encode(out_all.items[row]))
        torch.testing.assert_close(torch.from_numpy(out_all.scores[row]), expected[row, tokens], rtol=0, atol=1e-6)
        nxt = rec.next_action(histories[row], actions[row])
        probs = action_logits[row].softmax(-1).tolist()
        assert nxt.probabilities == pytest.approx(dict(zip(names, probs)), abs=1e-6)
        assert nxt.purchase_probability == pytest.approx(float(purchase_logits[row].sigmoid()), abs=1e-6)
        assert nxt.purchase_event == "buy" and nxt.purchase_horizon == 2
    # Actions follow their items: an ignored unknown item takes its action with it.
    noisy = rec.recommend([["ghost"] + histories[0]], k=5, actions=[["buy"] + actions[0]])
    assert noisy.items[0] == out_all.items[0][:5] and noisy.n_unknown == [1]


def test_action_inputs_are_required_checked_and_refused_where_meaningless(zoo, small_artifact):
    _, out = zoo
    rec = Recommender.load(out)
    with pytest.raises(ValueError, match="reads the action type"):
        rec.recommend([["item01"]])
    with pytest.raises(ValueError, match="1 entries for a history of 2"):
        rec.recommend([["item01", "item02"]], actions=[["view"]])
    with pytest.raises(ValueError, match="unknown action type 'click'"):
        rec.recommend([["item01"]], actions=[["click"]])
    with pytest.raises(ValueError, match="does not read action types"):
        Recommender.load(small_artifact).recommend([["i1"]], actions=[["view"]])
    with pytest.raises(ValueError, match="action types"):  # the ONNX graph takes items only
        export_onnx(load_artifact(out), out.parent / "model.onnx")
    assert not (out.parent / "model.onnx").exists()


def test_bert4rec_onnx_graph_gets_the_mask_from_python(tmp_path):
    """OnnxRecommender appends [MASK] as Recommender does (random BERT4Rec, item-only)."""
    from recsys.config import ModelConfig
    from recsys.inference import random_artifact, save_artifact

    pytest.importorskip("onnxruntime")
    art = random_artifact(25, ModelConfig(name="bert4rec", dim=16, n_blocks=1, n_heads=1, max_len=6), seed=3)
    path = save_artifact(art, tmp_path / "b4r", onnx_k=10)
    rng = np.random.default_rng(0)
    histories = [[f"i{j}" for j in rng.integers(0, 25, n)] for n in (1, 4, 5, 9)]
    a = Recommender.load(path).recommend(histories, k=10)
    b = OnnxRecommender.load(path, num_threads=1).recommend(histories, k=10)
    assert a.items == b.items
    for x, y in zip(a.scores, b.scores):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-4)


def test_bert4rec_inputs_are_the_training_collate_s(tmp_path):
    """The [MASK] column and window of BERT4Rec inputs are exactly what evaluation feeds it."""
    from recsys.config import ModelConfig
    from recsys.data.collate import collate_eval
    from recsys.data.splits import HeldOut
    from recsys.inference import random_artifact
    from recsys.inference.inputs import encode_batch

    art = random_artifact(25, ModelConfig(name="bert4rec", dim=16, n_blocks=1, n_heads=1, max_len=6))
    vocab = art.vocab
    histories = [[f"i{j}" for j in range(n)] for n in (9, 5, 2)]
    items = np.concatenate([np.append(vocab.encode(h), 1) for h in histories])  # each history + a target
    lengths = np.array([len(h) + 1 for h in histories])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    held = HeldOut(np.arange(3), start, start + lengths - 1)
    expected = collate_eval(items, held, np.arange(3), 6, mask_token=vocab.mask_id)["inputs"].numpy()
    got = encode_batch(vocab, histories, 6, "ignore", mask_token=art.mask_token).inputs
    np.testing.assert_array_equal(got, expected)
    # and the user state is read at the [MASK]: recommend equals score_items at the last column
    rec = Recommender(art)
    from recsys.nn.heads import score_items

    with torch.no_grad():
        enc = art.build_encoder()
        # The full forward's last column, an independent path from the recommender's last_state.
        scores = score_items(enc(torch.from_numpy(expected))[:, -1], enc.item_weights())
    out = rec.recommend(histories, k=25)
    for row in range(3):
        np.testing.assert_allclose(out.scores[row], scores[row, vocab.encode(out.items[row])].numpy(), atol=1e-6)
