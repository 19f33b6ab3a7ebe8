"""What the benchmark scripts share: the machine, child processes, atomic writes, markdown tables.

A script that needs one of them starts like this, which also puts this checkout first on
``sys.path``, so that it measures this checkout's ``recsys`` whatever is installed:

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
    from _common import ROOT, ...

- **the machine**: ``machine()`` (CPU, SIMD flags, memory, versions: the "Machine" section
  of SPEED.md, SERVING.md, LARGE_CATALOGUE.md), ``hardware()`` (the short form in each
  benchmark run's ``result.json``), ``load_average()``, and this process's memory
  (``process_memory_kib``, ``peak_rss_gb``);
- **a child process, waited for**: ``run_and_wait`` (its exit code, wall and CPU time and
  peak RSS, output into a log), ``run_worker`` (this script again, in a fresh process, for
  a JSON result) and ``fit_in_child`` (``recsys fit`` through the public CLI into a run
  directory, resuming an interrupted one: the benchmark runner and the planted benchmark);
- **atomic writes**: ``write_atomic`` and ``atomic_path`` (a reader sees the old file or the
  new one, never half of one);
- **markdown tables**: ``table`` and ``table_row``.

It uses only public names from ``recsys`` (``recsys.rundir``, ``recsys.report.results``,
``recsys.training.provenance``), imported where they are needed, so that the machine and
file helpers work in any environment.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # measure this checkout's recsys, whatever is installed
    sys.path.insert(0, str(ROOT))
DATA_DIR = ROOT.parent / "shared" / "datasets"  # where the Makefile points RECSYS_DATA_DIR


def data_dir() -> Path:
    """``RECSYS_DATA_DIR``, or the shared datasets folder the Makefile uses."""
    return Path(os.environ.get("RECSYS_DATA_DIR") or DATA_DIR)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, with ``extra`` and ``RECSYS_DATA_DIR`` set as the Makefile sets it."""
    env = {**os.environ, **extra}
    env.setdefault("RECSYS_DATA_DIR", str(DATA_DIR))
    return env


# ---- the machine -----------------------------------------------------------------------------


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says, else ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine() -> dict[str, str]:
    """The machine a benchmark ran on, as its markdown's "Machine" section lists it."""
    info = {"cpu": platform.processor() or "unknown", "cores": str(os.cpu_count())}
    fields = _lscpu()
    if fields:
        info["cpu"] = fields.get("Model name", info["cpu"])
        info["cores"] = f"{fields.get('CPU(s)', '?')} CPUs ({fields.get('Core(s) per socket', '?')} cores/socket, " \
                        f"{fields.get('Thread(s) per core', '?')} thread/core)"
        flags = fields.get("Flags", "").split()
        info["simd"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
        info["hypervisor"] = fields.get("Hypervisor vendor", "none")
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory"] = f"{int(mem) / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    info["platform"] = platform.platform()
    for name in ("torch", "onnxruntime", "onnx", "numpy", "safetensors"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    info["python"] = platform.python_version()
    return info


def hardware() -> dict:
    """The short machine description a benchmark run's ``result.json`` keeps."""
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "memory_gb": memory_gb, "platform": platform.platform(),
            "accelerator": "cpu"}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.02 0.98 0.75"``; ``"?"`` where there are none."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def process_memory_kib() -> dict[str, int]:
    """This process's VmRSS, VmHWM (the RSS high-water mark), RssAnon and RssFile in KiB
    (``/proc/self/status``); {} where there is no such file."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in keys}


def peak_rss_gb() -> float:
    """This process's RSS high-water mark so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


# ---- a child process, waited for ---------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A child process after its end: ``returncode`` None when it was killed at its time limit."""

    command: list[str]
    returncode: int | None
    wall_s: float
    cpu_s: float  # user + system time of the child (and of the children it waited for)
    peak_rss_mb: float  # the child's own high-water mark
    log: Path | None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> list[str]:
        """The log's last lines (none without a log)."""
        if self.log is None or not self.log.is_file():
            return []
        return self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]

    def check(self) -> Finished:
        """Itself, or RuntimeError naming the command, how it ended and the log's tail."""
        if self.ok:
            return self
        how = f"killed at its time limit after {self.wall_s:.0f} s" if self.returncode is None else \
            f"exited with {self.returncode}"
        where = f"; log {self.log}:\n  " + "\n  ".join(self.tail(5)) if self.log is not None else ""
        raise RuntimeError(f"{' '.join(map(str, self.command))} {how}{where}")


def run_and_wait(command: Sequence[str], *, log: Path | None = None, append: bool = False,
                 env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float | None = None) -> Finished:
    """Run ``command`` in a child process and wait for it.

    Its output (stdout and stderr) goes to ``log`` (appended to with ``append``), or to this
    process's own without one. Past ``timeout`` seconds it is killed. Wall time is measured
    here; CPU time and peak RSS are the child's own, from ``wait4`` (on a shared machine the
    wall time of a one-thread run grows with the load, its CPU time stays near what an idle
    core takes).
    """
    command = [str(c) for c in command]
    handle = log.open("a" if append else "w", encoding="utf-8") if log is not None else None
    try:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT if handle is not None else None)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            child.kill()

        timer = threading.Timer(timeout, kill) if timeout is not None else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        wall = time.perf_counter() - start
    finally:
        if handle is not None:
            handle.close()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return Finished(command, None if killed.is_set() else child.returncode, wall, usage.ru_utime + usage.ru_stime,
                    usage.ru_maxrss / 1024, log)


