"""Paths in one place, one frozen dataclass per model, named profiles, the targets, the option parser."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The files of a run folder runs/<model>/<name>/.
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"  # one JSON line per epoch, appended
FINAL = "final.json"  # test scores, written once at the end
TEST_OUTPUTS = "test_outputs"  # the test predictions final.json was scored from (.npz or .json)
TEST_PREDICTIONS = "test_predictions"  # each test item's prediction alone (.npz or .json): small, committed, read
#                                        by the paired tests of the comparison stage
CONFIG = "config.json"
PROVENANCE = "provenance.json"
DECODE_SPEED = "decode_speed.json"  # the Transformer's beam search timed batched and one sentence at a time (bench)
DECODING = "decoding.json"  # validation decodes per beam size and length penalty (an experiment of design decoding)
VIEWS = "views.json"  # validation scores per setting of test-time views (an experiment of design views)
DELETION = "deletion"  # the main run's Grad-CAM deletion test: an analysis (Paths.analysis), written by its evaluation
STEP_SPEED = "step_speed.json"  # the ResNet's training step timed eager and under torch.compile (bench)
MAIN_RUN = "main"  # the run the model pages show
UNCOMMITTED = "-dirty"  # how a provenance commit ends when the tree had uncommitted changes
# What can change a number: a run trained while any of these had uncommitted changes cannot name the code that made
# it. The pipeline's own outputs (runs/, site_assets/, docs/generated/, BENCHMARKS.md) do not count.
NUMBER_INPUTS = ("pipeline", "experiments.yaml", "pyproject.toml", "requirements")
# The files whose change can change a trained run's numbers: a comparison says when its runs' commits differ in them.
TRAINING_CODE = ("pipeline/train", "pipeline/runtime.py", "pipeline/trained.py", "pipeline/models", "pipeline/data",
                 "pipeline/scoring", "pipeline/config.py", "pipeline/io.py", "pyproject.toml")


class PipelineError(Exception):
    """A problem the user can fix; the CLI prints it as one paragraph, no traceback."""


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def uncommitted(commit: str) -> bool:
    """Whether a provenance commit says the tree had uncommitted changes, so it cannot name the code that ran."""
    return commit.endswith(UNCOMMITTED)


def check_run_name(name: str) -> str:
    """A run's name is a plain folder name under runs/<model>/: never a path that could leave it."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise PipelineError(f"{name!r} is not a run name: a run name is one plain folder name of letters, digits, "
                            "'.', '_' and '-' (starting with a letter or digit, at most 100 characters), so that "
                            "the run stays inside runs/<model>/.")
    return name


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

    def run(self, model: str, name: str = MAIN_RUN) -> Path:
        return self.runs / model / check_run_name(name)

    def analysis(self, name: str) -> Path:
        """runs/cls/analyses/NAME.json: an analysis beside the runs of an experiment."""
        return self.runs / "cls" / "analyses" / f"{name}.json"

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
class Targets:
    """What the exercises must reach on their test sets; pages and checks read them from here only."""

    cls_test_accuracy: float = 0.80  # share of the 10,000 CIFAR-10 test images classified correctly
    mt_test_bleu: float = 15.0  # sacrebleu corpus BLEU, the floor
    mt_goal_bleu: float = 25.0  # sacrebleu corpus BLEU, the aim


TARGETS = Targets()


