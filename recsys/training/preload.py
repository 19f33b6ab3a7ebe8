"""Run training under jemalloc on request (issue 19: memory that stays flat).

glibc's malloc serves the transient buffers of a training step (activations, logit chunks,
attention scores: a few MB each, in sizes that change with every batch's length groups) from
one heap. Over a long run their placement fragments that heap: on the ML-1M partial
(``benchmarks/memory.py``) the process's peak RSS stepped up 6% at epoch 13 and stayed there,
with malloc's in-use bytes flat (``recsys.training.allocator`` has the evidence). jemalloc
serves each size class from its own runs, so freed buffers are reused by the next step's
buffers of the same class and the peak stays where the first epochs put it.

A process cannot swap its allocator once it has started, so the ``recsys`` command replaces
itself (``os.execve``, same process id, same arguments) with a copy that has jemalloc in
``LD_PRELOAD``, before it imports torch. Which allocator, from the environment:

- ``RECSYS_ALLOCATOR=system`` (the default): the system's malloc, with
  ``recsys.training.allocator``'s settings; never re-execute;
- ``RECSYS_ALLOCATOR=jemalloc``: jemalloc, and an error if it is not found;
- ``RECSYS_ALLOCATOR=auto``: jemalloc if the library is found, else the system's malloc.

Why jemalloc is not the default: it slows validation. On the ML-1M partial
(``benchmarks/memory.py``, 100 epochs, one thread on a shared core) it took 1.04 M minor page
faults and 1.8 s of system time an epoch (median), against glibc's 0.15 M and 0.3 s, for about
the same CPU time (10.3 s an epoch, glibc 10.2 s in a 20-epoch run under another load). Timed
quietly (``benchmarks/speed.py --sections epoch --datasets ml-1m-partial --epochs 3``, 2
threads, everything else paused): training 5.7 s an epoch against glibc's 5.8 s (fast path
5.2 / 5.3), validation 1.0 s against 0.7 s (0.9 / 0.7): its buffers over 32 MiB are returned
and faulted in again every batch. Set it for runs where memory matters more: hours of tuning,
or a large catalogue.
A 3-epoch probe with ``muzzy_decay_ms:-1`` brought the faults
back to glibc's level, but then the pages jemalloc gives back are only freed lazily
(``MADV_FREE``), which RSS still counts, its oversize arena's included (below), so it was not
adopted without a long run.

The library is ``RECSYS_JEMALLOC`` (a path) if set, else the first of ``JEMALLOC_PATHS`` that
exists, else what ``ctypes.util.find_library("jemalloc")`` names (Debian and Ubuntu:
``apt install libjemalloc2``; Fedora: ``dnf install jemalloc``). ``JEMALLOC_CONF`` (unless
``MALLOC_CONF`` is already set) keeps freed pages in the process, as
``retain_freed_memory`` does for glibc, and ``TrimFreedMemory`` purges them at the same phase
boundaries as it trims glibc's heaps. The allocator changes no arithmetic: runs give the same
numbers either way (``tests/training/test_preload.py`` compares two fits bit for bit).

Code that calls ``recsys.training.run.fit`` from its own process chooses its allocator
itself: ``preload_env`` gives the environment for a child process.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

from recsys.errors import ConfigError

ALLOCATOR_ENV, LIBRARY_ENV = "RECSYS_ALLOCATOR", "RECSYS_JEMALLOC"
ALLOCATORS = ("auto", "jemalloc", "system")
_REEXECUTED = "RECSYS_ALLOCATOR_REEXECUTED"  # set in the re-executed process: never loop
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
# Keep freed pages (TrimFreedMemory purges them between phases; the 10-minute decay only
# returns what a long phase left unused), but hand buffers over 32 MiB back at once, as glibc
# does above its mmap threshold (recsys.training.allocator.MMAP_THRESHOLD): jemalloc serves them
# from its oversize arena, which it purges eagerly only while the decay time is positive.
# With "dirty_decay_ms:-1" (never) the 1M-item run's validation buffers (a GB each) stayed
# resident: 11.2 GB at the epoch's end, against 3.6 GB with this setting and 3.7 GB under glibc.
JEMALLOC_CONF = "dirty_decay_ms:600000,muzzy_decay_ms:0,oversize_threshold:33554432"


def requested_allocator(environ: dict[str, str] | None = None) -> str:
    """``RECSYS_ALLOCATOR`` (default "system"); a ConfigError names the accepted values."""
    value = (os.environ if environ is None else environ).get(ALLOCATOR_ENV, "system").strip().lower() or "system"
    if value not in ALLOCATORS:
        raise ConfigError(f"{ALLOCATOR_ENV}={value!r}: expected one of {', '.join(ALLOCATORS)}")
    return value


def jemalloc_library(environ: dict[str, str] | None = None) -> str | None:
    """The jemalloc shared library to preload, or None where none is found (never on macOS or
    Windows, where ``LD_PRELOAD`` does not apply). A ``RECSYS_JEMALLOC`` that names no file
    is a ConfigError, not a silent fallback."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    named = environ.get(LIBRARY_ENV)
    if named:
        if not Path(named).is_file():
            raise ConfigError(f"{LIBRARY_ENV}={named}: no such file")
        return named
    for path in JEMALLOC_PATHS:
        if Path(path).is_file():
            return path
    return ctypes.util.find_library("jemalloc")


def preload_env(library: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` with ``library`` first in ``LD_PRELOAD`` and ``MALLOC_CONF`` set
    to ``JEMALLOC_CONF`` unless it is set already."""
    env = dict(os.environ if environ is None else environ)
    preloaded = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != library]
    env["LD_PRELOAD"] = " ".join([library, *preloaded])
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return env


def jemalloc_mallctl():
    """jemalloc's ``mallctl`` where jemalloc serves this process's ``malloc`` (its symbol is in
    the global table: preloaded with ``LD_PRELOAD``); None otherwise."""
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = (ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    mallctl.restype = ctypes.c_int
    return mallctl


def reexecute_under_jemalloc(argv: list[str]) -> None:
    """Replace this process with ``python -m recsys.cli argv`` under jemalloc, as
    ``RECSYS_ALLOCATOR`` asks (see the module docstring); return if it asks for nothing,
    if jemalloc already serves this process or this process is already the re-executed one,
    or ("auto") if no library is found. Call it before anything else has run."""
    choice = requested_allocator()
    if choice == "system" or jemalloc_mallctl() is not None:
        return
    if os.environ.get(_REEXECUTED):  # the loader could not preload the library (it said why)
        if choice == "jemalloc":
            raise ConfigError(f"{ALLOCATOR_ENV}=jemalloc: {os.environ.get('LD_PRELOAD')} did not load")
        return
    library = jemalloc_library()
    if library is None:
        if choice == "jemalloc":
            raise ConfigError(
                f"{ALLOCATOR_ENV}=jemalloc, but no jemalloc library was found (looked for {LIBRARY_ENV}, "
                f"{', '.join(JEMALLOC_PATHS)} and the linker's search path); install it "
                "(Debian/Ubuntu: apt install libjemalloc2) or set RECSYS_ALLOCATOR=system")
        return
    env = preload_env(library)
    env[_REEXECUTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "recsys.cli", *argv], env)
