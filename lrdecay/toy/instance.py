"""A problem instance of the toy model and its closed forms (Section 3.1, Prop. B.3, Lemma B.4).

An :class:`Instance` holds everything needed to recompute any result (X, w*, gamma and the
simulation settings); it is saved as .npz beside every result, with a JSON sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lrdecay.core.basics import ConfigError
from lrdecay.core.io import atomic_path
from lrdecay.toy import model

# Figure 3 of the paper: d = 2, n = 1, w* = (-1, 0.5), X = (0.15, -0.7), gamma = 2.
FIG3_W_STAR = np.array([-1.0, 0.5])
FIG3_X = np.array([[0.15], [-0.7]])
FIG3_GAMMA = 2.0


@dataclass(frozen=True)
class Instance:
    """Data X (d, n), ground truth w* (d,), exponent gamma, and the settings that produced them."""

    X: np.ndarray
    w_star: np.ndarray
    gamma: float
    settings: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return self.X.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[1]

    @cached_property
    def alpha_star(self) -> np.ndarray:
        return model.alpha(self.w_star, self.gamma)

    @cached_property
    def proj_X(self) -> np.ndarray:
        """P_X = X (X^T X)^{-1} X^T (d, d)."""
        return self.X @ np.linalg.solve(self.X.T @ self.X, self.X.T)

    @cached_property
    def perp_basis(self) -> np.ndarray:
        """Orthonormal basis of X_perp (d, d - n)."""
        q, _ = np.linalg.qr(self.X, mode="complete")
        return q[:, self.n :]

    @cached_property
    def alpha_star_X(self) -> np.ndarray:
        """alpha*_X = P_X alpha*."""
        return self.proj_X @ self.alpha_star

    @cached_property
    def alpha_star_perp(self) -> np.ndarray:
        return self.alpha_star - self.alpha_star_X

    @cached_property
    def w_dagger(self) -> np.ndarray:
        """Lemma B.4: w_dagger = ||alpha*_X||^(-gamma/(1+gamma)) alpha*_X = w(alpha*_X)."""
        return model.w_of_alpha(self.alpha_star_X, self.gamma)

    @cached_property
    def norm_dagger(self) -> float:
        """||w_dagger|| = ||alpha*_X||^(1/(1+gamma))."""
        return float(np.linalg.norm(self.alpha_star_X) ** (1.0 / (1.0 + self.gamma)))

    @cached_property
    def test_loss_dagger(self) -> float:
        """Test loss at w_dagger = (1/2)||P_{X_perp} alpha*||^2."""
        return 0.5 * float(self.alpha_star_perp @ self.alpha_star_perp)

    @cached_property
    def C_dagger(self) -> float:
        """C(w_dagger), which is also the minimum of C over M (C on M depends on wbar only through
        X^T wbar = cos * X^T abar*_X, largest at w_dagger)."""
        return float(model.curvature_C(self.w_dagger, self.X, self.gamma))

    @cached_property
    def numerical_rank(self) -> float:
        """r(X) = ||X||_F / ||X|| (Remark 3.5)."""
        return float(np.linalg.norm(self.X) / np.linalg.norm(self.X, 2))

    def train_loss(self, w: np.ndarray) -> np.ndarray:
        return model.train_loss(w, self.X, self.alpha_star, self.gamma)

    def test_loss(self, w: np.ndarray) -> np.ndarray:
        return model.test_loss(w, self.alpha_star, self.gamma)

    def grad(self, w: np.ndarray) -> np.ndarray:
        return model.grad_train(w, self.X, self.alpha_star, self.gamma)

    def manifold_point(self, rho: float, r_perp: np.ndarray) -> np.ndarray:
        """Proposition B.3: the point of M of norm rho >= ||w_dagger|| and X_perp direction r_perp.

        w = lambda alpha*_X + sqrt(rho^2 - lambda^2 ||alpha*_X||^2) rbar, lambda = rho^(-gamma).
        """
        if rho < self.norm_dagger * (1 - 1e-12):
            raise ValueError(f"no point of M has norm {rho} < ||w_dagger|| = {self.norm_dagger}")
        r = r_perp - self.proj_X @ r_perp
        r = r / np.linalg.norm(r)
        lam = rho ** (-self.gamma)
        perp2 = max(rho**2 - lam**2 * float(self.alpha_star_X @ self.alpha_star_X), 0.0)
        return lam * self.alpha_star_X + np.sqrt(perp2) * r

    def retract(self, w: np.ndarray, iters: int = 20, tol: float = 1e-14) -> np.ndarray:
        """Move `w` (d,) onto M along the normal space A(w)X by Gauss-Newton steps."""
        w = np.array(w, dtype=float)
        for _ in range(iters):
            res = self.X.T @ (model.alpha(w, self.gamma) - self.alpha_star)
            if np.linalg.norm(res) <= tol * (1 + np.linalg.norm(self.X.T @ self.alpha_star)):
                break
            AX = model.A_matrix(w, self.gamma) @ self.X
            w = w - AX @ np.linalg.solve(AX.T @ AX, res)  # min-norm Gauss-Newton step
        return w

    def distance_to_M_residual(self, w: np.ndarray) -> np.ndarray:
        """||X^T(alpha - alpha*)||: zero exactly on M."""
        return np.linalg.norm((model.alpha(w, self.gamma) - self.alpha_star) @ self.X, axis=-1)

    def to_dict(self) -> dict:
        return {"d": self.d, "n": self.n, "gamma": self.gamma, "settings": self.settings,
                "norm_dagger": self.norm_dagger, "test_loss_dagger": self.test_loss_dagger,
                "C_dagger": self.C_dagger, "numerical_rank": self.numerical_rank}

    def save(self, path: str | Path) -> None:
        """Write X, w*, gamma (and the settings as JSON text) to .npz, atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, X=self.X, w_star=self.w_star, gamma=self.gamma,
                         settings=json.dumps(self.settings, sort_keys=True, default=str))


