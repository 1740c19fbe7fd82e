"""K models of one architecture trained at once (K > 1): the subpaths of a group, vmapped.

`StackedStepper` holds K parameter sets stacked along dim 0 and takes one vmapped forward/backward
per step (torch.func), which turns K kernel launches into one on a GPU. Each model keeps what it
would have alone: its weights, momentum buffers, generator (same batch order and crops) and
dropout draws (vmap's randomness="different", from the process's global RNG, so with dropout > 0
K at once and one at a time are different, equally valid samples). SGD is the exact arithmetic of
torch.optim.SGD (`sgd_update`), AdamW that of torch.optim.AdamW (`adamw_update`). It has the
interface of lrdecay.training.engine.ModuleStepper, so the run loop
(lrdecay.training.train.PathsRun) is written once for every path. Only the subpath jobs
(lrdecay.training.subpaths) use it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from lrdecay.core import io
from lrdecay.training.engine import (
    ModuleStepper,
    Trainer,
    layer_norm_columns,
    layer_slices,
    named_values,
    norm_values,
)

EVAL_IMAGES_PER_CALL = 16384  # models x images in one vmapped eval call (bounds activation memory)


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


def adamw_update(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                 state: dict[str, dict[str, torch.Tensor] | torch.Tensor], lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One step of torch.optim.AdamW (no amsgrad, not maximize) on stacked tensors, in place.

    `state`: "exp_avg" and "exp_avg_sq" (stacked like `params`) and "step", a (K,) float32 CPU
    tensor: each model's own step count, since branches taken at different epochs have taken
    different numbers of steps, so their bias corrections differ. The ops are those of AdamW's
    foreach path, over per-model views with per-model scalars, which on CPU run the
    single-tensor ops one model at a time, so each model gets exactly its update alone.
    """
    beta1, beta2 = betas
    names = list(params)
    k = params[names[0]].shape[0]
    p = [params[n][j] for n in names for j in range(k)]  # views: in-place ops reach the stack
    g = [grads[n][j] for n in names for j in range(k)]
    m = [state["exp_avg"][n][j] for n in names for j in range(k)]
    v = [state["exp_avg_sq"][n][j] for n in names for j in range(k)]
    state["step"] += 1
    steps = state["step"].tolist()
    if weight_decay != 0:
        torch._foreach_mul_(p, 1 - lr * weight_decay)  # decoupled: not through the moments
    torch._foreach_lerp_(m, g, 1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, 1 - beta2)
    step_size = [(lr / (1 - beta1**s)) * -1 for s in steps] * len(names)
    root = [(1 - beta2**s) ** 0.5 for s in steps] * len(names)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, root)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(p, m, denom, step_size)


