"""Analyses behind two experiments that train nothing to compare: gradient norms per layer (residual against
plain networks) and the deletion test of Grad-CAM maps (do the salient pixels matter to the model?)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import Paths
from pipeline.evaluate.gradcam import gradcam_maps
from pipeline.io import write_json
from pipeline.models.resnet import ResNet, make_resnet
from pipeline.runtime import optimizer_step
from pipeline.trained import ClsPredictor, prepare

NETWORKS = {"ResNet-18 (residual)": (18, True), "ResNet-18 plain": (18, False),
            "ResNet-34 (residual)": (34, True), "ResNet-34 plain": (34, False)}


def layer_gradient_norms(model: ResNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """L2 norm of the loss gradient with respect to the output of the stem and of every block, input to
    output. (Block outputs, not weights: the zero-initialised last batch norm of each residual block gives its
    convolutions no gradient at all at initialisation, while the signal still flows through the shortcut.)"""
    from pipeline.models.resnet import BasicBlock

    outputs = []

    def keep(module, inputs, output):
        output.retain_grad()
        outputs.append(output)

    layers = [model.stem] + [m for m in model.modules() if isinstance(m, BasicBlock)]
    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    finally:
        for handle in handles:
            handle.remove()
    return [float(o.grad.norm()) for o in outputs]


def gradient_norms(x: torch.Tensor, y: torch.Tensor, batches, steps: int, lr: float = 0.05, seed: int = 0,
                   width: int = 64, projection: bool = True, identity_start: bool = True) -> dict:
    """For each network: per-layer gradient norms on the batch (x, y) at initialisation and after `steps` SGD
    steps on `batches` (an iterator of (images, labels)), all four from the same seed and the same batches,
    built as the experiment builds them (width, shortcuts, identity start)."""
    networks = {}
    cached = [next(batches) for _ in range(steps)]
    for name, (depth, shortcuts) in NETWORKS.items():
        torch.manual_seed(seed)
        model = make_resnet(depth, shortcuts, width=width, projection=projection,
                            identity_start=identity_start).train()
        init = layer_gradient_norms(model, x, y)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        for images, labels in cached:
            optimizer_step(F.cross_entropy(model(images), labels), optimizer)
        trained = layer_gradient_norms(model, x, y)
        networks[name] = [{"init": a, "trained": b} for a, b in zip(init, trained)]
    return {"networks": networks, "steps": steps, "batch": len(x), "lr": lr, "width": width,
            "projection_shortcuts": projection, "identity_start": identity_start}


SHARES = np.linspace(0, 0.9, 10)  # share of the image removed at each step of the deletion test
PATCH = 4  # side (pixels) of the square regions removed: 64 regions in a 32 x 32 image
ORDERS = ("most salient first", "random", "least salient first")


def area_under(curves: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each row of curves (rows, len(x))."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(x)).sum(axis=1)


@torch.no_grad()
def deletion_curves(predict, images: torch.Tensor, maps: np.ndarray, classes: torch.Tensor, seed: int = 0,
                    patch: int = PATCH) -> dict:
    """Confidence in each image's class as ever more of it is replaced by the dataset mean (zero after
    normalisation), square region by square region: in order of mean Grad-CAM saliency, at random, or least
    salient first. Regions, not single pixels: scattered pixels would destroy any image, salient or not.

    `predict(x) -> probabilities` takes normalised images (N, 3, H, W); `maps` are (N, H, W)."""
    rng = np.random.default_rng(seed)
    n, _, h, w = images.shape
    rows_, cols_ = h // patch, w // patch
    saliency = maps.reshape(n, rows_, patch, cols_, patch).mean(axis=(2, 4)).reshape(n, -1)  # (N, regions)
    regions = rows_ * cols_
    ranks = {
        "most salient first": np.argsort(-saliency, axis=1, kind="stable"),
        "random": np.stack([rng.permutation(regions) for _ in range(n)]),
        "least salient first": np.argsort(saliency, axis=1, kind="stable"),
    }
    confidence = {}
    for order in ORDERS:
        rows = []
        for share in SHARES:
            keep = np.ones((n, regions), dtype=bool)
            removed = ranks[order][:, : int(round(share * regions))]
            np.put_along_axis(keep, removed, False, axis=1)
            pixels = keep.reshape(n, rows_, 1, cols_, 1).repeat(patch, axis=2).repeat(patch, axis=4)
            mask = torch.from_numpy(pixels.reshape(n, 1, h, w)).to(images.device, images.dtype)
            probabilities = predict(images * mask)
            rows.append(probabilities.gather(1, classes[:, None])[:, 0].float().cpu().numpy())
        confidence[order] = np.stack(rows, axis=1).tolist()  # (images, steps)
    auc = {order: area_under(np.array(confidence[order]), SHARES) for order in ORDERS}
    gap_random = auc["random"] - auc["most salient first"]
    gap_least = auc["least salient first"] - auc["most salient first"]
    summary = {name: {"mean": float(gap.mean()), "sd": float(gap.std(ddof=1)) if n > 1 else 0.0,
                      "halfwidth": float(1.96 * gap.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")}
               for name, gap in (("random_minus_salient", gap_random), ("least_minus_salient", gap_least))}
    return {"shares": SHARES.tolist(), "confidence": confidence, "images": n,
            "auc": {order: float(a.mean()) for order, a in auc.items()}, "area_between": summary}


DELETION_IMAGES = 200  # test images in the deletion test of Grad-CAM


def deletion_test(predictor: ClsPredictor, images: torch.Tensor, predictions: np.ndarray, path: Path,
                  seed: int = 0) -> dict:
    """The deletion test of Grad-CAM on a seeded sample of the test images (uint8), each explained and scored
    for its predicted class by the predictor the test was scored with; written to `path` with the sample."""
    limit = len(images)
    sample = np.sort(np.random.default_rng(seed).choice(limit, size=min(DELETION_IMAGES, limit), replace=False))
    sample_images, sample_classes = images[sample], torch.from_numpy(predictions[sample])
    maps = gradcam_maps(predictor, sample_images, sample_classes)
    x = prepare(sample_images, predictor.device, predictor.config.channels_last)
    deletion = deletion_curves(predictor.probabilities, x, maps, sample_classes.to(predictor.device))
    write_json(path, {**deletion, "index": sample.tolist()})
    return deletion


def run_gradient_norms(paths: Paths, config, steps: int = 30, batch: int = 64) -> dict:
    """Gradient norms of ResNet-18/34, residual and plain, built as `config` (a ClsConfig) builds them, on real
    CIFAR-10 training images."""
    from pipeline.data.cifar10 import load_cifar10, normalize_images

    data = load_cifar10(paths.data, strict_counts=False)
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            idx = torch.randint(0, len(data.train_labels), (batch,), generator=generator)
            yield normalize_images(data.train_images[idx]), data.train_labels[idx]

    x, y = next(batches())
    result = gradient_norms(x, y, batches(), steps, width=config.width, projection=config.projection_shortcuts,
                            identity_start=config.identity_start)
    write_json(paths.analysis("gradient_norms"), result)
    return result
