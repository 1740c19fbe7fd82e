"""The training engine's pieces: batched augmentation, exact SGD, loss, compile, one segment.

(The helpers the engine tests share -- tiny configs, a fake CIFAR set, a driver that runs every
training job of a config in order, output comparison -- live in tests/conftest.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.training import data
from lrdecay.training.engine import loss_function
from lrdecay.training.stacked import sgd_update
from tests.conftest import engine_config, fake_cifar, outputs, train_all


def test_crop_flip_matches_per_image_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=gen)
    padded = F.pad(images, (4, 4, 4, 4))
    draws = data.draw_crop_flip(12, gen, torch.device("cpu"))
    index = torch.randperm(12, generator=gen)
    got = data.crop_flip(padded, index, *draws)
    for i, (j, dy, dx, flip) in enumerate(zip(index, *draws, strict=True)):
        want = padded[j, :, dy : dy + 8, dx : dx + 8]
        if flip:
            want = want.flip(-1)
        assert torch.equal(got[i], want)
    assert set(draws[0].tolist()) <= set(range(9)) and set(draws[2].tolist()) <= {0, 1}


def test_epoch_order_comes_from_the_generator_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    fake_cifar(path)
    device_data = data.DeviceData(path, torch.device("cpu"), normalize=True, augment=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(123 + len(runs))  # the global RNG must not matter
        order, draws = device_data.epoch_order(torch.Generator().manual_seed(5))
        runs.append((order, draws))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    order, draws = runs[0]
    batch = device_data.train_batch(order[:8].reshape(2, 4), draws[:, :8].reshape(3, 2, 4))
    assert batch.shape == (2, 4, 3, 32, 32) and batch.dtype == torch.float32


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 5e-4)])
def test_sgd_update_is_torch_sgd_exactly(momentum: float, weight_decay: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(7, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum,
                          weight_decay=weight_decay)
    params = {k: v.detach().clone()[None] for k, v in model.named_parameters()}
    buffers = {k: torch.zeros_like(v) for k, v in params.items()} if momentum else None
    for _ in range(4):
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        for k, p in model.named_parameters():
            p.grad = grads[k][0].clone()
        opt.step()
        sgd_update(params, grads, buffers, 0.1, momentum, weight_decay)
    for k, p in model.named_parameters():
        assert torch.equal(params[k][0], p.detach())


def test_mse_is_half_sum_of_squares_against_one_hot() -> None:
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    want = 0.5 * (logits - F.one_hot(labels, 4).float()).pow(2).sum(-1).mean()
    assert torch.equal(loss_function("mse")(logits, labels), want)


def test_main_segment_writes_metrics_snapshots_and_branch_states(tmp_path: Path) -> None:
    config = engine_config(tmp_path)
    train_all(config, groups=False)
    plan = lrconfig.Plan(config)
    segment = plan.segment_dir(6)
    metrics = pd.read_csv(segment / "metrics.csv")
    assert metrics["epoch"].tolist() == [4, 5, 6] and metrics["lr"].eq(0.1).all()
    snaps, meta = io.load_array(segment / "snapshots.npy", fix="rerun")
    assert snaps.shape == (3, 64 * 32 + 32 + 32 * 10 + 10) and meta["epochs"] == [4, 5, 6]
    assert (plan.segment_dir(3) / "branch-0002.pt").exists()
    assert not (plan.resume_dir / "main_segment-0006").exists()  # resume state cleaned up
    record = io.verify(segment / "snapshots.npy", fix="rerun")
    # the main path's record holds its numeric settings, and no subpath-only one (issue 22)
    assert "tf32" in record["settings"] and "batched_subpaths" not in record["settings"]


@pytest.mark.slow  # about a minute of inductor compilation on 2 cores
def test_compile_option_trains_the_same_model(tmp_path: Path) -> None:
    pytest.importorskip("torch._inductor")
    eager = engine_config(tmp_path / "eager", schedule={"main_epochs": 2, "first_branch_epoch": 1,
                                                        "branch_interval": 1,
                                                        "last_branch_epoch": 2,
                                                        "segment_epochs": 2})
    compiled = engine_config(tmp_path / "compiled", schedule=eager["schedule"],
                             engine={"compile": True})
    for config in (eager, compiled):
        train_all(config, groups=False)
    a, b = outputs(eager), outputs(compiled)
    key = "main/segment-0002/snapshots.npy"
    np.testing.assert_allclose(np.frombuffer(b[key], np.float32),
                               np.frombuffer(a[key], np.float32), rtol=1e-4, atol=1e-5)
