"""The bad-input catalogue: each malformed or awkward input and its documented outcome.

Outcome is either a typed error naming the file (and line/column where one exists) or a
defined handling that the preprocessing summary reports. Nothing is dropped silently:
rows_read always equals the kept events plus every counted drop.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import pytest

from recsys.config import DataConfig
from recsys.data.events import load_events
from recsys.errors import DataFormatError, EmptyDataError

H = "user_id,item_id,timestamp\n"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    error: type[Exception] | None = None  # expected exception, or None for a handled input
    line: int | None = None  # expected error line
    column: str | int | None = None  # expected error column
    check: object = None  # callable(EventLog) for handled inputs
    file: str = "events.csv"
    options: tuple = ()


def _summary(**expected):
    def check(log):
        for key, value in expected.items():
            assert log.summary[key] == value, key
    return check


def _rows(expected):
    def check(log):
        assert list(log.frame.itertuples(index=False, name=None)) == expected
    return check


CATALOGUE = [
    Case("empty file", b"", EmptyDataError),
    Case("header only", H.encode(), EmptyDataError),
    Case("wrong delimiter", b"user_id;item_id;timestamp\nu;a;1\n", DataFormatError, column="user_id"),
    Case("missing column", b"user_id,item_id\nu,a\n", DataFormatError, column="timestamp"),
    Case("non-numeric timestamp", (H + "u,a,1\nu,b,2\nu,c,noon\n").encode(), DataFormatError, 4, "timestamp"),
    Case("missing timestamp", (H + "u,a,1\nu,b,\n").encode(), DataFormatError, 3, "timestamp"),
    Case("fractional timestamp", (H + "u,a,1.5\n").encode(), DataFormatError, 2, "timestamp"),
    Case("empty user id", (H + "u,a,1\n,b,2\n").encode(), DataFormatError, 3, "user_id"),
    Case("empty item id", (H + "u,,1\n").encode(), DataFormatError, 2, "item_id"),
    Case("ragged row", (H + "u,a,1\nu,b,2,extra\n").encode(), DataFormatError, 3),
    Case("truncated gzip", gzip.compress((H + "u,a,1\n" * 500).encode())[:-30], DataFormatError, file="e.csv.gz"),
    Case("non-UTF-8 bytes", (H + "u,a,1\n").encode() + b"u,\xff\xfe,2\n", DataFormatError, 3),
    # Handled inputs, each with its defined outcome:
    Case("NaN literal as id is an ordinary id", (H + "NaN,a,1\nNaN,b,2\nNaN,c,3\n").encode(),
         check=_rows([("NaN", "a", 1), ("NaN", "b", 2), ("NaN", "c", 3)])),
    Case("BOM is stripped", b"\xef\xbb\xbf" + (H + "u,a,1\nu,b,2\nu,c,3\n").encode(),
         check=_summary(n_events=3, n_users=1)),
    Case("duplicate rows kept by default", (H + "u,a,1\nu,a,1\nu,b,2\n").encode(),
         check=_summary(rows_read=3, n_events=3, dropped_duplicates=0)),
    Case("duplicate rows dropped with dedup and counted", (H + "u,a,1\nu,a,1\nu,b,2\nu,c,3\n").encode(),
         check=_summary(rows_read=4, n_events=3, dropped_duplicates=1), options=(("dedup", True),)),
    Case("users with a single event are dropped and counted",
         (H + "u,a,1\nu,b,2\nu,c,3\nv,a,1\n").encode(), check=_summary(n_users=1, dropped_short_users=1)),
    Case("all events at one timestamp keep file order", (H + "u,c,5\nu,a,5\nu,b,5\n").encode(),
         check=_rows([("u", "c", 5), ("u", "a", 5), ("u", "b", 5)])),
    Case("numeric-looking ids with leading zeros stay distinct strings",
         (H + "u,007,1\nu,7,2\nu,07,3\n").encode(), check=_summary(n_items=3)),
    Case("very large ids are kept verbatim", (H + "u,123456789012345678901234567890,1\nu,2,2\nu,3,3\n").encode(),
         check=lambda log: log.frame["item"].iloc[0] == "123456789012345678901234567890"),
    Case("ISO-8601 timestamps become epoch seconds", (H + "u,a,1970-01-01T00:01:00\nu,b,1970-01-02\nu,c,1970-01-03\n").encode(),
         check=lambda log: log.frame["timestamp"].tolist() == [60, 86400, 172800]),
    Case("out-of-order timestamps are sorted stably per user", (H + "u,late,9\nu,early,1\nu,mid,5\n").encode(),
         check=_rows([("u", "early", 1), ("u", "mid", 5), ("u", "late", 9)])),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.name)
def test_catalogue(case: Case, tmp_path: Path):
    path = tmp_path / case.file
    path.write_bytes(case.body)
    cfg = DataConfig(format="csv", path=str(path), min_user_events=2, **dict(case.options))
    if case.error is not None:
        with pytest.raises(case.error) as info:
            load_events(cfg)
        err = info.value
        assert err.path == str(path)
        assert str(path) in str(err)
        if case.line is not None:
            assert err.line == case.line
        if case.column is not None:
            assert err.column == case.column
        return
    log = load_events(cfg)
    s = log.summary
    assert s["rows_read"] == s["n_events"] + s["dropped_duplicates"] + s["dropped_kcore"] + s["dropped_short_users"]
    result = case.check(log)
    assert result is None or result is True


def test_catalogue_has_at_least_15_cases():
    assert len(CATALOGUE) >= 15
