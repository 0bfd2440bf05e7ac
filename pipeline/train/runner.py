"""What both training runs share: device, seeding, provenance, checkpoints, the metrics log, the epoch loop."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
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

from pipeline.config import CHECKPOINT, CONFIG, FINAL, METRICS, NUMBER_INPUTS, PROVENANCE, REPO, TEST_OUTPUTS, \
    TEST_PREDICTIONS, UNCOMMITTED, PipelineError, changed_fields
from pipeline.io import append_jsonl, atomic_path, read_json, read_jsonl, write_json, write_text
from pipeline.train.distributed import World, barrier, from_rank0


def pick_device(requested: str = "auto", world: World = World()) -> torch.device:
    """The device asked for, or with "auto": CUDA (this rank's GPU under torchrun), then Apple's MPS, then the CPU."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
    if requested == "auto":
        requested = "cuda" if available["cuda"] else "mps" if mps else "cpu"
    elif not available.get(requested, False):
        raise PipelineError(f"--device {requested} was asked for, but this machine's torch has no {requested} "
                            "device; use --device auto to take what is there.")
    return torch.device("cuda", world.local_rank) if requested == "cuda" else torch.device(requested)


REDUCED_MARGIN = 1.10  # bf16 or fp16 must train this much faster than fp32 to be chosen: fp32 is the more exact


def probe_cache() -> Path:
    """Where the precision probe's answer is kept per machine ($PIPELINE_CACHE, else ~/.cache/dl-report)."""
    return Path(os.environ.get("PIPELINE_CACHE") or Path.home() / ".cache" / "dl-report") / "precision.json"


PROBE_UNITS = {"cls": "images", "mt": "tokens"}  # what each model's probe counts per second


def machine_key(model: str = "cls", device: torch.device = torch.device("cpu")) -> str:
    """What decides the probe's answer: the model, the CPU (name, ids, speed flags), the thread count, the GPU on
    CUDA, and torch's version. The ResNet's key has no model name, as before the Transformer had a probe, so its
    recorded answers stay valid."""
    cpu, flags = _cpu_info()
    ids = cpu_ids()
    gpu = [f"gpu={torch.cuda.get_device_name(device)}"] if device.type == "cuda" else []
    return " | ".join([*([] if model == "cls" else [model]), cpu, *(f"{k}={v}" for k, v in ids.items()),
                       ",".join(f for f in SPEED_FLAGS if f in flags), f"threads={torch.get_num_threads()}",
                       *gpu, f"torch={torch.__version__}"])


def probe_candidates(device: torch.device) -> tuple[str, ...]:
    """The precisions the probe times on a device: fp32 and bf16 on the CPU; on CUDA fp16 too, and bf16 only
    where the GPU has it."""
    if device.type == "cuda":
        return ("fp32", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
    return ("fp32", "bf16") if device.type == "cpu" else ()


def resolve_precision(requested: str, device: torch.device, rate=None, cache: Path | None = None,
                      model: str = "cls") -> tuple[str, dict]:
    """The precision to train `model` in, and what was measured to choose it.

    "auto" on the CPU or a CUDA GPU times a few training steps in each of probe_candidates(device) with
    `rate(precision)` (images/s for the ResNet, tokens/s for the Transformer) and takes the fastest reduced
    precision only where it is clearly faster than fp32 (on some CPUs with avx512_bf16 bf16 is slower, on CPUs
    without bf16 instructions many times slower; on an H200 the ResNet trained fastest in fp32 with TF32). The
    answer is recorded per machine and model in `cache` and reused, so two runs on one machine never train in
    different precisions because a timing wobbled; delete the file to probe again. Without a probe: bf16 on the
    CPU, fp16 on CUDA, else fp32 (autocast has no kernels for MPS here)."""
    if requested != "auto":
        return requested, {}
    candidates = probe_candidates(device)
    if candidates and rate is not None:
        cache = cache or probe_cache()
        key, rate_name = machine_key(model, device), f"probe_{PROBE_UNITS[model]}_per_s"
        try:
            known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        except (OSError, ValueError):
            known = {}  # an unreadable record is measured again and rewritten
        if not isinstance(known.get(key), dict) or known[key].get("precision") not in candidates \
                or rate_name not in known[key]:
            rates = {precision: round(rate(precision), 1) for precision in candidates}
            fastest = max(candidates[1:], key=rates.get)
            known[key] = {"precision": fastest if rates[fastest] >= REDUCED_MARGIN * rates["fp32"] else "fp32",
                          rate_name: rates,
                          "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, known)
        entry = known[key]
        return entry["precision"], {rate_name: entry[rate_name],
                                    "probe_measured": entry["measured"], "probe_record": str(cache)}
    return {"cpu": "bf16", "cuda": "fp16"}.get(device.type, "fp32"), {}


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work, so a clock read after it measures the work (CUDA runs ahead)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(step, steps: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Calls of `step()` per second, after `warmup` untimed calls; on a GPU the clock waits for the device."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - t0)


def loss_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The gradient scaler for `precision`: fp16 needs loss scaling, bf16 and fp32 do not (it is then disabled)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def autocast(device: torch.device, precision: str):
    """Autocast to bf16 or fp16 where the device supports it; otherwise a context that changes nothing."""
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's order and augmentation: a resumed run draws the same batches."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def progress(total: int, desc: str, unit: str, world: World = World()) -> tqdm:
    """A bar with the rate and the time left, on rank 0 only."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False,
                disable=not world.main)


TRACE_EVERY = 25  # optimiser steps per point of the training-loss trace logged with each epoch


class LossTrace:
    """The training loss averaged over each window of TRACE_EVERY steps, summed on the device and read once
    per epoch, so a short run still shows its dynamics (He et al.'s evidence is such curves)."""

    def __init__(self, device: torch.device, first_step: int):
        self.device, self.first_step = device, first_step
        self.sums: list[torch.Tensor] = []
        self.counts: list[torch.Tensor] = []

    def add(self, step: int, loss_sum: torch.Tensor, count: float) -> None:
        """One step's summed loss over `count` items (this rank's share); `step` counts from the run's start."""
        if not self.sums or (step - self.first_step) % TRACE_EVERY == 0:
            self.sums.append(torch.zeros((), device=self.device))
            self.counts.append(torch.zeros((), device=self.device))
        self.sums[-1] += loss_sum.detach().float()
        self.counts[-1] += count

    def points(self, last_step: int, world: World) -> list[list[float]]:
        """[[step at the window's end, mean loss], ...], summed over ranks. An epoch's last window shorter than
        half of TRACE_EVERY joins the one before, so no point rests on a step or two."""
        from pipeline.train.distributed import sum_over_ranks

        if not self.sums:
            return []
        sums, counts = sum_over_ranks(torch.stack([torch.stack(self.sums), torch.stack(self.counts)]),
                                      world).tolist()
        ends = [min(self.first_step + (i + 1) * TRACE_EVERY, last_step) for i in range(len(sums))]
        if len(ends) > 1 and ends[-1] - ends[-2] < TRACE_EVERY / 2:
            sums[-2:], counts[-2:], ends[-2:] = [sum(sums[-2:])], [sum(counts[-2:])], [ends[-1]]
        return [[end, round(total / max(count, 1e-12), 5)] for end, total, count in zip(ends, sums, counts)]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *NUMBER_INPUTS],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (UNCOMMITTED if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _cpu_fields() -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_info() -> tuple[str, list[str]]:
    """The processor's model name and its flags."""
    fields = _cpu_fields()
    return fields.get("model name") or platform.processor() or platform.machine(), fields.get("flags", "").split()


def cpu_ids() -> dict:
    """Vendor, family, model and stepping as `lscpu` shows them: a model name like "AMD EPYC" alone does not
    tell Zen 3 (family 25, model 1) from Zen 4 (family 25, model 17) or Zen 5 (family 26)."""
    fields = _cpu_fields()
    ids = {"cpu_vendor": fields.get("vendor_id", platform.machine())}
    for key, name in (("cpu family", "cpu_family"), ("model", "cpu_model"), ("stepping", "cpu_stepping")):
        if fields.get(key, "").isdigit():
            ids[name] = int(fields[key])
    return ids


# The CPU features that decide how fast bf16 and fp32 training run.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
# Every installed version a run's numbers, verdicts or pages can depend on: training, tokens (sentencepiece), scores
# (sacrebleu), statistics (scipy), figures and pages.
VERSIONED_PACKAGES = ("torch", "torchvision", "numpy", "sentencepiece", "sacrebleu", "scipy", "matplotlib", "seaborn",
                      "jinja2", "mkdocs", "mkdocs-material")


def provenance(seed: int, device: torch.device, precision: str, channels_last: bool | None = None,
               precision_probe: dict | None = None, world: World = World(), commit: str | None = None) -> dict:
    """Who, what and where of a run: enough to reproduce it or to explain a difference. `commit`: the one taken
    before the run wrote anything (else taken now)."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    cpu, flags = _cpu_info()
    return {
        "seed": seed,
        "git_commit": commit or _git_commit(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": versions,
        "platform": platform.platform(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu": cpu,
        **cpu_ids(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "processes": world.size,  # torchrun ranks; batch sizes in the config are global (all ranks together)
        **({"random_streams": "dropout and other draws from the global generator: one stream per rank and epoch, "
                              "seeded from (seed, epoch, rank)"} if world.distributed else {}),
        "precision": precision,
        **(precision_probe or {}),
        **({"channels_last": channels_last} if channels_last is not None else {}),
    }


class Task(Protocol):
    """One model's training as the epoch loop sees it."""

    config: object
    device: torch.device
    precision: str
    model: torch.nn.Module
    world: World

    def train_one_epoch(self, epoch: int) -> dict: ...

    def evaluate(self) -> dict: ...

    def test(self, run_dir: Path) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, checkpoint: Path) -> None: ...


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint written by `run`, or a PipelineError naming the file. Only tensors and plain
    containers are read (weights_only): a checkpoint from elsewhere cannot run code."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing: train the model first "
                            f"(make train-{path.parent.parent.name}).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise PipelineError(f"{path} is not a readable checkpoint of this project ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); train again.") from None


def rng_state() -> dict:
    """Every random number generator a run draws from, in types a weights_only load accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                  "has_gauss": has_gauss, "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))


def _fmt(record: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                     if not isinstance(v, list))


def _record_resumption(path: Path, checkpoint: Path, task: Task, epoch: int, world: World) -> None:
    """Refuse to go on on another kind of device or another number of processes (the run would no longer be
    the run its provenance describes); otherwise add this resumption, with its machine, to the provenance."""
    info = read_json(path, "provenance file")
    was = (info.get("device"), info.get("processes", 1))
    now = (task.device.type, world.size)
    if was != now:
        raise PipelineError(
            f"{checkpoint} was trained on {was[0]} with {was[1]} process(es), but this run would go on on {now[0]} "
            f"with {now[1]}: a run that changed either would not be the run {path} describes. Resume with "
            f"--device {was[0]} and {was[1]} process(es), or start over without --resume."
        )
    cpu, _ = _cpu_info()
    info.setdefault("resumed", []).append({
        "after_epoch": epoch + 1, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "cpu": cpu, **cpu_ids(),
    })
    write_json(path, info)


def run(task: Task, model_name: str, run_dir: Path, resume: bool = False) -> dict:
    """Train epoch by epoch with a checkpoint after each, then score the test split once.

    Under torchrun every rank trains its share of each batch; rank 0 alone validates, scores, writes the
    files and prints, while the others wait. Returns the final scores (empty on the other ranks)."""
    config, world = task.config, task.world
    commit = _git_commit()  # before the run writes anything
    checkpoint, metrics = run_dir / CHECKPOINT, run_dir / METRICS
    start_epoch, elapsed = 0, 0.0
    # Rank 0 alone decides whether to resume and reads the checkpoint; every rank gets its state from rank 0,
    # so the ranks of a run on several machines need no shared copy of runs/.
    state = from_rank0(lambda: load_checkpoint(checkpoint) if resume and checkpoint.is_file() else None, world)
    if state is not None:
        changed = changed_fields(model_name, state["config"], config)
        if changed:
            raise PipelineError(
                f"{checkpoint} was trained with a different config ({', '.join(changed)} differ); resume with "
                "the same options, or start over without --resume."
            )
        if world.main:
            _record_resumption(run_dir / PROVENANCE, checkpoint, task, state["epoch"], world)
        task.load_state_dict(state["task"], checkpoint)
        set_rng_state(state["rng"])
        start_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
        if world.main:
            # Drop lines of an epoch that was logged but never checkpointed, and a line torn by a crash.
            kept = [r for r in read_jsonl(metrics, drop_torn_tail=True) if r["epoch"] < start_epoch] \
                if metrics.exists() else []
            write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
            print(f"resuming {model_name} from {checkpoint} after epoch {state['epoch'] + 1}")
    elif world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [checkpoint, metrics, run_dir / FINAL, *run_dir.glob(TEST_OUTPUTS + ".*"),
                      *run_dir.glob(TEST_PREDICTIONS + ".*")]:
            stale.unlink(missing_ok=True)
        write_json(run_dir / CONFIG, {"model": model_name, **dataclasses.asdict(config)})
        write_json(run_dir / PROVENANCE, provenance(config.seed, task.device, task.precision,
                                                    getattr(config, "channels_last", None),
                                                    getattr(task, "precision_probe", None), world, commit))
    barrier(world)  # no rank starts before the stale files are gone

    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            record = {"epoch": epoch, **task.train_one_epoch(epoch)}
            t1 = time.perf_counter()
            if world.main:
                record.update(task.evaluate())
            record["eval_s"] = round(time.perf_counter() - t1, 2)
            elapsed += time.perf_counter() - t0
            record["elapsed_s"] = round(elapsed, 2)
            if world.main:
                append_jsonl(metrics, record)
                save_checkpoint(checkpoint, {
                    "model": model_name,
                    "epoch": epoch,
                    "elapsed": elapsed,
                    "config": dataclasses.asdict(config),
                    "seed": config.seed,
                    "task": task.state_dict(),
                    "rng": rng_state(),
                })
                print(f"[{model_name}] epoch {epoch + 1}/{config.epochs}  {_fmt(record)}", flush=True)
            barrier(world)
    except KeyboardInterrupt:
        raise PipelineError(
            f"Interrupted. {checkpoint} holds the last finished epoch; run the same command with "
            "--resume (or `make train` again) to continue where it stopped."
        ) from None

    final = {}
    if world.main:
        t0 = time.perf_counter()
        final = task.test(run_dir)
        final.update(train_wall_s=round(elapsed, 2), test_wall_s=round(time.perf_counter() - t0, 2),
                     parameters=sum(p.numel() for p in task.model.parameters()))
        write_json(run_dir / FINAL, final)
        info = read_json(run_dir / PROVENANCE, "provenance file")
        info["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        info["train_wall_s"] = round(elapsed, 2)
        write_json(run_dir / PROVENANCE, info)
        print(f"[{model_name}] test  {_fmt(final)}", flush=True)
    barrier(world)
    return final
