"""ResNet-18/34 for 32x32 images, from convolutions, batch norms and a linear layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding; bias is redundant before BatchNorm."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """He et al.'s parameter-free shortcut (their option A) where the shape changes: take every stride-th
    pixel and pad the new channels with zeros, so a residual network has exactly the plain one's weights."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, c_in, H/stride, W/stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, c_out, H/stride, W/stride)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: identity, or where the shape changes a 1x1 projection
    ("projection") or a zero-padded subsample ("zero_pad"). With shortcut=None the block is the two
    convolutions alone (the "plain" network of the paper)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: str | None = "projection"):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        if shortcut is None:
            self.shortcut = None
        elif stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif shortcut == "zero_pad":
            self.shortcut = ZeroPadShortcut(c_in, c_out, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, c_out, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out if self.shortcut is None else out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3x3, stride 1, no max-pool) -> four stages of BasicBlocks -> global average pool -> linear."""

    # The last convolutional stage: Grad-CAM hooks the module of this name.
    cam_layer = "layer4"

    def __init__(self, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes: int = 10,
                 shortcut: str | None = "projection", identity_start: bool = True):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, width, stride, shortcut)] + [BasicBlock(width, width, 1, shortcut)
                                                                  for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # The identity start (Goyal et al.): zero the last BN of each residual block, so its branch starts as
        # nothing and the block as its shortcut. A plain block has no shortcut to start as (zeroed, it would
        # pass nothing on), so plain networks keep the usual init; a fair comparison turns it off for both.
        if identity_start:
            for m in self.modules():
                if isinstance(m, BasicBlock) and m.shortcut is not None:
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w, 32, 32)
        x = self.layer1(x)  # (B, w, 32, 32)
        x = self.layer2(x)  # (B, 2w, 16, 16)
        x = self.layer3(x)  # (B, 4w, 8, 8)
        x = self.layer4(x)  # (B, 8w, 4, 4)
        x = self.pool(x).flatten(1)  # (B, 8w)
        return self.fc(x)  # (B, num_classes)


DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # BasicBlocks per stage


def make_resnet(depth: int = 18, shortcuts: bool = True, num_classes: int = 10, width: int = 64,
                projection: bool = True, identity_start: bool = True) -> ResNet:
    """ResNet-18 (11,173,962 parameters for 10 classes) or -34 with `width` channels in the first stage
    (doubling in each later one); shortcuts=False gives the plain network, projection=False parameter-free
    shortcuts (then residual and plain networks have the same weights)."""
    return ResNet(layers=DEPTHS[depth], widths=tuple(width * 2 ** i for i in range(4)), num_classes=num_classes,
                  shortcut=("projection" if projection else "zero_pad") if shortcuts else None,
                  identity_start=identity_start)
