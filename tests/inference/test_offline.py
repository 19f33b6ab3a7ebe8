"""`recsys recommend`: offline top-k for every user of a log equals Recommender.recommend on
the same histories, in memory or spilled into partitions, CSV or Parquet, in and out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from recsys.cli import main
from recsys.inference import Recommender
from recsys.inference.offline import recommend_file


def _log(n_users=40, seed=0):
    """A shuffled event log with ties in time, unknown items and an all-unknown user."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j in range(int(rng.integers(1, 12))):
            rows.append((f"u{u:03d}", f"i{int(rng.integers(0, 50))}", int(rng.integers(0, 5))))  # times tie often
    rows.append(("u999", "unknown-item", 3))
    rows.append(("u017", "another-unknown", 1))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _histories(rows):
    """Each user's items by time, ties in file order: what recsys.data.events does."""
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for pos, (user, item, t) in enumerate(rows):
        by_user.setdefault(user, []).append((t, pos, item))
    return {u: [item for _, _, item in sorted(events)] for u, events in by_user.items()}


def _write(rows, path):
    table = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "timestamp": [r[2] for r in rows]})
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pcsv.write_csv(table, path)


def _read(path):
    table = pq.read_table(path) if path.suffix == ".parquet" else pcsv.read_csv(
        path, convert_options=pcsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string()}))
    out: dict[str, tuple[list[str], list[float], list[int], list[bool]]] = {}
    for user, item, score, rank, fallback in zip(*(table.column(c).to_pylist() for c in
                                                   ("user_id", "item_id", "score", "rank", "fallback"))):
        entry = out.setdefault(user, ([], [], [], []))
        for column, value in zip(entry, (item, score, rank, fallback)):
            column.append(value)
    return out


@pytest.mark.parametrize("fmt_in, fmt_out, partition_rows", [
    (".csv", ".csv", 10_000_000),   # one partition, in memory
    (".csv", ".parquet", 50),       # spilled: several partitions
    (".parquet", ".csv", 50),
])
def test_output_equals_recommender_recommend_on_the_same_rows(small_artifact, tmp_path, fmt_in, fmt_out,
                                                              partition_rows):
    rows = _log()
    log = tmp_path / f"events{fmt_in}"
    _write(rows, log)
    rec = Recommender.load(small_artifact)
    out = tmp_path / f"top{fmt_out}"
    done = recommend_file(rec, log, out, k=7, exclude_seen=True, partition_rows=partition_rows, batch_size=9,
                          progress=False)
    histories = _histories(rows)
    users = sorted(histories)
    expected = rec.recommend([histories[u] for u in users], k=7, exclude_seen=True)
    got = _read(out)
    assert done.users == len(users) == len(got) and done.events == len(rows)
    assert done.partitions == (1 if partition_rows > len(rows) else -(-len(rows) // partition_rows))
    assert done.fallback_users == 1  # u999 knows no item
    for row, user in enumerate(users):
        items, scores, ranks, fallback = got[user]
        assert items == expected.items[row]
        assert ranks == list(range(1, len(items) + 1))
        assert fallback == [expected.fallback[row]] * len(items)
        np.testing.assert_array_equal(np.asarray(scores, np.float32), expected.scores[row])  # NaN == NaN
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left


def test_without_a_time_column_file_order_is_the_history(small_artifact, tmp_path):
    rows = [("a", "i1", 0), ("b", "i5", 0), ("a", "i2", 0), ("a", "i3", 0)]
    log = tmp_path / "events.csv"
    _write(rows, log)
    rec = Recommender.load(small_artifact)
    recommend_file(rec, log, tmp_path / "out.csv", k=3, time_col=None, progress=False)
    got = _read(tmp_path / "out.csv")
    assert got["a"][0] == rec.recommend([["i1", "i2", "i3"]], k=3).items[0]
    assert got["a"][0] != rec.recommend([["i3", "i2", "i1"]], k=3).items[0]  # order matters to the model


def test_cli_writes_atomically_and_refuses_to_overwrite(small_artifact, tmp_path, capsys):
    rows = _log(n_users=12, seed=1)
    log = tmp_path / "events.csv"
    _write(rows, log)
    out = tmp_path / "top.csv"
    args = ["recommend", str(small_artifact), "--histories", str(log), "--k", "5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    # 12 users, u999 and u017 (here only an unknown item) answered by the fallback
    assert "top-5 for 14 users (2 by popularity fallback)" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == first
    # a failure half-way (an unknown id under --unknown raise) leaves neither output nor scratch
    failed = tmp_path / "failed.csv"
    assert main(args[:-3] + ["--out", str(failed), "--unknown", "raise", "--quiet"]) == 2
    assert "unknown item id" in capsys.readouterr().err
    assert not failed.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".failed")]
    with pytest.raises(SystemExit):
        main(["recommend", str(small_artifact), "--histories", str(log)])  # --out is required
