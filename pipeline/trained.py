"""Trained networks, below training and evaluation: each model built from its config, a finished run loaded from
its checkpoint, and what it predicts (the ResNet's test-time views, the Transformer's splits and subword models).
Training builds its networks here; evaluation and the benchmarks load theirs here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.config import CHECKPOINT, ClsConfig, MtConfig, PipelineError, config_from_dict
from pipeline.data.cifar10 import normalize_images
from pipeline.data.translation import (
    Splits, Tokenizer, corpus_path, file_sha256, load_pairs, published_files, read_published, split_fingerprint,
    split_pairs,
)
from pipeline.models.resnet import ResNet, make_resnet
from pipeline.models.transformer import Transformer, make_transformer
from pipeline.runtime import autocast, load_checkpoint


def tta_views(x: torch.Tensor, flip: bool, translate: int) -> list[torch.Tensor]:
    """The views test-time augmentation averages: the image, shifted by `translate` pixels up-left and
    down-right (reflection at the border) when asked, and each view's mirror image when `flip`."""
    views = [x]
    if translate:
        padded = F.pad(x, (translate,) * 4, mode="reflect")
        side = x.shape[-1]
        views += [padded[..., :side, :side], padded[..., 2 * translate:, 2 * translate:]]
    return views + [v.flip(3) for v in views] if flip else views


def prepare(images: torch.Tensor, device: torch.device, channels_last: bool, size: int = 32) -> torch.Tensor:
    """uint8 batch -> normalised float on the device, scaled to size x size, in the model's memory format."""
    x = normalize_images(images.to(device, non_blocking=True))
    if size != x.shape[-1]:
        if x.device.type == "mps":  # no antialiased bilinear kernel on MPS in older torch: box filter instead
            x = F.interpolate(x, size=(size, size), mode="area")
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def build_resnet(config: ClsConfig, device: torch.device) -> ResNet:
    """The network a config describes, on the device, in its memory format (freshly initialised)."""
    model = make_resnet(config.depth, config.shortcuts, width=config.width, projection=config.projection_shortcuts,
                        identity_start=config.identity_start).to(device)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = config.bn_momentum
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


class ClsPredictor:
    """The classifier whose scores a run reports: a network in its precision, and the test-time views it averages
    (the image; with `tta`, copies shifted by tta_translate pixels and each view's mirror image). Validation, the
    test, Grad-CAM and the deletion test all ask one of these, so they explain the prediction that is scored."""

    def __init__(self, model: ResNet, config: ClsConfig, device: torch.device, precision: str, tta: bool):
        self.model, self.config, self.device, self.precision = model, config, device, precision
        self.flip, self.translate = tta, config.tta_translate if tta else 0

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The views of a prepared batch (B, 3, H, W) whose logits are averaged (tta_views)."""
        return tta_views(x, self.flip, self.translate)

    def unview(self, maps: torch.Tensor, view: int) -> torch.Tensor:
        """Maps (B, H, W) computed on views()[view], moved back into the image's frame: mirrored back, then
        shifted back (the border pixels a shift uncovers repeat their neighbours)."""
        shifts = 3 if self.translate else 1
        if view >= shifts:
            maps, view = maps.flip(-1), view - shifts
        t = self.translate
        if view == 1:  # the content moved down-right by t pixels
            return F.pad(maps[:, None], (0, t, 0, t), mode="replicate")[:, 0, t:, t:]
        if view == 2:  # the content moved up-left by t pixels
            side = maps.shape[-1]
            return F.pad(maps[:, None], (t, 0, t, 0), mode="replicate")[:, 0, :side, :side]
        return maps

    @torch.no_grad()
    def batch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, 10) of a prepared batch: the mean over the views, in the run's precision."""
        self.model.eval()
        with autocast(self.device, self.precision):
            return torch.stack([self.model(v).float() for v in self.views(x)]).mean(0)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, 10) of a prepared batch."""
        return self.batch_logits(x).softmax(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) in float32 on the CPU for uint8 images (N, 3, 32, 32), in order, in batches of
        eval_batch_size."""
        out = [self.batch_logits(prepare(images[start:start + self.config.eval_batch_size], self.device,
                                         self.config.channels_last)).cpu()
               for start in range(0, len(images), self.config.eval_batch_size)]
        return torch.cat(out) if out else torch.empty(0, 10)


