"""Exact references the tests compare against (dense eigendecompositions, closed forms).

Everything here except :func:`assert_same_recurrence` (which compares two spectral runs) is
computed independently of :mod:`spectral`: discrete measures are handled as sorted atoms,
distances between their CDFs are exact integrals / maxima of step functions.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.special import ndtr

import spectral


def step_cdf(positions, masses, x) -> np.ndarray:
    """Right-continuous CDF of ``Σ masses δ_positions`` at the points ``x``."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    masses = np.asarray(masses, dtype=np.float64).reshape(-1)
    order = np.argsort(positions, kind="stable")
    cum = np.concatenate(([0.0], np.cumsum(masses[order])))
    return cum[np.searchsorted(positions[order], np.asarray(x, dtype=np.float64), side="right")]


def w1_discrete(pos1, mass1, pos2, mass2) -> float:
    """Exact ``W₁ = ∫ |F₁ − F₂|`` for two discrete measures of equal total mass."""
    breaks = np.unique(np.concatenate([np.ravel(pos1), np.ravel(pos2)]))
    if breaks.size < 2:
        return 0.0
    left = breaks[:-1]
    diff = np.abs(step_cdf(pos1, mass1, left) - step_cdf(pos2, mass2, left))
    return float(diff @ np.diff(breaks))


def ks_discrete(pos1, mass1, pos2, mass2, slack: float = 0.0) -> float:
    """Exact ``sup_x |F₁(x) − F₂(x)|``: the difference only changes at the atoms.

    With ``slack = δ > 0``, positions are compared up to ``δ`` (a Lévy-type distance,
    ``sup_x max(F₁(x − δ) − F₂(x), F₂(x − δ) − F₁(x))``): an atom and a copy of it moved by
    rounding then count as equal. ``slack = 0`` is the plain KS distance.
    """
    breaks = np.unique(np.concatenate([np.ravel(pos1), np.ravel(pos2)]))
    if slack == 0.0:
        return float(np.max(np.abs(step_cdf(pos1, mass1, breaks) - step_cdf(pos2, mass2, breaks))))
    x = np.unique(np.concatenate([breaks, breaks + slack]))
    f1, f2 = step_cdf(pos1, mass1, x), step_cdf(pos2, mass2, x)
    f1_left, f2_left = step_cdf(pos1, mass1, x - slack), step_cdf(pos2, mass2, x - slack)
    return float(max(np.max(f1_left - f2), np.max(f2_left - f1), 0.0))


def probe_measure(eigenvalues, eigenvectors, v):
    """Atoms ``λ_i`` and weights ``(u_iᵀv)² / vᵀv`` of the weighted spectral measure ``Ψ_v``."""
    v = np.asarray(v, dtype=np.float64)
    w = (eigenvectors.T @ v) ** 2
    return np.asarray(eigenvalues, dtype=np.float64), w / np.sum(w)


def eigen(A):
    """Dense ``numpy.linalg.eigh`` of an explicit (dense or sparse) symmetric matrix."""
    dense = A.toarray() if hasattr(A, "toarray") else np.asarray(A, dtype=np.float64)
    return np.linalg.eigh(dense)


