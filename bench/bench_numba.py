"""The numba fused CSR kernels against the plain numpy recurrence and bare scipy products.

On a 2-D grid Laplacian (``n = nx²``) with ``reorth="none"``, for a block of ``P`` probes
(one ``matmat`` per step) and for one probe (``P = 1``, vector products), this times
side by side, interleaved, the minimum over ``--repeats``:

(a) bare: ``k`` scipy products ``L @ X`` on a C-contiguous ``(n, P)`` block (``L @ x`` for
    ``P = 1``), nothing else;
(b) plain: :func:`spectral.lanczos` on the same matrix with ``SPECTRAL_DISABLE_NUMBA=1``;
(c) numba: the same call through the fused kernels as dispatched by default (thread
    count by ``PARALLEL_MIN_WORK``; for ``P = 1``, which takes the plain path by default,
    the fused path forced with ``MIN_COLUMNS = 1``), and the fused path on (c1) one thread
    and (c2) all of numba's threads;

and prints the ratios (b)/(a), (c)/(a), (c)/(b), (c1)/(b), (c2)/(b), for wall-clock and
for CPU time (the CPU time of all threads of the process, spinning included), plus the
largest relative difference of ``alpha`` and ``beta`` between (b) and (c). The operator
is checked once beforehand (``aslinearoperator``), so (b) and (c) time the recurrence only.
``--compile`` also times the first calls of the fused path in fresh processes, with an
empty numba cache (compilation) and with the cache just written (loading).

Run from the repository root::

    python bench/bench_numba.py                  # n = 10^6, k = 80, P = 10 and 1
    python bench/bench_numba.py --nx 300 --repeats 2 --compile   # a quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
import scipy

import spectral
import spectral._sparse_kernels as sk
from spectral.matrices import grid_laplacian
from spectral.operators import aslinearoperator
from spectral.probes import draw_probes

_COMPILE_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
import spectral
import spectral._sparse_kernels as sk
from spectral.matrices import grid_laplacian
L, _ = grid_laplacian(300)
V = np.random.default_rng(0).standard_normal((L.shape[0], 4))
t1 = time.perf_counter()
spectral.lanczos(L, V, 3, reorth="none")
t2 = time.perf_counter()
spectral.lanczos(L, V, 3, reorth="none")
t3 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.3f}")
"""


