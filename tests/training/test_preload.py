"""jemalloc where the platform has it (recsys.training.preload): choosing the library, the
environment of the re-executed process, the console's errors, and (where a jemalloc library
is found) a fit under jemalloc that gives the same numbers as one under glibc."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.training import preload

EXE = Path(sys.executable).with_name("recsys")


def test_the_allocator_defaults_to_the_systems_and_rejects_unknown_names():
    assert preload.requested_allocator({}) == "system"
    assert preload.requested_allocator({"RECSYS_ALLOCATOR": " JEMALLOC "}) == "jemalloc"
    with pytest.raises(ConfigError, match="RECSYS_ALLOCATOR='tcmalloc': expected one of auto, jemalloc, system"):
        preload.requested_allocator({"RECSYS_ALLOCATOR": "tcmalloc"})


def test_a_named_library_must_exist_and_wins_over_the_search(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(ConfigError, match="RECSYS_JEMALLOC=.*nope.so: no such file"):
        preload.jemalloc_library({"RECSYS_JEMALLOC": str(tmp_path / "nope.so")})
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert preload.jemalloc_library({"RECSYS_JEMALLOC": str(lib)}) == str(lib)
    monkeypatch.setattr(sys, "platform", "darwin")  # LD_PRELOAD does not apply there
    assert preload.jemalloc_library({"RECSYS_JEMALLOC": str(lib)}) is None


def test_preload_env_puts_the_library_first_once_and_keeps_a_users_malloc_conf():
    env = preload.preload_env("/lib/je.so", {"LD_PRELOAD": "/lib/a.so:/lib/je.so /lib/b.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == "/lib/je.so /lib/a.so /lib/b.so"
    assert env["MALLOC_CONF"] == preload.JEMALLOC_CONF and env["PATH"] == "/bin"
    assert preload.preload_env("/lib/je.so", {"MALLOC_CONF": "narenas:1"})["MALLOC_CONF"] == "narenas:1"
    assert preload.preload_env("/lib/je.so", {})["LD_PRELOAD"] == "/lib/je.so"


def _tiny(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(120):
        start, length = rng.integers(40), rng.integers(5, 15)
        lines += [f"u{u},i{(start + 3 * j + rng.integers(2)) % 40},{1000 + 60 * j}" for j in range(length)]
    log = tmp_path / "events.csv"
    log.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"name: tiny\nseed: 3\noutput_dir: {tmp_path / 'runs'}\n"
        f"data: {{name: t, format: csv, path: {log}, user_col: user_id, item_col: item_id, time_col: timestamp}}\n"
        "model: {dim: 16, n_blocks: 1, n_heads: 1, max_len: 10, dropout: 0.2}\n"
        "train: {batch_size: 16, lr: 0.01, max_epochs: 3, patience: 5, progress_bar: false}\n"
        "eval: {ks: [10], monitor: ndcg@10}\n")
    return cfg


def _fit(cfg: Path, run: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    for key in ("LD_PRELOAD", "MALLOC_CONF", "RECSYS_ALLOCATOR", "RECSYS_ALLOCATOR_REEXECUTED"):
        full.pop(key, None)
    full.update(env)
    return subprocess.run([str(EXE), "fit", "--config", str(cfg), "--run-dir", str(run)],
                          capture_output=True, text=True, env=full, timeout=600)


def test_the_console_refuses_a_jemalloc_it_cannot_find(tmp_path):
    cfg = _tiny(tmp_path)
    done = _fit(cfg, tmp_path / "run", RECSYS_ALLOCATOR="jemalloc", RECSYS_JEMALLOC=str(tmp_path / "missing.so"))
    assert done.returncode == 2, done.stderr
    assert "RECSYS_JEMALLOC=" in done.stderr and "missing.so: no such file" in done.stderr
    assert not (tmp_path / "run").exists()


def test_the_system_allocator_is_the_default_and_recorded_in_the_run(tmp_path):
    cfg = _tiny(tmp_path)
    done = _fit(cfg, tmp_path / "run")  # no RECSYS_ALLOCATOR: the default
    assert done.returncode == 0, done.stderr
    malloc = json.loads((tmp_path / "run" / "metrics.json").read_text())["machine"]["malloc"]
    assert malloc == ("glibc" if sys.platform.startswith("linux") else "other")


@pytest.mark.skipif(preload.jemalloc_library() is None,
                    reason="no jemalloc library on this machine (set RECSYS_JEMALLOC to test it)")
def test_a_fit_under_jemalloc_gives_the_numbers_of_a_fit_under_glibc(tmp_path):
    cfg = _tiny(tmp_path)
    runs = {}
    for allocator in ("system", "jemalloc"):
        run = tmp_path / allocator
        done = _fit(cfg, run, RECSYS_ALLOCATOR=allocator)
        assert done.returncode == 0, done.stderr
        runs[allocator] = run
    metrics = {k: json.loads((run / "metrics.json").read_text()) for k, run in runs.items()}
    assert metrics["jemalloc"]["machine"]["malloc"] == "jemalloc"
    assert metrics["system"]["machine"]["malloc"] == "glibc"
    assert metrics["jemalloc"]["test"] == metrics["system"]["test"]
    assert metrics["jemalloc"]["valid"] == metrics["system"]["valid"]
    ranks = {k: np.load(run / "ranks.npz") for k, run in runs.items()}
    for key in ranks["system"].files:
        np.testing.assert_array_equal(ranks["jemalloc"][key], ranks["system"][key])
    # trim_freed_memory purges jemalloc's arenas there (the TrimFreedMemory callback's call)
    code = ("from recsys.training.allocator import allocator_name, trim_freed_memory;"
            "assert allocator_name() == 'jemalloc' and trim_freed_memory()")
    env = preload.preload_env(preload.jemalloc_library())
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
