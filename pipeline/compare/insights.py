"""The tests behind the insights page's sentences, computed in the comparison stage so that templates only print:
each is one test from scipy.stats or sacrebleu, worded by pipeline.compare.stats.worded."""

from __future__ import annotations

from scipy import stats as sp

from pipeline.compare.stats import worded
from pipeline.config import CONFIG, MAIN_RUN, METRICS, Paths
from pipeline.io import read_json, read_jsonl

MIN_EVIDENCE = 20  # items a headline claim must rest on; fewer and the page shows the numbers without a claim


def proportions_differ(p_a: float, n_a: int, p_b: float, n_b: int) -> dict:
    """Proportion p_a of n_a items against p_b of n_b other items (say, test against validation accuracy):
    Fisher's exact test of their right/wrong counts, worded."""
    right_a, right_b = round(p_a * n_a), round(p_b * n_b)
    table = [[right_a, n_a - right_a], [right_b, n_b - right_b]]
    return worded(p_a - p_b, sp.fisher_exact(table).pvalue, "Fisher's exact test")


def means_differ(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> dict:
    """Mean of n_a values against the mean of n_b other values, from their means and standard deviations:
    Welch's t-test, worded."""
    result = sp.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False)
    return worded(mean_a - mean_b, result.pvalue, "Welch's t-test")


def insight_tests(cls_metrics: dict, cls_config: dict, cls_epochs: list[dict], mt_metrics: dict) -> dict:
    """The insights page's tested sentences from the main runs' evaluation and files; a claim resting on fewer
    than MIN_EVIDENCE items is None (the page then shows the numbers alone)."""
    c, last = cls_metrics, (cls_epochs[-1] if cls_epochs else {})
    out = {"min_evidence": MIN_EVIDENCE, "val_vs_test": None, "confidence": None}
    if "val_accuracy" in last and cls_config["val_size"] >= MIN_EVIDENCE:
        out["val_vs_test"] = {**proportions_differ(c["test_accuracy"], c["test_images"], last["val_accuracy"],
                                                   cls_config["val_size"]),
                              "val_accuracy": last["val_accuracy"], "val_size": cls_config["val_size"],
                              "val_tta": cls_config["val_tta"], "test_tta": cls_config["test_tta"]}
    if c["wrong_count"] >= MIN_EVIDENCE and c["correct_count"] >= MIN_EVIDENCE:
        out["confidence"] = means_differ(c["mean_confidence_wrong"], c["confidence_sd_wrong"], c["wrong_count"],
                                         c["mean_confidence_correct"], c["confidence_sd_correct"], c["correct_count"])
    pair = mt_metrics["beam_vs_greedy"]
    out["beam_vs_greedy"] = {**pair, **worded(pair["difference"], pair["p_value"], pair["method"])}
    trend = mt_metrics["length_trend"]
    word = worded(trend["rho"], trend["p_value"], "Spearman's rank correlation")["word"]
    out["length_trend"] = {**trend, "word": {"higher": "rises", "lower": "falls"}.get(word, "no clear trend")}
    return out


def main_run_insights(paths: Paths) -> dict | None:
    """insight_tests for the main runs, or None before both have been evaluated."""
    cls_file, mt_file = paths.site_assets / "cls" / "metrics.json", paths.site_assets / "mt" / "metrics.json"
    if not cls_file.exists() or not mt_file.exists():
        return None
    run = paths.run("cls", MAIN_RUN)
    return insight_tests(read_json(cls_file, "cls metrics"), read_json(run / CONFIG, "run config"),
                         read_jsonl(run / METRICS), read_json(mt_file, "mt metrics"))
