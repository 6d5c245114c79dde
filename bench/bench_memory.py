"""Peak memory of each setting of the memory dial, in n-vectors of float64 per probe.

Runs ``spectral.slq`` on a diagonal operator (so the operator itself costs nothing beyond its
diagonal) and records the peak of the memory the run allocates:

* host paths (NumPy recurrence; the generic array-API recurrence on ``array_api_strict``
  arrays, which wrap NumPy): ``tracemalloc`` peak above the level before the call;
* CUDA (when a GPU is present): ``torch.cuda.max_memory_allocated`` above the level before
  the call, for torch tensors on the GPU, including ``basis_device="host"``.

The peak is reported in bytes / (8 n P) — "n-vectors per probe" — next to the formula of
``docs/concepts/precision.rst``.

Usage::

    python bench/bench_memory.py                 # n = 10^6, k = 30, P = 2
    python bench/bench_memory.py --n 4000000 --k 60 --probes 1
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

import spectral


class Diagonal:
    """Matrix-free diagonal operator declaring its array namespace (native protocol)."""

    def __init__(self, d, xp, device=None):
        self.d = d[:, None]
        self.array_namespace = xp
        self.device = device
        self.shape = (d.shape[0], d.shape[0])
        self.dtype = np.float64
        self.is_symmetric = True

    def matmat(self, X):
        return self.d * X


def traced(fn):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, seconds


def cuda_peak(torch, fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base, time.perf_counter() - t0


MODES = [
    # label, reorth, basis_dtype, basis_device, formula (n-vectors per probe)
    ("none", "none", "float64", "device", "≤ 10 (3 + temporaries)"),
    ("full, float64 basis", "full", "float64", "device", "k + c"),
    ("full, float32 basis", "full", "float32", "device", "k/2 + c"),
    ("full, basis on host", "full", "float64", "host", "device: c; host: k"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--probes", type=int, default=2)
    args = parser.parse_args()
    n, k, P = args.n, args.k, args.probes
    unit = 8.0 * n * P
    d = np.linspace(-1.0, 1.0, n)
    rows = []

    def run(path, label, fn, formula, measure=traced):
        fn()  # warm-up: first-call costs (imports, numba compilation) are not the run's
        peak, seconds = measure(fn)
        rows.append((path, label, peak / unit, peak / 2**20, seconds, formula))

    csr = sp.diags(d).tocsr()
    for label, reorth, bdt, bdev, formula in MODES:
        if bdev == "host":
            continue  # the same as "device" on the NumPy path
        run(
            "numpy (CSR)",
            label,
            lambda r=reorth, b=bdt: spectral.slq(csr, k, P, seed=0, reorth=r, basis_dtype=b),
            formula,
        )
    os.environ["SPECTRAL_DISABLE_NUMBA"] = "1"
    run(
        "numpy (CSR), numba off",
        "none",
        lambda: spectral.slq(csr, k, P, seed=0, reorth="none"),
        MODES[0][4],
    )
    del os.environ["SPECTRAL_DISABLE_NUMBA"]

    try:
        import array_api_strict as xs
    except ImportError:
        xs = None
    if xs is not None:
        op = Diagonal(xs.asarray(d), xs)
        for label, reorth, bdt, bdev, formula in MODES:
            run(
                "array API (strict)",
                label,
                lambda r=reorth, b=bdt, v=bdev: spectral.slq(
                    op, k, P, seed=0, reorth=r, basis_dtype=b, basis_device=v
                ),
                formula,
            )

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        dt = torch.from_numpy(d).cuda()
        op = Diagonal(dt, torch, dt.device)
        for label, reorth, bdt, bdev, formula in MODES:
            run(
                "torch CUDA (device memory)",
                label,
                lambda r=reorth, b=bdt, v=bdev: spectral.slq(
                    op, k, P, seed=0, reorth=r, basis_dtype=b, basis_device=v
                ),
                formula,
                measure=lambda fn: cuda_peak(torch, fn),
            )

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    print(f"machine: {machine}, python {platform.python_version()}")
    print(f"n = {n}, k = {k}, probes = {P} (one batch); unit: 8·n·P = {unit / 2**20:.1f} MiB")
    print()
    head = f"| {'path':<28} | {'mode':<22} | {'peak / (8nP)':>12} | {'peak MiB':>9} | {'s':>6} |"
    print(head + " formula |")
    print(f"|{'-' * 30}|{'-' * 24}|{'-' * 14}|{'-' * 11}|{'-' * 8}|---------|")
    for path, label, vectors, mib, seconds, formula in rows:
        print(
            f"| {path:<28} | {label:<22} | {vectors:>12.2f} | {mib:>9.1f} | {seconds:>6.2f} "
            f"| {formula} |"
        )
    if not cuda:
        print("\n(no CUDA device: the GPU rows, basis on the host included, did not run)")


if __name__ == "__main__":
    main()
