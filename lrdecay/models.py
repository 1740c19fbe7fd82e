"""Model registry: the quick preset's MLP, the paper's VGG-11 and the authors' vgg-small.

Adding a model is one entry in :data:`MODELS` (a builder plus its measured cost); the config's
``model.name`` accepts exactly the registered names (lrdecay.config reads them from here), and
the resource requests (lrdecay.resources) take the cost and parameter count from here.

The VGGs have no batch norm, so they need the authors' initialisation (Kaiming-normal convs,
N(0, 0.01) linears): with PyTorch's default init vgg-small stayed at chance in a pilot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

VGG11_CONVS = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_SMALL_CONVS = [32, "M", 64, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"]


def mlp(input_shape: tuple[int, ...], n_classes: int, hidden: list[int], **_: object) -> nn.Module:
    widths = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], n_classes))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """CIFAR VGG without batch norm: conv stack to 1x1, then a linear classifier."""

    def __init__(self, convs: list, classifier: list[int], n_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in convs:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        for width in classifier:
            head += [nn.Dropout(dropout), nn.Linear(channels, width), nn.ReLU(inplace=True)]
            channels = width
        head.append(nn.Linear(channels, n_classes))
        self.classifier = nn.Sequential(*head)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg11(input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0, **_: object) -> VGG:
    """VGG-11 for 32x32 inputs: the paper's model (a single linear layer after the convs)."""
    return VGG(VGG11_CONVS, [], n_classes, dropout)


def vgg_small(
    input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.5, **_: object
) -> VGG:
    """The authors' reduced VGG: classifier 256->128->128->classes with dropout."""
    return VGG(VGG_SMALL_CONVS, [128, 128], n_classes, dropout)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    build: (input_shape, n_classes, **model_config) -> nn.Module; it receives every key of the
        config's model section (hidden, dropout) and ignores those it does not use.
    minutes_per_1000_images: (CPU, GPU) minutes per epoch over 1000 training images for one path,
        a full evaluation pass included (measured: benchmarks/RESULTS.md and the quick preset's
        logs); the SLURM runtime requests follow from it.
    input_shape: the (C, H, W) images the model needs, or None if any input shape works.
    convs: the conv stack (widths and "M" pools), for the memory estimate of its activations.
    """

    build: Callable[..., nn.Module]
    minutes_per_1000_images: tuple[float, float]
    input_shape: tuple[int, ...] | None = None
    convs: tuple = ()


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(mlp, (0.02, 0.02)),
    "vgg11": ModelSpec(vgg11, (0.8, 0.004), input_shape=(3, 32, 32), convs=tuple(VGG11_CONVS)),
    "vgg_small": ModelSpec(vgg_small, (0.2, 0.008), input_shape=(3, 32, 32),
                           convs=tuple(VGG_SMALL_CONVS)),
}


def build(model_config: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Instantiate the configured model (parameters drawn from torch's current RNG state)."""
    return MODELS[model_config["name"]].build(
        input_shape, n_classes, hidden=model_config["hidden"], dropout=model_config["dropout"]
    )


def cost(name: str) -> tuple[float, float]:
    """(CPU, GPU) minutes per epoch over 1000 training images of model `name`."""
    return MODELS[name].minutes_per_1000_images


def n_params(model_config: dict, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Trainable parameters of the configured model, counted on the meta device (no memory is
    allocated and no random numbers are drawn, so it is cheap even for VGG-11)."""
    with torch.device("meta"):
        model = build(model_config, input_shape, n_classes)
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)


def is_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
