"""CIFAR-10 from the official python archive: located, validated by content, held in memory as uint8."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import torch

from pipeline.config import PipelineError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
OFFICIAL_COUNTS = (50_000, 10_000)

# Per-channel statistics of the CIFAR-10 training images, in [0, 1] units.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Cifar10:
    train_images: torch.Tensor  # (50000, 3, 32, 32) uint8
    train_labels: torch.Tensor  # (50000,) int64
    test_images: torch.Tensor  # (10000, 3, 32, 32) uint8
    test_labels: torch.Tensor  # (10000,) int64
    classes: list[str]
    source: str  # the folder or archive it was read from


# The only callables a CIFAR-10 batch refers to: numpy's array and dtype rebuilders (older and newer module
# names), and the codec Python 3 uses to pickle bytes at protocol 2. Anything else could run code.
SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _RefusedGlobal(Exception):
    pass


class SafeUnpickler(pickle.Unpickler):
    """Reads dicts, lists, bytes, str, numbers and numpy arrays; refuses every other class or function."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(f: IO[bytes], where: str) -> dict:
    try:
        obj = SafeUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise PipelineError(
            f"{where} asks to load {e}, which a CIFAR-10 batch never holds (it holds dicts, lists, bytes, "
            "numbers and numpy arrays only). It was refused without running it: the file is not the official "
            "data, and may have been crafted to run code. Use a copy of CIFAR-10 you trust."
        ) from None
    except PipelineError:
        raise
    except Exception as e:  # a damaged pickle fails in many ways: EOF, bad opcode, bad memo, zlib, ...
        raise PipelineError(f"{where} is not a readable CIFAR-10 pickle ({type(e).__name__}: {e}); it may be "
                            "truncated or corrupted. Copy it again.") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{where} holds a {type(obj).__name__}, not the dict a CIFAR-10 batch holds.")
    return obj


def _read_batch(batch: dict, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    if b"data" not in batch or b"labels" not in batch:
        raise PipelineError(f"{where} lacks the b'data' or b'labels' entry of a CIFAR-10 batch.")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise PipelineError(f"{where}: b'data' should be a uint8 array of shape (N, 3072), found {found}.")
    if not isinstance(labels, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in labels):
        raise PipelineError(f"{where}: b'labels' should be a list of integers 0-9.")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise PipelineError(
            f"{where}: {data.shape[0]} images but labels of shape {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise PipelineError(
            f"{where}: labels must lie in 0-9, found values from {labels.min()} to {labels.max()}."
        )
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype("int64"))


def _read_all(open_member: Callable[[str], IO[bytes]], source: str, strict_counts: bool) -> Cifar10:
    def load(name: str) -> dict:
        with open_member(name) as f:
            return _unpickle(f, f"{source}: {name}")

    meta = load(META)
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
        raise PipelineError(f"{source}: {META} should list ten b'label_names', found {names!r:.80}.")
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]

    parts = [_read_batch(load(name), f"{source}: {name}") for name in TRAIN_BATCHES]
    train_images = torch.cat([p[0] for p in parts])
    train_labels = torch.cat([p[1] for p in parts])
    test_images, test_labels = _read_batch(load(TEST_BATCH), f"{source}: {TEST_BATCH}")
    counts = (len(train_labels), len(test_labels))
    if strict_counts and counts != OFFICIAL_COUNTS:
        raise PipelineError(
            f"{source} holds {counts[0]} training and {counts[1]} test images; CIFAR-10 has "
            f"{OFFICIAL_COUNTS[0]} and {OFFICIAL_COUNTS[1]}. Point CIFAR10_ARCHIVE at a complete copy."
        )
    return Cifar10(train_images, train_labels, test_images, test_labels, classes, source)


def _read_folder(folder: Path, strict_counts: bool) -> Cifar10:
    def open_member(name: str) -> IO[bytes]:
        path = folder / name
        if not path.is_file():
            raise PipelineError(f"{folder} is missing {name}; a CIFAR-10 folder holds "
                                f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH} and {META}.")
        return open(path, "rb")

    return _read_all(open_member, str(folder), strict_counts)


