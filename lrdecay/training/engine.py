"""What trains and evaluates one model at a time: the main path, and subpaths one after another.

`Trainer` holds what every path of a run shares (data, loss, batch sizes, speed settings) and does
the arithmetic of one model: an nn.Module with torch.optim.SGD. `ModuleStepper` wraps it in the
interface the run loop (lrdecay.training.train.PathsRun) drives, so resume, RNG state, snapshots,
logging and divergence are written once for every path. K subpaths at once (vmapped, torch.func) are
lrdecay.training.stacked, with the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrdecay.core import io
from lrdecay.core.basics import ConfigError
from lrdecay.study.plan import NUMERIC_ENGINE_KEYS, TRAINING, Reads
from lrdecay.training import models
from lrdecay.training.data import DeviceData

METRIC_COLUMNS = [
    "path", "branch_epoch", "epoch", "epochs_after_decay", "lr",
    "train_loss", "train_acc", "test_loss", "test_acc", "train_metric",
    "param_norm", "distance_from_start",
]  # then one norm column per layer (layer_norm_columns), which depend on the model
EVAL_KEYS = ["train_loss", "train_acc", "test_loss", "test_acc"]
# With data.label_noise > 0 only (after METRIC_COLUMNS, so a run without it keeps its columns):
# full-pass loss and accuracy on the clean and on the flipped training examples, each against
# the label trained on (for flipped ones the wrong label: accuracy there is memorisation).
NOISE_COLUMNS = ["train_loss_clean", "train_acc_clean", "train_loss_flipped",
                 "train_acc_flipped"]
LAYER_NORM_PREFIX = "norm."


def layer_slices(named_sizes: list[tuple[str, int]]) -> dict[str, list[slice]]:
    """Layer name -> its slices of the flat parameter vector (named_parameters order): a layer's
    weight and bias count together ("features.0.weight", "features.0.bias" -> "features.0")."""
    layers: dict[str, list[slice]] = {}
    start = 0
    for name, size in named_sizes:
        layers.setdefault(name.rpartition(".")[0] or name, []).append(slice(start, start + size))
        start += size
    return layers


def layer_norm_columns(layers: dict[str, list[slice]]) -> list[str]:
    """metrics.csv's per-layer norm columns, in layer order."""
    return [LAYER_NORM_PREFIX + name for name in layers]


