"""Shared fixtures: small data made on the spot, in the formats the pipeline reads."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import cifar10

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_members(per_batch: int = 20, seed: int = 0) -> dict[str, dict]:
    """The pickled dicts of a CIFAR-10 archive with `per_batch` images per batch.

    Each class gets its own mean colour, so a model can actually learn something from it."""
    rng = np.random.default_rng(seed)
    members = {cifar10.META: {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": per_batch}}
    for name in cifar10.TRAIN_BATCHES + [cifar10.TEST_BATCH]:
        labels = rng.integers(0, 10, per_batch)
        base = (labels[:, None] * 25 + 10).astype(np.int16)
        data = np.clip(base + rng.integers(-10, 10, (per_batch, 3072)), 0, 255).astype(np.uint8)
        members[name] = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
    return members


def write_cifar_archive(path: Path, members: dict[str, dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"{cifar10.FOLDER_NAME}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.fixture
def cifar_root(tmp_path, monkeypatch) -> Path:
    """A pipeline root whose data/ holds a small synthetic CIFAR-10 archive."""
    monkeypatch.delenv("CIFAR10_ARCHIVE", raising=False)
    write_cifar_archive(tmp_path / "data" / cifar10.ARCHIVE_NAME, cifar_members(per_batch=40))
    return tmp_path
