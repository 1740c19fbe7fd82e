"""Simulators of the toy model, vectorised over replicas (rows of `w`).

Time convention (tested in tests/toy/test_simulate.py): paper time t = k * eta after k steps of
learning rate eta. Label-noise SGD with minibatch B and label-noise std sigma has gradient-noise
covariance (sigma^2 / B) * (1/n) A X X^T A on M, i.e. it is the SDE 3.7 with sigma^2 -> sigma^2 / B.

- :func:`sgd`: discrete label-noise SGD (what is actually run; everything else is a model of it).
- :func:`langevin_sde`: Eq. 3.4, dw = -grad L dt + sqrt(eta) dB, by Euler-Maruyama.
- :func:`label_noise_sde`: Eq. 3.7 with sigma(w) = (sigma / sqrt n) A(w) X (B.7), Euler-Maruyama.
- :func:`effective_ode`: Eq. 3.15 integrated on M (RK4 plus a retraction onto M).
- :func:`gradient_flow`: Eq. 3.18 by small-step gradient descent (Phase III, Theorem 3.6).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lrdecay.core.basics import ConfigError
from lrdecay.toy import model
from lrdecay.toy.instance import Instance

Recorder = Callable[[np.ndarray], dict]


class StepSizeTooLargeError(ConfigError):
    """The simulated iterates left any bounded region: the configured step size is too large.

    A ConfigError (the fix is a smaller toy.eta_*), unlike the training engine's DivergenceError
    (a network's training path whose loss became NaN)."""


def _guard(w: np.ndarray, eta: float, key: str, step: int, sigma: float | None = None) -> None:
    if not np.all(np.isfinite(w)) or np.max(np.abs(w)) > 1e6:
        if sigma is not None and np.any(sigma):  # label-noise SGD: the noise scales eta too
            largest = float(np.max(sigma))
            raise StepSizeTooLargeError(
                f"config keys {key} = {eta} and toy.sigma = {largest:.4g}: label-noise SGD "
                f"diverged at step {step} (non-finite or |w| > 1e6); each step's noise is "
                f"{key} * toy.sigma = {eta * largest:.4g} times ||A x||: lower toy.sigma or "
                f"{key}"
            )
        raise StepSizeTooLargeError(
            f"config key {key} = {eta}: the iterates diverged at step {step} "
            "(non-finite or |w| > 1e6); use a smaller step size"
        )


def basic_stats(inst: Instance) -> Recorder:
    """Per-replica train loss, test loss and ||w||."""

    def record(w: np.ndarray) -> dict:
        return {"train": inst.train_loss(w), "test": inst.test_loss(w),
                "norm": np.linalg.norm(w, axis=-1)}

    return record


def _stack(records: list[dict]) -> dict:
    return {k: np.stack([r[k] for r in records], axis=-1) for k in records[0]}


def _integrate(w0: np.ndarray, steps: int, dt: float, record_every: int, recorder: Recorder,
               step: Callable[[np.ndarray, int], None], guard: tuple,
               snapshot_steps: list[int] | tuple = ()) -> dict:
    """Run `step(w, k)` (in place) `steps` times, recording every `record_every` steps and at the
    end, with the divergence guard (`guard`: step size, its config key, and the label noise
    sigma if any); paper time of step k is k * dt.

    A diverging run overflows between two guarded records; numpy's overflow warnings are
    silenced because the guard, which runs at every record and at the last step, reports it
    with the config key to change (no non-finite value gets past it)."""
    w = np.array(w0, dtype=float, copy=True)
    records, times, snaps = [], [], {}
    wanted = set(snapshot_steps)
    with np.errstate(over="ignore", invalid="ignore"):  # once: steps number in the millions
        for k in range(steps + 1):
            if k % record_every == 0 or k == steps:
                _guard(w, *guard[:2], k, *guard[2:])
                records.append(recorder(w))
                times.append(k * dt)
            if k in wanted:
                snaps[k] = w.copy()
            if k == steps:
                break
            step(w, k)
    out = _stack(records)
    out["t"] = np.array(times)
    out["final"] = w
    if snapshot_steps:
        out["snapshots"] = snaps
    return out


def draw_minibatches(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Sample indices (with replacement) for `shape` = (steps, replicas, batch)."""
    return rng.integers(n, size=shape)


def label_noise(rng: np.random.Generator, sigma: float, shape: tuple) -> np.ndarray:
    """Label noise of variance sigma^2, one draw per sampled label."""
    return sigma * rng.standard_normal(shape)


def minibatch_gradient(w: np.ndarray, x: np.ndarray, target: np.ndarray,
                       gamma: float) -> np.ndarray:
    """Gradient (A.1) of the mean squared loss on a minibatch, per replica.

    w (R, d); x (R, B, d) the sampled inputs; target (R, B) their (noisy) labels.
    """
    rho = np.sqrt(np.sum(w * w, axis=1, keepdims=True))
    scale = rho**gamma
    res = np.matmul(x, (scale * w)[:, :, None])[:, :, 0] - target  # (R, B)
    g_alpha = np.matmul(res[:, None, :], x)[:, 0, :] / x.shape[1]  # (R, d)
    wbar = w / rho
    return scale * (g_alpha + gamma * np.sum(wbar * g_alpha, axis=1, keepdims=True) * wbar)


class GradientWorkspace:
    """Buffers for :func:`minibatch_gradient` at one shape, so a step allocates no (R, d)
    arrays: the toy runs hundreds of thousands of small steps, where numpy's per-call
    allocation (and, for thousands of replicas, the page faults of fresh arrays) cost more than
    the arithmetic. Each operation is the one :func:`minibatch_gradient` does, in the same
    order, so the results are bit-identical to it (tests/toy/test_simulate.py)."""

    def __init__(self, R: int, batch: int, d: int) -> None:
        self.a, self.wbar, self.g = (np.empty((R, d)) for _ in range(3))
        self.rho, self.dot = np.empty((R, 1)), np.empty((R, 1))
        self.res3 = np.empty((R, batch, 1))
        self.res = np.empty((R, batch))
        self.g3 = np.empty((R, 1, d)) if batch > 1 else None

    def step(self, w: np.ndarray, x: np.ndarray, target: np.ndarray, gamma: float,
             eta: float) -> None:
        """w -= eta * minibatch_gradient(w, x, target, gamma), in place."""
        a, wbar, g, rho, dot, res = self.a, self.wbar, self.g, self.rho, self.dot, self.res
        np.multiply(w, w, out=a)
        np.add.reduce(a, axis=1, keepdims=True, out=rho)
        np.sqrt(rho, out=rho)
        scale = rho**gamma
        np.multiply(scale, w, out=a)
        np.matmul(x, a[:, :, None], out=self.res3)
        np.subtract(self.res3[:, :, 0], target, out=res)
        if self.g3 is None:  # B = 1: matmul's (1 x 1) @ (1 x d) is this product, exactly
            np.multiply(res, x[:, 0, :], out=g)
        else:
            np.matmul(res[:, None, :], x, out=self.g3)
            np.divide(self.g3[:, 0, :], x.shape[1], out=g)
        np.divide(w, rho, out=wbar)
        np.multiply(wbar, g, out=a)
        np.add.reduce(a, axis=1, keepdims=True, out=dot)
        np.multiply(gamma * dot, wbar, out=a)
        np.add(g, a, out=a)
        np.multiply(scale, a, out=a)
        np.multiply(eta, a, out=a)
        np.subtract(w, a, out=w)


def sgd(inst: Instance, w0: np.ndarray, eta: float, sigma: float | np.ndarray, steps: int,
        batch: int,
        rng: np.random.Generator, record_every: int, recorder: Recorder | None = None,
        snapshot_steps: list[int] | tuple = (), key: str = "toy.eta_large") -> dict:
    """Label-noise SGD: each step draws a minibatch of `batch` samples per replica (with
    replacement), adds N(0, sigma^2) noise to their labels and takes a gradient step. `sigma`
    may be an (R, 1) array: one noise level per replica.

    Returns {"t": paper times (T,), <recorder keys>: (R, T), "snapshots": {step: (R, d)}}.
    """
    R = np.shape(w0)[0]
    Xt = inst.X.T  # (n, d)
    y = Xt @ inst.alpha_star  # (n,)
    # draw indices and label noise in blocks (one RNG call per block, not per step) and gather
    # the block's inputs and noisy labels at once: the step itself is then a few array ops
    chunk = max(16, min(512, 2**20 // (R * batch * inst.d)))
    blocks: dict = {}
    work = GradientWorkspace(R, batch, inst.d)

    def step(w: np.ndarray, k: int) -> None:
        j = k % chunk
        if j == 0:
            idx = draw_minibatches(rng, inst.n, (chunk, R, batch))
            noise = label_noise(rng, sigma, idx.shape) if np.any(sigma) else 0.0
            blocks["x"], blocks["target"] = Xt[idx], y[idx] + noise
        work.step(w, blocks["x"][j], blocks["target"][j], inst.gamma, eta)

    out = _integrate(w0, steps, eta, record_every, recorder or basic_stats(inst), step,
                     (eta, key, sigma), snapshot_steps)
    out.setdefault("snapshots", {})
    return out


def langevin_sde(inst: Instance, w0: np.ndarray, eta: float, dt: float, steps: int,
                 rng: np.random.Generator, record_every: int, recorder: Recorder) -> dict:
    """Eq. 3.4 (Phase I): dw = -grad L dt + sqrt(eta) dB, Euler-Maruyama with step dt."""

    def step(w: np.ndarray, k: int) -> None:
        w += -inst.grad(w) * dt + np.sqrt(eta * dt) * rng.standard_normal(w.shape)

    return _integrate(w0, steps, dt, record_every, recorder, step, (eta, "toy.eta_large"))


def label_noise_sde(inst: Instance, w0: np.ndarray, eta: float, sigma2: float, dt: float,
                    steps: int, rng: np.random.Generator, record_every: int,
                    recorder: Recorder | None = None) -> dict:
    """Eq. 3.7: dw = -grad L dt + sqrt(eta) (sigma / sqrt n) A(w) X dB_n, Euler-Maruyama."""
    R = np.shape(w0)[0]
    scale = np.sqrt(eta * sigma2 / inst.n * dt)

    def step(w: np.ndarray, k: int) -> None:
        noise = rng.standard_normal((R, inst.n)) @ inst.X.T  # X dB_n, (R, d)
        grad, a_noise = model.grad_train_and_A(w, inst.X, inst.alpha_star, inst.gamma, noise)
        w += -grad * dt + scale * a_noise

    return _integrate(w0, steps, dt, record_every, recorder or basic_stats(inst), step,
                      (eta, "toy.eta_large"))


def effective_ode(inst: Instance, w_m0: np.ndarray, eta: float, sigma2: float, t_end: float,
                  dt: float, record_every: int = 1) -> dict:
    """Integrate Eq. 3.15 from a point of M by RK4 with step dt, retracting onto M every step.

    Returns {"t": (T,), "w": (T, d), "norm": (T,)}.
    """
    X, g = inst.X, inst.gamma
    w = inst.retract(np.asarray(w_m0, dtype=float))
    steps = int(np.ceil(t_end / dt))

    def f(v: np.ndarray) -> np.ndarray:
        return model.effective_drift(v, X, g, eta, sigma2)

    ts, ws = [0.0], [w.copy()]
    for k in range(1, steps + 1):
        k1 = f(w)
        k2 = f(w + 0.5 * dt * k1)
        k3 = f(w + 0.5 * dt * k2)
        k4 = f(w + dt * k3)
        w = inst.retract(w + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4))
        if k % record_every == 0 or k == steps:
            ts.append(k * dt)
            ws.append(w.copy())
    W = np.array(ws)
    return {"t": np.array(ts), "w": W, "norm": np.linalg.norm(W, axis=1)}


def gradient_flow(inst: Instance, w0: np.ndarray, h: float, steps: int, record_every: int,
                  recorder: Recorder) -> dict:
    """Eq. 3.18 by gradient descent with step h (paper time t = k h)."""

    def step(w: np.ndarray, k: int) -> None:
        gradient_descent_step(inst, w, h)

    return _integrate(w0, steps, h, record_every, recorder, step, (h, "toy.eta_small"))


def gradient_descent_step(inst: Instance, w: np.ndarray, h: float) -> None:
    """One full-batch gradient step of size h, in place (the Euler step of Eq. 3.18)."""
    w -= h * inst.grad(w)
