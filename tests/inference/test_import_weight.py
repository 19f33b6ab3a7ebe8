"""Ranking services import recsys.inference: it must not drag in Lightning, Optuna or pandas."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "pytorch_lightning", "lightning", "optuna", "recsys.training", "fastapi", "onnxruntime", "pyarrow",
         "scipy", "sklearn")

PROBE = """
import json, sys
import recsys
from recsys import Recommender, load
import recsys.inference
from recsys.inference import random_artifact
rec = Recommender(random_artifact(20))
out = rec.recommend([["i1", "i2"], []], k=3)
rec.score(["i1"], ["i2"]); rec.user_embeddings([["i3"]])
rec.score([["i1"], []], [["i2"], ["i3"]]); rec.similar_items(["i1"], k=2)
rec.recommend([["i1"], ["i2"]], k=2, candidates=[["i3", "i4"], ["i5"]], exclude=[["i3"], []]).to_columns()
heavy = {heavy!r}
print(json.dumps({{"loaded": sorted(m for m in sys.modules if m in heavy or m.split(".")[0] in heavy),
                   "rows": len(out)}}))
"""


def test_inference_imports_and_serves_without_heavy_packages():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "rows": 2}


def test_plain_import_recsys_does_not_load_torch():
    code = "import sys, recsys; print('torch' in sys.modules, 'recsys.inference' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
