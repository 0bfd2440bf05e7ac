"""Training: the shared epoch loop (runner) and one task per model."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Paths


def make_task(model: str, config, paths: Paths):
    """The model's task object: data, network, optimiser, and how one epoch, validation and test go."""
    if model == "cls":
        from pipeline.train.cls import ClsTask as Task
    else:
        from pipeline.train.mt import MtTask as Task
    return Task(config, paths)


def train(model: str, config, run_dir: Path, paths: Paths, resume: bool = False) -> dict:
    """Train `model` with `config` into run_dir (runs/<model>/<name>/); returns the final test scores."""
    from pipeline.train.distributed import close
    from pipeline.train.runner import run

    task = make_task(model, config, paths)
    try:
        return run(task, model, run_dir, resume=resume)
    finally:
        close(task.world)
