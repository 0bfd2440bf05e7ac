"""Notebooks: jupytext sources in pipeline/templates/notebooks -> executed .ipynb in docs/generated/notebooks."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from pipeline.config import Paths, PipelineError
from pipeline.io import write_text

SOURCES = Path(__file__).resolve().parent.parent / "templates" / "notebooks"
TIMEOUT_S = 600  # per cell


def execute_notebooks(paths: Paths, names: list[str] | None = None) -> list[Path]:
    """Execute the notebooks (all, or those named) against the current runs, with PIPELINE_ROOT pointing at
    them."""
    known = sorted(source.stem for source in SOURCES.glob("*.py"))
    if unknown := sorted(set(names or ()) - set(known)):
        raise PipelineError(f"no notebook named {', '.join(unknown)} in {SOURCES}; there are {', '.join(known)}.")
    out_dir = paths.generated_docs / "notebooks"
    written = []
    kernel_env = {**os.environ, "PIPELINE_ROOT": str(paths.root)}  # the kernel's, not this process's
    for source in [SOURCES / f"{name}.py" for name in names or known]:
        notebook = jupytext.read(source, fmt="py:percent")
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        client = NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(paths.root)}})
        try:
            client.execute(env=kernel_env)
        except CellExecutionError as e:
            raise PipelineError(f"{source} failed when executed against {paths.root}: "
                                f"{str(e).strip().splitlines()[-1]}") from None
        target = out_dir / f"{source.stem}.ipynb"
        write_text(target, nbformat.writes(notebook))
        written.append(target)
    return written
