"""Figures of the toy model: Figure 3 (landscapes), Figure 4 (drift on M), and the extra figures
(||w|| against the ODE, losses through the phases, final test loss against the decay step)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

# noqa: E402
from lrdecay.analysis.figures import BLACK, BLUE, COLUMN_WIDTH, GREEN, ORANGE, STYLE, save
from lrdecay.toy import model  # noqa: E402
from lrdecay.toy.instance import FIG3_W_STAR, FIG3_X, Instance, figure3_instance  # noqa: E402

# Paper style of lrdecay.analysis.figures (one column 3.4 in, 7-8 pt text, PDFs without a creation
# date): panels side by side take the two-column width. Lines differ by style as well as colour.
PAGE_WIDTH = 7.0
# (colour, line style) of the step sizes h = eta, eta/2 and the h -> 0 extrapolation
H_STYLES = {"eta": (BLUE, "-"), "eta/2": (ORANGE, "--"), "h -> 0": (GREEN, "-.")}
H_LABELS = {"eta": r"$h = \eta$", "eta/2": r"$h = \eta/2$", "h -> 0": r"$h \to 0$"}


def _styled(draw: Callable[..., None]) -> Callable[..., None]:
    """Draw the whole figure in the paper style (rc settings apply to artists made under them)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> None:
        with plt.rc_context(STYLE):
            draw(*args, **kwargs)

    return wrapper


def _panels(n: int, height: float, **kwargs) -> tuple[plt.Figure, np.ndarray]:
    """n panels in a row, one column wide for one panel and page wide for more (callers are
    @_styled, so the paper style is on)."""
    width = COLUMN_WIDTH if n == 1 else PAGE_WIDTH
    return plt.subplots(1, n, figsize=(width, height), squeeze=False, **kwargs)


def _min_norm_on(residual, w_start: np.ndarray) -> np.ndarray:
    """Minimum-norm zero of a scalar residual (SLSQP), for models without a closed form."""
    best = None
    for s in (w_start, -w_start, w_start[::-1].copy()):
        sol = minimize(lambda w: w @ w, s, jac=lambda w: 2 * w, method="SLSQP",
                       constraints=[{"type": "eq", "fun": residual}],
                       options={"ftol": 1e-14, "maxiter": 500})
        if abs(residual(sol.x)) < 1e-8 and (best is None or sol.x @ sol.x < best @ best):
            best = sol.x
    return best


@_styled
def figure3(png: str, pdf: str, points: int, lim: float = 2.0) -> None:
    """Paper Figure 3: train/test landscapes of linear regression, the diagonal network
    y = (w^3)^T x and y = ||w||^2 w^T x on d = 2, n = 1, with the train-loss zero set, w* and the
    minimum-norm interpolant."""
    x = FIG3_X[:, 0]
    g = np.linspace(-lim, lim, points)
    W1, W2 = np.meshgrid(g, g)
    W = np.stack([W1, W2], axis=-1)  # (P, P, 2)
    inst = figure3_instance()
    models = {
        "linear  $y = w^\\top x$": lambda w: w,
        "diagonal  $y = (w^{\\odot 3})^\\top x$": lambda w: w**3,
        "ours  $y = \\|w\\|^2 w^\\top x$": lambda w: model.alpha(w, 2.0),
    }
    fig, axes = plt.subplots(2, 3, figsize=(PAGE_WIDTH, 5.0), layout="constrained")
    for col, (name, pred) in enumerate(models.items()):
        a_star = pred(FIG3_W_STAR)
        resid = pred(W) @ x - a_star @ x
        train = 0.5 * resid**2
        test = 0.5 * np.sum((pred(W) - a_star) ** 2, axis=-1)
        if col == 0:
            w_min = x * (x @ FIG3_W_STAR) / (x @ x)
        elif col == 2:
            w_min = inst.w_dagger
        else:
            w_min = _min_norm_on(lambda w, p=pred, a=a_star: p(w) @ x - a @ x, FIG3_W_STAR * 0.7)
        for row, (field, label) in enumerate(((train, "train"), (test, "test"))):
            ax = axes[row, col]
            cs = ax.contourf(W1, W2, field + 1e-6, levels=np.logspace(-4, 2, 25), norm=LogNorm(),
                             cmap="viridis", extend="both")
            ax.contour(W1, W2, resid, levels=[0.0], colors="white", linewidths=1.2)
            ax.plot(*FIG3_W_STAR, "*", color="white", mec=BLACK, mew=0.6, ms=10, label="$w^*$")
            if w_min is not None:
                ax.plot(*w_min, "o", color=ORANGE, mec=BLACK, ms=5, label="min-norm interpolant")
            ax.set_title(f"{label} loss, {name}" if row == 0 else f"{label} loss", fontsize=7)
            ax.set_aspect("equal")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xlabel("$w_1$")
            ax.set_ylabel("$w_2$")
            ax.label_outer()
    # every panel has the same levels and log scale: one colour bar per row, named
    for row, label in enumerate(("train loss", "test loss")):
        fig.colorbar(cs, ax=axes[row, :], shrink=0.9, label=label)
    axes[0, 0].legend(loc="lower left", fontsize=6)
    fig.suptitle("Figure 3: $d = 2$, $n = 1$, $w^* = (-1, 0.5)$, $X = (0.15, -0.7)$; "
                 "white: train-loss zero set", fontsize=8)
    save(fig, png, pdf)


