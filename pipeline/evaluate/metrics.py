"""Classification metrics from label arrays (numpy only, so tests and figures can share them)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """Counts (classes, classes): row = true class, column = predicted class."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its total: the share of a true class given each prediction."""
    totals = confusion.sum(1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)


def per_class(confusion: np.ndarray, names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class."""
    true_positive = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    rows = []
    for i, name in enumerate(names):
        precision = true_positive[i] / predicted[i] if predicted[i] else 0.0
        recall = true_positive[i] / actual[i] if actual[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(actual[i])})
    return rows


def most_confused(confusion: np.ndarray, names: list[str], top: int = 5) -> list[dict]:
    """The largest off-diagonal counts: (true, predicted, count, share of the true class)."""
    rates = normalize_rows(confusion)
    pairs = [(confusion[i, j], i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": names[i], "predicted": names[j], "count": int(c), "rate": float(rates[i, j])}
            for c, i, j in pairs[:top] if c > 0]
