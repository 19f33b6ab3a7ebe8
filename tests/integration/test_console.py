"""What `recsys fit` shows: no banners, adverts or deprecation warnings; a progress bar and
one line per epoch whose numbers are the run's own; a resume hint on Ctrl-C or SIGTERM; no
run directory for a run that fails before training; `--version` and a true `fit --help`."""

import csv
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import recsys
from recsys import rundir
from recsys.cli import build_parser, main
from recsys.config import ExperimentConfig
from recsys.data.synthetic import planted_markov_log

EXE = str(Path(sys.executable).with_name("recsys"))
EPOCH_LINE = re.compile(r"^epoch (\d+)  loss (\d+\.\d{4})  valid ndcg@10 (\d\.\d{4}) hr@10 (\d\.\d{4})  "
                        r"\d+\.\ds(  best)?$")
NOISE = ("GPU available", "TPU available", "HPU available", "litlogger", "LitLogger", "litmodels", "Tip:",
         "deprecated", "Deprecation", "FutureWarning", "Warning", "warn(", "Detected KeyboardInterrupt",
         "`Trainer.fit` stopped", "LOCAL_RANK")


def _config(tmp: Path, data: Path, max_epochs: int, progress_bar: bool = True) -> Path:
    cfg = tmp / "exp.yaml"
    cfg.write_text(f"""
name: tiny
seed: 5
output_dir: {tmp / 'runs'}
data: {{name: planted, format: csv, path: {data}}}
model: {{dim: 16, n_blocks: 1, n_heads: 1, max_len: 10, dropout: 0.1}}
train: {{batch_size: 64, lr: 0.005, max_epochs: {max_epochs}, patience: 50, num_threads: 1,
        progress_bar: {str(progress_bar).lower()}}}
eval: {{ks: [1, 10], monitor: ndcg@10}}
""")
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # half the next items are planted, half uniform: the metrics move and stay below 1
    log = planted_markov_log(n_users=400, n_items=60, p_follow=0.5, min_len=5, max_len=15, seed=4)
    path = tmp_path_factory.mktemp("console-data") / "events.csv"
    log.frame.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(path, index=False)
    return path


def _csv_epochs(run: Path) -> dict[int, dict[str, float]]:
    epochs: dict[int, dict[str, float]] = {}
    with (run / rundir.CSV_LOG).open(newline="") as f:
        for row in csv.DictReader(f):
            epochs.setdefault(int(row["epoch"]), {}).update(
                {k: float(v) for k, v in row.items() if v and k not in ("epoch", "step")})
    return epochs