def norm_values(flat: torch.Tensor, origin: torch.Tensor,
                layers: dict[str, list[slice]]) -> torch.Tensor:
    """(K, 2 + n_layers): each model's parameter L2 norm, its L2 distance from `origin` (where
    its path started) and the L2 norm of each layer; flat and origin (K, n_params), left on the
    device (the caller reads them back with the losses, one sync)."""
    squares = flat.float().square()
    per_layer = [torch.stack([squares[:, s].sum(1) for s in slices]).sum(0)
                 for slices in layers.values()]
    return torch.stack([squares.sum(1).sqrt(), (flat.float() - origin.float()).norm(dim=1),
                        *[v.sqrt() for v in per_layer]], dim=1)


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
        raise ConfigError("config key device = cuda, but torch sees no CUDA device on this "
                          "machine; use device: cpu or auto, or run where a GPU is")
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
    """The settings that change a result's numbers (those of them the job reads), recorded
    beside every result."""
    return {**{key: value for key, value in config["engine"].items()
               if key in NUMERIC_ENGINE_KEYS},
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
    """(n_params,) parameters in named_parameters order, in the parameters' dtype and device (a
    new tensor: later steps do not change it); callers cast when they store (trajectory.dtype)."""
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
    """The model-independent parts of training shared by every path of a run; `reads` is what
    the job declares (lrdecay.study.plan), whose hash keys its resume states and results."""

    def __init__(self, config: dict, data: DeviceData, device: torch.device, *,
                 reads: Reads = TRAINING):
        self.config = config
        self.data = data
        self.device = device
        self.loss = loss_function(config["loss"])
        self.batch_size = config["optimizer"]["batch_size"]
        self.eval_batch = config["metrics"]["eval_batch_size"]
        self.full_pass = config["metrics"]["train_metric"] == "full_pass"
        self.engine = config["engine"]
        self.hash = reads.hash(config)
        self.settings = numeric_settings(config, device)
        self.channels_last = self.engine["channels_last"]
        self.noise_columns = [] if data.noise_splits is None else list(NOISE_COLUMNS)

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.config["seed"])
        model = models.build(self.config["model"], self.data.input_shape, self.data.n_classes)
        model = model.to(self.device)
        # Not for batch norm on CPU: with 2 threads, channels_last batch norm backward aborted
        # the process (free(): invalid next size; torch 2.14.1, resnet18 width 4).
        self.channels_last = (self.engine["channels_last"] and models.is_conv(model)
                              and not (self.device.type == "cpu"
                                       and models.has_batch_norm(model)))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # faster convs on GPU and CPU
        return model

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """optimizer.name's torch optimizer: SGD (the paper's) or AdamW (decoupled decay)."""
        opt = self.config["optimizer"]
        if opt["name"] == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(opt["betas"]),
                                     eps=opt["eps"], weight_decay=opt["weight_decay"])
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=opt["momentum"], weight_decay=opt["weight_decay"]
        )

    def autocast(self) -> torch.autocast:
        enabled = self.engine["bf16"] and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
        lrs: list[float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of SGD; returns (mean batch loss, accuracy) of the epoch, on the device.
        `lrs`: the lr of each step (lrdecay.study.schedules), None to keep the optimizer's."""
        model.train()
        n = len(self.data.train_y)
        order, draws = self.data.epoch_order(generator)  # the epoch's randomness, drawn up front
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        step = self._step_function(model, optimizer)
        for number, start in enumerate(range(0, n, self.batch_size)):
            if lrs is not None:  # warm-up or cooldown: this step's lr
                for group in optimizer.param_groups:
                    group["lr"] = lrs[number]
            index = order[start : start + self.batch_size]
            inputs = self.data.train_batch(
                index, None if draws is None else draws[:, start : start + self.batch_size]
            )
            labels = self.data.train_y[index]
            loss, hits = step(inputs, labels)
            loss_sum += loss * len(index)  # stays on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def _step_function(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
        """The forward/backward/update of one batch, as a plain closure over `model`. With
        engine.compile the model itself is compiled (once, in place), so the closure's forward and
        backward run through torch.compile; the closure is never compiled (exact eager SGD)."""

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

    def epoch_values(self, model: nn.Module, running: tuple | None) -> torch.Tensor:
        """(4 + len(noise_columns),) train_loss, train_acc, test_loss, test_acc (then the clean
        and flipped losses and accuracies, NOISE_COLUMNS), left on the device."""
        test = self.evaluate(model, self.data.test_x, self.data.test_y)
        if self.full_pass or running is None:
            train = self.evaluate(model, self.data.train_x, self.data.train_y)
        else:
            train = running
        noise = [value for split in self.data.noise_splits or ()
                 for value in self.evaluate(model, *split)]
        return torch.stack([train[0], train[1], test[0], test[1], *noise])

    @staticmethod
    def make_row(spec: PathSpec, epoch: int, values: dict[str, float], full_pass: bool,
                 lr: float | None = None) -> dict:
        """A metrics row from one model's values: the losses and accuracies (EVAL_KEYS), then
        its norms (param_norm, distance_from_start, a norm.<layer> per layer). `lr`: the lr of
        the epoch's last step where a schedule varies it (None: the path's constant lr)."""
        after = None if spec.branch_epoch is None else epoch - spec.branch_epoch
        return {
            "path": "main" if spec.branch_epoch is None else "subpath",
            "branch_epoch": spec.branch_epoch,
            "epoch": epoch,
            "epochs_after_decay": after,
            "lr": spec.lr if lr is None else lr,
            **{key: values[key] for key in EVAL_KEYS},
            "train_metric": "full_pass" if full_pass else "running",
            **{key: value for key, value in values.items() if key not in EVAL_KEYS},
        }


def named_values(losses: torch.Tensor, norms: torch.Tensor, columns: list[str],
                 noise_columns: list[str] | None = None) -> list[dict[str, float]]:
    """Per model, {column: value} from (K, 4 + len(noise_columns)) losses and
    (K, 2 + n_layers) norms: the one read back to the host per epoch."""
    names = EVAL_KEYS + (noise_columns or []) + METRIC_COLUMNS[-2:] + columns
    return [dict(zip(names, row, strict=True))
            for row in torch.cat([losses, norms.to(losses.dtype)], dim=1).tolist()]


class Stepper(Protocol):
    """What the run loop drives for K paths at once: `ModuleStepper` (K = 1) or
    lrdecay.training.stacked.StackedStepper (K > 1)."""

    n_params: int
    layer_columns: list[str]

    def load_initial(self, paths: list[Path | None], fix: Callable[[Path], str],
                     from_init: bool = False) -> None: ...
    def state(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...
    def train_epoch(self, generators: list[torch.Generator],
                    lrs: list[float] | None = None) -> tuple: ...
    def evaluate(self, running: tuple | None) -> list[dict[str, float]]: ...
    def flat(self) -> torch.Tensor: ...
    def weights(self) -> list[dict[str, torch.Tensor]]: ...
    def keep(self, index: list[int]) -> None: ...


class ModuleStepper:
    """K = 1: one nn.Module trained by torch.optim.SGD. Its state holds "model" and "optimizer",
    the keys a later segment or a subpath loads from the main path's checkpoints, and "origin",
    the flat parameters its path started from (distance_from_start)."""

    def __init__(self, trainer: Trainer, lr: float):
        self.trainer, self.lr = trainer, lr
        self.model = trainer.build_model()
        self.optimizer = trainer.build_optimizer(self.model, lr)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.layers = layer_slices([(n, p.numel()) for n, p in self.model.named_parameters()])
        self.layer_columns = layer_norm_columns(self.layers)
        self.origin = self.flat()

    def load_initial(self, paths: list[Path | None], fix: Callable[[Path], str],
                     from_init: bool = False) -> None:
        """Start from a saved main-path state (None: the freshly initialised model). Distances
        count from the loaded parameters (a subpath's branch point), or with `from_init` from
        the freshly initialised model (a later segment of the main path)."""
        (path,) = paths
        if path is not None:
            state = io.load_checkpoint(path, fix=fix(path), map_location=self.trainer.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        if not from_init:
            self.origin = self.flat()

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "origin": self.origin}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.origin = state["origin"]

    def train_epoch(self, generators: list[torch.Generator],
                    lrs: list[float] | None = None) -> tuple:
        (generator,) = generators
        return self.trainer.train_epoch(self.model, self.optimizer, generator, lrs)

    def evaluate(self, running: tuple | None) -> list[dict[str, float]]:
        losses = self.trainer.epoch_values(self.model, running)[None]
        norms = norm_values(self.flat(), self.origin, self.layers)
        return named_values(losses, norms, self.layer_columns, self.trainer.noise_columns)

    def flat(self) -> torch.Tensor:
        return flat_parameters(self.model)[None]

    def weights(self) -> list[dict[str, torch.Tensor]]:
        """[the model's state dict]: what a model loads to be this path
        (lrdecay.analysis.sharpness)."""
        return [self.model.state_dict()]

    def keep(self, index: list[int]) -> None:
        """Nothing to drop from a single model (a diverged one ends the run)."""


def single_stepper(trainer: Trainer, k: int, lr: float) -> ModuleStepper:
    """The engine of the main path: one model (K paths at once:
    lrdecay.training.stacked.make_stepper)."""
    if k != 1:
        raise ValueError(f"{k} paths at once need lrdecay.training.stacked.make_stepper, not one "
                         f"module")
    return ModuleStepper(trainer, lr)
