"""slq(): reproducibility, batching, probe kinds, and reorth="none" (ghosts, accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import assert_same_recurrence, eigen, probe_measure, w1_discrete
from strategies import probe_kinds, problems

import spectral
from spectral.matrices import from_spectrum, hessian_like
from spectral.probes import draw_probes


@settings(max_examples=30, deadline=None)
@given(
    problem=problems(max_n=100),
    num_steps=st.integers(1, 30),
    num_probes=st.integers(1, 6),
    kind=probe_kinds,
    reorth=st.sampled_from(["full", "none"]),
)
def test_same_seed_same_result_and_batch_size_does_not_matter(
    problem, num_steps, num_probes, kind, reorth
):
    kw = {"seed": problem.seed, "probes": kind, "reorth": reorth}
    a = spectral.slq(problem.A, num_steps, num_probes, **kw)
    b = spectral.slq(problem.A, num_steps, num_probes, **kw)
    for name in ("alpha", "beta", "nodes", "weights", "residual", "steps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.num_matvecs == b.num_matvecs == int(np.sum(a.steps))
    # batch_size=1 (one probe per matmat), 2, and all probes together: equal up to the
    # rounding of gemv vs gemm (not bitwise), amplified where the recurrence is ill-conditioned
    V = draw_probes(problem.n, num_probes, kind, problem.seed)
    for batch_size in (1, 2, None):
        m = spectral.slq(problem.A, num_steps, num_probes, batch_size=batch_size, **kw)
        for p in range(num_probes):
            assert_same_recurrence(problem.A, V[:, p], m.alpha[p], m.beta[p], m.steps[p], reorth)


def test_batch_size_equivalence_fixed():
    A, _ = hessian_like(600, seed=1, dense=True)
    ref = spectral.slq(A, 25, 5, seed=3)
    for batch in (1, 2, 3, 5, 7):
        m = spectral.slq(A, 25, 5, seed=3, batch_size=batch)
        np.testing.assert_allclose(m.alpha, ref.alpha, rtol=0, atol=1e-12)
        np.testing.assert_allclose(m.beta, ref.beta, rtol=0, atol=1e-12)
        np.testing.assert_allclose(m.nodes, ref.nodes, rtol=0, atol=1e-12)
        assert m.num_matvecs == ref.num_matvecs


def test_probes_are_the_documented_draws():
    """slq's probe ℓ is column ℓ of draw_probes(n, P, kind, seed): α₁ = vᵀAv."""
    A, _ = from_spectrum(np.linspace(-2, 3, 50), seed=0)
    for kind in ("sphere", "rademacher", "gaussian"):
        V = draw_probes(50, 4, kind, 17)
        np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1.0, atol=1e-15)
        m = spectral.slq(A, 5, 4, seed=17, probes=kind)
        np.testing.assert_allclose(m.alpha[:, 0], np.einsum("ip,ij,jp->p", V, A, V), atol=1e-13)
        assert m.probes == kind
    R = draw_probes(50, 4, "rademacher", 17)
    np.testing.assert_allclose(np.abs(R), 1 / np.sqrt(50))
    # "gaussian" normalised is the sphere law, drawn from the same stream
    np.testing.assert_array_equal(
        draw_probes(50, 4, "gaussian", 1), draw_probes(50, 4, "sphere", 1)
    )
    # different seeds, different probes; a Generator is accepted
    assert not np.allclose(draw_probes(50, 2, "sphere", 1), draw_probes(50, 2, "sphere", 2))
    np.testing.assert_array_equal(
        draw_probes(50, 2, "sphere", np.random.default_rng(5)), draw_probes(50, 2, "sphere", 5)
    )


def test_sphere_probes_are_unbiased_for_the_cdf():
    """E Ψ_v = Φ: averaged over many probes the exact probe CDFs approach the true CDF."""
    lam = np.repeat([-1.0, 0.0, 2.0, 5.0], [10, 25, 10, 5])
    A, lam = from_spectrum(lam, seed=0)
    L, U = np.linalg.eigh(A)
    V = draw_probes(50, 4000, "sphere", 0)
    W = (U.T @ V) ** 2  # (n, P): weights of every probe
    for x, phi in ((-0.5, 0.2), (1.0, 0.7), (3.0, 0.9)):
        psi = W[L <= x].sum(axis=0)
        assert abs(psi.mean() - phi) < 4 * psi.std() / np.sqrt(4000)


