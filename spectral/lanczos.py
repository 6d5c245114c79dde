r"""Batched Lanczos tridiagonalisation in float64.

For a symmetric ``A`` and a unit start vector ``q₁``, ``k`` Lanczos steps build an
orthonormal basis ``Q_k = [q₁ … q_k]`` of the Krylov space ``span{q₁, Aq₁, …, A^{k−1}q₁}``
and the symmetric tridiagonal ``T_k = Q_kᵀ A Q_k`` through the three-term recurrence

.. math::

    β_j q_{j+1} = A q_j − α_j q_j − β_{j−1} q_{j−1},\qquad
    α_j = q_jᵀ A q_j,\qquad β_j = ‖β_j q_{j+1}‖,

so that ``A Q_k = Q_k T_k + β_k q_{k+1} e_kᵀ``. Here ``b`` such recurrences advance together:
each step applies the operator once to a block of ``b`` columns (one ``matmat``), which is
what makes many probes cheap when a product is a pass over a sparse matrix or a data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .operators import aslinearoperator

__all__ = ["LanczosResult", "lanczos"]

#: A column stops (breakdown: an invariant subspace was found and its Gauss rule is exact)
#: when ``β_j <= BREAKDOWN_RTOL * s_j`` with ``s_j`` the running maximum over
#: ``|α_i| + β_{i−1} + β_i``, a Gershgorin bound of ``‖T_j‖ <= ‖A‖``.
BREAKDOWN_RTOL = 1e-12

REORTH_MODES = ("full", "none")


@dataclass(frozen=True, eq=False)
class LanczosResult:
    """Output of :func:`lanczos`.

    Attributes
    ----------
    alpha : ndarray, shape (k,) or (b, k)
        Diagonal of ``T_k`` for each column. Entries past ``steps`` (after a breakdown)
        are zero and carry no meaning.
    beta : ndarray, shape (k−1,) or (b, k−1)
        Off-diagonal of ``T_k``; zero past ``steps − 1``.
    residual : float or ndarray of shape (b,)
        The last ``β`` of each column, ``‖A q_k − α_k q_k − β_{k−1} q_{k−1}‖``, which
        gives the Ritz residuals ``‖A y_j − θ_j y_j‖ = residual · |S_{kj}|``. Zero up to
        rounding after a breakdown.
    steps : int or ndarray of shape (b,)
        Number of steps each column took: ``k`` unless it broke down earlier.
    basis : ndarray or None
        The Lanczos vectors, shape ``(n, k)`` for a 1-D start vector, ``(b, n, k)`` for a
        block; ``None`` with ``reorth="none"``.
    num_matvecs : int
        Operator-vector products used (a ``matmat`` on ``m`` columns counts ``m``).
    reorth : str
        The reorthogonalisation mode used.
    """

    alpha: np.ndarray
    beta: np.ndarray
    residual: np.ndarray | float
    steps: np.ndarray | int
    basis: np.ndarray | None
    num_matvecs: int
    reorth: str


def _apply(op: LinearOperator, X: np.ndarray, step: int) -> np.ndarray:
    """One checked block product in the operator's dtype, returned in float64."""
    Xin = X if op.dtype == np.float64 else X.astype(op.dtype)
    try:
        Y = op.matmat(Xin)
    except ValueError as exc:
        raise ValueError(
            f"the operator's product failed at Lanczos step {step} on a block of shape "
            f"{X.shape}: {exc}"
        ) from exc
    Y = np.asarray(Y)
    if Y.shape != X.shape:
        if Y.size == X.size and Y.ndim == 1 and X.shape[1] == 1:
            Y = Y.reshape(X.shape)
        else:
            raise ValueError(
                f"the operator returned an array of shape {Y.shape} at Lanczos step {step} "
                f"for an input of shape {X.shape}"
            )
    if Y.dtype.kind == "c":
        raise TypeError(f"the operator returned complex values at Lanczos step {step}")
    Y = np.asarray(Y, dtype=np.float64)
    if not np.all(np.isfinite(Y)):
        bad = int(np.count_nonzero(~np.isfinite(Y)))
        raise FloatingPointError(
            f"the operator returned {bad} non-finite value(s) (NaN or inf) at Lanczos step "
            f"{step}; check the matrix or the model (for a Hessian: the loss may be "
            "non-finite or overflow in low precision)"
        )
    return Y


def _start_block(v0, n: int) -> np.ndarray:
    V = np.array(v0, dtype=np.float64, copy=True)
    if V.ndim not in (1, 2) or V.shape[0] != n:
        raise ValueError(f"the start vector must have shape ({n},) or ({n}, b), got {V.shape}")
    V = V.reshape(n, -1)
    if V.shape[1] == 0:
        raise ValueError("the start block has no columns")
    if not np.all(np.isfinite(V)):
        raise ValueError("the start vector contains NaN or infinite values")
    norms = np.linalg.norm(V, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"start vector column(s) {np.flatnonzero(norms == 0).tolist()} are zero")
    return np.asfortranarray(V / norms)


