"""Gauss-quadrature properties of every probe's rule, against dense ``numpy.linalg.eigh``.

For a unit probe ``v`` the ``k``-point rule ``(θ_j, ω_j)`` from ``k`` Lanczos steps must
reproduce the moments ``vᵀAᵖv`` for ``p ≤ 2k − 1``, be exact once ``k`` reaches the number of
distinct eigenvalues, and have nodes inside the spectrum and non-negative weights summing to 1.
The probes are redrawn with :func:`spectral.probes.draw_probes` and the seed ``slq`` used.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import eigen, merge_atoms, probe_measure, w1_discrete
from strategies import few_distinct_problems, probe_kinds, problems

import spectral
from spectral.probes import draw_probes
from spectral.quadrature import gauss_quadrature


def _run(problem, num_steps, num_probes, kind="sphere", reorth="full"):
    m = spectral.slq(
        problem.A, num_steps, num_probes, seed=problem.seed, probes=kind, reorth=reorth
    )
    V = draw_probes(problem.n, num_probes, kind, problem.seed)
    return m, V


@settings(max_examples=60, deadline=None)
@given(
    problem=problems(max_n=120, normalise=True),
    num_steps=st.integers(1, 30),
    num_probes=st.integers(1, 3),
    kind=probe_kinds,
)
def test_gauss_moment_identity(problem, num_steps, num_probes, kind):
    """Σ_j ω_j θ_j^p = vᵀAᵖv / vᵀv for every probe and 0 ≤ p ≤ 2k − 1 (reorth full)."""
    m, V = _run(problem, num_steps, num_probes, kind)
    lam, U = eigen(problem.A)
    norm = float(np.max(np.abs(lam)))  # ‖A‖ (= 1 up to rounding, or 0)
    k = m.num_steps
    powers = np.arange(2 * k)
    for p in range(num_probes):
        atoms, w = probe_measure(lam, U, V[:, p])
        true = (atoms[None, :] ** powers[:, None]) @ w  # vᵀAᵖv with ‖v‖ = 1
        gauss = (m.nodes[p][None, :] ** powers[:, None]) @ m.weights[p]
        tol = 1e-8 * np.maximum(norm, 1e-300) ** powers
        assert np.all(np.abs(gauss - true) <= tol), (p, np.max(np.abs(gauss - true) / tol))
    # moments() of the pooled measure is the probe average of the same numbers
    pooled = np.mean(
        [(m.nodes[p][None, :] ** powers[:, None]) @ m.weights[p] for p in range(num_probes)],
        axis=0,
    )
    np.testing.assert_allclose(m.moments(powers), pooled, rtol=1e-12, atol=1e-300)


def _assert_rule_is_probe_measure(problem, m, V):
    """Each probe's rule equals its spectral measure Σ_i (u_iᵀv)² δ_{λ_i} (from eigh)."""
    lam, U = eigen(problem.A)
    norm = max(float(np.max(np.abs(lam))), 1e-300)
    gaps = np.diff(problem.distinct)
    # Merge rounding-split copies of a repeated eigenvalue, never two distinct eigenvalues.
    # (1e-8: when rounding keeps Lanczos going past a breakdown, an eigenvalue can be found
    # again, as a second Ritz value ~1e-10 ‖A‖ away that shares its weight)
    tol = 1e-8 * norm
    for p in range(m.num_probes):
        atoms, w = probe_measure(lam, U, V[:, p])
        s = int(m.steps[p])
        nodes, weights = m.nodes[p, :s], m.weights[p, :s]
        # 1. the CDFs coincide: W₁ is rounding-small
        assert w1_discrete(atoms, w, nodes, weights) <= 1e-9 * norm
        # 2. every moment, not only those up to 2k − 1
        powers = np.arange(0, 2 * m.num_steps + 6)
        scaled_true = ((atoms / norm)[None, :] ** powers[:, None]) @ w
        scaled_est = ((nodes / norm)[None, :] ** powers[:, None]) @ weights
        np.testing.assert_allclose(scaled_est, scaled_true, rtol=0, atol=1e-8)
        # 3. merged atoms and their weights coincide (when distinct eigenvalues are
        #    numerically distinct; weights to 1e-7 since a cluster conditions them like ε/gap)
        if gaps.size and gaps.min() <= 100 * tol:
            continue
        true_pos, true_mass = merge_atoms(atoms, w, tol)
        keep = true_mass > 1e-12
        true_pos, true_mass = true_pos[keep], true_mass[keep]
        est_pos, est_mass = merge_atoms(nodes, weights, tol)
        keep = est_mass > 1e-12
        est_pos, est_mass = est_pos[keep], est_mass[keep]
        assert est_pos.size == true_pos.size, (est_pos, true_pos)
        np.testing.assert_allclose(est_pos, true_pos, rtol=0, atol=tol)
        np.testing.assert_allclose(est_mass, true_mass, rtol=0, atol=1e-7)


