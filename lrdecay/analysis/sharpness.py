"""Sharpness: the largest eigenvalue of the training loss's Hessian, by Lanczos on Hessian-vector
products, at every branch point of the main path and at the end of every subpath.

The flat-minima explanation of late decay (the paper argues against it, Section 2.3) says a later
decay ends at a flatter point; this measures it. The loss is the training loss in eval mode (no
augmentation or dropout; batch norm, resnet18's, by the running statistics saved with the point's
checkpoint, so the loss is a fixed function of the parameters) on a fixed seeded subset of the
training set (`sharpness.samples` images, chosen by `sharpness.seed`, the same subset at every
point), in float32. Hessian-vector products are double backward passes (Pearlmutter's trick): one
costs about two forward-backward passes over the subset. Lanczos with full reorthogonalisation
stops when the top Ritz pair's residual ||H y - theta y|| is at most `sharpness.tol` * |theta|
(then an eigenvalue of H lies within that distance of theta) or after `sharpness.max_steps`
products.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrdecay.core import io
from lrdecay.study.plan import Plan
from lrdecay.training.data import DeviceData, subset
from lrdecay.training.engine import Trainer, configure_backend, resolve_device

log = logging.getLogger(__name__)

Hvp = Callable[[torch.Tensor], torch.Tensor]  # (n_params,) -> (n_params,)


@dataclass
class TopEigenvalue:
    """The top Ritz value of a Lanczos run and how far it can be from an eigenvalue."""

    value: float
    residual: float  # ||H y - value y||: an eigenvalue of H lies within this of `value`
    steps: int  # Hessian-vector products
    converged: bool  # residual <= tol * |value| (or an invariant subspace was found)


def lanczos_top(hvp: Hvp, n: int, tol: float, max_steps: int, seed: int,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                ) -> TopEigenvalue:
    """Largest eigenvalue of the symmetric operator `hvp` of size n (Lanczos, full
    reorthogonalisation, seeded start vector)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    basis = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    for step in range(1, min(max_steps, n) + 1):
        w = hvp(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stacked = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan-Parlett): w orthogonal to every q
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        values, vectors = np.linalg.eigh(tri)
        value, residual = float(values[-1]), beta * abs(float(vectors[-1, -1]))
        scale = max(abs(value), float(np.abs(values).max()))
        if residual <= tol * abs(value) or beta <= 1e-10 * max(scale, 1e-30) or step == n:
            return TopEigenvalue(value, residual, step, True)
        betas.append(beta)
        basis.append(w / beta)
    return TopEigenvalue(value, residual, step, False)


def loss_hvp(model: nn.Module, loss_fn: Callable, images: torch.Tensor, labels: torch.Tensor,
             chunk: int) -> tuple[torch.Tensor, Hvp]:
    """The model's flat parameters and v -> H v, H the Hessian of the mean loss over
    (images, labels) with respect to them, summed chunk by chunk (eval mode). Double backward
    through autograd (Pearlmutter): the gradient with its graph, then the gradient of <g, v>;
    the parameters' .grad is never touched."""
    model.eval()
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sizes, n = [p.numel() for p in params], len(labels)
    parts = [(images[s : s + chunk], labels[s : s + chunk]) for s in range(0, n, chunk)]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        vs = [part.view_as(p) for part, p in zip(torch.split(v, sizes), params, strict=True)]
        out = torch.zeros_like(flat)
        for x, y in parts:
            loss = loss_fn(model(x).float(), y) * (len(y) / n)
            g = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(g, params, grad_outputs=vs)
            out += torch.cat([h.reshape(-1) for h in hv])
        return out

    return flat, hvp


def points(plan: Plan, sub_epochs: int) -> list[tuple[str, int, int, Path]]:
    """(point, branch epoch, epoch, weights file): each branch point on the main path, then
    each subpath's end."""
    found = [("branch", b, b, plan.branch_state(b)) for b in plan.branch_epochs]
    for group, branches in enumerate(plan.subpath_groups):
        found += [("subpath_end", b, b + sub_epochs, plan.subpath_weights(group, b))
                  for b in branches]
    return found


def evaluate(config: dict, data_path: str | Path, out_path: str | Path, device_name: str,
             threads: int | None = None) -> pd.DataFrame:
    """sharpness.csv of one seed: the top Hessian eigenvalue at every point (lrdecay.study.plan)."""
    plan, cfg = Plan(config), config["sharpness"]
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    data = DeviceData(data_path, device, config["data"]["normalize"], augment=False)
    trainer = Trainer(config, data, device)
    model = trainer.build_model()
    index = subset(len(data.train_y), cfg["samples"], cfg["seed"]).to(device)
    images, labels = data.to_float(data.train_x[index]), data.train_y[index]
    rows, started = [], time.monotonic()
    todo = points(plan, config["schedule"]["subpath_epochs"])
    for i, (point, branch, epoch, path) in enumerate(todo, start=1):
        state = io.load_checkpoint(path, fix=io.rerun_fix(path), map_location=device)
        model.load_state_dict(state["model"])
        t0 = time.monotonic()
        _, hvp = loss_hvp(model, trainer.loss, images, labels, trainer.eval_batch)
        top = lanczos_top(hvp, sum(p.numel() for p in model.parameters()), cfg["tol"],
                          cfg["max_steps"], cfg["seed"], device)
        rows.append({"point": point, "branch_epoch": branch, "epoch": epoch,
                     "top_eigenvalue": top.value, "residual": top.residual,
                     "lanczos_steps": top.steps, "converged": top.converged,
                     "samples": len(labels)})
        if not top.converged:
            log.warning("%s at epoch %d: Lanczos stopped after %d steps with residual %.3g "
                        "(tol %.3g x |%.4g|); raise sharpness.max_steps", point, epoch,
                        top.steps, top.residual, cfg["tol"], top.value)
        log.info("sharpness %d/%d: %s %d, epoch %d: top eigenvalue %.5g (%d steps, %.1fs)", i,
                 len(todo), point, branch, epoch, top.value, top.steps, time.monotonic() - t0)
    frame = pd.DataFrame(rows)
    io.write_csv(out_path, frame)
    log.info("sharpness: %d points in %.1fs", len(rows), time.monotonic() - started)
    return frame
