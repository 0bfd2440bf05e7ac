"""Evaluation: predictions, Grad-CAM, decodes and scores as arrays and numbers (no plotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import FINAL, METRICS, PROVENANCE
from pipeline.io import read_json, read_jsonl


def run_summary(run_dir: Path, rate: str) -> dict:
    """What metrics.json repeats of the run: epochs, wall time, mean throughput (`rate`), where and how it ran."""
    final = read_json(run_dir / FINAL, "test result of the run")
    provenance = read_json(run_dir / PROVENANCE, "provenance file")
    epochs = read_jsonl(run_dir / METRICS)
    return {
        "epochs": len(epochs),
        "train_wall_s": final["train_wall_s"],
        "eval_share": sum(r.get("eval_s", 0) for r in epochs) / max(final["train_wall_s"], 1e-9),
        rate: float(np.mean([r[rate] for r in epochs])),
        "device": provenance["device"],
        "device_name": provenance["device_name"],
        "threads": provenance["threads"],
        "precision": provenance["precision"],
        "seed": provenance["seed"],
    }


def evaluate(model: str, paths) -> dict:
    """The evaluation stage of one model's main run."""
    if model == "cls":
        from pipeline.evaluate.cls import evaluate_cls as evaluate_model
    else:
        from pipeline.evaluate.mt import evaluate_mt as evaluate_model
    return evaluate_model(paths)
