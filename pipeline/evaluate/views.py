"""The views experiment's evaluation: a finished ResNet run's validation images scored with each setting of
test-time views (the image alone; with its mirror image; with copies shifted by some pixels too), into the run's
views.json (inference only; the test images are not scored here, so the test set chooses nothing)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import CHECKPOINT, VIEWS, Paths, PipelineError, views_key
from pipeline.data.cifar10 import load_cifar10, split_train_val
from pipeline.io import read_json, write_json
from pipeline.runtime import pick_device, progress, provenance
from pipeline.trained import ClsPredictor, load_resnet


def scored_settings(run_dir: Path) -> set[str]:
    """The settings a run's views.json already holds (none before the first scoring)."""
    path = run_dir / VIEWS
    return set(read_json(path, "validation views of the run")["settings"]) if path.exists() else set()


def score_views(paths: Paths, run_dir: Path, settings: list[tuple[bool, int]]) -> dict:
    """Score the run's validation images (its own split, drawn by its seed, as while training) with each
    (mirror, shift) setting that views.json does not hold yet, in the run's precision, with the predictor its test
    score uses; write and return the file's contents: per setting the accuracy, the loss, the wrong images (for
    paired tests) and the forward passes per image, with the commit each was scored at and the time it took."""
    if not (run_dir / CHECKPOINT).exists():
        raise PipelineError(f"{run_dir / CHECKPOINT} is missing: the views experiment scores each run's validation "
                            "images with its trained weights. Move the run's folder aside and train it again with "
                            "`make experiments`.")
    device = pick_device()
    config, model, task = load_resnet(run_dir, device)
    precision = task.get("precision", "fp32")
    data = load_cifar10(paths.data, strict_counts=config.train_limit == 0 and config.test_limit == 0)
    _, val_idx = split_train_val(len(data.train_labels), config.val_size, config.seed)
    images, labels = data.train_images[val_idx], data.train_labels[val_idx]
    path = run_dir / VIEWS
    kept = read_json(path, "validation views of the run") if path.exists() else {}
    if kept.get("images") != len(labels) or kept.get("split_sha") != _digest(val_idx):
        kept = {}  # scores of other images than the run's validation split: scored again
    results = dict(kept.get("settings", {}))
    where = provenance(config.seed, device, precision)
    todo = [(mirror, shift) for mirror, shift in settings if views_key(mirror, shift) not in results]
    with progress(len(todo) * len(labels), f"views {run_dir.name}", "img") as bar:
        for mirror, shift in todo:
            predictor = ClsPredictor(model, dataclasses.replace(config, tta_translate=shift), device, precision,
                                     mirror)
            start = time.perf_counter()
            logits = predictor.logits(images)
            seconds = time.perf_counter() - start
            bar.update(len(labels))
            wrong = np.flatnonzero((logits.argmax(1) != labels).numpy()).tolist()
            results[views_key(mirror, shift)] = {  # accuracy and loss as validation reports them while training
                "mirror": mirror, "shift": shift, "passes": len(predictor.views(images[:1].float())),
                "val_accuracy": (len(labels) - len(wrong)) / len(labels),
                "val_loss": torch.nn.functional.cross_entropy(logits, labels).item(), "wrong": wrong,
                "seconds": round(seconds, 2), "git_commit": where["git_commit"]}
    record = {"images": len(labels), "split_sha": _digest(val_idx), "settings": results,
              "provenance": kept.get("provenance") if not todo else where}
    write_json(path, record)
    return record


def _digest(indices: torch.Tensor) -> str:
    """A short fingerprint of the validation indices, so that scores of another split are never reused."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