def option(default, meaning: str):
    """A config field: its default and what it means (units included), which `--help`, the README's table of
    options and the reproducibility page show."""
    return dataclasses.field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class ClsConfig:
    """ResNet-18 on CIFAR-10."""

    seed: int = option(0, "seeds the split, the initial weights and every epoch's order and augmentation")
    device: str = option("auto", "auto (CUDA, then Apple MPS, then CPU), cpu, cuda or mps")
    epochs: int = option(7, "passes over the training images")
    batch_size: int = option(128, "images per optimiser step")
    eval_batch_size: int = option(500, "images per forward pass when scoring")
    lr: float = option(0.6, "peak learning rate of the one-cycle schedule")
    warmup_frac: float = option(0.2, "share of all steps spent rising to the peak")
    momentum: float = option(0.9, "Nesterov momentum")
    weight_decay: float = option(5e-4, "L2 penalty on every weight, per step")
    label_smoothing: float = option(0.1, "probability mass spread evenly over all classes in the training loss")
    val_size: int = option(5000, "training images held out for the validation curves (0 = none)")
    train_limit: int = option(0, "use only this many training images (0 = all); for smoke runs")
    test_limit: int = option(0, "score only this many test images (0 = all); for smoke runs")
    crop_padding: int = option(2, "pixels of reflection padding before the random 32-pixel crop")
    low_res: int = option(
        20,
        "with resolutions empty: side (pixels) the images are scaled to in the first low_res_epochs")
    low_res_epochs: int = option(3, "with resolutions empty: epochs trained on images scaled to low_res pixels")
    resolutions: str = option(
        "16,16,16,20,24,32,32",
        "image side per epoch, comma-separated (progressive resizing); with another --epochs and no --resolutions, "
        "this ramp is spread over them; empty: low_res for low_res_epochs, then 32")
    flip: str = option(
        "alternate",
        'training mirror images: "random" (each image, each epoch, a coin) or "alternate" (a coin in the first '
        'epoch, then the other side every next epoch)')
    cutout: int = option(0, "side (pixels) of a square of each training image set to the mean (0 = none)")
    bn_weight_decay: bool = option(False, "weight decay on batch-norm weights and biases too; false spares them")
    bn_lr_scale: float = option(4.0, "learning rate of batch-norm weights and biases, as a multiple of lr")
    bn_momentum: float = option(
        0.1, "weight of each batch in the batch norms' running statistics (PyTorch's convention and default, 0.1)")
    ema: float = option(
        0.0,
        "decay per step of an exponential moving average of the weights, which validation and the test then score (0 "
        "= none)")
    average_epochs: int = option(
        0,
        "validation and the test score the mean of the weights and batch-norm statistics after every step of the last "
        "this-many epochs (0 = the last weights)")
    lookahead: bool = option(
        False,
        "every 5 steps (and at the last), the weights and batch-norm statistics move to an exponential moving "
        "average of themselves whose decay per update rises from 0 to 0.95^5 as the cube of the share of steps taken "
        "(airbench's lookahead): the run trains on, and is scored with, the averaged weights")
    val_tta: bool = option(False, "validation also scores each image's mirror image (a second forward pass)")
    test_tta: bool = option(True, "test scores average the logits of each image and its mirror image")
    tta_translate: int = option(
        0,
        "flip-averaged scoring (test_tta, val_tta) also averages copies shifted by this many pixels up-left and "
        "down-right")
    shortcuts: bool = option(True, "the residual connection of every block; false gives the plain network")
    depth: int = option(18, "18 or 34 layers (BasicBlocks per stage 2-2-2-2 or 3-4-6-3)")
    width: int = option(
        64,
        "channels of the first stage, doubled in each of the next three (64: the standard ResNet; at least 8)")
    projection_shortcuts: bool = option(
        True,
        "1x1 convolution shortcuts where the shape changes; false: parameter-free zero-padded ones, so a plain "
        "network has the same weights")
    identity_start: bool = option(
        True,
        "zero the last batch norm of every residual block, so each starts as its shortcut (plain blocks have none)")
    channels_last: bool = option(True, "NHWC memory format for images and convolution weights")
    precision: str = option(
        "auto",
        "auto (on the CPU bf16 where a probe finds it faster, else fp32; fp16 on CUDA), bf16, fp16 or fp32")
    threads: int = option(0, "torch intra-op threads (0 = torch's default)")
    collective_timeout_s: int = option(
        1800,
        "under torchrun: seconds the other ranks wait (while rank 0 validates and tests) before the run stops with an"
        " error")


