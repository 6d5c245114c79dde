"""Overhead of SLQ over its own operator products, on a sparse 2-D grid Laplacian.

For each configuration this prints ``slq time / bare time``, where *bare* is the time of
exactly the products SLQ makes, done with nothing else around them, on the same matrix and
with the same block shapes:

* sequential probes (``batch_size=1``): ``P`` runs of ``k`` single-vector products ``L @ x``;
* batched probes (all ``P`` probes in one block): ``k`` block products ``L @ X`` with ``X`` a
  C-contiguous ``(n, P)`` array (the layout scipy's CSR kernel reads without a copy).

The SLQ time is one full :func:`spectral.slq` call as a user makes it: operator checks,
probe draw, Lanczos recurrence, Gauss rules. With ``reorth="none"`` an explicit CSR matrix
runs, when numba is installed, through the fused kernels of ``spectral._sparse_kernels``;
both that path (``numba``) and the plain numpy recurrence (``numpy``, forced with
``SPECTRAL_DISABLE_NUMBA=1``) are timed. ``reorth="full"`` always runs the numpy path.

Each figure is the minimum over ``--repeats`` runs, and every repeat runs the bare products
and each SLQ variant back to back, so that machine noise hits all of them. Also printed:
the speed-up of batched over sequential probes, for SLQ and for the bare products.

Run from the repository root::

    python bench/bench_overhead.py             # n = 10^6, defaults below, a few minutes
    python bench/bench_overhead.py --n 90000   # a quick smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import scipy

import spectral
from spectral.matrices import grid_laplacian

ENV_FLAG = "SPECTRAL_DISABLE_NUMBA"


def bare_sequential(L, X: np.ndarray, k: int) -> None:
    """``P`` runs of ``k`` single-vector products, as ``batch_size=1`` SLQ does."""
    for p in range(X.shape[1]):
        x = np.ascontiguousarray(X[:, p])
        for _ in range(k):
            L @ x


def bare_batched(L, X: np.ndarray, k: int) -> None:
    """``k`` block products on an ``(n, P)`` block, as batched SLQ does."""
    for _ in range(k):
        L @ X


def run_slq(L, k: int, P: int, reorth: str, batch_size: int, seed: int, path: str):
    """One :func:`spectral.slq` call on the numpy or the numba path."""
    saved = os.environ.get(ENV_FLAG)
    os.environ[ENV_FLAG] = "1" if path == "numpy" else "0"
    try:
        return spectral.slq(
            L, num_steps=k, num_probes=P, reorth=reorth, batch_size=batch_size, seed=seed
        )
    finally:
        if saved is None:
            del os.environ[ENV_FLAG]
        else:
            os.environ[ENV_FLAG] = saved


def numba_path_available() -> bool:
    try:
        from spectral._sparse_kernels import numba_enabled
    except ImportError:
        return False
    saved = os.environ.pop(ENV_FLAG, None)
    try:
        return bool(numba_enabled())
    finally:
        if saved is not None:
            os.environ[ENV_FLAG] = saved


def fused_applies(n: int, b: int) -> bool:
    """Whether the numba path takes an ``n``-row CSR matrix with ``b``-column blocks."""
    try:
        from spectral import _sparse_kernels as kernels
    except ImportError:
        return False
    return n >= getattr(kernels, "MIN_ROWS", 0) and b >= getattr(kernels, "MIN_COLUMNS", 1)


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in info) or "none found"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unavailable"


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000,
                        help="matrix order; the grid is isqrt(n) x isqrt(n) (10^6)")
    parser.add_argument("--k-none", type=int, default=80, help='Lanczos steps, reorth "none"')
    parser.add_argument("--p-none", type=int, default=10, help='probes, reorth "none"')
    parser.add_argument("--k-full", type=int, default=40, help='Lanczos steps, reorth "full"')
    parser.add_argument("--p-full", type=int, default=4, help='probes, reorth "full"')
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the minimum is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", default="auto",
                        help='reorth "none" paths to time: "numpy", "numba", "numpy,numba" or '
                             '"auto" (both when numba is available)')
    parser.add_argument("--reorth", default="none,full",
                        help='reorthogonalisation modes to time, comma-separated ("none,full")')
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit BLAS threads (needs threadpoolctl); default: as configured")
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    has_numba = numba_path_available()
    paths = ["numpy", "numba"] if args.paths == "auto" else args.paths.split(",")
    if "numba" in paths and not has_numba:
        print("numba path not available (numba missing or disabled): timing numpy only")
        paths = [p for p in paths if p != "numba"] or ["numpy"]

    nx = math.isqrt(args.n)
    L, _ = grid_laplacian(nx)
    n = L.shape[0]
    full_gb = args.p_full * args.k_full * n * 8 / 1e9 if "full" in args.reorth else 0.0
    print(f"grid Laplacian {nx}x{nx}: n = {n:,}, nnz = {L.nnz:,}; numpy {np.__version__}, "
          f"scipy {scipy.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    print(f"BLAS threads: {blas_threads()}; load average before the run: {load_average()}")
    print(f"full-reorth basis of the batched run: {full_gb:.2f} GB; repeats = {args.repeats}")

    modes = args.reorth.split(",")
    plan = [
        row
        for row in (("none", args.k_none, args.p_none, paths),
                    ("full", args.k_full, args.p_full, ["numpy"]))
        if row[0] in modes
    ]
    configs = []  # (reorth, layout, k, P)
    for reorth, k, P, _ in plan:
        for layout in ("sequential", "batched"):
            configs.append((reorth, layout, k, P))
    paths_for = {reorth: p for reorth, _, _, p in plan}
    path_of = {}  # a numba row only where the fused kernels take the block
    for c in configs:
        reorth, layout, k, P = c
        batch = 1 if layout == "sequential" else P
        path_of[c] = [p for p in paths_for[reorth]
                      if p == "numpy" or (reorth == "none" and fused_applies(n, batch))]
        if not path_of[c]:
            path_of[c] = ["numpy"]
    if any(p == "numba" for p in paths_for.get("none", [])) and not fused_applies(n, 1):
        print("(sequential probes: the numba path does not take single columns, so the "
              "numba speed-up below is against the numpy sequential run)")
    rng = np.random.default_rng(args.seed)
    blocks = {P: np.ascontiguousarray(rng.standard_normal((n, P))) for _, _, _, P in configs}

    best_bare = {c: np.inf for c in configs}
    best_slq = {(c, p): np.inf for c in configs for p in path_of[c]}
    # warm-up: imports, numba compilation, first-touch allocations
    for path in paths if "none" in modes else ["numpy"]:
        for batch in (1, 2):
            run_slq(L, 2, 2, "none", batch, args.seed, path)
    for r in range(args.repeats):
        for c in configs:
            reorth, layout, k, P = c
            bare = bare_sequential if layout == "sequential" else bare_batched
            t_bare, _ = timed(bare, L, blocks[P], k)
            best_bare[c] = min(best_bare[c], t_bare)
            line = f"  repeat {r + 1}: {reorth:>4} {layout:<10} bare {t_bare:7.3f} s"
            for path in path_of[c]:
                batch = 1 if layout == "sequential" else P
                t_slq, m = timed(run_slq, L, k, P, reorth, batch, args.seed, path)
                if m.num_matvecs != k * P:
                    raise RuntimeError(f"{c}: SLQ made {m.num_matvecs} products, not {k * P}")
                best_slq[c, path] = min(best_slq[c, path], t_slq)
                line += f"  slq[{path}] {t_slq:7.3f} s"
            print(line, flush=True)
    print(f"load average after the run: {load_average()}")

    print()
    header = (f"{'reorth':<6} {'probes':<10} {'path':<6} {'k':>4} {'P':>3} {'products':>8} "
              f"{'bare (s)':>9} {'slq (s)':>9} {'slq/bare':>9}")
    print(header)
    print("-" * len(header))
    for c in configs:
        reorth, layout, k, P = c
        for path in path_of[c]:
            t = best_slq[c, path]
            print(f"{reorth:<6} {layout:<10} {path:<6} {k:>4} {P:>3} {k * P:>8} "
                  f"{best_bare[c]:>9.3f} {t:>9.3f} {t / best_bare[c]:>9.2f}")
    print()
    for reorth, k, P, _ in plan:
        seq, bat = (reorth, "sequential", k, P), (reorth, "batched", k, P)
        for path in path_of[bat]:
            seq_path = path if path in path_of[seq] else "numpy"
            print(f'batched [{path}] vs sequential [{seq_path}], reorth "{reorth}" (P = {P}): '
                  f"slq {best_slq[seq, seq_path] / best_slq[bat, path]:.2f}x, "
                  f"bare products {best_bare[seq] / best_bare[bat]:.2f}x")


if __name__ == "__main__":
    main()
