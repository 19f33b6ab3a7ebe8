"""A small mutation check: break the code on purpose and see a test fail.

    .venv/bin/python benchmarks/mutants.py                   # every mutant, ~3 minutes on one core
    .venv/bin/python benchmarks/mutants.py --list            # names, what each breaks, its tests
    .venv/bin/python benchmarks/mutants.py optimistic-ties loo-train-leak   # some of them
    .venv/bin/python benchmarks/mutants.py --ref HEAD        # mutate a commit, not the working tree

Each mutant is a list of exact string replacements in ``recsys/`` files (each ``old`` must
occur exactly once). For each, the repository's files (tracked and untracked-but-not-ignored,
as they are in the working tree, or those of ``--ref``) are copied to a temporary directory,
the edits are applied there, and the mutant's test files (all part of ``make test``) run
there with pytest, with ``PYTHONPATH`` pointing at the copy so that every import, the
``recsys`` console script's included, reads the mutated code. The real tree is never
touched. A mutant is *killed* when a test fails (every failed test is listed, with the first
line of its error), *survived* when all its tests pass. First the same tests run once on
the unmutated copy (the baseline; ``--no-baseline`` skips it): if they fail there, nothing
is mutated and the exit status is 2. Otherwise it is 1 if any mutant survived or could not
be applied. Not part of ``make test``: it reruns test files once per mutant.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_TESTS = "tests/integration/test_eval_protocol.py"


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the repository root
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest paths or node ids, relative to the root


MODULE = "recsys/training/module.py"
RANKING = "recsys/eval/ranking.py"
SPLITS = "recsys/data/splits.py"
COLLATE = "recsys/data/collate.py"
DATAMODULE = "recsys/data/datamodule.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "exclude-seen-ignored",
        "RankingModule never masks seen items, whatever eval.exclude_seen says",
        (Edit(MODULE, "        if self.exclude_seen:\n            scores = mask_seen(",
              "        if False:\n            scores = mask_seen("),),
        (PROTOCOL_TESTS,),
    ),
    Mutant(
        "seen-target-keeps-score",
        "after masking, a seen target gets its score back, so it can still count as a hit",
        (Edit(MODULE, 'scores = mask_seen(scores, batch["seen_rows"], batch["seen_items"])',
              'scores = mask_seen(scores, batch["seen_rows"], batch["seen_items"]).scatter('
              '1, batch["targets"][:, None], scores.gather(1, batch["targets"][:, None]))'),),
        (PROTOCOL_TESTS,),
    ),
    Mutant(
        "bert4rec-eval-without-mask",
        "BERT4Rec is evaluated at the last item, with no [MASK] appended",
        (Edit(DATAMODULE, 'mask = self.vocab.mask_id if self.objective == "cloze" else None', "mask = None"),),
        (PROTOCOL_TESTS,),
    ),
    Mutant(
        "optimistic-ties",
        "a target tied with other items ranks above them, not below",
        (Edit(RANKING, "at_or_above = (real >= target_scores)", "at_or_above = (real > target_scores)"),
         Edit(RANKING, "return at_or_above.sum(dim=1, dtype=torch.int32).to(torch.int64)",
              "return at_or_above.sum(dim=1, dtype=torch.int32).to(torch.int64) + 1")),
        ("tests/eval/test_ranking.py", PROTOCOL_TESTS),
    ),
    Mutant(
        "pad-ranked",
        "the PAD column is ranked as a candidate",
        (Edit(RANKING, "real = scores[:, PAD_ID + 1 :]", "real = scores"),),
        ("tests/eval/test_ranking.py", PROTOCOL_TESTS),
    ),
    Mutant(
        "loo-train-leak",
        "leave-one-out training sequences run on through the validation and test events",
        (Edit(SPLITS, "train=HeldOut(users, start, last - 2),", "train=HeldOut(users, start, last),"),),
        ("tests/data/test_splits.py", "tests/data/test_collate.py"),
    ),
    Mutant(
        "target-in-its-own-input",
        "an evaluation input includes its own target as the newest item",
        (Edit(COLLATE, "inputs = gather_windows(items, start, end, width)",
              "inputs = gather_windows(items, start, end + 1, width)"),),
        ("tests/data/test_splits.py", "tests/data/test_collate.py"),
    ),
    Mutant(
        "temporal-train-leak",
        "temporal split: training runs up to the test cut, not the validation cut",
        (Edit(SPLITS, "train=held(train_mask, start + n_valid - 1),", "train=held(train_mask, start + n_test - 1),"),),
        ("tests/data/test_temporal_split.py",),
    ),
    Mutant(
        "loss-per-length-group",
        "with train.length_groups > 1 the item loss is the mean of each group's mean, not the mean over positions",
        (
            Edit(MODULE, "            targets = targets[positions]  # (N,)",
                 "            targets = targets[positions]  # (N,)\n"
                 "            self._mutant_rows, self._mutant_inputs = positions.nonzero()[:, 0], batch[\"inputs\"]"),
            Edit(MODULE, "        return spec.fn(hidden, self.encoder.item_weights(), targets, **kwargs)",
                 "        rows = getattr(self, '_mutant_rows', None)\n"
                 "        if rows is None or self.settings.length_groups == 1 or rows.shape[0] != hidden.shape[0]:\n"
                 "            return spec.fn(hidden, self.encoder.item_weights(), targets, **kwargs)\n"
                 "        from recsys.nn.encoder import group_by_length\n"
                 "        parts = []\n"
                 "        for group, _ in group_by_length(self._mutant_inputs, self.settings.length_groups):\n"
                 "            pick = torch.isin(rows, group)\n"
                 "            if pick.any():\n"
                 "                parts.append(spec.fn(hidden[pick], self.encoder.item_weights(), targets[pick],\n"
                 "                                     **kwargs))\n"
                 "        return torch.stack(parts).mean()"),
        ),
        ("tests/training/test_zoo_runs.py::test_fast_paths_train_the_same_model",),
    ),
    Mutant(
        "valid-purchase-label-reads-test",
        "the validation purchase-within-k label looks past the validation target, at the test event",
        (Edit(DATAMODULE, "label_through_target=validation", "label_through_target=False"),),
        ("tests/training/test_zoo_runs.py::test_action_model_reports_next_action_and_purchase_beside_baselines",),
    ),
    Mutant(
        "protocol-says-leave-one-out",
        "metrics.json calls every split leave-one-out",
        (Edit("recsys/training/run.py", "    split = split_name(", '    split = "leave-one-out" or split_name('),),
        (f"{PROTOCOL_TESTS}::test_temporal_run_is_labelled_and_ranks_each_users_first_event_after_the_cut",),
    ),
    Mutant(
        "seed-differs-per-process",
        "the batch order depends on a per-process value (str hash randomisation), not on the seed alone",
        (Edit(DATAMODULE, "sampler = EpochBatchSampler(len(held), self.batch_size, self.seed, reseed)",
              "sampler = EpochBatchSampler(len(held), self.batch_size, self.seed + hash('x') % 1000, reseed)"),),
        ("tests/integration/test_resume.py::test_rerun_in_a_new_process_is_identical",),
    ),
)


def copy_tree(dest: Path, ref: str | None) -> None:
    """The repository's files into ``dest``: the working tree's tracked and untracked-but-not-
    ignored files, or with ``ref`` that commit's files (``git archive``)."""
    if ref is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(mutant: Mutant, tree: Path) -> None:
    for edit in mutant.edits:
        path = tree / edit.path
        text = path.read_text(encoding="utf-8")
        count = text.count(edit.old)
        if count != 1:
            raise ValueError(f"{edit.path}: the text to replace occurs {count} times, not once: {edit.old!r}")
        path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    # COLUMNS: pytest cuts its summary lines to the terminal's width
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", COLUMNS="400")
    env.setdefault("RECSYS_DATA_DIR", str((ROOT / ".." / "shared" / "datasets").resolve()))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, proc.stdout + proc.stderr


