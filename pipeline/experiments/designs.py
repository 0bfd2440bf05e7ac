"""One class per experiment design, the one place where designs are told apart: what a definition of the design
must hold, what it computes beyond training, how its runs are compared and answered, and the page partial that
shows it (templates/experiments/designs/NAME.md.j2). A new design is one class here, one partial and its tests.

The registry joins the two halves of an experiment: its declaration (definitions.py) and the comparison stage's
machinery (pipeline/compare), which it calls; it imports no model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.compare import stats
from pipeline.compare.arms import compare_arms, correct_family
from pipeline.compare.provenance import machine
from pipeline.compare.records import RunRecord, traced
from pipeline.config import CONFIGS, DECODING, DELETION, MAIN_RUN, Paths, setting_key
from pipeline.experiments.metrics import EPOCH_METRICS, HIGHER_IS_BETTER
from pipeline.io import read_json

if TYPE_CHECKING:
    from pipeline.experiments.definitions import Experiment

Fail = Callable[[str, str], None]  # fail(field, problem) raises the one-paragraph error naming file and experiment
WORDS = {"supported": "better", "contradicted": "worse"}  # a chooser's verdict on "is it higher?"


@dataclass
class Evidence:
    """What a design's comparison reads: the experiment, its finished runs that count (all of its arms), their
    kept test items, the spreads single runs borrow, the per-arm summaries, and the design's own inputs."""
    experiment: Experiment
    records: list[RunRecord]
    arms: dict[str, list[RunRecord]]
    items: dict
    spreads: dict
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
                per_metric = [compare_arms(m, arm, against, ev.arms, ev.items, ev.spreads.get(m),
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
                c = compare_arms(metric, str(value), str(default), value_arms, ev.items, ev.spreads.get(metric),
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


class Decoding(Design):
    name, fields, one_arm, trains, plots = "decoding", ("decoding",), True, False, ("decoding_grid",)
    answer_fields = ("metric", "default", "default_score", "best", "best_score", "chosen_value", "changed",
                     "decoded_runs", "decoded_at", "decoded_on", "sentences", "alphas", "table")

    def check(self, e, fail):
        if e.model != "mt":
            fail("model", "a decoding experiment decodes Transformer runs: model mt")
        grid = e.decoding
        beams, alphas = (grid.get(k) if isinstance(grid, dict) else None for k in ("beam_size", "length_penalty"))
        if not isinstance(grid, dict) or set(grid) != {"beam_size", "length_penalty"} \
                or not isinstance(beams, list) or not beams or not isinstance(alphas, list) or not alphas \
                or any(type(b) is not int or b < 0 for b in beams) \
                or any(type(a) not in (int, float) or a < 0 for a in alphas):
            fail("decoding", "must be {beam_size: [whole numbers, 0 = greedy], length_penalty: [numbers >= 0]}")
        if e.default_setting() not in e.settings():
            fail("decoding", "the grid must include the recipe's own beam_size and length_penalty: a setting is "
                             "chosen only when it beats the default")
        if e.metrics[0] != "val_bleu":
            fail("metrics", "a decoding experiment chooses on val_bleu: list it first")
        recipes = {repr({k: v for k, v in dataclasses.asdict(e.config(r)).items() if k != "seed"}) for r in e.runs}
        if len(recipes) > 1:
            fail("runs", "the runs of a decoding experiment must share one recipe (same_as included) and differ "
                         "only in their seed")

    def missing_work(self, paths, e):
        """The validation decodes that the runs' decoding.json files do not hold yet."""
        from pipeline.evaluate.decoding import decode_validation, decoded_settings

        settings = e.settings()
        for run in e.runs:
            run_dir = paths.run(e.model, run.folder)
            missing = [s for s in settings if setting_key(*s) not in decoded_settings(run_dir)]
            if missing:
                print(f"{e.name}: {run.folder}: {len(missing)} decoding settings of the validation sentences",
                      flush=True)
                decode_validation(run_dir, settings)

    def inputs(self, paths, e, records):
        """The validation decodes, by run folder: only runs whose decoding.json holds every setting of the grid,
        each decoded from a commit (or counted anyway, as runs are, in a draft report); None: none yet."""
        keys = {setting_key(*s) for s in e.settings()}
        decodes = {}
        for r in records:
            path = paths.run(e.model, r.folder) / DECODING
            if path.exists():
                record = read_json(path, "validation decodes of the run")
                if keys <= set(record["settings"]) and all(traced(s["git_commit"])
                                                           for s in record["settings"].values()):
                    decodes[r.folder] = record
        return {"decodes": decodes} if decodes else None

    def complete(self, e, records, inputs):
        return super().complete(e, records, inputs) and len(inputs["decodes"]) == len(records)

    def compare(self, ev):
        """Each setting of the grid against the recipe's own on validation BLEU, by the one rule: the interval over
        seeds (paired t; each seed draws its own validation sentences, so it holds their noise too), the grid one
        family. Where the interval excludes zero, sacrebleu's paired bootstrap on each seed's validation sentences
        is shown beside it. A setting is chosen only when it beats the default, the best of those that do."""
        from pipeline.scoring.bleu import paired_bleu

        e, decodes = ev.experiment, ev.inputs["decodes"]
        keys = [setting_key(*s) for s in e.settings()]
        default = setting_key(*e.default_setting())
        decoded = [r for r in ev.records if r.folder in decodes]
        scores = {k: {r.seed: decodes[r.folder]["settings"][k]["val_bleu"] for r in decoded} for k in keys}
        means = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}
        comparisons = []
        for key in (k for k in keys if k != default):
            training = stats.training_difference(scores[key], scores[default])
            tests = []  # information beside the verdict, where the interval over seeds excludes zero
            if training is not None and (training["low"] > 0 or training["high"] < 0):
                for r in decoded:
                    record = decodes[r.folder]
                    tests.append({**paired_bleu(record["settings"][key]["hypotheses"],
                                                record["settings"][default]["hypotheses"], record["references"],
                                                tokenize=record["tokenize"]), "seed": r.seed})
            interval = stats.pooled_interval(training)
            word = stats.verdict(interval, "higher")
            word = WORDS.get(word, word)
            comparisons.append({"arm": key, "against": default, "value": key, "expect": None, "mean": means[key],
                                "metrics": [{"metric": "val_bleu", "difference": means[key] - means[default],
                                             "training": training, "interval": interval, "sample": None,
                                             "seed_tests": tests, "verdict": word, "borrowed": False}],
                                "verdict": word})
        beating = [c for c in correct_family(comparisons) if c["verdict"] == "better"]
        best = max(keys, key=lambda k: means[k])
        alphas = e.decoding["length_penalty"]
        return {"kind": self.name, "metric": "val_bleu", "default": default, "default_score": means[default],
                "best": best, "best_score": means[best],
                "chosen_value": max(beating, key=lambda c: c["mean"])["value"] if beating else default,
                "changed": bool(beating), "decoded_runs": len(decoded),
                "decoded_at": sorted({s["git_commit"][:10] for d in decodes.values() for s in d["settings"].values()}),
                "decoded_on": sorted({machine(d["provenance"]) for d in decodes.values()}),
                "sentences": {str(r.seed): len(decodes[r.folder]["sources"]) for r in decoded},
                "alphas": alphas,
                # Means by beam size (rows) and length penalty (columns); greedy has one, under the first alpha.
                "table": [{"beam_size": beam, "cells": [
                    {"mean": means[setting_key(beam, alpha)], "default": setting_key(beam, alpha) == default}
                    if beam or i == 0 else None for i, alpha in enumerate(alphas)]}
                    for beam in e.decoding["beam_size"]]}, comparisons


DESIGNS: dict[str, Design] = {d.name: d for d in (Seeds(), Ablation(), Sweep(), Deletion(), Decoding())}
DESIGN_FIELDS = {f for d in DESIGNS.values() for f in d.fields}

