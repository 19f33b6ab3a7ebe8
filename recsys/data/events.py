"""Read and validate raw event logs into one canonical, time-ordered table.

CONTRACT (other modules rely on it):

    resolve_path(cfg: DataConfig) -> Path
    load_events(cfg: DataConfig) -> EventLog

EventLog.frame columns, in canonical order (stable sort by user first appearance, then
timestamp; ties keep file order):
    user: str, item: str, timestamp: int64, [event: str if cfg.event_col]

Ids are kept exactly as written ("007" and "7" are different users). Formats without
timestamps (s3rec, user_item, csv without time_col) get timestamp = the running index of
the user's events in file order, so the canonical order is the file order.

Every error names the file and, where it can, the 1-based physical line (header = line 1)
and the column. Hot paths are vectorised (pandas C parser, numpy); the line-by-line
scanners below only run after the fast path has failed, to say *where* it failed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.data import download
from recsys.errors import ConfigError, DataFormatError, DatasetNotFoundError, EmptyDataError

FINGERPRINT_VERSION = b"recsys.events.v1"


@dataclass(frozen=True)
class EventLog:
    frame: pd.DataFrame  # user: str, item: str, timestamp: int64, [event: str], canonical order
    source: str  # the resolved file path
    summary: dict[str, int]  # rows_read, dropped_*, n_users, n_items, n_events
    fingerprint: str  # sha256 hex of the canonical events, see fingerprint()


# ---- locating the file ----------------------------------------------------------------


def data_root(cfg: DataConfig) -> Path:
    """Folder that relative paths are resolved against: data_dir, $RECSYS_DATA_DIR, ./data."""
    root = cfg.data_dir or os.environ.get("RECSYS_DATA_DIR") or "data"
    return Path(root).expanduser()


def _with_and_without_gz(path: Path) -> list[Path]:
    # Upstream files are plain text, our shared copies are gzipped: accept either spelling.
    if path.suffix == ".gz":
        return [path, path.with_suffix("")]
    return [path, path.with_name(path.name + ".gz")]


def resolve_path(cfg: DataConfig) -> Path:
    """The file cfg names, downloading it first if absent and in the download registry."""
    rel = Path(cfg.path).expanduser()
    root = None if rel.is_absolute() else data_root(cfg)
    target = rel if root is None else root / rel
    candidates = _with_and_without_gz(target)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.absolute()
    if root is not None:
        for key in _with_and_without_gz(Path(cfg.path)):
            if key.as_posix() in download.REGISTRY:
                return download.download(key.as_posix(), root).absolute()
    tried = " or ".join(str(c.absolute()) for c in candidates)
    raise DatasetNotFoundError(
        f"dataset file not found: {tried}. It is not in the download registry, so put the "
        f"file there, or point RECSYS_DATA_DIR (or data.data_dir in the config) at the "
        f"folder that holds {cfg.path!r}, or give data.path as an absolute path."
    )


# ---- reading text ---------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """Whole file as str: gunzipped by suffix, strict UTF-8, leading BOM removed."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DataFormatError(f"not a valid gzip file: {exc}", path) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.end].hex()
        raise DataFormatError(f"not valid UTF-8 (byte 0x{bad})", path, line) from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise EmptyDataError("file is empty", path)
    return text


def _lines(text: str):
    """(line number, line) for the non-blank physical lines, for the error scanners."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield lineno, line


def _parser_error_line(exc: Exception) -> int | None:
    match = re.search(r"in line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _read_csv_strict(text: str, **kwargs) -> pd.DataFrame:
    """pandas C parser, with a mismatched field count always an error, never silent.

    Without index_col=False pandas turns an extra first column into the index; with it,
    it drops extra fields and only warns. Turning that warning into an error makes both
    cases fail, so the caller's scanner can report the line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return pd.read_csv(io.StringIO(text), index_col=False, engine="c", **kwargs)


_FAST_PATH_ERRORS = (ValueError, OverflowError, pd.errors.ParserError, pd.errors.ParserWarning)


def _running_index(users: pd.Series) -> np.ndarray:
    # Position of each event among its user's events in file order: 0, 1, 2, ...
    return users.groupby(users, sort=False).cumcount().to_numpy(np.int64)


# ---- format readers: each returns user, item, timestamp[, event] in file order ---------