def _manifold_curve(inst: Instance, e_v: np.ndarray, rho_max: float, k: int = 300):
    """Points of M in span{alpha*_X, e_v} with norms from ||w_dagger|| to rho_max (both signs)."""
    rhos = inst.norm_dagger * (1 + np.linspace(0, 1, k) ** 2 * (rho_max / inst.norm_dagger - 1))
    up = np.array([inst.manifold_point(r, e_v) for r in rhos])
    down = np.array([inst.manifold_point(r, -e_v) for r in rhos])
    return np.concatenate([down[::-1], up])


def _drift_panel(ax, inst: Instance, e_u, e_v, traj_u, traj_v, rho_max, eta, sigma2, title):
    curve = _manifold_curve(inst, e_v, rho_max)
    ax.plot(curve @ e_u, curve @ e_v, "k-", lw=1.5, label="minima manifold $M$")
    pts = curve[:: max(len(curve) // 24, 1)]
    drift = np.array([model.effective_drift(p, inst.X, inst.gamma, eta, sigma2) for p in pts])
    mag = np.linalg.norm(drift, axis=1, keepdims=True)
    direction = drift / np.where(mag > 0, mag, 1)
    arrows = ax.quiver(pts @ e_u, pts @ e_v, direction @ e_u, direction @ e_v,
                       np.log10(mag[:, 0] + 1e-30), cmap="viridis", angles="xy", scale=18,
                       width=0.008, edgecolor=BLACK, linewidth=0.3, zorder=3)
    ax.figure.colorbar(arrows, ax=ax, shrink=0.8, label=r"$\log_{10}$ drift speed")
    for i, (u, v) in enumerate(zip(traj_u, traj_v, strict=True)):
        ax.plot(u, v, "-", color="0.55", lw=0.4, alpha=0.7,
                label="SGD paths (projected)" if i == 0 else None)
        ax.plot(u[0], v[0], "k.", ms=3, label="SGD start" if i == 0 else None)
    wd = inst.w_dagger
    ax.plot(wd @ e_u, wd @ e_v, "o", color=ORANGE, mec=BLACK, ms=6, label="$w^\\dagger$", zorder=4)
    ax.set_xlabel("$\\bar\\alpha^*_X$ coordinate")
    ax.set_ylabel("$X^\\perp$ coordinate (path direction)")
    ax.set_title(title, fontsize=7)
    ax.set_aspect("equal", adjustable="datalim")


def _legend_below(ax, ncols: int = 2) -> None:
    """The panel's legend under its axes, where no curve, arrow or colour bar can cross it."""
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=ncols)


@_styled
def figure4(png: str, pdf: str, traces: dict, toy: dict) -> None:
    """Figure 4: the drift of Eq. 3.15 on M (arrows, colour = log10 speed) with SGD paths over it:
    (a) Figure 3's data (n = 1: C < 0 at w_dagger, paths settle at rho_inf); (b) the default
    instance at the largest gamma (paths go to w_dagger). The ODE keeps w in span{alpha*_X, e_v},
    so both panels are exact sections. Legends sit below the panels, clear of the drawing."""
    g = max(traces)
    tr = traces[g]
    fig, axes = _panels(2, 4.0, layout="constrained")
    axes = axes[0]
    inst1 = figure3_instance(g)
    e_u = inst1.alpha_star_X / np.linalg.norm(inst1.alpha_star_X)
    e_v = inst1.perp_basis[:, 0]
    pts_u = tr["n1_w0"] * e_u[0] + tr["n1_w1"] * e_u[1]
    pts_v = tr["n1_w0"] * e_v[0] + tr["n1_w1"] * e_v[1]
    _drift_panel(axes[0], inst1, e_u, e_v, pts_u, pts_v, 1.8 * inst1.norm_dagger,
                 toy["fig3_eta"], toy["fig3_sigma"] ** 2,
                 f"(a) Figure 3 data, $n = 1$, $\\gamma = {g:g}$: $C(w^\\dagger) < 0$")
    theta = np.linspace(0, 2 * np.pi, 200)
    r_inf = float(tr["n1_rho_inf"])
    axes[0].plot(r_inf * np.cos(theta), r_inf * np.sin(theta), "--", color=GREEN, lw=1,
                 label="$\\|w\\| = \\rho_\\infty$ ($C = 0$)")
    _legend_below(axes[0])
    inst2 = Instance(tr["X"], tr["w_star"], g)
    rho_max = 1.05 * float(np.max(np.hypot(tr["main_u"], tr["main_v"])))
    _drift_panel(axes[1], inst2, tr["e_u"], tr["e_v"], tr["main_u"], tr["main_v"], rho_max,
                 toy["eta_large"], toy["sigma"] ** 2 / toy["batch_size"],
                 f"(b) $d = {inst2.d}$, $n = {inst2.n}$, $\\gamma = {g:g}$")
    _legend_below(axes[1])
    save(fig, png, pdf)


@_styled
def norm_vs_ode(png: str, pdf: str, traces: dict) -> None:
    """Lemma 3.3: the position along M, ||retract_M(w)|| (replica mean +- 2 SE), of label-noise
    SGD at eta and eta/2 and its h -> 0 extrapolation, against Eq. 3.15, in units of tau_II(h);
    bottom row: the differences from the ODE, where the O(h) gap and its removal show."""
    n = len(traces)
    fig, axes = plt.subplots(2, n, figsize=(COLUMN_WIDTH if n == 1 else PAGE_WIDTH, 4.2),
                             squeeze=False, sharex="col", height_ratios=[3, 2],
                             layout="constrained")
    for col, (g, tr) in enumerate(sorted(traces.items())):
        top, bottom = axes[0, col], axes[1, col]
        s = tr["lemma_s_eta|sigma"]
        ode_s, ode = tr["lemma_ode_s_eta|sigma"], tr["lemma_ode_norm_eta|sigma"]
        ode_on_s = np.interp(s, ode_s, ode)
        m, se = {}, {}
        for name in ("eta", "eta/2"):
            m[name] = tr[f"lemma_sgdM_mean_{name}|sigma"]
            se[name] = tr[f"lemma_sgdM_se_{name}|sigma"]
        m["h -> 0"] = 2 * m["eta/2"] - m["eta"]
        se["h -> 0"] = np.hypot(2 * se["eta/2"], se["eta"])
        for name, (color, ls) in H_STYLES.items():
            label = (f"SGD, {H_LABELS[name]}" if name != "h -> 0"
                     else f"SGD extrapolated to {H_LABELS[name]}")
            top.plot(s, m[name], color=color, ls=ls, label=label)
            diff = m[name] - ode_on_s
            bottom.fill_between(s, diff - 2 * se[name], diff + 2 * se[name], color=color,
                                alpha=0.2, lw=0)
            bottom.plot(s, diff, color=color, ls=ls)
        keep = ode_s <= s[-1]
        top.plot(ode_s[keep], ode[keep], ":", color=BLACK, lw=1.8, label="ODE 3.15")
        top.axhline(float(tr["norm_dagger"]), color="0.5", lw=0.8, ls=(0, (1, 3)),
                    label="$\\|w^\\dagger\\|$")
        bottom.axhline(0.0, color=BLACK, lw=0.8, ls=":")
        # the fitted time factors in the title: the legend below holds only the line styles
        cs = ", ".join(f"{float(tr[f'lemma_c_{h}|sigma']):.3f}" for h in ("eta", "eta/2"))
        top.set_title(f"$\\gamma = {g:g}$: $c = {cs}$", fontsize=7)
        top.set_ylabel(r"$\|\mathrm{retract}_M(w)\|$")
        bottom.set_ylabel("SGD $-$ ODE (band: 2 SE)")
        bottom.set_xlabel(r"$t\,/\,\tau_{II}(h)$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=6)
    fig.suptitle("Lemma 3.3: position along $M$, label-noise SGD vs Eq. 3.15\n"
                 r"($c$: fitted time factor at $h = \eta, \eta/2$; SGD $\approx$ ODE$(c\,t)$)",
                 fontsize=8)
    save(fig, png, pdf)


@_styled
def phases(png: str, pdf: str, traces: dict) -> None:
    """Train and test loss (mean over replicas) through Phases I-II with the derived noise floor."""
    fig, axes = _panels(len(traces), 2.8, layout="constrained")
    for ax, (g, tr) in zip(axes[0], sorted(traces.items()), strict=True):
        t = tr["main_t"]
        ax.plot(t, tr["main_train_mean"], color=BLUE, label="train loss")
        ax.plot(t, tr["main_floor_mean"], "--", color=ORANGE,
                label=r"floor $(\eta\sigma^2/4)\,\mathrm{tr}\,H$")
        ax.plot(t, tr["main_test_mean"], "-.", color=GREEN, label="test loss")
        ax.axhline(float(tr["test_loss_dagger"]), color=BLACK, ls=":",
                   label="test loss at $w^\\dagger$")
        ax.axvline(float(tr["k1"]) * float(tr["eta"]), color="0.6", lw=0.8,
                   label="end of Phase I")
        ax.set_yscale("log")
        ax.set_title(f"$\\gamma = {g:g}$")
        ax.set_xlabel(r"paper time $t = k\eta$")  # short: long labels ran into one line
    axes[0, 0].set_ylabel("loss (mean over replicas)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=6)
    save(fig, png, pdf)


# the starts of the late-decay figure: (traces key, label, colour, marker, line style)
DECAY_STARTS = (("cneg", "$c < 0$", BLUE, "v", "-"), ("czero", "$c = 0$", BLACK, "o", "--"),
                ("cpos", "$c > 0$", ORANGE, "^", "-."),
                ("random", "random directions", GREEN, "s", ":"))


@_styled
def late_decay(png: str, pdf: str, traces: dict) -> None:
    """Final test loss after Phase III against the decay step for the four starts (markers:
    mean +- 1 SE over replicas) with the prediction L(w_dagger) + a^2/2 - a c drawn through
    them (lines), relative to the test loss at w_dagger. c > 0 has its minimum inside."""
    fig, axes = _panels(len(traces), 2.8, layout="constrained", sharey=False)
    for ax, (g, tr) in zip(axes[0], sorted(traces.items()), strict=True):
        t = tr["decay_t"]
        l_dag = float(tr["test_loss_dagger"])
        for key, label, color, marker, ls in DECAY_STARTS:
            if f"decay_{key}_mean" not in tr:
                continue
            mean = np.asarray(tr[f"decay_{key}_mean"])
            ax.errorbar(t, mean - l_dag, yerr=tr[f"decay_{key}_se"],
                        fmt=marker, color=color, ms=3, capsize=2, lw=0.8,
                        label=f"{label}: measured ($\\pm$1 SE)")
            ax.plot(t, np.asarray(tr[f"decay_{key}_pred"]) - l_dag, ls, color=color, lw=1,
                    label=f"{label}: predicted")
        ax.axhline(0.0, color="0.5", lw=0.6, ls=(0, (1, 2)))
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"$\\gamma = {g:g}$")
        ax.set_xlabel(r"decay time $t = k\eta_L$")
    axes[0, 0].set_ylabel(r"final test loss $-\ L(w^\dagger)$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2 if len(traces) == 1 else 4,
               fontsize=6)
    save(fig, png, pdf)


def load_traces(paths: list[str]) -> dict[float, dict]:
    """Each gamma's traces (toy_checks' traces.npz), keyed by the gamma in its folder's name."""
    out = {}
    for p in paths:
        with np.load(p) as data:
            tr = {k: data[k] for k in data.files}
        out[_gamma_of(p)] = tr
    return out


def _gamma_of(path: str) -> float:
    return float(Path(path).parent.name.split("-", 1)[1])


def make_figures(toy: dict, traces_paths: list[str], outputs: dict[str, str]) -> None:
    """Figure 4 and the extra figures from the per-gamma traces."""
    traces = load_traces(traces_paths)
    figure4(outputs["fig4_png"], outputs["fig4_pdf"], traces, toy)
    norm_vs_ode(outputs["norm_png"], outputs["norm_pdf"], traces)
    phases(outputs["phases_png"], outputs["phases_pdf"], traces)
    late_decay(outputs["decay_png"], outputs["decay_pdf"], traces)
