"""Offline top-k for every user of an event log, in bounded memory:
``recsys recommend ARTIFACT --histories FILE --k N --out FILE``.

The log is a CSV or Parquet file of events (user, item and optionally time columns, one
event per row, in any order). Each user's history is their items in time order, ties in
file order (as ``recsys.data.events`` orders a training log); without a time column, in
file order. Every history is answered by ``Recommender.recommend``, so the output equals
what the Python API returns for the same rows.

Memory stays bounded whatever the log's size:

1. The log is streamed in record batches of its user/item(/time) columns. When it holds more
   than ``partition_rows`` events, each batch's rows are spilled into one of P partition
   files (Arrow IPC, in a temporary folder beside the output) by a CRC-32 of the user id,
   so all of a user's events land in the same partition.
2. Each partition in turn is sorted by (user, time, position in the file), cut into users,
   and answered ``batch_size`` users at a time.
3. Each batch's long table (``user_id, item_id, score, rank, fallback``, the shape of
   ``Recommendations.to_pandas``) is appended to the output under a temporary name, which is
   renamed into place only when complete: a crash never leaves a truncated output behind.

Peak memory is about one partition (``partition_rows`` events) plus the model; the output
is written as it goes. Users come out grouped, partition by partition, each partition's
users in id order; the order is the same on every run.

Needs pyarrow (the ``serve`` or ``train`` extra), imported when called: ``import
recsys.inference`` never loads it.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import RecsysError
from recsys.inference.recommender import Recommender

FORMATS = ("csv", "parquet")
_POS = "__position"  # the event's row number in the file: the tie-break after time


@dataclass(frozen=True)
class OfflineSummary:
    """What ``recommend_file`` did."""

    out: Path
    users: int
    events: int
    rows: int  # output lines (user, item) written
    fallback_users: int
    partitions: int
    seconds: float


def file_format(path: Path, given: str | None = None) -> str:
    """``csv`` or ``parquet``, from ``given`` or the file name (``.csv``, ``.csv.gz``, ``.parquet``...)."""
    if given is not None:
        if given not in FORMATS:
            raise RecsysError(f"format must be one of {FORMATS}, got {given!r}")
        return given
    suffixes = [s.lower() for s in Path(path).suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        return "csv"
    raise RecsysError(f"{path}: cannot tell CSV from Parquet by the name; pass the format explicitly")


def _pyarrow() -> tuple[Any, Any, Any, Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:  # the base install (tests/distribution checks the message)
        raise ModuleNotFoundError("recsys recommend reads and writes CSV / Parquet with pyarrow: "
                                  "pip install 'recsys-lab[serve]'", name=exc.name) from exc
    return pa, pc, pcsv, ipc, pq


def _batches(path: Path, fmt: str, columns: list[str], sep: str, block_bytes: int) -> tuple[Iterator[Any], int]:
    """Record batches of ``columns`` (user and item as strings) and an estimate of the row count."""
    pa, pc, pcsv, ipc, pq = _pyarrow()
    user, item = columns[0], columns[1]
    if fmt == "parquet":
        reader = pq.ParquetFile(path)
        missing = [c for c in columns if c not in reader.schema_arrow.names]
        if missing:
            raise RecsysError(f"{path}: no column(s) {missing}; it has {reader.schema_arrow.names}")
        rows = reader.metadata.num_rows
        stream = reader.iter_batches(batch_size=max(1, block_bytes // 32), columns=columns)
    else:
        head = _sample(path, 1 << 20)
        types = {user: pa.string(), item: pa.string()}
        convert = pcsv.ConvertOptions(column_types=types, include_columns=columns)
        try:
            stream = pcsv.open_csv(pa.input_stream(str(path), compression="detect"),
                                   read_options=pcsv.ReadOptions(block_size=block_bytes),
                                   parse_options=pcsv.ParseOptions(delimiter=sep), convert_options=convert)
        except (pa.ArrowInvalid, KeyError) as exc:
            raise RecsysError(f"{path}: cannot read columns {columns} with sep {sep!r}: {exc}") from exc
        # An estimate (it only sets the partition count): bytes per line of the first MB;
        # a compressed file is taken to expand about 4 times.
        per_line = max(1.0, len(head) / max(1, head.count(b"\n")))
        rows = int(os.path.getsize(path) * (4 if str(path).endswith(".gz") else 1) / per_line)

    def cast(batch: Any) -> Any:
        arrays = [batch.column(c) for c in columns]
        arrays[0], arrays[1] = pc.cast(arrays[0], pa.string()), pc.cast(arrays[1], pa.string())
        return pa.RecordBatch.from_arrays(arrays, names=columns)

    return (cast(b) for b in stream), rows


def _sample(path: Path, size: int) -> bytes:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.read(size)


class _Progress:
    """One line on stderr, rewritten in place: events done of the total, users/s, ETA."""

    def __init__(self, total_events: int, enabled: bool) -> None:
        self.total, self.enabled = total_events, enabled
        self.start = self.last = time.perf_counter()

    def update(self, events: int, users: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and not final):
            return
        self.last = now
        elapsed = now - self.start
        share = events / max(self.total, 1)
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * int(30 * share)
        line = (f"\rrecommend [{bar:<30}] {share:6.1%}  {users:,} users, {users / max(elapsed, 1e-9):,.0f}/s, "
                f"elapsed {elapsed:,.0f}s" + ("" if final or math.isnan(eta) else f", ETA {eta:,.0f}s"))
        print(line, end="\n" if final else "", file=sys.stderr, flush=True)


def recommend_file(
    recommender: Recommender,
    histories: str | Path,
    out: str | Path,
    k: int = 10,
    *,
    exclude_seen: bool = False,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    sep: str = ",",
    fmt: str | None = None,
    out_fmt: str | None = None,
    batch_size: int = 1024,
    partition_rows: int = 4_000_000,
    block_bytes: int = 16 << 20,
    overwrite: bool = False,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> OfflineSummary:
    """Top ``k`` for every user of the log ``histories``, written to ``out`` (see the module doc)."""
    pa, pc, pcsv, ipc, pq = _pyarrow()
    histories, out = Path(histories), Path(out)
    started = time.perf_counter()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    if batch_size < 1 or partition_rows < 1:
        raise ValueError("batch_size and partition_rows must be >= 1")
    fmt, out_fmt = file_format(histories, fmt), file_format(out, out_fmt)
    columns = [user_col, item_col] + ([time_col] if time_col else [])
    stream, estimate = _batches(histories, fmt, columns, sep, block_bytes)
    n_parts = max(1, math.ceil(estimate / partition_rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp_out = scratch / ("out." + out_fmt)
    try:
        parts, events = _partition(stream, columns, n_parts, scratch, pa, ipc)
        schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                            ("score", pa.float64() if recommender.is_baseline else pa.float32()),
                            ("rank", pa.int32()), ("fallback", pa.bool_())])
        writer = (pq.ParquetWriter(tmp_out, schema) if out_fmt == "parquet" else pcsv.CSVWriter(tmp_out, schema))
        bar = _Progress(events, progress)
        users = rows = fallback = done = 0
        try:
            for table in parts():
                order = [(user_col, "ascending")] + ([(time_col, "ascending")] if time_col else []) + [
                    (_POS, "ascending")]
                table = table.sort_by(order)
                user_ids = table.column(user_col).to_numpy(zero_copy_only=False)
                items = table.column(item_col).to_numpy(zero_copy_only=False)
                starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]]) if len(user_ids) else np.empty(0, int)
                ends = np.r_[starts[1:], len(user_ids)]
                for lo in range(0, len(starts), batch_size):
                    s, e = starts[lo:lo + batch_size], ends[lo:lo + batch_size]
                    answer = recommender.recommend([items[a:b] for a, b in zip(s, e)], k=k, exclude_seen=exclude_seen)
                    cols = answer.to_columns(user_ids[s])
                    writer.write(pa.RecordBatch.from_arrays(
                        [pa.array(cols["user_id"], pa.string()), pa.array(cols["item_id"], pa.string()),
                         pa.array(cols["score"], schema.field("score").type), pa.array(cols["rank"], pa.int32()),
                         pa.array(cols["fallback"], pa.bool_())], schema=schema))
                    users, rows, done = users + len(s), rows + len(cols["rank"]), done + int((e - s).sum())
                    fallback += int(sum(answer.fallback))
                    bar.update(done, users)
                    if on_batch is not None:
                        on_batch(users)
        finally:
            writer.close()
        bar.update(done, users, final=True)
        if out.exists():
            os.replace(out, scratch / "old")  # overwrite: the old file goes only once the new one is whole
        os.replace(tmp_out, out)
    finally:
        for child in scratch.iterdir() if scratch.exists() else ():
            child.unlink()
        if scratch.exists():
            scratch.rmdir()
    return OfflineSummary(out, users, events, rows, fallback, n_parts, time.perf_counter() - started)


def _partition(stream: Iterator[Any], columns: list[str], n_parts: int, scratch: Path, pa: Any, ipc: Any):
    """Spill the stream into ``n_parts`` partitions by user (kept in memory when one); return
    an iterator factory over the partitions' tables and the number of events read."""
    position = 0
    if n_parts == 1:
        batches = []
        for batch in stream:
            batches.append(_with_position(batch, position, pa))
            position += batch.num_rows
        tables = [pa.Table.from_batches(batches)] if batches else []
        return (lambda: iter(tables)), position
    writers: dict[int, Any] = {}
    try:
        for batch in stream:
            batch = _with_position(batch, position, pa)
            position += batch.num_rows
            users = batch.column(0).to_numpy(zero_copy_only=False)
            part = np.fromiter((zlib.crc32(u.encode()) for u in users), dtype=np.int64, count=len(users)) % n_parts
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
            taken = batch.take(pa.array(order))
            for p in range(n_parts):
                if bounds[p + 1] > bounds[p]:
                    if p not in writers:
                        writers[p] = ipc.new_file(str(scratch / f"part-{p}.arrow"), taken.schema)
                    writers[p].write_batch(taken.slice(bounds[p], bounds[p + 1] - bounds[p]))
    finally:
        for w in writers.values():
            w.close()

    def tables() -> Iterator[Any]:
        for p in sorted(writers):
            path = scratch / f"part-{p}.arrow"
            with ipc.open_file(str(path)) as reader:
                table = reader.read_all()
            yield table
            del table
            path.unlink()

    return tables, position


def _with_position(batch: Any, start: int, pa: Any) -> Any:
    return pa.RecordBatch.from_arrays(
        list(batch.columns) + [pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))],
        names=list(batch.schema.names) + [_POS],
    )
