"""Stages import only what lies below them: no stage reaches into a later stage or a sibling's internals."""

import ast

import pytest

from pipeline.config import REPO

STAGES = ("train", "evaluate", "experiments", "compare", "figures", "report")
# What each part of pipeline/ must never import (directly; the parts below import none of these either).
FORBIDDEN = {
    "runtime": ("pipeline." + s for s in (*STAGES, "bench")),
    "trained": ("pipeline." + s for s in (*STAGES, "bench")),
    "train": ("pipeline.evaluate", "pipeline.experiments", "pipeline.compare", "pipeline.figures",
              "pipeline.report", "pipeline.bench"),
    "evaluate": ("pipeline.train", "pipeline.experiments", "pipeline.compare",
                 "pipeline.figures", "pipeline.report", "pipeline.bench"),
}


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _files(part: str):
    folder = REPO / "pipeline" / part
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [REPO / "pipeline" / f"{part}.py"]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_nothing_above_it(part):
    forbidden = tuple(FORBIDDEN[part])
    for path in _files(part):
        wrong = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"
