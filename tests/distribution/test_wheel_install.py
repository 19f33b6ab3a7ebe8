"""The built wheel, installed with only its base requirements, serves an artifact.

A ranking service installs ``recsys-lab`` without extras: torch, numpy, safetensors and
PyYAML. This test builds the wheel from the checkout, installs it into a fresh venv that
can see nothing else, and serves an artifact there: the answers must equal the checkout's,
and Lightning, pandas, Optuna, scikit-learn, pyarrow and scipy must not be importable.

Offline and quick: rather than installing torch again (a 900 MB, one-minute copy), the
venv reads the base requirements (torch and its own requirements, numpy, safetensors,
PyYAML) from a folder of links into this environment's site-packages, named in a ``.pth``
file. Their ``dist-info`` folders are linked too, so pip sees them as installed: the wheel
is installed with ``--no-index``, and pip's resolver would refuse it if the wheel required
anything beyond those. Nothing else of this environment is visible in the venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from recsys.config import ModelConfig
from recsys.inference import Recommender, random_artifact, save_artifact

ROOT = Path(__file__).resolve().parents[2]
BASE = ("torch", "numpy", "safetensors", "pyyaml")  # the wheel's base requirements
ABSENT = ("pandas", "pytorch_lightning", "lightning", "optuna", "sklearn", "pyarrow", "scipy", "fastapi",
          "onnxruntime")
HISTORIES = [["i1", "i2", "i3"], ["i7"], [], ["nope", "i4"]]

PROBE = """
import importlib.util, json, sys
from importlib import metadata
from pathlib import Path
import recsys
from recsys.cli import shipped_config
rec = recsys.load(sys.argv[1])
out = rec.recommend({histories!r}, k=5, exclude_seen=True)
print(json.dumps({{
    "file": recsys.__file__,
    "version": metadata.version("recsys-lab"),
    "items": out.items, "scores": [s.tolist() for s in out.scores], "fallback": out.fallback,
    "present": [m for m in {absent!r} if importlib.util.find_spec(m) is not None],
    "config": str(shipped_config(Path("experiments/s3rec-beauty/sasrec-ce.yaml"))),
    "config_exists": shipped_config(Path("s3rec-beauty/sasrec-ce")).is_file(),
}}))
"""


def _requirement_closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions of ``names`` and of their requirements (no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def _link_base_packages(folder: Path) -> list[str]:
    """Link each base distribution's top-level files and dist-info into ``folder``."""
    folder.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    linked = []
    for dist in _requirement_closure(BASE):
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "bin", "__pycache__")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.parent == site and source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
        linked.append(dist.metadata["Name"])
    return sorted(linked)


@pytest.mark.slow
def test_wheel_with_only_base_requirements_serves_an_artifact(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("recsys_lab-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    linked = _link_base_packages(tmp_path / "base")
    assert {"torch", "numpy", "safetensors", "PyYAML"} <= set(linked)
    assert not {"pandas", "pytorch-lightning", "optuna", "scikit-learn", "pyarrow"} & set(linked)
    (venv_site / "base_requirements.pth").write_text(str(tmp_path / "base") + "\n")

    # --no-index: every requirement of the wheel must already be there, or pip refuses.
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    art = save_artifact(random_artifact(20, ModelConfig(dim=16, n_blocks=1, n_heads=2, max_len=6), seed=4),
                        tmp_path / "artifact")
    probe = subprocess.run([str(python), "-c", PROBE.format(histories=HISTORIES, absent=ABSENT), str(art)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)  # not the checkout
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout.strip().splitlines()[-1])

    assert got["file"].startswith(str(venv_site)), "the venv must import the installed wheel, not the checkout"
    assert got["present"] == []
    assert got["version"] == metadata.version("recsys-lab")
    assert got["config"].startswith(str(venv_site)) and got["config"].endswith("s3rec-beauty/sasrec-ce.yaml")
    assert got["config_exists"]
    # Commands beyond serving say which extra they need, instead of a traceback.
    fit = subprocess.run([str(python), "-m", "recsys.cli", "fit", "--config", "s3rec-beauty/sasrec-ce"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert fit.returncode == 2 and "needs the train extra" in fit.stderr and "recsys-lab[train]" in fit.stderr
    offline = subprocess.run([str(python), "-m", "recsys.cli", "recommend", str(art), "--histories", "x.csv",
                              "--out", "y.csv"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert offline.returncode == 2 and "recsys-lab[serve]" in offline.stderr

    expected = Recommender.load(art).recommend(HISTORIES, k=5, exclude_seen=True)
    assert got["items"] == expected.items and got["fallback"] == expected.fallback
    for served, here in zip(got["scores"], expected.scores):
        np.testing.assert_array_equal(np.asarray(served, dtype=here.dtype), here)  # NaN == NaN here