def run_worker(script: Path, args: Sequence[str], result: Path, env: dict[str, str] | None = None) -> dict:
    """``script`` again in a fresh process (``python script *args --result RESULT``), so that what
    it measures (a peak, a heap) is its own; the JSON document it wrote to ``result``."""
    run_and_wait([sys.executable, str(script), *args, "--result", str(result)], env=env).check()
    return json.loads(result.read_text(encoding="utf-8"))


def fit_command(config: Path, run_dir: Path, overrides: Sequence[str] = ()) -> list[str]:
    """``recsys fit --config CONFIG --run-dir RUN_DIR OVERRIDES...`` in this interpreter."""
    return [sys.executable, "-m", "recsys.cli", "fit", "--config", str(config), "--run-dir", str(run_dir), *overrides]


def unfinished_action(run_dir: Path, expected_hash: str) -> str:
    """What to do with ``<run_dir>.partial`` before fitting into ``run_dir``.

    ``fresh``: nothing there. ``resume``: an interrupted run of the same config (SIGTERM,
    Ctrl-C, or a process killed outright: its status still says running, its pid is gone)
    with an epoch-end checkpoint; ``recsys fit --resume`` continues it, and the result is
    the uninterrupted run's. ``restart``: anything else (a failed run, another config, no
    checkpoint yet); it is deleted and the run starts over. ``busy``: a live process is
    still writing it; it is left alone.
    """
    from recsys import rundir
    from recsys.report.results import run_config_hash
    from recsys.training.provenance import process_alive

    partial = rundir.partial_dir(run_dir)
    if not partial.exists():
        return "fresh"
    if process_alive(rundir.running_pid(partial)):
        return "busy"
    if rundir.is_resumable(partial) and run_config_hash(partial) == expected_hash:
        return "resume"
    return "restart"


def fit_in_child(config: Path, run_dir: Path, overrides: Sequence[str], expected_hash: str,
                 log: Path | None = None, env: dict[str, str] | None = None) -> Finished:
    """``recsys fit`` of ``config`` with ``overrides`` into ``run_dir``, through the public CLI in
    a child process, waited for; its output into ``log`` (or this process's own).

    A finished ``run_dir`` there is replaced. What ``<run_dir>.partial`` holds decides how the
    run starts (``unfinished_action``, given the hash of the config this call runs): resumed
    (its log appended to), or started over. Raises RuntimeError when a live process owns the
    partial run (left alone) or when the child fails (with the log's tail)."""
    from recsys import rundir

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = rundir.partial_dir(run_dir)
    action = unfinished_action(run_dir, expected_hash)
    if action == "busy":
        raise RuntimeError(f"{partial} belongs to a running process; left alone")
    if action == "restart":
        shutil.rmtree(partial)
    if action == "resume":
        print(f"    resuming the interrupted run in {partial.name}", flush=True)
        command = [sys.executable, "-m", "recsys.cli", "fit", "--resume", str(run_dir)]
    else:
        command = fit_command(config, run_dir, overrides)
    return run_and_wait(command, log=log, append=action == "resume", env=child_env() if env is None else env).check()


# ---- atomic writes -----------------------------------------------------------------------------


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---- markdown tables ---------------------------------------------------------------------------


def table_row(cells: Iterable[object]) -> str:
    """One markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], align: str, rows: Iterable[Iterable[object]] = ()) -> list[str]:
    """A markdown table's lines: the header, the separator (``align``: one letter a column,
    ``l`` left or ``r`` right), then one line a row."""
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns, {len(align)} alignments")
    separator = "|" + "".join({"l": "---|", "r": "---:|"}[a] for a in align)
    return [table_row(header), separator, *(table_row(r) for r in rows)]
