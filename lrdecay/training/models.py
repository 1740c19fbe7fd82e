"""Model registry: the quick preset's MLP, the paper's VGG-11, the authors' vgg-small and
ResNet-18 (the CIFAR variant, with batch norm).

Adding a model is one entry in :data:`MODELS` (a builder plus its measured cost); the config's
``model.name`` accepts exactly the registered names (lrdecay.config.validate reads them from here),
and the resource requests (lrdecay.config.resources) take the cost and parameter count from here.

ResNet-18 is the one model with batch norm: its running statistics are buffers (state_dict keys
beside the parameters), which every engine keeps per model (lrdecay.training.engine,
lrdecay.training.stacked) and every checkpoint holds; trajectories and the PCA hold parameters only.
The VGGs have no batch norm, so they need the authors' initialisation (Kaiming-normal convs,
N(0, 0.01) linears): with PyTorch's default init vgg-small stayed at chance in a pilot.

torch is imported by the builders, not with the module: the Snakefile reads this registry (config
validation, resource requests) in every Snakemake start, and importing torch there costs seconds
per DVC stage.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

VGG11_CONVS = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_SMALL_CONVS = [32, "M", 64, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"]
VGG_SMALL_CLASSIFIER = [128, 128]


def mlp(input_shape: tuple[int, ...], n_classes: int, hidden: list[int], **_: object) -> nn.Module:
    from torch import nn

    widths = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], n_classes))
    return nn.Sequential(*layers)


def vgg(convs: list, classifier: list[int], n_classes: int, dropout: float) -> nn.Sequential:
    """CIFAR VGG without batch norm: conv stack to 1x1 (`features`), then a linear classifier
    (`classifier`), applied in that order."""
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for item in convs:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    features = nn.Sequential(*layers)
    head: list[nn.Module] = [nn.Flatten()]
    for width in classifier:
        head += [nn.Dropout(dropout), nn.Linear(channels, width), nn.ReLU(inplace=True)]
        channels = width
    head.append(nn.Linear(channels, n_classes))
    model = nn.Sequential(OrderedDict(features=features, classifier=nn.Sequential(*head)))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    return model


def vgg11(input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0,
          **_: object) -> nn.Sequential:
    """VGG-11 for 32x32 inputs: the paper's model (a single linear layer after the convs)."""
    return vgg(VGG11_CONVS, [], n_classes, dropout)


def vgg_small(
    input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.5, **_: object
) -> nn.Sequential:
    """The authors' reduced VGG: classifier 256->128->128->classes with dropout."""
    return vgg(VGG_SMALL_CONVS, VGG_SMALL_CLASSIFIER, n_classes, dropout)


RESNET18_BLOCKS = (2, 2, 2, 2)  # BasicBlocks per stage; stage widths width * (1, 2, 4, 8)