def gaussian(u, sigma):
    """The kernel ``g_σ(u)``."""
    return np.exp(-0.5 * (np.asarray(u) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def smoothed_density(eigenvalues, grid, sigma, weights=None) -> np.ndarray:
    """Exact ``φ_σ(t) = Σ_i w_i g_σ(t − λ_i)`` (``w_i = 1/n`` by default)."""
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    w = np.full(lam.size, 1.0 / lam.size) if weights is None else np.asarray(weights)
    grid = np.asarray(grid, dtype=np.float64)
    return gaussian(grid[:, None] - lam[None, :], sigma) @ w


def smoothed_cdf(eigenvalues, x, sigma) -> np.ndarray:
    """CDF of ``Φ * g_σ``: ``(1/n) Σ_i Φ_N((x − λ_i)/σ)``."""
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    x = np.asarray(x, dtype=np.float64)
    return ndtr((x[:, None] - lam[None, :]) / sigma).mean(axis=1)


def merge_atoms(positions, masses, tol):
    """Merge atoms closer than ``tol`` (single linkage on the sorted positions)."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    masses = np.asarray(masses, dtype=np.float64).reshape(-1)
    order = np.argsort(positions, kind="stable")
    pos, mass = positions[order], masses[order]
    if pos.size == 0:
        return pos, mass
    starts = np.concatenate(([0], np.flatnonzero(np.diff(pos) > tol) + 1))
    merged_mass = np.add.reduceat(mass, starts)
    # Mass-weighted centre (the first position where a group carries no mass).
    sums = np.add.reduceat(pos * mass, starts)
    centre = np.where(
        merged_mass > 0, sums / np.where(merged_mass > 0, merged_mass, 1.0), pos[starts]
    )
    return centre, merged_mass


def semicircle_cdf(x) -> np.ndarray:
    """CDF of the semicircle law on ``[−2, 2]`` (slq-math.md §8)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -2.0, 2.0)
    return 0.5 + x * np.sqrt(4.0 - x * x) / (4.0 * math.pi) + np.arcsin(x / 2.0) / math.pi


def semicircle_quantiles(n: int) -> np.ndarray:
    """``F⁻¹((i − ½)/n)``, ``i = 1..n``, by vectorised bisection to machine precision."""
    target = (np.arange(1, n + 1) - 0.5) / n
    lo, hi = np.full(n, -2.0), np.full(n, 2.0)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = semicircle_cdf(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def w1_to_continuous(cdf, positions, masses, a, b, num: int = 400_001) -> float:
    """``∫_a^b |F(x) − F̂(x)| dx`` for a continuous CDF ``F`` and a discrete ``F̂``.

    Midpoint rule on a fine grid; ``F − F̂`` has bounded variation 2, so the error is at most
    ``2 (b − a)/num``, which the callers add to their tolerance.
    """
    edges = np.linspace(a, b, num + 1)
    mid = 0.5 * (edges[:-1] + edges[1:])
    return float(np.sum(np.abs(cdf(mid) - step_cdf(positions, masses, mid))) * (b - a) / num)


def first_converged_step(alpha, beta, steps, rtol: float = 1e-3) -> int:
    """First step ``j`` at which some Ritz value of ``T_j`` has converged.

    Converged: Ritz residual ``β_j |S_{j,i}| ≤ rtol ‖T‖``. Before that, Lanczos is a
    well-conditioned function of its input (Paige: orthogonality, and with it forward
    stability, is lost exactly in the direction of converged Ritz vectors).
    """
    norm = float(np.max(np.abs(alpha[:steps]))) + 2 * float(np.max(beta[: steps - 1], initial=0))
    for j in range(1, steps):
        if j == 1:
            last = np.ones(1)
        else:
            last = np.abs(eigh_tridiagonal(alpha[:j], beta[: j - 1])[1][-1])
        if np.min(beta[j - 1] * last) <= rtol * norm:
            return j
    return steps


def assert_same_recurrence(A, v, alpha, beta, steps, reorth: str) -> None:
    """Lanczos coefficients of ``(A, v)`` from a batched run equal those of a run on ``v`` alone.

    The runs differ by the rounding of gemm vs gemv products. Lanczos amplifies such
    differences once a Ritz value has converged (plainly without reorthogonalisation; with
    it through the noise directions of rounding-split repeated eigenvalues: seen, a 10⁻¹⁶
    difference grown to 0.04 in α by step 19 on a narrow clustered spectrum), and rounding
    can put a near-breakdown β on either side of the threshold. So the coefficients must
    agree to 10⁻¹⁰ ‖A‖ up to the first step where a Ritz value converged (of either run),
    and step counts may differ only where the longer run's β is ~0. A batching bug (columns
    mixed, a wrong coefficient) shows from the first steps on.
    """
    single = spectral.lanczos(A, v, alpha.size, reorth=reorth)
    s_single, s_other = int(single.steps), int(steps)
    norm = float(np.max(np.abs(single.alpha))) + 2 * float(np.max(single.beta, initial=0.0))
    if s_single != s_other:  # only at a near-breakdown: the longer run's β there is ~0
        longer = single.beta if s_single > s_other else beta
        assert longer[min(s_single, s_other) - 1] <= 1e-9 * norm
    s = min(
        first_converged_step(single.alpha, single.beta, s_single),
        first_converged_step(alpha, beta, s_other),
    )
    np.testing.assert_allclose(alpha[:s], single.alpha[:s], rtol=0, atol=1e-10 * norm)
    np.testing.assert_allclose(beta[: s - 1], single.beta[: s - 1], rtol=0, atol=1e-10 * norm)
