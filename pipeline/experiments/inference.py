"""The designs that train nothing and score runs trained elsewhere on their validation split with each setting of
a grid, choosing a setting only where it beats the recipe's own by the one rule: decoding (the Transformer's beam size
and length penalty) and views (the ResNet's test-time views). designs.py's registry holds them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.compare import stats
from pipeline.compare.arms import correct_family
from pipeline.compare.provenance import machine
from pipeline.compare.records import traced
from pipeline.config import DECODING, VIEWS, setting_key, views_key
from pipeline.experiments.base import WORDS, Design, Fail
from pipeline.io import read_json

if TYPE_CHECKING:
    from pipeline.experiments.definitions import Experiment


def check_one_recipe(e: Experiment, fail: Fail, metric: str) -> None:
    """What a grid design's runs must be: scored on `metric`, listed first, and of one recipe (same_as included)
    that differ only in their seed."""
    if e.metrics[0] != metric:
        fail("metrics", f"a {e.design} experiment chooses on {metric}: list it first")
    recipes = {repr({k: v for k, v in dataclasses.asdict(e.config(r)).items() if k != "seed"}) for r in e.runs}
    if len(recipes) > 1:
        fail("runs", f"the runs of a {e.design} experiment must share one recipe (same_as included) and differ "
                     "only in their seed")


def decoding_setting(beam_size: int, length_penalty: float) -> tuple[int, float]:
    """A (beam size, length penalty) pair as the grid holds it: greedy decoding (beam size 0) has no length
    penalty, so every greedy pair is (0, 0.0)."""
    return beam_size, float(length_penalty) if beam_size else 0.0


class Decoding(Design):
    name, fields, one_arm, trains, plots = "decoding", ("decoding",), True, False, ("decoding_grid",)
    answer_fields = ("metric", "default", "default_score", "best", "best_score", "chosen_value", "changed",
                     "decoded_runs", "decoded_at", "decoded_on", "sentences", "alphas", "table")

    @staticmethod
    def settings(e: Experiment) -> list[tuple[int, float]]:
        """The grid: every (beam size, length penalty), beam size 0 (greedy) once."""
        return list(dict.fromkeys(decoding_setting(beam, alpha) for beam in e.decoding["beam_size"]
                                  for alpha in e.decoding["length_penalty"]))

    @staticmethod
    def default_setting(e: Experiment) -> tuple[int, float]:
        """The (beam size, length penalty) of the recipe the runs share."""
        config = e.config(e.runs[0])
        return decoding_setting(config.beam_size, config.length_penalty)

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
        if self.default_setting(e) not in self.settings(e):
            fail("decoding", "the grid must include the recipe's own beam_size and length_penalty: a setting is "
                             "chosen only when it beats the default")
        check_one_recipe(e, fail, "val_bleu")

    def missing_work(self, paths, e):
        """The validation decodes that the runs' decoding.json files do not hold yet."""
        from pipeline.evaluate.decoding import decode_validation, decoded_settings

        settings = self.settings(e)
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
        keys = {setting_key(*s) for s in self.settings(e)}
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
        keys = [setting_key(*s) for s in self.settings(e)]
        default = setting_key(*self.default_setting(e))
        decoded = [r for r in ev.records if r.folder in decodes]
        scores = {k: {r.seed: decodes[r.folder]["settings"][k]["val_bleu"] for r in decoded} for k in keys}
        means = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}

        def tests(key):  # sacrebleu's paired bootstrap on each seed's validation sentences
            return [{**paired_bleu(d["settings"][key]["hypotheses"], d["settings"][default]["hypotheses"],
                                   d["references"], tokenize=d["tokenize"]), "seed": r.seed}
                    for r, d in ((r, decodes[r.folder]) for r in decoded)]

        comparisons = grid_comparisons(keys, default, scores, "val_bleu", tests)
        beating = [c for c in comparisons if c["verdict"] == "better"]
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