# -- reorth="none": ghosts and accuracy ------------------------------------------------------


def _outlier_problem():
    rng = np.random.default_rng(0)
    outliers = np.array([5.0, 8.0, 10.0, 15.0, 20.0])
    lam = np.concatenate([rng.uniform(0, 1, 1995), outliers])
    return sp.diags(lam).tocsr(), lam, outliers


@pytest.mark.parametrize("seed", [0, 1])
def test_no_reorth_creates_ghosts_whose_weights_sum_to_the_true_weight(seed):
    """Greenbaum (1989): copies of converged outliers, cluster weight = (u_iᵀv)²."""
    A, lam, outliers = _outlier_problem()
    v = draw_probes(lam.size, 1, "sphere", seed)[:, 0]  # diagonal A: u_i = e_i
    none = spectral.slq(A, 150, 1, seed=seed, reorth="none")
    full = spectral.slq(A, 150, 1, seed=seed, reorth="full")
    ghosts = 0
    for i, x in zip(range(1995, 2000), outliers, strict=True):
        true_weight = v[i] ** 2
        for m in (none, full):
            near = np.abs(m.nodes[0] - x) < 1e-7 * x
            assert m.weights[0][near].sum() == pytest.approx(true_weight, rel=1e-9)
        assert np.sum(np.abs(full.nodes[0] - x) < 1e-7 * x) == 1
        ghosts += np.sum(np.abs(none.nodes[0] - x) < 1e-7 * x) - 1
    assert ghosts >= 5  # every outlier was found more than once without reorthogonalisation


def test_no_reorth_density_close_to_full():
    A, lam, _ = _outlier_problem()
    full = spectral.slq(A, 120, 3, seed=4, reorth="full")
    none = spectral.slq(A, 120, 3, seed=4, reorth="none")
    assert none.reorth == "none" and none.num_matvecs == full.num_matvecs == 360
    grid = np.linspace(-1, 21, 2000)
    for sigma in (0.05, 0.5):
        df = full.density(grid, sigma=sigma, interval=(0, 20))
        dn = none.density(grid, sigma=sigma, interval=(0, 20))
        assert np.max(np.abs(dn.values - df.values)) <= 1e-3 * np.max(df.values)
    # each probe's rule is as accurate as the a-priori Jackson bound promises
    v = draw_probes(lam.size, 3, "sphere", 4)
    for p in range(3):
        w1_none = w1_discrete(lam, v[:, p] ** 2, none.nodes[p], none.weights[p])
        w1_full = w1_discrete(lam, v[:, p] ** 2, full.nodes[p], full.weights[p])
        bound = np.pi * 20 / (4 * 120)
        assert w1_none <= bound and w1_full <= bound
        assert w1_none <= 3 * w1_full + 1e-3


@settings(max_examples=25, deadline=None)
@given(problem=problems(min_n=5, max_n=150), num_steps=st.integers(2, 40))
def test_no_reorth_rule_stays_accurate(problem, num_steps):
    """Without reorthogonalisation the rule keeps its low moments and the Jackson W₁ bound.

    Knizhnerman (1996) / slq-math.md §7: lost orthogonality repeats converged Ritz values but
    the quadrature measure stays accurate, so densities and spectral sums are sound.
    """
    k = min(num_steps, problem.n)
    full = spectral.slq(problem.A, k, 1, seed=problem.seed)
    none = spectral.slq(problem.A, k, 1, seed=problem.seed, reorth="none")
    lam, U = eigen(problem.A)
    v = draw_probes(problem.n, 1, "sphere", problem.seed)[:, 0]
    atoms, w = probe_measure(lam, U, v)
    norm = max(np.abs(lam).max(), 1e-300)
    # low moments are exact for both
    for m in (full, none):
        for p in (1, 2, 3):
            assert (m.nodes[0] / norm) ** p @ m.weights[0] == pytest.approx(
                (atoms / norm) ** p @ w, abs=1e-9
            )
    assert (
        w1_discrete(atoms, w, none.nodes[0], none.weights[0])
        <= np.pi * (lam[-1] - lam[0]) / (4 * k) + 1e-9 * norm
    )
