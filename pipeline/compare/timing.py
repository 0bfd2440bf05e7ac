"""What a run's recipe typically costs where it trained, so that runs slowed by a shared host can be set against
runs of other lengths."""

from __future__ import annotations

import numpy as np


def typical_train_s(records: list) -> dict[str, float | None]:
    """Each run's training time with every epoch taken at the median time of the epochs at its image side (plus
    the median validation), over the runs given that trained on its CPU kind, device and precision: a run slowed by
    a shared host costs what its recipe costs there. None where a run's epochs record no time."""
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r.where, []).append(r)
    typical: dict[str, float | None] = {}
    for runs in groups.values():
        epochs = [e for r in runs for e in r.epoch_seconds if e.train_s is not None]
        by_side: dict = {}
        for e in epochs:
            by_side.setdefault(e.side, []).append(e.train_s)
        evaluation = float(np.median([e.eval_s for e in epochs])) if epochs else 0.0
        for r in runs:
            timed = r.epoch_seconds and all(e.train_s is not None for e in r.epoch_seconds)
            typical[r.folder] = (sum(float(np.median(by_side[e.side])) + evaluation for e in r.epoch_seconds)
                                 if timed else None)
    return typical