class Views(Design):
    name, fields, one_arm, trains, plots = "views", ("views",), True, False, ()
    answer_fields = ("metric", "default", "default_score", "best", "best_score", "chosen_value", "changed",
                     "scored_runs", "scored_at", "scored_on", "images", "table")

    @staticmethod
    def settings(e: Experiment) -> list[tuple[bool, int]]:
        """The grid of (mirror, shift): the image alone, then the mirror image with each shift (0: none)."""
        return [(False, 0)] + [(True, shift) for shift in e.views["shift"]]

    @staticmethod
    def default_setting(e: Experiment) -> tuple[bool, int]:
        """The views the runs' recipe scores its test images with (test_tta, tta_translate)."""
        config = e.config(e.runs[0])
        return config.test_tta, config.tta_translate if config.test_tta else 0

    def check(self, e, fail):
        if e.model != "cls":
            fail("model", "a views experiment scores ResNet runs: model cls")
        shifts = e.views.get("shift") if isinstance(e.views, dict) else None
        if not isinstance(e.views, dict) or set(e.views) != {"shift"} or not isinstance(shifts, list) or not shifts \
                or any(type(s) is not int or not 0 <= s <= 4 for s in shifts):
            fail("views", "must be {shift: [whole numbers of pixels, 0 to 4; 0 = the mirror image alone]}")
        check_one_recipe(e, fail, "val_accuracy")
        if self.default_setting(e) not in self.settings(e):
            fail("views", "the grid must include the recipe's own views (test_tta, tta_translate): a setting is "
                          "chosen only when it beats the default")

    def missing_work(self, paths, e):
        """The validation scores that the runs' views.json files do not hold yet."""
        from pipeline.evaluate.views import score_views, scored_settings

        for run in e.runs:
            run_dir = paths.run(e.model, run.folder)
            missing = [s for s in self.settings(e) if views_key(*s) not in scored_settings(run_dir)]
            if missing:
                print(f"{e.name}: {run.folder}: {len(missing)} settings of test-time views on the validation images",
                      flush=True)
                score_views(paths, run_dir, self.settings(e))

    def inputs(self, paths, e, records):
        """The validation scores, by run folder: runs whose views.json holds every setting, each from a commit."""
        keys = {views_key(*s) for s in self.settings(e)}
        scored = {}
        for r in records:
            path = paths.run(e.model, r.folder) / VIEWS
            record = read_json(path, "validation views of the run") if path.exists() else {"settings": {}}
            if keys <= set(record["settings"]) and all(traced(s["git_commit"]) for s in record["settings"].values()):
                scored[r.folder] = record
        return {"scored": scored} if scored else None

    def complete(self, e, records, inputs):
        return super().complete(e, records, inputs) and len(inputs["scored"]) == len(records)

    def compare(self, ev):
        """Each setting against the recipe's own on validation accuracy (grid_comparisons), McNemar's exact test
        on each seed's validation images beside it. A setting is chosen only when it beats the default, the best
        of those that do; each one's scoring time is shown, since the test pays it on every image."""
        e, scored = ev.experiment, ev.inputs["scored"]
        keys = [views_key(*s) for s in self.settings(e)]
        default = views_key(*self.default_setting(e))
        runs = [r for r in ev.records if r.folder in scored]
        scores = {k: {r.seed: scored[r.folder]["settings"][k]["val_accuracy"] for r in runs} for k in keys}
        means = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}

        def right(record: dict, key: str) -> np.ndarray:
            return ~np.isin(np.arange(record["images"]), record["settings"][key]["wrong"])

        def tests(key):
            return [{**stats.mcnemar(right(d, key), right(d, default)), "seed": r.seed}
                    for r, d in ((r, scored[r.folder]) for r in runs)]

        comparisons = grid_comparisons(keys, default, scores, "val_accuracy", tests)
        beating = [c for c in comparisons if c["verdict"] == "better"]
        best = max(keys, key=lambda k: means[k])
        settings = [d["settings"] for d in scored.values()]
        return {"kind": self.name, "metric": "val_accuracy", "default": default, "default_score": means[default],
                "best": best, "best_score": means[best],
                "chosen_value": max(beating, key=lambda c: c["mean"])["value"] if beating else default,
                "changed": bool(beating), "scored_runs": len(runs),
                "scored_at": sorted({s["git_commit"][:10] for d in settings for s in d.values()}),
                "scored_on": sorted({machine(d["provenance"]) for d in scored.values()}),
                "images": {str(r.seed): scored[r.folder]["images"] for r in runs},
                "table": [{"setting": k, "mean": means[k], "default": k == default, "passes": settings[0][k]["passes"],
                           # the mean time per 1,000 images over the runs, on the machines named in scored_on
                           "ms_per_image": float(np.mean([s[k]["seconds"] / d["images"] * 1000
                                                          for s, d in zip(settings, scored.values())]))}
                          for k in keys]}, comparisons


def grid_comparisons(keys: list[str], default: str, scores: dict, metric: str, tests: Callable) -> list[dict]:
    """Each setting of an inference grid against the recipe's own on a validation score (scores: setting -> seed
    -> score), by the one rule: the interval over seeds (paired t; each seed draws its own validation split, so it
    holds the split's noise too), the grid one family (correct_family). Where an interval excludes zero, the
    per-seed paired tests tests(setting) are shown beside it, as information."""
    means = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}
    comparisons = []
    for key in (k for k in keys if k != default):
        training = stats.training_difference(scores[key], scores[default])
        decided = training is not None and (training["low"] > 0 or training["high"] < 0)
        interval = stats.pooled_interval(training)
        word = stats.verdict(interval, "higher")
        word = WORDS.get(word, word)
        comparisons.append({"arm": key, "against": default, "value": key, "expect": None, "mean": means[key],
                            "metrics": [{"metric": metric, "difference": means[key] - means[default],
                                         "training": training, "interval": interval, "sample": None,
                                         "seed_tests": tests(key) if decided else [], "verdict": word,
                                         "borrowed": None}],
                            "verdict": word})
    return correct_family(comparisons)
