r"""The result of an SLQ run: per-probe Gauss rules and everything derived from them.

A :class:`SpectralMeasure` holds, for each of ``P`` unit probes ``v_ℓ``, the Lanczos
coefficients and the ``k``-point Gauss rule ``(θ^{(ℓ)}_j, ω^{(ℓ)}_j)`` of the weighted spectral
measure ``Ψ_{v_ℓ}``. Their average

.. math::

    Φ̂ = \frac{1}{P} \sum_ℓ \sum_j ω^{(ℓ)}_j δ_{θ^{(ℓ)}_j}

estimates the eigenvalue distribution ``Φ = (1/n) Σ_i δ_{λ_i}``. Everything here (CDF,
moments, spectral sums, densities, bounds, saving) is a cheap function of these numbers and
never touches the operator again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .bounds import ErrorBounds, error_bounds
from .quadrature import gauss_quadrature
from .smoothing import (
    Density,
    auto_grid,
    choose_sigma,
    ghorbani_grid_and_sigma,
    smooth,
)

__all__ = ["Estimate", "SpectralMeasure", "combine", "load"]

#: Relative safety margin added on each side of the Ritz-value range when no bracket is
#: given (Papyan 2020 uses 5 % of the width).
INTERVAL_MARGIN = 0.05

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Estimate:
    """A stochastic estimate with its standard error across probes.

    Attributes
    ----------
    value : float
        The estimate (mean over probes).
    stderr : float
        ``std(per_probe, ddof=1) / sqrt(P)``; NaN for a single probe.
    per_probe : ndarray of shape (P,)
        The estimate from each probe alone.
    """

    value: float
    stderr: float
    per_probe: np.ndarray = field(repr=False, compare=False)

    def __float__(self) -> float:
        return float(self.value)


def _mean_and_stderr(per_probe: np.ndarray) -> Estimate:
    P = per_probe.size
    stderr = float(np.std(per_probe, ddof=1) / math.sqrt(P)) if P > 1 else float("nan")
    return Estimate(value=float(np.mean(per_probe)), stderr=stderr, per_probe=per_probe)


@dataclass(frozen=True, eq=False)
class SpectralMeasure:
    """Raw quadrature of a stochastic Lanczos quadrature run (see :func:`spectral.slq`).

    Attributes
    ----------
    nodes : ndarray, shape (P, k)
        Gauss nodes (Ritz values) of each probe, ascending. A probe that stopped early
        (breakdown) is padded with copies of its largest node with zero weight.
    weights : ndarray, shape (P, k)
        Gauss weights; each row sums to one.
    alpha : ndarray, shape (P, k)
        Lanczos diagonals (zero past ``steps``).
    beta : ndarray, shape (P, k − 1)
        Lanczos off-diagonals (zero past ``steps − 1``).
    residual : ndarray, shape (P,)
        Final ``β_k`` of each probe (zero up to rounding after a breakdown).
    steps : ndarray of int, shape (P,)
        Lanczos steps each probe actually took.
    last_components : ndarray, shape (P, k)
        ``|S_{kj}|``, last components of the eigenvectors of ``T_k``.
    n : int
        Order of the matrix.
    num_matvecs : int
        Operator-vector products the run used.
    probes : str
        Probe distribution (``"sphere"``, ``"rademacher"`` or ``"gaussian"``).
    reorth : str
        Reorthogonalisation mode (``"full"`` or ``"none"``).
    dtype : str
        Dtype the operator's products were evaluated in.
    """

    nodes: np.ndarray
    weights: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    residual: np.ndarray
    steps: np.ndarray
    last_components: np.ndarray
    n: int
    num_matvecs: int
    probes: str = "sphere"
    reorth: str = "full"
    dtype: str = "float64"

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_lanczos(
        cls,
        alpha: np.ndarray,
        beta: np.ndarray,
        residual: np.ndarray,
        steps: np.ndarray,
        *,
        n: int,
        num_matvecs: int,
        probes: str = "sphere",
        reorth: str = "full",
        dtype: str = "float64",
    ) -> SpectralMeasure:
        """Build a measure from Lanczos coefficients of shape ``(P, k)`` / ``(P, k − 1)``.

        Parameters
        ----------
        alpha, beta : ndarray
            Lanczos diagonals, shape ``(P, k)``, and off-diagonals, shape ``(P, k − 1)``.
        residual : ndarray, shape (P,)
            Final ``β_k`` of each probe.
        steps : ndarray of int, shape (P,)
            Steps each probe took.
        n : int
            Order of the matrix.
        num_matvecs : int
            Operator-vector products used.
        probes, reorth, dtype : str
            How the coefficients were made (see the class attributes).

        Returns
        -------
        SpectralMeasure
        """
        alpha = np.atleast_2d(np.asarray(alpha, dtype=np.float64))
        beta = np.asarray(beta, dtype=np.float64).reshape(alpha.shape[0], -1)
        steps = np.asarray(steps, dtype=np.intp).reshape(-1)
        nodes, weights, last = gauss_quadrature(alpha, beta, steps)
        return cls(
            nodes=nodes,
            weights=weights,
            alpha=alpha,
            beta=beta,
            residual=np.asarray(residual, dtype=np.float64).reshape(-1),
            steps=steps,
            last_components=last,
            n=int(n),
            num_matvecs=int(num_matvecs),
            probes=str(probes),
            reorth=str(reorth),
            dtype=str(dtype),
        )

    # -- basic views -------------------------------------------------------------------
    @property
    def num_probes(self) -> int:
        """Number of probes ``P``."""
        return int(self.nodes.shape[0])

    @property
    def num_steps(self) -> int:
        """Number of Lanczos steps ``k`` (the longest probe)."""
        return int(self.nodes.shape[1])

    @property
    def ritz_residuals(self) -> np.ndarray:
        """``β_k |S_{kj}| = ‖A y_j − θ_j y_j‖`` for each Ritz pair, shape (P, k)."""
        return self.residual[:, None] * self.last_components

    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All nodes and their weights ``ω/P`` as one pooled discrete measure."""
        return self.nodes.reshape(-1), (self.weights / self.num_probes).reshape(-1)

    def node_range(self) -> tuple[float, float]:
        """Smallest and largest Ritz value over all probes.

        Returns
        -------
        lo, hi : float
        """
        lo = min(float(self.nodes[p, 0]) for p in range(self.num_probes))
        hi = max(float(self.nodes[p, int(self.steps[p]) - 1]) for p in range(self.num_probes))
        return lo, hi

    def estimate_interval(self) -> tuple[float, float]:
        """Estimate a bracket of the spectrum from the extreme Ritz values.

        ``[θ_min − m_lo, θ_max + m_hi]`` with ``m = max(5 % of the Ritz range, the Ritz
        residual of the extreme Ritz value)``. Extreme Ritz values converge first, so this
        usually contains the spectrum, but it is not a proof.

        Returns
        -------
        a, b : float
        """
        lo, hi = self.node_range()
        res = self.ritz_residuals
        r_lo = max(float(res[p, 0]) for p in range(self.num_probes))
        r_hi = max(float(res[p, int(self.steps[p]) - 1]) for p in range(self.num_probes))
        width = hi - lo
        floor = 1e-12 * max(abs(lo), abs(hi), 1e-300) if width == 0 else 0.0
        base = INTERVAL_MARGIN * width
        return lo - max(base, r_lo, floor), hi + max(base, r_hi, floor)

    # -- distribution functions ----------------------------------------------------------
    def cdf(self, x) -> np.ndarray:
        """Estimated eigenvalue CDF ``Φ̂(x) = (1/P) Σ_ℓ Σ_j ω^{(ℓ)}_j 1[θ^{(ℓ)}_j ≤ x]``.

        Parameters
        ----------
        x : array_like
            Points; any shape.

        Returns
        -------
        ndarray
            Values in ``[0, 1]`` of the shape of ``x``.
        """
        pos, mass = self._flat()
        order = np.argsort(pos, kind="stable")
        cum = np.concatenate(([0.0], np.cumsum(mass[order])))
        cum[-1] = 1.0 if cum[-1] > 1.0 else cum[-1]
        return cum[np.searchsorted(pos[order], np.asarray(x, dtype=np.float64), side="right")]

    def moments(self, p) -> np.ndarray:
        """Estimated normalised moments ``(1/n) tr(A^p) ≈ (1/P) Σ_ℓ Σ_j ω_j θ_j^p``.

        Exact per probe (``= vᵀA^p v``) for ``p ≤ 2k − 1`` in exact arithmetic.

        Parameters
        ----------
        p : int or array_like of int
            Non-negative powers.

        Returns
        -------
        float or ndarray
        """
        powers = np.asarray(p)
        if np.any(powers < 0) or not np.issubdtype(powers.dtype, np.integer):
            raise ValueError(f"moments need non-negative integer powers, got {p!r}")
        pos, mass = self._flat()
        vals = (pos[None, :] ** powers.reshape(-1, 1)) @ mass
        return float(vals[0]) if powers.ndim == 0 else vals.reshape(powers.shape)

    def spectral_sum(self, f: Callable[[np.ndarray], np.ndarray]) -> Estimate:
        """Estimate ``tr f(A) ≈ n · (1/P) Σ_ℓ Σ_j ω^{(ℓ)}_j f(θ^{(ℓ)}_j)``.

        Parameters
        ----------
        f : callable
            Vectorised real function, applied to an array of Ritz values.

        Returns
        -------
        Estimate
            Value, standard error across probes and per-probe values. The standard error
            measures probe noise only, not the quadrature error (which decays with ``k``
            as the best polynomial approximation of ``f`` of degree ``2k − 1``).
        """
        values = np.asarray(f(self.nodes), dtype=np.float64)
        if values.shape != self.nodes.shape:
            values = np.broadcast_to(values, self.nodes.shape)
        contrib = np.where(self.weights > 0, self.weights * values, 0.0)
        if not np.all(np.isfinite(contrib)):
            raise ValueError("f returned non-finite values at Ritz values carrying weight")
        return _mean_and_stderr(self.n * contrib.sum(axis=1))

    def trace(self) -> Estimate:
        """Estimate ``tr(A) = n ⟨vᵀAv⟩`` (``= n ⟨α_1⟩``).

        Returns
        -------
        Estimate
        """
        return self.spectral_sum(lambda x: x)

    def logdet(self) -> Estimate:
        """Estimate ``log det(A) = tr log(A)`` for positive definite ``A``.

        Returns
        -------
        Estimate

        Raises
        ------
        ValueError
            If a Ritz value carrying weight is not positive beyond rounding: then ``A`` is
            not positive definite (Ritz values lie inside the spectrum), or is singular up
            to rounding. Ritz values are accurate to about ``k ε ‖A‖``, so a node at most
            ``10 k ε max|θ|`` counts as zero: a singular positive semi-definite matrix
            (a Gauss–Newton matrix with a null space) gets this error, not the logarithm
            of a rounding error. For an indefinite or singular Hessian, shift it
            (``A + δI``) or use :meth:`spectral_sum` with your own ``f``.
        """
        weighted = self.nodes[self.weights > 0]
        if weighted.size:
            smallest = float(weighted.min())
            zero = 10.0 * self.num_steps * np.finfo(np.float64).eps * float(np.abs(weighted).max())
            if smallest <= zero:
                raise ValueError(
                    f"logdet needs a positive definite matrix, but a Ritz value is "
                    f"{smallest:.6g} <= {zero:.3g}, i.e. not positive beyond rounding (Ritz "
                    "values lie inside the spectrum, so the matrix is indefinite or singular)"
                )
        return self.spectral_sum(lambda x: np.log(np.where(x > 0, x, 1.0)))

    # -- bounds and densities ------------------------------------------------------------
    def bounds(self, interval=None, *, confidence: float = 0.99) -> ErrorBounds:
        """Certified Wasserstein-1 and Kolmogorov–Smirnov bounds and the CDF band.

        Parameters
        ----------
        interval : (float, float), optional
            A bracket ``[a, b]`` of the spectrum. When omitted it is estimated with
            :meth:`estimate_interval`, and the result says that it is conditional on that
            estimate (``certified`` is then False).
        confidence : float, default 0.99
            Probability ``1 − η`` for the statistical part.

        Returns
        -------
        ErrorBounds
            See :mod:`spectral.bounds` for the mathematics.
        """
        estimated = interval is None
        if estimated:
            interval = self.estimate_interval()
        return error_bounds(
            self.nodes,
            self.weights,
            self.steps,
            self.n,
            interval,
            confidence=confidence,
            probes=self.probes,
            reorth=self.reorth,
            interval_estimated=estimated,
        )

    def density(
        self,
        grid=None,
        *,
        sigma: float | None = None,
        sigma_rel: float | None = None,
        ghorbani_sigma2: float | None = None,
        num_points: int = 1024,
        interval=None,
        confidence: float = 0.99,
    ) -> Density:
        """Gaussian-smoothed density on a grid, with standard errors and certified bounds.

        Parameters
        ----------
        grid : array_like, optional
            Evaluation points. By default ``num_points`` equispaced points covering the
            Ritz values ± 6σ.
        sigma : float, optional
            Absolute kernel width, in the units of the eigenvalues.
        sigma_rel : float, optional
            Width relative to the half-width of the bracket: ``σ = sigma_rel (b − a)/2``.
        ghorbani_sigma2 : float, optional
            Reproduce the σ² convention, grid and renormalisation of Ghorbani et al.'s code
            exactly (see :mod:`spectral.smoothing`); e.g. ``1e-5``.
        num_points : int, default 1024
            Size of the automatic grid.
        interval : (float, float), optional
            Bracket of the spectrum for the bounds and for ``sigma_rel``; estimated from the
            Ritz values when omitted.
        confidence : float, default 0.99
            Confidence of the statistical part of the bounds.

        Returns
        -------
        Density
            With neither ``sigma``, ``sigma_rel`` nor ``ghorbani_sigma2``, σ comes from the
            Lanczos resolution rule ``σ = ((b − a)/(k − 1)) / sqrt(8 ln 1.25)``.
        """
        err = self.bounds(interval, confidence=confidence)
        lo, hi = self.node_range()
        normalise = False
        if ghorbani_sigma2 is not None:
            if sigma is not None or sigma_rel is not None:
                raise ValueError("ghorbani_sigma2 cannot be combined with sigma or sigma_rel")
            grid, s = ghorbani_grid_and_sigma(self.nodes, self.steps, ghorbani_sigma2, grid)
            normalise = True
        else:
            if sigma is not None and sigma_rel is not None:
                raise ValueError("give at most one of sigma and sigma_rel")
            a, b = err.interval
            if sigma_rel is not None:
                s = choose_sigma(a, b, self.num_steps, sigma=None, sigma_rel=sigma_rel)
            else:
                s = choose_sigma(lo, hi, self.num_steps, sigma=sigma, sigma_rel=None)
            if grid is None:
                grid = auto_grid(lo, hi, s, num_points)
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
            raise ValueError("grid must be a non-empty one-dimensional array of finite values")
        per_probe = smooth(self.nodes, self.weights, grid, s)
        values = per_probe.mean(axis=0)
        P = self.num_probes
        stderr = (
            per_probe.std(axis=0, ddof=1) / math.sqrt(P) if P > 1 else np.full(grid.size, np.nan)
        )
        bound = err.density_pointwise(grid, s)
        if normalise and grid.size > 1:
            mass = float(np.sum(values) * (grid[1] - grid[0]))
            if mass > 0:
                values, stderr = values / mass, stderr / mass
        return Density(
            grid=grid,
            values=values,
            sigma=float(s),
            stderr=stderr,
            bound=bound,
            l1_bound=err.density_l1(s),
            sup_bound=err.density_sup(s),
            smoothing_bias=err.smoothing_bias(s),
            bounds=err,
            normalised=normalise,
        )

    def truncate(self, num_steps: int | None = None, num_probes: int | None = None):
        """Return the measure a shorter run would have produced, without new products.

        The Lanczos tridiagonal after ``j`` steps is the leading ``j × j`` block of ``T_k``,
        so the first ``num_steps`` coefficients and the first ``num_probes`` probes give
        exactly the measure of a run with those parameters and the same seed (used for
        convergence plots and for choosing ``k`` and ``P`` after the fact).

        Parameters
        ----------
        num_steps : int, optional
            Keep the first ``j ≤ k`` steps of every probe.
        num_probes : int, optional
            Keep the first ``p ≤ P`` probes.

        Returns
        -------
        SpectralMeasure
        """
        j = self.num_steps if num_steps is None else int(num_steps)
        p = self.num_probes if num_probes is None else int(num_probes)
        if not (1 <= j <= self.num_steps and 1 <= p <= self.num_probes):
            raise ValueError(
                f"truncate needs 1 <= num_steps <= {self.num_steps} and "
                f"1 <= num_probes <= {self.num_probes}, got {num_steps}, {num_probes}"
            )
        steps = np.minimum(self.steps[:p], j)
        # A probe cut before it ended has the coupling to its next step as residual.
        residual = np.where(
            self.steps[:p] > j,
            self.beta[:p, j - 1] if j <= self.beta.shape[1] else 0.0,
            self.residual[:p],
        )
        return SpectralMeasure.from_lanczos(
            self.alpha[:p, :j],
            self.beta[:p, : j - 1],
            residual,
            steps,
            n=self.n,
            num_matvecs=int(np.sum(steps)),
            probes=self.probes,
            reorth=self.reorth,
            dtype=self.dtype,
        )

    # -- combining and saving ------------------------------------------------------------
    def combine(self, other: SpectralMeasure) -> SpectralMeasure:
        """Pool the probes of two runs on the same operator into one measure.

        The runs must have the same ``n`` and probe distribution; a shorter run is padded
        (zero coefficients, zero-weight nodes) to the longer ``k``.

        Parameters
        ----------
        other : SpectralMeasure
            Another run on the same operator.

        Returns
        -------
        SpectralMeasure
            See :func:`spectral.combine`.
        """
        return combine(self, other)

    def save(self, path: str | os.PathLike) -> None:
        """Write the measure to a plain ``.npz`` file (no pickle); see :func:`load`.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (NumPy appends ``.npz`` when the name lacks it).
        """
        np.savez(
            path,
            format_version=np.array(_FORMAT_VERSION),
            alpha=self.alpha,
            beta=self.beta,
            residual=self.residual,
            steps=self.steps,
            nodes=self.nodes,
            weights=self.weights,
            last_components=self.last_components,
            n=np.array(self.n),
            num_matvecs=np.array(self.num_matvecs),
            probes=np.array(self.probes),
            reorth=np.array(self.reorth),
            dtype=np.array(self.dtype),
        )


