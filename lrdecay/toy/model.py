"""The Section 3 model y = ||w||^gamma w^T x: losses, gradient (A.1), Hessian, Phase II maths.

Every function is pure numpy (float64). Parameters are batched over replicas where that is what the
simulators need: `w` is (d,) or (R, d); matrices are built for one point only.

Notation follows the paper: alpha(w) = ||w||^gamma w, A(w) = ||w||^gamma (I + gamma wbar wbar^T),
train loss (1/2n)||X^T(alpha - alpha*)||^2, test loss (1/2)||alpha - alpha*||^2.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def alpha(w: Array, gamma: float) -> Array:
    """Effective linear predictor alpha = ||w||^gamma w (rows of `w` are replicas)."""
    rho = np.linalg.norm(w, axis=-1, keepdims=True)
    return rho**gamma * w


def w_of_alpha(a: Array, gamma: float) -> Array:
    """Inverse map w = ||alpha||^(-gamma/(1+gamma)) alpha (the bijection of Section 3.1)."""
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    return norm ** (-gamma / (1.0 + gamma)) * a


def apply_A(w: Array, v: Array, gamma: float) -> Array:
    """A(w) v = ||w||^gamma (v + gamma (wbar . v) wbar), the Jacobian of alpha (A.1), row-wise."""
    rho = np.linalg.norm(w, axis=-1, keepdims=True)
    return _apply_A_at(rho**gamma, w / rho, v, gamma)


def _apply_A_at(scale: Array, wbar: Array, v: Array, gamma: float) -> Array:
    """:func:`apply_A` given scale = ||w||^gamma and wbar = w / ||w||: the simulators' steps
    apply A(w) twice at one w, and the norm is most of the cost; same operations, same bits."""
    return scale * (v + gamma * np.sum(wbar * v, axis=-1, keepdims=True) * wbar)


def A_matrix(w: Array, gamma: float) -> Array:
    """A(w) as a (d, d) matrix for one point."""
    rho = np.linalg.norm(w)
    wbar = w / rho
    return rho**gamma * (np.eye(w.size) + gamma * np.outer(wbar, wbar))


def train_loss(w: Array, X: Array, alpha_star: Array, gamma: float) -> Array:
    """(1/2n)||X^T(alpha - alpha*)||^2, one value per replica."""
    res = (alpha(w, gamma) - alpha_star) @ X
    return 0.5 * np.mean(res**2, axis=-1)


def test_loss(w: Array, alpha_star: Array, gamma: float) -> Array:
    """Population loss for x ~ N(0, I): (1/2)||alpha - alpha*||^2."""
    return 0.5 * np.sum((alpha(w, gamma) - alpha_star) ** 2, axis=-1)


def grad_train(w: Array, X: Array, alpha_star: Array, gamma: float) -> Array:
    """Eq. A.1: grad = (1/n) A(w) X X^T (alpha - alpha*)."""
    return grad_train_and_A(w, X, alpha_star, gamma)[0]


def grad_train_and_A(w: Array, X: Array, alpha_star: Array, gamma: float,
                     v: Array | None = None) -> tuple[Array, Array | None]:
    """:func:`grad_train` and, if `v` is given, A(w) v, from one ||w|| (the label-noise SDE
    needs both at each step; computing the norm once gives the same bits as three times)."""
    n = X.shape[1]
    rho = np.linalg.norm(w, axis=-1, keepdims=True)
    scale = rho**gamma
    res = (scale * w - alpha_star) @ X
    wbar = w / rho
    grad = _apply_A_at(scale, wbar, res @ X.T / n, gamma)
    return grad, None if v is None else _apply_A_at(scale, wbar, v, gamma)


def hessian_gn(w: Array, X: Array, gamma: float) -> Array:
    """Gauss-Newton part (1/n) A X X^T A of the Hessian; the whole Hessian on the manifold M."""
    AX = A_matrix(w, gamma) @ X
    return AX @ AX.T / X.shape[1]


def normal_matrix(w: Array, X: Array, gamma: float) -> Array:
    """(1/n) X^T A^2 X (n x n): its eigenvalues are the nonzero Hessian eigenvalues on M."""
    AX = A_matrix(w, gamma) @ X
    return AX.T @ AX / X.shape[1]


def normal_basis(w: Array, X: Array, gamma: float) -> Array:
    """Orthonormal basis (d, n) of the normal space A(w) X (Proposition B.1, Eq. B.1)."""
    q, _ = np.linalg.qr(A_matrix(w, gamma) @ X)
    return q


def tangent_basis(w: Array, X: Array, gamma: float) -> Array:
    """Orthonormal basis (d, d-n) of the tangent space A(w)^{-1} X_perp (Eq. B.2)."""
    d, n = X.shape
    q, _ = np.linalg.qr(A_matrix(w, gamma) @ X, mode="complete")
    return q[:, n:]


def project_tangent(w: Array, v: Array, X: Array, gamma: float) -> Array:
    """Orthogonal projection of v onto the tangent space, P_{A^{-1} X_perp} v."""
    q = normal_basis(w, X, gamma)
    return v - q @ (q.T @ v)


def curvature_C(w: Array, X: Array, gamma: float) -> Array:
    """Eq. 3.16: C(w) = (1/n)(tr(X^T X) - (gamma + 2) wbar^T X X^T wbar), row-wise."""
    n = X.shape[1]
    wbar = w / np.linalg.norm(w, axis=-1, keepdims=True)
    return (np.sum(X**2) - (gamma + 2.0) * np.sum((wbar @ X) ** 2, axis=-1)) / n


def effective_drift(w: Array, X: Array, gamma: float, eta: float, sigma2: float) -> Array:
    """Eq. 3.15 at a point of M: -A ||w||^(2 gamma - 1) C(w) P_T wbar, A = eta sigma^2 gamma/2."""
    rho = np.linalg.norm(w)
    wbar = w / rho
    coef = eta * sigma2 * gamma / 2.0 * rho ** (2 * gamma - 1) * curvature_C(w, X, gamma)
    return -coef * project_tangent(w, wbar, X, gamma)


def norm_rate_exact(rho: Array, C: Array, rho_dagger: float, gamma: float, eta: float,
                    sigma2: float) -> Array:
    """d||w||/dt along Eq. 3.15 in closed form (derived here; Appendix B.2 bounds it).

    With s = 1 - (rho_dagger/rho)^(2+2 gamma) = ||P_{X_perp} wbar||^2, the exact quadratic form is
    wbar^T P_T wbar = s / ((1+gamma)^2 (1-s) + s) (B.2 writes 1 + k||v||^2 where Sherman-Morrison
    gives 1 - k||v||^2), so d rho/dt = -A rho^(2 gamma - 1) C(w) s / ((1+gamma)^2 (1-s) + s).
    """
    s = 1.0 - (rho_dagger / rho) ** (2 + 2 * gamma)
    quad = s / ((1 + gamma) ** 2 * (1 - s) + s)
    return -eta * sigma2 * gamma / 2.0 * rho ** (2 * gamma - 1) * C * quad


def local_rate_exact(C_dagger: float, rho_dagger: float, gamma: float, eta: float,
                     sigma2: float) -> float:
    """Exact linear rate of ||w|| -> ||w_dagger|| under Eq. 3.15 (paper time):

    lambda = eta sigma^2 gamma C(w_dagger) ||w_dagger||^(2 gamma - 2) / (1 + gamma).
    """
    return eta * sigma2 * gamma * C_dagger * rho_dagger ** (2 * gamma - 2) / (1 + gamma)


def local_rate_paper_B19(C_inf: float, gamma: float, eta: float, sigma2: float) -> float:
    """Rate printed in Eq. B.19: sigma^2 eta C gamma (2 gamma - 1) / (2 (gamma+1)^2), C = inf C."""
    return sigma2 * eta * C_inf * gamma * (2 * gamma - 1) / (2 * (gamma + 1) ** 2)


def norm_bound_317(rho: Array, alpha_x_norm: float, gamma: float, B: float) -> Array:
    """Right-hand side of Eq. 3.17: -B (rho^(2 gamma - 1) - rho^-3 ||alpha*_X||^2)."""
    return -B * (rho ** (2 * gamma - 1) - rho**-3.0 * alpha_x_norm**2)


def n1_limit_norm(rho_dagger: float, gamma: float) -> float:
    """Where the Eq. 3.15 flow settles when n = 1 (derived here).

    For n = 1, C(w) = ||x||^2 (1 - (gamma+2) cos^2) with cos^2 = (rho_dagger/rho)^(2+2 gamma) on M,
    so C(w_dagger) = -(gamma+1)||x||^2 < 0 and the stable zero of the drift is C = 0:
    rho_inf = rho_dagger (gamma + 2)^(1/(2 + 2 gamma)).
    """
    return rho_dagger * (gamma + 2.0) ** (1.0 / (2.0 + 2.0 * gamma))


def noise_floor_train(eta: float, sigma2_eff: float, tr_h: np.ndarray,
                      tr_h2: np.ndarray | float = 0.0) -> np.ndarray:
    """Stationary train loss near M under label noise (derived from Eq. 3.13).

    With Sigma = (eta sigma^2 / 2) A X (X^T A^2 X)^{-1} X^T A and H = (1/n) A X X^T A,
    E[L] = tr(H Sigma) / 2 = (eta sigma^2 / 4) tr H. Discrete steps inflate each mode h by
    1 / (1 - eta h / 2); to first order that adds (eta/2) tr H^2.
    """
    return eta * sigma2_eff / 4.0 * (tr_h + 0.5 * eta * tr_h2)
