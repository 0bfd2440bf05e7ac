"""What both training runs share: device, seeding, provenance, checkpoints, the metrics log, the epoch loop."""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import CHECKPOINT, CONFIG, FINAL, METRICS, PROVENANCE, TEST_OUTPUTS, \
    TEST_PREDICTIONS, PipelineError, changed_fields
from pipeline.io import append_jsonl, atomic_path, read_json, read_jsonl, write_json, write_text
from pipeline.runtime import (
    World, cpu_ids, cpu_info, git_commit, load_checkpoint, loss_scaler, optimizer_step, pick_device, provenance,
    resolve_precision, set_lr,
)
from pipeline.train import distributed
from pipeline.train.distributed import barrier, from_rank0


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's order and augmentation: a resumed run draws the same batches."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


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


class Task:
    """One model's training as the epoch loop drives it. What both models set up alike is here: the processes,
    the device, the threads, the precision (rank 0 probes, the others take its answer) with its loss scaler, and
    the optimiser step. Each model adds its data, network and optimiser, and train_one_epoch, validate (the
    validation split, after each epoch), test, state_dict and load_state_dict."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, config):
        self.config = config
        self.world: World = distributed.init(config.device, config.collective_timeout_s)
        self.device: torch.device = pick_device(config.device, self.world)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.step = 0  # optimiser steps taken, over all epochs

    def _probe_rate(self, precision: str) -> float:
        raise NotImplementedError

    def choose_precision(self, model: str) -> None:
        """The precision to train in (see resolve_precision), the same on every rank, and its loss scaler."""
        self.precision, self.precision_probe = from_rank0(
            lambda: resolve_precision(self.config.precision, self.device, self._probe_rate, model=model), self.world)
        self.scaler = loss_scaler(self.device, self.precision)

    def restore_precision(self, state: dict) -> None:
        """A resumed run goes on in the precision it began in, whatever would be chosen today, and an fp16 run
        with its loss scale (a checkpoint from before a model had a precision trained in fp32)."""
        self.precision = state.get("precision", "fp32")
        self.scaler = loss_scaler(self.device, self.precision)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def update(self, loss: torch.Tensor, lr: float, clip_norm: float = 0.0) -> None:
        """One optimiser step from the batch's loss at the schedule's learning rate (optimizer_step)."""
        set_lr(self.optimizer, lr)
        optimizer_step(loss, self.optimizer, self.scaler, clip_norm, self.model.parameters())

    def train_one_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def validate(self) -> dict:
        raise NotImplementedError

    def test(self, run_dir: Path) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict, checkpoint: Path) -> None:
        raise NotImplementedError


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    cpu, _ = cpu_info()
    info.setdefault("resumed", []).append({
        "after_epoch": epoch + 1, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "cpu": cpu, **cpu_ids(),
    })
    write_json(path, info)


def run(task: Task, model_name: str, run_dir: Path, resume: bool = False) -> dict:
    """Train epoch by epoch with a checkpoint after each, then score the test split once.

    Under torchrun every rank trains its share of each batch; rank 0 alone validates, scores, writes the
    files and prints, while the others wait. Returns the final scores (empty on the other ranks)."""
    commit = git_commit()  # before the run writes anything
    start_epoch, elapsed = _start(task, model_name, run_dir, resume, commit)
    elapsed = _train_epochs(task, model_name, run_dir, start_epoch, elapsed)
    return _finish(task, model_name, run_dir, elapsed)


def _start(task: Task, model_name: str, run_dir: Path, resume: bool, commit: str) -> tuple[int, float]:
    """Resume from the checkpoint (same config, same kind of device and processes) or start afresh (stale files
    removed, config and provenance written); returns the first epoch to train and the training time so far."""
    config, world = task.config, task.world
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
    return start_epoch, elapsed


def _train_epochs(task: Task, model_name: str, run_dir: Path, start_epoch: int, elapsed: float) -> float:
    """The remaining epochs, each validated, logged and checkpointed by rank 0; returns the training time."""
    config, world = task.config, task.world
    checkpoint, metrics = run_dir / CHECKPOINT, run_dir / METRICS
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            record = {"epoch": epoch, **task.train_one_epoch(epoch)}
            t1 = time.perf_counter()
            if world.main:
                record.update(task.validate())
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
    return elapsed


def _finish(task: Task, model_name: str, run_dir: Path, elapsed: float) -> dict:
    """Rank 0 scores the test split once and writes final.json and the finished provenance."""
    final = {}
    if task.world.main:
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
    barrier(task.world)
    return final
