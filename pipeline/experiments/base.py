"""What every experiment design is: the Design interface that designs.py's registry fills (one class per design,
and one page partial, templates/experiments/designs/NAME.md.j2), and the Evidence its comparison reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pipeline.compare.records import RunRecord
from pipeline.config import Paths

if TYPE_CHECKING:
    from pipeline.experiments.definitions import Experiment

Fail = Callable[[str, str], None]  # fail(field, problem) raises the one-paragraph error naming file and experiment
WORDS = {"supported": "better", "contradicted": "worse"}  # a chooser's verdict on "is it higher?"


@dataclass
class Evidence:
    """What a design's comparison reads: the experiment, its finished runs that count (all of its arms), their
    kept test items, the seed spreads single runs can borrow (pipeline.compare.arms.seed_spreads), the per-arm
    summaries, and the design's own inputs."""
    experiment: Experiment
    records: list[RunRecord]
    arms: dict[str, list[RunRecord]]
    items: dict
    lenders: list[dict]
    summaries: dict
    inputs: dict


class Design:
    name = ""
    fields: tuple[str, ...] = ()  # the fields of experiments.yaml this design takes beyond the shared ones
    one_arm = False  # runs that name no arm are one arm (else each run is its own)
    trains = True  # False: inference on runs trained elsewhere
    lends_spread = False  # single-run arms of the model borrow its seed spread
    plots: tuple[str, ...] = ("curves",)  # the figures its page shows (pipeline.figures.build)
    answer_fields: tuple[str, ...] = ("metric",)  # what its answer holds beside "kind" (pipeline.compare.schema)
    shows_inputs = False  # its inputs are written into the result, for the page and figures

    def check(self, e: Experiment, fail: Fail) -> None:
        """What a definition of this design must hold beyond the fields every experiment has."""

    def missing_work(self, paths: Paths, e: Experiment) -> None:
        """What the design computes beyond training its runs (run by `make experiments`)."""

    def inputs(self, paths: Paths, e: Experiment, records: list[RunRecord]) -> dict | None:
        """The files beside the runs the comparison reads; None: nothing to show yet."""
        return {}

    def complete(self, e: Experiment, records: list[RunRecord], inputs: dict) -> bool:
        return len(records) == len(e.runs)

    def compare(self, ev: Evidence) -> tuple[dict, list[dict]]:
        """The answer (its "kind" is the design's name) and the comparisons the page tabulates."""
        raise NotImplementedError

    def reproduction(self, ev: Evidence) -> dict | None:
        """Whether a main run trained again elsewhere reproduces the experiment's runs (seeds only)."""
        return None
