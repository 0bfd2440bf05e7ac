import numpy as np
import pytest
import torch
from torch import nn

from pipeline.evaluate.gradcam import GradCAM
from pipeline.models.resnet import make_resnet18


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = make_resnet18()
    for m in model.modules():  # undo the zero-init of residual branches, so every block contributes
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


def test_matches_the_grad_cam_package(model):
    from pytorch_grad_cam import GradCAM as ReferenceCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 3, 5, 9])
    with GradCAM(model, model.cam_layer) as cam:
        ours = cam(x, classes).numpy()
    with ReferenceCAM(model=model, target_layers=[model.get_submodule(model.cam_layer)]) as reference:
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    assert ours.shape == theirs.shape == (4, 32, 32)
    assert ours.min() >= 0 and ours.max() <= 1
    for a, b in zip(ours, theirs):
        assert a.std() > 0 and np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.99


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules())


def test_hooks_are_removed_after_use_and_after_an_error(model):
    before = _hook_count(model)
    with GradCAM(model, model.cam_layer) as cam:
        cam(torch.randn(1, 3, 32, 32), torch.tensor([1]))
        assert _hook_count(model) == before + 1
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with GradCAM(model, model.cam_layer):
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    out = model(torch.randn(1, 3, 32, 32))  # no hook left to capture anything
    assert out.shape == (1, 10)