def load_instance(path: str | Path) -> Instance:
    with np.load(path) as data:
        return Instance(X=data["X"], w_star=data["w_star"], gamma=float(data["gamma"]),
                        settings=json.loads(str(data["settings"])))


def make_instance(toy: dict, gamma: float) -> Instance:
    """Draw X (d x n, N(0,1) entries) and w* (N(0, scale^2/d)) from the seed in the toy config.

    The draws do not depend on gamma, so the three gammas share X and w*.
    """
    rng = np.random.default_rng([toy["seed"], 0])
    d, n = toy["d"], toy["n"]
    X = rng.standard_normal((d, n))
    w_star = rng.standard_normal(d) * toy["w_star_scale"] / np.sqrt(d)
    settings = {k: v for k, v in toy.items() if k != "gammas"}
    return Instance(X=X, w_star=w_star, gamma=float(gamma), settings=settings)


def figure3_instance(gamma: float = FIG3_GAMMA) -> Instance:
    """The paper's Figure 3 data (d = 2, n = 1)."""
    return Instance(X=FIG3_X.copy(), w_star=FIG3_W_STAR.copy(), gamma=float(gamma),
                    settings={"source": "paper Figure 3"})


def initial_point(inst: Instance, toy: dict) -> np.ndarray:
    """The shared initialisation w0: a seeded random direction with norm toy.init_norm, whose
    X_perp part is orthogonal to alpha*_perp = P_{X_perp} alpha*.

    Why: every gradient lies in span{X, w}, so the X_perp part of w keeps the direction of w0's
    (SGD and Eq. 3.15 alike). On M the test loss is then L(w_dagger) + ||alpha_perp||^2/2 -
    alpha_perp . alpha*_perp; with the two orthogonal it is L(w_dagger) + (||w||^(2+2 gamma) -
    ||alpha*_X||^2)/2, increasing in ||w||, which is what makes "later decay, lower test loss"
    follow from Theorem 3.4. A generic w0 has alpha_perp . alpha*_perp != 0, and the test loss on
    M is smallest before w_dagger is reached (at L(w_dagger) - (e_v . alpha*_perp)^2 / 2).
    """
    rng = np.random.default_rng([toy["seed"], 1])
    w0 = rng.standard_normal(inst.d)
    a_perp = inst.alpha_star_perp
    if np.linalg.norm(a_perp) > 0:
        w0 = w0 - a_perp * float(w0 @ a_perp) / float(a_perp @ a_perp)
    return w0 * toy["init_norm"] / np.linalg.norm(w0)