@dataclass(frozen=True)
class MtConfig:
    """Transformer encoder-decoder on translation: toy French->English by default."""

    seed: int = option(0, "seeds the split, the initial weights and every epoch's batches")
    device: str = option("auto", "auto (CUDA, then Apple MPS, then CPU), cpu, cuda or mps")
    corpus: str = option(
        "toy",
        '"toy" (~12k pairs), "short" (~132k pairs), "long" (the other ~35k pairs, of longer sentences), the path '
        "of a UTF-8 file of tab-separated pairs, or a folder holding a published split (train.tsv, valid.tsv or "
        "dev.tsv, test.tsv)")
    valid_corpus: str = option(
        "",
        "with test_corpus: a published split's validation file (--corpus is then its training file)")
    test_corpus: str = option("", "a published split's test file, scored as given: every line, nothing filtered")
    src_lang: str = option("French", "the source language's name, as the pages show it")
    tgt_lang: str = option("English", "the target language's name, as the pages show it")
    corpus_limit: int = option(0, "keep only this many pairs after filtering (0 = all); for smoke runs")
    vocab_size: int = option(4000, "subword pieces per language, learnt on the training split (fewer if it is small)")
    shared_vocab: bool = option(
        False,
        "one subword model of vocab_size pieces learnt on both languages, whose one embedding table the source, the "
        "target and the output layer share")
    max_tokens: int = option(64, "pairs with a side longer than this many subword tokens are dropped when loaded")
    val_frac: float = option(0.05, "share of the pairs (whole sentence groups) in the validation split")
    test_frac: float = option(0.05, "share of the pairs (whole sentence groups) in the test split")
    d_model: int = option(256, "width of every token representation")
    heads: int = option(4, "attention heads per layer (d_model must divide by it)")
    layers: int = option(3, "encoder layers = decoder layers")
    d_ff: int = option(512, "hidden width of the feed-forward sublayers")
    dropout: float = option(0.1, "dropout probability after attention, feed-forward and embeddings")
    tie_embeddings: bool = option(True, "share target embedding and generator weights")
    causal_mask: bool = option(
        True,
        "decoder self-attention sees earlier positions only; false also shows it the future")
    source_padding_mask: bool = option(True, "attention never looks at source padding; false lets it")
    epochs: int = option(24, "passes over the training pairs")
    tokens_per_batch: int = option(2048, "padded source + target tokens per batch")
    lr: float = option(1e-3, "peak learning rate after warm-up")
    warmup_steps: int = option(100, "optimiser steps of linear warm-up; an epoch of the toy task is about 120")
    lr_schedule: str = option(
        "linear",
        'after warm-up: "linear" (a straight line down to zero after the last step) or "inverse_sqrt" (decay with '
        "one over the square root of the step, never reaching zero; the default until confirm-schedule-mt)")
    precision: str = option(
        "auto",
        "training arithmetic: auto (on the CPU bf16 where a probe finds it faster, else fp32; fp16 on CUDA), bf16, "
        "fp16 or fp32; validation and decoding always run in fp32")
    label_smoothing: float = option(0.1, "probability mass spread evenly over the vocabulary in the training loss")
    average_last: int = option(
        0,
        "validation and the test score the mean of the weights at the end of the last this-many epochs (0 or 1: the "
        "last weights)")
    clip_norm: float = option(1.0, "gradients are rescaled to at most this global L2 norm (0: no clipping)")
    max_len: int = option(32, "longest decoded output, in tokens")
    length_ratio: float = option(1.5, "an output is also cut at length_ratio x its source's tokens + length_extra")
    length_extra: int = option(8, "see length_ratio")
    beam_size: int = option(4, "hypotheses kept per step in the test decodes (validation decodes greedily)")
    length_penalty: float = option(0.6, "GNMT alpha; 0 = no length normalisation")
    threads: int = option(0, "torch intra-op threads (0 = torch's default)")
    collective_timeout_s: int = option(
        1800,
        "under torchrun: seconds the other ranks wait (while rank 0 validates and tests) before the run stops with an"
        " error")


# The Transformer's Adam: (beta1, beta2) and epsilon, as in "Attention Is All You Need" (the pages read them here).
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-9


def setting_key(beam_size: int, length_penalty: float) -> str:
    """How a decoding setting is named in files and on pages (beam size 0 is greedy decoding, which has no
    length penalty)."""
    return "greedy" if beam_size == 0 else f"beam {beam_size}, alpha {length_penalty:g}"


def views_key(mirror: bool, shift: int) -> str:
    """How a setting of test-time views is named in files and on pages (a shift needs the mirror: test_tta)."""
    return "mirror" + (f" + shift {shift}" if shift else "") if mirror else "image alone"


PROFILES: dict[str, dict[str, dict]] = {
    "cls": {
        "full": {},
        "smoke": dict(
            epochs=1, batch_size=32, eval_batch_size=64, val_size=64, train_limit=256, test_limit=128,
        ),
    },
    "mt": {
        "full": {},
        # The harder Tatoeba subset (~132,000 distinct pairs of at most ten words): larger batches and vocabularies,
        # fewer passes; about half an hour on two CPU cores.
        "short": dict(corpus="short", epochs=3, tokens_per_batch=4096, warmup_steps=400, vocab_size=8000),
        # The ~35,000 pairs of longer sentences (a side of more than ten words; up to about 60): the size of a
        # typical academic benchmark (Multi30k has 29,000 training pairs), with room for long outputs.
        "long": dict(corpus="long", epochs=8, tokens_per_batch=4096, warmup_steps=400, vocab_size=8000,
                     max_tokens=96, max_len=96),
        "smoke": dict(
            corpus_limit=600, d_model=32, heads=2, layers=1, d_ff=64, epochs=2,
            tokens_per_batch=1024, warmup_steps=10, max_len=12, beam_size=2, vocab_size=500,
        ),
    },
}

