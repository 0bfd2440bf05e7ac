"""ResNet figures: arrays and records in, one image file out; no model, no torch."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from pipeline.figures.style import save


def training_curves(records: list[dict], test_accuracy: float, path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation, with the test accuracy marked."""
    epochs = [r["epoch"] + 1 for r in records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(epochs, [r["train_loss"] for r in records], "o-", label="training (label-smoothed)")
    acc_ax.plot(epochs, [100 * r["train_accuracy"] for r in records], "o-", label="training (augmented)")
    if "val_loss" in records[0]:
        loss_ax.plot(epochs, [r["val_loss"] for r in records], "s-", label="validation")
        acc_ax.plot(epochs, [100 * r["val_accuracy"] for r in records], "s-", label="validation")
    acc_ax.axhline(100 * test_accuracy, color="C3", linestyle="--", label=f"test: {100 * test_accuracy:.2f}%")
    for ax, label in ((loss_ax, "cross-entropy"), (acc_ax, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.legend()
    loss_ax.set_title("Loss per epoch")
    acc_ax.set_title("Accuracy per epoch")
    return save(fig, path)


def confusion_heatmap(normalized: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix: each row shows where one true class went."""
    fig, ax = plt.subplots(figsize=(8, 6.8))
    sns.heatmap(normalized, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "share of the true class"},
                annot_kws={"size": 8}, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Normalised confusion matrix (test set)")
    plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
    return save(fig, path)


def per_class_bars(rows: list[dict], path: Path) -> Path:
    """Precision, recall and F1 of every class side by side."""
    names = [r["class"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for offset, key in zip((-0.27, 0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, [100 * r[key] for r in rows], width=0.27, label=key if key != "f1" else "F1")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(min(100 * min(r[k] for r in rows for k in ("precision", "recall", "f1")) - 10, 90), 100)
    ax.set_title("Per-class precision, recall and F1 (test set)")
    ax.legend(ncol=3, loc="lower right")
    return save(fig, path)


def prediction_grid(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, confidence: np.ndarray,
                    classes: list[str], title: str, path: Path, columns: int = 8) -> Path:
    """Images (N, 3, 32, 32) uint8 with true label, prediction and confidence; mistakes in red."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, prediction, p in zip(axes.flat, images, labels, predictions, confidence):
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        colour = "#1a7f37" if label == prediction else "#cf222e"
        ax.set_title(f"true: {classes[label]}\npred: {classes[prediction]} {100 * p:.0f}%", fontsize=7.5,
                     color=colour)
    fig.suptitle(title)
    return save(fig, path)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An (H, W, 3) float image with the heatmap blended on top."""
    heat = plt.get_cmap("jet")(cam)[..., :3]
    return (1 - alpha) * image.transpose(1, 2, 0) / 255 + alpha * heat


def gradcam_panel(images: np.ndarray, cams_predicted: np.ndarray, cams_true: np.ndarray, labels: np.ndarray,
                  predictions: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """One row per example: image, then heatmap and overlay for the predicted and for the true class."""
    fig, axes = plt.subplots(len(images), 5, figsize=(9.5, 2.05 * len(images)), squeeze=False)
    for row, (image, cam_p, cam_t, label, prediction) in enumerate(
            zip(images, cams_predicted, cams_true, labels, predictions)):
        panels = [
            (image.transpose(1, 2, 0), f"true: {classes[label]}"),
            (cam_p, f"Grad-CAM: {classes[prediction]}\n(predicted)"),
            (overlay(image, cam_p), "overlay (predicted)"),
            (cam_t, f"Grad-CAM: {classes[label]}\n(true)"),
            (overlay(image, cam_t), "overlay (true)"),
        ]
        for ax, (picture, caption) in zip(axes[row], panels):
            ax.imshow(picture, cmap="jet" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)
