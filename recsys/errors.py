"""Typed exceptions. Imports nothing from ``recsys``."""

from __future__ import annotations

from pathlib import Path


class RecsysError(Exception):
    """Base class of every error ``recsys`` raises on purpose."""


class ConfigError(RecsysError, ValueError):
    """A configuration file or override is malformed or names an unknown key."""


class DataFormatError(RecsysError, ValueError):
    """Input data is malformed. Carries the file and, where known, line and column.

    ``line`` is 1-based and counts physical lines in the (decompressed) file, header
    included. ``column`` is the 1-based field index or the column name.
    """

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        line: int | None = None,
        column: int | str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f":{column}" if isinstance(column, int) else f" (column {column!r})"
        super().__init__(f"{where}: {message}")


class EmptyDataError(DataFormatError):
    """The input holds no usable events (empty file, header only, all rows filtered)."""


class DatasetNotFoundError(RecsysError, FileNotFoundError):
    """A dataset file is absent and cannot be downloaded."""


class ArtifactError(RecsysError, ValueError):
    """A run directory or checkpoint is incomplete or does not match the data."""
