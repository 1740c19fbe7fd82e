"""Figures 1 and 2 of the paper, and the decay-timing summary, computed from the result tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from lrdecay import io  # noqa: E402

# One column of a two-column paper is about 3.3 in wide: figures are drawn at that size with
# 7-8 pt text, so they need no scaling. Lines differ by style and marker as well as colour
# (Okabe-Ito colours) and the colour maps run monotonically in lightness, so every figure reads
# in greyscale print.
COLUMN_WIDTH = 3.4
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "axes.linewidth": 0.6,
    "legend.frameon": False, "mathtext.fontset": "cm", "image.cmap": "viridis",
}
BLUE, ORANGE, GREEN, BLACK = "#0072B2", "#E69F00", "#009E73", "#000000"
ETA = r"$\eta$"


def _figure(height: float, rows: int = 1, **kwargs) -> tuple[plt.Figure, object]:
    """A one-column figure in the paper style (the style applies to the artists made now)."""
    with plt.rc_context(STYLE):
        return plt.subplots(rows, 1, figsize=(COLUMN_WIDTH, height), **kwargs)


def save(fig: plt.Figure, png: str | Path, pdf: str | Path) -> None:
    """Write PNG and PDF atomically; the PDF without a creation date, so reruns are byte-equal."""
    for path, metadata in ((png, None), (pdf, {"CreationDate": None})):
        with io.atomic_path(path) as tmp, plt.rc_context(STYLE):
            fig.savefig(tmp, format=Path(path).suffix[1:], dpi=300, bbox_inches="tight",
                        metadata=metadata)
    plt.close(fig)


def log_levels(values: np.ndarray, n: int) -> np.ndarray | None:
    """Contour levels evenly spaced in log over the finite positive values (None if none)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return np.geomspace(positive.min(), positive.max(), n) if positive.size else None


