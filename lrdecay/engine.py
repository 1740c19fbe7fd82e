"""What trains and evaluates K models of one architecture at once (K = 1 for the main path).

Two steppers do the arithmetic behind one interface, so the run loop in lrdecay.train (resume,
RNG state, snapshots, logging, divergence) is written once for every path:

- `ModuleStepper`, K = 1: an nn.Module with torch.optim.SGD (the main path; subpaths trained one
  at a time).
- `StackedStepper`, K > 1: K parameter sets stacked along dim 0, one vmapped forward/backward per
  step (torch.func), which turns K kernel launches into one on a GPU. Each model keeps what it
  would have alone: its weights, momentum buffers, generator (same batch order and crops) and
  dropout draws (vmap's randomness="different", from the process's global RNG, so with dropout > 0
  K at once and one at a time are different, equally valid samples). SGD is the exact arithmetic
  of torch.optim.SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from lrdecay import io, models
from lrdecay.config import NUMERIC_ENGINE_KEYS, training_hash
from lrdecay.data import DeviceData

METRIC_COLUMNS = [
    "path", "branch_epoch", "epoch", "epochs_after_decay", "lr",
    "train_loss", "train_acc", "test_loss", "test_acc", "train_metric",
]
EVAL_IMAGES_PER_CALL = 16384  # models x images in one vmapped eval call (bounds activation memory)


class DivergenceError(RuntimeError):
    """A path's loss became NaN or infinite."""


@dataclass
class PathSpec:
    """One training path: the main path or the subpath branching at `branch_epoch`."""

    name: str  # "main" or "branch-0200"
    branch_epoch: int | None
    lr: float

    @property
    def seed_offset(self) -> int:
        return 0 if self.branch_epoch is None else 1_000_003 + self.branch_epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device: cuda, but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


def configure_backend(engine: dict, device: torch.device, threads: int | None) -> None:
    """Apply the engine's speed settings; each is a no-op where it does not apply."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = engine["tf32"]
        torch.backends.cudnn.allow_tf32 = engine["tf32"]
        torch.backends.cudnn.benchmark = engine["cudnn_benchmark"]


def numeric_settings(config: dict, device: torch.device) -> dict:
    """The settings that change a result's numbers, recorded beside every result."""
    return {**{key: config["engine"][key] for key in NUMERIC_ENGINE_KEYS},
            "device": device.type, "torch": torch.__version__}


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch-mean loss; 'mse' is the authors' 0.5 * sum of squares against one-hot labels."""
    if name == "cross_entropy":
        return F.cross_entropy

    def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(logits.shape[-1], device=logits.device)
        target = (labels[..., None] == classes).to(logits.dtype)  # one-hot, vmap-safe (no .max())
        return 0.5 * (logits - target).pow(2).sum(-1).mean()

    return mse


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """(n_params,) float32 copy of the parameters in named_parameters order."""
    # reshape, not view: channels_last conv weights are not contiguous in NCHW order.
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def diverged(row: dict) -> bool:
    return not all(np.isfinite([row["train_loss"], row["test_loss"]]))


def divergence_message(spec: PathSpec, epoch: int, row: dict, kept: Path) -> str:
    """What diverged, when, at which learning rate, and what to change."""
    return (
        f"{spec.name} diverged at epoch {epoch} (lr {spec.lr}): train loss "
        f"{row['train_loss']}, test loss {row['test_loss']}. Lower the learning rate "
        "(optimizer.main_lr / optimizer.subpath_lr) or use the mse/cross_entropy loss "
        f"that suits the model. Epochs before {epoch} are kept in {kept}."
    )


