"""Keep freed heap memory in the process, so that training steps reuse pages.

A training step allocates and frees the same large buffers (activations, logit chunks,
gradients) every time. glibc's malloc hands memory above its trim threshold back to the
kernel when it is freed, and serves large requests with fresh ``mmap`` regions, so the next
step faults the same pages in again, each one zeroed by the kernel. In a four-epoch run of
the issue-6 ML-1M benchmark (fast path) that was 1.3 to 1.5 M minor page faults and 3.5 to
4 s of system time; with the settings below, 0.41 to 0.51 M (about the process's peak
footprint, touched once) and 1.9 to 2.1 s. What that does to the wall clock stayed within
this 2-core machine's run-to-run noise (about 10%) in alternating runs. The arithmetic is
untouched: runs give the same numbers either way.

The cost is that memory freed after the peak stays with the process (its peak RSS is
unchanged) rather than going back to the system until it exits.

Over a long run that cost grew (issue 19): with the library defaults, the ML-1M benchmark's
peak RSS climbed from 1.8 GB after 3 epochs to 2.6 GB after 110. Live tensors and Python
objects stay constant; malloc's in-use bytes do not (``mallinfo2``, ``benchmarks/memory.py``).
bf16 products run through oneDNN, and length groups give nearly every batch new shapes, so oneDNN's primitive cache and ideep's computation cache, 1,024
kernels each, fill up: in-use heap went from 190 to 750 MB over the first two epochs, then
stayed there while the full caches kept replacing entries. Those long-lived blocks land
between the steps' large transient buffers, freed holes no longer fit the next request, and
the heap grows around them (1.65 GB of heap for 0.75 GB in use by epoch 10, 25 MB more each
epoch); with trimming off, every page it ever touched stays resident.

Two measures, both on with ``train.trim_memory`` (``TrimFreedMemory``):

- ``bound_kernel_caches`` caps both caches at ``KERNEL_CACHE_CAPACITY`` kernels, so the
  in-use heap stays bounded and the heap stops growing. With 8 entries (the first cap) a
  quiet issue-6 step took 317 ms against 226 ms uncapped: the caches missed on most
  products. ``train.length_bucket`` now rounds the length groups' widths to a few shapes
  (``recsys.nn.kernels.grouped``), which 256 entries hold: 213 ms a step.
- ``trim_freed_memory`` (``malloc_trim(0)``) before validation and at each epoch's end hands
  free pages back where the allocation pattern changes; within a phase, steps still reuse
  kept pages. With the trim alone the peak still grew 10% from epoch 10 to 20.

What glibc still does with both (session 12, per-step probes of the ML-1M partial): malloc's
in-use bytes stay flat (about 320 MB), but the placement of a step's transient buffers in its
heap varies with the batches' length groups, so the heap (and the pages of it that a phase
touches) grows in rare steps: at epoch 13 the peak stepped from 1.05 to 1.12 GB (+6%), during
validation, then stayed there through epoch 39. A lower mmap threshold (1 MiB) did not stop it
and cost 3 to 7 times the page faults; skipping the trim before validation made it worse
(+10%). jemalloc, whose size classes reuse a freed buffer for the next one of its class,
held the peak within 0.5% of its epoch-10 value through epoch 100 (0.90 GB; on a 1M-item
catalogue 7.1 GB, +0.2%), with 7 times glibc's page faults (``benchmarks/SPEED.md``;
``recsys.training.preload`` runs the ``recsys`` command under it with
``RECSYS_ALLOCATOR=jemalloc``; ``trim_freed_memory`` then purges jemalloc's arenas instead).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import pytorch_lightning as pl

from recsys.training.preload import jemalloc_mallctl

# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim the heap's top while running
TOP_PAD = 64 << 20  # grow the heap 64 MiB beyond each request: fewer brk calls
# glibc serves requests above this from mmap; 32 MiB is the most it accepts on 64-bit
# (HEAP_MAX_SIZE / 2) and the value its own dynamic threshold climbs to at best
MMAP_THRESHOLD = 32 << 20

# oneDNN's primitive cache and ideep's computation cache: 1,024 kernels each by default. Each
# reads its capacity from the environment once, when the process builds its first kernel.
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
KERNEL_CACHE_CAPACITY = 256
_MALLCTL_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL: "every arena" in an arena.<i> name

_applied = False


def retain_freed_memory() -> bool:
    """Set glibc malloc to keep freed memory (see the module docstring); once per process.

    Returns whether the settings are in force: False where the C library is not glibc
    (macOS, Windows, musl), where there is nothing to set."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    return _applied


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def allocator_name() -> str:
    """Which ``malloc`` this process runs: "jemalloc", "glibc" or "other"."""
    if jemalloc_mallctl() is not None:
        return "jemalloc"
    return "glibc" if _glibc() is not None else "other"


def trim_freed_memory() -> bool:
    """Give the pages of free memory inside the allocator's heaps back to the kernel; what is
    in use stays. glibc: ``malloc_trim(0)`` (every arena, not only the top of the heap);
    jemalloc: purge every arena's dirty pages (``arena.<MALLCTL_ARENAS_ALL>.purge``).
    Returns whether it ran; False where the C library is neither."""
    mallctl = jemalloc_mallctl()
    if mallctl is not None:
        return mallctl(f"arena.{_MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return bool(libc.malloc_trim(0))


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> dict[str, str]:
    """Cap oneDNN's and ideep's kernel caches (see the module docstring) unless the
    environment already names a capacity. Takes effect only if no bf16 product has run in
    this process yet (the caches read the setting once); returns the capacities in force."""
    for name in KERNEL_CACHES:
        os.environ.setdefault(name, str(capacity))
    return {name: os.environ[name] for name in KERNEL_CACHES}


class TrimFreedMemory(pl.Callback):
    """``bound_kernel_caches`` at setup, before the first training step; then
    ``trim_freed_memory`` when training hands over to validation and at each epoch's end
    (after validation, checkpoints and logging): where the allocation pattern changes and
    memory kept from the last phase would not be reused (see the module docstring).

    Costs a page fault for each page that the next phase touches again, twice an epoch,
    instead of the allocator's slow growth (``benchmarks/memory.py`` measures both)."""

    def __init__(self) -> None:
        self.trims = 0

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        bound_kernel_caches()  # before the first training step builds a kernel

    def _trim(self) -> None:
        trim_freed_memory()
        self.trims += 1

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # not Trainer.validate / test
            self._trim()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._trim()
