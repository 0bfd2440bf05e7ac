"""One class per experiment design, the one place where designs are told apart: what a definition of the design
must hold, what it computes beyond training, how its runs are compared and answered, and the page partial that
shows it (templates/experiments/designs/NAME.md.j2). A new design is one class here (or, where it trains nothing and
scores a grid of settings, in inference.py), one partial and its tests; base.py says what each class provides.

The registry joins the two halves of an experiment: its declaration (definitions.py) and the comparison stage's
machinery (pipeline/compare), which it calls; it imports no model."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from pipeline.compare import stats
from pipeline.compare.arms import compare_arms, correct_family
from pipeline.compare.records import RunRecord
from pipeline.config import CONFIGS, DELETION, MAIN_RUN
from pipeline.experiments.base import WORDS, Design
from pipeline.experiments.inference import Decoding, Views
from pipeline.experiments.metrics import EPOCH_METRICS, HIGHER_IS_BETTER
from pipeline.io import read_json

if TYPE_CHECKING:
    from pipeline.experiments.definitions import Experiment


class Seeds(Design):
    name, one_arm, lends_spread = "seeds", True, True
    answer_fields = ("metric", "mean", "sd", "n", "halfwidth", "min", "max")

    def compare(self, ev):
        metric = ev.experiment.metrics[0]
        return {"kind": self.name, "metric": metric, **ev.summaries[metric][ev.records[0].arm]}, []

    def reproduction(self, ev):
        """The main run's headline score against the 95 % prediction interval of one new run from the other runs,
        only where the main run trained on a CPU kind, device or precision none of them did (a retrain here; the
        committed report's main run trained where its seeds did)."""
        main = next((r for r in ev.records if r.folder == MAIN_RUN), None)
        metric = ev.experiment.metrics[0]
        others = [r for r in ev.records if r.folder != MAIN_RUN and metric in r.values]
        elsewhere = sorted({r.where for r in others})
        if main is None or metric not in main.values or len(others) < 2 or main.where in elsewhere:
            return None
        low, high = stats.prediction_interval([r.values[metric] for r in others])
        score = main.values[metric]
        return {"metric": metric, "score": score, "low": low, "high": high, "inside": low <= score <= high,
                "runs": len(others), "machine": main.where, "machines": elsewhere}


class Ablation(Design):
    name, fields = "ablation", ("control", "comparisons")

    def check(self, e, fail):
        if not e.comparisons and (not isinstance(e.control, str) or e.control not in {r.arm for r in e.runs}):
            fail("control", "must name one of the arms of the runs")

    def compare(self, ev):
        """Each declared pair of arms (else each arm against the control) on every metric; the first decides, and
        the deciding comparisons are one family."""
        e = ev.experiment
        pairs = list(e.comparisons) or [(arm, e.control, None) for arm in ev.arms if arm != e.control]
        comparisons = []
        for arm, against, expect in pairs:
            if arm in ev.arms and against in ev.arms:
                per_metric = [compare_arms(m, arm, against, ev.arms, ev.items, ev.lenders,
                                           expect if i == 0 else None, e.model) for i, m in enumerate(e.metrics)]
                comparisons.append({"arm": arm, "against": against, "expect": expect, "metrics": per_metric,
                                    "verdict": per_metric[0]["verdict"]})
        return {"kind": self.name, "metric": e.metrics[0]}, correct_family(comparisons)


class Sweep(Design):
    name, fields, plots = "sweep", ("sweep", "choose_on"), ("curves", "sweep_scores")
    answer_fields = ("exploratory", "metric", "field", "default", "values_run", "best", "best_score", "bracket",
                     "chosen_value", "changed", "diverged", "at_chance")

    def check(self, e, fail):
        if not isinstance(e.sweep, str) or e.sweep not in {f.name for f in dataclasses.fields(CONFIGS[e.model])}:
            fail("sweep", f"must name the config field of {e.model} that is varied")
        default = e.default_value()
        if not any(getattr(e.config(r), e.sweep) == default for r in e.runs):
            fail("runs", f"a sweep must include the default {e.sweep} = {default}: a value is chosen only when it "
                         "beats the default")
        if not isinstance(e.choose_on, str) or e.choose_on not in EPOCH_METRICS[e.model] \
                or not e.choose_on.startswith("val_"):
            fail("choose_on", "must be a validation score (val_...): the test set chooses nothing")

    def compare(self, ev):
        """Each swept value against the default on choose_on ("better" / "worse" where the rule says so), one
        family; a value is chosen only when it beats the default, and never by an exploratory sweep."""
        e = ev.experiment
        field, metric, default = e.sweep, e.choose_on, e.default_value()
        by_value: dict = {}
        for r in ev.records:
            by_value.setdefault(r.config[field], []).append(r)
        comparisons = []
        if default in by_value:
            value_arms = {str(v): rs for v, rs in by_value.items()}
            for value, rs in sorted(by_value.items()):
                if value == default:
                    continue
                c = compare_arms(metric, str(value), str(default), value_arms, ev.items, ev.lenders,
                                 "higher", e.model)
                c["verdict"] = WORDS.get(c["verdict"], c["verdict"])
                comparisons.append({"arm": rs[0].arm, "against": by_value[default][0].arm, "value": value,
                                    "expect": None, "mean": float(np.mean([r.values[metric] for r in rs])),
                                    "metrics": [c], "verdict": c["verdict"]})
        comparisons = correct_family(comparisons)
        return sweep_answer(e, ev.records, comparisons), comparisons


def sweep_answer(e: Experiment, records: list[RunRecord], comparisons: list[dict]) -> dict:
    """A value is chosen only when it beats the default by the rule; the best value is bracketed when both
    neighbours score worse, else the sweep reached its edge."""
    field, metric = e.sweep, e.choose_on
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    values = sorted({r.config[field] for r in records})
    score = {v: np.mean([r.values[metric] for r in records if r.config[field] == v and metric in r.values])
             for v in values}
    usable = [v for v in values if not all(r.diverged or r.at_chance for r in records if r.config[field] == v)]
    best = max(usable, key=lambda v: sign * score[v]) if usable else None
    if best is None:
        bracket = "none"
    else:
        i = values.index(best)
        bracket = "bracketed" if 0 < i < len(values) - 1 else ("low edge" if i == 0 else "high edge")
    # An exploratory sweep is a lead for a confirmation: it reports its verdicts and chooses nothing.
    beating = [c for c in comparisons if c["verdict"] == "better" and not e.exploratory]
    chosen = max(beating, key=lambda c: sign * c["mean"])["value"] if beating else None
    default = e.default_value()
    return {"kind": "sweep", "exploratory": e.exploratory, "metric": metric, "field": field, "default": default,
            "values_run": len(values), "best": best, "best_score": None if best is None else float(score[best]),
            "bracket": bracket, "chosen_value": chosen if chosen is not None else default,
            "changed": chosen is not None, "diverged": [r.name for r in records if r.diverged],
            "at_chance": [r.name for r in records if r.at_chance]}


class Deletion(Design):
    name, trains, plots, shows_inputs = "deletion", False, ("deletion",), True
    answer_fields = ("images", "random_minus_salient", "least_minus_salient")

    def check(self, e, fail):
        if e.model != "cls" or [r.name for r in e.runs] != [MAIN_RUN]:
            fail("runs", "the deletion test reads the main ResNet run: runs: {main: {}}")

    def inputs(self, paths, e, records):
        path = paths.analysis(DELETION)
        return {"deletion": read_json(path, "deletion test of the main run")} if path.exists() else None

    def compare(self, ev):
        """Does deleting the regions Grad-CAM marks first lower the model's confidence faster than deleting random
        regions, or the least marked first? The area between the curves per image: mean, 95 % t interval,
        verdict."""
        deletion = ev.inputs["deletion"]
        n = deletion["images"]
        out = {"kind": self.name, "images": n}
        for key in ("random_minus_salient", "least_minus_salient"):
            gap = deletion["area_between"][key]
            low, high = stats.mean_interval(gap["mean"], gap["sd"], n)
            interval = {"difference": gap["mean"], "low": low, "high": high, "method": f"t over {n} images"}
            out[key] = {**gap, "low": low, "high": high, "verdict": stats.verdict(interval, "higher")}
        return out, []


DESIGNS: dict[str, Design] = {d.name: d for d in (Seeds(), Ablation(), Sweep(), Deletion(), Decoding(), Views())}
DESIGN_FIELDS = {f for d in DESIGNS.values() for f in d.fields}