def load_resnet(run_dir: Path, device: torch.device) -> tuple[ClsConfig, ResNet, dict]:
    """A finished ResNet run's config, the weights it was scored with (averaged ones where it averaged them) on
    the device, and its checkpoint's task state (classes, precision)."""
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    config = config_from_dict("cls", checkpoint["config"])
    model = build_resnet(config, device)
    model.load_state_dict(checkpoint["task"].get("scored_model", checkpoint["task"]["model"]))
    return config, model.eval(), checkpoint["task"]


def build_transformer(config: MtConfig, src_vocab: int, tgt_vocab: int, device: torch.device) -> Transformer:
    """The network a config describes for these vocabularies, on the device (freshly initialised)."""
    return make_transformer(src_vocab, tgt_vocab, config.d_model, config.heads, config.layers, config.d_ff,
                            config.dropout, config.tie_embeddings,
                            max_positions=max(config.max_tokens, config.max_len) + 2, causal=config.causal_mask,
                            mask_source_padding=config.source_padding_mask,
                            shared_embeddings=config.shared_vocab).to(device)


def load_splits(config: MtConfig) -> tuple[Splits, dict]:
    """The run's train / validation / test pairs (a published split as given, or one drawn here), and the
    fingerprints that identify them."""
    files = published_files(config.corpus, config.valid_corpus, config.test_corpus)
    if files:
        splits = read_published(files)
        digest = hashlib.sha256("".join(file_sha256(files[k]) for k in ("train", "valid", "test")).encode())
        corpus_sha256 = digest.hexdigest()
    else:
        splits = split_pairs(load_pairs(config.corpus, config.corpus_limit), config.val_frac, config.test_frac,
                             config.seed)
        corpus_sha256 = file_sha256(corpus_path(config.corpus))
    return splits, {"corpus_sha256": corpus_sha256, "split_fingerprint": split_fingerprint(splits)}


def drop_long(pairs: list[tuple[str, str]], src: Tokenizer, tgt: Tokenizer, max_tokens: int,
              what: str) -> list[tuple[str, str]]:
    """The pairs whose sides both fit in max_tokens subword tokens; how many did not is printed."""
    kept = [(s, t) for s, t in pairs if len(src.encode(s)) <= max_tokens and len(tgt.encode(t)) <= max_tokens]
    if len(kept) < len(pairs):
        print(f"note: dropped {len(pairs) - len(kept)} of {len(pairs)} {what} pairs with a side longer than "
              f"max_tokens = {max_tokens} subword tokens.")
    return kept


def check_fingerprints(saved: dict, current: dict, checkpoint: Path, corpus: str) -> None:
    """Refuse to go on with a corpus or split other than the one the checkpoint was trained on."""
    for key, what in (("corpus_sha256", "corpus file"), ("split_fingerprint", "split of the corpus")):
        if saved.get(key) != current[key]:
            raise PipelineError(
                f"{checkpoint} was trained on a {what} with {key} {saved.get(key)}, but {corpus_path(corpus)} now "
                f"gives {current[key]}: its test sentences may have been seen in training. Restore that corpus, "
                "or train a new run on this one."
            )


def load_trained(run_dir: Path, device: torch.device) -> tuple[MtConfig, Transformer, Tokenizer, Tokenizer]:
    """A finished run's config, the model it was scored with (in eval mode, on device; averaged weights where
    the run averaged them) and its stored subword models, after checking that its corpus is the one it was
    trained on."""
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    config = config_from_dict("mt", checkpoint["config"])
    _, fingerprints = load_splits(config)
    check_fingerprints(checkpoint["task"], fingerprints, run_dir / CHECKPOINT, config.corpus)
    src_tok, tgt_tok = Tokenizer(checkpoint["task"]["src_tokenizer"]), Tokenizer(checkpoint["task"]["tgt_tokenizer"])
    model = build_transformer(config, len(src_tok), len(tgt_tok), device)
    model.load_state_dict(checkpoint["task"].get("scored_model", checkpoint["task"]["model"]))
    return config, model.eval(), src_tok, tgt_tok
