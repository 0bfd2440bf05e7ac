"""Atomic writes and checked reads of the files stages hand to each other (no torch here)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.config import PipelineError

TIMINGS = "timings.json"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str = "file"):
    """Read a JSON file, or raise a PipelineError naming the file and the problem."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing: the {what} has not been written yet.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not valid JSON ({e}); delete it and run the stage that writes it again.") from None


def record_timing(folder: Path, stage: str, seconds: float) -> None:
    """Note a stage's wall time in folder/timings.json, the one file of site_assets that changes on a rerun."""
    path = folder / TIMINGS
    timings = read_json(path, "timings") if path.is_file() else {}
    timings[stage] = round(seconds, 2)
    write_json(path, timings)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk, so an interrupted run keeps every finished epoch."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise PipelineError(f"{path} is missing: train the model first (make train-{path.parent.name}).")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PipelineError(f"{path}, line {number}, is not valid JSON ({e}).") from None
    return records


def save_arrays(path: Path, **arrays) -> None:
    """Named numpy arrays in one compressed .npz, written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_arrays(path: Path) -> dict:
    """The arrays of an .npz written by save_arrays, or a PipelineError naming the file."""
    import numpy as np

    if not path.is_file():
        raise PipelineError(f"{path} is missing: run the evaluation stage first (make figures).")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path} is not a readable .npz file ({e}); run the evaluation stage again.") from None
