"""Closed-form spectra at scale (n ≥ 10⁵, sparse or matrix-free), slq-math.md §8.

* The 2-D Dirichlet grid Laplacian (n = 320² = 102 400): eigenvalues
  ``4 − 2cos(πi/321) − 2cos(πj/321)`` in (0, 8), exact at finite n.
* A Wigner-type spectrum by the quantile-diagonal trick: ``λ_i = F⁻¹((i − ½)/n)`` for the
  semicircle law F on [−2, 2]. Why this is a valid test of SLQ on a Wigner matrix: for
  sphere (or Gaussian) probes the distribution of SLQ's output depends only on the spectrum,
  because for an orthogonal Q, ``QΛQᵀ`` with probe ``v`` has the tridiagonal of ``Λ`` with
  probe ``Qᵀv``, which is again uniform on the sphere. So a diagonal matrix with the
  prescribed spectrum is, in law, the same test as a dense rotated one, and its finite-n
  spectrum is known exactly. The same spectrum is also run through a genuinely non-diagonal
  operator, ``A = Cᵀ diag(λ) C`` with C the orthonormal DCT-II (a scipy LinearOperator,
  O(n log n) per product), and compared with the semicircle law itself: W₁ to the limit ≤
  certified bound + W₁(law, finite-n spectrum), the latter ≤ 4/n by construction.
* The hypercube Q₁₇ Laplacian (n = 2¹⁷ = 131 072, matrix-free): eigenvalues 2j with
  multiplicity C(17, j), j = 0..17. With k ≥ 18 steps the Gauss rule is exact, and each
  probe's exact measure is known from its Walsh–Hadamard transform.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import scipy.sparse as sp
from oracles import semicircle_cdf, semicircle_quantiles, step_cdf, w1_discrete, w1_to_continuous
from scipy.sparse.linalg import LinearOperator

import spectral
from spectral.matrices import grid_laplacian
from spectral.probes import draw_probes


def _estimate_atoms(m):
    return m.nodes.ravel(), (m.weights / m.num_probes).ravel()


@pytest.fixture(scope="module")
def laplacian_320():
    return grid_laplacian(320)


@pytest.mark.parametrize(("reorth", "k", "P"), [("full", 40, 2), ("none", 80, 3)])
def test_grid_laplacian_w1_within_certified_bound(laplacian_320, reorth, k, P):
    L, lam = laplacian_320
    n = lam.size
    assert n == 102_400 and 0 < lam[0] and lam[-1] < 8
    m = spectral.slq(L, k, P, seed=2024, reorth=reorth)
    eb = m.bounds(interval=(0.0, 8.0), confidence=0.99)
    nodes, masses = _estimate_atoms(m)
    true_w1 = w1_discrete(lam, np.full(n, 1.0 / n), nodes, masses)
    assert true_w1 <= eb.wasserstein
    assert eb.wasserstein < 0.8  # an informative certificate: 10 % of the width
    assert eb.certified == (reorth == "full")
    # the band contains the exact CDF at all of its jumps and the nodes
    x = np.unique(np.concatenate((lam, nodes)))
    phi = step_cdf(lam, np.full(n, 1.0 / n), x)
    lo, up = eb.cdf_band(x)
    assert np.all(lo <= phi + 1e-12) and np.all(phi <= up + 1e-12)
    # per-probe trace estimates n vᵀLv (Hutchinson), within 5 analytic standard deviations
    # of tr L = 4n (sphere probes: Var(n vᵀLv) = 2n²Var(λ)/(n + 2)); extreme Ritz values
    # inside the known spectrum
    V = draw_probes(n, P, "sphere", 2024)
    np.testing.assert_allclose(m.trace().per_probe, n * np.sum(V * (L @ V), axis=0), rtol=1e-10)
    sd = math.sqrt(2.0 * n * n * np.var(lam) / (n + 2) / P)
    assert abs(m.trace().value - 4.0 * n) <= 5 * sd
    assert lam[0] - 1e-9 <= m.nodes.min() and m.nodes.max() <= lam[-1] + 1e-9


@pytest.fixture(scope="module")
def semicircle():
    n = 100_000
    lam = semicircle_quantiles(n)
    assert np.all(np.diff(lam) > 0)
    assert np.max(np.abs(semicircle_cdf(lam) - (np.arange(n) + 0.5) / n)) < 1e-12
    return n, lam


def _dct_operator(lam):
    n = lam.size

    def matmat(X):
        return scipy.fft.idct(
            lam[:, None] * scipy.fft.dct(X, axis=0, norm="ortho"), axis=0, norm="ortho"
        )

    return LinearOperator(
        (n, n), matvec=lambda x: matmat(x[:, None])[:, 0], matmat=matmat, dtype=np.float64
    )


@pytest.mark.parametrize("form", ["diagonal", "dct-rotated"])
def test_semicircle_spectrum_w1_within_certified_bound(semicircle, form):
    n, lam = semicircle
    A = sp.diags(lam).tocsr() if form == "diagonal" else _dct_operator(lam)
    m = spectral.slq(A, 50, 2, seed=7, reorth="full")
    eb = m.bounds(interval=(-2.0, 2.0), confidence=0.99)
    nodes, masses = _estimate_atoms(m)
    # against the exact finite-n spectrum
    true_w1 = w1_discrete(lam, np.full(n, 1.0 / n), nodes, masses)
    assert true_w1 <= eb.wasserstein < 0.4
    # against the limiting law: triangle inequality through the finite-n spectrum
    grid_err = 2 * 4.0 / 400_001
    law_to_finite = w1_to_continuous(semicircle_cdf, lam, np.full(n, 1.0 / n), -2.0, 2.0)
    assert law_to_finite <= 4.0 / n + grid_err
    law_to_estimate = w1_to_continuous(semicircle_cdf, nodes, masses, -2.0, 2.0)
    assert law_to_estimate <= eb.wasserstein + law_to_finite + 2 * grid_err
    # second moment of the semicircle law is 1; Gauss rules get it exactly per probe
    if form == "diagonal":
        V = draw_probes(n, 2, "sphere", 7)
        exact_second = np.array([V[:, p] ** 2 @ lam**2 for p in range(2)])
        np.testing.assert_allclose(
            [m.nodes[p] ** 2 @ m.weights[p] for p in range(2)], exact_second, rtol=1e-10
        )
    assert m.moments(2) == pytest.approx(1.0, abs=0.05)


def _hypercube_laplacian(d):
    """L = d I − adjacency of Q_d, matrix-free: (Lx)_i = d x_i − Σ_b x_{i xor 2^b}."""
    n = 2**d

    def matmat(X):
        b = X.shape[1]
        Y = X.reshape((2,) * d + (b,))
        out = d * Y
        for axis in range(d):
            out = out - np.flip(Y, axis=axis)
        return out.reshape(n, b)

    return LinearOperator(
        (n, n), matvec=lambda x: matmat(x[:, None])[:, 0], matmat=matmat, dtype=np.float64
    )


def _walsh_hadamard(v, d):
    """Orthonormal Walsh–Hadamard transform (the hypercube's eigenbasis)."""
    h = v.reshape((2,) * d).copy()
    for axis in range(d):
        a, b = np.take(h, 0, axis=axis), np.take(h, 1, axis=axis)
        h = np.stack(((a + b) / math.sqrt(2), (a - b) / math.sqrt(2)), axis=axis)
    return h.reshape(-1)


def test_hypercube_exact_with_k_at_least_distinct_eigenvalues():
    d = 17
    n = 2**d
    A = _hypercube_laplacian(d)
    popcount = np.array([bin(i).count("1") for i in range(n)])
    eigenvalues = 2.0 * popcount  # eigenvalue of the Walsh function with index i
    atoms = 2.0 * np.arange(d + 1)
    mult = np.array([math.comb(d, j) for j in range(d + 1)])
    # the operator really has this spectrum: H A H = diag(2 popcount) (H = H⁻¹)
    e = np.random.default_rng(0).standard_normal(n)
    np.testing.assert_allclose(
        _walsh_hadamard(A @ _walsh_hadamard(e, d), d), eigenvalues * e, atol=1e-10
    )
    P = 3
    m = spectral.slq(A, d + 3, P, seed=99)
    V = draw_probes(n, P, "sphere", 99)
    for p in range(P):
        hat = _walsh_hadamard(V[:, p], d)
        true_weights = np.bincount(popcount, weights=hat**2, minlength=d + 1)
        s = int(m.steps[p])
        th, om = m.nodes[p, :s], m.weights[p, :s]
        heavy = om > 1e-10
        # every node carrying weight sits on an eigenvalue, with the probe's exact weight
        idx = np.rint(th[heavy] / 2).astype(int)
        np.testing.assert_allclose(th[heavy], atoms[idx], atol=1e-9)
        got = np.bincount(idx, weights=om[heavy], minlength=d + 1)
        np.testing.assert_allclose(got, true_weights, atol=1e-9)
        assert w1_discrete(atoms, true_weights, th, om) <= 1e-8
    # the pooled CDF versus the exact eigenvalue CDF: only the statistical error remains
    eb = m.bounds(interval=(0.0, 2.0 * d))
    nodes, masses = _estimate_atoms(m)
    true_w1 = w1_discrete(atoms, mult / n, nodes, masses)
    assert true_w1 <= eb.wasserstein
    per_probe = [
        n * np.bincount(popcount, weights=_walsh_hadamard(V[:, p], d) ** 2) @ atoms
        for p in range(P)
    ]
    np.testing.assert_allclose(m.trace().per_probe, per_probe, rtol=1e-10)
    sd = math.sqrt(2.0 * n * n * d / (n + 2) / P)  # Var(λ) = 4 · d/4
    assert abs(m.trace().value - d * n) <= 5 * sd
