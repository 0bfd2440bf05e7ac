"""Arms against arms: one interval over both noises per comparison, the verdict the one rule reads off it
(pipeline.compare.stats), and the family correction across an experiment's comparisons."""

from __future__ import annotations

import numpy as np

from pipeline.compare import stats
from pipeline.compare.provenance import machines_of
from pipeline.compare.records import RUNTIME_FIELDS, RunRecord, finished_runs
from pipeline.config import Paths
from pipeline.experiments.metrics import EPOCH_METRICS, FINAL_METRICS, HIGHER_IS_BETTER, ITEM_METRICS
from pipeline.scoring.bleu import paired_bleu, signature_tokenizer


def seed_tests(metric: str, a: list[RunRecord], b: list[RunRecord], items: dict) -> list[dict]:
    """Per-seed paired tests on the test items, shown beside the verdict and not counted by it: McNemar's exact
    test (ResNet) or sacrebleu's paired bootstrap (Transformer) at each seed both arms share where both runs
    kept their per-item test predictions."""
    if metric not in ITEM_METRICS:
        return []
    by_seed_a, by_seed_b = {r.seed: r for r in a}, {r.seed: r for r in b}
    pairs = [(by_seed_a[s], by_seed_b[s]) for s in sorted(set(by_seed_a) & set(by_seed_b))
             if items.get(by_seed_a[s].folder) is not None and items.get(by_seed_b[s].folder) is not None]
    tests = []
    for x, y in pairs:
        ta, tb = items[x.folder], items[y.folder]
        if metric == "test_accuracy":
            tests.append({**stats.mcnemar(ta["correct"], tb["correct"]), "seed": x.seed})
        elif [d["source"] for d in ta] == [d["source"] for d in tb]:
            tests.append({**paired_bleu([d["beam"] for d in ta], [d["beam"] for d in tb],
                                        [d["references"] for d in ta],
                                        tokenize=signature_tokenizer(x.bleu_signature)), "seed": x.seed})
    return tests


def test_sample_term(a: list[RunRecord], b: list[RunRecord], items: dict) -> dict | None:
    """The test-sample noise a verdict on CIFAR-10's test accuracy adds to the training noise (every seed scores
    the same 10,000 images, so the spread over seeds holds only part of it: how each image's outcome varies from
    seed to seed, not which images were drawn): the per-image difference of the two arms' correctness, each
    averaged over its runs that kept per-image predictions. Adding it in full counts that part twice, so the
    interval errs on the wide side. None where an arm has no such run."""
    kept_a = [r for r in a if items.get(r.folder) is not None]
    kept_b = [r for r in b if items.get(r.folder) is not None]
    if not kept_a or not kept_b:
        return None
    mean_a = np.mean([items[r.folder]["correct"] for r in kept_a], axis=0)
    mean_b = np.mean([items[r.folder]["correct"] for r in kept_b], axis=0)
    return stats.test_sample_term(mean_a, mean_b, sorted(r.seed for r in kept_a), sorted(r.seed for r in kept_b))


def compare_arms(metric: str, arm: str, against: str, arms: dict, items: dict, lenders: list[dict],
                 expect: str | None, model: str = "cls") -> dict:
    """One comparison on one metric: one interval over both noises, and the verdict the one rule reads off it.
    Where an arm has a single run, the training noise is the spread lent_spread picks from `lenders`."""
    a = {r.seed: r.values[metric] for r in arms[arm] if metric in r.values}
    b = {r.seed: r.values[metric] for r in arms[against] if metric in r.values}
    if not a or not b:
        return {"metric": metric, "verdict": "not enough runs", "training": None, "interval": None,
                "sample": None, "seed_tests": [], "borrowed": None}
    borrowed = lent_spread(lenders, metric, arms[against])
    training = stats.training_difference(a, b, borrowed)
    fixed_test_set = model == "cls" and metric in ITEM_METRICS
    sample = test_sample_term(arms[arm], arms[against], items) if fixed_test_set else None
    # On a fixed test set a verdict needs the test-sample noise too; without per-item predictions it cannot count it.
    interval = stats.pooled_interval(training, sample) if sample is not None or not fixed_test_set else None
    return {"metric": metric, "difference": float(np.mean(list(a.values())) - np.mean(list(b.values()))),
            "training": training, "interval": interval, "sample": sample,
            "seed_tests": seed_tests(metric, arms[arm], arms[against], items),
            "verdict": stats.verdict(interval, expect, HIGHER_IS_BETTER.get(metric, True)),
            "borrowed": borrowed if training is not None and training["method"].startswith("t with the seed spread")
            else None}


