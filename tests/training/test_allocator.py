"""recsys.training.allocator: freed memory stays with the process, so it is not faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Ten 8 MB buffers written, then all freed, five times over: the shape of a training step.
# Prints the minor page faults of the last four rounds (the first touches the pages anyway).
_ROUNDS = """
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from recsys.training.allocator import retain_freed_memory
    assert retain_freed_memory()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [np.ones(1 << 20) for _ in range(10)]
    del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_retained_memory_is_not_faulted_in_again():
    # glibc's defaults hand part of the freed 80 MB back each round and fault it in again
    # (about 5k faults a round here: numpy asks for huge pages where it can); retained, none
    one_buffer = (8 << 20) // 4096  # 2,048 small pages
    assert _faults("default") > 2 * one_buffer
    assert _faults("retain") < one_buffer // 10


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_retain_freed_memory_is_idempotent():
    from recsys.training.allocator import retain_freed_memory

    assert retain_freed_memory() and retain_freed_memory()


def test_retain_memory_is_cosmetic():
    """An allocator setting cannot change a result, so it does not change the config hash."""
    from recsys.config import ExperimentConfig
    from recsys.report.results import config_hash

    cfg = ExperimentConfig()
    assert cfg.train.retain_memory
    assert config_hash(cfg.with_overrides(["train.retain_memory=false"])) == config_hash(cfg)


# 64 buffers of 4 MB written and freed under the retain settings (kept in the heap), with a
# small block allocated after them; prints RSS (MB) after the free, then after the trim.
_TRIM = """
from pathlib import Path
import numpy as np
from recsys.training.allocator import retain_freed_memory, trim_freed_memory
assert retain_freed_memory()
def rss():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024
buffers = [np.ones(1 << 19) for _ in range(64)]
tail = np.ones(16)
del buffers
kept = rss()
trim_freed_memory()
print(kept, rss())
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_hands_the_kept_pages_back():
    out = subprocess.run([sys.executable, "-c", _TRIM], capture_output=True, text=True, check=True)
    kept, trimmed = map(float, out.stdout.split())
    assert kept - trimmed > 128  # of the 256 MB freed and kept, most goes back


def _planted_cfg(tmp_path, trim: bool):
    from recsys.config import ExperimentConfig
    from recsys.data.synthetic import planted_markov_log

    path = tmp_path / "events.csv"
    log = planted_markov_log(n_users=64, n_items=20, p_follow=0.6, min_len=5, max_len=12, seed=1)
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)
    return ExperimentConfig.from_dict({
        "name": "trim", "seed": 1, "output_dir": str(tmp_path),
        "data": {"name": "planted", "format": "csv", "path": str(path)},
        "model": {"dim": 8, "n_blocks": 1, "n_heads": 1, "max_len": 6},
        "train": {"batch_size": 16, "max_epochs": 3, "patience": 10, "progress_bar": False, "num_threads": 1,
                  "trim_memory": trim},
    })


@pytest.mark.parametrize("trim", [True, False])
def test_fit_trims_before_validation_and_at_each_epoch_end(tmp_path, monkeypatch, trim):
    from recsys.training import allocator
    from recsys.training.run import fit

    calls, bounds = [], []
    monkeypatch.setattr(allocator, "trim_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(allocator, "bound_kernel_caches", lambda: bounds.append(1) or {})
    result = fit(_planted_cfg(tmp_path, trim), tmp_path / "run")
    assert result.metrics["epochs"] == 3
    assert len(calls) == (2 * 3 if trim else 0)  # not in the final validate / test passes
    assert len(bounds) == (1 if trim else 0)


def test_trim_memory_is_cosmetic():
    from recsys.config import ExperimentConfig
    from recsys.report.results import config_hash

    cfg = ExperimentConfig()
    assert cfg.train.trim_memory
    assert config_hash(cfg.with_overrides(["train.trim_memory=false"])) == config_hash(cfg)


# bf16 products of 300 shapes (forward and backward), as length groups make them; prints
# malloc's in-use MB after them. oneDNN and ideep cache a kernel per shape (1,024 each).
_SHAPES = """
import ctypes, sys
import torch
from recsys.training.allocator import bound_kernel_caches
if sys.argv[1] == "bound":
    bound_kernel_caches()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
torch.set_num_threads(1)
w = torch.randn(64, 192, dtype=torch.bfloat16, requires_grad=True)
for rows in range(8, 8 * 301, 8):
    (torch.randn(rows, 64, dtype=torch.bfloat16) @ w).sum().backward()
print(libc.mallinfo2().uordblks / 2**20)
"""


def _in_use_after_shapes(mode: str) -> float:
    from recsys.training.allocator import KERNEL_CACHES

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHES}
    out = subprocess.run([sys.executable, "-c", _SHAPES, mode], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallinfo2")
def test_bound_kernel_caches_stops_the_in_use_growth():
    default = _in_use_after_shapes("default")
    if default < 300:
        pytest.skip(f"this torch keeps no per-shape bf16 kernels here ({default:.0f} MB in use)")
    assert default - _in_use_after_shapes("bound") > 150  # about 630 against 160 MB here
