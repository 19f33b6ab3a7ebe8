"""benchmarks/mutants.py stays applicable: each mutant's edits still find their text exactly
once and its tests exist, so a refactor cannot quietly turn the mutation check into a list
of edits that no longer apply. (Running the mutants is not part of the suite.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "benchmarks" / "mutants.py")
mutants = importlib.util.module_from_spec(spec)
sys.modules["bench_mutants"] = mutants
spec.loader.exec_module(mutants)

REQUIRED = {"exclude-seen-ignored", "seen-target-keeps-score", "bert4rec-eval-without-mask", "optimistic-ties",
            "pad-ranked", "loo-train-leak", "temporal-train-leak", "loss-per-length-group"}


def test_the_issue_mutants_are_listed_once():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_and_names_existing_tests(mutant, tmp_path):
    for path in {e.path for e in mutant.edits}:
        assert path.startswith("recsys/"), path
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text(encoding="utf-8"), encoding="utf-8")
    mutants.apply(mutant, tmp_path)  # raises unless every old text occurs exactly once
    for edit in mutant.edits:
        assert edit.new in (tmp_path / edit.path).read_text(encoding="utf-8") and edit.new != edit.old
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test
        assert test.startswith("tests/"), test  # tests that `make test` runs


def test_an_edit_that_no_longer_applies_is_reported(tmp_path):
    (tmp_path / "recsys").mkdir()
    (tmp_path / "recsys" / "x.py").write_text("a = 1\na = 1\n")
    twice = mutants.Mutant("m", "", (mutants.Edit("recsys/x.py", "a = 1", "a = 2"),), ())
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutants.apply(twice, tmp_path)
    missing = mutants.Mutant("m", "", (mutants.Edit("recsys/x.py", "b = 1", "b = 2"),), ())
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutants.apply(missing, tmp_path)
