"""The ``spectral`` command: densities of matrices stored in files, and a built-in demo.

::

    spectral density MATRIX [--steps K] [--probes P] [--sigma S] [--out DIR] [--log]
    spectral demo [--out DIR]

``MATRIX`` is a ``.npy`` file (dense array), a ``.npz`` file written by
:func:`scipy.sparse.save_npz`, or a Matrix Market ``.mtx`` file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .analysis import ritz_outliers
from .measure import SpectralMeasure
from .slq import slq

__all__ = ["main"]


class CommandError(Exception):
    """An error reported to the user as one line, with exit status 2."""


def read_matrix(path: str):
    """Load a dense ``.npy``, sparse ``.npz`` or Matrix Market ``.mtx`` matrix."""
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"no such file: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            import scipy.sparse as sp

            return sp.load_npz(p)
        if suffix == ".mtx":
            import scipy.io

            return scipy.io.mmread(p)
    except Exception as exc:  # any reader failure becomes a one-line message
        raise CommandError(f"cannot read {path}: {exc}") from exc
    raise CommandError(f"unsupported file type {suffix!r} for {path}: use .npy, .npz or .mtx")


def _summary(
    name: str,
    measure: SpectralMeasure,
    seconds: float,
    interval,
    sigma: float | None,
    eigenvalues=None,
) -> tuple[str, object]:
    bounds = measure.bounds(interval)
    trace = measure.trace()
    dens = measure.density(sigma=sigma, interval=interval)
    lo, hi = measure.node_range()
    x = np.linspace(*bounds.interval, 4001)
    band_lo, band_hi = bounds.cdf_band(x)
    lines = [
        f"matrix            {name}",
        f"order n           {measure.n}",
        f"Lanczos           {measure.num_steps} steps x {measure.num_probes} probe(s), "
        f"reorth={measure.reorth}, {measure.num_matvecs} products in {seconds:.2f} s",
        f"extreme Ritz      {lo:.6g} .. {hi:.6g}",
        f"trace             {trace.value:.6g} ± {trace.stderr:.3g} (standard error)",
        f"bracket [a, b]    [{bounds.interval[0]:.6g}, {bounds.interval[1]:.6g}]"
        + (" (estimated from Ritz values)" if bounds.interval_estimated else " (exact)"),
        f"W1 bound          {bounds.wasserstein:.4g}  (certified, confidence "
        f"{bounds.confidence:g}; quadrature part {np.mean(bounds.per_probe_wasserstein):.3g})",
        f"CDF band width    {float(np.max(band_hi - band_lo)):.4g} max, "
        f"statistical ε = {bounds.epsilon:.3g}",
        f"smoothing σ       {dens.sigma:.4g} (bias ≤ {dens.smoothing_bias:.3g} in W1)",
    ]
    if eigenvalues is not None:
        lam = np.sort(np.asarray(eigenvalues))
        grid = np.unique(np.concatenate([lam, measure.nodes.reshape(-1)]))
        true_cdf = np.searchsorted(lam, grid, side="right") / lam.size
        true_w1 = float(np.sum(np.abs(true_cdf - measure.cdf(grid))[:-1] * np.diff(grid)))
        lines.append(f"true W1 distance  {true_w1:.4g} (known spectrum)")
    if not bounds.certified:
        lines.append("conditional on    " + "; ".join(bounds.conditions[:-1]))
    return "\n".join(lines), dens


def _run(A, name: str, args, eigenvalues=None, interval=None) -> int:
    t0 = time.perf_counter()
    measure = slq(
        A,
        num_steps=args.steps,
        num_probes=args.probes,
        seed=args.seed,
        reorth=args.reorth,
        progress=args.progress,
    )
    seconds = time.perf_counter() - t0
    text, dens = _summary(name, measure, seconds, interval, args.sigma, eigenvalues)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measure.save(out / "measure.npz")
    print(f"raw measure       {out / 'measure.npz'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import plot
    except ImportError:
        print(
            "plot              skipped (install the plot extra: pip install 'spectral-slq[plot]')"
        )
        return 0
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    plot.density(dens, ax, log=args.log, measure=measure, truth=eigenvalues)
    outliers = ritz_outliers(measure)
    if outliers.size:
        print("outliers          " + ", ".join(f"{x:.6g}" for x in outliers))
    ax.set_title(f"{name}: n = {measure.n}, k = {measure.num_steps}, P = {measure.num_probes}")
    fig.savefig(out / "density.png", dpi=130)
    plt.close(fig)
    print(f"density plot      {out / 'density.png'}")
    return 0


def _add_common(p: argparse.ArgumentParser, *, steps: int, probes: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="Lanczos steps k (default %(default)s)")
    p.add_argument("--probes", type=int, default=probes, help="probes P (default %(default)s)")
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="absolute smoothing width (default: the Lanczos resolution rule)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the probes (default 0)")
    p.add_argument("--reorth", choices=("full", "none"), default="full")
    p.add_argument("--log", action="store_true", help="log-scale density plot")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--out", default="spectral-out", help="output folder (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``spectral`` command."""
    parser = argparse.ArgumentParser(
        prog="spectral",
        description="Eigenvalue densities of symmetric matrices by stochastic Lanczos "
        "quadrature, with certified error bounds.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dens = sub.add_parser("density", help="estimate the density of a matrix stored in a file")
    dens.add_argument("matrix", help="a .npy (dense), .npz (scipy sparse) or .mtx file")
    _add_common(dens, steps=90, probes=10)
    demo = sub.add_parser("demo", help="run on a built-in Hessian-like test matrix")
    demo.add_argument("--n", type=int, default=20000, help="order of the test matrix")
    _add_common(demo, steps=90, probes=10)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spectral`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .matrices import hessian_like

            A, lam = hessian_like(args.n, seed=args.seed)
            print("demo: a Hessian-like matrix (bulk, a spike of zeros, outliers on both sides)")
            return _run(A, "hessian_like", args, eigenvalues=lam, interval=(lam[0], lam[-1]))
        A = read_matrix(args.matrix)
        return _run(A, Path(args.matrix).name, args)
    except CommandError as exc:
        print(f"spectral: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FloatingPointError) as exc:
        print(f"spectral: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
