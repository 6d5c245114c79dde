"""Test matrices with known spectra, for examples, validation and benchmarks.

Each generator returns ``(A, eigenvalues)``: an operator SLQ can run on and its exact
eigenvalues (ascending), so every estimate can be checked against the truth.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["from_spectrum", "grid_laplacian", "hessian_like"]


def from_spectrum(
    eigenvalues, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dense symmetric ``A = Q diag(λ) Qᵀ`` with a Haar-random orthogonal ``Q``.

    Parameters
    ----------
    eigenvalues : array_like, shape (n,)
        The prescribed spectrum (repeats allowed).
    seed : int, Generator or None
        Seed of ``Q`` (QR of a Gaussian matrix with the signs of ``diag(R)`` fixed, which
        makes ``Q`` Haar-distributed).

    Returns
    -------
    A : ndarray, shape (n, n)
        Exactly symmetric (symmetrised after the product).
    eigenvalues : ndarray, shape (n,)
        The spectrum, sorted ascending.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).reshape(-1))
    n = lam.size
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q *= np.sign(np.diag(R))
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2.0, lam


def grid_laplacian(nx: int, ny: int | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Five-point Dirichlet Laplacian on an ``nx × ny`` grid and its exact spectrum.

    ``L = T_{nx} ⊗ I + I ⊗ T_{ny}`` with ``T_m = tridiag(−1, 2, −1)`` of order ``m``; its
    eigenvalues are all sums ``4 − 2cos(πi/(nx+1)) − 2cos(πj/(ny+1))``,
    ``1 ≤ i ≤ nx``, ``1 ≤ j ≤ ny``: positive, inside ``(0, 8)``.

    Parameters
    ----------
    nx, ny : int
        Grid size (``ny = nx`` by default); ``n = nx · ny``.

    Returns
    -------
    L : scipy.sparse.csr_matrix, shape (n, n)
    eigenvalues : ndarray, shape (n,)
        Sorted ascending.
    """
    ny = nx if ny is None else ny

    def path(m: int) -> sp.csr_matrix:
        return sp.diags([-np.ones(m - 1), 2.0 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])

    L = (sp.kron(path(nx), sp.identity(ny)) + sp.kron(sp.identity(nx), path(ny))).tocsr()
    ex = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, nx + 1) / (nx + 1))
    ey = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, ny + 1) / (ny + 1))
    return L, np.sort((ex[:, None] + ey[None, :]).reshape(-1))


def hessian_like(
    n: int = 4000, seed: int | np.random.Generator | None = 0, *, dense: bool = False
) -> tuple[sp.csr_matrix | np.ndarray, np.ndarray]:
    """Build a matrix whose spectrum looks like a neural-network Hessian's.

    Half of the eigenvalues are exactly zero (the spike of a heavily over-parameterised
    model), ``n/2 − 8`` form a narrow, slightly right-skewed bulk around zero
    (``0.05·N(0,1) + 0.05·Exp(1) − 0.05``), and eight are outliers: six positive
    (``4, 6, 8, 11, 15, 20``, like the class-count outliers of a classifier) and two
    negative (``−2, −3.5``). A variant of the test problem in Ghorbani et al.'s notebook.

    Parameters
    ----------
    n : int, default 4000
        Order (at least 16).
    seed : int, Generator or None
        Seed of the bulk (and of the rotation when ``dense``).
    dense : bool, default False
        False: a sparse diagonal matrix (SLQ with sphere probes is rotation invariant, so
        this loses nothing). True: a dense randomly rotated matrix (``O(n²)`` memory).

    Returns
    -------
    A : scipy.sparse.csr_matrix or ndarray, shape (n, n)
    eigenvalues : ndarray, shape (n,)
        Sorted ascending.
    """
    if n < 16:
        raise ValueError(f"hessian_like needs n >= 16, got {n}")
    rng = np.random.default_rng(seed)
    outliers = np.array([4.0, 6.0, 8.0, 11.0, 15.0, 20.0, -2.0, -3.5])
    zeros = n // 2
    bulk_size = n - zeros - outliers.size
    bulk = 0.05 * rng.standard_normal(bulk_size) + 0.05 * rng.exponential(size=bulk_size) - 0.05
    lam = np.sort(np.concatenate([np.zeros(zeros), bulk, outliers]))
    if dense:
        return from_spectrum(lam, rng)
    return sp.diags(rng.permutation(lam)).tocsr(), lam
