import numpy as np
import pytest
import torch
from torch import nn

from pipeline.evaluate.gradcam import GradCAM
from pipeline.models.resnet import make_resnet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = make_resnet()
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


def test_flip_averaged_maps_explain_the_flip_averaged_prediction(model):
    """With test_tta the label shown is the argmax of the image's and its mirror's mean logits; the map must
    describe that same prediction, so it treats both views alike: mirroring the image mirrors the map."""
    from pipeline.config import ClsConfig
    from pipeline.evaluate.gradcam import gradcam_maps
    from pipeline.trained import ClsPredictor

    config = ClsConfig(channels_last=False, test_tta=True, eval_batch_size=8)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    device = torch.device("cpu")
    predictor = ClsPredictor(model, config, device, "fp32", tta=True)
    logits = predictor.logits(images)
    torch.testing.assert_close(logits, predictor.logits(images.flip(3)), rtol=1e-4, atol=1e-4)
    classes = logits.argmax(1)
    maps = gradcam_maps(predictor, images, classes)
    maps_of_mirror = gradcam_maps(predictor, images.flip(3), classes)
    np.testing.assert_allclose(maps_of_mirror, maps[..., ::-1], atol=1e-4)
    single = gradcam_maps(ClsPredictor(model, config, device, "fp32", tta=False), images, classes)
    assert not np.allclose(single, maps, atol=1e-3)  # the one-view map is another explanation


def test_with_shifted_views_grad_cam_explains_the_predictor_the_test_scores(model):
    """--tta_translate 1: the test averages six views (the image, two copies shifted by a pixel, the mirror of
    each); Grad-CAM takes the same six, each view's map moved back into the image's frame."""
    from pipeline.config import ClsConfig
    from pipeline.evaluate.gradcam import gradcam_maps
    from pipeline.trained import ClsPredictor, prepare

    config = ClsConfig(channels_last=False, test_tta=True, tta_translate=1, eval_batch_size=8)
    device = torch.device("cpu")
    predictor = ClsPredictor(model, config, device, "fp32", tta=True)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    x = prepare(images, device, False)
    views = predictor.views(x)
    assert len(views) == 6
    torch.testing.assert_close(predictor.logits(images), torch.stack([model(v) for v in views]).mean(0),
                               rtol=1e-4, atol=1e-4)  # what the test scores
    # Moving back undoes each view: a map that is the view's own first channel returns the image's, away from
    # the border a shift uncovers.
    for i, view in enumerate(views):
        back = predictor.unview(view[:, 0], i)
        torch.testing.assert_close(back[:, 1:-1, 1:-1], x[:, 0, 1:-1, 1:-1])
    classes = predictor.logits(images).argmax(1)
    with GradCAM(model, model.cam_layer) as cam:
        raw = [predictor.unview(cam._raw(v, classes), i) for i, v in enumerate(views)]
    mean = torch.stack(raw).mean(0)
    low, high = mean.flatten(1).min(1).values[:, None, None], mean.flatten(1).max(1).values[:, None, None]
    np.testing.assert_allclose(gradcam_maps(predictor, images, classes), ((mean - low) / (high - low + 1e-7)).numpy(),
                               atol=1e-5)
    flip_only = ClsPredictor(model, ClsConfig(channels_last=False, test_tta=True), device, "fp32", tta=True)
    assert not np.allclose(gradcam_maps(flip_only, images, classes), gradcam_maps(predictor, images, classes),
                           atol=1e-3)
