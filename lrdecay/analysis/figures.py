"""Figures 1 and 2 of the paper, the decay-timing summary and the norm/sharpness figure, computed
from the result tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lrdecay.core import io  # noqa: E402

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
RED = "#D62728"  # Figure 2's star: the paper's caption says red
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
        _colorbar(fig, mesh, label, ax=ax)
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

    `table` is the run's decay_timing.csv (lrdecay.analysis.claims.aggregate_decay_timing: per
    branch epoch and quantity the mean across seeds and its 95 % interval), drawn as lines with
    bands.
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


MECHANISM_LINES = [  # (panel, norm_sharpness.csv quantity, line style, colour, marker size, label)
    (0, "main_norm", "-", ORANGE, 0, "main path"),
    (1, "norm_at_decay", "^:", BLACK, 3, r"at the decay epoch $t_{\mathrm{d}}$ (main path)"),
    (1, "final_norm", "o-", BLUE, 3.5, "at the subpath's end"),
    (2, "sharpness_at_decay", "^:", BLACK, 3, r"at the decay epoch $t_{\mathrm{d}}$ (main path)"),
    (2, "final_sharpness", "o-", BLUE, 3.5, "at the subpath's end"),
]


def _band(ax, rows: pd.DataFrame, colour: str) -> None:
    low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    shown = np.isfinite(low) & np.isfinite(high)
    if shown.any():
        ax.fill_between(rows["x"], low, high, where=shown, color=colour, alpha=0.2, lw=0)


def mechanism(bands: pd.DataFrame) -> plt.Figure:
    """The mechanism against flat minima: the main path's norm with the branch points marked
    (top); the norm (middle) and the top Hessian eigenvalue (bottom) at each decay epoch and
    at each subpath's end. `bands` is norm_sharpness.csv
    (lrdecay.analysis.claims.mechanism_bands)."""
    fig, axes = _figure(5.6, rows=3)
    n_seeds = int(bands["n_seeds"].max())
    with plt.rc_context(STYLE):
        for panel, quantity, style, colour, size, label in MECHANISM_LINES:
            rows = bands[bands["quantity"] == quantity].sort_values("x")
            axes[panel].plot(rows["x"], rows["mean"], style, color=colour, ms=size, label=label,
                             gid=quantity)
            _band(axes[panel], rows, colour)
        branches = bands[bands["quantity"] == "norm_at_decay"].sort_values("x")
        axes[0].plot(branches["x"], branches["mean"], "^", color=BLACK, ms=3,
                     label=r"branch points $t_{\mathrm{d}}$", gid="branch_points")
        title = f"Norm and sharpness ({ETA} large, then decayed)"
        if n_seeds > 1:
            title += f"\n(mean of {n_seeds} seeds, band: 95 % interval)"
        axes[0].set(xlabel="epoch $t$", ylabel=r"$\|\theta\|_2$", title=title)
        axes[1].set(xlabel=r"decay epoch $t_{\mathrm{d}}$", ylabel=r"$\|\theta\|_2$")
        axes[2].set(xlabel=r"decay epoch $t_{\mathrm{d}}$",
                    ylabel=r"top eigenvalue $\lambda_{\max}$")
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
            ax.grid(alpha=0.3, lw=0.4)
        for ax in axes[:2]:  # the bottom panel's lines are the middle one's: one legend
            ax.legend()
        fig.tight_layout()
    return fig


def pc_label(variance: pd.DataFrame, component: int) -> str:
    """Axis label of a principal component with the share of the variance it explains."""
    row = variance[variance["component"] == component]
    share = 100 * float(row["explained_variance_ratio"].iloc[0]) if len(row) else float("nan")
    return f"PC{component} ({share:.1f} % of variance)"


def surface_note(surface: pd.DataFrame) -> str:
    """The legend's note: the surface the grid lies on and how far the snapshots are from it
    (lrdecay.analysis.landscape.surface_table), so a reader knows how well the drawn landscape holds
    the drawn trajectories."""
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


ZOOM_BOX_SHOWN = 25  # up to this zoom factor the zoomed box is large enough to see in the main view
ZOOM_MIN_SHARE = 0.15  # a subpath drawn in the zoom spans at least this share of the zoom box
# Figure 2's layout in inches (left, bottom, width, height): the main view and the zoom have the
# same shape, so the zoom keeps the main view's directions; the legend goes below the zoom.
LANDSCAPE_AXES = (0.62, 2.75, 1.9, 1.55)
LANDSCAPE_ZOOM = (0.62, 0.45, 1.9, 1.55)
LANDSCAPE_BAR = (2.62, 2.75, 0.1, 1.55)
LANDSCAPE_SIZE = (COLUMN_WIDTH, 4.55)


def colorbar_ticks(low: float, high: float) -> list[float]:
    """Round colour-bar ticks within [low, high]: 1-2-5 steps per decade on a range of a decade or
    more, else evenly spaced round numbers, so labels read 0.5, 1, 2 rather than 0.713, 1.49."""
    linear = MaxNLocator(nbins=6, steps=[1, 2, 5, 10]).tick_values(low, high)
    linear = [float(t) for t in linear if low <= t <= high]
    if low <= 0:  # a linear scale that reaches zero: no decades
        return linear
    decades = np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    for mantissas in ((1, 2, 5), (1, 3), (1,)):  # the finest steps that give at most 8 labels
        ticks = [m * 10.0 ** e for e in decades for m in mantissas]
        ticks = [float(t) for t in ticks if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]
        if 3 <= len(ticks) <= 8:
            return ticks
    return linear


def _colorbar(fig: plt.Figure, mesh, label: str, **where) -> None:
    """A colour bar (placed by ``cax=`` or ``ax=``) whose ticks are round numbers
    (``colorbar_ticks``) printed in few digits."""
    bar = fig.colorbar(mesh, label=label, **where)
    ticks = colorbar_ticks(bar.norm.vmin, bar.norm.vmax)
    bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    bar.minorticks_off()


def zoom_box(coordinates: pd.DataFrame, aspect: float) -> tuple[tuple[float, float],
                                                                 tuple[float, float], list]:
    """Limits of Figure 2's zoom on the branch region and the subpaths (branch epochs) it holds.

    The box has the main view's shape (x span / y span = ``aspect``), so directions read as in the
    main view. It holds every subpath where each is then at least ZOOM_MIN_SHARE of the box;
    where the branch points lie too far apart for that (a short subpath at a small learning rate
    barely moves), it holds the latest subpaths only (of those the main path goes on from, if
    any), so the zoom still shows a subpath leaving the main path.
    """
    subs = coordinates[coordinates["path"] == "subpath"]
    main_end = coordinates.loc[coordinates["path"] == "main", "epoch"].max()
    # latest first, but first those the main path goes on from: there the zoom shows the two part
    groups = [g for _, g in sorted(subs.groupby("branch_epoch"),
                                   key=lambda kv: (not kv[0] < main_end, -kv[0]))]

    def box(parts: list[pd.DataFrame]) -> tuple[float, float, float, float]:
        points = pd.concat(parts)
        x0, x1 = float(points["pc1"].min()), float(points["pc1"].max())
        y0, y1 = float(points["pc2"].min()), float(points["pc2"].max())
        half_y = max((y1 - y0) / 2, (x1 - x0) / 2 / aspect, 1e-12) * 1.25  # 25 % margin
        return (x0 + x1) / 2, (y0 + y1) / 2, half_y * aspect, half_y

    def share(part: pd.DataFrame, half_x: float, half_y: float) -> float:
        dx = part["pc1"] - part["pc1"].iloc[0]
        dy = part["pc2"] - part["pc2"].iloc[0]
        return float(max(dx.abs().max() / half_x, dy.abs().max() / half_y)) / 2

    shown = groups[:1]
    for n in range(2, len(groups) + 1):
        _, _, hx, hy = box(groups[:n])
        if np.median([share(g, hx, hy) for g in groups[:n]]) < ZOOM_MIN_SHARE:
            break
        shown = groups[:n]
    cx, cy, hx, hy = box(shown)
    return (cx - hx, cx + hx), (cy - hy, cy + hy), sorted(g["branch_epoch"].iloc[0] for g in shown)


def landscape(grid: pd.DataFrame, coordinates: pd.DataFrame, variance: pd.DataFrame,
              column: str, label: str, surface: pd.DataFrame | None = None) -> plt.Figure:
    """Figures 2a/2b: loss contours over the grid's (PC1, PC2) coordinates with the trajectories
    on top; the grid lies in the PC1-PC2 plane or on the curved surface (``surface``: the
    surface table, noted in the legend).

    Colours as the paper's caption: main path orange, subpaths blue dashed, a red star at the end
    of the longest trajectory (edges in black or white keep them visible on any contour). Below
    the landscape a zoom (gid "zoom") on the branch region (``zoom_box``, outlined in the main
    view) shows the subpaths leaving the main path, which at the main view's scale they barely do.
    """
    table = grid.pivot_table(index="pc2", columns="pc1", values=column)
    values = table.to_numpy()
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=LANDSCAPE_SIZE)
        w, h = LANDSCAPE_SIZE
        ax, zoom, cax = (fig.add_axes((x / w, y / h, dx / w, dy / h)) for x, y, dx, dy in
                         (LANDSCAPE_AXES, LANDSCAPE_ZOOM, LANDSCAPE_BAR))
    zoom.set_gid("zoom")
    levels = log_levels(values, 25)
    edge = {"white": [patheffects.withStroke(linewidth=2.4, foreground="white")],
            "black": [patheffects.withStroke(linewidth=2.6, foreground="black")]}
    main = coordinates[coordinates["path"] == "main"].sort_values("epoch")
    subs = coordinates[coordinates["path"] == "subpath"]
    longest = coordinates.loc[coordinates["epoch"].idxmax()]
    with plt.rc_context(STYLE):
        for axes in (ax, zoom):
            mesh = axes.contourf(table.columns, table.index, values, levels=levels,
                                 norm=LogNorm(levels[0], levels[-1]))
            axes.contour(table.columns, table.index, values, levels=levels[::3], colors="white",
                         linewidths=0.3, alpha=0.5)
            axes.plot(main["pc1"], main["pc2"], "-", color=ORANGE, lw=1.4,
                      path_effects=edge["black"], zorder=3, label=f"main path (large {ETA})")
            for i, (_, path) in enumerate(subs.groupby("branch_epoch")):
                path = path.sort_values("epoch")
                axes.plot(path["pc1"], path["pc2"], "--", color=BLUE, lw=1.0, zorder=4,
                          path_effects=edge["white"], dashes=(3, 1.5),
                          label=f"subpaths (decayed {ETA})" if i == 0 else None)
                axes.plot(path["pc1"].iloc[0], path["pc2"].iloc[0], "o", ms=2.5, color=BLUE,
                          mec="white", mew=0.5, zorder=5,
                          label="branch points" if i == 0 else None)
            axes.plot(longest["pc1"], longest["pc2"], "*", color=RED, mec=BLACK, mew=0.6, ms=9,
                      zorder=6, label=f"end of longest trajectory (epoch {int(longest['epoch'])})")
        _colorbar(fig, mesh, label, cax=cax)
        ax.set(xlabel=pc_label(variance, 1), ylabel=pc_label(variance, 2), title=label)
        if len(subs):
            x_range = float(np.ptp(table.columns.to_numpy(float)))
            y_range = float(np.ptp(table.index.to_numpy(float)))
            ax.set(xlim=(table.columns.min(), table.columns.max()),  # the box may reach past
                   ylim=(table.index.min(), table.index.max()))  # the grid: keep the view
            xlim, ylim, shown = zoom_box(coordinates, x_range / y_range)
            zoom.set(xlim=xlim, ylim=ylim)
            ax.add_patch(Rectangle((xlim[0], ylim[0]), xlim[1] - xlim[0], ylim[1] - ylim[0],
                                   fill=False, ec="white", lw=0.8, zorder=7))
            n_subs = subs["branch_epoch"].nunique()
            which = f"all {n_subs}" if len(shown) == n_subs else f"{len(shown)} of {n_subs}"
            epochs = [f"{int(b)}" for b in shown]
            if len(epochs) > 3:
                epochs = [f"{epochs[0]}-{epochs[-1]}"]
            which += (f" subpaths (decayed at epoch{'s' if len(shown) > 1 else ''} "
                      f"{', '.join(epochs)})")
            factor = x_range / (xlim[1] - xlim[0])
            where = ("on the white box" if factor <= ZOOM_BOX_SHOWN else  # else too small to see
                     f"near PC1 = {np.mean(xlim):.3g}, PC2 = {np.mean(ylim):.3g}")
            zoom.set_title(f"branch region, zoom \u00d7{factor:.0f} {where}:\n{which}",
                           fontsize=7)
        else:
            zoom.set_visible(False)
        zoom.set(xlabel="PC1", ylabel="PC2")
        zoom.xaxis.set_major_locator(MaxNLocator(4))
        zoom.yaxis.set_major_locator(MaxNLocator(4))
        if surface is not None:
            ax.plot([], [], " ", label=surface_note(surface))
        below = zoom if zoom.get_visible() else ax  # the legend goes below the lowest panel
        below.legend(*ax.get_legend_handles_labels(), loc="upper center",
                     bbox_to_anchor=(0.5, -0.28), ncol=1)
    return fig
