"""benchmarks/peers: the split handed to the peers is recsys's, their scores are ranked as ours,
and the report's target, time to target and ratios are right on hand-made curves.

Nothing here needs the peers' environment (benchmarks/peers/.venv), the network, or a timing.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import common  # noqa: E402
import report  # noqa: E402

from recsys.config import ExperimentConfig  # noqa: E402
from recsys.data.collate import collate_eval  # noqa: E402
from recsys.eval.ranking import mask_seen, target_ranks  # noqa: E402
from recsys.training.build import build_datamodule  # noqa: E402

# Rows out of time order on purpose: the split must follow the timestamps. Users are numbered
# by first appearance (u0, u1, u2), items by first appearance in that order.
LOG = """user_id,item_id,timestamp
u0,b,2
u0,a,1
u1,c,1
u2,e,1
u2,d,2
u0,c,3
u2,c,3
u0,d,4
u1,a,2
u2,b,4
u0,e,5
u1,b,3
u2,a,5
u2,f,6
"""
# First appearance in the canonical order (u0's events first): a=1 b=2 c=3 d=4 e=5 f=6.
TRAIN = {0: [1, 2, 3], 1: [3], 2: [5, 4, 3, 2]}
VALID = [4, 1, 1]
TEST = [5, 2, 6]


@pytest.fixture()
def split(tmp_path):
    (tmp_path / "events.csv").write_text(LOG)
    (tmp_path / "c.yaml").write_text(f"""
name: tiny
seed: 42
data: {{name: tiny, format: csv, path: {tmp_path / 'events.csv'}, user_col: user_id, item_id: item_id,
        time_col: timestamp}}
