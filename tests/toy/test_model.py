"""Closed forms (1e-10), the gradient A.1 against autograd, geometry of M, the Eq. 3.15 drift."""

import numpy as np
import pytest
import torch

from lrdecay.toy import model
from lrdecay.toy.instance import Instance, figure3_instance, make_instance

GAMMAS = [-0.5, 0.5, 1.0, 2.0, 3.0]


@pytest.fixture(params=GAMMAS)
def inst(request, toy_defaults) -> Instance:
    toy = dict(toy_defaults, d=12, n=4)
    return make_instance(toy, request.param)


def test_alpha_bijection(inst):
    w = np.random.default_rng(0).standard_normal((5, inst.d))
    assert np.allclose(model.w_of_alpha(model.alpha(w, inst.gamma), inst.gamma), w, atol=1e-12)


def test_w_dagger_closed_forms(inst):
    g = inst.gamma
    assert np.linalg.norm(inst.X.T @ (model.alpha(inst.w_dagger, g) - inst.alpha_star)) < 1e-10
    assert abs(np.linalg.norm(inst.w_dagger) - np.linalg.norm(inst.alpha_star_X) ** (1 / (1 + g))
               ) < 1e-10
    assert abs(inst.test_loss(inst.w_dagger) - 0.5 * np.sum(
        ((np.eye(inst.d) - inst.proj_X) @ inst.alpha_star) ** 2)) < 1e-10
    assert np.allclose(inst.proj_X @ inst.w_dagger, inst.w_dagger, atol=1e-12)  # in span X
    assert abs(inst.train_loss(inst.w_dagger)) < 1e-20


def test_manifold_points_prop_b3(inst):
    rng = np.random.default_rng(1)
    for rho in inst.norm_dagger * np.array([1.0, 1.3, 2.5]):
        w = inst.manifold_point(rho, rng.standard_normal(inst.d))
        assert abs(np.linalg.norm(w) - rho) < 1e-10
        assert np.linalg.norm(inst.X.T @ (model.alpha(w, inst.gamma) - inst.alpha_star)) < 1e-10
        assert np.allclose(inst.proj_X @ w, rho ** (-inst.gamma) * inst.alpha_star_X, atol=1e-10)
    with pytest.raises(ValueError):
        inst.manifold_point(0.9 * inst.norm_dagger, rng.standard_normal(inst.d))


def test_tangent_and_normal_spaces(inst):
    """Prop. B.1: the tangent space A^{-1} X_perp is orthogonal to the normal space A X, and a
    curve on M (rotating the X_perp direction) moves inside the tangent space."""
    rng = np.random.default_rng(2)
    r1, r2 = inst.perp_basis[:, 0], inst.perp_basis[:, 1]
    rho = 1.7 * inst.norm_dagger
    w = inst.manifold_point(rho, r1)
    T, N = model.tangent_basis(w, inst.X, inst.gamma), model.normal_basis(w, inst.X, inst.gamma)
    assert np.abs(T.T @ N).max() < 1e-12
    Ainv_perp = np.linalg.solve(model.A_matrix(w, inst.gamma), inst.perp_basis)
    assert np.linalg.norm(Ainv_perp - T @ (T.T @ Ainv_perp)) < 1e-10
    h = 1e-6
    for theta, drho in ((1.0, 0.0), (0.0, 1.0)):
        w2 = inst.manifold_point(rho + drho * h, r1 + theta * h * r2)
        v = (w2 - w) / h
        assert np.linalg.norm(N.T @ v) < 1e-5 * np.linalg.norm(v)
    v = rng.standard_normal(inst.d)
    assert np.allclose(model.project_tangent(w, v, inst.X, inst.gamma), T @ (T.T @ v), atol=1e-12)


def _torch_loss(w, X, a_star, gamma):
    rho = torch.linalg.norm(w)
    return 0.5 * torch.mean(((rho**gamma * w - a_star) @ X) ** 2)


def test_gradient_and_hessian_against_autograd(inst):
    X = torch.tensor(inst.X)
    a_star = torch.tensor(inst.alpha_star)
    rng = np.random.default_rng(3)
    for w_np in (rng.standard_normal(inst.d), inst.manifold_point(1.4 * inst.norm_dagger,
                                                                   rng.standard_normal(inst.d))):
        w = torch.tensor(w_np, requires_grad=True)
        (grad,) = torch.autograd.grad(_torch_loss(w, X, a_star, inst.gamma), w)
        ours = model.grad_train(w_np, inst.X, inst.alpha_star, inst.gamma)
        assert np.allclose(ours, grad.numpy(), rtol=1e-10, atol=1e-12)
        batched = model.grad_train(np.stack([w_np, w_np]), inst.X, inst.alpha_star, inst.gamma)
        assert np.allclose(batched[1], ours, rtol=1e-12)
    hess = torch.autograd.functional.hessian(lambda v: _torch_loss(v, X, a_star, inst.gamma),
                                             torch.tensor(w_np)).numpy()
    assert np.allclose(model.hessian_gn(w_np, inst.X, inst.gamma), hess, atol=1e-9)  # on M


