"""Hypothesis strategies: symmetric matrices built from prescribed spectra.

A spectrum is assembled from pieces (a continuous bulk, exactly repeated values, tight
clusters, exact zeros, negative values, isolated outliers), then turned into a dense matrix
``A = Q diag(λ) Qᵀ`` with a Haar-random ``Q`` by :func:`spectral.matrices.from_spectrum`.
Hypothesis chooses the structure and the seeds; NumPy fills in the numbers, which keeps
examples fast for ``n`` up to 200 (shrinking then acts on sizes, piece kinds and seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from spectral.matrices import from_spectrum

PIECES = ("bulk", "repeated", "cluster", "zeros", "outliers", "negative")


@dataclass(frozen=True)
class Problem:
    """A test matrix with its prescribed spectrum and a probe seed."""

    A: np.ndarray
    eigenvalues: np.ndarray  # prescribed, ascending (with exact repeats)
    seed: int  # seed for the probes (spectral.slq(..., seed=seed))
    description: str

    @property
    def n(self) -> int:
        return int(self.eigenvalues.size)

    @property
    def distinct(self) -> np.ndarray:
        """The distinct prescribed eigenvalues."""
        return np.unique(self.eigenvalues)

    def __repr__(self) -> str:  # keeps Hypothesis' falsifying-example output short
        return f"Problem(n={self.n}, seed={self.seed}, {self.description})"


def _fill(kind: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` eigenvalues of one piece, inside roughly ``[−1, 1]`` (outliers outside)."""
    if kind == "bulk":
        lo = rng.uniform(-1.0, 0.5)
        return rng.uniform(lo, lo + rng.uniform(0.05, 1.0), m)
    if kind == "repeated":
        values = rng.uniform(-1.0, 1.0, rng.integers(1, 4))
        return rng.choice(values, m)
    if kind == "cluster":
        spacing = 10.0 ** -rng.integers(2, 7)  # 1e-2 ... 1e-6
        return rng.uniform(-0.9, 0.9) + spacing * np.arange(m)
    if kind == "zeros":
        return np.zeros(m)
    if kind == "outliers":
        signs = rng.choice([-1.0, 1.0], m)
        return signs * rng.uniform(2.0, 20.0, m)
    if kind == "negative":
        return -rng.uniform(0.1, 1.0, m)
    raise AssertionError(kind)


@st.composite
def spectra(draw, min_n: int = 1, max_n: int = 200, normalise: bool = False) -> tuple:
    """A sorted spectrum of size ``n`` in ``[min_n, max_n]`` and a short description.

    With ``normalise`` the spectrum is scaled so that ``max |λ| = 1`` (well-conditioned
    powers for moment tests).
    """
    n = draw(st.integers(min_n, max_n))
    kinds = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4))
    kinds = kinds[:n]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Split n among the pieces (every piece at least one value when n allows).
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(len(kinds) - 1, n - 1), replace=False))
    sizes = np.diff(np.concatenate(([0], cuts, [n])))
    lam = np.concatenate([_fill(k, int(m), rng) for k, m in zip(kinds, sizes, strict=True)])
    scale = draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3]))
    lam = lam * scale
    if normalise and np.max(np.abs(lam)) > 0:
        lam = lam / np.max(np.abs(lam))
    return np.sort(lam), f"pieces={'+'.join(kinds)}, scale={scale:g}, spectrum_seed={seed}"


@st.composite
def problems(draw, min_n: int = 1, max_n: int = 200, normalise: bool = False) -> Problem:
    """A dense symmetric matrix with a prescribed spectrum, and a probe seed."""
    lam, description = draw(spectra(min_n=min_n, max_n=max_n, normalise=normalise))
    rotation_seed = draw(st.integers(0, 2**32 - 1))
    A, lam = from_spectrum(lam, rotation_seed)
    probe_seed = draw(st.integers(0, 2**32 - 1))
    return Problem(A=A, eigenvalues=lam, seed=probe_seed, description=description)


#: Probe distributions and reorthogonalisation modes.
probe_kinds = st.sampled_from(["sphere", "rademacher", "gaussian"])


@st.composite
def few_distinct_problems(draw, max_distinct: int = 10, max_multiplicity: int = 6) -> Problem:
    """A matrix with ``d ≤ max_distinct`` well-separated distinct eigenvalues, each repeated.

    Exactness of the ``d``-point Gauss rule is a statement about exact arithmetic. In floating
    point every repeated eigenvalue is split by rounding (in ``A`` and in every Lanczos step),
    so the computed rule is the exact rule of a measure whose atoms are split by ~10⁻¹⁶‖A‖,
    and the map from a measure to its ``d``-point rule amplifies that split roughly like the
    ``(2d − 1)``-th moments do: by ``(‖A‖ / gap)^(2d)``. With many distinct values, tight
    clusters or far outliers the ``k = d`` rule of the rounded matrix is then visibly not the
    measure (seen: W₁ ≈ 10⁻⁴‖A‖ for d = 11 with an outlier at 17× the bulk). So here
    ``d ≤ 10``, the distinct values are at least a fifth of their average spacing apart, and
    outliers lie within 3× the bulk; zeros, negative values and multiplicities up to
    ``max_multiplicity`` are included. Exactness for arbitrary spectra is tested at ``k = n``.
    """
    d = draw(st.integers(1, max_distinct))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = np.linspace(-1.0, 1.0, d) if d > 1 else np.array([rng.uniform(-1.0, 1.0)])
    spacing = 2.0 / max(d - 1, 1)
    values = base + rng.uniform(-0.4, 0.4, d) * spacing * (d > 1)
    if draw(st.booleans()):  # an exact zero eigenvalue
        values[rng.integers(d)] = 0.0
    num_outliers = draw(st.integers(0, min(2, d - 1)))
    if num_outliers:
        idx = rng.choice(d, num_outliers, replace=False)
        values[idx] = rng.choice([-1.0, 1.0], num_outliers) * rng.uniform(1.5, 3.0, num_outliers)
    values = np.unique(values)
    multiplicity = rng.integers(1, max_multiplicity + 1, values.size)
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3]))
    lam = np.repeat(values, multiplicity) * scale
    A, lam = from_spectrum(lam, draw(st.integers(0, 2**32 - 1)))
    description = (
        f"few distinct: d={values.size}, outliers={num_outliers}, scale={scale:g}, "
        f"spectrum_seed={seed}"
    )
    return Problem(
        A=A, eigenvalues=lam, seed=draw(st.integers(0, 2**32 - 1)), description=description
    )