def resnet18(input_shape: tuple[int, ...], n_classes: int, width: int = 64,
             **_: object) -> nn.Module:
    """ResNet-18 for 32x32 inputs as commonly used on CIFAR (Kuang Liu's pytorch-cifar, the
    authors' code): a 3x3 stride-1 stem without max-pool, BasicBlocks [2, 2, 2, 2] of widths
    width * (1, 2, 4, 8) (64-512 at the default), strides (1, 2, 2, 2), 1x1-conv shortcuts where
    the shape changes, batch norm after every conv, global average pool, one linear layer.
    PyTorch's default init (batch norm keeps the activations in scale)."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                              nn.BatchNorm2d(c_out))

        def forward(self, x):  # noqa: ANN001, ANN202 (nn.Module's signature)
            out = self.bn1(self.conv1(x)).relu()
            return (self.bn2(self.conv2(out)) + self.shortcut(x)).relu()

    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    channels = width
    for stage, blocks in enumerate(RESNET18_BLOCKS):
        out = width * 2**stage
        for block in range(blocks):
            layers.append(BasicBlock(channels, out, 2 if stage > 0 and block == 0 else 1))
            channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def resnet18_params(input_shape: tuple[int, ...], n_classes: int, width: int = 64,
                    **_: object) -> int:
    """Convs (no biases), batch norm weights and biases (2 per channel), the linear layer."""
    total, channels = 9 * input_shape[0] * width + 2 * width, width
    for stage, blocks in enumerate(RESNET18_BLOCKS):
        out = width * 2**stage
        for block in range(blocks):
            total += 9 * channels * out + 9 * out * out + 4 * out
            if channels != out or (stage > 0 and block == 0):
                total += channels * out + 2 * out
            channels = out
    return total + linear_params([channels, n_classes])


def resnet18_activations(input_shape: tuple[int, ...], n_classes: int, width: int = 64,
                         **_: object) -> int:
    """Floats kept per image: the input, the stem's conv/BN/ReLU outputs, each block's six
    (conv, BN, ReLU, conv, BN, sum-ReLU) and a projection shortcut's two, at each stage's size;
    about 1.8 M at width 64."""
    side = input_shape[1]
    total = math.prod(input_shape) + 3 * width * side * side
    for stage, blocks in enumerate(RESNET18_BLOCKS):
        channels, side = width * 2**stage, side if stage == 0 else side // 2
        total += (6 * blocks + (2 if stage > 0 else 0)) * channels * side * side
    return total + 8 * width + n_classes


# Parameter counts without building a model (so without torch: the Snakefile's resource requests
# and config checks need them); tests/test_models.py checks each against the built model.
def linear_params(widths: list[int]) -> int:
    """Weights and biases of a chain of linear layers through `widths`."""
    return sum((w_in + 1) * w_out for w_in, w_out in zip(widths[:-1], widths[1:], strict=False))


def mlp_params(input_shape: tuple[int, ...], n_classes: int, hidden: list[int],
               **_: object) -> int:
    return linear_params([math.prod(input_shape), *hidden, n_classes])


def vgg_params(convs: list, classifier: list[int], n_classes: int) -> int:
    """3x3 convs with biases from 3 channels, then the classifier from the last width."""
    total, channels = 0, 3
    for item in convs:
        if item != "M":
            total += (9 * channels + 1) * item
            channels = item
    return total + linear_params([channels, *classifier, n_classes])


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
    count: (input_shape, n_classes, **model_config) -> trainable parameters, without building
        the model; None counts them on a model built on the meta device (which imports torch
        wherever the count is needed, the Snakefile included: slower Snakemake starts).
    activations: (input_shape, n_classes, **model_config) -> floats one image's forward pass
        keeps for the backward pass (lrdecay.config.resources' memory estimate), for a model `convs`
        cannot describe (None: from `convs`, or the mlp's layers).
    n_outputs: a fixed output size (a head built for one dataset), or None: one output per
        class of the configured dataset. The config check refuses a dataset whose class count
        differs (e.g. CIFAR-100 with a 10-way head) before any job.
    """

    build: Callable[..., nn.Module]
    minutes_per_1000_images: tuple[float, float]
    input_shape: tuple[int, ...] | None = None
    convs: tuple = ()  # () with input_shape None: fully connected (the mlp)
    count: Callable[..., int] | None = None
    n_outputs: int | None = None
    activations: Callable[..., int] | None = None


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(mlp, (0.02, 0.02), count=mlp_params),
    "vgg11": ModelSpec(vgg11, (0.8, 0.004), input_shape=(3, 32, 32), convs=tuple(VGG11_CONVS),
                       count=lambda shape, n_classes, **_: vgg_params(VGG11_CONVS, [], n_classes)),
    "vgg_small": ModelSpec(vgg_small, (0.2, 0.008), input_shape=(3, 32, 32),
                           convs=tuple(VGG_SMALL_CONVS),
                           count=lambda shape, n_classes, **_: vgg_params(
                               VGG_SMALL_CONVS, VGG_SMALL_CLASSIFIER, n_classes)),
    # Cost: not yet timed on this project's machines; vgg11's scaled by the forward FLOPs per
    # 32x32 image (ResNet-18 0.56 G, VGG-11 0.15 G at width 64).
    "resnet18": ModelSpec(resnet18, (3.0, 0.015), input_shape=(3, 32, 32),
                          count=resnet18_params, activations=resnet18_activations),
}


def _options(model_config: dict) -> dict:
    """The model section's keys a builder (or count) receives."""
    return {"hidden": model_config["hidden"], "dropout": model_config["dropout"],
            "width": model_config.get("width", 64)}


def build(model_config: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Instantiate the configured model (parameters drawn from torch's current RNG state)."""
    return MODELS[model_config["name"]].build(input_shape, n_classes, **_options(model_config))


def cost(name: str) -> tuple[float, float]:
    """(CPU, GPU) minutes per epoch over 1000 training images of model `name`."""
    return MODELS[name].minutes_per_1000_images


def n_params(model_config: dict, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Trainable parameters of the configured model: its registered count, else counted on the
    meta device (no memory is allocated and no random numbers are drawn)."""
    count = MODELS[model_config["name"]].count
    if count is not None:
        return count(input_shape, n_classes, **_options(model_config))
    import torch

    with torch.device("meta"):
        model = build(model_config, input_shape, n_classes)
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` keeps running statistics (its buffers), which every checkpoint of it
    must carry and whose treatment at landscape grid points is configured (landscape.bn_stats)."""
    from torch import nn

    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def is_conv(model: nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())
