"""Experiment figures: the comparison stage's numbers in, one image file out; no model, no torch."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.figures.style import save

LABELS = {"val_accuracy": "validation accuracy (%)", "train_accuracy": "training accuracy (%)",
          "val_loss": "validation loss", "train_loss": "training loss", "val_bleu": "validation BLEU (greedy)"}
PERCENT = {"val_accuracy", "train_accuracy"}


def _band(ax, x, stack: np.ndarray, color: str, label: str, thick: bool = False, marker: str = "o-") -> None:
    """An arm's mean over its runs, with a band of ± one standard deviation where it has several."""
    mean = stack.mean(0)
    ax.plot(x, mean, marker, color=color, linewidth=3 if thick else 1.5, markersize=3 if marker == ".-" else 5,
            label=label + (f" (n={len(stack)})" if len(stack) > 1 else "") + (" — chosen" if thick else ""))
    if len(stack) > 1:
        sd = stack.std(0, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2)


def overlaid_curves(result: dict, metrics: list[str], path: Path) -> Path:
    """A panel of the training loss every few dozen steps (where the runs logged it), then one panel per epoch
    metric: each arm's mean over its seeds, with a band of ± one standard deviation where it has several; a
    value a sweep chose is drawn thicker."""
    arms: dict[str, list[dict]] = {}
    for run in result["runs"]:
        arms.setdefault(run["arm"], []).append(run)
    answer = result["answer"]
    chosen = answer.get("chosen_value") if answer.get("changed") else None
    traced = any(r.get("loss_trace") for r in result["runs"])
    panels = (["loss_trace"] if traced else []) + metrics
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        scale = 100 if metric in PERCENT else 1
        for i, (arm, runs) in enumerate(arms.items()):
            thick = chosen is not None and runs[0]["config"].get(result.get("sweep")) == chosen
            if metric == "loss_trace":
                traces = [np.array(r["loss_trace"], dtype=float) for r in runs if r.get("loss_trace")]
                if traces and all(t.shape == traces[0].shape for t in traces):
                    _band(ax, traces[0][:, 0], np.stack([t[:, 1] for t in traces]), f"C{i % 10}", arm, thick, ".-")
                continue
            curves = [np.array(r["curves"][metric], dtype=float) * scale for r in runs if r["curves"].get(metric)]
            if curves and all(c.size == curves[0].size for c in curves):
                _band(ax, np.arange(1, curves[0].size + 1), np.stack(curves), f"C{i % 10}", arm, thick)
        ax.set_xlabel("optimiser step" if metric == "loss_trace" else "epoch")
        label = "training loss (mean of each 25 steps)" if metric == "loss_trace" else LABELS.get(metric, metric)
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.legend(fontsize=8)
    fig.suptitle(result["question"], fontsize=11)
    return save(fig, path)


def has_typical_times(result: dict) -> bool:
    """Whether every run of an experiment has a typical training time (see compare's typical_train_s)."""
    return all(r.get("typical_train_s") is not None for r in result["runs"])


def sweep_scores(result: dict, metrics: list[str], path: Path) -> Path:
    """A sweep's last scores against the swept value (left) and against the minutes of training they cost (right):
    one point per value, the mean of its runs; each right-hand point is labelled with its value. The minutes are
    the runs' typical ones (each epoch at the median time of its image side on that machine) where every run has
    them, so a run slowed by a shared host does not move its point; else the measured ones."""
    field = result["sweep"]
    by_value: dict[float, list[dict]] = {}
    for run in result["runs"]:
        by_value.setdefault(run["config"][field], []).append(run)
    values = sorted(by_value)
    typical = has_typical_times(result)
    seconds = "typical_train_s" if typical else "train_wall_s"
    minutes = [np.mean([r[seconds] for r in by_value[v]]) / 60 for v in values]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, metric in enumerate(metrics):
        scale = 100 if metric in PERCENT or metric.endswith("_accuracy") else 1
        means = [scale * np.mean([r["values"][metric] for r in by_value[v] if metric in r["values"]]) for v in values]
        axes[0].plot(values, means, "o-", color=f"C{i}", label=metric)
        axes[1].plot(minutes, means, "o-", color=f"C{i}", label=metric)
        for v, x, y in zip(values, minutes, means):
            axes[1].annotate(f"{v:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if max(values) / max(min(values), 1e-12) > 20:
        axes[0].set_xscale("log")
    axes[0].set_xlabel(field)
    axes[1].set_xlabel(("typical " if typical else "") + "minutes of training (each point labelled with its "
                       + field + ")")
    for ax in axes:
        ax.set_ylabel("score (% for accuracies)")
        ax.legend(fontsize=8)
    axes[0].set_title(f"Last scores against {field}")
    axes[1].set_title("Against the training time they cost")
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
    fig.suptitle("Gradient norm at every block: residual against plain, 18 and 34 layers"
                 + (f" (width {norms['width']})" if "width" in norms else ""))
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


def decoding_grid(answer: dict, path: Path) -> Path:
    """Mean validation BLEU against the length penalty, one line per beam size, greedy decoding as a flat
    line; the default setting is marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    alphas = [float(a) for a in answer["alphas"]]
    for i, row in enumerate(answer["table"]):
        if row["beam_size"] == 0:
            ax.axhline(row["cells"][0]["mean"], color="grey", linestyle="--", label="greedy")
            continue
        means = [cell["mean"] for cell in row["cells"]]
        ax.plot(alphas, means, "o-", color=f"C{i}", label=f"beam {row['beam_size']}")
        for alpha, cell in zip(alphas, row["cells"]):
            if cell["default"]:
                ax.plot([alpha], [cell["mean"]], "s", color="black", markersize=9, fillstyle="none",
                        label="default")
    ax.set_xlabel("length penalty alpha")
    ax.set_ylabel("validation BLEU, mean over the runs")
    ax.set_title(f"Decoding settings on {answer['decoded_runs']} runs' validation sentences")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the lines, never over them
    return save(fig, path)
