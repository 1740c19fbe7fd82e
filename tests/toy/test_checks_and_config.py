"""Small fast versions of the checks, and the config errors (n >= d, gamma <= -1, divergence)."""

import numpy as np
import pytest

import lrdecay.config as C
from lrdecay.toy import checks, simulate
from lrdecay.toy.instance import check_toy_config, initial_point, make_instance, step_stiffness


def _passes(rows):
    return {r["check"]: r["pass"] for r in rows}


def test_min_norm_and_curvature_checks(small_toy):
    inst = make_instance(small_toy, 1.0)
    rng = np.random.default_rng(0)
    rows = checks.check_minimum_norm(inst, rng, 2) + checks.check_curvature(inst, rng, 200)
    assert all(_passes(rows).values()), rows


def test_theorem_3_4_rows_detect_the_printed_constants(small_toy):
    inst = make_instance(dict(small_toy, d=30, n=5), 2.0)
    w_m0 = inst.manifold_point(1.5 * inst.norm_dagger, inst.perp_basis[:, 0])
    rows, _ = checks.check_theorem_3_4_ode(inst, 0.005, 1.0, w_m0, 200.0, 200)
    got = _passes(rows)
    assert got == {"norm_rate_closed_form": True, "eq_3_17_proof_B": True,
                   "local_rate_ode": True}
    proof = next(r for r in rows if r["check"] == "eq_3_17_proof_B")
    assert 1 <= proof["measured"] < 1.5  # the proof's B holds and is close to tight
    printed = float(proof["paper_note"].split("min ratio ")[1].split(")")[0])
    assert printed == pytest.approx(proof["measured"] / inst.d, rel=2e-3)  # B(C d) fails: < 1


def test_phase3_rate_check(small_toy, monkeypatch):
    inst = make_instance(small_toy, 1.0)
    rng = np.random.default_rng(1)
    starts = np.array([inst.manifold_point(1.3 * inst.norm_dagger, rng.standard_normal(inst.d))
                       for _ in range(2)]) + 0.01 * rng.standard_normal((2, inst.d))
    (row,) = checks.check_phase3_rate(inst, starts, 0.005)
    assert row["pass"] and abs(row["measured"] / row["reference"] - 1) <= 1e-2
    # a planted step of 2h converges twice as fast: the two-sided row fails
    step = simulate.gradient_descent_step
    monkeypatch.setattr(simulate, "gradient_descent_step", lambda i, w, h: step(i, w, 2 * h))
    (fast,) = checks.check_phase3_rate(inst, starts, 0.005)
    assert not fast["pass"] and fast["measured"] == pytest.approx(2, rel=0.02)


def test_energy_distance_detects_shift():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((60, 3)), rng.standard_normal((60, 3))
    assert checks.permutation_pvalue(a, b + 2.0, rng, 50) < 0.05
    assert checks.energy_distance(a, b) < checks.energy_distance(a, b + 2.0)


def test_run_gamma_small_instance_all_rows_pass(small_toy):
    """The whole check suite on a small instance (d = 16, n = 6): every row passes."""
    inst, rows, traces = checks.run_gamma(small_toy, 1.0)
    failed = [(r["check"], r["measured"], r["criterion"]) for r in rows if not r["pass"]]
    assert not failed
    names = [r["check"] for r in rows]
    assert len(names) == len(set(names)) == 21
    assert {"theorem_3_1", "lemma_3_3_tracking", "lemma_3_3_time_factor", "late_decay_monotone",
            "control_sigma0", "n1_limit_sgd", "theorem_3_6", "phase_II_test_falls"} <= set(names)
    assert traces["lemma_c_eta|sigma"] > 1  # SGD at finite eta runs ahead of Eq. 3.15 (O(eta))


def _config(toy_overrides):
    """The quick preset through config.load: the same validation as the Snakefile's, the toy
    section's cross-field rules included (checked once there, not again by the toy jobs)."""
    return C.load(C.REPO_ROOT / "config.yaml", overrides={"toy": toy_overrides})


def test_config_n_not_below_d():
    with pytest.raises(C.ConfigError, match=r"toy.n = 5: must be < toy.d = 5"):
        _config({"d": 5, "n": 5})


def test_config_gamma_not_above_minus_one():
    with pytest.raises(C.ConfigError, match=r"toy.gammas.0 = -1"):
        _config({"gammas": [-1]})
    with pytest.raises(C.ConfigError, match=r"gamma = 0"):
        _config({"gammas": [0]})


def test_config_diverging_step_size():
    with pytest.raises(C.ConfigError, match=r"toy.eta_large = 0.5: SGD diverges"):
        _config({"eta_large": 0.5, "eta_small": 0.01})


def test_default_config_is_valid_and_its_step_size_bound_is_sharp():
    toy = _config({})["toy"]
    assert toy["sigma"] != 1  # sigma-vs-sigma^2 errors must show in the numbers
    check_toy_config(toy)  # the shipped config passes
    # eta_large just above the bound the check computes is refused, just below it is accepted
    limit = min(2.0 / step_stiffness(inst, w, toy["batch_size"])
                for g in toy["gammas"]
                for inst in [make_instance(toy, g)]
                for w in (initial_point(inst, toy), inst.w_dagger))
    check_toy_config(dict(toy, eta_large=0.999 * limit))
    with pytest.raises(C.ConfigError, match="SGD diverges"):
        check_toy_config(dict(toy, eta_large=1.001 * limit))


def test_traces_are_keyed_by_the_gamma_of_their_folder(tmp_path):
    """Figure jobs key each trace file by its rule's {gamma} folder (negative gammas too)."""
    import numpy as np

    from lrdecay.toy.figures import load_traces

    paths = []
    for name, marker in (("gamma-0.5", 1.0), ("gamma--0.5", 2.0), ("gamma-2", 3.0)):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "traces.npz")
        np.savez(paths[-1], eta=np.array(marker))
    traces = load_traces([str(p) for p in paths])
    assert {g: float(t["eta"]) for g, t in traces.items()} == {0.5: 1.0, -0.5: 2.0, 2.0: 3.0}
