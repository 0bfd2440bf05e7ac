"""Training: the shared epoch loop (runner) and one task per model."""

from __future__ import annotations

from pipeline.config import Paths


def train(model: str, config, paths: Paths, resume: bool = False) -> dict:
    """Build the model's task and run it into runs/<model>/; returns the final test scores."""
    from pipeline.train.runner import run

    if model == "cls":
        from pipeline.train.cls import ClsTask as Task
    else:
        from pipeline.train.mt import MtTask as Task
    return run(Task(config, paths), model, paths.run(model), resume=resume)