model: {{dim: 8, n_blocks: 1, n_heads: 1, max_len: 3, dropout: 0.0}}
eval: {{exclude_seen: true}}
""".replace("item_id: item_id", "item_col: item_id"))
    dm = build_datamodule(ExperimentConfig.from_yaml(tmp_path / "c.yaml"))
    return dm, common.prepared_from_split(dm.split, dm.vocab.n_items)


def test_prepared_split_is_recsys_leave_one_out(split, tmp_path):
    dm, p = split
    assert dm.vocab.items == ("a", "b", "c", "d", "e", "f") and p.n_items == 6 and p.n_users == 3
    for u, items in TRAIN.items():
        assert p.train_items[p.train_offsets[u]:p.train_offsets[u + 1]].tolist() == items
    assert p.valid_target.tolist() == VALID and p.test_target.tolist() == TEST
    offsets, items = p.history("test")  # training events, then the validation target
    assert [items[offsets[u]:offsets[u + 1]].tolist() for u in range(3)] == [[1, 2, 3, 4], [3, 1], [5, 4, 3, 2, 1]]
    common.save_prepared(p, tmp_path)
    q = common.load_prepared(tmp_path)
    assert q.n_items == 6 and all(np.array_equal(getattr(p, k), getattr(q, k)) for k in
                                  ("train_offsets", "train_items", "valid_target", "test_target"))


def test_peer_files_hold_the_same_split(split, tmp_path):
    _, p = split
    paths = common.write_peer_files(p, tmp_path)
    rows = np.loadtxt(paths["rectools"], delimiter=",", skiprows=1, dtype=np.int64)  # user, item, weight, datetime
    for u, items in TRAIN.items():
        mine = rows[rows[:, 0] == u]
        assert mine[np.argsort(mine[:, 3]), 1].tolist() == items and (mine[:, 2] == 1).all()
    events = np.loadtxt(paths["recbole"], delimiter="\t", skiprows=1, dtype=np.int64)  # user, item, position
    for u, items in TRAIN.items():
        mine = events[events[:, 0] == u]
        seq = mine[np.argsort(mine[:, 2]), 1].tolist()
        assert seq == items + [VALID[u], TEST[u]]  # RecBole's LS split: second last = valid, last = test


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_evaluator_ranks_as_our_validation_and_test(split, stage):
    dm, p = split
    held = {"valid": dm.split.valid, "test": dm.split.test}[stage]
    batch = collate_eval(dm.sequences.items, held, np.arange(3), 3)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (3, 7), generator=gen).float()  # many ties: pessimistic ranks matter
    expected = target_ranks(mask_seen(scores, batch["seen_rows"], batch["seen_items"]), batch["targets"])
    ev = common.Evaluator(p, stage)
    ev.add(np.array([2, 0]), scores[[2, 0]])  # any order, any blocks
    with pytest.raises(ValueError, match="not scored"):
        ev.result()
    ev.add(np.array([1]), scores[[1]])
    assert torch.equal(ev.result(), expected)
    with pytest.raises(ValueError, match="twice"):
        ev.add(np.array([1]), scores[[1]])


def test_evaluator_ranks_an_unscorable_target_last(split):
    _, p = split
    scores = torch.zeros(3, 7)
    scores[:, 6] = float("-inf")  # item f: a peer that never trained on it cannot score it
    ev = common.Evaluator(p, "test")
    ev.add(np.arange(3), scores)
    # user 0: seen a-d removed, e (target) the only item left above f -> 1
    # user 1: seen c, a removed; b (target), d, e tie at 0 -> pessimistic 3
    # user 2: f (target) is unscorable and a-e are seen: everything ties at -inf -> last, 6
    assert ev.result().tolist() == [1, 3, 6]


def test_input_windows_are_left_padded_recent_and_mapped(split):
    _, p = split
    offsets, items = p.history("test")
    to_peer = np.array([0, 11, 12, 13, 14, 0, 16])  # item e unknown to the peer: dropped, not padded
    x = common.input_windows(offsets, items, np.array([0, 1, 2]), 3, to_peer)
    assert x.tolist() == [[12, 13, 14], [0, 13, 11], [13, 12, 11]]


def _record(train_s, val, partial=None, **extra):
    epochs = [{"epoch": i + 1, "train_s": t, "val_s": 1.0, "val_ndcg10": v} for i, (t, v) in enumerate(zip(train_s, val))]
    return {"epochs": epochs, "partial_epoch": partial, "prepare_s": 2.0, "peak_rss_gb": 1.5, "test_ndcg10": 0.04,
            "stopped": "patience", **extra}


def test_target_time_to_target_and_ratios_on_hand_made_curves():
    records = {
        "ours": _record([10, 12, 11], [0.01, 0.03, 0.05]),
        "rectools": _record([20, 20], [0.02, 0.04], peak_rss_gb=3.0),
        "recbole": _record([], [], partial={"train_s": 100.0, "val_s": 5.0, "val_ndcg10": 0.035, "batches_done": 3,
                                            "batches": 10}),
        "broken": {"status": "failed", "error": "ImportError: no"},
    }
    target, source = report.target_ndcg(records, ["rectools", "recbole", "broken"])
    assert (target, source) == (0.035, "recbole")  # the lowest final value among the peers that ran
    assert report.time_to_target(records["ours"], target) == 33  # epoch 3: 10 + 12 + 11
    assert report.time_to_target(records["rectools"], target) == 40
    assert report.time_to_target(records["recbole"], target) == 100  # reached within its partial epoch
    assert report.time_to_target(records["ours"], 0.06) is None
    table = report.compare(records, ["rectools", "recbole", "broken"], target)
    assert "broken" not in table
    assert table["rectools"]["ratios"]["median_epoch_s"] == pytest.approx(20 / 11)
    assert table["rectools"]["ratios"]["time_to_target_s"] == pytest.approx(40 / 33)
    assert table["rectools"]["ratios"]["peak_rss_gb"] == pytest.approx(2.0)
    assert table["recbole"]["values"]["median_epoch_s"] is None and table["recbole"]["ratios"]["median_epoch_s"] is None
    assert table["recbole"]["values"]["eval_s"] == 5.0
    assert table["ours"]["ratios"]["prepare_s"] == 1.0


def test_seen_counts_compare_users_and_the_whole_catalogue():
    ours = {"n_users": 3, "n_train_users": 2, "n_eval_users": 3, "n_items": 6}
    records = {
        "ours": ours,
        "rectools": {**ours, "n_items": 5, "n_items_unscorable": 1},  # one item only a held-out target
        "recbole": {**ours, "n_train_users": 3},
        "failed": {"status": "failed", "error": "x"},
    }
    assert report.seen_counts_match(records) == {"rectools": True, "recbole": False}
    assert report.seen_counts_match({**records, "rectools": {**ours, "n_items": 5}})["rectools"] is False


def test_markdown_says_not_reached_and_partial_epochs():
    records = {
        "ours": _record([10, 10], [0.01, 0.02], loss="ce: full", version="0.1.0", n_users=3, n_train_users=3,
                        n_items=6, n_eval_users=3, n_items_unscorable=0),
        "recbole": _record([], [], partial={"train_s": 100.0, "val_s": 5.0, "val_ndcg10": 0.03, "batches_done": 3,
                                            "batches": 10}, loss="CE: full", version="1.2.1", n_users=3,
                           n_train_users=3, n_items=6, n_eval_users=3, n_items_unscorable=0),
        "rectools": {"status": "failed", "error": "Traceback\nImportError: numpy | boom"},
    }
    result = {"records": records, "peers": ["rectools", "recbole"], "target": 0.03, "target_from": "recbole"}
    text = "\n".join(report.markdown_dataset("tiny", result))
    assert "not reached within budget (2 epochs)" in text
    assert "> 100 s (no epoch completed: 3 of 10 batches)" in text
    assert "failed: ImportError: numpy \\| boom" in text
    assert "| 100.0 s |" in text  # recbole's time to target, no ratio: ours did not reach the target
    assert "| 2.0 s (x1.00) |" in text  # preparation, recbole against ours


def test_issue_bars_on_hand_made_curves():
    records = {
        "ours": _record([2, 2, 2], [0.02, 0.04, 0.06], test_ndcg10=0.05),
        "rectools": _record([10, 10, 10], [0.01, 0.03, 0.05], test_ndcg10=0.045),
        "recbole": _record([], [], partial={"train_s": 90.0, "val_s": 5.0, "val_ndcg10": 0.03, "batches_done": 3,
                                            "batches": 10}),
    }
    rows = {(b["metric"], b["peer"]): b for b in report.bars(records, 0.05)}
    epoch = rows["median_epoch_s", "rectools"]
    assert (epoch["ours"], epoch["peer_value"], epoch["met"]) == (2, 10, True)  # 2 <= 10 / 4, NDCG 0.05 >= 0.045
    assert rows["time_to_target_s", "rectools"]["met"] is True  # 6 s <= 30 s / 4
    # RecBole never reached 0.05: its 90 s are only a lower bound, so 6 s > 90 s / 20 decides nothing
    recbole = rows["time_to_target_s", "recbole"]
    assert recbole["peer_lower_bound"] and recbole["peer_value"] == 90.0 and recbole["met"] is None
    records["ours"] = _record([2, 2, 2], [0.02, 0.04, 0.06], test_ndcg10=0.04)  # faster but worse
    assert {(b["metric"], b["peer"]): b["met"] for b in report.bars(records, 0.05)}["median_epoch_s", "rectools"] is False
    text = "\n".join(report.markdown_bars(records, 0.05))
    assert "| time to target <= 1/20 of RecBole SASRec | 6.0 s | >90.0 s | <0.067 | undecided |" in text