class StackedModels:
    """Pure functions over K stacked parameter sets of one architecture, and K stacked buffer
    sets (batch norm's running mean, var and num_batches_tracked; none for the other models).

    With batch norm each model normalises by its own batch's statistics in training and by its
    own running statistics in eval mode. The running statistics are updated functionally: each
    model's buffers are cloned inside the transformed function, batch norm updates the clones
    in place (as it updates a module's buffers), and they come back as the step's new buffers
    (torch.func refuses in-place updates of tensors captured from outside a grad transform).
    """

    def __init__(self, trainer: Trainer, model: nn.Module):
        self.trainer = trainer
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.buffer_names = [name for name, _ in model.named_buffers()]
        loss_fn = trainer.loss

        def loss_of(params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
            new = {k: v.clone() for k, v in buffers.items()}
            logits = functional_call(model, {**params, **new}, (x,))
            loss = loss_fn(logits.float(), y)
            return loss, ((logits.detach().argmax(-1) == y).sum(), new)

        # Per model: gradients, loss, correct count and updated buffers; dropout masks differ
        # between models.
        self.grad_fn = vmap(grad_and_value(loss_of, has_aux=True), randomness="different")
        self.eval_fn = vmap(loss_of, in_dims=(0, 0, None, None))
        if trainer.engine["compile"]:  # one graph for the K models' forward and backward
            self.grad_fn = torch.compile(self.grad_fn)

    def train_step(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
        """Gradients, losses and correct counts of the K models on their batches x (K, b, ...),
        and their buffers after the step (batch norm's running statistics updated in train
        mode; {} for models without buffers)."""
        self.model.train()
        with self.trainer.autocast():
            grads, (loss, (hits, new)) = self.grad_fn(params, buffers, x, y)
        return grads, loss.detach(), hits, {k: v.detach() for k, v in new.items()}

    @torch.no_grad()
    def evaluate(self, params: dict, buffers: dict, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) mean loss and accuracy of each model over a full pass (eval mode: batch norm
        by each model's own running statistics)."""
        self.model.eval()
        k = next(iter(params.values())).shape[0]
        chunk = min(self.trainer.eval_batch, max(1, EVAL_IMAGES_PER_CALL // k))
        data = self.trainer.data
        loss_sum = torch.zeros(k, device=self.trainer.device)
        correct = torch.zeros(k, device=self.trainer.device, dtype=torch.long)
        for start in range(0, len(labels), chunk):
            batch = labels[start : start + chunk]
            with self.trainer.autocast():
                loss, (hits, _) = self.eval_fn(params, buffers,
                                               data.to_float(images[start : start + chunk]), batch)
            loss_sum += loss * len(batch)
            correct += hits
        return loss_sum / len(labels), correct.float() / len(labels)

    def flat(self, params: dict) -> torch.Tensor:
        """(K, n_params) in named_parameters order, as `flat_parameters` gives for one model."""
        return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in self.names], dim=1)


class StackedStepper:
    """K > 1 at once: stacked parameters and momentum buffers (or AdamW's moments and step
    counts), vmapped steps, `sgd_update` or `adamw_update`."""

    def __init__(self, trainer: Trainer, lr: float):
        self.trainer, self.lr = trainer, lr
        opt = trainer.config["optimizer"]
        self.momentum, self.weight_decay = opt["momentum"], opt["weight_decay"]
        self.adamw = opt["name"] == "adamw"
        self.betas, self.eps = tuple(opt["betas"]), opt["eps"]
        # AdamW's exp_avg, exp_avg_sq (stacked) and step ((K,)), as sgd_update's buffers
        self.adam: dict | None = None
        self.base = trainer.build_model()
        self.stacked = StackedModels(trainer, self.base)
        self.n_params = sum(p.numel() for p in self.base.parameters())
        self.layers = layer_slices([(n, p.numel()) for n, p in self.base.named_parameters()])
        self.layer_columns = layer_norm_columns(self.layers)
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] | None = None  # SGD's momentum
        self.bn: dict[str, torch.Tensor] = {}  # stacked model buffers (batch norm statistics)
        self.origin = torch.empty(0)  # (K, n_params): where each path started

    def load_initial(self, paths: list[Path | None], fix: Callable[[Path], str],
                     from_init: bool = False) -> None:
        """Stack each branch's main-path weights and momentum buffers along a new dim 0;
        distances count from them (K at once are subpaths: `from_init` is refused)."""
        if from_init:
            raise ValueError("K paths at once are subpaths, whose distances count from their "
                             "branch points; train the main path with engine.ModuleStepper")
        per_model, per_buffer, per_bn = [], [], []
        # parameters and buffers (batch norm statistics) of the freshly built model
        fresh = {k: v.detach().clone() for k, v in self.base.state_dict().items()}
        for path in paths:
            self.base.load_state_dict(fresh)
            optimizer = self.trainer.build_optimizer(self.base, self.lr)
            if path is not None:
                state = io.load_checkpoint(path, fix=fix(path), map_location=self.trainer.device)
                self.base.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            named = dict(self.base.named_parameters())
            per_model.append({k: v.detach().clone() for k, v in named.items()})
            per_bn.append({k: v.detach().clone() for k, v in self.base.named_buffers()})
            # A branch at epoch 0 has no buffer yet; zeros then give SGD's first step exactly.
            per_buffer.append({k: optimizer.state.get(v, {}) for k, v in named.items()})
        self.params = {k: torch.stack([m[k] for m in per_model]) for k in per_model[0]}
        self.bn = {k: torch.stack([m[k] for m in per_bn]) for k in per_bn[0]}
        self.origin = self.flat()
        if self.adamw:
            self.adam = self._stack_adam(per_buffer)
            return
        per_buffer = [{k: b.get("momentum_buffer", None) for k, b in per.items()}
                      for per in per_buffer]
        if self.momentum == 0:
            self.buffers = None
            return
        self.buffers = {
            k: torch.stack([b[k].detach().clone() if b[k] is not None
                            else torch.zeros_like(self.params[k][0]) for b in per_buffer])
            for k in self.params
        }

    def _stack_adam(self, per_state: list[dict[str, dict]]) -> dict:
        """Each branch's AdamW state stacked; a branch at epoch 0 has none yet, and zero
        moments with step 0 give AdamW's first step exactly."""
        def moment(name: str) -> dict[str, torch.Tensor]:
            return {k: torch.stack([b[k][name].detach().clone() if name in b[k]
                                    else torch.zeros_like(self.params[k][0]) for b in per_state])
                    for k in self.params}

        first = next(iter(self.params))
        steps = [float(b[first]["step"]) if "step" in b[first] else 0.0 for b in per_state]
        return {"exp_avg": moment("exp_avg"), "exp_avg_sq": moment("exp_avg_sq"),
                "step": torch.tensor(steps, dtype=torch.float32)}

    def state(self) -> dict:
        out = {"params": self.params, "momentum": self.buffers, "origin": self.origin}
        if self.adamw:  # only then, so SGD's resume states keep their keys
            out["adam"] = self.adam
        if self.bn:  # only with batch norm, so other models' resume states keep their keys
            out["bn"] = self.bn
        return out

    def load_state(self, state: dict) -> None:
        self.params, self.buffers = state["params"], state["momentum"]
        self.origin = state["origin"]
        self.adam = state.get("adam")
        self.bn = state.get("bn", {})

    def train_epoch(self, generators: list[torch.Generator],
                    lrs: list[float] | None = None) -> tuple:
        """One epoch for all K models; (K,) mean loss and accuracy, left on the device. `lrs`:
        each step's lr, the same for the K models (they are all as many epochs after their
        branch points); None: the constant subpath lr."""
        trainer, data = self.trainer, self.trainer.data
        n, k = len(data.train_y), len(generators)
        drawn = [data.epoch_order(g) for g in generators]  # each model's own order and crops
        order = torch.stack([o for o, _ in drawn])  # (K, n)
        draws = None if drawn[0][1] is None else torch.stack([d for _, d in drawn], 1)  # (3,K,n)
        loss_sum = torch.zeros(k, device=trainer.device)
        correct = torch.zeros(k, device=trainer.device, dtype=torch.long)
        for number, start in enumerate(range(0, n, trainer.batch_size)):
            index = order[:, start : start + trainer.batch_size]  # (K, b)
            x = data.train_batch(
                index, None if draws is None else draws[:, :, start : start + trainer.batch_size])
            grads, loss, hits, self.bn = self.stacked.train_step(self.params, self.bn, x,
                                                                 data.train_y[index])
            lr = self.lr if lrs is None else lrs[number]
            if self.adamw:
                adamw_update(self.params, grads, self.adam, lr, self.betas, self.eps,
                             self.weight_decay)
            else:
                sgd_update(self.params, grads, self.buffers, lr, self.momentum, self.weight_decay)
            loss_sum += loss * index.shape[1]  # on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def evaluate(self, running: tuple | None) -> list[dict[str, float]]:
        """Per model, its losses, accuracies and norms (engine.named_values): the one sync per
        epoch."""
        data = self.trainer.data
        test = self.stacked.evaluate(self.params, self.bn, data.test_x, data.test_y)
        if self.trainer.full_pass or running is None:
            train = self.stacked.evaluate(self.params, self.bn, data.train_x, data.train_y)
        else:
            train = running
        noise = [value for split in data.noise_splits or ()
                 for value in self.stacked.evaluate(self.params, self.bn, *split)]
        losses = torch.stack([train[0], train[1], test[0], test[1], *noise], dim=1)
        return named_values(losses, norm_values(self.flat(), self.origin, self.layers),
                            self.layer_columns, self.trainer.noise_columns)

    def flat(self) -> torch.Tensor:
        return self.stacked.flat(self.params)

    def weights(self) -> list[dict[str, torch.Tensor]]:
        """Each model's parameters and buffers (batch norm's running statistics) as the state
        dict of one model."""
        k = next(iter(self.params.values())).shape[0]
        return [{name: value[j].clone() for name, value in {**self.params, **self.bn}.items()}
                for j in range(k)]

    def keep(self, index: list[int]) -> None:
        """Drop the models not in `index` (diverged ones); the others carry on unchanged."""
        rows = torch.tensor(index, device=self.trainer.device)
        self.params = {k: v.index_select(0, rows) for k, v in self.params.items()}
        self.origin = self.origin.index_select(0, rows)
        self.bn = {k: v.index_select(0, rows) for k, v in self.bn.items()}
        if self.buffers is not None:
            self.buffers = {k: v.index_select(0, rows) for k, v in self.buffers.items()}
        if self.adam is not None:
            self.adam = {
                "exp_avg": {k: v.index_select(0, rows) for k, v in self.adam["exp_avg"].items()},
                "exp_avg_sq": {k: v.index_select(0, rows)
                               for k, v in self.adam["exp_avg_sq"].items()},
                "step": self.adam["step"].index_select(0, rows.cpu()),
            }


def make_stepper(trainer: Trainer, k: int, lr: float) -> ModuleStepper | StackedStepper:
    """The plain module for one model, stacked vmapped models for several."""
    return ModuleStepper(trainer, lr) if k == 1 else StackedStepper(trainer, lr)
