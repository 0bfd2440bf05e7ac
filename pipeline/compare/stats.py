"""The statistics of the comparison stage, from the field's libraries, and the one rule that turns them into a
verdict.

Two sources of noise are counted. Training noise: the same recipe gives another score with another seed; it is
measured over seeds with Student's t (n - 1 degrees of freedom; paired where two arms share seeds), or, where an arm
has one run, borrowed from one of the model's seeds experiments. Test-sample noise: another sample of test items
would give other scores. Where the seed draws the items (the validation splits of both models, the Transformer's test
sentences), the spread over seeds already carries it. Where every seed scores the same items (CIFAR-10's official
test set), it is measured on the items themselves and added. One interval over both decides; per-seed paired tests
(McNemar's, sacrebleu's paired bootstrap) are shown beside it as information and decide nothing."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # of every interval
ALPHA = 1 - CONFIDENCE  # the level of every test whose p-value a page words
P_FLOOR = 1e-300  # below this a p-value underflows to 0 in double precision; pages write "p < 1e-300"
# A borrowed spread over fewer seeds than this widens an interval more than a change of recipe moves it.
MIN_LENDER_SEEDS = 3
RULE = ("A difference counts only when one 95 % interval of it excludes zero. The interval counts training noise "
        "(Student's t over seeds: paired where the arms share seeds, Welch's where they do not, or, where an arm "
        "has one run, a seed spread borrowed from the seeds experiment of the recipe it is compared against if "
        f"that has {MIN_LENDER_SEEDS} seeds or more, else from the one with the most) and test-sample noise: where "
        "every seed scores the same test items (CIFAR-10's test set), the standard error of the seed-averaged per-item "
        "difference is added in quadrature; where the seed draws the scored items (validation splits, the "
        "Transformer's test sentences), the spread over seeds already holds it. Every seed pools into that one "
        "interval, and the per-seed paired tests are shown, not counted: none of them can veto it. More runs "
        "usually narrow the interval, but can also widen it, where they spread more than the runs before them. "
        "An experiment's comparisons on its deciding metric are one family: the p-value of each interval's t "
        "statistic is adjusted by Holm's step-down method over the family, and a difference counts only where "
        "the adjusted p-value stays below 0.05 too. Where the interval reaches zero, or the adjusted p-value 0.05, "
        "there is no clear difference; with nothing to measure the noise by, the runs cannot decide.")


def seed_summary(values: list[float]) -> dict:
    """Mean, standard deviation (None for one run), count and the 95 % t half-width of the mean (None for one
    run: one run has no spread)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "halfwidth": None, "min": min(values, default=math.nan),
                "max": max(values, default=math.nan)}
    low, high = _interval(mean, float(stats.sem(values)), n - 1)
    return {"mean": mean, "sd": float(np.std(values, ddof=1)), "n": n, "halfwidth": high - mean,
            "min": min(values), "max": max(values)}


def mean_interval(mean: float, sd: float, n: int) -> tuple[float, float]:
    """The 95 % Student t interval of a mean of n values with standard deviation sd."""
    return _interval(mean, sd / math.sqrt(n), n - 1)


def prediction_interval(values: list[float]) -> tuple[float, float]:
    """The 95 % prediction interval of one new run from runs of the same recipe: mean ± t(n - 1) · sd · √(1 + 1/n),
    Student's t (scipy.stats); it needs two runs or more."""
    n, sd = len(values), float(np.std(values, ddof=1))
    return _interval(float(np.mean(values)), sd * math.sqrt(1 + 1 / n), n - 1)


