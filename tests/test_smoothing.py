"""Gaussian smoothing: values, σ conventions (absolute, relative, resolution, Ghorbani)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import gaussian, smoothed_density
from strategies import problems

import spectral
import spectral.bounds
import spectral.smoothing
from spectral.matrices import from_spectrum, hessian_like
from spectral.smoothing import resolution_sigma, smooth


def ghorbani_reference(nodes, weights, sigma_squared, grid_len=10000, grid_expand=1e-2):
    """google/spectral-density ``eigv_to_density`` (slq-math.md §1.3), vectorised."""
    lambda_max = np.mean(np.max(nodes, axis=1)) + grid_expand
    lambda_min = np.mean(np.min(nodes, axis=1)) - grid_expand
    grids = np.linspace(lambda_min, lambda_max, num=grid_len)
    variance = sigma_squared * max(1, lambda_max - lambda_min)
    kernel = np.exp(-((grids[None, None, :] - nodes[:, :, None]) ** 2) / (2.0 * variance))
    kernel /= np.sqrt(2 * math.pi * variance)
    density = np.mean(np.einsum("pk,pkt->pt", weights, kernel), axis=0)
    density /= np.sum(density) * (grids[1] - grids[0])
    return density, grids, math.sqrt(variance)


@settings(max_examples=30, deadline=None)
@given(
    problem=problems(max_n=100),
    num_steps=st.integers(1, 25),
    num_probes=st.integers(1, 4),
    sigma_factor=st.sampled_from([0.01, 0.1, 1.0]),
)
def test_density_is_the_probe_average_of_gaussian_blurred_rules(
    problem, num_steps, num_probes, sigma_factor
):
    m = spectral.slq(problem.A, num_steps, num_probes, seed=problem.seed)
    width = max(np.ptp(problem.eigenvalues), np.abs(problem.eigenvalues).max(), 1e-3)
    sigma = sigma_factor * width
    grid = np.linspace(m.nodes.min() - 5 * sigma, m.nodes.max() + 5 * sigma, 301)
    d = m.density(grid, sigma=sigma)
    per_probe = np.array(
        [smoothed_density(m.nodes[p], grid, sigma, m.weights[p]) for p in range(num_probes)]
    )
    np.testing.assert_allclose(
        d.values, per_probe.mean(axis=0), rtol=1e-12, atol=1e-14 * per_probe.max()
    )
    np.testing.assert_allclose(
        smooth(m.nodes, m.weights, grid, sigma), per_probe, rtol=1e-12, atol=1e-14 * per_probe.max()
    )
    if num_probes > 1:
        np.testing.assert_allclose(
            d.stderr,
            per_probe.std(axis=0, ddof=1) / np.sqrt(num_probes),
            rtol=1e-10,
            atol=1e-14 * per_probe.max(),
        )
    else:
        assert np.all(np.isnan(d.stderr))
    assert np.all(d.values >= 0) and d.sigma == sigma and not d.normalised
    np.testing.assert_array_equal(d.grid, grid)
    np.testing.assert_allclose(d.lower, np.maximum(d.values - d.bound, 0))
    np.testing.assert_allclose(d.upper, d.values + d.bound)
    assert np.all(d.bound >= 0)


def test_density_integrates_to_one_on_the_automatic_grid():
    A, _ = hessian_like(2000, seed=0)
    m = spectral.slq(A, 60, 2, seed=0)
    for kwargs in ({}, {"sigma": 0.05}, {"sigma_rel": 0.01}):
        d = m.density(**kwargs)
        assert d.grid.size == 1024
        lo, hi = m.node_range()
        assert d.grid[0] == pytest.approx(lo - 6 * d.sigma) and d.grid[-1] == pytest.approx(
            hi + 6 * d.sigma
        )
        mass = np.trapezoid(d.values, d.grid)
        assert mass == pytest.approx(1.0, abs=2e-3), kwargs
    assert m.density(num_points=50).grid.size == 50


def test_sigma_conventions():
    A, _ = from_spectrum(np.linspace(-2.0, 6.0, 80), seed=0)
    k = 20
    m = spectral.slq(A, k, 2, seed=1)
    lo, hi = m.node_range()
    # absolute
    assert m.density(sigma=0.3).sigma == 0.3
    # relative to the half-width of the bracket
    assert m.density(sigma_rel=0.1, interval=(-2, 6)).sigma == pytest.approx(0.4)
    a, b = m.estimate_interval()
    assert m.density(sigma_rel=0.1).sigma == pytest.approx(0.1 * (b - a) / 2)
    # resolution rule: ((θ_max − θ_min)/(k − 1)) / sqrt(8 ln 1.25)
    expected = ((hi - lo) / (k - 1)) / math.sqrt(8 * math.log(1.25))
    assert m.density().sigma == pytest.approx(expected, rel=1e-12)
    assert resolution_sigma(lo, hi, k) == pytest.approx(expected, rel=1e-12)
    # at σ = resolution rule a Gaussian falls to 1/1.25 of its peak at half the spacing
    h = (hi - lo) / (k - 1)
    assert gaussian(h / 2, expected) / gaussian(0.0, expected) == pytest.approx(1 / 1.25)
    assert resolution_sigma(3.0, 3.0, 10) == pytest.approx(3e-3)
    assert resolution_sigma(0.0, 0.0, 10) == pytest.approx(1e-3)


@pytest.mark.parametrize("sigma2", [1e-5, 1e-3, 0.05])
@pytest.mark.parametrize("scale", [0.3, 1.0, 20.0])
def test_ghorbani_sigma2_reproduces_the_released_code(sigma2, scale):
    A, _ = hessian_like(1000, seed=2)
    m = spectral.slq(A * scale, 30, 3, seed=5)
    d = m.density(ghorbani_sigma2=sigma2)
    ref, grid, sigma = ghorbani_reference(m.nodes, m.weights, sigma2)
    assert d.normalised and d.grid.size == 10000
    np.testing.assert_allclose(d.grid, grid, rtol=0, atol=1e-12 * scale)
    # σ = sqrt(sigma_squared · max(1, λ_max − λ_min)) with the grid ends
    span = grid[-1] - grid[0]
    assert d.sigma == pytest.approx(math.sqrt(sigma2 * max(1.0, span)), rel=1e-12)
    assert d.sigma == pytest.approx(sigma, rel=1e-12)
    np.testing.assert_allclose(d.values, ref, rtol=1e-9, atol=1e-12 * ref.max())
    # Riemann normalisation on the grid
    assert np.sum(d.values) * (grid[1] - grid[0]) == pytest.approx(1.0, rel=1e-12)


def test_ghorbani_sigma2_on_a_given_grid_keeps_the_sigma_rule():
    A, _ = hessian_like(500, seed=0)
    m = spectral.slq(A, 20, 2, seed=0)
    grid = np.linspace(-5, 25, 3001)
    d = m.density(grid, ghorbani_sigma2=1e-3)
    auto = m.density(ghorbani_sigma2=1e-3)
    assert d.sigma == auto.sigma
    np.testing.assert_array_equal(d.grid, grid)
    assert np.sum(d.values) * (grid[1] - grid[0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.1, "sigma_rel": 0.1}, "at most one"),
        ({"ghorbani_sigma2": 1e-3, "sigma": 0.1}, "ghorbani"),
        ({"ghorbani_sigma2": 1e-3, "sigma_rel": 0.1}, "ghorbani"),
        ({"ghorbani_sigma2": 0.0}, "ghorbani"),
        ({"ghorbani_sigma2": -1.0}, "ghorbani"),
        ({"sigma": 0.0}, "positive"),
        ({"sigma": -0.1}, "positive"),
        ({"sigma": np.nan}, "positive"),
        ({"sigma": np.inf}, "positive"),
        ({"sigma_rel": 0.0}, "positive"),
        ({"num_points": 1}, "num_points"),
        ({"grid": np.zeros((3, 3))}, "grid"),
        ({"grid": np.array([])}, "grid"),
        ({"grid": np.array([0.0, np.nan])}, "grid"),
        ({"interval": (5.0, 6.0)}, "interval"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_density_arguments_raise_value_error(kwargs, match):
    A, _ = from_spectrum(np.linspace(-1, 1, 20), seed=0)
    m = spectral.slq(A, 10, 1, seed=0)
    with pytest.raises(ValueError, match=match):
        m.density(**kwargs)


def test_chunked_evaluation_equals_one_block(monkeypatch):
    A, _ = hessian_like(500, seed=0)
    m = spectral.slq(A, 20, 3, seed=0)
    grid = np.linspace(-5, 22, 777)
    full = m.density(grid, sigma=0.1)
    eb = m.bounds()
    monkeypatch.setattr(spectral.smoothing, "_CHUNK", 100)  # 1-2 grid points per block
    chunked = m.density(grid, sigma=0.1)
    np.testing.assert_allclose(chunked.values, full.values, rtol=1e-13, atol=0)
    np.testing.assert_allclose(
        eb.density_pointwise(grid, 0.1, chunk=50), eb.density_pointwise(grid, 0.1), rtol=1e-13
    )
    np.testing.assert_allclose(full.bound, eb.density_pointwise(grid, 0.1), rtol=1e-13)
    # any shape of points
    assert eb.density_pointwise(grid.reshape(7, 111), 0.1).shape == (7, 111)


def test_pointwise_bound_is_the_closed_form_integral():
    """e(t) = ∫ D(x)|g_σ'(t − x)|dx from the band, by brute-force quadrature."""
    A, _ = from_spectrum(np.concatenate([np.linspace(-1, 1, 60), [3.0]]), seed=1)
    m = spectral.slq(A, 8, 2, seed=3)
    eb = m.bounds(interval=(-1, 3))
    sigma = 0.2
    a, b = eb.interval
    x = np.linspace(a, b, 400_001)[:-1]
    dx = (b - a) / 400_000
    xm = x + dx / 2
    lo, up = eb.cdf_band(xm)
    est = m.cdf(xm)
    D = np.maximum(up - est, est - lo)
    for t in (-1.5, -0.3, 0.0, 1.2, 3.5):
        u = t - xm
        dg = np.abs(u) / sigma**2 * gaussian(u, sigma)
        assert eb.density_pointwise(np.array([t]), sigma)[0] == pytest.approx(
            np.sum(D * dg) * dx, rel=2e-3
        )
