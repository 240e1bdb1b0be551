"""notebooks/explore_gold.ipynb, executed headless with nbclient: against a small real
lakehouse (Delta tables made by the project's own transforms) and against a fresh one."""

from __future__ import annotations

import nbformat

from iot_lakehouse.settings import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_gold.ipynb"


def test_the_committed_notebook_has_no_outputs_and_the_python3_kernel() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
