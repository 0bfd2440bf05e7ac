"""The statistics of the comparison stage, from the field's libraries, and the one rule that turns them into a
verdict.

Two sources of noise are kept apart. Training noise: the same recipe gives another score with another seed;
it is measured over seeds with Student's t (n - 1 degrees of freedom; paired where two arms share seeds), or
borrowed from the model's seeds experiment where an arm has one run. Test-sample noise: another sample of test
items would give other scores; it is measured on the items both arms were scored on, with a paired test
(a paired bootstrap over images for classifiers, McNemar's exact test per seed beside it; sacrebleu's paired
bootstrap for translations, pipeline.scoring.bleu.paired_bleu)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # of every interval
ALPHA = 1 - CONFIDENCE  # the level of every paired test
RULE = ("A difference counts only when its 95 % interval over training noise (Student's t over seeds) excludes "
        "zero and, where both arms were scored on the same test items, the paired test on those items finds it "
        "at the 5 % level too; otherwise there is no clear difference. With fewer than two runs per arm and no "
        "measured seed spread to borrow, there are not enough runs for a verdict.")
# The words a verdict can take; a sweep says "better" / "worse" (than the default) for supported / contradicted.
VERDICTS = ("supported", "contradicted", "higher", "lower", "better", "worse", "no clear difference",
            "not enough runs")


def seed_summary(values: list[float]) -> dict:
    """Mean, standard deviation (None for one run), count and the 95 % t half-width of the mean (None for one
    run: one run has no spread)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "halfwidth": None, "min": min(values, default=math.nan),
                "max": max(values, default=math.nan)}
    low, high = stats.t.interval(CONFIDENCE, df=n - 1, loc=mean, scale=stats.sem(values))
    return {"mean": mean, "sd": float(np.std(values, ddof=1)), "n": n, "halfwidth": float(high - mean),
            "min": min(values), "max": max(values)}


def mean_interval(mean: float, sd: float, n: int) -> tuple[float, float]:
    """The 95 % Student t interval of a mean of n values with standard deviation sd."""
    return tuple(float(x) for x in stats.t.interval(CONFIDENCE, df=n - 1, loc=mean, scale=sd / math.sqrt(n)))


def training_difference(a: dict, b: dict, borrowed: dict | None = None) -> dict | None:
    """The difference of means of arm a and arm b (scores by seed) and its 95 % interval over training noise:
    paired t over the seeds both arms share (at least two), else Welch's t (two runs or more each), else a
    t interval from a borrowed seed spread {"sd", "n", "source"}; None when there is nothing to measure it by."""
    shared = sorted(set(a) & set(b))
    difference = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if len(shared) >= 2 and len(shared) == len(a) == len(b):
        result = stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared])
        low, high = result.confidence_interval(CONFIDENCE)
        method = f"paired t over {len(shared)} shared seeds"
    elif len(a) >= 2 and len(b) >= 2:
        result = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        low, high = result.confidence_interval(CONFIDENCE)
        method = f"Welch's t over {len(a)} and {len(b)} seeds"
    elif borrowed and borrowed.get("sd") is not None and borrowed.get("n", 0) >= 2:
        scale = borrowed["sd"] * math.sqrt(1 / len(a) + 1 / len(b))
        low, high = stats.t.interval(CONFIDENCE, df=borrowed["n"] - 1, loc=difference, scale=scale)
        method = f"t with the seed spread borrowed from {borrowed['source']}"
    else:
        return None
    return {"difference": difference, "low": float(low), "high": float(high), "method": method}


def paired_items_difference(scores_a: np.ndarray, scores_b: np.ndarray, seed: int = 0) -> dict:
    """Mean of per-item scores a - b on the same test items, with a 95 % paired-bootstrap interval over the
    items (scipy.stats.bootstrap): the test-sample noise of the difference."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    result = stats.bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                             paired=True, vectorized=True, confidence_level=CONFIDENCE, n_resamples=2000,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"difference": float(np.mean(a - b)), "low": float(low), "high": float(high), "items": len(a),
            "method": f"paired bootstrap over {len(a)} test items"}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same items: of the items exactly one got right, does
    either get more than half? (scipy.stats.binomtest on the discordant pairs.)"""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p), "method": "McNemar's exact test"}


def finds_a_difference(test: dict) -> bool:
    """Does a test-sample test reject "no difference" (an interval that excludes zero, or p below the level)?"""
    if "p_value" in test:
        return test["p_value"] < ALPHA
    return test["low"] > 0 or test["high"] < 0


def verdict(training: dict | None, sample_tests: list[dict] = (), expect: str | None = None,
            higher_is_better: bool = True) -> str:
    """The one rule (RULE) for one comparison: "supported" or "contradicted" where the experiment expects a
    direction of the better score ("higher" = better), else "higher" / "lower" (of the metric itself), or
    "no clear difference", or "not enough runs"."""
    if training is None:
        return "not enough runs"
    if training["low"] > 0:
        direction = "higher"
    elif training["high"] < 0:
        direction = "lower"
    else:
        return "no clear difference"
    if not all(finds_a_difference(t) for t in sample_tests):
        return "no clear difference"
    if expect is None:
        return direction
    better = direction == ("higher" if higher_is_better else "lower")
    return "supported" if better == (expect == "higher") else "contradicted"
