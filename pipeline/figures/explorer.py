"""Data for the site's interactive explorers: JSON wrapped as a script (pages opened from file:// may load a
script but not fetch a file), and a sprite of thumbnails. Arrays in, files out; no model, no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path, write_text

SPRITE_COLUMNS = 24  # thumbnails per row of the sprite


def data_script(path: Path, key: str, data) -> Path:
    """`window.reportData[key] = <data as JSON>;`: what docs/javascripts/explorer.js reads."""
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    write_text(path, f"window.reportData = window.reportData || {{}};\n"
                     f"window.reportData[{json.dumps(key)}] = {blob};\n")
    return path


def read_data_script(path: Path):
    """The data a data_script holds (for tests and checks)."""
    text = path.read_text(encoding="utf-8")
    return json.loads(text.split(" = ", 2)[-1].rstrip().rstrip(";").replace("<\\/", "</"))


def thumbnail_sprite(images: np.ndarray, path: Path,
                     columns: int = SPRITE_COLUMNS) -> tuple[Path, list[tuple[int, int]]]:
    """uint8 images (N, 3, H, W) tiled into one JPEG, row by row; returns it and each image's (x, y) offset."""
    from PIL import Image

    n, _, h, w = images.shape
    rows = max(1, -(-n // columns))
    sheet = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    offsets = []
    for i, image in enumerate(images):
        y, x = (i // columns) * h, (i % columns) * w
        sheet[y:y + h, x:x + w] = image.transpose(1, 2, 0)
        offsets.append((x, y))
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="JPEG", quality=90)
    return path, offsets
