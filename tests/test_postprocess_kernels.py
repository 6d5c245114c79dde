"""numba kernels of the post-processing against the vectorised NumPy code they replace.

The kernels skip terms that are exactly zero in float64, so they must agree with NumPy up
to the order of the additions, on every spectrum shape (repeated, clustered, zero,
negative, outlying eigenvalues), for sorted and unsorted grids and any kernel width.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spectral
from spectral import _postprocess_kernels as pk
from spectral.smoothing import smooth

from .strategies import problems

pytest.importorskip("numba")


@pytest.fixture
def always_numba(monkeypatch):
    monkeypatch.delenv("SPECTRAL_DISABLE_NUMBA", raising=False)
    monkeypatch.setattr(pk, "MIN_TERMS", 0)


def _numpy_only(monkeypatch):
    monkeypatch.setattr(pk, "MIN_TERMS", 1 << 62)


def _measure(problem, k, P, reorth="full"):
    return spectral.slq(problem.A, min(k, problem.n), P, seed=problem.seed, reorth=reorth)


@settings(max_examples=40, deadline=None)
@given(
    problem=problems(min_n=2, max_n=120),
    P=st.integers(1, 6),
    log_sigma=st.floats(-4.0, 0.5),
    T=st.integers(1, 600),
    shuffle=st.booleans(),
)
def test_smoothing_kernel_equals_numpy(problem, P, log_sigma, T, shuffle):
    m = _measure(problem, 30, P)
    lam = problem.eigenvalues
    span = max(float(lam[-1] - lam[0]), 1e-3)
    sigma = span * 10.0**log_sigma
    grid = np.linspace(lam[0] - 0.2 * span, lam[-1] + 0.2 * span, T)
    if shuffle:
        grid = np.random.default_rng(problem.seed).permutation(grid)
    with pytest.MonkeyPatch.context() as mp:
        _numpy_only(mp)
        ref = smooth(m.nodes, m.weights, grid, sigma)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPECTRAL_DISABLE_NUMBA", raising=False)
        mp.setattr(pk, "MIN_TERMS", 0)
        assert pk.smooth_sum(m.nodes, m.weights, grid, sigma) is not None  # the kernel ran
        got = smooth(m.nodes, m.weights, grid, sigma)
    scale = max(np.abs(ref).max(), 1e-300)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * scale)
    # and it is a density: each probe's smoothed rule integrates to one on a grid that
    # resolves the kernel and reaches 6σ beyond the extreme nodes
    if not shuffle and T >= 400 and 4 * (grid[1] - grid[0]) < sigma < 0.2 * span / 6:
        mass = np.trapezoid(got, grid, axis=1)
        np.testing.assert_allclose(mass, 1.0, atol=2e-3)


@settings(max_examples=30, deadline=None)
@given(
    problem=problems(min_n=2, max_n=120),
    P=st.integers(1, 5),
    log_sigma=st.floats(-3.5, 0.5),
    T=st.integers(1, 500),
    reorth=st.sampled_from(["full", "none"]),
)
def test_pointwise_kernel_equals_numpy(problem, P, log_sigma, T, reorth):
    m = _measure(problem, 25, P, reorth)
    lam = problem.eigenvalues
    span = max(float(lam[-1] - lam[0]), 1e-3)
    interval = (float(lam[0]) - 1e-9 * span, float(lam[-1]) + 1e-9 * span)
    b = m.bounds(interval=interval)
    sigma = span * 10.0**log_sigma
    t = np.random.default_rng(problem.seed).uniform(lam[0] - span, lam[-1] + span, T)
    with pytest.MonkeyPatch.context() as mp:
        _numpy_only(mp)
        ref = b.density_pointwise(t, sigma)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPECTRAL_DISABLE_NUMBA", raising=False)
        mp.setattr(pk, "MIN_TERMS", 0)
        got = b.density_pointwise(t, sigma)
    # The sum is one of differences of G values up to 2 g(0) = 0.8/σ times the band gap,
    # which can cancel: rounding is relative to that size, not to the result's.
    scale = max(np.abs(ref).max(), float(np.max(b._gap, initial=0.0)) / sigma, 1e-300)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * scale)
    assert np.all(got >= -1e-12 * scale)


def test_density_of_a_large_run_is_the_same_with_and_without_numba(monkeypatch):
    """The dispatch at the default threshold: a 10^5 grid Laplacian, 40 probes."""
    L, _ = spectral.matrices.grid_laplacian(100)
    m = spectral.slq(L, 60, 40, reorth="none", seed=3)
    grid = np.linspace(-0.5, 8.5, 8000)  # 40 * 60 * 8000 terms > MIN_TERMS
    assert m.nodes.size * grid.size >= pk.MIN_TERMS
    monkeypatch.delenv("SPECTRAL_DISABLE_NUMBA", raising=False)
    fast = m.density(grid=grid)
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    assert pk.smooth_sum(m.nodes, m.weights, grid, fast.sigma) is None
    slow = m.density(grid=grid)
    np.testing.assert_allclose(fast.values, slow.values, rtol=0, atol=1e-13 * slow.values.max())


def test_kernels_step_aside_for_nan_small_work_or_the_switch(always_numba, monkeypatch):
    nodes = np.array([[0.0, 1.0]])
    weights = np.array([[0.5, 0.5]])
    grid = np.linspace(-1, 2, 7)
    assert pk.smooth_sum(nodes, weights, grid, 0.1) is not None
    assert pk.smooth_sum(nodes, weights, np.array([0.0, np.nan]), 0.1) is None
    assert pk.pointwise_bound(grid, np.array([0.0, np.inf]), np.array([0.1]), 0.1) is None
    assert pk.pointwise_bound(grid, np.array([0.0]), np.array([]), 0.1) is None
    monkeypatch.setattr(pk, "MIN_TERMS", 10**9)
    assert pk.smooth_sum(nodes, weights, grid, 0.1) is None
    monkeypatch.setattr(pk, "MIN_TERMS", 0)
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    assert pk.smooth_sum(nodes, weights, grid, 0.1) is None


def test_far_terms_are_exactly_zero_in_float64():
    """The premise of the truncation: exp(-z^2/2) underflows to 0.0 beyond the cut-off."""
    assert np.exp(-0.5 * pk.CUTOFF**2) == 0.0
    assert np.exp(-0.5 * 38.0**2) > 0.0  # and the cut-off is not far beyond that point
