"""Fixtures shared across test folders."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def execute_notebook():
    """Run ``notebooks/<name>`` top to bottom (cwd: notebooks/); returns (its code cells'
    outputs, their text and text/plain parts joined), so a test asserts on what it showed."""
    import nbformat
    from nbclient import NotebookClient

    def run(name: str, timeout: int) -> tuple[list, str]:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
        return outputs, text

    return run
