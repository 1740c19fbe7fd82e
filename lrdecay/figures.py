"""Figures 1 and 2 of the paper, and the decay-timing summary, computed from the result tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from lrdecay import io  # noqa: E402


def save(fig: plt.Figure, png: str | Path, pdf: str | Path) -> None:
    """Write PNG and PDF atomically."""
    for path in (png, pdf):
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)


def log_levels(values: np.ndarray, n: int) -> np.ndarray | None:
    """Contour levels evenly spaced in log over the finite positive values (None if none)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return np.geomspace(positive.min(), positive.max(), n) if positive.size else None


def learning_curves(metrics: pd.DataFrame) -> plt.Figure:
    """Figure 1a: the main path's train and test loss and accuracy."""
    main = metrics[metrics["path"] == "main"].sort_values("epoch")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    kind = main["train_metric"].iloc[-1].replace("_", " ")
    ax_loss.plot(main["epoch"], main["train_loss"], label=f"train ({kind})")
    ax_loss.plot(main["epoch"], main["test_loss"], label="test")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="loss",
                title=f"Main path (lr {main['lr'].iloc[-1]:g})")
    ax_acc.plot(main["epoch"], main["train_acc"], label="train")
    ax_acc.plot(main["epoch"], main["test_acc"], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Main path accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def subpath_contour(metrics: pd.DataFrame, column: str, label: str) -> plt.Figure:
    """Figures 1b/1c: y = epochs before decay, x = epochs after decay, colour = loss."""
    sub = metrics[metrics["path"] == "subpath"]
    table = sub.pivot_table(index="branch_epoch", columns="epochs_after_decay", values=column)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    values = table.to_numpy()
    levels = log_levels(values, 20)
    norm = LogNorm(levels[0], levels[-1]) if levels is not None else None
    x, y = table.columns.to_numpy(dtype=float), table.index.to_numpy(dtype=float)
    if len(y) >= 2:
        mesh = ax.contourf(x, y, values, levels=20 if levels is None else levels, norm=norm,
                           cmap="viridis")
    else:  # a single subpath: a contour needs two rows, show the one row as a strip
        mesh = ax.pcolormesh(x, [y[0] - 0.5, y[0] + 0.5], values, norm=norm, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=label, format="%.3g")
    ax.set(xlabel="epochs after decay", ylabel="epochs before decay (branch epoch)",
           title=f"Subpaths at lr {sub['lr'].iloc[0]:g}: {label}")
    fig.tight_layout()
    return fig


def decay_timing_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each subpath's final losses beside the main path's at the branch and at the same total epoch.

    Lower final test loss for later decay can come from decaying later or merely from training
    longer; the main path at the same total epoch separates the two.
    """
    main = metrics[metrics["path"] == "main"].set_index("epoch")
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
        })
    return pd.DataFrame(rows).sort_values("branch_epoch")


def decay_timing(table: pd.DataFrame) -> plt.Figure:
    """Final test loss against the decay epoch; the main path is the 'train longer' control."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(table["branch_epoch"], table["subpath_final_test_loss"], "o-", color="tab:blue",
            label="subpath, final (decayed at branch epoch)")
    ax.plot(table["branch_epoch"], table["main_test_loss_at_total_epoch"], "s--",
            color="tab:orange", label="main path at the same total epoch (no decay)")
    ax.plot(table["branch_epoch"], table["main_test_loss_at_branch"], ":", color="tab:gray",
            label="main path at the branch epoch")
    ax.set(xlabel="decay epoch (branch epoch)", ylabel="test loss", yscale="log",
           title="Does later decay generalise better, beyond training longer?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def landscape(grid: pd.DataFrame, coordinates: pd.DataFrame, column: str,
              label: str) -> plt.Figure:
    """Figures 2a/2b: loss contours in the PC1-PC2 plane with the trajectories on top."""
    table = grid.pivot_table(index="pc2", columns="pc1", values=column)
    values = table.to_numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    levels = log_levels(values, 25)
    mesh = ax.contourf(table.columns, table.index, values, levels=levels,
                       norm=LogNorm(levels[0], levels[-1]), cmap="viridis")
    ax.contour(table.columns, table.index, values, levels=levels[::3], colors="white",
               linewidths=0.4, alpha=0.5)
    fig.colorbar(mesh, ax=ax, label=label, format="%.3g")
    main = coordinates[coordinates["path"] == "main"].sort_values("epoch")
    ax.plot(main["pc1"], main["pc2"], color="tab:orange", lw=1.8, label="main path")
    subs = coordinates[coordinates["path"] == "subpath"]
    for i, (_, path) in enumerate(subs.groupby("branch_epoch")):
        path = path.sort_values("epoch")
        ax.plot(path["pc1"], path["pc2"], "--", color="tab:blue", lw=1.0,
                label="subpaths (decayed lr)" if i == 0 else None)
    longest = coordinates.loc[coordinates["epoch"].idxmax()]
    ax.plot(longest["pc1"], longest["pc2"], "*", color="red", ms=14,
            label=f"end of longest trajectory (epoch {int(longest['epoch'])})")
    ax.set(xlabel="PC1", ylabel="PC2", title=label)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