def training_difference(a: dict, b: dict, borrowed: dict | None = None) -> dict | None:
    """The difference of means of arm a and arm b (scores by seed) and its standard error over training noise,
    with the degrees of freedom of its t distribution: paired t over the seeds both arms share (at least two),
    else Welch's t (two runs or more each), else a seed spread borrowed {"sd", "n", "source"}; None when there is
    nothing to measure it by. Its low/high are the 95 % interval over training noise alone."""
    shared = sorted(set(a) & set(b))
    difference = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if len(shared) >= 2 and len(shared) == len(a) == len(b):
        se, df = float(stats.sem([a[s] - b[s] for s in shared])), len(shared) - 1
        method = f"paired t over {len(shared)} shared seeds"
    elif len(a) >= 2 and len(b) >= 2:
        result = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        se = math.sqrt(np.var(list(a.values()), ddof=1) / len(a) + np.var(list(b.values()), ddof=1) / len(b))
        df = float(result.df)
        method = f"Welch's t over {len(a)} and {len(b)} seeds"
    elif borrowed and borrowed.get("sd") is not None and borrowed.get("n", 0) >= 2:
        se, df = borrowed["sd"] * math.sqrt(1 / len(a) + 1 / len(b)), borrowed["n"] - 1
        method = f"t with the seed spread borrowed from {borrowed['source']}"
    else:
        return None
    low, high = _interval(difference, se, df)
    return {"difference": difference, "se": se, "df": df, "low": low, "high": high, "method": method}


def test_sample_term(per_item_a: np.ndarray, per_item_b: np.ndarray, seeds_a: list, seeds_b: list) -> dict:
    """The test-sample noise of a difference scored on the same items in both arms: the standard error over the
    items of the per-item difference of the arms' seed-averaged scores (scipy.stats.sem)."""
    differences = np.asarray(per_item_a, dtype=float) - np.asarray(per_item_b, dtype=float)
    return {"se": float(stats.sem(differences)), "items": len(differences), "seeds_a": list(seeds_a),
            "seeds_b": list(seeds_b)}


def pooled_interval(training: dict | None, sample: dict | None = None) -> dict | None:
    """The one interval a verdict reads: the training standard error and, where given, the test-sample one added
    in quadrature, with the t quantile of the training noise's degrees of freedom; and its two-sided p-value."""
    if training is None:
        return None
    se = math.hypot(training["se"], sample["se"] if sample else 0.0)
    difference = training["difference"]
    low, high = _interval(difference, se, training["df"])
    p = float(2 * stats.t.sf(abs(difference) / se, training["df"])) if se > 0 else float(difference == 0)
    return {"difference": difference, "low": low, "high": high, "p_value": p, "se": se,
            "counts_test_sample": sample is not None}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (the familywise error rate held at the test's level):
    the k-th smallest of m is multiplied by m - k + 1, and no adjusted value falls below a smaller one's."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _interval(center: float, se: float, df: float) -> tuple[float, float]:
    """The 95 % Student t interval center ± t(df) · se; the point itself where se is 0 (where scipy's t.interval
    gives NaN)."""
    if se == 0:
        return center, center
    low, high = stats.t.interval(CONFIDENCE, df=df, loc=center, scale=se)
    return float(low), float(high)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same items: of the items exactly one got right, does
    either get more than half? (scipy.stats.binomtest on the discordant pairs.)"""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p), "method": "McNemar's exact test"}


def verdict(interval: dict | None, expect: str | None = None, higher_is_better: bool = True) -> str:
    """The one rule (RULE) for one comparison, read off its one interval: "supported" or "contradicted" where the
    experiment expects a direction of the better score ("higher" = better), else "higher" / "lower" (of the
    metric itself), or "no clear difference", or "not enough runs" where there is no interval."""
    if interval is None:
        return "not enough runs"
    if interval["low"] > 0:
        direction = "higher"
    elif interval["high"] < 0:
        direction = "lower"
    else:
        return "no clear difference"
    if expect is None:
        return direction
    better = direction == ("higher" if higher_is_better else "lower")
    return "supported" if better == (expect == "higher") else "contradicted"


def worded(difference: float, p_value: float, method: str) -> dict:
    """A single test's result in the words a page uses: "higher" / "lower" where its p-value is below ALPHA (in
    the direction of the difference), else "no clear difference"."""
    word = "no clear difference" if p_value >= ALPHA else ("higher" if difference > 0 else "lower")
    return {"difference": float(difference), "p_value": float(p_value), "method": method, "word": word}
