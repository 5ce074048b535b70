"""The Fashion-MNIST scoring notebook runs end to end and draws a figure."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "notebooks", "score_fashion_mnist.ipynb")


def test_notebook_executes_without_errors_and_plots():
    nb = nbformat.read(PATH, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "EL2N (4, 2000)" in text and "GraNd (4, 2000)" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)
