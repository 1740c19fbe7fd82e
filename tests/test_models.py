"""Model registry: parameter counts (computed by hand from the architectures) and init."""

from __future__ import annotations

import pytest
import torch

from lrdecay import models

# Counted by hand: VGG-11 convs 9,220,480 + linear 512->10 (5,130); vgg-small convs 1,199,936 +
# classifier 256->128->128->10 (32,896 + 16,512 + 1,290); MLP 64-256-256-10.
EXPECTED = {"mlp": 85_002, "vgg11": 9_225_610, "vgg_small": 1_250_634}


@pytest.mark.parametrize(("name", "count"), EXPECTED.items())
def test_parameter_counts(name: str, count: int) -> None:
    shape = (64,) if name == "mlp" else (3, 32, 32)
    model = models.build({"name": name, "hidden": [256, 256], "dropout": 0.5}, shape, 10)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_vgg_uses_the_authors_initialisation() -> None:
    torch.manual_seed(0)
    model = models.build({"name": "vgg_small", "hidden": [1], "dropout": 0.0}, (3, 32, 32), 10)
    conv = model.features[-3]  # last conv: 256 -> 256, kaiming normal fan_out
    expected_std = (2.0 / (256 * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05
    linear = model.classifier[-1]
    assert abs(linear.weight.std().item() / 0.01 - 1) < 0.2
    assert torch.count_nonzero(conv.bias) == 0
