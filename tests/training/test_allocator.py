"""recsys.training.allocator: freed memory stays with the process, so it is not faulted in again."""

from __future__ import annotations

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
