"""benchmarks/large_catalogue.py at a tiny scale: sizes survive preprocessing, every test user is ranked."""

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_large_catalogue", ROOT / "benchmarks" / "large_catalogue.py")
large = importlib.util.module_from_spec(spec)
sys.modules["bench_large_catalogue"] = large
spec.loader.exec_module(large)


def test_tiny_pipeline_keeps_every_event_and_ranks_every_test_user(tmp_path):
    s = large.Settings(items=300, events=6000, mean_len=20, batch_size=64, max_len=12, dim=16, n_blocks=1,
                       negatives=32, eval_batch_size=50)
    log = tmp_path / "events.parquet"
    gen = large.generate(s, log)
    pipe = large.pipeline(log, s, tmp_path)

    # Counted independently from the file the pipeline read.
    frame = pd.read_parquet(log)
    lengths = frame.groupby("user", sort=False).size()
    assert lengths.min() >= s.min_len == 10 and lengths.max() <= s.max_len_events == 30
    n_users, n_items, n_events = len(lengths), frame["item"].nunique(), len(frame)
    assert n_users == s.users == 300
    assert gen["generated"] == {"users": n_users, "items": n_items, "events": n_events}
    # Every user has >= 3 events and the log has no duplicates to drop: cleaning keeps everything.
    summary = pipe["summary"]
    assert (summary["n_users"], summary["n_items"], summary["n_events"]) == (n_users, n_items, n_events)
    assert summary["dropped_short_users"] == summary["dropped_duplicates"] == summary["dropped_kcore"] == 0
    assert pipe["vocab_items"] == n_items

    # One epoch: every user's newest max_len training targets (its last two events are held out).
    assert pipe["train_users"] == n_users
    assert pipe["train_positions"] == int((lengths - 3).clip(upper=s.max_len).sum())
    assert pipe["steps"] == pipe["steps_per_epoch"] == math.ceil(n_users / s.batch_size) == 5
    assert math.isfinite(pipe["train_loss"])

    # Full-catalogue evaluation of every test user, in blocks smaller than the user count.
    assert pipe["n_eval_users"] == pipe["test_users"] == n_users
    test = pipe["test"]
    assert set(test) == {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (1, 10, 20)}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in test.values())
    assert test["hr@1"] <= test["hr@10"] <= test["hr@20"]
    assert test["mrr@20"] <= test["ndcg@20"] <= test["hr@20"]

    for name in ("preprocess", "train", "evaluate"):
        assert pipe["stages"][name]["peak_rss_gb"] >= pipe["stages"][name]["rss_after_gb"] > 0

    doc = {"started": "now", "command": "cmd", "wall_s": 1.0, "settings": large.dataclasses.asdict(s),
           "machine": {"cpu": "test"}, "generate": gen, "pipeline": pipe}
    text = large.markdown(doc)
    assert f"**{n_items:,} items, {n_events:,} events, {n_users:,} users**" in text
    assert f"{n_users:,} users x {n_items:,} items, 50 users per block" in text
