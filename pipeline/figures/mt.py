"""Transformer figures: arrays and records in, one image file out; no model, no torch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from pipeline.figures.style import save

KIND_TITLES = {
    "encoder_self": "encoder self-attention",
    "decoder_self": "decoder self-attention (causal)",
    "decoder_source": "decoder–source attention",
}


def training_curves(records: list[dict], test_bleu: float, path: Path) -> Path:
    """Training and validation loss, and validation BLEU per epoch, with the test BLEU marked."""
    epochs = [r["epoch"] + 1 for r in records]
    fig, (loss_ax, bleu_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(epochs, [r["train_loss"] for r in records], "o-", label="training")
    if "val_loss" in records[0]:
        loss_ax.plot(epochs, [r["val_loss"] for r in records], "s-", label="validation")
        bleu_ax.plot(epochs, [r["val_bleu"] for r in records], "s-", color="C1", label="validation (greedy)")
    bleu_ax.axhline(test_bleu, color="C3", linestyle="--", label=f"test (beam): {test_bleu:.1f}")
    loss_ax.set_ylabel("label-smoothed cross-entropy per token")
    bleu_ax.set_ylabel("corpus BLEU")
    for ax in (loss_ax, bleu_ax):
        ax.set_xlabel("epoch")
        ax.legend()
    loss_ax.set_title("Loss per epoch")
    bleu_ax.set_title("BLEU per epoch")
    return save(fig, path)


def _heatmap(ax, weights: np.ndarray, queries: list[str], keys: list[str], title: str, colorbar: bool) -> None:
    sns.heatmap(weights, ax=ax, vmin=0, vmax=1, cmap="viridis", square=True, cbar=colorbar,
                xticklabels=keys, yticklabels=queries, cbar_kws={"label": "weight"} if colorbar else None)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    plt.setp(ax.get_xticklabels(), rotation=60, ha="right", fontsize=8)
    plt.setp(ax.get_yticklabels(), rotation=0, fontsize=8)


def axis_tokens(kind: str, source: list[str], target: list[str]) -> tuple[list[str], list[str]]:
    """(query tokens, key tokens) of one kind of attention."""
    return {"encoder_self": (source, source), "decoder_self": (target, target),
            "decoder_source": (target, source)}[kind]


def attention_grid(weights: np.ndarray, kind: str, layer: int, source: list[str], target: list[str],
                   path: Path) -> Path:
    """Every head of one layer (heads, Tq, Tk) side by side."""
    queries, keys = axis_tokens(kind, source, target)
    heads = len(weights)
    side = 0.32 * max(len(keys), len(queries)) + 1.2
    fig, axes = plt.subplots(1, heads, figsize=(side * heads, side + 0.6), squeeze=False)
    for h, ax in enumerate(axes[0]):
        _heatmap(ax, weights[h], queries, keys, f"head {h + 1}", colorbar=h == heads - 1)
        if h:
            ax.set_ylabel("")
    fig.suptitle(f"{KIND_TITLES[kind]}, layer {layer + 1}")
    return save(fig, path)


def attention_head(weights: np.ndarray, kind: str, layer: int, head: int, source: list[str], target: list[str],
                   path: Path) -> Path:
    """One head's weights (Tq, Tk) with the tokens on the axes."""
    queries, keys = axis_tokens(kind, source, target)
    side = 0.36 * max(len(keys), len(queries)) + 1.8
    fig, ax = plt.subplots(figsize=(side + 1, side))
    _heatmap(ax, weights, queries, keys, f"{KIND_TITLES[kind]}, layer {layer + 1}, head {head + 1}", colorbar=True)
    return save(fig, path)


def masks(masks: dict[str, np.ndarray], src_tokens: list[list[str]], tgt_tokens: list[list[str]], row: int,
          path: Path) -> Path:
    """Source padding over the batch, then for one sentence: target padding, causal, and both combined."""
    t = masks["causal"].shape[0]
    target_padding = np.broadcast_to(masks["target_padding"][row][None, :], (t, t))
    panels = [
        (masks["source_padding"].astype(float), "source padding mask (batch)",
         "source position", "sentence in batch", [" ".join(s[:1]) + "…" for s in src_tokens]),
        (target_padding.astype(float), f"target padding (sentence {row + 1})", "key", "query", None),
        (masks["causal"].astype(float), "causal mask", "key", "query", None),
        (masks["target"][row].astype(float), "combined: padding & causal", "key", "query", None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6), gridspec_kw={"width_ratios": [1.4, 1, 1, 1]})
    tokens = tgt_tokens[row]
    for ax, (data, title, xlabel, ylabel, ylabels) in zip(axes, panels):
        square = ylabels is None
        sns.heatmap(data, ax=ax, cmap=sns.color_palette(["#d0d7de", "#2da44e"], as_cmap=True), vmin=0, vmax=1,
                    cbar=False, square=square, linewidths=0.5, linecolor="white",
                    xticklabels=tokens if square else list(range(1, data.shape[1] + 1)),
                    yticklabels=tokens if square else [f"{i + 1}" for i in range(data.shape[0])])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        plt.setp(ax.get_xticklabels(), rotation=60 if square else 0, ha="right" if square else "center", fontsize=8)
        plt.setp(ax.get_yticklabels(), rotation=0, fontsize=8)
    fig.suptitle("What each position may attend to: green = allowed, grey = masked")
    return save(fig, path)


def bleu_by_length(rows: list[dict], corpus_bleu: float, path: Path) -> Path:
    """Corpus BLEU per source-length bucket, with the number of sentences on each bar."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar([r["bucket"] for r in rows], [r["bleu"] for r in rows], color="C0")
    for bar, r in zip(bars, rows):
        ax.annotate(f"n={r['sentences']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(corpus_bleu, color="C3", linestyle="--", label=f"whole test set: {corpus_bleu:.1f}")
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("corpus BLEU")
    ax.set_title("BLEU by source length (test set, beam search)")
    ax.legend()
    return save(fig, path)


def decode_table(rows: list[dict], languages: tuple[str, str], path: Path) -> Path:
    """A few decoded sentences against their references, as a picture of a table."""
    wrap = lambda text, width=34: "\n".join(textwrap.wrap(text, width)) or "—"  # noqa: E731
    cells = [[r["case"], wrap(r["source"]), wrap(" | ".join(r["references"])), wrap(r["beam"]), f"{r['bleu']:.0f}"]
             for r in rows]
    fig, ax = plt.subplots(figsize=(12, 0.62 * len(rows) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=["case", f"source ({languages[0]})", f"reference(s) ({languages[1]})",
                                                "beam output", "BLEU"],
                     colWidths=[0.08, 0.28, 0.3, 0.28, 0.06], loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 2.6)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("#eaeef2")
            cell.set_text_props(weight="bold")
    ax.set_title("Decoded test sentences against their references")
    return save(fig, path)