def _drift_by_averaging(inst, w, eta, sigma2):
    """-P_T E[grad L(w + Delta)] with Delta ~ N(0, Sigma) of Eq. 3.13, by symmetric sigma points
    (exact for the second-order term, error O(eta^2))."""
    X, g = inst.X, inst.gamma
    AX = model.A_matrix(w, g) @ X
    Sigma = 0.5 * eta * sigma2 * AX @ np.linalg.solve(AX.T @ AX, AX.T)
    lam, U = np.linalg.eigh(Sigma)
    mean = np.zeros(inst.d)
    for lk, uk in zip(lam[-inst.n:], U[:, -inst.n:].T, strict=True):
        s = np.sqrt(lk)
        mean += 0.5 * (inst.grad(w + s * uk) + inst.grad(w - s * uk))
    return -model.project_tangent(w, mean, X, g)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_ode_drift_matches_average_of_gradient(toy_defaults, gamma):
    inst = make_instance(dict(toy_defaults, d=10, n=3), gamma)
    w = inst.manifold_point(1.6 * inst.norm_dagger, inst.perp_basis[:, 0])
    for eta in (1e-3, 1e-4):
        direct = _drift_by_averaging(inst, w, eta, 1.0)
        ode = model.effective_drift(w, inst.X, gamma, eta, 1.0)
        assert np.linalg.norm(direct - ode) <= 20 * eta * np.linalg.norm(ode)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_ode_drift_is_tangent_gradient_of_trace_hessian(toy_defaults, gamma):
    """Li, Wang and Arora (2021): label-noise drift = -(eta sigma^2/4) P_T grad tr H."""
    inst = make_instance(dict(toy_defaults, d=10, n=3), gamma)
    w = inst.manifold_point(1.3 * inst.norm_dagger, inst.perp_basis[:, 1])

    def tr_h(v):
        return np.trace(model.normal_matrix(v, inst.X, gamma))

    h = 1e-6
    grad = np.array([(tr_h(w + h * e) - tr_h(w - h * e)) / (2 * h) for e in np.eye(inst.d)])
    li = -0.25 * model.project_tangent(w, grad, inst.X, gamma)
    assert np.allclose(model.effective_drift(w, inst.X, gamma, 1.0, 1.0), li, rtol=1e-6,
                       atol=1e-9)


def test_norm_rate_closed_form_and_local_rate(inst):
    g = inst.gamma
    rng = np.random.default_rng(4)
    for rho in inst.norm_dagger * np.array([1.01, 1.5, 3.0]):
        w = inst.manifold_point(rho, rng.standard_normal(inst.d))
        direct = w @ model.effective_drift(w, inst.X, g, 0.1, 1.0) / rho
        exact = model.norm_rate_exact(rho, model.curvature_C(w, inst.X, g), inst.norm_dagger, g,
                                      0.1, 1.0)
        assert abs(direct - exact) <= 1e-10 * max(abs(direct), 1e-12)
    # linearisation at w_dagger
    delta = 1e-7 * inst.norm_dagger
    w = inst.manifold_point(inst.norm_dagger + delta, inst.perp_basis[:, 0])
    slope = -(w @ model.effective_drift(w, inst.X, g, 0.1, 1.0) / np.linalg.norm(w)) / delta
    lam = model.local_rate_exact(inst.C_dagger, inst.norm_dagger, g, 0.1, 1.0)
    assert abs(slope / lam - 1) < 1e-5


def test_c_on_manifold_is_smallest_at_w_dagger(inst):
    rng = np.random.default_rng(5)
    pts = np.array([inst.manifold_point(inst.norm_dagger * rng.uniform(1, 5),
                                        rng.standard_normal(inst.d)) for _ in range(200)])
    assert model.curvature_C(pts, inst.X, inst.gamma).min() >= inst.C_dagger - 1e-12


def test_figure3_instance_n1_limit():
    inst = figure3_instance()
    x = inst.X[:, 0]
    assert abs(inst.C_dagger + 3 * x @ x) < 1e-12  # -(gamma+1)||x||^2 with gamma = 2
    rho_inf = model.n1_limit_norm(inst.norm_dagger, 2.0)
    w = inst.manifold_point(rho_inf, inst.perp_basis[:, 0])
    assert abs(model.curvature_C(w, inst.X, 2.0)) < 1e-10  # C = 0 there


def _apply_A_reference(w, v, gamma):
    """A(w) v as lrdecay.toy.model wrote it before grad_train_and_A (its own norm)."""
    rho = np.linalg.norm(w, axis=-1, keepdims=True)
    wbar = w / rho
    return rho**gamma * (v + gamma * np.sum(wbar * v, axis=-1, keepdims=True) * wbar)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_grad_train_and_A_is_bit_identical_to_the_formulas(gamma):
    """grad_train_and_A (one ||w|| per step in the SDE and gradient-flow simulators) gives the
    same bits as Eq. A.1 written out and as apply_A, so the toy tables do not change with it."""
    rng = np.random.default_rng(3)
    X, w_star = rng.standard_normal((20, 5)), rng.standard_normal(20)
    a_star = model.alpha(w_star, gamma)
    for w in (rng.standard_normal((7, 20)), rng.standard_normal(20)):
        v = rng.standard_normal(w.shape)
        res = (model.alpha(w, gamma) - a_star) @ X
        expected = _apply_A_reference(w, res @ X.T / X.shape[1], gamma)
        grad, a_v = model.grad_train_and_A(w, X, a_star, gamma, v)
        assert grad.tobytes() == expected.tobytes()
        assert a_v.tobytes() == _apply_A_reference(w, v, gamma).tobytes()
        assert model.apply_A(w, v, gamma).tobytes() == a_v.tobytes()
        assert model.grad_train(w, X, a_star, gamma).tobytes() == expected.tobytes()
        assert model.grad_train_and_A(w, X, a_star, gamma)[1] is None