def lanczos(
    A,
    v0: np.ndarray,
    num_steps: int,
    *,
    reorth: str = "full",
    progress: bool = False,
) -> LanczosResult:
    """Run ``num_steps`` Lanczos steps on ``A`` from ``v0``, one or many columns at once.

    Parameters
    ----------
    A : array_like, sparse matrix, LinearOperator or operator-like
        Symmetric ``n × n`` operator (anything :func:`spectral.aslinearoperator` takes).
    v0 : ndarray, shape (n,) or (n, b)
        Start vector(s); each column is normalised. With ``b`` columns, ``b`` independent
        recurrences advance together with **one** ``matmat`` of the operator per step
        (columns that broke down are dropped from later products).
    num_steps : int
        Number of steps ``k``; values above ``n`` are capped at ``n``.
    reorth : {"full", "none"}, default "full"
        ``"full"``: classical Gram–Schmidt applied twice against all stored Lanczos vectors
        of the column ("twice is enough"); keeps the basis (``k·n`` float64 numbers per
        column) so Ritz vectors are available. ``"none"``: the plain three-term recurrence
        with three vectors per column, ``O(n·b)`` memory and no basis. It loses
        orthogonality once Ritz values converge and then repeats them ("ghosts"), but the
        quadrature measure stays accurate (Paige 1976, Greenbaum 1989), so densities and
        spectral sums are sound.
    progress : bool, default False
        Show a :mod:`tqdm` progress bar over the steps.

    Returns
    -------
    LanczosResult
        ``alpha``, ``beta``, ``residual``, ``steps``, ``basis``, ``num_matvecs``.

    Notes
    -----
    The recurrence and all reductions run in float64 whatever the operator's dtype: each
    block is cast to the operator's dtype for the product and the result back to float64.
    A column whose ``β_j`` falls below ``BREAKDOWN_RTOL`` times a running bound of
    ``‖T_j‖`` has found an invariant subspace: it stops after ``j`` steps, and its Gauss
    rule is then exact for the start vector's spectral measure.

    Raises
    ------
    ValueError
        For a start vector of the wrong shape, with a zero column or non-finite values, an
        unknown ``reorth``, ``num_steps < 1``, or a product of the wrong shape.
    FloatingPointError
        When a product returns NaN or inf (the message gives the step).

    Examples
    --------
    >>> import numpy as np, spectral
    >>> A = np.diag(np.arange(1.0, 6.0))
    >>> res = spectral.lanczos(A, np.ones(5), 5)
    >>> np.allclose(np.linalg.eigvalsh(np.diag(res.alpha) + np.diag(res.beta, 1)
    ...     + np.diag(res.beta, -1)), np.arange(1.0, 6.0))
    True
    """
    op = aslinearoperator(A)
    n = op.shape[0]
    if reorth not in REORTH_MODES:
        raise ValueError(f"reorth must be one of {REORTH_MODES}, got {reorth!r}")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    one_column = np.ndim(v0) == 1
    Q0 = _start_block(v0, n)
    res = _lanczos_block(op, Q0, min(int(num_steps), n), reorth, progress)
    if one_column:
        return LanczosResult(
            alpha=res.alpha[0],
            beta=res.beta[0],
            residual=float(res.residual[0]),
            steps=int(res.steps[0]),
            basis=None if res.basis is None else res.basis[0],
            num_matvecs=res.num_matvecs,
            reorth=reorth,
        )
    return res


def _lanczos_block(
    op: LinearOperator, q: np.ndarray, k: int, reorth: str, progress: bool = False
) -> LanczosResult:
    """Batched recurrence on a normalised float64 block ``q`` of shape (n, b)."""
    n, b = q.shape
    full = reorth == "full"
    alpha = np.zeros((b, k))
    beta = np.zeros((b, k))  # beta[:, j] couples steps j and j+1; beta[:, k-1] is the residual
    steps = np.full(b, k, dtype=np.intp)
    scale = np.zeros(b)
    basis = np.zeros((b, k, n)) if full else None
    q_prev = np.zeros_like(q)
    beta_prev = np.zeros(b)
    active = np.arange(b)
    num_matvecs = 0

    iterator = range(k)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=k, desc="Lanczos", unit="step")

    for j in iterator:
        every = active.size == b
        cols = slice(None) if every else active
        qa = q if every else q[:, active]
        W = _apply(op, qa, j + 1)
        num_matvecs += active.size
        a = np.einsum("ij,ij->j", qa, W)
        W -= qa * a
        if j > 0:
            W -= (q_prev if every else q_prev[:, active]) * beta_prev[cols]
        if full:
            basis[cols, j, :] = qa.T
            for c_local, c in enumerate(active):
                Qc = basis[c, : j + 1]
                w = W[:, c_local]
                for _ in range(2):  # classical Gram–Schmidt, twice
                    w -= Qc.T @ (Qc @ w)
        bnext = np.linalg.norm(W, axis=0)
        alpha[cols, j] = a
        beta[cols, j] = bnext
        scale[cols] = np.maximum(scale[cols], np.abs(a) + beta_prev[cols] + bnext)

        broke = bnext <= BREAKDOWN_RTOL * scale[cols]
        if j == k - 1:
            break
        keep = ~broke
        if np.any(broke):
            steps[active[broke]] = j + 1
        new_active = active[keep]
        if new_active.size == 0:
            break
        # Advance the recurrence for the columns that go on.
        W_keep = W[:, keep] / bnext[keep]
        if every and new_active.size == b:
            q_prev, q = q, np.asfortranarray(W_keep)
        else:
            q_prev[:, new_active] = q[:, new_active]
            q[:, new_active] = W_keep
        beta_prev[new_active] = bnext[keep]
        active = new_active

    for c in range(b):
        s = steps[c]
        alpha[c, s:] = 0.0
        beta[c, s:] = 0.0 if s < k else beta[c, s:]
    residual = np.array([beta[c, steps[c] - 1] for c in range(b)])
    # After a breakdown the stored beta is the (tiny) residual, not a coupling: clear it.
    for c in range(b):
        if steps[c] < k:
            beta[c, steps[c] - 1] = 0.0
    return LanczosResult(
        alpha=alpha,
        beta=beta[:, : k - 1].copy(),
        residual=residual,
        steps=steps,
        basis=None if basis is None else basis.transpose(0, 2, 1),
        num_matvecs=num_matvecs,
        reorth=reorth,
    )
