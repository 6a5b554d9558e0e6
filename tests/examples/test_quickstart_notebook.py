"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (so it cannot rot): the
in-process answer and the one through the server's OpenAI API agree (the notebook asserts it)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "prompt tokens" in outputs and "web UI and API on http://127.0.0.1:" in outputs
    assert not any(out.get("output_type") == "error" for cell in notebook.cells for out in cell.get("outputs", []))