def learning_curves(metrics: pd.DataFrame) -> plt.Figure:
    """Figure 1a: the main path's train and test loss (top) and accuracy (bottom)."""
    main = metrics[metrics["path"] == "main"].sort_values("epoch")
    fig, (ax_loss, ax_acc) = _figure(4.0, rows=2, sharex=True)
    kind = main["train_metric"].iloc[-1].replace("_", " ")
    with plt.rc_context(STYLE):
        ax_loss.plot(main["epoch"], main["train_loss"], "-", color=BLUE, label=f"train ({kind})")
        ax_loss.plot(main["epoch"], main["test_loss"], "--", color=ORANGE, label="test")
        ax_loss.set(yscale="log", ylabel="loss",
                    title=f"Main path, learning rate {ETA} = {main['lr'].iloc[-1]:g}")
        ax_acc.plot(main["epoch"], main["train_acc"], "-", color=BLUE, label="train")
        ax_acc.plot(main["epoch"], main["test_acc"], "--", color=ORANGE, label="test")
        ax_acc.set(xlabel="epoch $t$", ylabel="accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3, lw=0.4)
            ax.legend()
        fig.tight_layout()
    return fig


def subpath_contour(metrics: pd.DataFrame, column: str, label: str) -> plt.Figure:
    """Figures 1b/1c: y = epochs before decay, x = epochs after decay, colour = loss."""
    sub = metrics[metrics["path"] == "subpath"]
    table = sub.pivot_table(index="branch_epoch", columns="epochs_after_decay", values=column)
    fig, ax = _figure(2.8)
    values = table.to_numpy()
    levels = log_levels(values, 20)
    norm = LogNorm(levels[0], levels[-1]) if levels is not None else None
    x, y = table.columns.to_numpy(dtype=float), table.index.to_numpy(dtype=float)
    with plt.rc_context(STYLE):
        if len(y) >= 2:
            mesh = ax.contourf(x, y, values, levels=20 if levels is None else levels, norm=norm)
        else:  # a single subpath: a contour needs two rows, show the one row as a strip
            mesh = ax.pcolormesh(x, [y[0] - 0.5, y[0] + 0.5], values, norm=norm)
        fig.colorbar(mesh, ax=ax, label=label, format="%.3g")
        ax.set(xlabel=r"epochs after decay, $t - t_{\mathrm{d}}$",
               ylabel=r"epochs before decay, $t_{\mathrm{d}}$",
               title=f"Subpaths at {ETA} = {sub['lr'].iloc[0]:g}: {label}")
        fig.tight_layout()
    return fig


DECAY_TIMING_LINES = [  # (decay-timing column, line style, colour, marker size, label)
    ("subpath_final_test_loss", "o-", BLUE, 3.5, r"subpath, final (decayed at $t_{\mathrm{d}}$)"),
    ("main_test_loss_at_total_epoch", "s--", ORANGE, 3.5,
     "main path at the same total epoch (no decay)"),
    ("main_test_loss_at_branch", "^:", BLACK, 3, r"main path at $t_{\mathrm{d}}$"),
]


def decay_timing(table: pd.DataFrame) -> plt.Figure:
    """Final test loss against the decay epoch; the main path is the 'train longer' control.

    `table` is the run's decay_timing.csv (lrdecay.analysis.aggregate_decay_timing: per branch
    epoch and quantity the mean across seeds and its 95 % interval), drawn as lines with bands.
    """
    fig, ax = _figure(3.0)
    n_seeds = int(table["n_seeds"].max())
    with plt.rc_context(STYLE):
        for column, style, colour, size, label in DECAY_TIMING_LINES:
            rows = table[table["quantity"] == column].sort_values("branch_epoch")
            ax.plot(rows["branch_epoch"], rows["mean"], style, color=colour, ms=size, label=label,
                    gid=column)
            low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
            shown = np.isfinite(low) & np.isfinite(high) & (low > 0)  # a log axis: positive
            if shown.any():
                ax.fill_between(rows["branch_epoch"], low, high, where=shown, color=colour,
                                alpha=0.2, lw=0)
        title = "Later decay, or only longer training?"
        if n_seeds > 1:
            title += f"\n(mean of {n_seeds} seeds, band: 95 % interval)"
        ax.set(xlabel=r"decay epoch $t_{\mathrm{d}}$", ylabel="test loss", yscale="log",
               title=title)
        branches = set(table["branch_epoch"])
        controlled = set(table.loc[table["quantity"] == "main_test_loss_at_total_epoch",
                                   "branch_epoch"])
        if branches - controlled:  # say it in words rather than leave the control line short
            ax.text(0.02, 0.02, f"main path too short: no control for {len(branches - controlled)}"
                    f" of {len(branches)} subpaths\n(raise schedule.main_epochs to the last "
                    "subpath's end)", transform=ax.transAxes, fontsize=6, va="bottom")
        ax.grid(alpha=0.3, lw=0.4)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
        fig.tight_layout()
    return fig


def pc_label(variance: pd.DataFrame, component: int) -> str:
    """Axis label of a principal component with the share of the variance it explains."""
    row = variance[variance["component"] == component]
    share = 100 * float(row["explained_variance_ratio"].iloc[0]) if len(row) else float("nan")
    return f"PC{component} ({share:.1f} % of variance)"


def surface_note(surface: pd.DataFrame) -> str:
    """The legend's note: the surface the grid lies on and how far the snapshots are from it
    (lrdecay.landscape.surface_table), so a reader knows how well the drawn landscape holds the
    drawn trajectories."""
    q0, q1, q2 = (float(surface[name].iloc[0]) for name in ("q0", "q1", "q2"))
    off = surface["distance_pc123"]
    if (q0, q1, q2) == (0.0, 0.0, 0.0):
        where = "grid in the PC1-PC2 plane"
    else:
        terms = "".join(f" {'-' if q < 0 else '+'} {abs(q):.3g}{x}"
                        for q, x in ((q1, "a"), (q0, "")))
        where = f"grid on PC3 = {q2:.3g}a\u00b2{terms} (a = PC1)"
    return (f"{where};\nsnapshots' distance from it in PC1-PC3:\nmedian {off.median():.3g}, "
            f"max {off.max():.3g}")


def landscape(grid: pd.DataFrame, coordinates: pd.DataFrame, variance: pd.DataFrame,
              column: str, label: str, surface: pd.DataFrame | None = None) -> plt.Figure:
    """Figures 2a/2b: loss contours over the grid's (PC1, PC2) coordinates with the trajectories
    on top; the grid lies in the PC1-PC2 plane or on the curved surface (``surface``: the
    surface table, noted in the legend).

    The main path is black with a white edge and the subpaths orange dashed with a black edge,
    drawn above it, so both show on dark and light contours and where they overlap.
    """
    table = grid.pivot_table(index="pc2", columns="pc1", values=column)
    values = table.to_numpy()
    fig, ax = _figure(3.6)
    levels = log_levels(values, 25)
    edge = {"white": [patheffects.withStroke(linewidth=2.6, foreground="white")],
            "black": [patheffects.withStroke(linewidth=2.0, foreground="black")]}
    with plt.rc_context(STYLE):
        mesh = ax.contourf(table.columns, table.index, values, levels=levels,
                           norm=LogNorm(levels[0], levels[-1]))
        ax.contour(table.columns, table.index, values, levels=levels[::3], colors="white",
                   linewidths=0.3, alpha=0.5)
        fig.colorbar(mesh, ax=ax, label=label, format="%.3g")
        main = coordinates[coordinates["path"] == "main"].sort_values("epoch")
        ax.plot(main["pc1"], main["pc2"], "-", color=BLACK, lw=1.4, path_effects=edge["white"],
                zorder=3, label=f"main path (large {ETA})")
        subs = coordinates[coordinates["path"] == "subpath"]
        for i, (_, path) in enumerate(subs.groupby("branch_epoch")):
            path = path.sort_values("epoch")
            ax.plot(path["pc1"], path["pc2"], "--", color=ORANGE, lw=1.0, zorder=4,
                    path_effects=edge["black"],
                    label=f"subpaths (decayed {ETA})" if i == 0 else None)
            ax.plot(path["pc1"].iloc[0], path["pc2"].iloc[0], "o", ms=2.5, color=ORANGE, mec=BLACK,
                    mew=0.5, zorder=5)
        longest = coordinates.loc[coordinates["epoch"].idxmax()]
        ax.plot(longest["pc1"], longest["pc2"], "*", color="white", mec=BLACK, mew=0.8, ms=9,
                zorder=6, label=f"end of longest trajectory (epoch {int(longest['epoch'])})")
        if surface is not None:
            ax.plot([], [], " ", label=surface_note(surface))
        ax.set(xlabel=pc_label(variance, 1), ylabel=pc_label(variance, 2), title=label)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
        fig.tight_layout()
    return fig
