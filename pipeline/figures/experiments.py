"""Experiment figures: the comparison stage's numbers in, one image file out; no model, no torch."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.figures.style import save

LABELS = {"val_accuracy": "validation accuracy (%)", "train_accuracy": "training accuracy (%)",
          "val_loss": "validation loss", "train_loss": "training loss", "val_bleu": "validation BLEU (greedy)"}
PERCENT = {"val_accuracy", "train_accuracy"}


def overlaid_curves(result: dict, metrics: list[str], path: Path) -> Path:
    """One panel per epoch metric: each arm's mean over its seeds, with a band of ± one standard deviation
    where it has several; a chosen sweep value is drawn thicker."""
    arms: dict[str, list[dict]] = {}
    for run in result["runs"]:
        arms.setdefault(run["arm"], []).append(run)
    chosen = result["answer"].get("chosen")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        scale = 100 if metric in PERCENT else 1
        for i, (arm, runs) in enumerate(arms.items()):
            curves = [np.array(r["curves"][metric], dtype=float) * scale for r in runs if r["curves"].get(metric)]
            if not curves or any(c.size != curves[0].size for c in curves):
                continue
            stack = np.stack(curves)
            epochs = np.arange(1, stack.shape[1] + 1)
            mean = stack.mean(0)
            label = f"{arm} (n={len(curves)})" if len(curves) > 1 else arm
            thick = chosen is not None and any(r["name"] == chosen for r in runs)
            ax.plot(epochs, mean, "o-", color=f"C{i % 10}", linewidth=3 if thick else 1.5,
                    label=label + (" — chosen" if thick else ""))
            if len(curves) > 1:
                sd = stack.std(0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=f"C{i % 10}", alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(LABELS.get(metric, metric).capitalize())
        ax.legend(fontsize=8)
    fig.suptitle(result["question"], fontsize=11)
    return save(fig, path)


def gradient_norms(norms: dict, path: Path) -> Path:
    """Gradient norm at the output of the stem and of every block, input to output, for each network: at
    initialisation and after a few steps, on a logarithmic scale."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, moment in zip(axes, ("init", "trained")):
        for i, (name, layers) in enumerate(norms["networks"].items()):
            values = [layer[moment] for layer in layers]
            ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i}", label=name,
                    linestyle="-" if "residual" in name else "--")
        ax.set_yscale("log")
        ax.set_xlabel("stem, then block after block (input → output)")
        ax.set_title("at initialisation" if moment == "init" else f"after {norms['steps']} training steps")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("L2 norm of the loss gradient at the output")
    fig.suptitle("Gradient norm at every block: residual against plain, 18 and 34 layers")
    return save(fig, path)


def deletion_curves(curves: dict, path: Path) -> Path:
    """Confidence in the prediction as the removed share of the image grows, by removal order, mean ± sd."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    shares = 100 * np.array(curves["shares"])
    for i, order in enumerate(("most salient first", "random", "least salient first")):
        stack = np.array(curves["confidence"][order])  # (images, steps)
        mean, sd = stack.mean(0), stack.std(0)
        ax.plot(shares, mean, "o-", color=f"C{i}", label=order)
        ax.fill_between(shares, mean - sd, mean + sd, color=f"C{i}", alpha=0.15)
    ax.set_xlabel("share of the image removed (%)")
    ax.set_ylabel("confidence in the original prediction")
    ax.set_title(f"Deletion test on {len(curves['confidence']['random'])} test images")
    ax.legend()
    return save(fig, path)