def _pad(m: SpectralMeasure, k: int) -> SpectralMeasure:
    extra = k - m.num_steps
    if extra == 0:
        return m
    P = m.num_probes
    top = np.array([m.nodes[p, int(m.steps[p]) - 1] for p in range(P)])[:, None]
    return replace(
        m,
        nodes=np.hstack([m.nodes, np.repeat(top, extra, axis=1)]),
        weights=np.hstack([m.weights, np.zeros((P, extra))]),
        alpha=np.hstack([m.alpha, np.zeros((P, extra))]),
        beta=np.hstack([m.beta, np.zeros((P, extra))]),
        last_components=np.hstack([m.last_components, np.zeros((P, extra))]),
    )


def combine(*measures: SpectralMeasure) -> SpectralMeasure:
    """Pool the probes of several :class:`SpectralMeasure` runs on the same operator.

    Parameters
    ----------
    *measures : SpectralMeasure
        Runs with equal ``n`` and probe distribution (for instance with different seeds).

    Returns
    -------
    SpectralMeasure
        A measure with all probes; ``num_matvecs`` is the total. Runs with fewer steps are
        padded; their bounds still use only their own valid nodes.
    """
    if not measures:
        raise ValueError("combine needs at least one measure")
    first = measures[0]
    for m in measures[1:]:
        if m.n != first.n:
            raise ValueError(f"cannot combine measures of different order n: {first.n} vs {m.n}")
        if m.probes != first.probes:
            raise ValueError(
                f"cannot combine measures with different probes: {first.probes} vs {m.probes}"
            )
    k = max(m.num_steps for m in measures)
    padded = [_pad(m, k) for m in measures]
    cat = lambda name: np.concatenate([getattr(m, name) for m in padded], axis=0)  # noqa: E731
    reorths = {m.reorth for m in measures}
    return SpectralMeasure(
        nodes=cat("nodes"),
        weights=cat("weights"),
        alpha=cat("alpha"),
        beta=cat("beta"),
        residual=cat("residual"),
        steps=cat("steps"),
        last_components=cat("last_components"),
        n=first.n,
        num_matvecs=sum(m.num_matvecs for m in measures),
        probes=first.probes,
        reorth=first.reorth if len(reorths) == 1 else "none",
        dtype=first.dtype,
    )


def load(path: str | os.PathLike) -> SpectralMeasure:
    """Read a measure written by :meth:`SpectralMeasure.save` (``allow_pickle=False``).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`SpectralMeasure.save`.

    Returns
    -------
    SpectralMeasure

    Raises
    ------
    ValueError
        If the file is not a spectral measure file of a known format version.
    """
    with np.load(path, allow_pickle=False) as data:
        version = int(data["format_version"]) if "format_version" in data else None
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"{os.fspath(path)!r} is not a spectral measure file (version {version})"
            )
        return SpectralMeasure(
            nodes=data["nodes"],
            weights=data["weights"],
            alpha=data["alpha"],
            beta=data["beta"],
            residual=data["residual"],
            steps=data["steps"].astype(np.intp),
            last_components=data["last_components"],
            n=int(data["n"]),
            num_matvecs=int(data["num_matvecs"]),
            probes=str(data["probes"]),
            reorth=str(data["reorth"]),
            dtype=str(data["dtype"]),
        )
