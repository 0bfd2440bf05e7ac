"""One look for every figure: opaque white background (legible on light and dark pages), web-sized PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.io import atomic_path  # noqa: E402

DPI = 110
RC = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "figure.titlesize": 12,
    "svg.hashsalt": "report",  # stable SVG ids, so the same data gives the same file
}
plt.rcParams.update(RC)


def save(fig: plt.Figure, path: Path) -> Path:
    """Write a figure atomically (PNG, fixed metadata so reruns give identical bytes) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI, bbox_inches="tight",
                    metadata={"Software": None} if path.suffix == ".png" else {"Date": None})
    plt.close(fig)
    return path
