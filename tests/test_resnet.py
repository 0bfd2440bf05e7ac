import torch
from torch import nn

from pipeline.models.resnet import BasicBlock, make_resnet18


def test_parameter_count_and_output_shape():
    model = make_resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_projection_shortcut_exactly_where_shape_changes():
    model = make_resnet18()
    projected = {name for name, m in model.named_modules()
                 if isinstance(m, BasicBlock) and not isinstance(m.shortcut, nn.Identity)}
    assert projected == {"layer2.0", "layer3.0", "layer4.0"}
    for name in projected:
        conv, bn = model.get_submodule(name).shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)


def test_last_conv_stage_is_named_for_grad_cam():
    model = make_resnet18()
    stage = model.get_submodule(model.cam_layer)
    seen = {}

    def keep_shape(module, inputs, output):
        seen["shape"] = output.shape

    handle = stage.register_forward_hook(keep_shape)
    model(torch.randn(1, 3, 32, 32))
    handle.remove()
    assert seen["shape"] == (1, 512, 4, 4)
