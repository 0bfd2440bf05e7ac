"""Evaluate a ResNet run: test predictions, chosen examples, Grad-CAM maps, metrics.json."""

from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.config import DELETION, FINAL, MAIN_RUN, TARGETS, TEST_OUTPUTS, Paths, \
    PipelineError
from pipeline.data.cifar10 import load_cifar10
from pipeline.evaluate import run_summary
from pipeline.evaluate.analyses import deletion_test
from pipeline.evaluate.gradcam import gradcam_maps
from pipeline.evaluate.metrics import confusion_matrix, most_confused, per_class
from pipeline.io import load_arrays, read_json, record_timing, save_arrays, write_json
from pipeline.models.resnet import BasicBlock, ResNet
from pipeline.runtime import pick_device
from pipeline.trained import ClsPredictor, load_resnet

GRID = 16  # images per grid of correct / wrong predictions
CAM_EXAMPLES = 4  # Grad-CAM examples of each kind, correct and wrong
CELL_IMAGES = 6  # test images kept per cell of the confusion matrix for the explorer, most confident first


def cell_examples(labels: np.ndarray, predictions: np.ndarray, confidence: np.ndarray, per_cell: int) -> np.ndarray:
    """Indices of up to per_cell images of every (true, predicted) cell, most confident first (ties by index),
    cell by cell in row-major order."""
    order = np.lexsort((np.arange(len(labels)), -confidence))
    chosen: dict[tuple[int, int], list[int]] = {}
    for i in order:
        cell = chosen.setdefault((int(labels[i]), int(predictions[i])), [])
        if len(cell) < per_cell:
            cell.append(int(i))
    return np.array([i for key in sorted(chosen) for i in chosen[key]], dtype=np.int64)
SEED = 0  # which correct examples are shown


def choose_examples(labels: np.ndarray, predictions: np.ndarray, confidence: np.ndarray) -> dict:
    """A seeded sample of correct predictions and the most confident mistakes."""
    correct = np.flatnonzero(predictions == labels)
    wrong = np.flatnonzero(predictions != labels)
    rng = np.random.default_rng(SEED)
    chosen_correct = np.sort(rng.choice(correct, size=min(GRID, len(correct)), replace=False))
    chosen_wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:GRID]
    return {"correct": chosen_correct, "wrong": chosen_wrong}


def architecture(model: ResNet, device: torch.device) -> list[dict]:
    """Output shape and parameter count of each top-level part, read off one forward pass."""
    shapes, handles = {}, []
    for name, module in model.named_children():
        handles.append(module.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, list(o.shape[1:]))))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 32, 32, device=device))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, module in model.named_children():
        blocks = [m for m in module.modules() if isinstance(m, BasicBlock)]
        rows.append({
            "name": name,
            "output": shapes[name],
            "parameters": sum(p.numel() for p in module.parameters()),
            "blocks": len(blocks),
            "projection": [i for i, b in enumerate(blocks) if isinstance(b.shortcut, torch.nn.Sequential)],
        })
    return rows


