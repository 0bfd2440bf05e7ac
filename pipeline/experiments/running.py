"""Training what experiments.yaml asks for and has not been trained yet."""

from __future__ import annotations

from pipeline.config import FINAL, Paths
from pipeline.experiments.definitions import Experiment
from pipeline.runtime import World, cpu_ids, pick_device

# What of an experiment's declared machine can be checked before a run trains (precision "auto" is settled only
# once training starts, and the comparison checks it).
KNOWN_BEFORE_TRAINING = ("device", "cpu_family", "cpu_model")


def train_missing(paths: Paths, experiments: list[Experiment]) -> None:
    """Train every run that has no final.json yet, resuming an interrupted one; one line per run; then
    compute the analyses and the decodes that are missing. A run whose experiment declares another device or CPU
    kind than this machine's is left for that machine, with a line that says so."""
    from pipeline.evaluate.analyses import run_gradient_norms
    from pipeline.train import train

    todo, ids = [], cpu_ids()
    for experiment, run in [(e, r) for e in experiments for r in e.runs
                            if not (paths.run(e.model, r.folder) / FINAL).exists()]:
        here = {**ids, "device": pick_device(experiment.config(run).device).type}
        if off := experiment.off_machine(here, fields=KNOWN_BEFORE_TRAINING):
            print(f"{experiment.name}: {run.folder} is not trained here: experiments.yaml declares its runs with "
                  + ", ".join(f"{k} {experiment.machine[k]}" for k in off) + ", and this machine has "
                  + ", ".join(f"{k} {here.get(k, 'unknown')}" for k in off) + "; it waits for such a machine.",
                  flush=True)
        else:
            todo.append((experiment, run))
    for number, (experiment, run) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {experiment.name}: {run.folder}  ({experiment.command(run)})",
              flush=True)
        train(experiment.model, experiment.config(run), paths.run(experiment.model, run.folder),
              paths, resume=True)
    if not todo:
        print("no experiment run is left to train here")
    if not World.from_env().main:  # under torchrun, rank 0 alone decodes and analyses
        return
    for experiment in experiments:
        experiment.kind.missing_work(paths, experiment)
        if experiment.analysis == "gradient_norms" and not paths.analysis("gradient_norms").exists():
            print(f"{experiment.name}: gradient norms of ResNet-18/34, residual and plain", flush=True)
            run_gradient_norms(paths, experiment.config(experiment.runs[0]))