def check_toy_config(toy: dict) -> None:
    """Cross-field rules JSON Schema cannot express; raise ConfigError naming key, value, rule."""
    problems = []
    d, n = toy["d"], toy["n"]
    if n >= d:
        problems.append(
            f"config key toy.n = {n}: must be < toy.d = {d} (the model is over-parametrised, "
            "so the minima manifold M exists only when n < d)"
        )
    for g in toy["gammas"]:
        if g <= -1:
            problems.append(f"config key toy.gammas = {toy['gammas']}: every gamma must be > -1 "
                            f"(got {g}; alpha = ||w||^gamma w is not invertible for gamma <= -1)")
        elif g == 0:
            problems.append(f"config key toy.gammas = {toy['gammas']}: gamma = 0 is linear "
                            "regression, where the Phase II drift (A = eta sigma^2 gamma / 2) is "
                            "zero and there is no Phase II to check; use gamma != 0")
    if toy["eta_small"] >= toy["eta_large"]:
        problems.append(f"config key toy.eta_small = {toy['eta_small']}: must be < toy.eta_large "
                        f"= {toy['eta_large']} (Phase III decays the learning rate)")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    for g in toy["gammas"]:
        inst = make_instance(toy, g)
        w0 = initial_point(inst, toy)
        for name, w in (("the initialisation w0", w0), ("w_dagger", inst.w_dagger)):
            lam = step_stiffness(inst, w, toy["batch_size"])
            if toy["eta_large"] * lam >= 2.0:
                raise ConfigError(
                    f"invalid configuration:\n  config key toy.eta_large = {toy['eta_large']}: "
                    f"SGD diverges for gamma = {g} at {name}, where the stiffest direction of a "
                    f"step has curvature {lam:.4g} (eta * curvature must be < 2); use "
                    f"toy.eta_large < {2.0 / lam:.4g}"
                )
            # label noise: one step's kick (its standard deviation, at the sqrt(2) sigma that
            # the checks also run) must stay well inside the point's own norm
            reach = float(np.linalg.norm(model.A_matrix(w, g) @ inst.X, axis=0).max())
            kick = (toy["eta_large"] * toy["sigma"] * NOISE_SCALE_MAX * reach
                    / np.sqrt(toy["batch_size"]))
            norm = float(np.linalg.norm(w))
            if kick >= MAX_KICK * norm:
                limit = toy["sigma"] * MAX_KICK * norm / kick
                raise ConfigError(
                    f"invalid configuration:\n  config key toy.sigma = {toy['sigma']:.4g}: "
                    f"label-noise SGD diverges for gamma = {g}: at {name} (norm {norm:.3g}) one "
                    f"step's noise (toy.eta_large * toy.sigma * ||A x||, up to {kick:.3g}) "
                    f"moves w by more than {MAX_KICK:g} of its norm; use toy.sigma < "
                    f"{limit:.4g} (or a smaller toy.eta_large)"
                )


# The checks also simulate at sqrt(2) sigma; a noise kick may move w by at most this fraction
# of its norm (the presets: at most 0.12).
NOISE_SCALE_MAX = float(np.sqrt(2.0))
MAX_KICK = 0.5


def step_stiffness(inst: Instance, w: np.ndarray, batch_size: int) -> float:
    """Largest curvature one SGD step sees at w: max(lambda_max(H), max_i ||A x_i||^2 / B).

    A step multiplies the component along A x_i by 1 - eta ||A x_i||^2 / B, so eta times this
    number must stay below 2 for the linearised step to contract.
    """
    lam_full = float(np.linalg.eigvalsh(model.normal_matrix(w, inst.X, inst.gamma))[-1])
    per_sample = np.sum((model.A_matrix(w, inst.gamma) @ inst.X) ** 2, axis=0)
    return max(lam_full, float(per_sample.max()) / batch_size)


def retract_batch(inst: Instance, w: np.ndarray, iters: int = 8) -> np.ndarray:
    """Gauss-Newton retraction onto M for many replicas at once (w: (R, d)).

    Removes the first-order normal fluctuation, so ||retract(w)|| is the position along M.
    """
    w = np.array(w, dtype=float, copy=True)
    X, g = inst.X, inst.gamma
    for _ in range(iters):
        res = (model.alpha(w, g) - inst.alpha_star) @ X  # (R, n)
        rho = np.linalg.norm(w, axis=1)[:, None, None]
        wbar = w / rho[:, :, 0]
        AX = rho**g * (X[None] + g * wbar[:, :, None] * (wbar @ X)[:, None, :])  # (R, d, n)
        XtAX = np.einsum("rdn,rdm->rnm", AX, AX)  # J J^T with J = X^T A
        w = w - np.einsum("rdn,rn->rd", AX, np.linalg.solve(XtAX, res[..., None])[..., 0])
    return w


def trace_stats(inst: Instance, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tr H and tr H^2 of H = (1/n) X^T A(w)^2 X per replica (for the label-noise floor)."""
    X, g = inst.X, inst.gamma
    rho = np.linalg.norm(w, axis=1)[:, None, None]
    wbar = w / rho[:, :, 0]
    AX = rho**g * (X[None] + g * wbar[:, :, None] * (wbar @ X)[:, None, :])
    M = np.einsum("rdn,rdm->rnm", AX, AX) / inst.n
    return np.trace(M, axis1=1, axis2=2), np.sum(M**2, axis=(1, 2))
