"""Sentences from numbers: the words a page uses for a comparison are computed, never typed in."""

from __future__ import annotations

import math

MIN_EVIDENCE = 20  # items a headline claim must rest on; fewer and the page shows the numbers without a claim
Z95 = 1.96  # two-sided 95% normal quantile


def compare(a: float, b: float, spread: float) -> str:
    """"higher", "lower" or "no clear difference": a against b, where a difference within `spread`
    (the 95% half-width of a - b) does not count."""
    if abs(a - b) <= spread:
        return "no clear difference"
    return "higher" if a > b else "lower"


def proportion_halfwidth(p: float, n: int) -> float:
    """95% half-width of a proportion p measured on n items (normal approximation)."""
    return Z95 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.inf


def difference_halfwidth(*halfwidths: float) -> float:
    """95% half-width of a difference of independent estimates, from their own half-widths."""
    return math.sqrt(sum(h * h for h in halfwidths))


def mean_difference_halfwidth(sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """95% half-width of the difference of two means of independent samples."""
    if not n_a or not n_b:
        return math.inf
    return Z95 * math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)


JINJA_GLOBALS = {"compare": compare, "proportion_halfwidth": proportion_halfwidth,
                 "difference_halfwidth": difference_halfwidth, "mean_difference_halfwidth": mean_difference_halfwidth,
                 "MIN_EVIDENCE": MIN_EVIDENCE}
