"""Paths in one place, one frozen dataclass per experiment, named profiles."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The files of a run folder runs/<model>/.
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"  # one JSON line per epoch, appended
FINAL = "final.json"  # test scores, written once at the end
CONFIG = "config.json"
PROVENANCE = "provenance.json"


class PipelineError(Exception):
    """A problem the user can fix; the CLI prints it as one paragraph, no traceback."""


@dataclass(frozen=True)
class Paths:
    """Every file the pipeline reads or writes hangs off `root` (tests point it at a temp dir)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, model: str) -> Path:
        return self.runs / model

    @property
    def site_assets(self) -> Path:
        return self.root / "site_assets"

    @property
    def manifest(self) -> Path:
        return self.site_assets / "manifest.json"

    @property
    def docs(self) -> Path:
        return self.root / "docs"

    @property
    def generated_docs(self) -> Path:
        return self.docs / "generated"

    @property
    def site(self) -> Path:
        return self.root / "site"


def default_paths() -> Paths:
    """Paths rooted at $PIPELINE_ROOT, else at the repository."""
    return Paths(Path(os.environ.get("PIPELINE_ROOT", REPO)).resolve())


@dataclass(frozen=True)
class ClsConfig:
    """ResNet-18 on CIFAR-10."""

    seed: int = 0
    epochs: int = 5
    batch_size: int = 128  # images per optimiser step
    eval_batch_size: int = 500
    lr: float = 0.15  # peak learning rate of the one-cycle schedule
    warmup_frac: float = 0.2  # fraction of all steps spent rising to the peak
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    val_size: int = 5000  # images held out of the 50,000 for the curves; 0 allowed
    train_limit: int = 0  # use only this many training images (0 = all); for smoke runs
    test_limit: int = 0  # evaluate only this many test images (0 = all); for smoke runs
    crop_padding: int = 4  # pixels of reflection padding before the random crop
    low_res: int = 20  # side (pixels) the images are scaled to in the first low_res_epochs: progressive resizing
    low_res_epochs: int = 3
    tta_flip: bool = True  # evaluate on each image and its mirror image, averaging the logits
    channels_last: bool = True
    mixed_precision: bool = True  # bf16 autocast on CPU, fp16 AMP on CUDA
    threads: int = 0  # torch intra-op threads (0 = torch's default)


@dataclass(frozen=True)
class MtConfig:
    """Transformer encoder-decoder on toy French->English translation."""

    seed: int = 0
    corpus: str = "toy"  # "toy" (~12k pairs), "short" (~150k pairs) or a path to a TSV file
    corpus_limit: int = 0  # keep only this many pairs after filtering (0 = all); for smoke runs
    val_frac: float = 0.05  # share of sentence groups in the validation split
    test_frac: float = 0.05
    min_freq: int = 2  # rarer tokens become <unk>
    d_model: int = 256
    heads: int = 4
    layers: int = 3  # encoder layers = decoder layers
    d_ff: int = 512
    dropout: float = 0.1
    tie_embeddings: bool = True  # share target embedding and generator weights
    epochs: int = 16
    tokens_per_batch: int = 2048  # source + target tokens per batch, padding included
    lr: float = 1e-3  # peak learning rate after warm-up
    warmup_steps: int = 100  # optimiser steps; an epoch of the toy task is about 90
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_len: int = 32  # longest decoded output, in tokens
    beam_size: int = 4
    length_penalty: float = 0.6  # GNMT alpha; 0 = no length normalisation
    threads: int = 0


PROFILES: dict[str, dict[str, dict]] = {
    "cls": {
        "full": {},
        "smoke": dict(
            epochs=1, batch_size=32, eval_batch_size=64, val_size=64, train_limit=256, test_limit=128,
            low_res_epochs=0,
        ),
    },
    "mt": {
        "full": {},
        "smoke": dict(
            corpus_limit=600, d_model=32, heads=2, layers=1, d_ff=64, epochs=2,
            tokens_per_batch=1024, warmup_steps=10, max_len=12, beam_size=2, min_freq=1,
        ),
    },
}

CONFIGS = {"cls": ClsConfig, "mt": MtConfig}


def _parse_value(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise PipelineError(f"--{field.name} expects true or false, got {text!r}.")
    try:
        return {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        raise PipelineError(f"--{field.name} expects a {kind}, got {text!r}.") from None


def make_config(model: str, profile: str = "full", overrides: list[str] | None = None):
    """Build a model's config from a profile plus `--key value` overrides."""
    if profile not in PROFILES[model]:
        raise PipelineError(
            f"Unknown profile {profile!r} for {model}; choose one of {', '.join(PROFILES[model])}."
        )
    cls = CONFIGS[model]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(PROFILES[model][profile])
    args = list(overrides or [])
    while args:
        key = args.pop(0)
        name = key.removeprefix("--").replace("-", "_")
        if not key.startswith("--") or name not in fields:
            raise PipelineError(
                f"Unknown option {key!r} for {model}; the options are "
                + ", ".join("--" + f for f in fields) + "."
            )
        if not args:
            raise PipelineError(f"Option {key} needs a value.")
        values[name] = _parse_value(fields[name], args.pop(0))
    return cls(**values)


def config_from_dict(model: str, values: dict):
    """Rebuild a saved config, ignoring fields this version no longer has."""
    cls = CONFIGS[model]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})