def compile_times() -> None:
    """First calls of the fused path in fresh processes: empty cache, then warm cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("SPECTRAL_DISABLE_NUMBA", None)
        for label in ("cold (compile)", "warm (cache)"):
            out = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.split()
            print(f"fresh process, {label:<15}: import spectral + matrix {out[0]} s, first "
                  f"fused call {out[1]} s (numba import + JIT), second {out[2]} s "
                  "(n = 90,000, b = 4, 3 steps)")


def bare(L, X: np.ndarray, k: int) -> None:
    for _ in range(k):
        L @ X


def run_lanczos(op, V, k, *, fused: bool, threads: int, min_work: int | None = None):
    """``spectral.lanczos`` by the plain or the fused path (forced for one column too)."""
    saved = sk.MIN_COLUMNS, sk.PARALLEL_MIN_WORK
    if fused:
        os.environ.pop("SPECTRAL_DISABLE_NUMBA", None)
        sk.MIN_COLUMNS = 1
        if min_work is not None:
            sk.PARALLEL_MIN_WORK = min_work
    else:
        os.environ["SPECTRAL_DISABLE_NUMBA"] = "1"
    numba.set_num_threads(threads)
    try:
        return spectral.lanczos(op, V, k, reorth="none")
    finally:
        os.environ.pop("SPECTRAL_DISABLE_NUMBA", None)
        sk.MIN_COLUMNS, sk.PARALLEL_MIN_WORK = saved


def timed(fn, *args, **kwargs):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - w, time.process_time() - c), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nx", type=int, default=1000, help="grid side; n = nx**2 (1000)")
    parser.add_argument("-k", type=int, default=80, help="Lanczos steps (80)")
    parser.add_argument("-P", type=int, default=10, help="probes in the block (10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the minimum is kept")
    parser.add_argument("--compile", action="store_true", help="also time JIT compilation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    L, _ = grid_laplacian(args.nx)
    n = L.shape[0]
    op = aslinearoperator(L)
    threads = numba.get_num_threads()
    print(f"grid Laplacian {args.nx}x{args.nx}: n = {n:,}, nnz = {L.nnz:,}; k = {args.k}, "
          f'reorth "none"; repeats = {args.repeats}')
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, numba threads = "
          f"{threads}")
    if args.compile:
        compile_times()

    V = draw_probes(n, args.P, "sphere", args.seed)
    cases = {args.P: (np.ascontiguousarray(V), V), 1: (np.ascontiguousarray(V[:, 0]), V[:, 0])}
    run_lanczos(op, V, 2, fused=True, threads=threads)  # import numba, JIT or cache load
    run_lanczos(op, V[:, 0], 2, fused=True, threads=threads)
    print(f"threading layer: {numba.threading_layer()}")

    names = ("bare", "plain", "numba", "numba1", "numba2")
    best = {(P, m): (np.inf, np.inf) for P in cases for m in names}
    results = {}
    for r in range(args.repeats):
        for P, (X, V0) in cases.items():
            t = {}
            t["bare"], _ = timed(bare, L, X, args.k)
            t["plain"], results[P, "plain"] = timed(run_lanczos, op, V0, args.k,
                                                    fused=False, threads=threads)
            t["numba"], results[P, "numba"] = timed(run_lanczos, op, V0, args.k,
                                                    fused=True, threads=threads)
            t["numba1"], _ = timed(run_lanczos, op, V0, args.k, fused=True, threads=1)
            t["numba2"], _ = timed(run_lanczos, op, V0, args.k, fused=True, threads=threads,
                                   min_work=0)
            numba.set_num_threads(threads)
            for m in names:
                best[P, m] = tuple(min(x, y) for x, y in zip(best[P, m], t[m], strict=True))
            print(f"  repeat {r + 1}, P = {P:>2}: " + "  ".join(
                f"{m} {t[m][0]:6.2f} s" for m in names), flush=True)

    print()
    head = (f"{'P':>3} {'time':<5} {'(a) bare':>9} {'(b) plain':>10} {'(c) numba':>10} "
            f"{'(c1) 1 thr':>11} {f'(c2) {threads} thr':>11} {'b/a':>6} {'c/a':>6} "
            f"{'c/b':>6} {'c1/b':>6} {'c2/b':>6}")
    print(head)
    print("-" * len(head))
    for P in cases:
        for i, kind in enumerate(("wall", "cpu")):
            a, b, c, c1, c2 = (best[P, m][i] for m in names)
            print(f"{P:>3} {kind:<5} {a:>8.2f}s {b:>9.2f}s {c:>9.2f}s {c1:>10.2f}s "
                  f"{c2:>10.2f}s {b / a:>6.2f} {c / a:>6.2f} {c / b:>6.2f} {c1 / b:>6.2f} "
                  f"{c2 / b:>6.2f}")
    print()
    for P in cases:
        f, p = results[P, "numba"], results[P, "plain"]
        if not (np.all(f.steps == args.k) and f.num_matvecs == p.num_matvecs == args.k * P):
            raise RuntimeError(f"P = {P}: unexpected steps or product count")
        da = np.max(np.abs(f.alpha - p.alpha) / np.abs(p.alpha))
        db = np.max(np.abs(f.beta - p.beta) / np.abs(p.beta))
        print(f"P = {P:>2}: max relative difference numba vs plain: alpha {da:.1e}, "
              f"beta {db:.1e}")


if __name__ == "__main__":
    main()
