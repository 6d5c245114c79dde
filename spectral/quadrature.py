r"""Gauss quadrature rules from Lanczos tridiagonals (Golub–Welsch).

With ``T_k = S Θ Sᵀ`` the eigendecomposition of the Lanczos tridiagonal of a unit start
vector ``v``, the nodes ``θ_j`` and weights ``ω_j = S_{1j}²`` form the ``k``-point Gauss rule
of the weighted spectral measure ``Ψ_v = Σ_i (u_iᵀv)² δ_{λ_i}``:

.. math::

    \sum_{j=1}^k ω_j\, θ_j^p = vᵀ A^p v \qquad (0 \le p \le 2k − 1).

The weights are already squares: they are not squared again.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh_tridiagonal

__all__ = ["gauss_quadrature"]


def gauss_quadrature(
    alpha: np.ndarray, beta: np.ndarray, steps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes, weights and last eigenvector components of each tridiagonal.

    Parameters
    ----------
    alpha : ndarray, shape (b, k)
        Diagonals.
    beta : ndarray, shape (b, k−1)
        Off-diagonals.
    steps : ndarray of int, shape (b,), optional
        Valid length of each row (``k`` when omitted). Rows shorter than ``k`` are padded
        with copies of their largest node carrying zero weight, so every returned row has
        ``k`` finite, sorted nodes and weights summing to one.

    Returns
    -------
    nodes : ndarray, shape (b, k)
        Ritz values ``θ_j`` in ascending order.
    weights : ndarray, shape (b, k)
        Gauss weights ``ω_j = S_{1j}²``, each row normalised to sum to one.
    last : ndarray, shape (b, k)
        ``|S_{kj}|``, the last components of the eigenvectors (zero for padding); the Ritz
        residuals are ``β_k · last``.
    """
    alpha = np.atleast_2d(np.asarray(alpha, dtype=np.float64))
    beta = np.asarray(beta, dtype=np.float64).reshape(alpha.shape[0], -1)
    b, k = alpha.shape
    if steps is None:
        steps = np.full(b, k)
    nodes = np.empty((b, k))
    weights = np.zeros((b, k))
    last = np.zeros((b, k))
    for c in range(b):
        s = int(steps[c])
        if s == 1:
            theta, S = alpha[c, :1].copy(), np.ones((1, 1))
        else:
            theta, S = eigh_tridiagonal(alpha[c, :s], beta[c, : s - 1])
        w = S[0] ** 2
        nodes[c, :s] = theta
        nodes[c, s:] = theta[-1]
        weights[c, :s] = w / w.sum()
        last[c, :s] = np.abs(S[-1])
    return nodes, weights, last
