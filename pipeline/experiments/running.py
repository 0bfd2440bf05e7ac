"""Training what experiments.yaml asks for and has not been trained yet."""

from __future__ import annotations

import os

from pipeline.config import FINAL, Paths
from pipeline.experiments.definitions import Experiment


def train_missing(paths: Paths, experiments: list[Experiment]) -> None:
    """Train every run that has no final.json yet, resuming an interrupted one; one line per run; then
    compute the analyses that are missing."""
    from pipeline.evaluate.analyses import analysis_path, run_gradient_norms
    from pipeline.train import train

    todo = [(e, r) for e in experiments for r in e.runs if not (paths.run(e.model, r.folder) / FINAL).exists()]
    for number, (experiment, run) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {experiment.name}: {run.folder}  ({experiment.command(run)})",
              flush=True)
        train(experiment.model, experiment.config(run), paths.run(experiment.model, run.folder),
              paths, resume=True)
    if not todo:
        print("every experiment run has finished")
    for experiment in experiments:
        if experiment.analysis == "gradient_norms" and not analysis_path(paths, "gradient_norms").exists() \
                and os.environ.get("RANK", "0") == "0":
            print(f"{experiment.name}: gradient norms of ResNet-18/34, residual and plain", flush=True)
            run_gradient_norms(paths, experiment.config(experiment.runs[0]))
