"""Plant plausible bugs in the toy code one at a time: the checks table must fail for each.

Each of the eight theory mutants is a consistent change a reviewer could make by mistake (the
formulas that would "confirm" it are changed with it), so only a comparison with an independent
simulation can catch it; two more break how the main path is run (MAIN_MUTANTS). The unmutated
code passes every row on the same small instance.
"""

import numpy as np
import pytest

from lrdecay.toy import checks, model, simulate


def _scaled(fn, factor):
    def wrapped(*args, **kwargs):
        return factor * fn(*args, **kwargs)
    return wrapped


def _drift_sign(mp):
    mp.setattr(model, "effective_drift", _scaled(model.effective_drift, -1.0))


def _drift_scale(mp):
    """The 1/2 of A = eta sigma^2 gamma / 2 dropped, the rate formulas adjusted to match."""
    for name in ("effective_drift", "norm_rate_exact", "local_rate_exact"):
        mp.setattr(model, name, _scaled(getattr(model, name), 2.0))


def _exponent(mp):
    """||w||^(2 gamma - 1) -> ||w||^(2 gamma) in the drift and in the rate formulas."""
    drift, rate, local = model.effective_drift, model.norm_rate_exact, model.local_rate_exact
    mp.setattr(model, "effective_drift", lambda w, *a: np.linalg.norm(w) * drift(w, *a))
    mp.setattr(model, "norm_rate_exact", lambda rho, *a: rho * rate(rho, *a))
    mp.setattr(model, "local_rate_exact", lambda c, rho_d, *a: rho_d * local(c, rho_d, *a))


def _noise_variance(mp):
    """Label noise of variance sigma instead of sigma^2."""
    mp.setattr(simulate, "label_noise",
               lambda rng, sigma, shape: np.sqrt(sigma) * rng.standard_normal(shape))


def _projector(mp):
    """Tangent projector P_{X_perp} instead of P_{A^-1 X_perp}."""
    mp.setattr(model, "project_tangent",
               lambda w, v, X, gamma: v - X @ np.linalg.solve(X.T @ X, X.T @ v))


def _full_batch(mp):
    """Every SGD step uses all n samples (full-batch gradient plus label noise)."""
    mp.setattr(simulate, "draw_minibatches",
               lambda rng, n, shape: np.broadcast_to(np.arange(n), shape[:2] + (n,)))


def _gradient_flow_step(mp):
    """Phase III gradient descent takes a step of 2h."""
    step = simulate.gradient_descent_step
    mp.setattr(simulate, "gradient_descent_step", lambda inst, w, h: step(inst, w, 2 * h))


def _time_scaling(mp):
    """SGD's clock counts steps instead of paper time t = k eta."""
    sgd = simulate.sgd

    def counted_in_steps(inst, w0, eta, *args, **kwargs):
        out = sgd(inst, w0, eta, *args, **kwargs)
        out["t"] = out["t"] / eta
        return out

    mp.setattr(simulate, "sgd", counted_in_steps)


MUTANTS = {"drift_sign": _drift_sign, "drift_scale": _drift_scale, "exponent": _exponent,
           "noise_variance": _noise_variance, "projector": _projector,
           "full_batch": _full_batch, "gradient_flow_step": _gradient_flow_step,
           "time_scaling": _time_scaling}


# The rows that compare simulations with theory (Lemma 3.3 time factor and floor, the Eq. 3.15
# ODE, Theorem 3.6) plus the geometry; the main path, mixing and n = 1 rows add run time, not
# coverage of these bugs (the pipeline's table runs every part).
PARTS = ("geometry", "lemma", "phase3", "ode")


def _failed(toy):
    _, rows, _ = checks.run_gamma(toy, 1.0, parts=PARTS)
    return sorted(r["check"] for r in rows if not r["pass"])


def test_unmutated_passes(small_toy):
    assert _failed(small_toy) == []


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_fails_the_table(small_toy, monkeypatch, name):
    MUTANTS[name](monkeypatch)
    assert _failed(small_toy), f"planted bug {name!r} passes every row"


# Bugs in how the main path is run, caught by its own rows at every gamma: the decay steps
# (decay_placement) and the replicas' independence (replica_independence). A short main path
# (Lemma 3.3 runs for its corrections, no Phase III) is enough.
def _decay_from_step_0(mp):
    """Decay steps counted from step 0 instead of from the end of Phase I."""
    mp.setattr(checks, "decay_steps",
               lambda k1, k2, points: np.linspace(0, k2, points).round().astype(int))


def _shared_minibatches(mp):
    """Every replica of an SGD call draws the same minibatch indices."""
    draw = simulate.draw_minibatches
    mp.setattr(simulate, "draw_minibatches", lambda rng, n, shape: np.broadcast_to(
        draw(rng, n, (shape[0], 1, shape[2])), shape))


MAIN_MUTANTS = {"decay_from_step_0": (_decay_from_step_0, "decay_placement"),
                "shared_minibatches": (_shared_minibatches, "replica_independence")}


def _main_rows(toy, gamma):
    _, rows, _ = checks.run_gamma(toy, gamma, parts=("main",))
    return {r["check"]: r["pass"] for r in rows}


@pytest.fixture
def short_main(small_toy) -> dict:
    return dict(small_toy, replicas=32, lemma_records=15, lemma_timescales=0.6,
                phase2_timescales=1, decay_points=2, record_points=20)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_main_path_mutants_fail_their_row(short_main, monkeypatch, gamma):
    clean = _main_rows(short_main, gamma)
    for name, (plant, row) in MAIN_MUTANTS.items():
        assert clean[row], f"unmutated {row} fails at gamma = {gamma}"
        with monkeypatch.context() as mp:
            plant(mp)
            assert not _main_rows(short_main, gamma)[row], (
                f"planted bug {name!r} passes {row} at gamma = {gamma}")
