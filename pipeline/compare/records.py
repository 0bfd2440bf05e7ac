"""One finished run as the comparison stage sees it: a frozen, typed record read once from the run's files."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.compare.provenance import PROVENANCE_FIELDS, where
from pipeline.config import CONFIG, FINAL, MAIN_RUN, METRICS, PROVENANCE, TEST_PREDICTIONS, Paths, PipelineError, \
    changed_fields, saved_config, uncommitted
from pipeline.experiments.metrics import CHANCE, EPOCH_METRICS, FINAL_METRICS
from pipeline.io import load_arrays, read_json, read_jsonl

if TYPE_CHECKING:
    from pipeline.experiments.definitions import Experiment, RunSpec

# Fields that say where and how fast a run ran, not what it computed: a run may differ from its declaration in these.
# The precision asked for is one ("auto" takes bf16 on some CPUs only); the precision a run trained in is in its
# provenance, and arms trained in different ones are marked as differing in more than their config.
RUNTIME_FIELDS = {"device", "threads", "collective_timeout_s", "precision"}
# Set to 1 for a draft report that also counts runs trained from a tree with uncommitted changes.
COUNT_UNCOMMITTED = "PIPELINE_COUNT_UNCOMMITTED"


def traced(commit: str) -> bool:
    """Whether what a commit made counts as evidence: a run (or a decode) from a tree with uncommitted changes
    cannot be traced to the code that made it, so it counts only in a draft report ($PIPELINE_COUNT_UNCOMMITTED=1)."""
    return not uncommitted(commit) or os.environ.get(COUNT_UNCOMMITTED) == "1"


@dataclass(frozen=True)
class EpochTime:
    side: int | None  # the image side the epoch trained at (None: the Transformer)
    train_s: float | None
    eval_s: float


@dataclass(frozen=True)
class RunRecord:
    """What the comparison needs of one finished run; `to_json` is what the result files hold of it."""
    name: str  # as experiments.yaml names it
    folder: str  # runs/MODEL/FOLDER
    arm: str
    seed: int
    parameters: int | None
    config: dict  # every config field, as trained
    values: dict  # metric -> final score (test) or last epoch's (validation, training)
    curves: dict  # metric -> one value per epoch
    loss_trace: list  # [optimiser step, training loss] every 25 steps
    train_wall_s: float
    commit: str
    bleu_signature: str
    provenance: dict  # PROVENANCE_FIELDS
    diverged: bool
    at_chance: bool
    command: str  # trains the run by hand
    changed_by_padding: int | None = None  # test outputs a padded batch changed (Transformer)
    test_sentences: int | None = None
    typical_train_s: float | None = None  # pipeline.compare.timing
    epoch_seconds: tuple[EpochTime, ...] = ()  # read by the typical time only

    NOT_WRITTEN = ("epoch_seconds",)

    @property
    def where(self) -> str:
        return where(self.provenance)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.NOT_WRITTEN}


def read_run(paths: Paths, experiment: Experiment, run: RunSpec) -> RunRecord | None:
    """What the comparison needs of one finished run (None while it has not finished)."""
    folder = paths.run(experiment.model, run.folder)
    if not (folder / FINAL).exists():
        return None
    final = read_json(folder / FINAL, "test result of the run", require=("train_wall_s",))
    epochs = read_jsonl(folder / METRICS)
    trained = read_json(folder / CONFIG, "run config", require=("seed",))
    config = saved_config(experiment.model, trained)
    declared = experiment.config(run)
    changed = [k for k in changed_fields(experiment.model, trained, declared) if k not in RUNTIME_FIELDS]
    if changed and run.folder != MAIN_RUN:  # the main run is what `make train` trained (PROFILE, *_ARGS included)
        raise PipelineError(
            f"{folder / CONFIG}: experiments.yaml declares run {run.name!r} of experiment {experiment.name!r} with "
            + ", ".join(f"{k} = {getattr(declared, k)!r}" for k in changed) + ", but this folder's run was trained "
            "with " + ", ".join(f"{k} = {config[k]!r}" for k in changed) + " (a default changed since, or the "
            "declaration did). Declare the values it was trained with (in the run or the experiment's base) to keep "
            "it, or move the folder aside and train the run again with `make experiments`.")
    provenance = read_json(folder / PROVENANCE, "provenance file", require=("git_commit",))
    last = epochs[-1] if epochs else {}
    values = {m: final[m] for m in FINAL_METRICS[experiment.model] if m in final}
    values.update({m: last[m] for m in EPOCH_METRICS[experiment.model] if m in last})
    losses = [r.get("train_loss", math.nan) for r in epochs]
    return RunRecord(
        name=run.name, folder=run.folder, arm=run.arm, seed=config["seed"], parameters=final.get("parameters"),
        config=config, values=values, curves={m: [r.get(m) for r in epochs] for m in EPOCH_METRICS[experiment.model]},
        loss_trace=[point for r in epochs for point in r.get("loss_trace", [])],
        train_wall_s=final["train_wall_s"], commit=provenance["git_commit"],
        bleu_signature=final.get("bleu_signature", ""),
        provenance={k: provenance.get(k, 1 if k == "processes" else None) for k in PROVENANCE_FIELDS},
        diverged=any(not math.isfinite(x) for x in losses) or (len(losses) > 1 and losses[-1] > losses[0]),
        at_chance=any(m in last and last[m] <= floor for m, floor in CHANCE.items()),
        command=experiment.command(run),
        changed_by_padding=final.get("outputs_changed_by_padding"),
        test_sentences=final.get("test_sentences") if "outputs_changed_by_padding" in final else None,
        epoch_seconds=tuple(EpochTime(r.get("resolution"), r.get("train_s"), r.get("eval_s") or 0) for r in epochs))


def not_counted_because(record: RunRecord, experiment: Experiment) -> str | None:
    """Why a finished run is no evidence for its experiment: "uncommitted" (trained from a tree with uncommitted
    changes, outside a draft report) or "machine" (trained off the machine the experiment declares); None where
    it counts."""
    if not traced(record.commit):
        return "uncommitted"
    return "machine" if experiment.off_machine(record.provenance) else None


def finished_runs(paths: Paths, experiment: Experiment) -> tuple[list[RunRecord], list[dict]]:
    """The experiment's finished runs that count, and those that do not: {folder, commit, command, where,
    reason} (not_counted_because)."""
    finished = [r for r in (read_run(paths, experiment, run) for run in experiment.runs) if r]
    reasons = {r.folder: not_counted_because(r, experiment) for r in finished}
    return ([r for r in finished if reasons[r.folder] is None],
            [{"folder": r.folder, "commit": r.commit, "command": r.command, "where": r.where,
              "reason": reasons[r.folder]} for r in finished if reasons[r.folder] is not None])


def by_arm(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    arms: dict[str, list[RunRecord]] = {}
    for r in records:
        arms.setdefault(r.arm, []).append(r)
    return arms


def differing_fields(records: list, key: str = "config") -> list[str]:
    """The fields (of the config, or of the provenance) whose values are not the same in every run."""
    tables = [getattr(r, key) if isinstance(r, RunRecord) else r[key] for r in records]
    keys = sorted({k for t in tables for k in t})
    return [k for k in keys if len({repr(t.get(k)) for t in tables}) > 1]


def item_scores(paths: Paths, model: str, record: RunRecord) -> dict | list | None:
    """A run's kept test predictions: per-image correctness (ResNet) or hypotheses and references
    (Transformer); None for runs that kept none."""
    folder = paths.run(model, record.folder)
    if model == "cls":
        path = folder / f"{TEST_PREDICTIONS}.npz"
        if not path.exists():
            return None
        arrays = load_arrays(path)
        return {"correct": np.asarray(arrays["predictions"] == arrays["labels"])}
    path = folder / f"{TEST_PREDICTIONS}.json"
    return read_json(path, "kept test translations") if path.exists() else None
