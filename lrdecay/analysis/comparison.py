"""The comparison across a sweep's points (lrdecay.config.sweep): one table, and a figure that only
draws it.

sweep.csv has a row per point and decay (branch) epoch: the point, its swept values, the main
path it branched from, and the seed statistics of the subpath's final test loss and of the gain
over the main path trained on for as long (decay_gain_vs_main_same_epoch > 0: the decay, not
the extra training, lowered the loss), each read from the point's own decay_timing.csv (the
run-level table of lrdecay.analysis.claims.aggregate_decay_timing), so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lrdecay.analysis import figures

# decay_timing.csv quantity -> the prefix of its columns in sweep.csv
QUANTITIES = {
    "subpath_final_test_loss": "final_test_loss",
    "main_test_loss_at_total_epoch": "main_test_loss_same_epoch",
    "decay_gain_vs_main_same_epoch": "decay_gain",
}
STATS = ("mean", "std", "ci_low", "ci_high")


def table(points: Sequence[dict[str, Any]], timings: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The comparison table: `points` (each its name, main path and swept values, as the rule's
    params give them) beside each one's run-level decay_timing.csv in `timings`, in order."""
    if len(points) != len(timings):
        raise ValueError(f"{len(points)} points but {len(timings)} decay_timing tables")
    rows = []
    for point, timing in zip(points, timings, strict=True):
        for branch, group in timing.groupby("branch_epoch", sort=True):
            by = group.set_index("quantity")
            if "subpath_final_test_loss" not in by.index:
                raise ValueError(f"point {point['point']}: its decay_timing.csv has no "
                                 f"subpath_final_test_loss row for branch epoch {branch}")
            row = {**point, "branch_epoch": int(branch),
                   "n_seeds": int(by.loc["subpath_final_test_loss", "n_seeds"])}
            for quantity, prefix in QUANTITIES.items():
                for stat in STATS:
                    row[f"{prefix}_{stat}"] = (float(by.loc[quantity, stat])
                                               if quantity in by.index else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def figure(comparison: pd.DataFrame) -> plt.Figure:
    """Final test loss against the decay epoch, one line per point, its band the 95 % interval
    over seeds (where there are several); only draws sweep.csv."""
    fig, ax = figures._figure(3.2)  # noqa: SLF001 (the study's figure size and style)
    n_seeds = int(comparison["n_seeds"].max())
    with plt.rc_context(figures.STYLE):
        for name, rows in comparison.groupby("point", sort=False):
            rows = rows.sort_values("branch_epoch")
            line, = ax.plot(rows["branch_epoch"], rows["final_test_loss_mean"], "o-", ms=3,
                            label=name, gid=name)
            low = rows["final_test_loss_ci_low"].to_numpy(float)
            high = rows["final_test_loss_ci_high"].to_numpy(float)
            shown = np.isfinite(low) & np.isfinite(high) & (low > 0)
            if shown.any():
                ax.fill_between(rows["branch_epoch"], low, high, where=shown,
                                color=line.get_color(), alpha=0.2, lw=0)
        title = "Sweep: subpath final test loss by decay epoch"
        if n_seeds > 1:
            title += f"\n(mean of {n_seeds} seeds, band: 95 % interval)"
        ax.set(xlabel=r"decay epoch $t_{\mathrm{d}}$", ylabel="final test loss", yscale="log",
               title=title)
        ax.grid(alpha=0.3, lw=0.4)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, fontsize=6)
        fig.tight_layout()
    return fig
