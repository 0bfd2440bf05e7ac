"""Training ResNet-18 on CIFAR-10: one-cycle SGD, batch augmentation on the device, mixed precision."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.config import TEST_OUTPUTS, TEST_PREDICTIONS, ClsConfig, Paths, PipelineError, image_sides
from pipeline.data.cifar10 import augment, load_cifar10, split_train_val
from pipeline.io import save_arrays
from pipeline.models.resnet import ResNet
from pipeline.train import distributed
from pipeline.runtime import autocast, loss_scaler, optimizer_step, progress, seed_everything, steps_per_second
from pipeline.train.runner import LossTrace, Task, epoch_generator
from pipeline.trained import ClsPredictor, build_resnet, prepare


def lr_at(step: int, total_steps: int, peak: float, warmup_frac: float) -> float:
    """One-cycle: linear rise from peak/10 to peak, then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_frac))
    if step < warmup:
        return peak * (0.1 + 0.9 * step / warmup)
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def resolution_at(epoch: int, config: ClsConfig) -> int:
    """Progressive resizing: the first epochs see whole images scaled down, which cost about half as much."""
    return image_sides(config)[epoch]


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy and accuracy of logits against labels."""
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(1) == labels).sum().item() / max(len(labels), 1),
    }


def parameter_groups(model: ResNet, config: ClsConfig) -> list[dict]:
    """The optimiser's groups: one for every weight, or, when batch-norm parameters are treated apart (no
    weight decay, another learning rate), a second for every one-dimensional parameter (batch-norm weights
    and biases, and the classifier's bias). Each carries its learning rate as a multiple of the schedule's."""
    if config.bn_weight_decay and config.bn_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "weight_decay": config.weight_decay, "lr_scale": 1.0}]
    vectors = [p for p in model.parameters() if p.dim() == 1]
    weights = [p for p in model.parameters() if p.dim() > 1]
    return [{"params": weights, "weight_decay": config.weight_decay, "lr_scale": 1.0},
            {"params": vectors, "weight_decay": config.weight_decay if config.bn_weight_decay else 0.0,
             "lr_scale": config.bn_lr_scale}]


# airbench's lookahead: optimiser steps between updates, the decay of the last one, and the power of the share of
# steps taken that the decay rises with (so the average barely lags the weights early, and smooths them at the end)
LOOKAHEAD_EVERY, LOOKAHEAD_DECAY, LOOKAHEAD_POWER = 5, 0.95 ** 5, 3


def lookahead_decay(steps_taken: int, total_steps: int) -> float:
    """The lookahead's decay after `steps_taken` of `total_steps` optimiser steps."""
    return LOOKAHEAD_DECAY * (steps_taken / total_steps) ** LOOKAHEAD_POWER


REPORT_EVERY = 20  # steps between progress-bar readings of the running loss (each one waits for the device)
PROBE_BATCH, PROBE_STEPS = 64, 3  # the precision probe: images per step, timed steps per precision


class ClsTask(Task):
    """ResNet-18 on CIFAR-10, as the shared epoch loop drives it."""

    def __init__(self, config: ClsConfig, paths: Paths):
        super().__init__(config)
        if config.batch_size % self.world.size:
            raise PipelineError(f"--batch_size {config.batch_size} is the global batch of all "
                                f"{self.world.size} processes and must divide evenly among them.")
        self.choose_precision("cls")
        seed_everything(config.seed)
        data = load_cifar10(paths.data, strict_counts=config.train_limit == 0 and config.test_limit == 0)
        train_idx, val_idx = split_train_val(len(data.train_labels), config.val_size, config.seed)
        if config.train_limit:
            train_idx = train_idx[:config.train_limit]
        self.steps_per_epoch = len(train_idx) // config.batch_size
        if self.steps_per_epoch == 0:
            raise PipelineError(
                f"{len(train_idx)} training images (train_limit {config.train_limit}, val_size {config.val_size}) "
                f"do not fill one batch of {config.batch_size}: an epoch would take no optimiser step. "
                "Raise --train_limit or lower --batch_size."
            )
        # Training images stay on the device as uint8 for the whole run: no copy from the host per step.
        self.train_images = data.train_images[train_idx].to(self.device)
        self.train_labels = data.train_labels[train_idx].to(self.device)
        self.val_images, self.val_labels = data.train_images[val_idx], data.train_labels[val_idx]
        limit = config.test_limit or len(data.test_labels)
        self.test_images, self.test_labels = data.test_images[:limit], data.test_labels[:limit]
        self.classes = data.classes

        self.model = build_resnet(config, self.device)
        # Under torchrun, DDP averages the gradients; each rank's BatchNorm normalises its own share of the
        # batch, and rank 0's running statistics are broadcast to the others at every step.
        self.net = distributed.wrap(self.model, self.world)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, config), lr=config.lr,
                                         momentum=config.momentum, nesterov=True)
        # The averaged weights (buffers too) that validation and the test score: an exponential moving average from
        # the first step (config.ema), or the plain mean over the last config.average_epochs epochs' steps.
        self.averaged = torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema) if config.ema else None,
            use_buffers=True) if config.ema or config.average_epochs else None
        # Alternating flips: each image's side in the first epoch, the other side in every next one.
        self.first_flips = (torch.rand(len(train_idx), generator=torch.Generator().manual_seed(config.seed)) < 0.5
                            ).to(self.device) if config.flip == "alternate" else None
        self.total_steps = self.steps_per_epoch * config.epochs
        # Lookahead: an average of the floating-point state (weights and batch-norm statistics) that the model is set
        # to at each of its updates, so training goes on from the average.
        self.lookahead = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                          if v.is_floating_point()} if config.lookahead else None
        self.average_from = 0 if config.ema else self.total_steps - self.steps_per_epoch * config.average_epochs

    def _probe_rate(self, precision: str) -> float:
        """Training images/s of a throwaway ResNet-18 at 32 px in `precision`, on random data; the run's
        random streams are left untouched."""
        batch = min(self.config.batch_size, PROBE_BATCH)
        with torch.random.fork_rng(devices=[]):
            model = build_resnet(self.config, self.device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(batch, 3, 32, 32, device=self.device)
            x = x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x
            y = torch.randint(0, 10, (batch,), device=self.device)

            def step():
                with autocast(self.device, precision):
                    loss = F.cross_entropy(model(x), y)
                optimizer_step(loss, optimizer, loss_scaler(self.device, precision))

            return batch * steps_per_second(step, PROBE_STEPS, device=self.device)

    def train_one_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.train()
        generator = epoch_generator(config.seed, epoch)
        order = torch.randperm(len(self.train_labels), generator=generator).to(self.device)
        size = resolution_at(epoch, config)
        loss_sum = torch.zeros((), device=self.device)  # summed on the device, read every REPORT_EVERY steps
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        trace = LossTrace(self.device, self.step)
        t0 = time.perf_counter()
        with progress(self.steps_per_epoch * config.batch_size, f"cls epoch {epoch + 1}", "img", self.world) as bar:
            for i in range(self.steps_per_epoch):
                # The global batch, augmented alike on every rank (one random stream), then this rank's share.
                idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                flips = None if self.first_flips is None else self.first_flips[idx] ^ bool(epoch % 2)
                images = distributed.local_share(augment(self.train_images[idx], generator, config.crop_padding,
                                                         flips=flips, cutout=config.cutout), self.world)
                x = prepare(images, self.device, config.channels_last, size)
                y = distributed.local_share(self.train_labels[idx], self.world)
                lr = lr_at(self.step, self.total_steps, config.lr, config.warmup_frac)
                with autocast(self.device, self.precision):
                    logits = self.net(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                self.update(loss, lr)
                if self.lookahead is not None and ((self.step + 1) % LOOKAHEAD_EVERY == 0
                                                   or self.step + 1 == self.total_steps):
                    self.look_ahead(self.step + 1)
                if self.averaged is not None and self.step >= self.average_from:
                    self.averaged.update_parameters(self.model)
                trace.add(self.step, loss.detach() * len(y), len(y))
                self.step += 1
                loss_sum += loss.detach().float() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                bar.update(len(idx))
                if (i + 1) % REPORT_EVERY == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", lr=f"{lr:.3g}")
        seconds = time.perf_counter() - t0
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=self.device)])
        loss_sum, correct, seen = distributed.sum_over_ranks(totals, self.world).tolist()  # one read per epoch
        seen = int(seen)
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": lr_at(self.step - 1, self.total_steps, config.lr, config.warmup_frac),
            "resolution": size,
            "images": seen,
            "images_per_s": seen / seconds,
            "train_s": round(seconds, 2),
            "loss_trace": trace.points(self.step, self.world),
        }

    @torch.no_grad()
    def look_ahead(self, steps_taken: int) -> None:
        """Move the lookahead's average towards the model's state by 1 - its decay, then set the model to it."""
        decay = lookahead_decay(steps_taken, self.total_steps)
        state = self.model.state_dict()
        for name, average in self.lookahead.items():
            average.lerp_(state[name], 1 - decay)
            state[name].copy_(average)

    @property
    def scored_model(self) -> ResNet:
        """What validation, the test and evaluation score: the averaged weights once there are any."""
        return self.model if self.averaged is None or self.step <= self.average_from else self.averaged.module

    def predictor(self, tta: bool) -> ClsPredictor:
        """What validation and the test score: on rank 0 alone, the plain module (no DDP hooks)."""
        return ClsPredictor(self.scored_model, self.config, self.device, self.precision, tta)

    def _predict(self, images: torch.Tensor, tta: bool) -> torch.Tensor:
        return self.predictor(tta).logits(images)

    def validate(self) -> dict:
        if not len(self.val_labels):
            return {}
        result = score(self._predict(self.val_images, self.config.val_tta), self.val_labels)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}

    def test(self, run_dir: Path) -> dict:
        """Score the test split once; its logits are kept beside final.json for the evaluation stage."""
        logits = self._predict(self.test_images, self.config.test_tta)
        save_arrays(run_dir / f"{TEST_OUTPUTS}.npz", logits=logits.numpy(), labels=self.test_labels.numpy())
        save_arrays(run_dir / f"{TEST_PREDICTIONS}.npz", predictions=logits.argmax(1).to(torch.uint8).numpy(),
                    labels=self.test_labels.to(torch.uint8).numpy())
        result = score(logits, self.test_labels)
        return {"test_loss": result["loss"], "test_accuracy": result["accuracy"], "test_images": len(self.test_labels)}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "precision": self.precision,
            "classes": self.classes,
            **({"averaged": self.averaged.state_dict(), "scored_model": self.scored_model.state_dict()}
               if self.averaged else {}),
            **({"lookahead": self.lookahead} if self.lookahead is not None else {}),
        }

    def load_state_dict(self, state: dict, checkpoint: Path) -> None:
        self.restore_precision(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        if self.lookahead is not None:
            for name, average in self.lookahead.items():
                average.copy_(state["lookahead"][name])
        self.step = state["step"]
