"""benchmarks/_common.py: a waited-for child's own figures, its time limit, atomic writes, tables."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402

# ~160 MB touched, then about 0.3 s of CPU in a busy loop, then exit 3
_CHILD = """import sys, time
block = bytearray(160 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
print("done")
sys.exit(3)
"""


def test_run_and_wait_reports_the_childs_own_cpu_peak_and_exit_code(tmp_path):
    log = tmp_path / "child.log"
    run = _common.run_and_wait([sys.executable, "-c", _CHILD], log=log)
    assert run.returncode == 3 and not run.ok
    assert run.cpu_s >= 0.3 and run.wall_s >= run.cpu_s * 0.5
    assert 160 <= run.peak_rss_mb < 1000  # the child's high-water mark, not this process's
    assert run.tail() == ["done"]
    with pytest.raises(RuntimeError, match="exited with 3"):
        run.check()
    again = _common.run_and_wait([sys.executable, "-c", "print('more')"], log=log, append=True)
    assert again.ok and again.tail() == ["done", "more"]


def test_run_and_wait_kills_a_child_at_its_time_limit(tmp_path):
    run = _common.run_and_wait([sys.executable, "-c", "import time; time.sleep(30)"], log=tmp_path / "log",
                               timeout=0.5)
    assert run.returncode is None and run.wall_s < 10
    with pytest.raises(RuntimeError, match="killed at its time limit"):
        run.check()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.md"
    _common.write_atomic(path, "old")
    with pytest.raises(ZeroDivisionError):
        with _common.atomic_path(path) as tmp:
            tmp.write_text("half")
            1 / 0
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
    _common.write_atomic(path, "new")
    assert path.read_text() == "new"


def test_table_lines():
    assert _common.table(["a", "b"], "lr", [["x", 1], ["y", 2.5]]) == [
        "| a | b |", "|---|---:|", "| x | 1 |", "| y | 2.5 |"]
    with pytest.raises(ValueError):
        _common.table(["a", "b"], "l")
