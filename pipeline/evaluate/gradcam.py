"""Grad-CAM (Selvaraju et al. 2017): where in the image the last convolutional stage found the evidence."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.trained import ClsPredictor, prepare


class GradCAM:
    """Hooks one layer for its activations and their gradients; a context manager that always unhooks.

    with GradCAM(model, model.cam_layer) as cam:
        maps = cam(images, classes)  # (B, H, W) in [0, 1]
    """

    def __init__(self, model: nn.Module, layer_name: str):
        self.model = model
        self.layer = model.get_submodule(layer_name)
        self.handles: list = []
        self.activations: torch.Tensor | None = None
        self.gradients: torch.Tensor | None = None

    def _keep(self, module, inputs, output: torch.Tensor) -> None:
        self.activations = output.detach()
        self.handles.append(output.register_hook(self._keep_gradient))

    def _keep_gradient(self, grad: torch.Tensor) -> None:
        self.gradients = grad.detach()

    def __enter__(self) -> GradCAM:
        self.handles.append(self.layer.register_forward_hook(self._keep))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.activations = self.gradients = None

    def _raw(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Unnormalised maps (B, H, W): positive part of the gradient-weighted activations, upsampled."""
        self.model.zero_grad(set_to_none=True)
        logits = self.model(x)
        logits.gather(1, classes[:, None]).sum().backward()
        weights = self.gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): gradients averaged over space
        cam = F.relu((weights * self.activations).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        self.model.zero_grad(set_to_none=True)
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()

    def __call__(self, x: torch.Tensor, classes: torch.Tensor, predictor: ClsPredictor | None = None) -> torch.Tensor:
        """Maps for normalised images (B, 3, H, W) and one class per image, upsampled to (B, H, W), in [0, 1].

        With a predictor, the prediction being explained is the mean of the logits of its views (the mirror
        image, shifted copies), so the map is the mean of every view's map, each moved back into the image's
        frame (ClsPredictor.unview)."""
        self.model.eval()
        views = predictor.views(x) if predictor is not None else [x]
        cam = sum(self._raw(v, classes) if predictor is None else predictor.unview(self._raw(v, classes), i)
                  for i, v in enumerate(views)) / len(views)
        low = cam.flatten(1).min(1).values[:, None, None]
        high = cam.flatten(1).max(1).values[:, None, None]
        return (cam - low) / (high - low + 1e-7)


def gradcam_maps(predictor: ClsPredictor, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N, 32, 32) of uint8 images for the given classes, over the views the predictor averages
    (the ones its test scores averaged); the gradients are taken in fp32."""
    x = prepare(images, predictor.device, predictor.config.channels_last)
    with GradCAM(predictor.model, predictor.model.cam_layer) as cam:
        return cam(x, classes.to(predictor.device), predictor).cpu().numpy()
