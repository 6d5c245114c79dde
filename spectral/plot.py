"""Matplotlib views of SLQ results (needs the ``plot`` extra: ``pip install spectral-slq[plot]``).

Every function draws on ``ax`` (a new figure's axes when omitted) and returns the Axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .analysis import ritz_outliers
from .bounds import ErrorBounds
from .measure import SpectralMeasure
from .smoothing import Density

__all__ = ["cdf", "convergence", "density", "ritz_rug"]

#: On a log scale, values below this fraction of the peak are drawn at the floor.
_LOG_FLOOR = 1e-12


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
    return ax


def density(
    density: Density,
    ax=None,
    *,
    log: bool = False,
    certified: bool = True,
    stderr: bool = True,
    measure: SpectralMeasure | None = None,
    truth: Sequence[float] | np.ndarray | None = None,
    color: str = "C0",
    label: str | None = "SLQ estimate",
):
    """Plot a smoothed density with its certified band and standard-error band.

    Parameters
    ----------
    density : Density
        From :meth:`SpectralMeasure.density`.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when omitted).
    log : bool, default False
        Log-scale y axis (as in Ghorbani et al.'s figures); values are floored at
        ``10⁻¹² · max`` so empty regions stay visible.
    certified : bool, default True
        Shade the certified envelope ``[max(φ̂ − e, 0), φ̂ + e]``.
    stderr : bool, default True
        Shade ``φ̂ ± 2·stderr`` (probe noise; skipped for one probe).
    measure : SpectralMeasure, optional
        If given, mark its Ritz values as a rug (see :func:`ritz_rug`).
    truth : array_like, optional
        Exact eigenvalues: their smoothed density with the same σ is drawn for comparison.
    color, label : str
        Line style of the estimate.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    g, v = density.grid, density.values
    floor = _LOG_FLOOR * max(float(np.max(v)), np.finfo(float).tiny) if log else 0.0

    def show(y):
        return np.maximum(y, floor) if log else y

    if certified:
        ax.fill_between(
            g,
            show(density.lower),
            show(density.upper),
            color=color,
            alpha=0.12,
            lw=0,
            label="certified band",
        )
    if stderr and np.all(np.isfinite(density.stderr)):
        ax.fill_between(
            g,
            show(v - 2 * density.stderr),
            show(v + 2 * density.stderr),
            color=color,
            alpha=0.3,
            lw=0,
            label="±2 standard errors",
        )
    if truth is not None:
        lam = np.asarray(truth, dtype=float).reshape(-1)
        s = density.sigma
        exact = np.zeros_like(g)
        for start in range(0, lam.size, 4096):
            z = (g[:, None] - lam[None, start : start + 4096]) / s
            exact += np.exp(-0.5 * z * z).sum(axis=1)
        exact /= lam.size * s * np.sqrt(2 * np.pi)
        ax.plot(g, show(exact), color="k", lw=1.0, ls="--", label="exact (same σ)")
    ax.plot(g, show(v), color=color, lw=1.4, label=label)
    if log:
        ax.set_yscale("log")
    if measure is not None:
        ritz_rug(measure, ax)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"spectral density (σ = {density.sigma:.3g})")
    ax.legend(loc="best", fontsize="small")
    return ax


