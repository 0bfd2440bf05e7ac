"""Shared fixtures: small data made on the spot, in the formats the pipeline reads."""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import REPO, Paths
from pipeline.data import cifar10

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# Text from data that would run script if a page took it as markup: the built report must show it as text.
HOSTILE_CLASS = '<img src=x onerror="window.xss=1">cat'
HOSTILE_SOURCE, HOSTILE_TARGET = "<script>window.xss=2</script>", '<img src=x onerror="window.xss=3">'


def cifar_members(per_batch: int = 20, seed: int = 0, classes: list[str] = CLASSES) -> dict[str, dict]:
    """The pickled dicts of a CIFAR-10 archive with `per_batch` images per batch.

    Each class gets its own mean colour, so a model can actually learn something from it."""
    rng = np.random.default_rng(seed)
    members = {cifar10.META: {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": per_batch}}
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


def pytest_configure(config):
    """Under pytest-xdist (make test) the workers share the cores: each worker's torch, and every process a test
    starts, takes its share of the threads, so that two workers never fight over one core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.fixture(scope="session", autouse=True)
def precision_record(tmp_path_factory) -> Path:
    """The tests never time bf16 against fp32 (over a minute on CPUs without bf16 instructions): the per-machine
    record the probe keeps is made for them, saying fp32; the probe's rule and its record are tested with
    made-up rates (test_train_cls). Subprocesses inherit the variable."""
    from pipeline.io import write_json
    from pipeline.runtime import PROBE_UNITS, machine_key

    folder = tmp_path_factory.mktemp("cache")
    os.environ["PIPELINE_CACHE"] = str(folder)
    write_json(folder / "precision.json", {machine_key(model): {
        "precision": "fp32", f"probe_{unit}_per_s": {}, "measured": "made by the tests' conftest"}
        for model, unit in PROBE_UNITS.items()})
    return folder


@pytest.fixture(scope="session", autouse=True)
def draft_report() -> None:
    """The tests train their runs from this checkout, which has uncommitted changes while someone works on it
    and none in CI: a draft report counts such runs, so the tests see the same either way. The rule that leaves
    them out is tested with made-up provenance (test_experiments). Subprocesses inherit the variable."""
    from pipeline.compare.records import COUNT_UNCOMMITTED

    os.environ[COUNT_UNCOMMITTED] = "1"


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


GREEK_RUSSIAN = [("Εγώ είμαι", "Я"), ("Εσύ είσαι", "Ты"), ("Αυτός είναι", "Он"), ("Εμείς είμαστε", "Мы")]
ADJECTIVES_GR_RU = [("ψηλός", "высокий"), ("μικρός", "маленький"), ("χαρούμενος", "весёлый"),
                    ("κουρασμένος", "усталый"), ("έτοιμος", "готовый"), ("άρρωστος", "больной"),
                    ("πλούσιος", "богатый"), ("ήρεμος", "спокойный")]


def write_greek_russian_corpus(path: Path, hostile: bool = False) -> Path:
    """A made-up Greek<TAB>Russian file, with accents, apostrophes and punctuation as written; `hostile` puts
    HTML that would run script into every third pair, on both sides."""
    lines = []
    source, target = (HOSTILE_SOURCE, HOSTILE_TARGET) if hostile else ("", "")
    for (gr, ru), (gr_adj, ru_adj) in ((s, a) for s in GREEK_RUSSIAN for a in ADJECTIVES_GR_RU):
        lines.append(f"{gr} {gr_adj}.\t{ru} {ru_adj}.")
        lines.append(f"{gr} πολύ {gr_adj}!\t{ru} очень {ru_adj}!")
        lines.append(f"Σ’ το λέω: {gr.lower()} {gr_adj};{source}\tГоворю тебе: {ru.lower()} {ru_adj}?{target}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY_EXPERIMENTS = """
tiny-residual:
  model: cls
  profile: smoke
  question: Does removing every shortcut change accuracy on tiny data?
  metrics: [val_accuracy, test_accuracy]
  design: ablation
  control: residual
  budget: one smoke epoch
  runs:
    residual: {width: 16}
    plain: {shortcuts: false, width: 16}
seeds-cls:
  model: cls
  question: How far does accuracy move with the seed?
  metrics: [test_accuracy]
  design: seeds
  budget: the main run only, so far
  runs:
    main: {}
gradcam:
  model: cls
  question: Does Grad-CAM point at the pixels the prediction depends on?
  metrics: [test_accuracy]
  design: deletion
  budget: inference only
  runs:
    main: {}
never-run:
  model: cls
  question: Declared, never trained?
  metrics: [val_accuracy]
  design: seeds
  budget: none
  runs:
    other: {seed: 5}
"""


def make(target: str, root: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    corpus = root / "tiny.tsv"
    return subprocess.run(
        ["make", target, f"ROOT={root}", "PROFILE=smoke", "CIFAR10_ARCHIVE=", f"BIN={Path(sys.executable).parent}",
         f"MT_ARGS=--corpus {corpus} --src_lang Greek --tgt_lang Russian", f"EXPERIMENTS={root / 'experiments.yaml'}",
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )


class WritesMarker:
    """Unpickling this calls pathlib.Path.touch on `marker`: what a crafted data file could do with any
    function; a loader that runs nothing from data never lets the marker appear."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def interrupt_at(monkeypatch, task, epoch: int) -> None:
    """Make `task` raise KeyboardInterrupt (Ctrl-C) when its training reaches `epoch`."""
    train_one_epoch = task.train_one_epoch

    def stop(e):
        if e == epoch:
            raise KeyboardInterrupt
        return train_one_epoch(e)

    monkeypatch.setattr(task, "train_one_epoch", stop)


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Paths:
    """`make report` from nothing, on a PATH with no npm: synthetic CIFAR-10 archive, a tiny made-up
    Greek->Russian corpus, smoke profiles; a class name and corpus lines carry HTML that would run script."""
    root = tmp_path_factory.mktemp("root")
    classes = [HOSTILE_CLASS if c == "cat" else c for c in CLASSES]
    write_cifar_archive(root / "data" / "cifar-10-python.tar.gz", cifar_members(per_batch=40, classes=classes))
    write_greek_russian_corpus(root / "tiny.tsv", hostile=True)
    (root / "experiments.yaml").write_text(TINY_EXPERIMENTS)
    committed = committed_digest()
    no_npm = {**os.environ, "PATH": path_without(tmp_path_factory.mktemp("bin"), "npm", "npx")}
    # `never-run` is not asked for: make report shows what has runs and trains no experiment.
    result = make("experiments", root, "NAMES=tiny-residual seeds-cls gradcam", env=no_npm)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[1/2] tiny-residual: tiny-residual-residual" in result.stdout
    result = make("report", root, env=no_npm)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if not (REPO / "docs" / "javascripts" / "iframe-worker" / "shim.js").exists():  # else fetched earlier
        assert "note: no npm" in result.stdout
    assert committed_digest() == committed, "the committed report in site_assets/ or docs/ changed"
    return Paths(root)


def committed_digest() -> dict[str, str]:
    """Hashes of the files git tracks in site_assets/ and docs/ (build inputs fetched there are ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "site_assets", "docs"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split("\0")
    return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest()
            for name in listed if name and (REPO / name).is_file() and not (REPO / name).is_symlink()}


MAIN_RUNS = ("runs/cls/main", "runs/mt/main")
# What the committed report's checks read: the report, the runs it was made from, and the pages that cite them.
REPORT_FILES = ("runs", "site_assets", "docs", "README.md", "BENCHMARKS.md", "experiments.yaml")


@functools.lru_cache(maxsize=1)
def committed_report_root() -> Path:
    """Where the committed report lies: this checkout, unless a main run was trained again here (`make train
    report` on another machine changes its committed files); then HEAD's copy of the report, its runs and the
    README, so the checks of what is committed still check what is committed."""
    changed = subprocess.run(["git", "status", "--porcelain", "--", *MAIN_RUNS], cwd=REPO, capture_output=True,
                             text=True)
    if changed.returncode != 0 or not changed.stdout.strip():
        return REPO
    root = Path(tempfile.mkdtemp(prefix="committed-report-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    archive = subprocess.run(["git", "archive", "HEAD", *REPORT_FILES], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root
