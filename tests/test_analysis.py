"""Decay timing, trends and claim verdicts against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdecay import analysis, data, subpaths, train, trajectories
from lrdecay import config as lrconfig
from tests.conftest import load_tiny


def metrics_frame(main_test: list[float], subpaths: dict[int, list[float]],
                  sub_train: dict[int, list[float]] | None = None) -> pd.DataFrame:
    """A metrics table: main path at epochs 0..len-1, subpath b at epochs b..b+len-1."""
    rows = [{"path": "main", "branch_epoch": pd.NA, "epoch": e, "epochs_after_decay": pd.NA,
             "train_loss": 0.0, "test_loss": v, "test_acc": 0.5}
            for e, v in enumerate(main_test)]
    for b, values in subpaths.items():
        train_values = (sub_train or {}).get(b, [0.0] * len(values))
        rows += [{"path": "subpath", "branch_epoch": b, "epoch": b + t, "epochs_after_decay": t,
                  "train_loss": train_values[t], "test_loss": v, "test_acc": 0.6}
                 for t, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_decay_timing_by_hand_and_a_missing_control_said_in_words() -> None:
    main = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45]  # epochs 0..6
    metrics = metrics_frame(main, {2: [0.8, 0.6, 0.55, 0.52], 4: [0.6, 0.4, 0.35, 0.3]})
    table = analysis.decay_timing_table(metrics)
    first, second = table.iloc[0], table.iloc[1]
    assert (first.branch_epoch, first.total_epoch) == (2, 5)
    assert first.subpath_final_test_loss == 0.52
    assert first.main_test_loss_at_branch == 0.8  # main at epoch 2
    assert first.main_test_loss_at_total_epoch == 0.5  # main at epoch 5
    assert first.decay_gain_vs_main_same_epoch == pytest.approx(0.5 - 0.52)
    assert first.control == "computed"
    assert second.total_epoch == 7 and np.isnan(second.main_test_loss_at_total_epoch)
    assert "main path ends at epoch 6" in second.control
    assert "schedule.main_epochs >= 7" in second.control


def test_decay_timing_on_a_tiny_run_matches_the_metrics_looked_up_by_hand(tmp_path: Path) -> None:
    config = load_tiny(tmp_path, schedule={"main_epochs": 8, "last_branch_epoch": 4})
    plan = lrconfig.Plan(config)
    data.prepare(config["data"], config["data"]["seed"], plan.data_path)
    for end in [0, *plan.segment_ends]:
        train.run_main_segment(config, str(plan.data_path), end, str(plan.segment_dir(end)), "cpu")
    for group in range(len(plan.subpath_groups)):
        subpaths.run_subpath_group(config, str(plan.data_path), group,
                                   str(plan.group_dir(group)), "cpu")
    csvs = [plan.segment_dir(e) / "metrics.csv" for e in [0, *plan.segment_ends]]
    csvs += [plan.group_dir(g) / "metrics.csv" for g in range(len(plan.subpath_groups))]
    metrics = trajectories.gather_metrics(csvs, tmp_path / "metrics.csv")
    table = analysis.decay_timing_table(pd.read_csv(tmp_path / "metrics.csv"))
    assert table["branch_epoch"].tolist() == [2, 4]  # tiny: branches 2, 4; 3 epochs each
    for row in table.itertuples():
        main = metrics[(metrics.path == "main")]
        sub = metrics[(metrics.path == "subpath") & (metrics.branch_epoch == row.branch_epoch)]
        last = sub[sub.epoch == row.branch_epoch + 3].iloc[0]
        at_total = main[main.epoch == row.branch_epoch + 3].test_loss.iloc[0]
        assert row.total_epoch == row.branch_epoch + 3
        assert row.subpath_final_test_loss == last.test_loss
        assert row.subpath_final_train_loss == last.train_loss
        at_branch = main[main.epoch == row.branch_epoch].test_loss.iloc[0]
        assert row.main_test_loss_at_branch == at_branch
        assert row.main_test_loss_at_total_epoch == at_total
        assert row.decay_gain_vs_main_same_epoch == at_total - last.test_loss
        assert row.control == "computed"


def test_trend_measures_by_hand() -> None:
    assert analysis.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert analysis.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert np.isnan(analysis.spearman([1, 2], [2, 1]))
    assert analysis.slope_per_100([0, 100, 200], [1.0, 0.5, 0.0]) == pytest.approx(-0.5)


def test_seed_summary_by_hand() -> None:
    s = analysis.seed_summary([1.0, 2.0, 3.0])
    assert (s["mean"], s["std"]) == (2.0, 1.0)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert np.isnan(analysis.seed_summary([1.0])["ci_low"])


def test_aggregate_over_seeds_has_the_mean_and_interval_per_branch() -> None:
    tables = {s: analysis.decay_timing_table(metrics_frame([1.0] * 9, {2: [0.5, 0.4 + s / 10]}))
              for s in range(3)}
    agg = analysis.aggregate_decay_timing(tables)
    row = agg[(agg.branch_epoch == 2) & (agg.quantity == "subpath_final_test_loss")].iloc[0]
    assert row.n_seeds == 3 and row["mean"] == pytest.approx(0.5)
    assert row["std"] == pytest.approx(0.1)


def study(direction: float, seed: int, n_branches: int = 8) -> dict:
    """Synthetic tables of one seed: final test loss changing by `direction` per branch."""
    rng = np.random.default_rng(seed)
    subs = {}
    for i in range(n_branches):
        b = 10 * (i + 1)
        final = 1.0 + direction * i + rng.normal(0, 0.01)
        subs[b] = list(np.linspace(final + 0.5, final, 20))
    metrics = metrics_frame([2.0] * 300, subs, {b: list(np.linspace(1, 0.1, 20)) for b in subs})
    variance = pd.DataFrame({"component": [1, 2, 3], "explained_variance_ratio": [0.6, 0.2, 0.04],
                             "cumulative_ratio": [0.6, 0.8, 0.84]})
    epochs = np.arange(50)
    coords = [pd.DataFrame({"path": "main", "branch_epoch": pd.NA, "epoch": epochs,
                            "pc1": epochs * 1.0, "pc2": rng.normal(0, 0.5, 50)})]
    for b in subs:  # subpaths move across PC1
        coords.append(pd.DataFrame({"path": "subpath", "branch_epoch": b, "epoch": [b, b + 19],
                                    "pc1": [b / 10, b / 10 + 0.1], "pc2": [0.0, 3.0]}))
    return {"metrics": metrics, "variance": variance, "coordinates": pd.concat(coords)}


def claims(direction: float | list[float], seeds: int) -> pd.DataFrame:
    """Claims of `seeds` synthetic runs; `direction` per seed, or one for all."""
    directions = direction if isinstance(direction, list) else [direction] * seeds
    runs = {s: study(directions[s], s) for s in range(seeds)}
    return analysis.claims_table({s: r["metrics"] for s, r in runs.items()},
                                 {s: r["variance"] for s, r in runs.items()},
                                 {s: r["coordinates"] for s, r in runs.items()}).set_index("claim")


@pytest.mark.parametrize("seeds", [1, 3])
def test_claim_verdicts_follow_the_data(seeds: int) -> None:
    later_better = claims(-0.05, seeds)
    test_claim = "later decay gives a lower final test loss"
    assert later_better.loc[test_claim, "verdict"] == "supported"
    assert later_better.loc[test_claim, "ci_high"] < 0
    assert claims(+0.05, seeds).loc[test_claim, "verdict"] == "contradicted"
    mixed = [-0.05, 0.05, -0.05] if seeds > 1 else 0.0  # trends of both signs, or none
    assert claims(mixed, seeds).loc[test_claim, "verdict"] == "inconclusive"
    over = later_better.loc[test_claim, "interval_over"]
    assert over.startswith("seeds") if seeds > 1 else over.startswith("branch points")
    pcs = later_better.loc["PC1 + PC2 explain a large share of the variance"]
    assert pcs["value"] == pytest.approx(0.8) and pcs["verdict"] == "supported"
    assert pcs["paper_value"] == "0.7793"
    assert later_better.loc["the main path travels along PC1", "verdict"] == "supported"
    assert later_better.loc["subpaths leave the PC1 direction", "verdict"] == "supported"
    assert set(later_better["verdict"]) <= {"supported", "contradicted", "inconclusive"}


def test_equal_budget_compares_subpaths_at_one_total_epoch() -> None:
    metrics = metrics_frame([1.0] * 20, {2: [0.9, 0.8, 0.7, 0.6], 4: [0.5, 0.4, 0.3, 0.2]})
    epoch, table = analysis.equal_budget_losses(metrics)
    assert epoch == 5  # branch 2 ends at 5, branch 4 at 7: the last epoch both reach is 5
    assert table["test_loss"].tolist() == [0.6, 0.4]  # branch 2 at +3, branch 4 at +1


def test_too_few_branch_points_or_seeds_give_no_interval_and_no_verdict() -> None:
    """Three branch points ranked perfectly are rho = -1 in every resample: not evidence."""
    runs = {0: study(-0.05, 0, n_branches=3)}
    table = analysis.claims_table({0: runs[0]["metrics"]}, {0: runs[0]["variance"]},
                                  {0: runs[0]["coordinates"]}).set_index("claim")
    row = table.loc["later decay gives a lower final test loss"]
    assert row["value"] == pytest.approx(-1.0)
    assert np.isnan(row["ci_low"]) and row["verdict"] == "inconclusive"
    assert "too few for an interval" in row["interval_over"]
    two = claims(-0.05, 2).loc["later decay gives a lower final test loss"]
    assert two["verdict"] == "inconclusive" and "need 3" in two["interval_over"]