def ritz_rug(measure: SpectralMeasure, ax=None, *, label_outliers: bool = True, color="C3"):
    """Mark Ritz values as a rug along the x axis and label the outliers.

    Outliers are the converged Ritz values outside the bulk, with ghosts merged
    (:func:`spectral.ritz_outliers`).

    Parameters
    ----------
    measure : SpectralMeasure
        The run whose Ritz values to mark.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when omitted).
    label_outliers : bool, default True
        Write the value of each outlier next to it.
    color : str
        Colour of the marks.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    nodes = np.concatenate([measure.nodes[p, : int(s)] for p, s in enumerate(measure.steps)])
    ax.plot(
        nodes,
        np.zeros_like(nodes),
        "|",
        color=color,
        ms=10,
        alpha=0.6,
        transform=ax.get_xaxis_transform(),
        label="Ritz values",
    )
    if label_outliers:
        for x in ritz_outliers(measure):
            ax.annotate(
                f"{x:.4g}",
                (x, 0.05),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize="x-small",
                ha="center",
                va="bottom",
                color=color,
            )
    return ax


def cdf(
    measure: SpectralMeasure,
    ax=None,
    *,
    bounds: ErrorBounds | None = None,
    x=None,
    truth: Sequence[float] | np.ndarray | None = None,
    color: str = "C0",
):
    """Plot the estimated eigenvalue CDF with its certified band.

    Parameters
    ----------
    measure : SpectralMeasure
        The estimate.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when omitted).
    bounds : ErrorBounds, optional
        Band to draw (``measure.bounds()`` by default).
    x : array_like, optional
        Points (2000 points over the bracket by default).
    truth : array_like, optional
        Exact eigenvalues; their CDF is drawn for comparison.
    color : str
        Colour of the estimate and its band.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    bounds = measure.bounds() if bounds is None else bounds
    a, b = bounds.interval
    pad = 0.02 * (b - a) if b > a else 1.0
    x = np.linspace(a - pad, b + pad, 2000) if x is None else np.asarray(x, dtype=float)
    lo, up = bounds.cdf_band(x)
    ax.fill_between(
        x,
        lo,
        up,
        step="post",
        color=color,
        alpha=0.2,
        lw=0,
        label=f"certified band ({bounds.confidence:g})",
    )
    ax.step(x, measure.cdf(x), where="post", color=color, lw=1.4, label="SLQ estimate")
    if truth is not None:
        lam = np.sort(np.asarray(truth, dtype=float).reshape(-1))
        ax.step(
            x,
            np.searchsorted(lam, x, side="right") / lam.size,
            where="post",
            color="k",
            lw=1.0,
            ls="--",
            label="exact",
        )
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("cumulative fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize="small")
    return ax


def convergence(
    measure: SpectralMeasure,
    ax=None,
    *,
    over: str = "steps",
    interval=None,
    confidence: float = 0.99,
):
    """Plot the certified bounds against the number of Lanczos steps or probes.

    Uses :meth:`SpectralMeasure.truncate`, so no new products are needed: the curve shows
    what a run with fewer steps (or probes) would have certified.

    Parameters
    ----------
    measure : SpectralMeasure
        A run; shorter runs are read off it.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when omitted).
    over : {"steps", "probes"}
        Which parameter varies.
    interval : (float, float), optional
        Bracket of the spectrum (estimated from the full run when omitted, so that every
        point uses the same bracket).
    confidence : float, default 0.99
        Confidence of the statistical part.

    Returns
    -------
    matplotlib Axes
    """
    if over not in ("steps", "probes"):
        raise ValueError(f"over must be 'steps' or 'probes', got {over!r}")
    ax = _axes(ax)
    interval = measure.estimate_interval() if interval is None else interval
    top = measure.num_steps if over == "steps" else measure.num_probes
    counts = np.unique(np.linspace(1, top, min(top, 40)).round().astype(int))
    w, quad, prior = [], [], []
    for c in counts:
        m = measure.truncate(num_steps=c) if over == "steps" else measure.truncate(num_probes=c)
        eb = m.bounds(interval, confidence=confidence)
        w.append(eb.wasserstein)
        quad.append(float(np.mean(eb.per_probe_wasserstein)))
        prior.append(eb.a_priori_wasserstein)
    ax.plot(counts, w, "o-", ms=3, label="W₁ bound (certified, with probe error)")
    ax.plot(counts, quad, "s-", ms=3, label="quadrature part (mean per probe)")
    if over == "steps":
        ax.plot(counts, prior, ":", label="a-priori π(b−a)/(4k)")
    ax.set_yscale("log")
    ax.set_xlabel("Lanczos steps k" if over == "steps" else "probes P")
    ax.set_ylabel("Wasserstein-1 bound")
    ax.legend(loc="best", fontsize="small")
    return ax