CONFIGS = {"cls": ClsConfig, "mt": MtConfig}
MODEL_TITLES = {"cls": "ResNet-18 on CIFAR-10", "mt": "Transformer on translation (toy French->English by default)"}


def field_help(cls: type) -> dict[str, str]:
    """Each field's meaning and units, as its option() gives them."""
    return {f.name: f.metadata["meaning"] for f in dataclasses.fields(cls)}


def _type_name(field: dataclasses.Field) -> str:
    return field.type if isinstance(field.type, str) else field.type.__name__


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expects true or false, got {text!r}")


PARSERS = {"bool": _parse_bool, "int": int, "float": float, "str": str}


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every --option of a parser and of the parsers under it."""
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return found


class OptionParser(argparse.ArgumentParser):
    """argparse that raises PipelineError, takes no abbreviations, and suggests the closest option for a misspelt
    one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        unknown = [word for word in message.split() if word.startswith("--")]
        if message.startswith("unrecognized arguments") and unknown:
            name = unknown[0].split("=")[0]
            close = difflib.get_close_matches(name, sorted(set(_option_strings(self))), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise PipelineError(f"{self.prog}: unknown option {name!r}.{hint} `{self.prog} --help` lists them all.")
        raise PipelineError(f"{self.prog}: {message}.")


def add_config_options(parser: argparse.ArgumentParser, model: str) -> None:
    """One --option per config field, with its type, its full-profile default and its comment."""
    helps = field_help(CONFIGS[model])
    group = parser.add_argument_group(f"{MODEL_TITLES[model]} (config fields; defaults of the full profile)")
    for field in dataclasses.fields(CONFIGS[model]):
        kind = _type_name(field)
        group.add_argument(f"--{field.name}", dest=field.name, type=PARSERS[kind], default=argparse.SUPPRESS,
                           metavar=kind.upper(), help=f"{helps[field.name]} (default: {field.default})")


def options_table(model: str) -> str:
    """The Markdown table of a model's options, as the README shows it (a test keeps the two equal)."""
    helps = field_help(CONFIGS[model])
    rows = [f"| `--{f.name}` | {_type_name(f)} | `{f.default}` | {helps[f.name]} |"
            for f in dataclasses.fields(CONFIGS[model])]
    return "\n".join(["| option | type | default | meaning |", "| --- | --- | --- | --- |", *rows])


def make_config(model: str, profile: str = "full", overrides: dict | list[str] | None = None):
    """A model's config: the profile's values, then the overrides (a dict, or `--key value` words)."""
    if profile not in PROFILES[model]:
        raise PipelineError(
            f"Unknown profile {profile!r} for {model}; choose one of {', '.join(PROFILES[model])}."
        )
    if isinstance(overrides, list):
        parser = OptionParser(prog=f"python -m pipeline train {model}", add_help=False)
        add_config_options(parser, model)
        overrides = vars(parser.parse_args(overrides))
    fields = {f.name: f for f in dataclasses.fields(CONFIGS[model])}
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise PipelineError(f"{name!r} is not an option of {model}.")
        kind = _type_name(fields[name])
        expected = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}[kind]
        if not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool)):
            raise PipelineError(f"--{name} expects a {kind}, got {value!r}.")
    values = {**PROFILES[model][profile], **(overrides or {})}
    if model == "cls" and "resolutions" not in values:
        values["resolutions"] = spread_ramp(values.get("epochs", ClsConfig.epochs))
    return validate(CONFIGS[model](**values))


def image_sides(config: ClsConfig) -> list[int]:
    """The image side (pixels) of each epoch: the ramp of resolutions, else low_res for the first low_res_epochs
    and 32 after (the recipe before the ramp)."""
    if config.resolutions:
        return [int(side) for side in config.resolutions.split(",")]
    return [config.low_res if epoch < config.low_res_epochs else 32 for epoch in range(config.epochs)]


def spread_ramp(epochs: int) -> str:
    """The default ramp of image sides spread over `epochs`: epoch i of n takes the side at the same share of the
    way through the default's, so every ramp starts at its first side and ends at its last (for 8 epochs:
    16,16,16,20,24,32,32,32; for one epoch, the last side alone)."""
    sides = ClsConfig.resolutions.split(",")
    if epochs < 2:
        return sides[-1] if epochs == 1 else ClsConfig.resolutions
    return ",".join(sides[round(i * (len(sides) - 1) / (epochs - 1))] for i in range(epochs))


# The narrowest ResNet accepted. oneDNN's AVX2 backward-weights kernel for a stride-2 1x1 convolution in NHWC with
# fewer input channels than its block of 8 writes past its workspace (oneDNN issue #6035): it hangs, crashes or
# returns wrong weight gradients. The first projection shortcut of a net of width w is such a convolution from w
# channels, so from 8 channels up no accepted config reaches it, on any CPU and in either layout.
MIN_WIDTH = 8


