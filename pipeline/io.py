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


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents (for a folder: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it over `path` only if the block succeeds, durably:
    the new file's bytes reach the disk before the rename, and the folder's new entry after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_path(Path(tmp))
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str = "file", require: tuple[str, ...] = ()):
    """Read a JSON file, or raise a PipelineError naming the file and the problem; with `require`, the file must
    hold an object with those keys (what the reader goes on to index)."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing: the {what} has not been written yet.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(
            f"{path} is not valid JSON ({e}); delete it and run the stage that writes it again.") from None
    missing = [key for key in require if not isinstance(value, dict) or key not in value]
    if missing:
        raise PipelineError(f"{path} is not a {what} as this version writes it: it lacks {', '.join(missing)}. "
                            "Move it aside and run the stage that writes it again.")
    return value


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


def read_jsonl(path: Path, drop_torn_tail: bool = False) -> list[dict]:
    """One record per line. A last line cut short by a crash (no newline, not JSON) is dropped with a note
    when `drop_torn_tail` (resuming), and is an error otherwise."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing: train the model first (make train-{path.parent.parent.name}).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if drop_torn_tail and number == len(lines):
                print(f"note: dropped the unfinished last line of {path} (the run stopped while writing it).")
                break
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
