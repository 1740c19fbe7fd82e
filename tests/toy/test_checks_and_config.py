"""Small fast versions of the checks, and the config errors (n >= d, gamma <= -1, divergence)."""

import numpy as np
import pytest

import lrdecay.config.validate as C
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
    assert all(_passes(rows).values()), rows
    by_name = {r["check"]: r for r in rows}
    proof = by_name["eq_3_17_proof_B"]
    assert 1 <= proof["measured"] < 1.5  # the proof's B holds and is close to tight
    printed = by_name["eq_3_17_printed_B"]
    assert printed["verdict"] == "contradicted"  # B(C d) fails: the ratio is below 1
    assert printed["measured"] == pytest.approx(proof["measured"] / inst.d, rel=2e-3)
    # Eq. B.19 at gamma = 2: printed / exact = 1 / (2 ||w_dagger||^2), a violated bound when > 1
    b19 = by_name["eq_B19_printed_rate"]
    expected = 1 / (2 * inst.norm_dagger**2)
    assert b19["measured"] == pytest.approx(expected, rel=2e-3)
    assert b19["verdict"] == ("contradicted" if expected > 1 + 1e-3 else "consistent")


def test_a_degenerate_simulation_writes_fail_rows(small_toy, monkeypatch):
    """A diverging Phase III gives one FAIL row naming the config key; other parts still run."""
    monkeypatch.setattr(simulate, "gradient_descent_step", lambda inst, w, h: w.__imul__(1e4))
    _, rows, _ = checks.run_gamma(small_toy, 1.0, parts=("geometry", "phase3"))
    by_name = {r["check"]: r for r in rows}
    failed = by_name["phase3_failed"]
    assert not failed["pass"] and failed["verdict"] == "FAIL"
    assert "toy.eta_small" in failed["paper_note"] and "diverged" in failed["paper_note"]
    assert by_name["w_dagger_on_M"]["pass"]
    nan_row = checks._row(1.0, "x", "", "", float("nan"), 0.0, "", True)
    assert not nan_row["pass"] and "degenerated" in nan_row["paper_note"]


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


def test_energy_distance_is_unbiased_and_detects_shift():
    rng = np.random.default_rng(2)
    same = [checks.energy_distance(rng.standard_normal((40, 3)), rng.standard_normal((40, 3)))
            for _ in range(200)]
    se = np.std(same, ddof=1)
    assert abs(np.mean(same)) <= 4 * se / np.sqrt(len(same))  # U-statistic: mean 0 (V: > 0)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    se_perm = checks.energy_distance_se(a, b, rng, 100)
    assert se_perm == pytest.approx(se, rel=0.35)  # relabelling spread = sampling spread
    assert checks.energy_distance(a, b + 1.0) > 3 * se_perm


def test_run_gamma_small_instance_all_rows_pass(small_toy):
    """The whole check suite on a small instance (d = 16, n = 6): every row passes."""
    inst, rows, traces = checks.run_gamma(small_toy, 1.0)
    failed = [(r["check"], r["measured"], r["criterion"]) for r in rows if not r["pass"]]
    assert not failed
    names = [r["check"] for r in rows]
    assert len(names) == len(set(names)) == 32
    starts = [name for name, _, _ in checks.STARTS]
    assert {"theorem_3_1", "theorem_3_1_control", "lemma_3_3_tracking", "lemma_3_3_time_factor",
            "control_sigma0", "n1_limit_sgd", "theorem_3_6", "phase_II_test_falls",
            "decay_placement", "replica_independence", "eq_3_17_printed_B",
            "eq_B19_printed_rate", *(f"late_decay_{kind}_{s}" for s in starts
                                     for kind in ("prediction", "verdict"))} <= set(names)
    verdicts = {r["check"]: r["claim"] for r in rows if r["check"].startswith("late_decay_v")}
    # c > 0: the predicted minimum is inside the decay range, so later decay hurts after it
    assert "then hurts" in verdicts["late_decay_verdict_cpos"]
    for start in ("cneg", "czero", "random"):
        assert "helps at every decay step" in verdicts[f"late_decay_verdict_{start}"]
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
