"""What the oneDNN guard test runs in a subprocess (it may hang or crash where the guard fails): one
forward/backward of the ResNet a config describes, in its channels_last layout through oneDNN, and the same
weights' gradients again in NCHW with oneDNN switched off, as the reference. Prints the largest relative
difference of any convolution's weight gradient. argv: the config's --option words."""

import sys

import torch
import torch.nn.functional as F

from pipeline.config import make_config
from pipeline.trained import build_resnet


def weight_gradients(model, images, labels) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.ndim == 4}


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = make_config("cls", "smoke", argv)
    model = build_resnet(config, torch.device("cpu"))
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    layout = images.contiguous(memory_format=torch.channels_last) if config.channels_last else images
    tested = weight_gradients(model, layout, labels)
    with torch.backends.mkldnn.flags(enabled=False):
        reference = weight_gradients(model.to(memory_format=torch.contiguous_format), images, labels)
    worst = max(((tested[k] - reference[k]).norm() / reference[k].norm().clamp_min(1e-12)).item() for k in reference)
    print(f"largest relative gradient difference {worst:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
