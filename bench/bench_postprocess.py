"""numba for the post-processing: the library's kernels against its vectorised NumPy code.

Issue 4 names two candidates: Gaussian smoothing of many Gauss nodes on a fine grid
(:func:`spectral.smoothing.smooth`, ``O(P k T)`` kernel evaluations) and the pointwise
density bound (:meth:`spectral.ErrorBounds.density_pointwise`, ``O(T m)`` for ``m``
breakpoints of the CDF band). Both sums have terms that are exactly zero in float64 a few
dozen ``σ`` from their centre; the numba kernels of :mod:`spectral._postprocess_kernels`
visit only the others. This script times, side by side in one run, each function with the
kernels forced off (``MIN_TERMS`` raised: the NumPy code) and as dispatched (the kernels,
after one untimed call that compiles or loads them), on the measure of a real run (the 10⁵
grid Laplacian, ``k = 90``), and prints the largest difference. The CDF band (two
``searchsorted``) has no kernel and is timed for comparison.

Run from the repository root::

    python bench/bench_postprocess.py                # P = 100 probes, grids of 2,000 and 20,000
    python bench/bench_postprocess.py --probes 10 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import spectral
from spectral import _postprocess_kernels as pk
from spectral.matrices import grid_laplacian
from spectral.smoothing import smooth


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
    default = pk.MIN_TERMS

    def both(fn):
        pk.MIN_TERMS = 1 << 62
        t_np, ref = timed(fn, args.repeats)
        pk.MIN_TERMS = default
        fn()  # compile, or load from numba's cache
        t_nb, got = timed(fn, args.repeats)
        return t_np, t_nb, float(np.max(np.abs(ref - got)) / np.max(np.abs(ref)))

    print(f"grid Laplacian n = {L.shape[0]:,}, P = {args.probes}, k = {args.steps}: "
          f"{nodes.size} nodes, sigma = {sigma:.3g} (resolution rule), spectrum [0, 8]")
    print(f"{'what':<30}{'T':>7}{'numpy (s)':>11}{'numba (s)':>11}{'numpy/numba':>13}"
          f"{'max |diff| rel':>16}")
    for T in args.grids:
        grid = np.linspace(-0.5, 8.5, T)
        rows = [
            ("smooth (P densities)", both(lambda g=grid: smooth(nodes, weights, g, sigma)),
             nodes.size * T),
            ("density_pointwise", both(lambda g=grid: bounds.density_pointwise(g, sigma)),
             T * bounds._breaks.size),
        ]
        for what, (t_np, t_nb, diff), terms in rows:
            used = "" if terms >= default else "  (below MIN_TERMS: NumPy both times)"
            print(f"{what:<30}{T:>7}{t_np:>11.4f}{t_nb:>11.4f}{t_np / t_nb:>13.2f}"
                  f"{diff:>16.1e}{used}")
        t_band, _ = timed(lambda g=grid: bounds.cdf_band(g), args.repeats)
        print(f"{'cdf_band (no kernel)':<30}{T:>7}{t_band:>11.4f}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