class Trainer:
    """The model-independent parts of training shared by every path of a run."""

    def __init__(self, config: dict, data: DeviceData, device: torch.device):
        self.config = config
        self.data = data
        self.device = device
        self.loss = loss_function(config["loss"])
        self.batch_size = config["optimizer"]["batch_size"]
        self.eval_batch = config["metrics"]["eval_batch_size"]
        self.full_pass = config["metrics"]["train_metric"] == "full_pass"
        self.engine = config["engine"]
        self.hash = training_hash(config)
        self.settings = numeric_settings(config, device)
        self.channels_last = self.engine["channels_last"]

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.config["seed"])
        model = models.build(self.config["model"], self.data.input_shape, self.data.n_classes)
        model = model.to(self.device)
        if self.engine["channels_last"] and models.is_conv(model):
            model = model.to(memory_format=torch.channels_last)  # faster convs on GPU and CPU
        return model

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        opt = self.config["optimizer"]
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=opt["momentum"], weight_decay=opt["weight_decay"]
        )

    def autocast(self) -> torch.autocast:
        enabled = self.engine["bf16"] and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of SGD; returns (mean batch loss, accuracy) of the epoch, on the device."""
        model.train()
        n = len(self.data.train_y)
        order, draws = self.data.epoch_order(generator)  # the epoch's randomness, drawn up front
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        step = self._compiled_step(model, optimizer)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            inputs = self.data.train_batch(
                index, None if draws is None else draws[:, start : start + self.batch_size]
            )
            labels = self.data.train_y[index]
            loss, hits = step(inputs, labels)
            loss_sum += loss * len(index)  # stays on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def _compiled_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
        """The forward/backward/update of one batch, through torch.compile if engine.compile."""

        def step(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits = model(inputs)
                loss = self.loss(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach(), (logits.detach().argmax(-1) == labels).sum()

        if self.engine["compile"] and not getattr(model, "_lrdecay_compiled", False):
            # Compiles forward+backward of the model; optimizer.step runs eagerly (exact SGD).
            model.compile()
            model._lrdecay_compiled = True
        return step

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy of a full pass in eval mode (no augmentation)."""
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(labels), self.eval_batch):
            batch_labels = labels[start : start + self.eval_batch]
            with self.autocast():
                logits = model(self.data.to_float(images[start : start + self.eval_batch]))
            loss_sum += self.loss(logits.float(), batch_labels) * len(batch_labels)
            correct += (logits.argmax(-1) == batch_labels).sum()
        return loss_sum / len(labels), correct.float() / len(labels)

    def epoch_values(self, model: nn.Module, running: tuple | None) -> list[float]:
        """[train_loss, train_acc, test_loss, test_acc], read back to the host (one sync)."""
        test = self.evaluate(model, self.data.test_x, self.data.test_y)
        if self.full_pass or running is None:
            train = self.evaluate(model, self.data.train_x, self.data.train_y)
        else:
            train = running
        return torch.stack([train[0], train[1], test[0], test[1]]).tolist()

    @staticmethod
    def make_row(spec: PathSpec, epoch: int, values: list[float], full_pass: bool) -> dict:
        """A metrics row from [train_loss, train_acc, test_loss, test_acc]."""
        after = None if spec.branch_epoch is None else epoch - spec.branch_epoch
        return {
            "path": "main" if spec.branch_epoch is None else "subpath",
            "branch_epoch": spec.branch_epoch,
            "epoch": epoch,
            "epochs_after_decay": after,
            "lr": spec.lr,
            "train_loss": values[0],
            "train_acc": values[1],
            "test_loss": values[2],
            "test_acc": values[3],
            "train_metric": "full_pass" if full_pass else "running",
        }


def sgd_update(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
               buffers: dict[str, torch.Tensor] | None, lr: float, momentum: float,
               weight_decay: float) -> None:
    """One step of torch.optim.SGD (dampening 0, no Nesterov) on stacked tensors, in place.

    Same operations, in the same order, as SGD's single-tensor path, so each model's update is the
    one it would get alone; foreach ops make it a handful of kernels for all layers and models.
    """
    names = list(params)
    p = [params[k] for k in names]
    d = [grads[k] for k in names]
    if weight_decay != 0:
        d = torch._foreach_add(d, p, alpha=weight_decay)
    if momentum != 0:
        assert buffers is not None
        b = [buffers[k] for k in names]
        torch._foreach_mul_(b, momentum)
        torch._foreach_add_(b, d)
        d = b
    torch._foreach_add_(p, d, alpha=-lr)


