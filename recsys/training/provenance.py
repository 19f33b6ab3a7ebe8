"""What a result needs to be reproduced: versions, git commit, machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "recsys-lab"  # pyproject.toml [project] name
PACKAGES = ("torch", "pytorch-lightning", "numpy", "pandas", "pyarrow")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    try:  # this package under its distribution name (the import name is recsys)
        out["recsys"] = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        out["recsys"] = "not installed"
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """HEAD of the checkout that holds this package, with ``-dirty`` for local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def machine() -> dict[str, object]:
    """Platform, processor, CPU count, and which ``malloc`` served the run (glibc, jemalloc:
    ``recsys.training.preload``); the allocator changes memory, never the numbers."""
    from recsys.training.allocator import allocator_name

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "malloc": allocator_name()}


def process_alive(pid: object) -> bool:
    """Whether a process with this pid runs on this machine (a status file's ``pid``, say).

    Anything but a positive int is no process. A pid owned by another user still counts."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