def failures(output: str) -> list[str]:
    """pytest's short summary lines of the failed tests: ``node - first line of the error``."""
    return [m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (.+)$", output, re.MULTILINE)]


def baseline(mutants: list[Mutant], ref: str | None, timeout: float) -> tuple[bool, list[str], float]:
    """Every test the mutants name, on the unmutated copy: a mutant only counts as killed
    if these pass without it. (True if they pass, the failed tests, seconds.)"""
    started = time.perf_counter()
    tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        copy_tree(Path(tmp), ref)
        code, output = run_tests(Path(tmp), tests, timeout)
    return code == 0, failures(output) or [output.strip()[-500:]], time.perf_counter() - started


def check(mutant: Mutant, ref: str | None, timeout: float) -> tuple[str, list[str], float]:
    """(outcome, details, seconds): killed (details: the failed tests) / survived / not
    applied / error."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = Path(tmp)
        copy_tree(tree, ref)
        try:
            apply(mutant, tree)
        except ValueError as exc:
            return "not applied", [str(exc)], time.perf_counter() - started
        code, output = run_tests(tree, mutant.tests, timeout)
    seconds = time.perf_counter() - started
    if code == 0:
        return "survived", ["all of " + ", ".join(mutant.tests) + " passed"], seconds
    failed = failures(output)
    if code in (1, 2) and failed:  # tests failed, or a test module failed to import
        return "killed", failed, seconds
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return "error", [f"pytest exit {code}: {last}"], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--ref", help="mutate this commit (git archive) instead of the working tree")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's tests")
    parser.add_argument("--width", type=int, default=200, help="characters shown of each failure line")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the first run of the mutants' tests on the unmutated tree")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutants {unknown}; --list shows them")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    files: {', '.join(sorted({e.path for e in m.edits}))}\n"
                  f"    tests: {' '.join(m.tests)}")
        return 0
    if not args.no_baseline:
        ok, failed, seconds = baseline(chosen, args.ref, args.timeout)
        print(f"baseline (no mutant): {'passed' if ok else 'FAILED'} ({seconds:.0f} s)", flush=True)
        if not ok:
            for line in failed:
                print(f"    {line[:args.width]}")
            print("the unmutated tree fails the mutants' tests, so a failure would not show a kill; "
                  "fix it, or check a commit with --ref")
            return 2
    bad = 0
    for m in chosen:
        outcome, details, seconds = check(m, args.ref, args.timeout)
        bad += outcome != "killed"
        print(f"{m.name}: {outcome} ({seconds:.0f} s)", flush=True)
        for line in details:
            print(f"    {line[:args.width]}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