def evaluate_cls(paths: Paths, name: str = MAIN_RUN) -> dict:
    """Read runs/cls/<name>, write its eval/*.npz and site_assets/cls/metrics.json; return the metrics."""
    t0 = time.perf_counter()
    run_dir = paths.run("cls", name)
    out_dir = run_dir / "eval"
    device = pick_device()
    config, model, task = load_resnet(run_dir, device)  # the averaged weights, where the run averaged them
    final = read_json(run_dir / FINAL, "test result of the run (unfinished? make train-cls resumes it)")
    outputs = load_arrays(run_dir / f"{TEST_OUTPUTS}.npz")
    predictor = ClsPredictor(model, config, device, task.get("precision", "fp32"), config.test_tta)
    classes = task["classes"]

    data = load_cifar10(paths.data, strict_counts=config.train_limit == 0 and config.test_limit == 0)
    logits, labels = outputs["logits"], outputs["labels"]
    limit = len(labels)
    images = data.test_images[:limit]
    if not np.array_equal(data.test_labels[:limit].numpy(), labels):
        raise PipelineError(f"The test labels of {data.source} differ from those {run_dir / TEST_OUTPUTS}.npz was "
                            "scored on: the data changed since the run. Evaluate with the data it was trained on.")
    probabilities = torch.from_numpy(logits).softmax(1).numpy()
    predictions, confidence = probabilities.argmax(1), probabilities.max(1)
    save_arrays(out_dir / "predictions.npz", logits=logits, labels=labels, predictions=predictions)
    cam_idx = _save_examples(out_dir, predictor, images, labels, predictions, confidence)
    deletion = deletion_test(predictor, images, predictions, paths.analysis(DELETION), SEED)
    metrics = {
        "model": "ResNet-18",
        "test_accuracy": final["test_accuracy"],
        "test_images": final["test_images"],
        "test_tta": config.test_tta,
        **_prediction_summary(labels, predictions, confidence, classes),
        **_network_summary(model, device),
        "gradcam_examples": len(cam_idx),
        "cell_images": CELL_IMAGES,
        "gradcam_deletion": {"images": deletion["images"], "auc": deletion["auc"],
                             "area_between": deletion["area_between"]},
        **run_summary(run_dir, "images_per_s"),
        "target_accuracy": TARGETS.cls_test_accuracy,
    }
    write_json(paths.site_assets / "cls" / "metrics.json", metrics)
    record_timing(paths.site_assets / "cls", "evaluate_s", time.perf_counter() - t0)
    return metrics


def _save_examples(out_dir, predictor: ClsPredictor, images: torch.Tensor, labels: np.ndarray,
                   predictions: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The images the pages show: per confusion cell (cells.npz), correct and wrong grids (examples.npz), and
    Grad-CAM maps of a few of each for the predicted and the true class (gradcam.npz); returns the latter's
    indices."""
    cells = cell_examples(labels, predictions, confidence, CELL_IMAGES)
    save_arrays(out_dir / "cells.npz", index=cells, labels=labels[cells], predictions=predictions[cells],
                confidence=confidence[cells], images=images[cells].numpy())
    chosen = choose_examples(labels, predictions, confidence)
    save_arrays(out_dir / "examples.npz", **{
        f"{kind}_{field}": values[idx]
        for kind, idx in chosen.items()
        for field, values in (("images", images.numpy()), ("labels", labels), ("predictions", predictions),
                              ("confidence", confidence), ("index", np.arange(len(labels))))
    })
    cam_idx = np.concatenate([chosen["correct"][:CAM_EXAMPLES], chosen["wrong"][:CAM_EXAMPLES]])
    save_arrays(out_dir / "gradcam.npz", images=images[cam_idx].numpy(), labels=labels[cam_idx],
                predictions=predictions[cam_idx], confidence=confidence[cam_idx], index=cam_idx,
                cam_predicted=gradcam_maps(predictor, images[cam_idx], torch.from_numpy(predictions[cam_idx])),
                cam_true=gradcam_maps(predictor, images[cam_idx], torch.from_numpy(labels[cam_idx])))
    return cam_idx


def _prediction_summary(labels: np.ndarray, predictions: np.ndarray, confidence: np.ndarray,
                        classes: list[str]) -> dict:
    """Counts, confidence of right and wrong predictions, and the confusion matrix with what it says."""
    confusion = confusion_matrix(labels, predictions, len(classes))
    wrong = predictions != labels
    return {
        "correct_count": int((~wrong).sum()),
        "wrong_count": int(wrong.sum()),
        "mean_confidence_correct": float(confidence[~wrong].mean()) if (~wrong).any() else None,
        "mean_confidence_wrong": float(confidence[wrong].mean()) if wrong.any() else None,
        "confidence_sd_correct": float(confidence[~wrong].std()) if (~wrong).any() else None,
        "confidence_sd_wrong": float(confidence[wrong].std()) if wrong.any() else None,
        "classes": classes,
        "confusion": confusion.tolist(),
        "per_class": per_class(confusion, classes),
        "most_confused": most_confused(confusion, classes),
    }


def _network_summary(model: ResNet, device: torch.device) -> dict:
    """Parameters, the shape of each part, and the layer Grad-CAM reads."""
    layers = architecture(model, device)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": layers,
        "cam_layer": model.cam_layer,
        "cam_layer_output": next(r["output"] for r in layers if r["name"] == model.cam_layer),
    }
