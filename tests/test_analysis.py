"""Outlier detection and gradient concentration against dense eigendecompositions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spectral
from spectral.matrices import from_spectrum, hessian_like


@pytest.mark.parametrize("reorth", ["full", "none"])
def test_outliers_of_hessian_like_are_found_once(reorth):
    A, _ = hessian_like(6000, seed=4)
    m = spectral.slq(A, num_steps=120, num_probes=3, seed=0, reorth=reorth)
    out = spectral.ritz_outliers(m)
    np.testing.assert_allclose(out, [-3.5, -2, 4, 6, 8, 11, 15, 20], atol=1e-8)
    if reorth == "none":
        # Without reorthogonalisation the run repeats converged outliers (ghosts) ...
        per_probe = m.nodes[0, : m.steps[0]]
        assert np.sum(np.abs(per_probe - 20.0) < 1e-6) >= 2
        # ... whose weights add up to the probe's true weight on that eigenvector.
        v = spectral.probes.draw_probes(A.shape[0], 3, "sphere", 0)[:, 0]
        d = A.diagonal()
        true_weight = np.sum(v[d == 20.0] ** 2)
        ghost_weight = m.weights[0][np.abs(m.nodes[0] - 20.0) < 1e-6].sum()
        assert ghost_weight == pytest.approx(true_weight, rel=1e-6)


def test_no_outliers_in_a_smooth_bulk():
    A, _ = from_spectrum(np.linspace(-1, 1, 300), seed=0)
    m = spectral.slq(A, num_steps=40, num_probes=2, seed=1)
    assert spectral.ritz_outliers(m).size == 0


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(30, 120),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_gradient_concentration_matches_dense(n, k, seed):
    rng = np.random.default_rng(seed)
    bulk = rng.normal(scale=0.3, size=n - k)
    outliers = 5.0 + 3.0 * np.arange(k)  # well separated top-k eigenvalues
    A, _ = from_spectrum(np.concatenate([bulk, outliers]), seed=rng)
    g = rng.normal(size=n)
    w, U = np.linalg.eigh(A)
    true = float(np.sum((U[:, -k:].T @ g) ** 2) / (g @ g))
    gc = spectral.gradient_concentration(A, g, k, num_steps=n, return_vectors=True)
    assert gc.ratio == pytest.approx(true, rel=1e-8, abs=1e-12)
    np.testing.assert_allclose(gc.ritz_values, w[::-1][:k], atol=1e-8)
    # Ritz residuals are the true residual norms of the returned Ritz vectors.
    Y = gc.ritz_vectors
    resid = np.linalg.norm(A @ Y - Y * gc.ritz_values, axis=0)
    np.testing.assert_allclose(gc.ritz_residuals, resid, atol=1e-8)
    # The certified interval contains the true energy above the threshold.
    energy = float(np.sum((U[:, w > gc.threshold].T @ g) ** 2) / (g @ g))
    lo, hi = gc.energy_above_bounds
    assert lo - 1e-10 <= energy <= hi + 1e-10


@settings(max_examples=25, deadline=None)
@given(n=st.integers(40, 150), seed=st.integers(0, 2**31 - 1), steps=st.integers(3, 15))
def test_certified_energy_interval_holds_with_few_steps(n, seed, steps):
    rng = np.random.default_rng(seed)
    lam = np.concatenate([rng.normal(size=n - 3), [6.0, 8.0, 10.0]])
    A, _ = from_spectrum(lam, seed=rng)
    g = rng.normal(size=n)
    tau = float(rng.uniform(-2, 9))
    gc = spectral.gradient_concentration(A, g, 3, num_steps=steps, threshold=tau)
    w, U = np.linalg.eigh(A)
    energy = float(np.sum((U[:, w > tau].T @ g) ** 2) / (g @ g))
    lo, hi = gc.energy_above_bounds
    assert lo - 1e-10 <= energy <= hi + 1e-10
    assert lo <= gc.energy_above <= hi


def test_gradient_concentration_rejects_bad_input():
    A = np.diag(np.arange(1.0, 11.0))
    with pytest.raises(ValueError, match="nonzero"):
        spectral.gradient_concentration(A, np.zeros(10), 2)
    with pytest.raises(ValueError, match="entries"):
        spectral.gradient_concentration(A, np.ones(9), 2)
    with pytest.raises(ValueError, match="k must"):
        spectral.gradient_concentration(A, np.ones(10), 11)
