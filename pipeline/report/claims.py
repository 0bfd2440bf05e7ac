"""Sentences from numbers: the words a page uses for a comparison are computed, never typed in, by the
comparison stage's rule (pipeline.compare.stats: a difference counts at the 5 % level)."""

from __future__ import annotations

from scipy import stats

from pipeline.compare.stats import ALPHA

MIN_EVIDENCE = 20  # items a headline claim must rest on; fewer and the page shows the numbers without a claim


def _worded(difference: float, p_value: float, method: str) -> dict:
    word = "no clear difference" if p_value >= ALPHA else ("higher" if difference > 0 else "lower")
    return {"difference": difference, "p_value": float(p_value), "method": method, "word": word}


def proportions_differ(p_a: float, n_a: int, p_b: float, n_b: int) -> dict:
    """Proportion p_a of n_a items against p_b of n_b other items (say, test against validation accuracy):
    the difference, Fisher's exact test of their right/wrong counts, and its word ("higher", "lower" or
    "no clear difference")."""
    right_a, right_b = round(p_a * n_a), round(p_b * n_b)
    table = [[right_a, n_a - right_a], [right_b, n_b - right_b]]
    return _worded(p_a - p_b, stats.fisher_exact(table).pvalue, "Fisher's exact test")


def means_differ(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> dict:
    """Mean of n_a values against the mean of n_b other values, from their means and standard deviations:
    the difference, Welch's t-test, and its word."""
    result = stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False)
    return _worded(mean_a - mean_b, result.pvalue, "Welch's t-test")


JINJA_GLOBALS = {"proportions_differ": proportions_differ, "means_differ": means_differ,
                 "MIN_EVIDENCE": MIN_EVIDENCE}
