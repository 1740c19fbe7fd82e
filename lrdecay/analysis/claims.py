"""The study's answers from its result tables: decay timing, trends, and a verdict per claim.

Section 2 of the paper makes five claims about the neural-network runs. Each becomes a row of
`claims.csv` with the measured value, a 95 % interval, the paper's value where one is printed, and
a verdict (supported, contradicted or inconclusive) on the claim as the paper states it,
decided by the rule written in the row (where the paper claims that decay timing has little
effect, a strong trend contradicts it).
Intervals are bootstrapped over seeds; with one seed, over the units inside the run (branch points
or subpaths), and the row says which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lrdecay.core import io
from lrdecay.training import trajectories

log = logging.getLogger(__name__)

BOOTSTRAP_SAMPLES = 2000
PAPER_PC12_SHARE = 0.7793  # Section 2.2: "The primary two principal components account for 77.93%"


def decay_timing_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each subpath's final losses beside the main path's at the branch and at the same total epoch.

    Lower final test loss for later decay can come from decaying later or merely from training
    longer; the main path at the same total epoch separates the two. Where the main path stops
    before a subpath's total epoch, `control` says so in words instead of leaving a bare NaN.
    """
    main = metrics[metrics["path"] == "main"].set_index("epoch")
    main_end = int(main.index.max())
    sub = metrics[metrics["path"] == "subpath"]
    final = sub.loc[sub.groupby("branch_epoch")["epochs_after_decay"].idxmax()]
    rows = []
    for row in final.itertuples(index=False):
        at_total = main["test_loss"].get(row.epoch, np.nan)
        rows.append({
            "branch_epoch": int(row.branch_epoch),
            "total_epoch": int(row.epoch),
            "subpath_final_train_loss": row.train_loss,
            "subpath_final_test_loss": row.test_loss,
            "subpath_final_test_acc": row.test_acc,
            "main_test_loss_at_branch": main["test_loss"].get(row.branch_epoch, np.nan),
            "main_test_loss_at_total_epoch": at_total,
            "decay_gain_vs_main_same_epoch": at_total - row.test_loss,
            "control": "computed" if row.epoch <= main_end else (
                f"not computed: the main path ends at epoch {main_end}, before this subpath's "
                f"total epoch {int(row.epoch)}; set schedule.main_epochs >= "
                f"{int(final['epoch'].max())}"),
        })
    return pd.DataFrame(rows).sort_values("branch_epoch", ignore_index=True)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank: scipy.stats.rankdata(method="average") without
    its per-call overhead (the bootstraps rank a few values tens of thousands of times). Every
    rank is a whole or half number, so the floats equal scipy's exactly (tested)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.empty(len(values), bool)  # where each run of ties starts
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    dense = np.cumsum(first)
    count = np.concatenate((np.flatnonzero(first), [len(values)]))
    ranks = np.empty(len(values))
    ranks[order] = 0.5 * (count[dense] + count[dense - 1] + 1)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN for fewer than 3 points, a constant series or a NaN):
    the Pearson correlation of the ranks, computed as scipy.stats.spearmanr computes it
    (np.corrcoef of the ranked columns), so the values are scipy's to the bit (tested)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    ranked = np.column_stack((average_ranks(x), average_ranks(y)))
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