def correct_family(comparisons: list[dict]) -> list[dict]:
    """An experiment's comparisons on their deciding metric (each one's first) as one family: Holm's adjustment of
    their intervals' p-values (stats.holm), kept beside each interval; a verdict whose adjusted p-value reaches
    ALPHA says no clear difference (adjusting only raises a p-value, so no verdict turns the other way)."""
    deciding = [c["metrics"][0] for c in comparisons if c["metrics"][0]["interval"] is not None]
    for m, adjusted in zip(deciding, stats.holm([m["interval"]["p_value"] for m in deciding])):
        m["interval"].update(p_holm=adjusted, family=len(deciding))
        if adjusted >= stats.ALPHA:
            m["verdict"] = "no clear difference"
    for c in comparisons:
        c["verdict"] = c["metrics"][0]["verdict"]
    return comparisons


def recipe_of(record: RunRecord) -> str:
    """What a run trained and scored, apart from its seed and how it ran (device, threads, precision)."""
    return repr(sorted((k, v) for k, v in record.config.items() if k != "seed" and k not in RUNTIME_FIELDS))


def seed_spreads(paths: Paths, experiments: list) -> dict[str, list[dict]]:
    """Per model, in experiments.yaml's order, the seed spread each seeds experiment can lend to arms with a single
    run: {"source", "recipe" (recipe_of its runs; None if they differ), "machines", "metrics": {metric: {"sd",
    "n"}}}."""
    lenders: dict[str, list[dict]] = {}
    for experiment in experiments:
        if not experiment.kind.lends_spread:
            continue
        records, _ = finished_runs(paths, experiment)
        metrics = {}
        for metric in FINAL_METRICS[experiment.model] + EPOCH_METRICS[experiment.model]:
            values = [r.values[metric] for r in records if metric in r.values]
            if len(values) >= 2:
                metrics[metric] = {"sd": float(np.std(values, ddof=1)), "n": len(values)}
        recipes = {recipe_of(r) for r in records}
        if metrics:
            lenders.setdefault(experiment.model, []).append({
                "source": experiment.name, "recipe": recipes.pop() if len(recipes) == 1 else None,
                "machines": [m["machine"] for m in machines_of(records)], "metrics": metrics})
    return lenders


def lent_spread(lenders: list[dict], metric: str, against: list[RunRecord]) -> dict | None:
    """The seed spread {"sd", "n", "source", "machines"} a comparison borrows where an arm has a single run: that of
    the seeds experiment of the recipe its `against` arm trained, where it has stats.MIN_LENDER_SEEDS seeds or
    more; else that of the one with the most seeds (the first in experiments.yaml on a tie). None where none has
    two."""
    able = [lender for lender in lenders if metric in lender["metrics"]]
    recipes = {recipe_of(r) for r in against}
    own = [lender for lender in able if len(recipes) == 1 and lender["recipe"] in recipes
           and lender["metrics"][metric]["n"] >= stats.MIN_LENDER_SEEDS]
    lender = max(own or able, key=lambda candidate: candidate["metrics"][metric]["n"], default=None)
    return lender and {**lender["metrics"][metric], "source": lender["source"], "machines": lender["machines"]}
