"""The Fashion-MNIST scoring notebook runs end to end and draws a figure; the README's notebook
snippet runs as written."""

import os
import re

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "notebooks", "score_fashion_mnist.ipynb")


def _execute(path, timeout=300):
    """Runs a notebook saved without outputs; returns (its outputs, their printed text)."""
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    return outputs, "".join(out.get("text", "") for out in outputs if out.output_type == "stream")


def test_notebook_executes_without_errors_and_plots():
    outputs, text = _execute(PATH)
    assert "EL2N (4, 2000)" in text and "GraNd (4, 2000)" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)


def test_readme_notebook_snippet_runs_as_written():
    import numpy as np

    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## Scores from a notebook") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    el2n, grand = np.asarray(namespace["el2n"]), np.asarray(namespace["grand"])
    assert el2n.shape == grand.shape == (4, 2000)
    assert np.isfinite(el2n).all() and np.isfinite(grand).all() and (grand > 0).all()
    # EL2N is the distance of the softmax from the one-hot label: in [0, sqrt(2)].
    assert el2n.min() >= 0 and el2n.max() <= np.sqrt(2) + 1e-6
    assert not np.allclose(grand[0], grand[1])  # four independent initializations


def test_own_model_notebook_trains_scores_prunes_and_retrains():
    outputs, text = _execute(os.path.join(ROOT, "notebooks", "own_model_fashion_mnist.ipynb"), 600)
    assert "EL2N (4, 2000) GraNd (4, 2000)" in text
    assert "every batch index is kept: True" in text
    # Both halves retrained on 1000 examples, every seed well above chance (0.1).
    found = re.findall(r"(.+): 1000 examples, test accuracy per seed \[([0-9. ]+)\]", text)
    assert [name for name, _ in found] == ["GraNd, hardest half", "random half"], text
    for _, accs in found:
        assert all(float(a) > 0.3 for a in accs.split()), text
    assert any("image/png" in out.get("data", {}) for out in outputs)
