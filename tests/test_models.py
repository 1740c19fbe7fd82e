"""Model registry: parameter counts (computed by hand from the architectures) and init."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.training import data, models

from .conftest import load_tiny

# Counted by hand: VGG-11 convs 9,220,480 + linear 512->10 (5,130); vgg-small convs 1,199,936 +
# classifier 256->128->128->10 (32,896 + 16,512 + 1,290); MLP 64-256-256-10.
# ResNet-18 (CIFAR): the usual 11,173,962 (convs, batch norm weights and biases, linear 512->10).
EXPECTED = {"mlp": 85_002, "vgg11": 9_225_610, "vgg_small": 1_250_634, "resnet18": 11_173_962}


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


# The registries (lrdecay.training.models.MODELS, lrdecay.training.data.DATASETS): one entry adds a
# model or data.

def _accepted(model: models.ModelSpec) -> list[str]:
    return [name for name, spec in data.DATASETS.items()
            if model.input_shape is None or tuple(model.input_shape) == spec.input_shape]


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_builds_for_every_dataset_it_accepts(name: str) -> None:
    spec = models.MODELS[name]
    assert _accepted(spec), f"{name} accepts no registered dataset"
    for dataset_name in _accepted(spec):
        dataset = data.DATASETS[dataset_name]
        config = {"name": name, "hidden": [16], "dropout": 0.0}
        model = models.build(config, dataset.input_shape, dataset.n_classes)
        out = model(torch.zeros(2, *dataset.input_shape))
        assert out.shape == (2, dataset.n_classes)
        counted = sum(p.numel() for p in model.parameters())
        assert models.n_params(config, dataset.input_shape, dataset.n_classes) == counted


@pytest.mark.parametrize(("name", "count"), EXPECTED.items())
def test_n_params_on_the_meta_device_matches_the_hand_count(name: str, count: int) -> None:
    shape = (1, 8, 8) if name == "mlp" else (3, 32, 32)
    assert models.n_params({"name": name, "hidden": [256, 256], "dropout": 0.5}, shape, 10) == count


def test_dataset_pools_are_what_the_loaders_give() -> None:
    """pool_per_class bounds data.*_per_class in the config check: it must be the smallest
    class of each split (digits: measured on its fixed split; CIFAR-10: the official counts)."""
    train, test = data.load_digits()
    digits = data.DATASETS["digits"]
    assert digits.pool_per_class == {"train": int(np.bincount(train.labels).min()),
                                     "test": int(np.bincount(test.labels).min())}
    assert train.images.shape[1] == math.prod(digits.input_shape)
    cifar = data.DATASETS["cifar10"]
    assert cifar.pool_per_class == {"train": data.CIFAR10.train_per_class,
                                    "test": data.CIFAR10.test_per_class}


def test_a_new_model_and_dataset_are_one_registration_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Registered, a model and a dataset pass validation and are planned and counted; the
    input-shape rule reads the entries (no name lists elsewhere)."""
    from lrdecay.tooling import cli

    def cnn(input_shape: tuple[int, ...], n_classes: int, **_: object) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(input_shape[0], 4, 3, padding=1),
                                   torch.nn.Flatten(),
                                   torch.nn.Linear(4 * input_shape[1] * input_shape[2], n_classes))

    monkeypatch.setitem(models.MODELS, "cnn", models.ModelSpec(cnn, (0.1, 0.01),
                                                               input_shape=(1, 12, 12)))
    monkeypatch.setitem(data.DATASETS, "blocks", data.DatasetSpec(
        lambda cfg, spec: None, (1, 12, 12), 10, {"train": 30, "test": 20}, augmentable=True))
    config = load_tiny(tmp_path, model={"name": "cnn"},
                       data={"name": "blocks", "train_per_class": 30, "augment": True})
    size = cli.study_size(config)
    assert size["n_params"] == (9 + 1) * 4 + (4 * 144 + 1) * 10
    assert size["n_train"] == 300 and models.cost("cnn") == (0.1, 0.01)
    from lrdecay.config import resources

    costs = resources.JobCosts(config, gpu=False)  # the SLURM requests follow the entries
    assert costs.threads == 1 and resources.n_params(config) == size["n_params"]
    assert resources.dataset_images(config) == (300, 200)
    with pytest.raises(lrconfig.ConfigError, match=r"model.name = 'cnn': needs inputs of shape "
                       r"\(1, 12, 12\) \(data.name: blocks\), but digits has \(1, 8, 8\)"):
        load_tiny(tmp_path, model={"name": "cnn"})
    with pytest.raises(lrconfig.ConfigError, match=r"blocks has only 30 train images"):
        load_tiny(tmp_path, model={"name": "cnn"}, data={"name": "blocks", "train_per_class": 31})