def validate(config):
    """Refuse values no run could use, in words."""
    if config.device not in ("auto", "cpu", "cuda", "mps"):
        raise PipelineError(f"--device must be auto, cpu, cuda or mps, not {config.device!r}.")
    positive = [f.name for f in dataclasses.fields(config) if f.name in
                ("epochs", "batch_size", "eval_batch_size", "tokens_per_batch", "d_model", "heads", "layers",
                 "d_ff", "max_len", "beam_size", "max_tokens", "vocab_size")]
    for name in positive:
        if getattr(config, name) < 1:
            raise PipelineError(f"--{name} must be at least 1, got {getattr(config, name)}.")
    if isinstance(config, ClsConfig):
        if config.resolutions:
            sizes = config.resolutions.replace(" ", "").split(",")
            if not all(x.isdigit() and 8 <= int(x) <= 32 for x in sizes):
                raise PipelineError(f"--resolutions must give image sides from 8 to 32, comma-separated, not "
                                    f"{config.resolutions!r}.")
            if len(sizes) != config.epochs:
                raise PipelineError(
                    f"--resolutions gives {len(sizes)} image sides ({config.resolutions}) for {config.epochs} epochs: "
                    f"give one side per epoch, or --resolutions '' for --low_res pixels in the first "
                    f"--low_res_epochs epochs and 32 after.")
        if config.flip not in ("random", "alternate"):
            raise PipelineError(f"--flip must be random or alternate, not {config.flip!r}.")
        if not 0.0 < config.bn_momentum <= 1.0:
            raise PipelineError(f"--bn_momentum must lie in (0, 1], got {config.bn_momentum}.")
        if not 0.0 <= config.ema < 1.0:
            raise PipelineError(f"--ema must lie in [0, 1), got {config.ema}.")
        if not 0 <= config.average_epochs <= config.epochs:
            raise PipelineError(f"--average_epochs must lie between 0 and --epochs ({config.epochs}), got "
                                f"{config.average_epochs}.")
        if sum(map(bool, (config.ema, config.average_epochs, config.lookahead))) > 1:
            raise PipelineError("--ema, --average_epochs and --lookahead each choose the weights that are scored: "
                                "set one of them.")
        if config.depth not in (18, 34):
            raise PipelineError(f"--depth must be 18 or 34, not {config.depth}.")
        if config.width < MIN_WIDTH:
            raise PipelineError(
                f"--width must be at least {MIN_WIDTH}, got {config.width}: a narrower net's first projection "
                f"shortcut is a stride-2 1x1 convolution with fewer than {MIN_WIDTH} input channels, which oneDNN's "
                "AVX2 kernel (every CPU without AVX-512) trains wrongly, or hangs or crashes in (oneDNN issue #6035).")
    if isinstance(config, MtConfig):
        if config.d_model % config.heads:
            raise PipelineError(f"--d_model {config.d_model} must be a multiple of --heads {config.heads}.")
        if config.lr_schedule not in ("inverse_sqrt", "linear"):
            raise PipelineError(f"--lr_schedule must be inverse_sqrt or linear, not {config.lr_schedule!r}.")
    if config.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise PipelineError(f"--precision must be auto, bf16, fp16 or fp32, not {config.precision!r}.")
    return config


# Fields whose default changed after runs were saved without them: such a run was trained with this value.
EARLIER_DEFAULTS = {"cls": {"resolutions": "", "bn_weight_decay": True, "bn_lr_scale": 1.0, "flip": "random"},
                    "mt": {"lr_schedule": "inverse_sqrt", "precision": "fp32"}}


def config_from_dict(model: str, values: dict):
    """Rebuild a saved config: fields this version no longer has are ignored, fields added since the run was
    trained take the value it was trained with (the default, or EARLIER_DEFAULTS where the default changed)."""
    names = {f.name for f in dataclasses.fields(CONFIGS[model])}
    return CONFIGS[model](**{**EARLIER_DEFAULTS[model], **{k: v for k, v in values.items() if k in names}})


def saved_config(model: str, values: dict) -> dict:
    """A saved config as this version reads it, as a dict of every field (see config_from_dict)."""
    return dataclasses.asdict(config_from_dict(model, values))


def changed_fields(model: str, saved: dict, config) -> list[str]:
    """The fields whose value in `config` differs from a saved config's."""
    saved = saved_config(model, saved)
    return sorted(k for k, v in dataclasses.asdict(config).items() if saved[k] != v)