class StackedModels:
    """Pure functions over K stacked parameter sets of one architecture."""

    def __init__(self, trainer: Trainer, model: nn.Module):
        self.trainer = trainer
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.buffers = dict(model.named_buffers())  # shared, not stacked (the models have none)
        loss_fn = trainer.loss

        def loss_of(params: dict, x: torch.Tensor, y: torch.Tensor):
            logits = functional_call(model, {**params, **self.buffers}, (x,))
            loss = loss_fn(logits.float(), y)
            return loss, (logits.detach().argmax(-1) == y).sum()

        # Per model: gradients, loss and correct count; dropout masks differ between models.
        self.grad_fn = vmap(grad_and_value(loss_of, has_aux=True), randomness="different")
        self.eval_fn = vmap(loss_of, in_dims=(0, None, None))
        if trainer.engine["compile"]:  # one graph for the K models' forward and backward
            self.grad_fn = torch.compile(self.grad_fn)

    def train_step(self, params: dict, x: torch.Tensor, y: torch.Tensor):
        self.model.train()
        with self.trainer.autocast():
            grads, (loss, hits) = self.grad_fn(params, x, y)
        return grads, loss.detach(), hits

    @torch.no_grad()
    def evaluate(self, params: dict, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) mean loss and accuracy of each model over a full pass (eval mode)."""
        self.model.eval()
        k = next(iter(params.values())).shape[0]
        chunk = min(self.trainer.eval_batch, max(1, EVAL_IMAGES_PER_CALL // k))
        data = self.trainer.data
        loss_sum = torch.zeros(k, device=self.trainer.device)
        correct = torch.zeros(k, device=self.trainer.device, dtype=torch.long)
        for start in range(0, len(labels), chunk):
            batch = labels[start : start + chunk]
            with self.trainer.autocast():
                loss, hits = self.eval_fn(params, data.to_float(images[start : start + chunk]),
                                          batch)
            loss_sum += loss * len(batch)
            correct += hits
        return loss_sum / len(labels), correct.float() / len(labels)

    def flat(self, params: dict) -> torch.Tensor:
        """(K, n_params) in named_parameters order, as `flat_parameters` gives for one model."""
        return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in self.names], dim=1)


class ModuleStepper:
    """K = 1: one nn.Module trained by torch.optim.SGD. Its state holds "model" and "optimizer",
    the keys a later segment or a subpath loads from the main path's checkpoints."""

    def __init__(self, trainer: Trainer, lr: float):
        self.trainer, self.lr = trainer, lr
        self.model = trainer.build_model()
        self.optimizer = trainer.build_optimizer(self.model, lr)
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def load_initial(self, paths: list[Path | None], fix: Callable[[Path], str]) -> None:
        """Start from a saved main-path state (None: the freshly initialised model)."""
        (path,) = paths
        if path is not None:
            state = io.load_checkpoint(path, fix=fix(path), map_location=self.trainer.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def train_epoch(self, generators: list[torch.Generator]) -> tuple:
        (generator,) = generators
        return self.trainer.train_epoch(self.model, self.optimizer, generator)

    def evaluate(self, running: tuple | None) -> list[list[float]]:
        return [self.trainer.epoch_values(self.model, running)]

    def flat(self) -> torch.Tensor:
        return flat_parameters(self.model)[None]

    def keep(self, index: list[int]) -> None:
        """Nothing to drop from a single model (a diverged one ends the run)."""


class StackedStepper:
    """K > 1 at once: stacked parameters and momentum buffers, vmapped steps, `sgd_update`."""

    def __init__(self, trainer: Trainer, lr: float):
        self.trainer, self.lr = trainer, lr
        opt = trainer.config["optimizer"]
        self.momentum, self.weight_decay = opt["momentum"], opt["weight_decay"]
        self.base = trainer.build_model()
        self.stacked = StackedModels(trainer, self.base)
        self.n_params = sum(p.numel() for p in self.base.parameters())
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] | None = None

    def load_initial(self, paths: list[Path | None], fix: Callable[[Path], str]) -> None:
        """Stack each branch's main-path weights and momentum buffers along a new dim 0."""
        per_model, per_buffer = [], []
        fresh = {k: v.detach().clone() for k, v in self.base.named_parameters()}
        for path in paths:
            self.base.load_state_dict({**self.base.state_dict(), **fresh})
            optimizer = self.trainer.build_optimizer(self.base, self.lr)
            if path is not None:
                state = io.load_checkpoint(path, fix=fix(path), map_location=self.trainer.device)
                self.base.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            named = dict(self.base.named_parameters())
            per_model.append({k: v.detach().clone() for k, v in named.items()})
            # A branch at epoch 0 has no buffer yet; zeros then give SGD's first step exactly.
            per_buffer.append({
                k: optimizer.state.get(v, {}).get("momentum_buffer", None)
                for k, v in named.items()
            })
        self.params = {k: torch.stack([m[k] for m in per_model]) for k in per_model[0]}
        if self.momentum == 0:
            self.buffers = None
            return
        self.buffers = {
            k: torch.stack([b[k].detach().clone() if b[k] is not None
                            else torch.zeros_like(self.params[k][0]) for b in per_buffer])
            for k in self.params
        }

    def state(self) -> dict:
        return {"params": self.params, "momentum": self.buffers}

    def load_state(self, state: dict) -> None:
        self.params, self.buffers = state["params"], state["momentum"]

    def train_epoch(self, generators: list[torch.Generator]) -> tuple:
        """One epoch for all K models; (K,) mean loss and accuracy, left on the device."""
        trainer, data = self.trainer, self.trainer.data
        n, k = len(data.train_y), len(generators)
        drawn = [data.epoch_order(g) for g in generators]  # each model's own order and crops
        order = torch.stack([o for o, _ in drawn])  # (K, n)
        draws = None if drawn[0][1] is None else torch.stack([d for _, d in drawn], 1)  # (3,K,n)
        loss_sum = torch.zeros(k, device=trainer.device)
        correct = torch.zeros(k, device=trainer.device, dtype=torch.long)
        for start in range(0, n, trainer.batch_size):
            index = order[:, start : start + trainer.batch_size]  # (K, b)
            x = data.train_batch(
                index, None if draws is None else draws[:, :, start : start + trainer.batch_size])
            grads, loss, hits = self.stacked.train_step(self.params, x, data.train_y[index])
            sgd_update(self.params, grads, self.buffers, self.lr, self.momentum,
                       self.weight_decay)
            loss_sum += loss * index.shape[1]  # on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def evaluate(self, running: tuple | None) -> list[list[float]]:
        """[[train_loss, train_acc, test_loss, test_acc] per model]: the one sync per epoch."""
        data = self.trainer.data
        test = self.stacked.evaluate(self.params, data.test_x, data.test_y)
        if self.trainer.full_pass or running is None:
            train = self.stacked.evaluate(self.params, data.train_x, data.train_y)
        else:
            train = running
        return torch.stack([train[0], train[1], test[0], test[1]], dim=1).tolist()

    def flat(self) -> torch.Tensor:
        return self.stacked.flat(self.params)

    def keep(self, index: list[int]) -> None:
        """Drop the models not in `index` (diverged ones); the others carry on unchanged."""
        rows = torch.tensor(index, device=self.trainer.device)
        self.params = {k: v.index_select(0, rows) for k, v in self.params.items()}
        if self.buffers is not None:
            self.buffers = {k: v.index_select(0, rows) for k, v in self.buffers.items()}


def make_stepper(trainer: Trainer, k: int, lr: float) -> ModuleStepper | StackedStepper:
    """The plain module for one model, stacked vmapped models for several."""
    return ModuleStepper(trainer, lr) if k == 1 else StackedStepper(trainer, lr)
