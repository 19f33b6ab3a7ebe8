"""notebooks/quickstart.ipynb runs top to bottom (CSV -> recsys fit -> export -> recommend),
so the onboarding path cannot rot."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RECSYS_DATA_DIR") or ROOT.parent / "shared" / "datasets")


@pytest.mark.slow
def test_quickstart_notebook_trains_exports_and_recommends(tmp_path, monkeypatch, execute_notebook):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(DATA))
    monkeypatch.setenv("QUICKSTART_OUT", str(tmp_path))
    monkeypatch.setenv("QUICKSTART_EPOCHS", "3")  # the notebook's default is 8; the path is the same
    outputs, text = execute_notebook("quickstart.ipynb", timeout=300)
    assert not [o for o in outputs if o.output_type == "error"]
    assert "['user_id,item_id,timestamp', '1,1,0'" in text  # the CSV it wrote (LastFM user 1, item 1 first)
    assert "run directory:" in text and "test" in text  # recsys fit's summary
    assert "model.safetensors" in text and "artifact.json" in text
    assert (tmp_path / "artifact" / "model.safetensors").is_file()
    assert "user_id" in text and "rank" in text and "new-user" in text  # the RecTools-shaped table
    assert "target_item_id" in text
