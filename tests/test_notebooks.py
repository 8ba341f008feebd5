"""The example notebooks run top to bottom in a fresh Jupyter kernel, in a temporary folder.

Each notebook is executed for real with nbclient (a ``python3`` kernel of this interpreter, so
of the virtual environment running the tests), with a time limit per cell. After its last cell
the same kernel is asked for what the notebook ended on: a notebook that ends on a decoding
result (``result``, an :class:`~neurodecode.evaluate.EvaluationResult`) must beat chance, and
every notebook must show at least one figure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from neurodecode.config import get_settings
from neurodecode.evaluate import EvaluationResult

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds one cell may run.
CELL_TIMEOUT = 300
#: Notebooks that must end on a decoding result (``result``) that beats chance.
DECODING = {"01_stores_samples_baseline.ipynb"}
#: The notebook that reads a real sample recording when there is one, else simulates one.
EXPLORE = "00_explore_a_store.ipynb"
#: One BLAS/OpenMP thread per kernel: the small matrices of the notebooks run fastest on one
#: thread, and threads fighting over 2 busy cores made the baseline notebook 3x slower.
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: Run in the kernel after the notebook's last cell; prints one JSON line.
PROBE = """\
import json as _json, sys as _sys
_result = globals().get("result")
print(_json.dumps({
    "executable": _sys.executable,
    "source": globals().get("source"),
    "result": _result.to_dict() if hasattr(_result, "summary") else None,
}))"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours its tracebacks

CASES = [pytest.param(p, None, id=p.name) for p in NOTEBOOKS]
if (NOTEBOOK_DIR / EXPLORE).exists():  # and once without the sample data: the simulated branch
    CASES.append(pytest.param(NOTEBOOK_DIR / EXPLORE, "absent", id=f"{EXPLORE}-no-sample-data"))


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A Jupyter data folder whose ``python3`` kernel runs this interpreter (the venv's)."""
    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / "python3")
    return root


def execute(path: Path, workdir: Path, env: dict[str, str]) -> tuple[nbformat.NotebookNode, dict]:
    """Run every cell of a notebook in a new kernel started in ``workdir``, then the probe.

    Returns
    -------
    notebook : NotebookNode
        The notebook with its outputs.
    probe : dict
        What the probe printed.

    Raises
    ------
    pytest.fail.Exception
        Naming the notebook and the cell when a cell raises or runs out of time.
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))  # nbclient stores each cell in nb.cells
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells[:n_cells]):
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, TimeoutError) as err:
                message = ANSI.sub("", str(err))
                pytest.fail(f"{path.name}, cell {index}: {message}", pytrace=False)
        client.execute_cell(nb.cells[n_cells], n_cells)
    probe = nb.cells.pop()
    lines = [o["text"] for o in probe.outputs if o.get("name") == "stdout"]
    return nb, json.loads("".join(lines))


@pytest.mark.slow
@pytest.mark.parametrize(("path", "sample_data"), CASES)
def test_notebook_runs(path, sample_data, tmp_path, jupyter_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # our kernelspec comes first
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # %matplotlib inline
    env |= KERNEL_ENV | {"IPYTHONDIR": str(tmp_path / ".ipython")}  # no user profile
    if sample_data == "absent":
        env["NEURODECODE_SAMPLE_DATA"] = str(tmp_path / "no-sample-data")
    workdir = tmp_path / "work"
    workdir.mkdir()

    nb, probe = execute(path, workdir, env)

    assert probe["executable"] == sys.executable
    figures = [
        base64.b64decode(output["data"]["image/png"])
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert figures, f"{path.name} shows no figure"
    assert all(png.startswith(PNG_SIGNATURE) and len(png) > 5000 for png in figures)
    if path.name in DECODING:
        assert probe["result"] is not None, f"{path.name} does not end on a decoding result"
    if probe["result"] is not None:  # a notebook that ends on a decoding result beats chance
        summary = EvaluationResult.from_dict(probe["result"]).summary
        assert (summary["p_value"] < 0.1).all(), summary
    if path.name == EXPLORE:
        real = sample_data is None and (get_settings().sample_data / "eeg" / "eegbci_S001").is_dir()
        assert probe["source"] == ("real" if real else "simulated")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    """Stored without outputs (small diffs), valid, and for the ``python3`` kernel."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        f"{path.name} is stored with outputs: clear them before committing"
    )
