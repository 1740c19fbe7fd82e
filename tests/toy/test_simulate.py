"""Time convention of the simulators (t = k eta; minibatch B means sigma^2 -> sigma^2 / B)."""

import numpy as np
import pytest

from lrdecay.toy import model, simulate
from lrdecay.toy.instance import make_instance, trace_stats


@pytest.fixture
def inst(toy_defaults):
    return make_instance(dict(toy_defaults, d=8, n=3), 1.0)


def test_paper_time_is_k_eta(inst):
    out = simulate.sgd(inst, np.tile(inst.w_dagger, (2, 1)), 0.01, 0.5, 100, 1,
                       np.random.default_rng(0), 10)
    assert np.allclose(out["t"], 0.01 * np.arange(0, 101, 10))


def test_sgd_without_noise_follows_gradient_flow(inst):
    """sigma = 0 and all samples in the batch (B = n with replacement averages to the full
    gradient only in expectation, so compare the SDE-free limit through GD instead)."""
    w0 = inst.manifold_point(1.5 * inst.norm_dagger, inst.perp_basis[:, 0]) + 0.05
    rec = simulate.basic_stats(inst)
    t_end = 1.0
    h_ref = 2.5e-4  # its own O(h) error is 1/16 of the coarsest run's
    ref = simulate.gradient_flow(inst, w0[None], h_ref, int(t_end / h_ref), int(t_end / h_ref),
                                 rec)
    errs = []
    for h in (0.004, 0.002):
        out = simulate.gradient_flow(inst, w0[None], h, int(t_end / h), int(t_end / h), rec)
        errs.append(np.linalg.norm(out["final"] - ref["final"]))
    # first order in the step (paper time t = k h): the error halves, up to the reference's own
    assert 0.4 * errs[0] < errs[1] < 0.6 * errs[0]


@pytest.mark.parametrize("batch", [1, 4])
def test_label_noise_floor_scales_as_sigma2_over_batch(inst, batch):
    eta, sigma, R = 0.004, 1.0, 64
    w0 = np.tile(inst.w_dagger, (R, 1))
    tau = 1 / np.linalg.eigvalsh(model.normal_matrix(inst.w_dagger, inst.X, 1.0))[0]
    steps = int(6 * tau / eta)
    out = simulate.sgd(inst, w0, eta, sigma, steps, batch, np.random.default_rng(1),
                       max(steps // 100, 1), snapshot_steps=[steps])
    tr_h, tr_h2 = trace_stats(inst, out["snapshots"][steps])
    floor = model.noise_floor_train(eta, sigma**2 / batch, tr_h.mean(), tr_h2.mean())
    measured = out["train"][:, out["t"] > 2 * tau].mean()
    assert abs(measured / floor - 1) < 0.15


def test_label_noise_sde_has_the_same_floor(inst):
    eta, R = 0.004, 64
    tau = 1 / np.linalg.eigvalsh(model.normal_matrix(inst.w_dagger, inst.X, 1.0))[0]
    steps = int(6 * tau / eta)
    out = simulate.label_noise_sde(inst, np.tile(inst.w_dagger, (R, 1)), eta, 1.0, eta, steps,
                                   np.random.default_rng(2), max(steps // 100, 1))
    tr_h, tr_h2 = trace_stats(inst, out["final"])
    floor = model.noise_floor_train(eta, 1.0, tr_h.mean(), tr_h2.mean())
    assert abs(out["train"][:, out["t"] > 2 * tau].mean() / floor - 1) < 0.15


def test_effective_ode_stays_on_manifold_and_decreases_norm(inst):
    w0 = inst.manifold_point(1.5 * inst.norm_dagger, inst.perp_basis[:, 0])
    ode = simulate.effective_ode(inst, w0, 0.01, 1.0, 50.0, 0.5)
    assert np.all(np.diff(ode["norm"]) <= 1e-12)
    assert inst.distance_to_M_residual(ode["w"]).max() < 1e-10


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the message alone, no numpy overflow noise
def test_divergence_gives_a_clear_message(inst):
    with pytest.raises(simulate.StepSizeTooLargeError, match="toy.eta_large = 5.0"):
        simulate.sgd(inst, np.tile(3 * inst.w_dagger, (2, 1)), 5.0, 0.0, 200, 1,
                     np.random.default_rng(0), 10)


@pytest.mark.parametrize("gamma, batch", [(0.5, 1), (1.0, 1), (2.0, 1), (1.5, 3)])
def test_gradient_workspace_step_is_bit_identical(gamma, batch):
    """sgd's in-place step (simulate.GradientWorkspace) equals w -= eta * minibatch_gradient bit
    for bit over many steps, so the toy tables do not depend on which one runs."""
    rng = np.random.default_rng(5)
    R, d, eta = 37, 11, 0.01
    w_ref = 0.3 * rng.standard_normal((R, d)) + 0.5
    w = w_ref.copy()
    work = simulate.GradientWorkspace(R, batch, d)
    for _ in range(200):
        x = 0.5 * rng.standard_normal((R, batch, d))
        target = rng.standard_normal((R, batch))
        w_ref -= eta * simulate.minibatch_gradient(w_ref, x, target, gamma)
        work.step(w, x, target, gamma, eta)
    assert np.all(np.isfinite(w_ref))
    assert np.array_equal(w, w_ref)
