r"""Gaussian smoothing of Gauss rules into densities, and the rules that choose σ.

The estimate of the smoothed spectral density ``φ_σ(t) = (1/n) Σ_i g_σ(t − λ_i)`` is

.. math::

    φ̂_σ(t) = \frac{1}{P} \sum_{ℓ=1}^{P} \sum_{j=1}^{k} ω^{(ℓ)}_j\, g_σ(t − θ^{(ℓ)}_j),
    \qquad g_σ(x) = \frac{e^{−x²/(2σ²)}}{σ\sqrt{2π}},

a density of total mass one on the real line (Ghorbani, Krishnan & Xiao 2019, Algorithm 1).

Three ways to choose the width σ:

* **absolute** ``sigma``: in the units of the eigenvalues;
* **relative** ``sigma_rel``: ``σ = sigma_rel · (b − a)/2``, i.e. ``sigma_rel`` is σ for the
  spectrum mapped to ``[−1, 1]`` (the convention in which Ghorbani et al. state their σ²);
* **Lanczos resolution rule** (the default): with ``k`` steps the Gauss nodes resolve the
  spectrum at spacing about ``h = (b − a)/(k − 1)``; choose σ so that a Gaussian falls to
  ``1/κ`` of its peak at ``h/2``: ``σ = h / sqrt(8 ln κ)`` with ``κ = 1.25`` (the rule of
  Lin, Saad & Yang's EVSL code, without its cap on ``k``).

``ghorbani_sigma2`` reproduces the released code of Ghorbani et al. exactly: the grid is
``linspace(mean(min θ) − 0.01, mean(max θ) + 0.01, 10000)`` (means over probes), the kernel
*variance* is ``sigma_squared · max(1, λ_max − λ_min)`` with those grid ends, and the
density is renormalised so that its Riemann sum on the grid is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._postprocess_kernels import smooth_sum
from .bounds import ErrorBounds

__all__ = ["RESOLUTION_KAPPA", "Density", "resolution_sigma", "smooth"]

#: Peak-to-midpoint ratio of the resolution rule ``σ = h / sqrt(8 ln κ)``.
RESOLUTION_KAPPA = 1.25

#: Grid points used by ``ghorbani_sigma2`` (the released code's ``grid_len``).
GHORBANI_GRID_LEN = 10000
#: Grid padding of the released code (``grid_expand``).
GHORBANI_GRID_EXPAND = 1e-2

_DEFAULT_NUM_POINTS = 1024
#: The automatic grid covers the nodes ± this many σ.
_GRID_SIGMAS = 6.0
#: Grid-by-node entries evaluated at once (memory of the vectorised kernel sum).
_CHUNK = 2**22


def resolution_sigma(lo: float, hi: float, num_steps: int, kappa: float = RESOLUTION_KAPPA):
    """σ of the Lanczos resolution rule, ``((hi − lo)/(k − 1)) / sqrt(8 ln κ)``.

    A spectrum of zero width (all nodes equal) gets ``σ = 10⁻³ max(|lo|, 1)``.

    Parameters
    ----------
    lo, hi : float
        Range of the spectrum to resolve (the Ritz values' range by default).
    num_steps : int
        Lanczos steps ``k``.
    kappa : float, default 1.25
        Peak-to-midpoint ratio ``κ``: a Gaussian at a node falls to ``1/κ`` of its peak
        half-way to the next node, ``(hi − lo)/(2(k − 1))`` away.

    Returns
    -------
    float
        The kernel width σ.
    """
    width = float(hi) - float(lo)
    if width <= 0.0:
        return 1e-3 * max(abs(float(lo)), 1.0)
    return (width / max(int(num_steps) - 1, 1)) / math.sqrt(8.0 * math.log(kappa))


def smooth(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Per-probe Gaussian-smoothed densities ``Σ_j ω_j g_σ(t − θ_j)`` on ``grid``.

    Parameters
    ----------
    nodes, weights : ndarray, shape (P, k)
        Gauss nodes and weights of each probe.
    grid : ndarray, shape (T,)
        Evaluation points.
    sigma : float
        Kernel width.

    Returns
    -------
    ndarray, shape (P, T)
        Vectorised over probes, nodes and grid points in blocks of bounded memory; for
        large sums (at least ``2**24`` terms) a numba kernel that skips the terms that are
        exactly zero in float64 (``|t − θ| > 38.7σ``) gives the same values up to the order
        of the additions (:mod:`spectral._postprocess_kernels`).
    """
    P, k = nodes.shape
    grid = np.asarray(grid, dtype=np.float64)
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    fast = smooth_sum(nodes, weights, grid, sigma)  # numba, terms within 38.7σ only
    if fast is not None:
        return fast * norm
    out = np.empty((P, grid.size))
    step = max(1, _CHUNK // max(1, P * k))
    for start in range(0, grid.size, step):
        t = grid[start : start + step]
        z = (t[None, None, :] - nodes[:, :, None]) / sigma
        out[:, start : start + step] = np.einsum("pk,pkt->pt", weights, np.exp(-0.5 * z * z))
    return out * norm


@dataclass(frozen=True, eq=False)
class Density:
    """A Gaussian-smoothed spectral density on a grid, with its errors.

    Attributes
    ----------
    grid : ndarray, shape (T,)
        Evaluation points.
    values : ndarray, shape (T,)
        ``φ̂_σ(t)``, the average over probes.
    sigma : float
        Kernel width σ actually used (absolute, in eigenvalue units).
    stderr : ndarray, shape (T,)
        Standard error across probes, ``std_ℓ(φ̂^{(ℓ)}_σ(t)) / sqrt(P)`` (NaN for one
        probe): the *typical* probe noise, not a guarantee.
    bound : ndarray, shape (T,)
        Certified pointwise bound ``e(t) ≥ |φ_σ(t) − φ̂_σ(t)|`` (see
        :mod:`spectral.bounds`; zero-free and conservative).
    l1_bound, sup_bound : float
        Certified bounds on ``‖φ_σ − φ̂_σ‖₁`` and ``‖φ_σ − φ̂_σ‖_∞``.
    smoothing_bias : float
        ``σ√(2/π) ≥ W₁(Φ, Φ * g_σ)``: how far smoothing moves the spectrum.
    bounds : ErrorBounds
        The CDF-level bounds the above were derived from (its ``conditions`` apply here).
    normalised : bool
        True when the values were renormalised to unit Riemann sum (Ghorbani mode); the
        certified bounds then refer to the un-normalised estimate.
    """

    grid: np.ndarray
    values: np.ndarray
    sigma: float
    stderr: np.ndarray
    bound: np.ndarray
    l1_bound: float
    sup_bound: float
    smoothing_bias: float
    bounds: ErrorBounds
    normalised: bool = False

    @property
    def lower(self) -> np.ndarray:
        """Certified lower envelope ``max(φ̂_σ − e, 0)`` of the true smoothed density."""
        return np.maximum(self.values - self.bound, 0.0)

    @property
    def upper(self) -> np.ndarray:
        """Certified upper envelope ``φ̂_σ + e`` of the true smoothed density."""
        return self.values + self.bound


def choose_sigma(
    lo: float,
    hi: float,
    num_steps: int,
    *,
    sigma: float | None,
    sigma_rel: float | None,
) -> float:
    """Resolve the user's σ options into an absolute σ (at most one may be given)."""
    given = [s is not None for s in (sigma, sigma_rel)]
    if sum(given) > 1:
        raise ValueError("give at most one of sigma and sigma_rel")
    if sigma is not None:
        value = float(sigma)
    elif sigma_rel is not None:
        width = float(hi) - float(lo)
        value = float(sigma_rel) * (width / 2.0 if width > 0 else max(abs(float(lo)), 1.0))
    else:
        value = resolution_sigma(lo, hi, num_steps)
    if not (np.isfinite(value) and value > 0.0):
        raise ValueError(f"the smoothing width must be positive and finite, got {value}")
    return value


def auto_grid(lo: float, hi: float, sigma: float, num_points: int) -> np.ndarray:
    """``num_points`` equispaced points on ``[lo − 6σ, hi + 6σ]``."""
    if int(num_points) < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    return np.linspace(lo - _GRID_SIGMAS * sigma, hi + _GRID_SIGMAS * sigma, int(num_points))


def ghorbani_grid_and_sigma(
    nodes: np.ndarray, steps: np.ndarray, sigma_squared: float, grid=None
) -> tuple[np.ndarray, float]:
    """Grid and σ of the released Ghorbani et al. code for ``sigma_squared``."""
    if not (np.isfinite(sigma_squared) and sigma_squared > 0):
        raise ValueError(f"ghorbani_sigma2 must be positive, got {sigma_squared}")
    mins = np.array([nodes[p, 0] for p in range(nodes.shape[0])])
    maxs = np.array([nodes[p, int(steps[p]) - 1] for p in range(nodes.shape[0])])
    lam_max = float(np.mean(maxs)) + GHORBANI_GRID_EXPAND
    lam_min = float(np.mean(mins)) - GHORBANI_GRID_EXPAND
    if grid is None:
        grid = np.linspace(lam_min, lam_max, GHORBANI_GRID_LEN)
    variance = float(sigma_squared) * max(1.0, lam_max - lam_min)
    return np.asarray(grid, dtype=np.float64), math.sqrt(variance)
