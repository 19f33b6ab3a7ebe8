"""recsys.data.events: every format parsed exactly, errors located, cleaning counted."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.config import DataConfig
from recsys.data.events import fingerprint, kcore_mask, load_events, resolve_path
from recsys.errors import ConfigError, DataFormatError, DatasetNotFoundError, EmptyDataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
SHARED = Path(os.environ.get("RECSYS_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "datasets")


def cfg(path, format="csv", **kw) -> DataConfig:
    kw.setdefault("min_user_events", 1)
    return DataConfig(format=format, path=str(path), **kw)


def rows(log) -> list[tuple]:
    return list(log.frame.itertuples(index=False, name=None))


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def error_of(config: DataConfig, kind=DataFormatError) -> DataFormatError:
    with pytest.raises(kind) as info:
        load_events(config)
    return info.value


# ---- each format, exact frames --------------------------------------------------------


def test_s3rec_fixture_exact():
    log = load_events(cfg(FIXTURES / "s3rec.txt", "s3rec"))
    assert rows(log) == [
        ("10", "5", 0), ("10", "3", 1), ("10", "5", 2), ("10", "7", 3),
        ("007", "3", 0), ("007", "1", 1),
        ("7", "1", 0), ("7", "2", 1), ("7", "3", 2),
        ("2", "9", 0),
    ]
    assert list(log.frame.columns) == ["user", "item", "timestamp"]
    assert log.frame["timestamp"].dtype == np.int64
    assert log.frame["user"].map(type).eq(str).all()
    assert log.source == str(FIXTURES / "s3rec.txt")
    assert log.summary == {
        "rows_read": 10, "dropped_duplicates": 0, "dropped_kcore": 0,
        "dropped_short_users": 0, "n_users": 4, "n_items": 6, "n_events": 10,
    }


def test_s3rec_user_on_two_lines_continues_counting(tmp_path):
    log = load_events(cfg(write(tmp_path, "s.txt", "1 a b\n2 c\n1 d\n"), "s3rec"))
    assert rows(log) == [("1", "a", 0), ("1", "b", 1), ("1", "d", 2), ("2", "c", 0)]


def test_user_item_interleaved_users_keep_first_appearance_and_leading_zeros():
    log = load_events(cfg(FIXTURES / "user_item.txt", "user_item"))
    assert rows(log) == [("b", "1", 0), ("b", "3", 1), ("b", "01", 2), ("a", "2", 0), ("a", "1", 1)]
    assert log.summary["n_items"] == 4  # "1" and "01" are different items


def test_movielens_sorted_by_time_with_stable_ties():
    log = load_events(cfg(FIXTURES / "ratings.dat", "movielens"))
    # user 2 first (first in file); the two events at t=300 keep file order (10, then 12)
    assert rows(log) == [
        ("2", "11", 100), ("2", "10", 300), ("2", "12", 300),
        ("1", "20", 200), ("1", "21", 200),
    ]


def test_csv_with_event_column_ties_and_leading_zeros():
    log = load_events(cfg(FIXTURES / "events.csv", event_col="behavior"))
    assert list(log.frame.columns) == ["user", "item", "timestamp", "event"]
    assert rows(log) == [
        ("u1", "i2", 20, "cart"), ("u1", "i1", 30, "pv"), ("u1", "i1", 30, "pv"),
        ("u2", "7", 5, "pv"), ("u2", "i1", 10, "pv"), ("u2", "007", 10, "buy"),
    ]
    assert log.summary["n_items"] == 4  # i1, i2, 7, 007


def test_csv_iso_dates_become_epoch_seconds():
    log = load_events(cfg(FIXTURES / "dates.csv", sep=";", user_col="user", item_col="item",
                          time_col="when"))
    midnight = 1577836800  # 2020-01-01T00:00:00Z
    assert rows(log) == [("a", "y", midnight), ("a", "x", midnight + 10), ("b", "x", midnight)]


def test_csv_without_time_column_uses_file_order():
    log = load_events(cfg(FIXTURES / "events.csv", time_col=None))
    assert rows(log) == [
        ("u1", "i1", 0), ("u1", "i2", 1), ("u1", "i1", 2),
        ("u2", "i1", 0), ("u2", "007", 1), ("u2", "7", 2),
    ]


def test_parquet_int_ids_and_datetimes(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({
        "user_id": [7, 3, 7],
        "item_id": ["007", "7", "x"],
        "timestamp": pd.to_datetime(["2020-01-01 00:00:05", "2020-01-01 00:00:00", "2020-01-01 00:00:00"]),
    }).to_parquet(path)
    log = load_events(cfg(path, "parquet"))
    assert rows(log) == [("7", "x", 1577836800), ("7", "007", 1577836805), ("3", "7", 1577836800)]


def test_parquet_missing_column_and_null_id(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"], "ts": [1, 2]}).to_parquet(path)
    err = error_of(cfg(path, "parquet"))
    assert err.column == "timestamp" and "'ts'" in str(err)
    err = error_of(cfg(path, "parquet", time_col="ts"))
    assert (err.line, err.column) == (2, "user_id")


# ---- encodings and compression --------------------------------------------------------


def test_gzip_read_transparently_and_same_fingerprint(tmp_path):
    text = (FIXTURES / "ratings.dat").read_text()
    plain = load_events(cfg(write(tmp_path, "r.dat", text), "movielens"))
    gz = load_events(cfg(write(tmp_path, "r.dat.gz", text), "movielens"))
    assert rows(gz) == rows(plain)
    assert gz.fingerprint == plain.fingerprint


def test_corrupt_gzip_is_a_format_error(tmp_path):
    path = write(tmp_path, "bad.txt.gz", b"")
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    err = error_of(cfg(path, "s3rec"))
    assert err.path == str(path) and "gzip" in str(err)


def test_bom_is_stripped(tmp_path):
    bom = "\ufeff"
    log = load_events(cfg(write(tmp_path, "s.txt", bom + "1 a b\n"), "s3rec"))
    assert rows(log) == [("1", "a", 0), ("1", "b", 1)]
    # In a CSV the BOM would otherwise glue itself to the first column name.
    log = load_events(cfg(write(tmp_path, "e.csv", bom + "user_id,item_id,timestamp\nu,i,1\n")))
    assert rows(log) == [("u", "i", 1)]


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write(tmp_path, "s.txt.gz", b"1 a b\n2 c \xff d\n")
    err = error_of(cfg(path, "s3rec"))
    assert (err.path, err.line) == (str(path), 2)
    assert "UTF-8" in str(err)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "01", "a", "A"]), st.sampled_from(["7", "007", "x"]),
                          st.integers(0, 3)), min_size=1, max_size=25))
def test_canonical_order_matches_a_plain_python_reference(events):
    """Stable sort by (user's first appearance, timestamp), ties in file order."""
    text = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events)
    first_seen = {}
    for u, _, _ in events:
        first_seen.setdefault(u, len(first_seen))
    expected = [e for _, e in sorted(enumerate(events),
                                     key=lambda p: (first_seen[p[1][0]], p[1][2], p[0]))]
    with tempfile.TemporaryDirectory() as tmp:
        log = load_events(cfg(write(Path(tmp), "e.csv", text)))
    assert rows(log) == expected
    assert log.summary["n_users"] == len(first_seen)