@settings(max_examples=80, deadline=None)
@given(problem=few_distinct_problems(), extra=st.integers(0, 4), kind=probe_kinds)
def test_exact_when_steps_reach_distinct_eigenvalues(problem, extra, kind):
    """k ≥ #distinct eigenvalues ⇒ the Gauss rule *is* the probe's spectral measure."""
    m, V = _run(problem, len(problem.distinct) + extra, 2, kind)
    # (A breakdown usually stops each probe at d steps; when rounding keeps the last β just
    # above the breakdown threshold the extra nodes carry weight ~β², checked below.)
    _assert_rule_is_probe_measure(problem, m, V)


@settings(max_examples=40, deadline=None)
@given(problem=problems(max_n=120), kind=probe_kinds)
def test_exact_when_steps_reach_n(problem, kind):
    """k = n: exact for any spectrum, clusters and rounding-split repeats included."""
    m, V = _run(problem, problem.n, 2, kind)
    _assert_rule_is_probe_measure(problem, m, V)


@settings(max_examples=60, deadline=None)
@given(
    problem=problems(max_n=150),
    num_steps=st.integers(1, 60),
    num_probes=st.integers(1, 4),
    kind=probe_kinds,
    reorth=st.sampled_from(["full", "none"]),
)
def test_nodes_inside_spectrum_and_weights_a_distribution(
    problem, num_steps, num_probes, kind, reorth
):
    m = spectral.slq(
        problem.A, num_steps, num_probes, seed=problem.seed, probes=kind, reorth=reorth
    )
    lam = np.linalg.eigvalsh(problem.A)
    k = min(num_steps, problem.n)
    assert m.nodes.shape == m.weights.shape == (num_probes, k)
    assert m.alpha.shape == (num_probes, k) and m.beta.shape == (num_probes, k - 1)
    assert np.all(np.isfinite(m.nodes)) and np.all(np.isfinite(m.weights))
    slack = 1e-10 * max(float(np.max(np.abs(lam))), 1e-300) * k
    assert np.all(m.nodes >= lam[0] - slack) and np.all(m.nodes <= lam[-1] + slack)
    assert np.all(m.weights >= 0.0)
    np.testing.assert_allclose(m.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.diff(m.nodes, axis=1) >= 0.0)  # ascending, padding included
    for p in range(num_probes):
        s = int(m.steps[p])
        assert 1 <= s <= k
        # padding after a breakdown: finite copies of the top node, zero weight
        assert np.all(m.weights[p, s:] == 0.0)
        assert np.all(m.nodes[p, s:] == m.nodes[p, s - 1])
        assert np.all(m.alpha[p, s:] == 0.0) and np.all(m.beta[p, s - 1 :] == 0.0)
    assert m.num_matvecs == int(np.sum(m.steps))


def test_breakdown_pads_rows_with_zero_weight_nodes():
    """Four distinct eigenvalues, 20 steps: every probe stops after 4 with an exact rule."""
    A, _ = spectral.matrices.from_spectrum(np.repeat([-1.0, 0.0, 0.5, 3.0], 10), seed=7)
    m = spectral.slq(A, num_steps=20, num_probes=3, seed=1)
    np.testing.assert_array_equal(m.steps, [4, 4, 4])
    assert m.nodes.shape == (3, 20) and np.all(np.isfinite(m.nodes))
    assert np.all(m.weights[:, 4:] == 0.0) and np.all(m.last_components[:, 4:] == 0.0)
    np.testing.assert_allclose(m.nodes[:, :4], np.tile([-1.0, 0.0, 0.5, 3.0], (3, 1)), atol=1e-12)
    assert np.all(m.residual <= 1e-10)
    assert m.num_matvecs == 12


def test_gauss_quadrature_of_a_known_jacobi_matrix():
    """Legendre: α = 0, β_j = j/sqrt(4j² − 1) ⇒ Gauss–Legendre nodes, weights w/2."""
    k = 12
    j = np.arange(1, k)
    nodes, weights, last = gauss_quadrature(np.zeros((1, k)), (j / np.sqrt(4.0 * j * j - 1))[None])
    x, w = np.polynomial.legendre.leggauss(k)
    np.testing.assert_allclose(nodes[0], x, atol=1e-14)
    np.testing.assert_allclose(weights[0], w / 2.0, atol=1e-14)
    assert np.all((last > 0) & (last <= 1))


@pytest.mark.parametrize("k", [1, 2, 7])
def test_gauss_quadrature_weights_are_not_squared_twice(k):
    """With T = diag(α) (β = 0) only the first node carries weight: S = I, ω = S₁ⱼ²."""
    alpha = np.arange(1.0, k + 1.0)[None]
    nodes, weights, _ = gauss_quadrature(alpha, np.zeros((1, k - 1)))
    np.testing.assert_allclose(nodes[0], alpha[0])
    expected = np.zeros(k)
    expected[0] = 1.0
    np.testing.assert_allclose(weights[0], expected, atol=1e-15)


def test_gauss_quadrature_two_by_two_closed_form():
    """T = [[0, 1], [1, 0]]: nodes ±1, weights 1/2 each; T = [[a, b], [b, a]] likewise."""
    nodes, weights, _ = gauss_quadrature(np.array([[2.0, 2.0]]), np.array([[3.0]]))
    np.testing.assert_allclose(nodes[0], [-1.0, 5.0], atol=1e-14)
    np.testing.assert_allclose(weights[0], [0.5, 0.5], atol=1e-14)
