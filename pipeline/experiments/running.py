"""Training what experiments.yaml asks for and has not been trained yet."""

from __future__ import annotations

from pipeline.config import FINAL, Paths
from pipeline.experiments.definitions import Experiment
from pipeline.runtime import World


def train_missing(paths: Paths, experiments: list[Experiment]) -> None:
    """Train every run that has no final.json yet, resuming an interrupted one; one line per run; then
    compute the analyses and the decodes that are missing."""
    from pipeline.evaluate.analyses import run_gradient_norms
    from pipeline.train import train

    todo = [(e, r) for e in experiments for r in e.runs if not (paths.run(e.model, r.folder) / FINAL).exists()]
    for number, (experiment, run) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {experiment.name}: {run.folder}  ({experiment.command(run)})",
              flush=True)
        train(experiment.model, experiment.config(run), paths.run(experiment.model, run.folder),
              paths, resume=True)
    if not todo:
        print("every experiment run has finished")
    if not World.from_env().main:  # under torchrun, rank 0 alone decodes and analyses
        return
    for experiment in experiments:
        experiment.kind.missing_work(paths, experiment)
        if experiment.analysis == "gradient_norms" and not paths.analysis("gradient_norms").exists():
            print(f"{experiment.name}: gradient norms of ResNet-18/34, residual and plain", flush=True)
            run_gradient_norms(paths, experiment.config(experiment.runs[0]))

