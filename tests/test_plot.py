"""Plots draw what they are given and return their Axes."""

from __future__ import annotations

import numpy as np
import pytest

import spectral

plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib is not installed")
from spectral import plot  # noqa: E402
from spectral.matrices import hessian_like  # noqa: E402


@pytest.fixture(scope="module")
def run():
    A, lam = hessian_like(2000, seed=1)
    return spectral.slq(A, num_steps=50, num_probes=3, seed=0), lam


def test_density_plot_draws_estimate_bands_truth(run):
    m, lam = run
    d = m.density()
    ax = plot.density(d, log=True, measure=m, truth=lam)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    est = lines["SLQ estimate"]
    np.testing.assert_allclose(est.get_xdata(), d.grid)
    floor = 1e-12 * d.values.max()
    np.testing.assert_allclose(est.get_ydata(), np.maximum(d.values, floor))
    assert "exact (same σ)" in lines and ax.get_yscale() == "log"
    # Two shaded bands (certified, standard error) and outlier labels on the rug.
    assert len(ax.collections) == 2
    labels = sorted(float(t.get_text()) for t in ax.texts)
    np.testing.assert_allclose(labels, spectral.ritz_outliers(m), rtol=1e-3)
    plt.close("all")


def test_cdf_plot_band_contains_truth(run):
    m, lam = run
    b = m.bounds(interval=(lam[0], lam[-1]))
    ax = plot.cdf(m, bounds=b, truth=lam)
    assert {"SLQ estimate", "exact"} <= {ln.get_label() for ln in ax.get_lines()}
    x = np.linspace(lam[0], lam[-1], 3000)
    lo, up = b.cdf_band(x)
    true = np.searchsorted(lam, x, side="right") / lam.size
    assert np.all(lo <= true + 1e-12) and np.all(true <= up + 1e-12)
    plt.close("all")


@pytest.mark.parametrize("over", ["steps", "probes"])
def test_convergence_plot_uses_truncated_runs(run, over):
    m, lam = run
    ax = plot.convergence(m, over=over, interval=(lam[0], lam[-1]))
    w = ax.get_lines()[0]
    counts, values = w.get_xdata(), w.get_ydata()
    assert counts[-1] == (m.num_steps if over == "steps" else m.num_probes)
    assert values[-1] == pytest.approx(m.bounds((lam[0], lam[-1])).wasserstein)
    if over == "steps":
        # The quadrature part of the bound shrinks as steps are added.
        quad = ax.get_lines()[1].get_ydata()
        assert quad[-1] < quad[0]
    plt.close("all")
    with pytest.raises(ValueError, match="over"):
        plot.convergence(m, over="time")


def test_truncate_equals_a_shorter_run():
    A, _ = hessian_like(1000, seed=2)
    long = spectral.slq(A, num_steps=40, num_probes=4, seed=7)
    short = spectral.slq(A, num_steps=25, num_probes=2, seed=7)
    t = long.truncate(num_steps=25, num_probes=2)
    np.testing.assert_allclose(t.alpha, short.alpha, atol=1e-12)
    np.testing.assert_allclose(t.beta, short.beta, atol=1e-12)
    np.testing.assert_allclose(t.nodes, short.nodes, atol=1e-10)
    np.testing.assert_allclose(t.weights, short.weights, atol=1e-10)
    np.testing.assert_allclose(t.residual, short.residual, rtol=1e-10)
    with pytest.raises(ValueError):
        long.truncate(num_steps=41)
