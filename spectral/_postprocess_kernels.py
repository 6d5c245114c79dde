"""numba kernels for the post-processing: Gaussian smoothing and the pointwise density bound.

Both sums have terms that vanish away from their centre. The smoothed density
``Σ_j ω_j g_σ(t − θ_j)`` has ``g_σ(u) ∝ exp(−u²/(2σ²))``, which is exactly ``0.0`` in float64
once ``u²/(2σ²) > 745.2`` (below the smallest subnormal number), that is for
``|u| > 38.61σ``. The pointwise bound ``Σ_i D_i (G(t − x_i) − G(t − x_{i+1}))`` has
``G(u) = g_σ(u)`` for ``u ≤ 0`` and ``2g_σ(0) − g_σ(u)`` above, so ``G`` is exactly ``0`` or
exactly ``2g_σ(0)`` beyond the same distance and the difference vanishes for every interval
``[x_i, x_{i+1}]`` that lies entirely on one side of the window ``|x − t| ≤ 38.61σ``.

The vectorised NumPy code in :mod:`spectral.smoothing` and :mod:`spectral.bounds` evaluates
every term (``P k T`` and ``T m`` of them); the kernels below visit only those in the window,
found by binary search in the sorted grid (smoothing) or the sorted breakpoints (bound), so
the work is ``P k S`` and ``T s`` with ``S``, ``s`` the points and breakpoints per window.
Terms outside are zero in both, so the two agree up to the order of the floating-point
additions (about ``1e-15`` relative; tested). ``bench/bench_postprocess.py`` measured the
smoothing 4–5× faster than NumPy at the resolution rule's σ.

The kernels run when numba imports, ``SPECTRAL_DISABLE_NUMBA`` is not set, every input is
finite, and the sum has at least :data:`MIN_TERMS` terms: below that the NumPy code takes
milliseconds, less than loading the compiled kernels in a fresh process.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._sparse_kernels import _disabled_by_env, parallel_jit

__all__ = ["MIN_TERMS", "pointwise_bound", "smooth_sum"]

#: Terms (``P k T`` for smoothing, ``T m`` for the bound) below which NumPy is used.
MIN_TERMS = 1 << 24

#: ``|u|/σ`` beyond which ``exp(−u²/(2σ²))`` is exactly zero in float64 (with a margin).
CUTOFF = 38.7

_NORM = 1.0 / math.sqrt(2.0 * math.pi)

# Replaced by ``numba.prange`` before compilation (see :mod:`spectral._sparse_kernels`).
prange = range


def _smooth(nodes, weights, grid, sigma, out):
    """``out[p, i] = Σ_j ω_pj exp(−((t_i − θ_pj)/σ)²/2)`` over the window; ``grid`` ascending."""
    P, k = nodes.shape
    reach = CUTOFF * sigma
    for p in prange(P):
        for i in range(grid.size):
            out[p, i] = 0.0
        for j in range(k):
            w = weights[p, j]
            if w == 0.0:
                continue
            theta = nodes[p, j]
            lo = np.searchsorted(grid, theta - reach)
            hi = np.searchsorted(grid, theta + reach, side="right")
            for i in range(lo, hi):
                z = (grid[i] - theta) / sigma
                out[p, i] += w * math.exp(-0.5 * z * z)


def _pointwise(t, breaks, gap, sigma, out):
    """``out[i] = Σ_l gap_l (G(t_i − x_l) − G(t_i − x_{l+1}))`` over the window."""
    m = breaks.size
    reach = CUTOFF * sigma
    top = 2.0 * _NORM / sigma
    for i in prange(t.size):
        ti = t[i]
        # intervals [x_l, x_{l+1}] meeting [ti - reach, ti + reach]
        lo = max(np.searchsorted(breaks, ti - reach, side="right") - 1, 0)
        hi = min(np.searchsorted(breaks, ti + reach), m - 1)
        acc = 0.0
        if lo < hi:
            u = ti - breaks[lo]
            g = _NORM / sigma * math.exp(-0.5 * (u / sigma) ** 2)
            G_prev = g if u <= 0.0 else top - g
            for r in range(lo, hi):
                u = ti - breaks[r + 1]
                g = _NORM / sigma * math.exp(-0.5 * (u / sigma) ** 2)
                G_next = g if u <= 0.0 else top - g
                acc += (G_prev - G_next) * gap[r]
                G_prev = G_next
        out[i] = acc


@functools.cache
def _kernels():
    """Compile (or load from numba's cache) the kernels; ``None`` when numba is missing."""
    try:
        import numba
    except ImportError:
        return None
    globals()["prange"] = numba.prange
    return {"smooth": parallel_jit(numba, _smooth), "pointwise": parallel_jit(numba, _pointwise)}


def _usable(terms: int, *arrays: np.ndarray) -> dict | None:
    if terms < MIN_TERMS or _disabled_by_env():
        return None
    if not all(np.isfinite(a).all() for a in arrays):
        return None  # NumPy propagates NaN the documented way
    return _kernels()


def smooth_sum(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray | None:
    """Return ``Σ_j ω_pj exp(−((t − θ_pj)/σ)²/2)`` per probe ``p`` and grid point, or ``None``.

    ``None`` means "use NumPy" (numba missing or switched off, too little work, non-finite
    input). The normalisation ``1/(σ√(2π))`` is left to the caller, as in NumPy's code.
    """
    P, k = nodes.shape
    kernels = _usable(P * k * grid.size, nodes, weights, grid)
    if kernels is None:
        return None
    order = None
    if grid.size > 1 and np.any(grid[1:] < grid[:-1]):
        order = np.argsort(grid, kind="stable")
        grid = grid[order]
    out = np.empty((P, grid.size))
    kernels["smooth"](
        np.ascontiguousarray(nodes, dtype=np.float64),
        np.ascontiguousarray(weights, dtype=np.float64),
        np.ascontiguousarray(grid),
        float(sigma),
        out,
    )
    if order is not None:
        unsorted = np.empty_like(out)
        unsorted[:, order] = out
        out = unsorted
    return out


def pointwise_bound(
    t: np.ndarray, breaks: np.ndarray, gap: np.ndarray, sigma: float
) -> np.ndarray | None:
    """Return the pointwise density bound at the points ``t`` (1-D), or ``None`` (use NumPy)."""
    kernels = _usable(t.size * breaks.size, t, breaks, gap)
    if kernels is None or breaks.size < 2:
        return None
    out = np.empty(t.size)
    kernels["pointwise"](
        np.ascontiguousarray(t, dtype=np.float64),
        np.ascontiguousarray(breaks, dtype=np.float64),
        np.ascontiguousarray(gap, dtype=np.float64),
        float(sigma),
        out,
    )
    return out