def test_fit_console_is_quiet_and_each_epoch_line_is_the_runs_numbers(data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([EXE, "fit", "--config", str(_config(tmp_path, data, 4)), "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in NOISE:
        assert noise not in proc.stdout + proc.stderr, noise
    lines = proc.stdout.splitlines()
    assert lines[0] == f"fitting tiny on planted (seed 5) into {run}"
    epoch_lines = [m for m in map(EPOCH_LINE.match, lines) if m]
    m = rundir.read_metrics(run)
    logged = _csv_epochs(run)
    assert m["epochs"] == 4 and [int(e.group(1)) for e in epoch_lines] == [0, 1, 2, 3] == sorted(logged)
    values = [logged[e]["val/ndcg@10"] for e in range(4)]
    assert len(set(values)) > 1 and max(values) < 0.9  # numbers that could be shown wrong
    best_so_far = [v > max(values[:e], default=-1.0) for e, v in enumerate(values)]
    for line, (epoch, expected) in zip(epoch_lines, logged.items()):
        assert line.group(2) == f"{expected['train/loss_epoch']:.4f}"
        assert line.group(3) == f"{expected['val/ndcg@10']:.4f}"
        assert line.group(4) == f"{expected['val/hr@10']:.4f}"
        assert bool(line.group(5)) == best_so_far[epoch], epoch
    # the best epoch's line carries the validation numbers metrics.json reports for the run
    best_line = epoch_lines[m["best_epoch"]]
    assert best_line.group(5) and best_line.group(3) == f"{m['valid']['ndcg@10']:.4f}"
    assert f"run directory: {run}" in proc.stdout
    # one tqdm bar per epoch, with its ETA field ([elapsed<remaining]) on stderr. Which of a
    # bar's refreshes reach the terminal depends on timing (tqdm redraws at most every 0.1 s),
    # so the remaining time may still read "?" (no rate yet) in every line a short epoch drew.
    bars = proc.stderr.replace("\r", "\n")
    for epoch in range(4):
        assert re.search(rf"^epoch {epoch}: +\d+%\|.*\| \d+/\d+ \[\d\d:\d\d<(\d\d:\d\d|\?)", bars, re.M), epoch


def test_a_run_whose_data_fails_leaves_no_directory(tmp_path):
    cfg = _config(tmp_path, tmp_path / "missing.csv", 2)
    proc = subprocess.run([EXE, "fit", "--config", str(cfg)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "recsys: error:" in proc.stderr and "missing.csv" in proc.stderr
    assert not (tmp_path / "runs").exists()  # neither the run nor an empty .partial
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu1,c,later\n")
    proc = subprocess.run([EXE, "fit", "--config", str(_config(tmp_path, garbled, 2)), "--run-dir",
                           str(tmp_path / "runs" / "x")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and f"{garbled}:4" in proc.stderr
    assert not (tmp_path / "runs").exists()


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_prints_the_resume_command_and_it_works(data, tmp_path, sig):
    run = tmp_path / "my run"  # a space: the hint must quote it
    partial = rundir.partial_dir(run)
    err = (tmp_path / "stderr.txt").open("w")
    # the child starts with SIGINT at its default, as from a shell: a disposition of SIG_IGN or a
    # blocked SIGINT in this process (Lightning ignores SIGINT after an in-process interrupt)
    # would be inherited across exec, and Python would then never raise KeyboardInterrupt
    proc = subprocess.Popen([EXE, "fit", "--config", str(_config(tmp_path, data, 12, progress_bar=False)),
                             "--run-dir", str(run)], stdout=subprocess.DEVNULL, stderr=err,
                            preexec_fn=_default_signals)
    deadline = time.time() + 600
    while not rundir.has_last_checkpoint(partial):  # interrupt after the first epoch
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=300) == 128 + sig  # as a shell reports a process the signal ended
    err.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    command = f"recsys fit --resume {shlex.quote(str(run))}"
    assert command in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert rundir.status_of(partial) == rundir.INTERRUPTED and not run.exists()
    done = subprocess.run([EXE, *shlex.split(command)[1:]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert rundir.is_complete(run) and rundir.read_metrics(run)["epochs"] == 12


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"recsys {recsys.__version__}"


def test_fit_help_names_the_run_directory_that_fit_makes(tmp_path):
    from recsys.training.run import default_run_dir

    fit_parser = build_parser()._subparsers._group_actions[0].choices["fit"]
    text = re.sub(r"-\s+", "-", " ".join(fit_parser.format_help().split()))  # argparse wraps at hyphens
    spelled = re.search(r"default: (\S+),", text).group(1)
    assert spelled == "<output_dir>/<data.name>-<name>-seed<seed>-<YYYYmmdd-HHMMSS>"
    assert "the start time in UTC" in text and ".partial" in text
    cfg = ExperimentConfig().with_overrides([f"output_dir={tmp_path}", "name=abc", "seed=9", "data.name=dset"])
    before = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    made = default_run_dir(cfg)
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    pattern = (re.escape(spelled).replace(re.escape("<output_dir>"), re.escape(str(tmp_path)))
               .replace(re.escape("<data.name>"), "dset").replace(re.escape("<name>"), "abc")
               .replace(re.escape("<seed>"), "9").replace(re.escape("<YYYYmmdd-HHMMSS>"), r"(\d{8}-\d{6})"))
    found = re.fullmatch(pattern, str(made))
    assert found, (pattern, made)
    assert before <= datetime.strptime(found.group(1), "%Y%m%d-%H%M%S") <= after