def _read_archive(archive: Path, strict_counts: bool) -> Cifar10:
    compressed = archive.read_bytes()
    md5 = hashlib.md5(compressed).hexdigest()
    if md5 != OFFICIAL_MD5:
        print(f"note: {archive} has md5 {md5}, not the official {OFFICIAL_MD5}; checking its content instead.")
    try:
        # Decompressing the whole stream first checks gzip's CRC: tarfile alone stops before the trailer
        # and would hand back a flipped bit as a changed pixel.
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(compressed)), mode="r:") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def open_member(name: str) -> IO[bytes]:
                if name not in members:
                    raise PipelineError(
                        f"{archive} is missing {FOLDER_NAME}/{name}; a CIFAR-10 archive holds "
                        f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH} and {META}."
                    )
                return tar.extractfile(members[name])

            return _read_all(open_member, str(archive), strict_counts)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise PipelineError(
            f"{archive} is not a complete gzip'd tar archive ({type(e).__name__}: {e}); it may be "
            "truncated or corrupted. Copy it again, or delete it so the official one is downloaded."
        ) from None


def _download(data_dir: Path) -> Path:
    from torchvision.datasets.utils import download_url

    try:
        download_url(URL, str(data_dir), ARCHIVE_NAME, md5=OFFICIAL_MD5)
    except Exception as e:
        raise PipelineError(
            f"No CIFAR-10 data found and the download from {URL} failed ({type(e).__name__}: {e}). "
            f"Provide it in one of three ways: put the extracted folder at {data_dir / FOLDER_NAME}, "
            f"put the archive at {data_dir / ARCHIVE_NAME} or set CIFAR10_ARCHIVE=/path/to/{ARCHIVE_NAME} "
            "(`make train CIFAR10_ARCHIVE=...`), or connect to the network so it can be downloaded."
        ) from None
    return data_dir / ARCHIVE_NAME


def load_cifar10(data_dir: Path, archive: Path | None = None, strict_counts: bool = True) -> Cifar10:
    """Load from an extracted folder, else a local archive ($CIFAR10_ARCHIVE), else download."""
    folder = data_dir / FOLDER_NAME
    if folder.is_dir():
        return _read_folder(folder, strict_counts)
    archive = archive or (Path(os.environ["CIFAR10_ARCHIVE"]) if os.environ.get("CIFAR10_ARCHIVE") else None)
    if archive is not None:
        if not archive.is_file():
            raise PipelineError(f"CIFAR10_ARCHIVE points at {archive}, which is not a file.")
        return _read_archive(archive, strict_counts)
    if (data_dir / ARCHIVE_NAME).is_file():
        return _read_archive(data_dir / ARCHIVE_NAME, strict_counts)
    data_dir.mkdir(parents=True, exist_ok=True)
    return _read_archive(_download(data_dir), strict_counts)


def split_train_val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, validation) index sets over n training images."""
    if not 0 <= val_size < n:
        raise PipelineError(f"val_size must lie in [0, {n}), got {val_size}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, standardised per channel."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


MEAN_PIXEL = tuple(round(255 * m) for m in MEAN)  # what cutout fills with: zero once normalised


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4, size: int = 32,
            flips: torch.Tensor | None = None, cutout: int = 0) -> torch.Tensor:
    """Random size x size crop after reflection padding, then horizontal flip (random, or the given `flips`),
    then optionally a cutout square set to the mean pixel, for a whole batch."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images.float(), (padding,) * 4, mode="reflect").to(images.dtype)
    # Offsets and flips are drawn on the CPU generator so a seed gives the same batch on any device, and go to
    # the device as one pinned tensor copied asynchronously (pageable memory would make each copy a sync).
    draws = torch.stack([torch.randint(0, h + 2 * padding - size + 1, (b,), generator=generator),
                         torch.randint(0, w + 2 * padding - size + 1, (b,), generator=generator),
                         (torch.rand(b, generator=generator) < 0.5).long()])
    if images.device.type == "cuda":
        draws = draws.pin_memory()
    dy, dx, flip = draws.to(images.device, non_blocking=True)
    flip = flip.bool() if flips is None else flips
    rows = dy[:, None] + torch.arange(size, device=images.device)  # (B, size)
    cols = dx[:, None] + torch.arange(size, device=images.device)  # (B, size)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, s, s)
    if cutout:
        centre = torch.randint(0, size, (2, b), generator=generator).to(images.device)
        span = torch.arange(size, device=images.device)
        offset_y = span[None] - centre[0][:, None] + cutout // 2  # (B, size): 0 .. cutout-1 inside the square
        offset_x = span[None] - centre[1][:, None] + cutout // 2
        inside_y, inside_x = (offset_y >= 0) & (offset_y < cutout), (offset_x >= 0) & (offset_x < cutout)
        square = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (B, 1, size, size)
        fill = torch.tensor(MEAN_PIXEL, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
        crops = torch.where(square, fill, crops)
    return crops