def slope_per_100(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y against x, per 100 epochs of x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(100 * np.polyfit(x, y, 1)[0])


def seed_summary(values: Sequence[float]) -> dict:
    """Mean, standard deviation and the t-based 95 % interval of the mean across seeds."""
    v = np.asarray(values, float)
    n = len(v)
    mean = float(v.mean())
    if n < 2:
        return {"n_seeds": n, "mean": mean, "std": float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan")}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))
    return {"n_seeds": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def aggregate_decay_timing(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per branch epoch and quantity: mean, std and 95 % interval across seeds (tidy)."""
    columns = ["subpath_final_train_loss", "subpath_final_test_loss", "main_test_loss_at_branch",
               "main_test_loss_at_total_epoch", "decay_gain_vs_main_same_epoch"]
    joined = pd.concat([t.assign(seed=s) for s, t in tables.items()], ignore_index=True)
    rows = []
    for branch, group in joined.groupby("branch_epoch"):
        for column in columns:
            values = group[column].dropna()
            if len(values):
                rows.append({"branch_epoch": int(branch), "quantity": column,
                             **seed_summary(values)})
    return pd.DataFrame(rows)


def bootstrap_interval(units: Sequence, statistic: Callable[[list], float], seed: int,
                       samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """Percentile 95 % interval of `statistic` over resamples (with replacement) of `units`."""
    units = list(units)
    if len(units) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [statistic([units[i] for i in rng.integers(0, len(units), len(units))])
             for _ in range(samples)]
    draws = np.asarray(draws, float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < samples // 2:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


MIN_SEEDS = 3  # a percentile bootstrap over fewer values only restates them
MIN_UNITS = 8  # branch points or subpaths: fewer give degenerate resamples (rho of 3 points)


def _over_seeds_or_units(per_seed_units: dict[int, list], statistic: Callable[[list], float],
                         seed: int, unit_name: str) -> dict:
    """Value = mean over seeds of the statistic; interval bootstrapped over seeds (>= 3 seeds)
    or over the units of a single seed (>= 8 units); otherwise no interval, said in words."""
    values = [statistic(units) for units in per_seed_units.values()]
    value = _finite_mean(values)
    low = high = float("nan")
    if len(per_seed_units) >= 2:
        over = f"seeds (n = {len(values)})"
        if len(values) >= MIN_SEEDS:
            low, high = bootstrap_interval(values, _finite_mean, seed)
        else:
            over += f": too few for an interval (need {MIN_SEEDS})"
    else:
        (units,) = per_seed_units.values()
        over = f"{unit_name} of the one seed (n = {len(units)})"
        if len(units) >= MIN_UNITS:
            low, high = bootstrap_interval(units, statistic, seed)
            over += "; add seeds for an interval over seeds"
        else:
            over += f": too few for an interval (need {MIN_UNITS}, or {MIN_SEEDS} seeds)"
    return {"value": value, "ci_low": low, "ci_high": high, "interval_over": over}


def _sign_verdict(m: dict, want: str) -> str:
    """supported/contradicted when the interval excludes 0 on the expected/opposite side."""
    low, high = m["ci_low"], m["ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    below, above = high < 0, low > 0
    if (below and want == "negative") or (above and want == "positive"):
        return "supported"
    if below or above:
        return "contradicted"
    return "inconclusive"


WEAK_TREND = 0.5  # |Spearman rho| below this is no strong monotone trend


def _no_trend_verdict(m: dict, bound: float) -> str:
    """supported when the interval lies inside (-bound, bound); contradicted when it lies
    wholly beyond one of them (a strong trend either way); no interval: inconclusive."""
    low, high = m["ci_low"], m["ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    if -bound < low and high < bound:
        return "supported"
    if high <= -bound or low >= bound:
        return "contradicted"
    return "inconclusive"


def _threshold_verdict(m: dict, threshold: float, want: str) -> str:
    """Interval (or, with no interval, the value) wholly above/below `threshold`."""
    low, high = m["ci_low"], m["ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        low = high = m["value"]
    if not np.isfinite(low):
        return "inconclusive"
    if want == "above":
        return "supported" if low >= threshold else "contradicted" if high < threshold else (
            "inconclusive")
    return "supported" if high < threshold else "contradicted" if low >= threshold else (
        "inconclusive")


def _trend_units(table: pd.DataFrame, column: str) -> list[tuple[float, float]]:
    return [(b, v) for b, v in zip(table["branch_epoch"], table[column], strict=True)
            if np.isfinite(v)]


def _rho(units: list) -> float:
    return spearman([u[0] for u in units], [u[1] for u in units])


def _slope(units: list) -> float:
    return slope_per_100([u[0] for u in units], [u[1] for u in units])


def equal_budget_losses(metrics: pd.DataFrame) -> tuple[int | None, pd.DataFrame]:
    """Test loss of every decayed subpath at the last total epoch that all of them reach.

    Later branches have trained fewer epochs after the decay at that epoch, but every subpath
    has had the same total training: a lower loss for later decay there is not "more training".
    A subpath at 0 epochs after decay is the undecayed main path at its branch point, so it is
    left out: the comparison is between decayed points only.
    """
    sub = metrics[metrics["path"] == "subpath"]
    if sub.empty:
        return None, pd.DataFrame(columns=["branch_epoch", "test_loss"])
    common = int(sub.groupby("branch_epoch")["epoch"].max().min())
    at = sub[(sub["epoch"] == common) & (sub["epochs_after_decay"] > 0)]
    return common, at[["branch_epoch", "test_loss"]].sort_values("branch_epoch", ignore_index=True)


def trend_table(timings: dict[int, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Trend measures with 95 % bootstrap intervals: final losses against the decay epoch
    (Spearman rho, slope per 100 epochs) and the gain over the main path at the same epoch."""
    rows = []
    for column, label in [("subpath_final_test_loss", "final test loss"),
                          ("subpath_final_train_loss", "final train loss"),
                          ("decay_gain_vs_main_same_epoch", "gain over the main path")]:
        log.info("trends: %s against the decay epoch (bootstrap intervals)", label)  # progress
        units = {s: _trend_units(t, column) for s, t in timings.items()}
        for stat, fn in [("spearman_rho", _rho), ("slope_per_100_epochs", _slope)]:
            rows.append({"quantity": label, "measure": stat,
                         **_over_seeds_or_units(units, fn, seed, "branch points")})
        values = {s: [v for _, v in u] for s, u in units.items()}
        rows.append({"quantity": label, "measure": "mean over branch points",
                     **_over_seeds_or_units(values, _mean, seed, "branch points")})
    return pd.DataFrame(rows)


def _mean(values: list) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN, without a warning, when there are none)."""
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else float("nan")


def _main_pc1_share(coords: pd.DataFrame) -> float:
    main = coords[coords["path"] == "main"]
    v1, v2 = main["pc1"].var(), main["pc2"].var()
    return float(v1 / (v1 + v2)) if v1 + v2 > 0 else float("nan")


def _subpath_displacements(coords: pd.DataFrame) -> list[float]:
    """Each subpath's share of its start-to-end move in the plane that lies along PC1."""
    shares = []
    for _, path in coords[coords["path"] == "subpath"].groupby("branch_epoch"):
        path = path.sort_values("epoch")
        d1 = path["pc1"].iloc[-1] - path["pc1"].iloc[0]
        d2 = path["pc2"].iloc[-1] - path["pc2"].iloc[0]
        if d1 * d1 + d2 * d2 > 0:
            shares.append(float(d1 * d1 / (d1 * d1 + d2 * d2)))
    return shares


def _main_norm_units(metrics: pd.DataFrame) -> list[tuple[float, float]]:
    """(epoch, param_norm) of the main path from the first to the last branch point: the
    large-learning-rate phase in which the subpaths branch off."""
    sub = metrics[metrics["path"] == "subpath"]
    main = metrics[metrics["path"] == "main"]
    if sub.empty:
        return []
    low, high = sub["branch_epoch"].min(), sub["branch_epoch"].max()
    main = main[(main["epoch"] >= low) & (main["epoch"] <= high)]
    return list(zip(main["epoch"].astype(float), main["param_norm"].astype(float), strict=True))


def weight_decay_note(weight_decay: float | None) -> str:
    """The preset's weight decay in words: it shrinks the norm by itself, whatever SGD's drift."""
    value = "" if weight_decay is None else f" = {weight_decay:g}"
    return f"weight decay (optimizer.weight_decay{value}) shrinks the norm by itself"


SIGN_RULE = ("supported if the 95 % interval of rho lies below 0, contradicted if above 0, "
             "otherwise inconclusive")
POSITIVE_RULE = ("supported if the 95 % interval of rho lies above 0, contradicted if below 0, "
                 "otherwise inconclusive")


def _norm_rows(metrics: dict[int, pd.DataFrame], seed: int, row: Callable,
               weight_decay: float | None) -> None:
    """The theory's mechanism (Theorem 3.4: SGD at the large rate drifts toward the minimum-norm
    solution): the main path's norm falls between the branch points, and later decay ends at a
    smaller norm. Weight decay shrinks the norm by itself, so the row states the preset's."""
    m = _over_seeds_or_units({s: _main_norm_units(mt) for s, mt in metrics.items()}, _rho, seed,
                             "epochs")
    row("the norm falls during the large-learning-rate phase",
        "Spearman rho of the main path's param_norm against the epoch, first to last branch "
        f"point ({weight_decay_note(weight_decay)})", m,
        "drift toward the minimum-norm solution (Theorem 3.4; not measured on networks)",
        _sign_verdict(m, "negative"), SIGN_RULE)
    final = {}
    for s, mt in metrics.items():
        sub = mt[mt["path"] == "subpath"]
        ends = sub.loc[sub.groupby("branch_epoch")["epochs_after_decay"].idxmax()]
        final[s] = list(zip(ends["branch_epoch"].astype(float), ends["param_norm"].astype(float),
                            strict=True))
    m = _over_seeds_or_units(final, _rho, seed, "branch points")
    row("later decay ends at a smaller norm",
        "Spearman rho of each subpath's final param_norm against the decay epoch", m,
        "implied by Theorem 3.4 (not measured on networks)", _sign_verdict(m, "negative"),
        SIGN_RULE)


MECHANISM_COLUMNS = ["branch_epoch", "norm_at_decay", "final_norm", "sharpness_at_decay",
                     "final_sharpness", "final_test_loss"]


def mechanism_units(metrics: pd.DataFrame, sharpness: pd.DataFrame) -> pd.DataFrame:
    """One row per subpath of one seed: the main path's norm and top Hessian eigenvalue at its
    branch point, its own at its end, and its final test loss (rows missing any value left out).

    The two explanations of late decay make opposite predictions about what these columns
    track: the paper's (Theorem 3.4) the norm at decay, the flat-minima argument it disputes
    (Section 2.2) the sharpness at the end.
    """
    main = metrics[metrics["path"] == "main"].set_index("epoch")
    sub = metrics[metrics["path"] == "subpath"]
    ends = sub.loc[sub.groupby("branch_epoch")["epochs_after_decay"].idxmax()]
    top = {(p, int(b)): v for p, b, v in zip(sharpness["point"], sharpness["branch_epoch"],
                                            sharpness["top_eigenvalue"], strict=True)}
    rows = [{"branch_epoch": int(e.branch_epoch),
             "norm_at_decay": float(main["param_norm"].get(e.branch_epoch, np.nan)),
             "final_norm": float(e.param_norm),
             "sharpness_at_decay": top.get(("branch", int(e.branch_epoch)), np.nan),
             "final_sharpness": top.get(("subpath_end", int(e.branch_epoch)), np.nan),
             "final_test_loss": float(e.test_loss)} for e in ends.itertuples(index=False)]
    table = pd.DataFrame(rows, columns=MECHANISM_COLUMNS)
    return table.dropna().sort_values("branch_epoch", ignore_index=True)


MECHANISM_QUANTITIES = {  # quantity -> (x, what it is)
    "main_norm": ("epoch", "the main path's parameter norm"),
    "norm_at_decay": ("branch_epoch", "the main path's norm at the decay epoch"),
    "final_norm": ("branch_epoch", "the norm at the subpath's end"),
    "sharpness_at_decay": ("branch_epoch", "the top Hessian eigenvalue at the decay epoch"),
    "final_sharpness": ("branch_epoch", "the top Hessian eigenvalue at the subpath's end"),
}


def mechanism_bands(metrics: dict[int, pd.DataFrame],
                    sharpness: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """norm_sharpness.csv: per quantity of MECHANISM_QUANTITIES and x (epoch or decay epoch), the
    mean across seeds with its 95 % interval (seed_summary), tidy like decay_timing.csv."""
    parts = []
    for s, mt in metrics.items():
        main = mt[mt["path"] == "main"]
        parts.append(pd.DataFrame({"seed": s, "quantity": "main_norm", "x": main["epoch"],
                                   "value": main["param_norm"]}))
        units = mechanism_units(mt, sharpness[s])
        for quantity in list(MECHANISM_QUANTITIES)[1:]:
            parts.append(pd.DataFrame({"seed": s, "quantity": quantity,
                                       "x": units["branch_epoch"], "value": units[quantity]}))
    joined = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    rows = [{"quantity": quantity, "x": int(x), **seed_summary(group["value"])}
            for (quantity, x), group in joined.groupby(["quantity", "x"], sort=False)]
    return pd.DataFrame(rows, columns=["quantity", "x", "n_seeds", "mean", "std", "ci_low",
                                       "ci_high"])


def _rho_of(x: str, y: str) -> Callable[[list], float]:
    """Spearman rho between two fields of the units (rows of mechanism_units)."""
    return lambda units: spearman([u[x] for u in units], [u[y] for u in units])


def _sharpness_rows(metrics: dict[int, pd.DataFrame], sharpness: dict[int, pd.DataFrame],
                    seed: int, row: Callable) -> None:
    """Flatness against the norm: does later decay end flatter, and which of the norm at decay
    and the sharpness at the end tracks the final test loss across decay epochs?"""
    units = {s: mechanism_units(metrics[s], sharpness[s]).to_dict("records") for s in metrics}
    by_epoch = {s: [(u["branch_epoch"], u["final_sharpness"]) for u in us]
                for s, us in units.items()}
    m = _over_seeds_or_units(by_epoch, _rho, seed, "branch points")
    row("later decay ends at a flatter point",
        "Spearman rho of the top Hessian eigenvalue of the train loss at each subpath's end "
        "against the decay epoch", m,
        "the flat-minima argument of earlier work (Wu et al. 2018 and others), which the paper "
        "calls 'not sufficient' (Section 2.2); not measured in the paper",
        _sign_verdict(m, "negative"), SIGN_RULE)
    norm = _rho_of("norm_at_decay", "final_test_loss")
    m = _over_seeds_or_units(units, norm, seed, "branch points")
    row("the norm at decay predicts the final test loss",
        "Spearman rho of the main path's param_norm at the decay epoch against the subpath's "
        "final test loss", m, "implied by Theorem 3.4 (not measured on networks)",
        _sign_verdict(m, "positive"), POSITIVE_RULE)
    sharp = _rho_of("final_sharpness", "final_test_loss")
    m = _over_seeds_or_units(units, sharp, seed, "branch points")
    row("the sharpness at the end predicts the final test loss",
        "Spearman rho of the top Hessian eigenvalue at the subpath's end against its final test "
        "loss", m, "the flat-minima argument (Section 2.2: 'not sufficient'); not measured",
        _sign_verdict(m, "positive"), POSITIVE_RULE)
    m = _over_seeds_or_units(units, lambda us: abs(norm(us)) - abs(sharp(us)), seed,
                             "branch points")
    row("the norm predicts the final test loss better than the sharpness",
        "|rho(norm at decay, final test loss)| - |rho(sharpness at the end, final test loss)|, "
        "both over the same subpaths", m,
        "the paper's explanation (minimum-norm drift, Theorem 3.4) over flat minima "
        "(Section 2.2); not measured", _sign_verdict(m, "positive"),
        "supported if the 95 % interval of the difference lies above 0, contradicted if below "
        "0, otherwise inconclusive")


def claims_table(metrics: dict[int, pd.DataFrame], variance: dict[int, pd.DataFrame],
                 coordinates: dict[int, pd.DataFrame], seed: int = 0,
                 sharpness: dict[int, pd.DataFrame] | None = None,
                 weight_decay: float | None = None) -> pd.DataFrame:
    """One row per claim of the paper's Section 2, each seed's tables keyed by the seed; the
    mechanism's rows where the metrics hold norms (and `sharpness` the top eigenvalues)."""
    timings = {s: decay_timing_table(m) for s, m in metrics.items()}
    rows = []

    def row(claim: str, measure: str, m: dict, paper: str, verdict: str, rule: str) -> None:
        rows.append({"claim": claim, "measure": measure, "value": m["value"],
                     "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                     "interval_over": m["interval_over"], "paper_value": paper,
                     "verdict": verdict, "rule": rule})
        log.info("claim %d: %s (%s)", len(rows), claim, measure)  # progress: bootstraps

    column = "subpath_final_test_loss"
    m = _over_seeds_or_units({s: _trend_units(t, column) for s, t in timings.items()}, _rho,
                             seed, "branch points")
    row("later decay gives a lower final test loss",
        f"Spearman rho of {column} against the decay epoch", m,
        "lower for later decay (Fig. 1c)", _sign_verdict(m, "negative"), SIGN_RULE)

    # The paper's claim here is the absence of a trend: a strong one contradicts it.
    column = "subpath_final_train_loss"
    m = _over_seeds_or_units({s: _trend_units(t, column) for s, t in timings.items()}, _rho,
                             seed, "branch points")
    row("decay timing has little effect on the final train loss",
        f"Spearman rho of {column} against the decay epoch", m,
        "small impact, 'seemingly chaotic' (Fig. 1b)", _no_trend_verdict(m, WEAK_TREND),
        f"supported if the 95 % interval of rho lies inside (-{WEAK_TREND}, {WEAK_TREND}) (no "
        f"strong monotone trend), contradicted if it lies wholly beyond -{WEAK_TREND} or "
        f"+{WEAK_TREND} (a strong trend), otherwise inconclusive")

    budgets = {s: equal_budget_losses(mt) for s, mt in metrics.items()}
    epochs = sorted({e for e, _ in budgets.values() if e is not None})
    m = _over_seeds_or_units(
        {s: _trend_units(t, "test_loss") for s, (_, t) in budgets.items()}, _rho, seed,
        "branch points")
    row("the benefit is more than 'more training'",
        f"Spearman rho of test loss against the decay epoch at equal total epoch {epochs}, "
        "decayed subpaths only (one at 0 epochs after decay is the undecayed main path: left "
        "out)", m,
        "not measured in the paper", _sign_verdict(m, "negative"),
        "the decayed subpaths compared at the same total epoch (the last one all reach): "
        + SIGN_RULE)

    m = _over_seeds_or_units(
        {s: [float(v.loc[v["component"] == 2, "cumulative_ratio"].iloc[0])]
         for s, v in variance.items()}, _mean, seed, "runs")
    further = max(float(v["explained_variance_ratio"].iloc[2:].max()) if len(v) > 2 else 0.0
                  for v in variance.values())
    row("PC1 + PC2 explain a large share of the variance",
        f"cumulative explained variance ratio of PC1-PC2 (largest further component "
        f"{further:.3f}; paper: each < 0.05)", m, f"{PAPER_PC12_SHARE}",
        _threshold_verdict(m, 0.5, "above"),
        "supported if the interval (or the value, without one) is >= 0.5, contradicted if "
        "< 0.5, otherwise inconclusive")

    m = _over_seeds_or_units({s: [_main_pc1_share(c)] for s, c in coordinates.items()}, _mean,
                             seed, "runs")
    row("the main path travels along PC1", "share of the main path's in-plane variance along PC1",
        m, "main path along PC1 (Fig. 2)", _threshold_verdict(m, 0.8, "above"),
        "supported if the interval (or the value) is >= 0.8, contradicted if < 0.8")

    if all("param_norm" in mt for mt in metrics.values()):  # runs from before the norms: none
        _norm_rows(metrics, seed, row, weight_decay)
        if sharpness is not None:
            _sharpness_rows(metrics, sharpness, seed, row)

    m = _over_seeds_or_units({s: _subpath_displacements(c) for s, c in coordinates.items()},
                             _mean, seed, "subpaths")
    row("subpaths leave the PC1 direction",
        "mean share of each subpath's start-to-end move in the plane that lies along PC1", m,
        "subpaths turn off the main path (Fig. 2)", _threshold_verdict(m, 0.5, "below"),
        "supported if the interval (or the value) is < 0.5 (moves mostly across PC1), "
        "contradicted if >= 0.5")
    return pd.DataFrame(rows)


def rounded(value: float, digits: int = 3) -> str:
    """`digits` significant digits for reading (-0.9999999999999999 -> -1); NaN as a dash."""
    return f"{value:.{digits}g}" if np.isfinite(value) else "-"


def readable_claims(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading: values and intervals rounded to 3 significant digits
    (claims.csv keeps them exact)."""
    return pd.DataFrame({
        "claim": table["claim"], "paper": table["paper_value"],
        "value": [rounded(v) for v in table["value"]],
        "95 % interval": [f"[{rounded(lo)}, {rounded(hi)}]" if np.isfinite(lo) else "-"
                          for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "interval over": table["interval_over"], "verdict": table["verdict"],
    })


def claims_markdown(table: pd.DataFrame) -> str:
    """The rounded claims table as a Markdown table (README, logs)."""
    readable = readable_claims(table)
    lines = ["| " + " | ".join(readable.columns) + " |", "|" + "---|" * readable.shape[1]]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
              for row in readable.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def claims_html(table: pd.DataFrame) -> str:
    """The rounded claims table as a small HTML page (the Snakemake report shows it)."""
    body = readable_claims(table).to_html(index=False, border=0)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>claims</title>"
            "<style>td,th{padding:2px 8px;text-align:left;vertical-align:top}</style></head>"
            "<body><p>Rounded to 3 significant digits; claims.csv holds the exact values and "
            f"the rule of each verdict.</p>\n{body}\n</body></html>\n")


def write_claims(seeds: Sequence[int], metrics: Sequence[str | Path],
                 variance: Sequence[str | Path], coordinates: Sequence[str | Path],
                 out_claims: str | Path, out_trends: str | Path,
                 out_readable: str | Path | None = None,
                 sharpness: Sequence[str | Path] | None = None,
                 weight_decay: float | None = None,
                 schedule: dict | None = None) -> pd.DataFrame:
    """Read each seed's tables (in the order of `seeds`), write claims.csv and trends.csv (and
    the rounded claims table as HTML at `out_readable`); log each verdict. The first seed seeds
    the bootstrap; `weight_decay`, the preset's, is stated in the norm row. The gathered
    metrics tables are verified against their records and, given the `schedule`, the plan
    (lrdecay.training.trajectories.load_metrics)."""
    def read(paths: Sequence[str | Path],
             reader: Callable[[str | Path], pd.DataFrame] = pd.read_csv) -> dict[int, pd.DataFrame]:
        return {s: reader(p) for s, p in zip(seeds, paths, strict=True)}

    plan = None if schedule is None else {"schedule": schedule}
    frames = {"metrics": read(metrics, lambda p: trajectories.load_metrics(p, plan)),
              "variance": read(variance),
              "coordinates": read(coordinates)}
    table = claims_table(frames["metrics"], frames["variance"], frames["coordinates"],
                         seed=seeds[0], sharpness=None if sharpness is None else read(sharpness),
                         weight_decay=weight_decay)
    io.write_csv(out_claims, table)
    if out_readable is not None:
        io.write_text(out_readable, claims_html(table))
    timings = {s: decay_timing_table(m) for s, m in frames["metrics"].items()}
    io.write_csv(out_trends, trend_table(timings, seeds[0]))
    for row in table.itertuples(index=False):
        log.info("%s: %s (value %.4g, 95 %% interval [%.4g, %.4g] over %s)", row.claim,
                 row.verdict, row.value, row.ci_low, row.ci_high, row.interval_over)
    log.info("claims, rounded:\n%s", claims_markdown(table))
    return table
