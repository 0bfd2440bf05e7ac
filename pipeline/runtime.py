"""What training, evaluation and the benchmarks share, below all three: the processes and the device, the
arithmetic (precision, its probe, autocast, loss scaling), one optimiser step, progress bars, where a run ran
(provenance) and reading a checkpoint. Nothing here knows a model or a stage."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.config import NUMBER_INPUTS, REPO, UNCOMMITTED, PipelineError
from pipeline.io import write_json


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process, 0 .. size - 1; rank 0 writes every file and prints
    size: int = 1
    local_rank: int = 0  # this process on its machine: its GPU index

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in WORLD_SIZE, RANK and LOCAL_RANK (a world of one without torchrun); no
        process group is started here (distributed.init does that)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


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
    cpu, flags = cpu_info()
    ids = cpu_ids()
    gpu = [f"gpu={torch.cuda.get_device_name(device)}"] if device.type == "cuda" else \
        ["device=mps"] if device.type == "mps" else []
    return " | ".join([*([] if model == "cls" else [model]), cpu, *(f"{k}={v}" for k, v in ids.items()),
                       ",".join(f for f in SPEED_FLAGS if f in flags), f"threads={torch.get_num_threads()}",
                       *gpu, f"torch={torch.__version__}"])


def probe_candidates(device: torch.device) -> tuple[str, ...]:
    """The precisions the probe times on a device: fp32 and bf16 on the CPU and on Apple's MPS (fp16 there would
    need loss scaling, whose MPS kernels were still being fixed in 2026); on CUDA fp16 too, and bf16 only where the
    GPU has it."""
    if device.type == "cuda":
        return ("fp32", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
    return ("fp32", "bf16") if device.type in ("cpu", "mps") else ()


def resolve_precision(requested: str, device: torch.device, rate=None, cache: Path | None = None,
                      model: str = "cls") -> tuple[str, dict]:
    """The precision to train `model` in, and what was measured to choose it.

    "auto" on the CPU, a CUDA GPU or Apple's MPS times a few training steps in each of probe_candidates(device) with
    `rate(precision)` (images/s for the ResNet, tokens/s for the Transformer) and takes the fastest reduced
    precision only where it is clearly faster than fp32 (on some CPUs with avx512_bf16 bf16 is slower, on CPUs
    without bf16 instructions many times slower; on an H200 the ResNet trained fastest in fp32 with TF32). The
    answer is recorded per machine and model in `cache` and reused, so two runs on one machine never train in
    different precisions because a timing wobbled; delete the file to probe again. Without a probe: bf16 on the
    CPU, fp16 on CUDA, else fp32."""
    if requested == "fp16" and device.type == "mps":
        raise PipelineError("--precision fp16 needs loss scaling, which this project does not trust on Apple's MPS "
                            "yet; use --precision bf16 or fp32 there (or auto, which times both).")
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
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


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
    if precision == "fp32" or device.type not in ("cpu", "cuda", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None = None, clip_norm: float = 0.0, parameters=None) -> None:
    """One update of the weights from a loss: the gradients zeroed, the loss's back-propagated (scaled first where
    the precision needs it: fp16), the true gradients clipped to clip_norm in global L2 norm when it is set (it
    then needs the `parameters`), the step taken and the loss scale updated. Every training step of the project
    goes through here; only bench's deliberately plain baseline writes its own."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
    if clip_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate for this step, times each parameter group's own `lr_scale` (1 if it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress(total: int, desc: str, unit: str, world: World = World()) -> tqdm:
    """A bar with the rate and the time left, on rank 0 only."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False,
                disable=not world.main)


def git_commit() -> str:
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


def cpu_info() -> tuple[str, list[str]]:
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
    cpu, flags = cpu_info()
    return {
        "seed": seed,
        "git_commit": commit or git_commit(),
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
