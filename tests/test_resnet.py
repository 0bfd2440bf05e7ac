import torch
from torch import nn

from pipeline.models.resnet import BasicBlock, make_resnet


def test_parameter_count_and_output_shape():
    model = make_resnet()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_projection_shortcut_exactly_where_shape_changes():
    model = make_resnet()
    projected = {name for name, m in model.named_modules()
                 if isinstance(m, BasicBlock) and not isinstance(m.shortcut, nn.Identity)}
    assert projected == {"layer2.0", "layer3.0", "layer4.0"}
    for name in projected:
        conv, bn = model.get_submodule(name).shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)


def test_last_conv_stage_is_named_for_grad_cam():
    model = make_resnet()
    stage = model.get_submodule(model.cam_layer)
    seen = {}

    def keep_shape(module, inputs, output):
        seen["shape"] = output.shape

    handle = stage.register_forward_hook(keep_shape)
    model(torch.randn(1, 3, 32, 32))
    handle.remove()
    assert seen["shape"] == (1, 512, 4, 4)


def test_the_shortcut_switch_removes_every_shortcut():
    """Plain network: no block adds its input back; a block's output is its convolution branch alone."""
    plain = make_resnet(shortcuts=False).eval()
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(b.shortcut is None for b in blocks)
    x = torch.randn(2, 64, 32, 32)
    block = plain.layer1[0]
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(branch))
    residual = make_resnet().eval().layer1[0]
    torch.nn.init.ones_(residual.bn2.weight)
    branch = residual.bn2(residual.conv2(residual.relu(residual.bn1(residual.conv1(x)))))
    torch.testing.assert_close(residual(x), torch.relu(branch + x))
    # The plain network loses the three 1x1 projections (and their batch norms), nothing else.
    assert sum(p.numel() for p in make_resnet().parameters()) - sum(p.numel() for p in plain.parameters()) \
        == sum(p.numel() for name, p in make_resnet().named_parameters() if "shortcut" in name)


def test_resnet34_has_its_block_counts():
    model = make_resnet(34)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