# ---- malformed input ------------------------------------------------------------------


def test_csv_non_numeric_timestamp_names_line_and_column(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,item_id,timestamp\nu,i,1\nu,j,2\nu,k,soon\n")
    err = error_of(cfg(path))
    assert (err.path, err.line, err.column) == (str(path), 4, "timestamp")
    assert "'soon'" in str(err)


def test_csv_fractional_timestamp_and_blank_lines_keep_physical_numbers(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,item_id,timestamp\nu,i,1\n\nu,j,2.5\n")
    err = error_of(cfg(path))
    assert (err.line, err.column) == (4, "timestamp")


def test_csv_missing_column_lists_present_columns(tmp_path):
    path = write(tmp_path, "e.csv", "user,item_id,ts\nu,i,1\n")
    err = error_of(cfg(path))
    assert err.path == str(path) and err.column == "user_id"
    assert "['user', 'item_id', 'ts']" in str(err)


def test_csv_ragged_row_reports_pandas_line(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,item_id,timestamp\nu,i,1\nu,j,2\nu,k,3,extra\n")
    err = error_of(cfg(path))
    assert (err.path, err.line) == (str(path), 4)


def test_csv_empty_id_names_line_and_column(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,item_id,timestamp\nu,i,1\nu,,2\n")
    err = error_of(cfg(path))
    assert (err.line, err.column) == (3, "item_id")


def test_s3rec_user_without_items(tmp_path):
    err = error_of(cfg(write(tmp_path, "s.txt", "1 a b\n\n2\n"), "s3rec"))
    assert err.line == 3


@pytest.mark.parametrize(
    "text, line, count",
    [("1 a\n2 b c\n", 2, 3), ("1 a x\n2 b\n", 1, 3), ("1 a\n\n2\n", 3, 1)],
)
def test_user_item_wrong_field_count(tmp_path, text, line, count):
    err = error_of(cfg(write(tmp_path, "u.txt", text), "user_item"))
    assert err.line == line
    assert f"found {count}" in str(err)


@pytest.mark.parametrize(
    "text, line, column",
    [
        ("1::a::5::10\n1::b::5::later\n", 2, 4),
        ("1::a::5::10\n1::b::5::1.5\n", 2, 4),
        ("1::a::5::10\n1::b::5\n", 2, None),
        ("1::a::5::10::9\n1::b::5::3\n", 1, None),  # extra field on the first line
        ("1::a::5::10\n\n1:b::5::3\n", 3, None),
        ("1::a::5::10\n::b::5::3\n", 2, 1),
    ],
)
def test_movielens_errors_located(tmp_path, text, line, column):
    path = write(tmp_path, "r.dat", text)
    err = error_of(cfg(path, "movielens"))
    assert (err.path, err.line, err.column) == (str(path), line, column)


@pytest.mark.parametrize("fmt", ["s3rec", "user_item", "movielens", "csv"])
@pytest.mark.parametrize("content", [b"", b"\n \n", b"\xef\xbb\xbf"])
def test_empty_files(tmp_path, fmt, content):
    error_of(cfg(write(tmp_path, "empty.txt", content), fmt), EmptyDataError)


def test_header_only_csv(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,item_id,timestamp\n")
    err = error_of(cfg(path), EmptyDataError)
    assert err.path == str(path)


def test_event_col_rejected_for_formats_without_one():
    with pytest.raises(ConfigError):
        load_events(cfg(FIXTURES / "s3rec.txt", "s3rec", event_col="behavior"))


# ---- cleaning -------------------------------------------------------------------------


def test_dedup_counts_exact_duplicates_only():
    log = load_events(cfg(FIXTURES / "events.csv", event_col="behavior", dedup=True))
    assert log.summary["dropped_duplicates"] == 1
    assert log.summary["n_events"] == 5
    assert rows(log)[:2] == [("u1", "i2", 20, "cart"), ("u1", "i1", 30, "pv")]
    # Without the event column, (u2, i1, 10) and (u2, 007, 10) still differ by item.
    assert load_events(cfg(FIXTURES / "events.csv", dedup=True)).summary["dropped_duplicates"] == 1


def test_kcore_is_iterative():
    # k=2: (C, z) and (D, w) go first (z, w seen once); that leaves C with one event, so
    # (C, x) goes in the second round. A single pass would have kept it.
    log = load_events(cfg(FIXTURES / "kcore.csv", time_col=None, kcore=2))
    assert rows(log) == [("A", "x", 0), ("A", "y", 1), ("B", "x", 0), ("B", "y", 1)]
    assert log.summary["dropped_kcore"] == 3
    assert (log.summary["n_users"], log.summary["n_items"]) == (2, 2)


def test_kcore_mask_on_codes():
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 1, 2])
    assert kcore_mask(users, items, 2).tolist() == [True, True, False, True, True, False]
    assert kcore_mask(users, items, 1).all()
    assert not kcore_mask(users, items, 3).any()


def test_min_user_events_drops_short_users_and_counts_rows():
    log = load_events(cfg(FIXTURES / "s3rec.txt", "s3rec", min_user_events=3))
    assert [u for u in log.frame["user"].unique()] == ["10", "7"]
    assert log.summary["dropped_short_users"] == 3  # 007 (2 events) and 2 (1 event)
    s = log.summary
    assert s["rows_read"] == s["n_events"] + s["dropped_duplicates"] + s["dropped_kcore"] + 3


def test_everything_filtered_is_empty_data():
    err = error_of(cfg(FIXTURES / "s3rec.txt", "s3rec", min_user_events=5), EmptyDataError)
    assert "dropped_short_users" in str(err)


# ---- fingerprint ----------------------------------------------------------------------


def test_fingerprint_stable_and_sensitive(tmp_path):
    base = "1::a::5::10\n1::b::5::20\n2::a::5::30\n"
    fp = lambda text: load_events(cfg(write(tmp_path, "r.dat", text), "movielens")).fingerprint
    first = fp(base)
    assert first == fp(base)
    assert len(first) == 64
    assert fp(base.replace("::30", "::31")) != first  # one timestamp
    assert fp(base.replace("2::a", "02::a")) != first  # one user id spelling
    assert fp(base.replace("1::b", "1::c")) != first  # one item
    assert fp(base.replace("1::a::5::10", "1::a::5::25")) != first  # order within user


def test_fingerprint_covers_events_and_column_boundaries():
    frame = pd.DataFrame({"user": ["u", "u"], "item": ["ab", "c"], "timestamp": [1, 2],
                          "event": ["pv", "buy"]})
    moved = frame.assign(item=["a", "bc"])  # same concatenated bytes, different ids
    assert fingerprint(frame) != fingerprint(moved)
    assert fingerprint(frame) != fingerprint(frame.assign(event=["pv", "pv"]))
    assert fingerprint(frame) == fingerprint(frame.copy())


# ---- resolving paths ------------------------------------------------------------------


def test_resolve_path_order(tmp_path, monkeypatch):
    for sub in ("cfg", "env", "cwd/data"):
        (tmp_path / sub).mkdir(parents=True)
        write(tmp_path / sub, "x.txt", "1 a b\n")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    assert resolve_path(cfg("x.txt")) == tmp_path / "cwd" / "data" / "x.txt"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_path(cfg("x.txt")) == tmp_path / "env" / "x.txt"
    assert resolve_path(cfg("x.txt", data_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg" / "x.txt"
    absolute = tmp_path / "cfg" / "x.txt"
    assert resolve_path(cfg(absolute, data_dir=str(tmp_path / "env"))) == absolute


def test_resolve_path_accepts_gz_or_plain(tmp_path):
    write(tmp_path, "a.txt.gz", "1 a b\n")
    write(tmp_path, "b.txt", "1 a b\n")
    assert resolve_path(cfg("a.txt", data_dir=str(tmp_path))) == tmp_path / "a.txt.gz"
    assert resolve_path(cfg("b.txt.gz", data_dir=str(tmp_path))) == tmp_path / "b.txt"


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_path(cfg("nowhere/x.csv", data_dir=str(tmp_path)))
    assert str(tmp_path / "nowhere" / "x.csv") in str(info.value)
    assert "RECSYS_DATA_DIR" in str(info.value)


# ---- real data (shared benchmark folder; skipped where absent) ------------------------


def shared(rel: str) -> str:
    if not (SHARED / rel).is_file():
        pytest.skip(f"{SHARED / rel} not available")
    return rel


def test_real_s3rec_beauty(monkeypatch):
    rel = shared("s3rec-preprocessed/Beauty.txt.gz")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(SHARED))
    log = load_events(DataConfig(format="s3rec", path=rel))
    assert log.summary == {
        "rows_read": 198_502, "dropped_duplicates": 0, "dropped_kcore": 0,
        "dropped_short_users": 0, "n_users": 22_363, "n_items": 12_101, "n_events": 198_502,
    }
    assert rows(log)[:3] == [("1", "1", 0), ("1", "2", 1), ("1", "3", 2)]
    # Pinned: changes only if the fingerprint definition or the parser changes.
    assert log.fingerprint == "3b92fb85be20f830a5b3983bd28efba096d4dbec21295a77f2090a7149747ef1"


def test_real_movielens_prefix(monkeypatch):
    # How long loading takes is a benchmark's question (benchmarks/large_catalogue.py times
    # preprocessing): a wall-clock bound here fails on a busy machine, not on a slow parser.
    rel = shared("ml-1m/ratings.users-1-2999.dat.gz")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(SHARED))
    log = load_events(DataConfig(format="movielens", path=rel))
    s = log.summary
    assert (s["rows_read"], s["n_events"], s["n_users"], s["n_items"]) == (487_650, 487_650, 2_999, 3_615)
    frame = log.frame
    assert frame["timestamp"].min() == 970_620_734 and frame["timestamp"].max() == 1_046_388_675
    assert frame["user"].iloc[0] == "1" and frame["user"].iloc[-1] == "2999"
    # canonical: non-decreasing time within each user
    same_user = frame["user"].to_numpy()[1:] == frame["user"].to_numpy()[:-1]
    assert (np.diff(frame["timestamp"].to_numpy())[same_user] >= 0).all()


def test_real_sasrec_video_short_users(monkeypatch):
    rel = shared("sasrec-preprocessed/Video.txt.gz")
    log = load_events(DataConfig(format="user_item", path=rel, data_dir=str(SHARED)))
    # README: 30 users with 1 event and 82 with 2 -> 112 users, 194 events dropped
    assert log.summary["dropped_short_users"] == 30 + 2 * 82
    assert log.summary["n_users"] == 31_013 - 112
    assert log.summary["rows_read"] == 287_107


def test_real_taobao_headerless_with_event_column():
    rel = shared("taobao-userbehavior-sample/UserBehavior.csv.gz")
    log = load_events(cfg(SHARED / rel, user_col="user", item_col="item", time_col="ts",
                          event_col="behavior", names=("user", "item", "category", "behavior", "ts")))
    assert log.frame.iloc[0].tolist() == ["1", "2268318", 1511544070, "pv"]
    s = log.summary
    assert (s["rows_read"], s["n_users"], s["n_items"]) == (84_287, 814, 55_233)
    assert log.frame["event"].value_counts().to_dict() == {
        "pv": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}


def test_headerless_csv_reports_physical_lines(tmp_path):
    path = write(tmp_path, "e.csv", "u1,a,1\nu1,b,2\nu1,c,x\n")
    log_cfg = cfg(path, names=("user_id", "item_id", "timestamp"))
    err = error_of(log_cfg)
    assert err.line == 3 and err.column == "timestamp"
    ok = write(tmp_path, "ok.csv", "u1,a,1\nu1,b,2\n")
    assert rows(load_events(cfg(ok, names=("user_id", "item_id", "timestamp")))) == [("u1", "a", 1), ("u1", "b", 2)]


def test_jsonl_reads_fields_and_reports_bad_lines(tmp_path):
    good = write(tmp_path, "r.json", '{"u": "A1", "i": "0042", "t": 5}\n\n{"u": "A1", "i": 7, "t": 3}\n')
    log = load_events(cfg(good, format="jsonl", user_col="u", item_col="i", time_col="t"))
    assert rows(log) == [("A1", "7", 3), ("A1", "0042", 5)]
    bad = write(tmp_path, "b.json", '{"u": "A1", "i": "x", "t": 5}\n{"u": "A1", "i": \n')
    err = error_of(cfg(bad, format="jsonl", user_col="u", item_col="i", time_col="t"))
    assert err.line == 2 and "invalid JSON" in str(err)
    missing = write(tmp_path, "m.json", '{"u": "A1", "t": 5}\n')
    assert error_of(cfg(missing, format="jsonl", user_col="u", item_col="i", time_col="t")).column == "i"


def test_real_amazon_musical_instruments_jsonl():
    rel = shared("amazon-2014-5core/Musical_Instruments.json.gz")
    log = load_events(DataConfig(format="jsonl", path=rel, data_dir=str(SHARED), user_col="reviewerID",
                                 item_col="asin", time_col="unixReviewTime", min_user_events=1))
    s = log.summary
    assert (s["rows_read"], s["n_users"], s["n_items"]) == (10_261, 1_429, 900)
