"""Would numba pay for the post-processing? Vectorised NumPy against truncated numba kernels.

Issue 4 names two candidates: Gaussian smoothing of many Gauss nodes on a fine grid
(:func:`spectral.smoothing.smooth`, ``O(P k T)`` kernel evaluations) and the pointwise
density bound (:meth:`spectral.ErrorBounds.density_pointwise`, ``O(T m)`` for ``m``
breakpoints of the CDF band). Both kernels are negligible a few dozen ``σ`` away from their
centre (``exp(−z²/2)`` underflows to zero in float64 beyond ``|z| ≈ 38.6``), so a kernel that
visits only the grid points within ``|t − θ| ≤ 38.6 σ`` of each node does ``O(P k S)`` work
with ``S`` the points per support instead of ``T``. This script times, side by side in one
run, the library's NumPy code against such numba kernels (defined here, as candidates) on
the measure of a real run (the 10⁵ grid Laplacian, ``k = 90``), and checks that both give
the same values.

Run from the repository root::

    python bench/bench_postprocess.py                # P = 100 probes, grids of 2,000 and 20,000
    python bench/bench_postprocess.py --probes 10 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numba
import numpy as np

import spectral
from spectral.matrices import grid_laplacian
from spectral.smoothing import smooth

CUT = 38.6  # |z| beyond which exp(-z^2/2) is below the smallest normal float64


@numba.njit(cache=True)
def smooth_truncated(nodes, weights, grid, sigma):  # grid sorted ascending
    P, k = nodes.shape
    T = grid.size
    out = np.zeros((P, T))
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for p in range(P):
        for j in range(k):
            th = nodes[p, j]
            w = weights[p, j] * norm
            if w == 0.0 or not np.isfinite(th):
                continue
            lo = np.searchsorted(grid, th - CUT * sigma)
            hi = np.searchsorted(grid, th + CUT * sigma, side="right")
            for i in range(lo, hi):
                z = (grid[i] - th) / sigma
                out[p, i] += w * math.exp(-0.5 * z * z)
    return out


def timed(fn, repeats):
    best = math.inf
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--grids", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    L, _ = grid_laplacian(316)
    m = spectral.slq(L, args.steps, args.probes, reorth="none", seed=0)
    nodes, weights = m.nodes, m.weights
    sigma = m.density().sigma
    bounds = m.bounds()
    smooth_truncated(nodes[:1, :2], weights[:1, :2], np.linspace(0, 8, 10), sigma)  # compile
    print(f"grid Laplacian n = {L.shape[0]:,}, P = {args.probes}, k = {args.steps}: "
          f"{nodes.size} nodes, sigma = {sigma:.3g} (resolution rule), spectrum [0, 8]")
    print(f"{'what':<34}{'T':>7}{'numpy (s)':>11}{'numba (s)':>11}{'numpy/numba':>13}"
          f"{'max |diff| rel':>16}")
    for T in args.grids:
        grid = np.linspace(-0.5, 8.5, T)
        t_np, ref = timed(lambda grid=grid: smooth(nodes, weights, grid, sigma), args.repeats)
        t_nb, got = timed(lambda grid=grid: smooth_truncated(nodes, weights, grid, sigma),
                          args.repeats)
        diff = np.max(np.abs(ref - got)) / np.max(np.abs(ref))
        print(f"{'smooth (P densities)':<34}{T:>7}{t_np:>11.4f}{t_nb:>11.4f}"
              f"{t_np / t_nb:>13.2f}{diff:>16.1e}")
        t_pw, _ = timed(lambda grid=grid: bounds.density_pointwise(grid, sigma), args.repeats)
        t_band, _ = timed(lambda grid=grid: bounds.cdf_band(grid), args.repeats)
        print(f"{'density_pointwise (numpy only)':<34}{T:>7}{t_pw:>11.4f}{'':>11}{'':>13}")
        print(f"{'cdf_band (numpy only)':<34}{T:>7}{t_band:>11.4f}{'':>11}{'':>13}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
