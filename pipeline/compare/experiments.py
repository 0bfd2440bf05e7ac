"""The comparison stage: the finished runs' files in, numbers and verdicts out (site_assets/experiments/).

It reads only what training and evaluation wrote (config, provenance, metrics, final scores, the kept test
predictions, the analyses) and imports no model. What differs between designs is in
pipeline.experiments.designs; every verdict comes from pipeline.compare.stats.verdict. The files it writes follow
pipeline.compare.schema, and experiment_results reads them back checked against it."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.compare import stats
from pipeline.compare.arms import seed_spreads
from pipeline.compare.benchmarks import runs_table
from pipeline.compare.insights import main_run_insights
from pipeline.compare.provenance import runs_mix
from pipeline.compare.records import by_arm, differing_fields, finished_runs, item_scores
from pipeline.compare.schema import check_result
from pipeline.compare.timing import typical_train_s
from pipeline.config import Paths
from pipeline.experiments.definitions import Experiment
from pipeline.experiments.base import Evidence
from pipeline.io import read_json, write_json

INSIGHTS = "insights.json"  # the tests behind the insights page's sentences


def compare_experiment(paths: Paths, experiment: Experiment, lenders: dict | None = None) -> dict | None:
    """Numbers and verdicts for one experiment from its finished runs that count, or None if none does (or its
    design has nothing to show yet)."""
    design = experiment.kind
    records, uncounted = finished_runs(paths, experiment)
    extra = _analyses(paths, experiment) if records else None
    inputs = design.inputs(paths, experiment, records) if records else None
    if extra is None or inputs is None:
        return None
    typical = typical_train_s(records)
    records = [dataclasses.replace(r, typical_train_s=typical[r.folder]) for r in records]
    arms = by_arm(records)
    summaries = {m: {arm: stats.seed_summary([r.values[m] for r in rs if m in r.values])
                     for arm, rs in arms.items() if any(m in r.values for r in rs)} for m in experiment.metrics}
    evidence = Evidence(experiment, records, arms, {r.folder: item_scores(paths, experiment.model, r)
                                                    for r in records}, (lenders or {}).get(experiment.model, []),
                        summaries, inputs)
    complete = design.complete(experiment, records, inputs)
    # A confirmatory experiment was declared before its runs: no interval or verdict is worked out until all of
    # them have finished, so interim results cannot choose when to stop.
    if experiment.confirmatory and not complete:
        answer, comparisons = {"kind": "held", "metric": experiment.metrics[0]}, []
    else:
        answer, comparisons = design.compare(evidence)
    arm_fields = {k for r in records for k in r.config} - {"seed"}
    varied = {k for k in differing_fields(records) if k in arm_fields}
    return {
        "name": experiment.name, "model": experiment.model, "question": experiment.question,
        "claim": experiment.claim, "caveats": list(experiment.caveats), "rule": stats.RULE,
        "design": experiment.design, "trains": design.trains, "plots": list(design.plots),
        "budget": experiment.budget, "metrics": experiment.metrics,
        "control": experiment.control, "sweep": experiment.sweep, "choose_on": experiment.choose_on,
        "complete": complete, "planned_runs": len(experiment.runs),
        "confirmatory": experiment.confirmatory, "exploratory": experiment.exploratory,
        "differing_fields": differing_fields(records), "varied_fields": sorted(varied),
        "differing_provenance": differing_fields(records, "provenance"),
        "mix": runs_mix(records), "reproduction": design.reproduction(evidence),
        "runs": [r.to_json() for r in records],
        "uncounted": uncounted, "machine": experiment.machine,
        "summaries": summaries, "comparisons": comparisons, "answer": answer,
        "train_wall_s": sum(r.train_wall_s for r in records),
        # Only where an arm lets attention see source padding can a padded batch change an output.
        "padding_sentences": padding_sentences(arms) if "source_padding_mask" in varied else [], **extra,
        **(inputs if design.shows_inputs else {}),
    }


def _analyses(paths: Paths, experiment: Experiment) -> dict:
    """The analysis an experiment shows beside its runs (experiments.yaml's `analysis`), where it has been run."""
    extra = {}
    if experiment.analysis and (path := paths.analysis(experiment.analysis)).exists():
        extra[experiment.analysis] = read_json(path, experiment.analysis)
        if experiment.analysis == "gradient_norms":
            extra["gradient_norm_sentences"] = gradient_norm_sentences(extra["gradient_norms"])
    return extra


def gradient_norm_sentences(norms: dict) -> list[str]:
    """Sentences computed from the gradient-norm analysis: for each network, how the gradient at the stem's
    output compares with that at the last block's, at initialisation and after the training steps; then plain
    against residual at each depth."""
    lines, stem = [], {}
    for name, layers in norms["networks"].items():
        first, last = layers[0], layers[-1]
        stem[name] = first["init"]
        lines.append(f"{name}: at initialisation the gradient at the stem's output is {first['init']:.3g}, "
                     f"{first['init'] / last['init']:.3g} times that at the last block's output ({last['init']:.3g}); "
                     f"after {norms['steps']} SGD steps {first['trained']:.3g}, "
                     f"{first['trained'] / last['trained']:.3g} times the last block's ({last['trained']:.3g}).")
    for depth in (18, 34):
        plain = next((v for k, v in stem.items() if k.startswith(f"ResNet-{depth} plain")), None)
        residual = next((v for k, v in stem.items() if k.startswith(f"ResNet-{depth} (residual")), None)
        if plain and residual:
            lines.append(f"At {depth} layers the plain network's stem gets {plain / residual:.3g} times the residual "
                         "network's gradient at initialisation.")
    return lines


def padding_sentences(arms: dict[str, list[dict]]) -> list[str]:
    """For each arm whose runs decoded the test set both in padded batches (test_bleu) and one sentence at a
    time (test_bleu_alone): both scores, how many outputs the padding changed, and whether padding lowers BLEU
    by the one rule (paired t over the arm's seeds)."""
    lines = []
    for arm, runs in arms.items():
        runs = [r for r in runs if "test_bleu_alone" in r.values and r.changed_by_padding is not None]
        if not runs:
            continue
        padded = {r.seed: r.values["test_bleu"] for r in runs}
        alone = {r.seed: r.values["test_bleu_alone"] for r in runs}
        difference = stats.training_difference(padded, alone)
        word = stats.verdict(stats.pooled_interval(difference))
        per_run = [f"{r.changed_by_padding} of {r.test_sentences}" for r in runs]  # each seed has its own split
        if len(runs) == 1:
            how_many, changed, seeds = "one run", per_run[0], ""
        else:
            how_many, changed = f"the mean of {len(runs)} runs", f"{', '.join(per_run[:-1])} and {per_run[-1]}"
            seeds = f" (seeds {', '.join(str(r.seed) for r in runs)})"
        line = (f"{arm}: test BLEU {np.mean(list(padded.values())):.2f} decoded in padded batches and "
                f"{np.mean(list(alone.values())):.2f} one sentence at a time, with no padding ({how_many}); "
                f"the padding changed {changed} outputs{seeds}")
        if word == "not enough runs":
            line += "; one run gives no interval, so whether padding lowers the score stays open."
        else:
            interval = f"{difference['low']:+.2f} to {difference['high']:+.2f}, {difference['method']}"
            line += {"lower": f"; padding lowers the score ({interval}).",
                     "higher": f"; padding raises the score ({interval}).",
                     "no clear difference": f"; no clear difference ({interval})."}[word]
        lines.append(line)
    return lines


def compare_all(paths: Paths, experiments: list[Experiment]) -> list[dict]:
    """The comparison stage: site_assets/experiments/<name>.json for every experiment with a finished run,
    and index.json naming them in the order of experiments.yaml."""
    results, folder = [], paths.site_assets / "experiments"
    lenders = seed_spreads(paths, experiments)
    for experiment in experiments:
        result = compare_experiment(paths, experiment, lenders)
        if result is None:
            (folder / f"{experiment.name}.json").unlink(missing_ok=True)
            continue
        check_result(result, folder / f"{experiment.name}.json")
        write_json(folder / f"{experiment.name}.json", result)
        results.append(result)
    uncounted = {e.name: [{k: r[k] for k in ("folder", "reason")} for r in finished_runs(paths, e)[1]]
                 for e in experiments}
    write_json(folder / "index.json", {"experiments": [r["name"] for r in results],
                                        "planned": [e.name for e in experiments],
                                        "uncounted": {name: runs for name, runs in uncounted.items() if runs}})
    write_json(folder / "runs.json", runs_table(paths))
    insights = main_run_insights(paths)
    if insights is not None:
        write_json(folder / INSIGHTS, insights)
    return results


def experiment_results(paths: Paths) -> list[dict]:
    """The comparison stage's results, in the order of experiments.yaml (none before `make experiments`), each
    checked against the schema."""
    folder = paths.site_assets / "experiments"
    if not (folder / "index.json").exists():
        return []
    names = read_json(folder / "index.json", "experiment index")["experiments"]
    return [check_result(read_json(folder / f"{name}.json", f"results of experiment {name}"),
                         folder / f"{name}.json") for name in names]
