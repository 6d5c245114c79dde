r"""Ritz values and vectors: outliers and the concentration of a gradient in them.

Ghorbani, Krishnan & Xiao (2019, §4) observe that the gradient of a network without
batch normalisation concentrates in the eigenspace of the few outlier eigenvalues of the
Hessian. With ``U_k`` the top-``k`` eigenvectors, the concentration ratio is

.. math::

    r_k(g) = \frac{‖U_k U_kᵀ g‖²}{‖g‖²} = 1 − Ψ_g(τ) \quad\text{for any } τ ∈ [λ_{k+1}, λ_k),

where ``Ψ_g(x) = Σ_{λ_i ≤ x} (u_iᵀ g)² / ‖g‖²`` is the weighted spectral CDF of the start
vector ``g/‖g‖``. Lanczos started at ``g`` gives the Gauss rule of ``Ψ_g``, and its
interlacing bounds (see :mod:`spectral.bounds`) certify an interval for the gradient energy
above any threshold ``τ`` without storing eigenvectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lanczos import lanczos
from .measure import SpectralMeasure
from .operators import aslinearoperator
from .smoothing import resolution_sigma

__all__ = ["GradientConcentration", "gradient_concentration", "ritz_outliers"]

#: Clusters of Ritz values farther apart than this many resolution widths are separate.
OUTLIER_GAP_SIGMAS = 3.0

#: A Ritz value counts as converged when its residual is at most this fraction of the
#: spectral width.
CONVERGED_RTOL = 1e-5


def ritz_outliers(
    measure: SpectralMeasure,
    *,
    gap_sigmas: float = OUTLIER_GAP_SIGMAS,
    rtol: float = CONVERGED_RTOL,
) -> np.ndarray:
    """Isolated eigenvalues found by the run: converged Ritz values separated from the bulk.

    The Ritz values of all probes are split into clusters wherever two consecutive values
    are more than ``gap_sigmas`` resolution widths apart (the width σ of the Lanczos
    resolution rule, :func:`spectral.smoothing.resolution_sigma`, so that a separated
    cluster is also a separate peak of the default density). The cluster carrying the most
    Gauss weight is the bulk. Converged Ritz values (residual at most ``rtol`` times the
    spread of the Ritz values) in the other clusters are the outliers; copies from several
    probes or from lost orthogonality ("ghosts" with ``reorth="none"``) are merged when
    they agree to ``rtol`` times the spread.

    Parameters
    ----------
    measure : SpectralMeasure
        The run to inspect.
    gap_sigmas : float, default 3
        Separation, in resolution widths, that splits clusters.
    rtol : float, default 1e-5
        Convergence and merging tolerance, relative to the spread of the Ritz values.

    Returns
    -------
    ndarray
        Sorted outlier estimates (empty when the spectrum has no isolated part).
    """
    parts = [
        (
            measure.nodes[p, : int(s)],
            measure.ritz_residuals[p, : int(s)],
            measure.weights[p, : int(s)],
        )
        for p, s in enumerate(measure.steps)
    ]
    nodes = np.concatenate([q[0] for q in parts])
    res = np.concatenate([q[1] for q in parts])
    mass = np.concatenate([q[2] for q in parts])
    width = float(nodes.max() - nodes.min())
    if width == 0.0:
        return np.empty(0)
    order = np.argsort(nodes, kind="stable")
    nodes, res, mass = nodes[order], res[order], mass[order]
    gap = gap_sigmas * resolution_sigma(nodes[0], nodes[-1], measure.num_steps)
    cluster = np.concatenate(([0], np.cumsum(np.diff(nodes) > gap)))
    bulk = int(np.argmax(np.bincount(cluster, weights=mass)))
    out = nodes[(cluster != bulk) & (res <= rtol * width)]
    if out.size == 0:
        return out
    groups = np.concatenate(([0], np.cumsum(np.diff(out) > rtol * width)))
    return np.array([out[groups == g].mean() for g in range(groups[-1] + 1)])


@dataclass(frozen=True, eq=False)
class GradientConcentration:
    """Result of :func:`gradient_concentration`.

    Attributes
    ----------
    ratio : float
        ``‖Y_k Y_kᵀ g‖² / ‖g‖²`` with ``Y_k`` the top-``k`` Ritz vectors.
    ritz_values : ndarray, shape (k,)
        The top-``k`` Ritz values, descending.
    ritz_residuals : ndarray, shape (k,)
        ``‖H y_j − θ_j y_j‖`` for each of them (small means converged; ``θ_j`` is then
        within that distance of an eigenvalue).
    ritz_vectors : ndarray, shape (n, k) or None
        The Ritz vectors (when ``return_vectors=True``).
    threshold : float
        The threshold ``τ`` of the certified statement (between the ``k``-th and
        ``(k+1)``-th Ritz values unless given).
    energy_above : float
        Gauss-rule estimate of ``1 − Ψ_g(τ)``, the fraction of ``‖g‖²`` on eigenvalues
        above ``τ``.
    energy_above_bounds : (float, float)
        Certified interval for ``1 − Ψ_g(τ)`` from the interlacing bounds (exact
        arithmetic; needs no eigenvectors and no bracket).
    num_matvecs : int
    """

    ratio: float
    ritz_values: np.ndarray
    ritz_residuals: np.ndarray
    ritz_vectors: np.ndarray | None
    threshold: float
    energy_above: float
    energy_above_bounds: tuple[float, float]
    num_matvecs: int


def gradient_concentration(
    H,
    g,
    k: int,
    *,
    num_steps: int | None = None,
    threshold: float | None = None,
    return_vectors: bool = False,
) -> GradientConcentration:
    """Fraction of a gradient in the top-``k`` eigenspace, with a certified version.

    Runs fully reorthogonalised Lanczos from ``g/‖g‖``. The Ritz vectors
    ``y_j = Q_m s_j`` of the top ``k`` Ritz values give ``r_k ≈ ‖Y_kᵀ g‖²/‖g‖²`` (equal to
    the sum of the top ``k`` Gauss weights, since ``g`` spans the first basis vector), with
    the Ritz residuals ``β_m |S_{mj}|`` as accuracy certificates. Independently of
    eigenvector accuracy, the interlacing bounds of the Gauss rule of ``Ψ_g`` give a
    guaranteed interval for the energy ``1 − Ψ_g(τ)`` above a threshold ``τ``.

    Parameters
    ----------
    H : array_like, sparse matrix, LinearOperator or operator-like
        Symmetric operator (e.g. an adapter's Hessian).
    g : ndarray, shape (n,)
        Gradient (any nonzero vector).
    k : int
        Dimension of the top eigenspace (e.g. the number of outliers, often the number
        of classes).
    num_steps : int, optional
        Lanczos steps ``m`` (default ``max(3k, 40)``, capped at ``n``). The top ``k`` Ritz
        pairs must converge, which the residuals show.
    threshold : float, optional
        ``τ`` for the certified statement; default the midpoint between the ``k``-th and
        ``(k+1)``-th largest Ritz values.
    return_vectors : bool, default False
        Also return the ``n × k`` Ritz vectors.

    Returns
    -------
    GradientConcentration
    """
    op = aslinearoperator(H)
    n = op.shape[0]
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    if g.size != n:
        raise ValueError(f"g has {g.size} entries, the operator has order {n}")
    gnorm = float(np.linalg.norm(g))
    if not np.isfinite(gnorm) or gnorm == 0.0:
        raise ValueError("g must be a nonzero finite vector")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}], got {k}")
    m = min(n, max(3 * k, 40) if num_steps is None else int(num_steps))
    if m < k:
        raise ValueError(f"num_steps = {m} is smaller than k = {k}")
    res = lanczos(op, g, m, reorth="full")
    s = int(res.steps)
    T = np.diag(res.alpha[:s]) + np.diag(res.beta[: s - 1], 1) + np.diag(res.beta[: s - 1], -1)
    theta, S = np.linalg.eigh(T)
    kk = min(k, s)
    top = np.arange(s - 1, s - 1 - kk, -1)
    Y = res.basis[:, :s] @ S[:, top]
    ratio = float(np.sum((Y.T @ g) ** 2) / gnorm**2)
    residuals = float(res.residual) * np.abs(S[-1, top])

    weights = S[0] ** 2
    weights /= weights.sum()
    if threshold is None:
        tau = float(theta[s - kk - 1] + theta[s - kk]) / 2.0 if s > kk else float(theta[0]) - 1.0
    else:
        tau = float(threshold)
    estimate = float(weights[theta > tau].sum())
    # Interlacing: Ψ̂↓(τ) = Σ_{j<s} ω_j 1[θ_{j+1} ≤ τ] ≤ Ψ_g(τ)
    #              ≤ Ψ̂↑(τ) = ω_1 + Σ_{j≥2} ω_j 1[θ_{j−1} ≤ τ].
    lower_cdf = float(np.sum(weights[:-1][theta[1:] <= tau]))
    upper_cdf = float(min(1.0, weights[0] + np.sum(weights[1:][theta[:-1] <= tau])))
    return GradientConcentration(
        ratio=ratio,
        ritz_values=theta[top],
        ritz_residuals=residuals,
        ritz_vectors=Y if return_vectors else None,
        threshold=tau,
        energy_above=estimate,
        energy_above_bounds=(max(0.0, 1.0 - upper_cdf), min(1.0, 1.0 - lower_cdf)),
        num_matvecs=res.num_matvecs,
    )