def _read_s3rec(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """`user i1 i2 ...` per line. One split per line (per user), no per-event Python.

    timestamp = running index of the user's events, i.e. the position in the line; a user
    on two lines continues counting, so the second line follows the first."""
    rows = [line.split() for line in _read_text(path).split("\n")]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    lonely = np.flatnonzero(lengths == 1)
    if lonely.size:
        raise DataFormatError("a user with no items", path, line=int(lonely[0]) + 1)
    tokens = np.array(list(chain.from_iterable(rows)), dtype=object)
    lengths = lengths[lengths > 0]
    starts = np.cumsum(lengths) - lengths  # index of each line's user token
    is_user = np.zeros(len(tokens), dtype=bool)
    is_user[starts] = True
    users = pd.Series(np.repeat(tokens[starts], lengths - 1), dtype=str)
    items = pd.Series(tokens[~is_user], dtype=str)
    return pd.DataFrame({"user": users, "item": items, "timestamp": _running_index(users)})


def _read_user_item(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """`user item` per line, in time order (SASRec / BERT4Rec files)."""
    text = _read_text(path)
    try:
        frame = _read_csv_strict(
            text, sep=r"\s+", header=None, names=["user", "item"], dtype=str,
            na_filter=False, quoting=csv.QUOTE_NONE,
        )
        if frame["user"].eq("").any() or frame["item"].eq("").any():
            raise ValueError("a line with fewer than 2 fields")
    except _FAST_PATH_ERRORS as exc:
        _scan_user_item(text, path, exc)
    frame["timestamp"] = _running_index(frame["user"])
    return frame


def _scan_user_item(text: str, path: Path, error: Exception) -> NoReturn:
    for lineno, line in _lines(text):
        n = len(line.split())
        if n != 2:
            raise DataFormatError(f"expected 2 fields (user item), found {n}", path, lineno)
    raise DataFormatError(f"cannot parse: {error}", path, _parser_error_line(error))


def _read_movielens(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """`user::item::rating::timestamp`. Split on ':' so the C parser can do it; the
    empty fields in between (columns 1, 3, 5) must stay empty."""
    text = _read_text(path)
    try:
        raw = _read_csv_strict(
            text, sep=":", header=None, names=range(7),
            dtype={**{i: str for i in range(6)}, 6: "int64"},
            na_filter=False, quoting=csv.QUOTE_NONE,
        )
        if not raw[[1, 3, 5]].eq("").all().all() or raw[0].eq("").any() or raw[2].eq("").any():
            raise ValueError("a line that is not user::item::rating::timestamp")
    except _FAST_PATH_ERRORS as exc:
        _scan_movielens(text, path, exc)
    return pd.DataFrame({"user": raw[0], "item": raw[2], "timestamp": raw[6]})


def _scan_movielens(text: str, path: Path, error: Exception) -> NoReturn:
    for lineno, line in _lines(text):
        fields = line.split("::")
        if len(fields) != 4:
            msg = f"expected 4 '::'-separated fields (user::item::rating::timestamp), found {len(fields)}"
            raise DataFormatError(msg, path, lineno)
        for col, name in ((1, "user"), (2, "item")):
            if fields[col - 1] == "":
                raise DataFormatError(f"empty {name} id", path, lineno, column=col)
        try:
            int(fields[3])
        except ValueError:
            msg = f"timestamp {fields[3]!r} is not an integer"
            raise DataFormatError(msg, path, lineno, column=4) from None
    raise DataFormatError(f"cannot parse: {error}", path, _parser_error_line(error))


def _read_csv(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """Delimited text with a header. Every column is read as str (no NA guessing), so ids
    stay verbatim. skip_blank_lines=False keeps data row i on physical line i + 2, which
    is how errors find their line (quoted fields holding newlines would shift that)."""
    text = _read_text(path)
    names = list(cfg.names) or None  # header-less file: the config names the columns
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=cfg.sep, dtype=str, na_filter=False,
            skip_blank_lines=False, engine="c", header=None if names else "infer", names=names,
        )
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"malformed row: {exc}", path, _parser_error_line(exc)) from exc
    frame = frame[frame.ne("").any(axis=1)]  # blank lines are not events
    frame.index = frame.index + (1 if names else 2)  # physical line numbers
    return _from_columns(frame, path, cfg, "line")


def _read_parquet(path: Path, cfg: DataConfig) -> pd.DataFrame:
    import pyarrow.parquet as pq  # parquet is optional for the text formats

    try:
        present = pq.read_schema(path).names
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataFormatError(f"cannot read parquet: {exc}", path) from exc
    _check_columns(present, path, cfg)
    try:
        frame = pd.read_parquet(path, columns=_wanted_columns(cfg))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"cannot read parquet: {exc}", path) from exc
    frame.index = np.arange(1, len(frame) + 1)  # 1-based row numbers for errors
    return _from_columns(frame, path, cfg, "row")


def _read_jsonl(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """JSON Lines, one object per line (e.g. the Amazon review dumps). Each line is
    parsed on its own so a bad line is reported with its number; ids are kept as text."""
    records, lines = [], []
    for number, line in _lines(_read_text(path)):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"invalid JSON: {exc.msg}", path, number, exc.colno) from exc
        if not isinstance(obj, dict):
            raise DataFormatError("each line must be a JSON object", path, number)
        records.append({c: obj.get(c) for c in _wanted_columns(cfg) if c in obj})
        lines.append(number)
    frame = pd.DataFrame.from_records(records, columns=_wanted_columns(cfg))
    for col in (cfg.user_col, cfg.item_col, cfg.event_col):
        if col is not None:
            frame[col] = frame[col].map(lambda v: "" if v is None or v != v else str(v))  # v != v: NaN
    frame.index = np.asarray(lines, dtype=np.int64)
    return _from_columns(frame, path, cfg, "line")


# ---- shared column handling for csv / parquet -----------------------------------------


def _wanted_columns(cfg: DataConfig) -> list[str]:
    cols = [cfg.user_col, cfg.item_col, cfg.time_col, cfg.event_col]
    return [c for c in cols if c is not None]


def _check_columns(present: list[str], path: Path, cfg: DataConfig) -> None:
    for col in _wanted_columns(cfg):
        if col not in present:
            msg = f"missing column {col!r}; the file has columns {list(present)}"
            raise DataFormatError(msg, path, column=col)


def _from_columns(frame: pd.DataFrame, path: Path, cfg: DataConfig, unit: str) -> pd.DataFrame:
    """Validate the named columns; frame.index holds each row's line (or row) number."""
    _check_columns(list(frame.columns), path, cfg)
    out = {}
    for key, col in (("user", cfg.user_col), ("item", cfg.item_col), ("event", cfg.event_col)):
        if col is None:
            continue
        values = frame[col]
        empty = values.isna() | values.astype(str).eq("")
        if empty.any():
            where = int(values.index[np.argmax(empty.to_numpy())])
            raise DataFormatError(f"empty {key} id in {unit} {where}", path, where, column=col)
        out[key] = values.astype(str).to_numpy()
    result = pd.DataFrame({"user": out["user"], "item": out["item"]})
    if cfg.time_col is None:
        result["timestamp"] = _running_index(result["user"])
    else:
        result["timestamp"] = _epoch_seconds(frame[cfg.time_col], path, cfg.time_col, unit)
    if "event" in out:
        result["event"] = out["event"]
    return result


def _epoch_seconds(values: pd.Series, path: Path, col: str, unit: str) -> np.ndarray:
    """int64 timestamps from integers, integer-valued floats, or ISO-8601 dates (to epoch
    seconds). Anything else is an error naming the first bad row."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps, bad = _datetime_seconds(values)
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        stamps, bad = _integer_values(values)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().any():  # a numeric column: its non-numbers are the errors
            stamps, bad = _integer_values(numbers)
        else:
            dates = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
            stamps, bad = _datetime_seconds(dates)
    if bad.any():
        where = int(values.index[np.argmax(bad)])
        value = values.iloc[int(np.argmax(bad))]
        msg = f"timestamp {value!r} in {unit} {where} is not an integer or an ISO-8601 date"
        raise DataFormatError(msg, path, where, column=col)
    return stamps


def _integer_values(numbers: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_integer_dtype(numbers) and not numbers.isna().any():
        return numbers.to_numpy(np.int64), np.zeros(len(numbers), dtype=bool)
    floats = numbers.to_numpy(np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(floats) | (floats != np.round(floats)) | (np.abs(floats) >= 2.0**63)
    return np.where(bad, 0, floats).astype(np.int64), bad


def _datetime_seconds(dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if dates.dt.tz is None:  # naive dates are taken as UTC
        dates = dates.dt.tz_localize("UTC")
    bad = dates.isna().to_numpy()
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).to_numpy(np.int64), bad


READERS: dict[str, Callable[[Path, DataConfig], pd.DataFrame]] = {
    "s3rec": _read_s3rec,
    "user_item": _read_user_item,
    "movielens": _read_movielens,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "jsonl": _read_jsonl,
}


# ---- canonical order, cleaning, fingerprint -------------------------------------------


def _canonical_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by (user first appearance, timestamp); equal timestamps keep file order."""
    first_seen = pd.factorize(frame["user"])[0]  # codes follow first appearance
    by_time = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    order = by_time[np.argsort(first_seen[by_time], kind="stable")]
    return frame.iloc[order].reset_index(drop=True)


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by the iterative k-core: every kept user and item has >= k kept events.

    users, items: int codes. Dropping a sparse item can push a user under k (and vice versa), so
    repeat until nothing changes; each round is two bincounts.
    """
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_deg = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_deg = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        still = keep & (user_deg[users] >= k) & (item_deg[items] >= k)
        if still.sum() == keep.sum():
            return keep
        keep = still


def _clean(frame: pd.DataFrame, cfg: DataConfig, path: Path) -> tuple[pd.DataFrame, dict]:
    """dedup -> k-core -> short users, in that order; every removed row is counted."""
    summary = {"rows_read": len(frame), "dropped_duplicates": 0, "dropped_kcore": 0,
               "dropped_short_users": 0}

    def drop(frame: pd.DataFrame, keep: np.ndarray, key: str) -> pd.DataFrame:
        summary[key] = int(len(keep) - keep.sum())
        if not keep.any():
            raise EmptyDataError(f"no events left after {key}: {summary}", path)
        return frame[keep].reset_index(drop=True)

    if cfg.dedup:  # the stable sort keeps the first copy in file order first
        frame = drop(frame, ~frame.duplicated(keep="first").to_numpy(), "dropped_duplicates")
    if cfg.kcore > 0:
        users = pd.factorize(frame["user"])[0]
        items = pd.factorize(frame["item"])[0]
        frame = drop(frame, kcore_mask(users, items, cfg.kcore), "dropped_kcore")
    # Fewer events than train + validation + test need: the user cannot be evaluated.
    counts = frame.groupby("user", sort=False)["user"].transform("size").to_numpy()
    frame = drop(frame, counts >= cfg.min_user_events, "dropped_short_users")

    summary["n_users"] = int(frame["user"].nunique())
    summary["n_items"] = int(frame["item"].nunique())
    summary["n_events"] = len(frame)
    return frame, summary


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the events: a version tag and row count, then per column in order
    (user, item, timestamp[, event]): for strings the distinct values in first-appearance
    order (count, char lengths, UTF-8 bytes) and each row's int64 code; for timestamps
    the int64 values. All integers little-endian. Vectorised: no per-row Python."""
    h = hashlib.sha256(FINGERPRINT_VERSION)
    h.update(np.int64(len(frame)).astype("<i8").tobytes())
    for col in frame.columns:
        h.update(col.encode() + b"\0")
        if col == "timestamp":
            h.update(frame[col].to_numpy().astype("<i8").tobytes())
            continue
        codes, uniques = pd.factorize(frame[col])
        lengths = uniques.str.len().to_numpy()
        h.update(np.int64(len(uniques)).astype("<i8").tobytes())
        h.update(lengths.astype("<i8").tobytes())
        h.update("".join(uniques).encode("utf-8"))
        h.update(codes.astype("<i8").tobytes())
    return h.hexdigest()


def load_events(cfg: DataConfig) -> EventLog:
    """Read, validate, order and clean the event log that cfg describes."""
    if cfg.format not in READERS:
        raise ConfigError(f"data.format must be one of {sorted(READERS)}, got {cfg.format!r}")
    if cfg.event_col is not None and cfg.format not in ("csv", "parquet", "jsonl"):
        raise ConfigError(f"data.event_col needs format csv or parquet, not {cfg.format!r}")
    path = resolve_path(cfg)
    frame = READERS[cfg.format](path, cfg)
    if frame.empty:
        raise EmptyDataError("no events in file", path)
    frame = _canonical_order(frame)
    frame, summary = _clean(frame, cfg, path)
    frame = frame.astype({c: str for c in frame.columns if c != "timestamp"})
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    return EventLog(frame, str(path), summary, fingerprint(frame))
