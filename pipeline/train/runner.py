"""What both training runs share: device, seeding, provenance, checkpoints, the metrics log, the epoch loop."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.config import CHECKPOINT, CONFIG, FINAL, METRICS, PROVENANCE, REPO, PipelineError
from pipeline.io import append_jsonl, atomic_path, read_json, read_jsonl, write_json, write_text

def pick_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on the CPU, fp16 on CUDA; off elsewhere."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled and device.type in ("cpu", "cuda"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's order and augmentation: a resumed run draws the same batches."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def progress(total: int, desc: str, unit: str) -> tqdm:
    """A bar with the rate and the time left; quiet under pytest's captured output is fine."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(seed: int, device: torch.device) -> dict:
    """Who, what and where of a run: enough to reproduce it or to explain a difference."""
    versions = {}
    for package in ("torch", "torchvision", "numpy", "sacrebleu", "matplotlib", "seaborn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "seed": seed,
        "git_commit": _git_commit(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": versions,
        "platform": platform.platform(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _processor_name(),
        "cpu_count": torch.get_num_threads(),
    }


class Task(Protocol):
    """One experiment as the epoch loop sees it."""

    config: object
    device: torch.device

    def train_one_epoch(self, epoch: int) -> dict: ...

    def evaluate(self) -> dict: ...

    def test(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint written by `run`, or a PipelineError naming the file."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing: train the model first (make train-{path.parent.name}).")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise PipelineError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); train again.") from None


def _fmt(record: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())


def run(task: Task, model_name: str, run_dir: Path, resume: bool = False) -> dict:
    """Train epoch by epoch with a checkpoint after each, then score the test split once."""
    config = task.config
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, metrics = run_dir / CHECKPOINT, run_dir / METRICS
    start_epoch, elapsed = 0, 0.0
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        if state["config"] != dataclasses.asdict(config):
            raise PipelineError(
                f"{checkpoint} was trained with a different config; resume with the same options, "
                "or start over without --resume."
            )
        task.load_state_dict(state["task"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        start_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
        # Drop lines of an epoch that was logged but never checkpointed.
        kept = [r for r in read_jsonl(metrics) if r["epoch"] < start_epoch] if metrics.exists() else []
        write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
        print(f"resuming {model_name} from {checkpoint} after epoch {state['epoch'] + 1}")
    else:
        for stale in (checkpoint, metrics, run_dir / FINAL):
            stale.unlink(missing_ok=True)
        write_json(run_dir / CONFIG, {"model": model_name, **dataclasses.asdict(config)})
        write_json(run_dir / PROVENANCE, provenance(config.seed, task.device))

    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            record = {"epoch": epoch, **task.train_one_epoch(epoch), **task.evaluate()}
            elapsed += time.perf_counter() - t0
            record["elapsed_s"] = round(elapsed, 2)
            append_jsonl(metrics, record)
            save_checkpoint(checkpoint, {
                "model": model_name,
                "epoch": epoch,
                "elapsed": elapsed,
                "config": dataclasses.asdict(config),
                "seed": config.seed,
                "task": task.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                        "numpy": np.random.get_state()},
            })
            print(f"[{model_name}] epoch {epoch + 1}/{config.epochs}  {_fmt(record)}", flush=True)
    except KeyboardInterrupt:
        raise PipelineError(
            f"Interrupted. {checkpoint} holds the last finished epoch; run the same command with "
            "--resume (or `make train` again) to continue where it stopped."
        ) from None

    t0 = time.perf_counter()
    final = task.test()
    final.update(train_wall_s=round(elapsed, 2), test_wall_s=round(time.perf_counter() - t0, 2))
    write_json(run_dir / FINAL, final)
    info = read_json(run_dir / PROVENANCE, "provenance file")
    info["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info["train_wall_s"] = round(elapsed, 2)
    write_json(run_dir / PROVENANCE, info)
    print(f"[{model_name}] test  {_fmt(final)}", flush=True)
    return final
