"""Decay timing, trends and claim verdicts against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdecay.analysis import claims as analysis
from lrdecay.analysis import summary
from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.training import data, subpaths, train, trajectories
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
    # read as the decay_timing job reads it: record and plan checked
    table = analysis.decay_timing_table(trajectories.load_metrics(tmp_path / "metrics.csv",
                                                                  config))
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


def _train_trend_claims(final_train: list[float], seeds: int = 3) -> pd.DataFrame:
    """Claims of `seeds` runs whose subpaths end at `final_train` (one per branch point)."""
    runs = {s: study(-0.05, s, n_branches=len(final_train)) for s in range(seeds)}
    for r in runs.values():
        m = r["metrics"]
        ends = m[m["path"] == "subpath"].groupby("branch_epoch")["epoch"].idxmax()
        m.loc[ends.to_numpy(), "train_loss"] = final_train
    return analysis.claims_table({s: r["metrics"] for s, r in runs.items()},
                                 {s: r["variance"] for s, r in runs.items()},
                                 {s: r["coordinates"] for s, r in runs.items()}).set_index("claim")


def test_train_loss_row_is_the_papers_claim_of_little_effect_and_summary_follows() -> None:
    """The paper says decay timing has little effect on the train loss: a strong monotone trend
    contradicts it (verdict -1 in summary.json), no trend supports it (+1)."""
    claim = "decay timing has little effect on the final train loss"
    strong = _train_trend_claims([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert strong.loc[claim, "value"] == pytest.approx(-1.0)
    assert strong.loc[claim, "verdict"] == "contradicted"
    assert "small impact" in strong.loc[claim, "paper_value"]
    flat = _train_trend_claims([0.3, 0.5, 0.1, 0.7, 0.8, 0.2, 0.6, 0.4])  # rho = 0.19
    assert abs(flat.loc[claim, "value"]) < analysis.WEAK_TREND
    assert flat.loc[claim, "verdict"] == "supported"
    variance = study(0.0, 0)["variance"]
    for table, code in [(strong, -1), (flat, 1)]:
        out = summary.summarise(pd.DataFrame(columns=["branch_epoch"]), variance,
                                claims=table.reset_index())
        assert out["claims"][claim]["verdict"] == code


def test_more_than_more_training_compares_decayed_points_only() -> None:
    """Branch 5 is at 0 epochs after decay at the common epoch 5: the undecayed main path."""
    metrics = metrics_frame([1.0] * 20, {2: [0.9, 0.8, 0.7, 0.6], 4: [0.5, 0.4, 0.3, 0.2],
                                         5: [0.95, 0.1, 0.1, 0.1]})
    epoch, table = analysis.equal_budget_losses(metrics)
    assert epoch == 5
    assert table["branch_epoch"].tolist() == [2, 4] and table["test_loss"].tolist() == [0.6, 0.4]
    row = claims(-0.05, 1).loc["the benefit is more than 'more training'"]
    assert "decayed subpaths only" in row["measure"]


def test_claims_read_rounded_while_the_csv_stays_exact(tmp_path: Path) -> None:
    table = pd.DataFrame({"claim": ["a"], "paper_value": ["yes"], "value": [-0.9999999999999999],
                          "ci_low": [-1.0000000000000002], "ci_high": [0.123456789],
                          "interval_over": ["seeds (n = 3)"], "verdict": ["supported"]})
    text = analysis.claims_markdown(table)
    assert "| a | yes | -1 | [-1, 0.123] | seeds (n = 3) | supported |" in text
    assert "0.9999" not in text and "0.9999" not in analysis.claims_html(table)
    assert analysis.rounded(float("nan")) == "-"
    runs = {s: study(-0.05, s) for s in range(1)}
    written = analysis.write_claims(
        [0], *[[_csv(tmp_path, f"{k}.csv", runs[0][k])] for k in
               ("metrics", "variance", "coordinates")],
        tmp_path / "claims.csv", tmp_path / "trends.csv", tmp_path / "claims.html")
    back = pd.read_csv(tmp_path / "claims.csv")
    assert back["value"].tolist() == pytest.approx(written["value"].tolist(), rel=1e-15,
                                                   nan_ok=True)
    assert "<table" in (tmp_path / "claims.html").read_text()


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    """`frame` written as a job writes its table (with the record the gathered metrics need)."""
    io.save_csv(folder / name, frame)
    return folder / name


def test_norm_rows_follow_the_norms() -> None:
    """The main path's norm falling between branch points and subpaths ending at a smaller norm
    for later decay are supported; the opposite trends contradicted; no norms: no rows."""
    def with_norms(sign: float) -> pd.DataFrame:
        runs = {s: study(-0.05, s) for s in range(3)}
        for r in runs.values():
            m = r["metrics"]
            m["param_norm"] = 10 + sign * np.where(m["path"] == "main", m["epoch"],
                                                   m["branch_epoch"].fillna(0).astype(float))
        return analysis.claims_table({s: r["metrics"] for s, r in runs.items()},
                                     {s: r["variance"] for s, r in runs.items()},
                                     {s: r["coordinates"] for s, r in runs.items()}
                                     ).set_index("claim")
    rows = ["the norm falls during the large-learning-rate phase",
            "later decay ends at a smaller norm"]
    assert (with_norms(-0.01).loc[rows, "verdict"] == "supported").all()
    assert (with_norms(+0.01).loc[rows, "verdict"] == "contradicted").all()
    assert not set(rows) & set(claims(-0.05, 1).index)


def _mechanism_study(seeds: int, norm_tracks: bool, flatter_later: bool = True,
                     ) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
    """Synthetic runs with norms and sharpness: the final test loss falls with the decay epoch;
    either the norm at decay tracks it (and the sharpness at the end is shuffled noise) or the
    other way round. The main path's sharpness at the branch points runs against the subpaths'
    ends, so reading the wrong point flips the flatter-point row."""
    metrics, sharpness = {}, {}
    for s in range(seeds):
        run = study(-0.05, s, n_branches=12)["metrics"]
        rng = np.random.default_rng(100 + s)
        branches = sorted(run["branch_epoch"].dropna().unique())
        order = rng.permutation(len(branches))
        tracking = {b: 10.0 - i for i, b in enumerate(branches)}  # falls with the decay epoch
        noise = {b: 10.0 - order[i] for i, b in enumerate(branches)}
        at_decay = tracking if norm_tracks else noise
        main = run["path"] == "main"
        run["param_norm"] = np.where(main, 50.0 - run["epoch"] / 10, 5.0)
        for b in branches:
            run.loc[main & (run["epoch"] == b), "param_norm"] = at_decay[b]
        ends = noise if norm_tracks else tracking
        if not flatter_later:
            ends = {b: 20.0 - v for b, v in ends.items()}
        sharpness[s] = pd.DataFrame(
            [{"point": "branch", "branch_epoch": b, "epoch": b, "top_eigenvalue": 100 - ends[b]}
             for b in branches]
            + [{"point": "subpath_end", "branch_epoch": b, "epoch": b + 19,
                "top_eigenvalue": ends[b]} for b in branches])
        metrics[s] = run
    return metrics, sharpness


def _mechanism_claims(metrics: dict, sharpness: dict, weight_decay: float | None = 5e-4,
                      ) -> pd.DataFrame:
    runs = {s: study(-0.05, s) for s in metrics}
    return analysis.claims_table(metrics, {s: r["variance"] for s, r in runs.items()},
                                 {s: r["coordinates"] for s, r in runs.items()},
                                 sharpness=sharpness, weight_decay=weight_decay
                                 ).set_index("claim")


NORM_AT_DECAY = "the norm at decay predicts the final test loss"
SHARPNESS_AT_END = "the sharpness at the end predicts the final test loss"
NORM_BETTER = "the norm predicts the final test loss better than the sharpness"
FLATTER = "later decay ends at a flatter point"


@pytest.mark.parametrize("seeds", [1, 3])
def test_norm_or_sharpness_rows_follow_which_one_tracks_the_test_loss(seeds: int) -> None:
    """Where the norm at decay tracks the final test loss the norm rows win (rho = 1); where
    the sharpness at the end does, they lose; and the flatter-point row reads the subpaths'
    ends (the branch points' eigenvalues run the other way)."""
    norm_case = _mechanism_claims(*_mechanism_study(seeds, norm_tracks=True))
    sharp_case = _mechanism_claims(*_mechanism_study(seeds, norm_tracks=False))
    assert norm_case.loc[NORM_AT_DECAY, "value"] == pytest.approx(1.0)
    assert norm_case.loc[NORM_AT_DECAY, "verdict"] == "supported"
    assert norm_case.loc[NORM_BETTER, "verdict"] == "supported"
    assert sharp_case.loc[SHARPNESS_AT_END, "value"] == pytest.approx(1.0)
    assert sharp_case.loc[SHARPNESS_AT_END, "verdict"] == "supported"
    assert sharp_case.loc[NORM_BETTER, "verdict"] == "contradicted"
    assert sharp_case.loc[NORM_BETTER, "ci_high"] < 0
    # |rho_norm| - |rho_sharp| worked out from the synthetic values, per seed, then the mean
    metrics, sharpness = _mechanism_study(seeds, norm_tracks=True)
    expected = []
    for s in metrics:
        units = analysis.mechanism_units(metrics[s], sharpness[s])
        expected.append(abs(analysis.spearman(units["norm_at_decay"], units["final_test_loss"]))
                        - abs(analysis.spearman(units["final_sharpness"],
                                                units["final_test_loss"])))
    assert norm_case.loc[NORM_BETTER, "value"] == pytest.approx(np.mean(expected))
    # the flatter-point row: ends falling with the decay epoch (sharp_case) support it; rising
    # ends contradict it
    assert sharp_case.loc[FLATTER, "verdict"] == "supported"
    rising = _mechanism_claims(*_mechanism_study(seeds, norm_tracks=False, flatter_later=False))
    assert rising.loc[FLATTER, "verdict"] == "contradicted"
    assert rising.loc[FLATTER, "value"] == pytest.approx(1.0)


def test_mechanism_units_pair_each_subpath_with_its_branch_and_end() -> None:
    metrics, sharpness = _mechanism_study(1, norm_tracks=True)
    units = analysis.mechanism_units(metrics[0], sharpness[0]).set_index("branch_epoch")
    top = sharpness[0].set_index(["point", "branch_epoch"])["top_eigenvalue"]
    main = metrics[0][metrics[0]["path"] == "main"].set_index("epoch")["param_norm"]
    for b, unit in units.iterrows():
        assert unit["final_sharpness"] == top[("subpath_end", b)]
        assert unit["sharpness_at_decay"] == top[("branch", b)]
        assert unit["norm_at_decay"] == main[b]
        assert unit["final_norm"] == 5.0
    assert len(units) == metrics[0]["branch_epoch"].nunique()


def test_norm_row_states_the_presets_weight_decay_and_no_sharpness_no_rows() -> None:
    metrics, sharpness = _mechanism_study(1, norm_tracks=True)
    table = _mechanism_claims(metrics, sharpness, weight_decay=5e-4)
    assert "optimizer.weight_decay = 0.0005" in table.loc[
        "the norm falls during the large-learning-rate phase", "measure"]
    runs = {0: study(-0.05, 0)}
    without = analysis.claims_table(metrics, {0: runs[0]["variance"]},
                                    {0: runs[0]["coordinates"]}).set_index("claim")
    assert not {NORM_AT_DECAY, SHARPNESS_AT_END, NORM_BETTER, FLATTER} & set(without.index)


def test_mechanism_bands_are_the_seed_means_and_intervals() -> None:
    metrics, sharpness = _mechanism_study(3, norm_tracks=True)
    bands = analysis.mechanism_bands(metrics, sharpness)
    assert set(bands["quantity"]) == set(analysis.MECHANISM_QUANTITIES)
    b = int(sorted(metrics[0]["branch_epoch"].dropna().unique())[2])
    values = [float(t.loc[(t["point"] == "subpath_end") & (t["branch_epoch"] == b),
                          "top_eigenvalue"].iloc[0]) for t in sharpness.values()]
    row = bands[(bands["quantity"] == "final_sharpness") & (bands["x"] == b)].iloc[0]
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(np.mean(values))
    half = 4.302653 * np.std(values, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert row["ci_high"] - row["mean"] == pytest.approx(half, rel=1e-5)
    main = bands[(bands["quantity"] == "main_norm") & (bands["x"] == 7)].iloc[0]
    assert main["mean"] == pytest.approx(50 - 0.7) and main["std"] == pytest.approx(0)


def test_spearman_is_scipys_to_the_bit() -> None:
    """analysis.spearman ranks without scipy's per-call overhead (the bootstraps call it tens of
    thousands of times); its values must be scipy.stats.spearmanr's exactly, with ties (average
    ranks), NaN (propagated) and constant series, or claims.csv and trends.csv would change."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(1)
    for trial in range(3000):
        n = int(rng.integers(3, 30))
        x, y = rng.normal(size=n), rng.normal(size=n)
        if trial % 3 == 1:
            x = rng.integers(0, 4, n).astype(float)  # many ties
        if trial % 3 == 2:
            x, y = np.round(3 * x), np.round(y, 1)
        assert (analysis.average_ranks(x) == scipy_stats.rankdata(x)).all()
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert np.isnan(analysis.spearman(x, y))
            continue
        assert analysis.spearman(x, y) == float(scipy_stats.spearmanr(x, y).statistic), trial
    assert np.isnan(analysis.spearman([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0]))
    assert np.isnan(analysis.spearman([1.0, 2.0], [2.0, 1.0]))
