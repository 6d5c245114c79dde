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
from scipy.linalg import blas as _blas
from scipy.sparse.linalg import LinearOperator

from .operators import aslinearoperator

__all__ = ["LanczosResult", "lanczos"]

#: A column stops (breakdown: an invariant subspace was found and its Gauss rule is exact)
#: when ``β_j <= BREAKDOWN_RTOL * s_j`` with ``s_j`` the running maximum over
#: ``|α_i| + β_{i−1} + β_i``, a Gershgorin bound of ``‖T_j‖ <= ‖A‖``.
BREAKDOWN_RTOL = 1e-12

#: Daniel–Gragg–Kaufman–Stewart criterion: a second Gram–Schmidt pass runs when the first
#: leaves less than this fraction of the vector's norm (ARPACK uses the same 1/√2).
DGKS_ETA = 0.7071067811865476

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
    basis_dtype: str = "float64",
    basis_device: str = "device",
) -> LanczosResult:
    """Run ``num_steps`` Lanczos steps on ``A`` from ``v0``, one or many columns at once.

    Parameters
    ----------
    A : array_like, sparse matrix, LinearOperator or operator-like
        Symmetric ``n × n`` operator (anything :func:`spectral.aslinearoperator` takes).
    v0 : array, shape (n,) or (n, b)
        Start vector(s), a NumPy array or an array of the operator's library; each column
        is normalised. With ``b`` columns, ``b`` independent recurrences advance together
        with **one** ``matmat`` of the operator per step (columns that broke down are
        dropped from later products).
    num_steps : int
        Number of steps ``k``; values above ``n`` are capped at ``n``.
    reorth : {"full", "none"}, default "full"
        The memory dial (see :doc:`/concepts/precision`; peak memory in ``n``-vectors per
        column in brackets). ``"full"``: classical Gram–Schmidt against all stored Lanczos
        vectors of the column, with a second pass whenever the first cancels more than
        ``1 − 1/√2`` of the norm (the Daniel–Gragg–Kaufman–Stewart test; always twice for a
        float32 basis and on the array-API path: "twice is enough"); keeps the basis
        (``≈ k + 6``: ``k·n`` numbers per column) so Ritz vectors are available.
        ``"none"``: the plain three-term recurrence, ``O(n·b)`` memory (``≈ 4–7``) and no
        basis. It loses orthogonality once Ritz values converge and then repeats them
        ("ghosts"), but the quadrature measure stays accurate (Paige 1976, Greenbaum
        1989), so densities and spectral sums are sound.
    progress : bool, default False
        Show a :mod:`tqdm` progress bar over the steps.
    basis_dtype : {"float64", "float32"}, default "float64"
        Precision in which the basis is *stored* with ``reorth="full"`` (ignored with
        ``"none"``). ``"float32"`` halves the basis memory (``≈ k/2 + 6``); the
        Gram–Schmidt coefficients and updates are still accumulated in float64 (the stored
        vectors are converted block by block) and the recurrence vectors stay float64, so
        the basis is orthogonal to about ``10⁻⁷`` — "semi-orthogonal", which keeps ``T_k``
        accurate to working precision (Simon 1984) — and ``basis`` is returned in float32.
    basis_device : {"device", "host"}, default "device"
        Where the basis lives with ``reorth="full"`` when the operator's arrays are on
        another device (a GPU): ``"host"`` keeps it in host memory, so the device holds
        only ``O(n·b)`` working vectors; each step then copies the new vector and the block
        to orthogonalise to the host and back (``2nb`` numbers) and runs the Gram–Schmidt
        passes there. No effect for NumPy operators.

    Returns
    -------
    LanczosResult
        ``alpha``, ``beta``, ``residual``, ``steps`` (host NumPy), ``basis`` (an array of
        the operator's library on its device; NumPy with ``basis_device="host"``),
        ``num_matvecs``.

    Notes
    -----
    The recurrence and all reductions run in float64 whatever the operator's dtype: each
    block is cast to the operator's dtype for the product and the result back to float64.
    For the arrays of another library (CuPy, PyTorch, JAX; see
    :func:`spectral.aslinearoperator`) the recurrence runs on the operator's device through
    the array API standard; only ``α_j, β_j`` (``2b`` numbers) come to the host per step.
    A column whose ``β_j`` falls below ``BREAKDOWN_RTOL`` times a running bound of
    ``‖T_j‖`` has found an invariant subspace: it stops after ``j`` steps, and its Gauss
    rule is then exact for the start vector's spectral measure.

    Raises
    ------
    ValueError
        For a start vector of the wrong shape, with a zero column or non-finite values, an
        unknown ``reorth``, ``basis_dtype`` or ``basis_device``, ``num_steps < 1``, or a
        product of the wrong shape.
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
    from ._array_lanczos import check_memory_options, lanczos_native, start_block_native

    basis_dtype, basis_device = check_memory_options(basis_dtype, basis_device)
    k = min(int(num_steps), n)
    if getattr(op, "native_recurrence", False):  # arrays of another library: on their device
        Q0, one_column = start_block_native(op, v0)
        res = lanczos_native(
            op, Q0, k, reorth, progress, basis_dtype=basis_dtype, basis_device=basis_device
        )
    else:
        one_column = np.ndim(v0) == 1
        Q0 = _start_block(v0, n)
        res = _lanczos_block(op, Q0, k, reorth, progress, basis_dtype=basis_dtype)
    if one_column:
        return LanczosResult(
            alpha=res.alpha[0],
            beta=res.beta[0],
            residual=float(res.residual[0]),
            steps=int(res.steps[0]),
            basis=None if res.basis is None else res.basis[0, ...],
            num_matvecs=res.num_matvecs,
            reorth=reorth,
        )
    return res


def _lanczos_block(
    op: LinearOperator,
    q: np.ndarray,
    k: int,
    reorth: str,
    progress: bool = False,
    basis_dtype: str = "float64",
) -> LanczosResult:
    """Batched recurrence on a normalised float64 block ``q`` of shape (n, b).

    The Lanczos vectors live in C-order ``(n, b)`` work buffers owned here, the layout a
    CSR ``matmat`` reads without a copy; ``q`` itself is not modified. A step updates the
    operator's output ``W`` in place, by blocks of rows small enough to stay in cache (so
    ``q_j``, ``q_{j−1}`` and ``W`` are read once and ``W`` written once), and normalises
    it into the buffer of ``q_{j−1}``, which is dead by then: no ``(n, b)`` temporary is
    allocated per step, and the operator's output is never kept across products (an
    operator may reuse its output buffer). Per-column scalings run over rows of
    ``group · b`` elements (the coefficients tiled), not over rows of ``b`` elements, which
    would make numpy's inner loop ``b`` long.
    """
    if reorth == "none":
        # Explicit CSR matrices: fused multi-threaded numba kernels, same semantics
        # (spectral._sparse_kernels; SPECTRAL_DISABLE_NUMBA=1 forces the code below).
        from ._sparse_kernels import lanczos_block_csr

        fast = lanczos_block_csr(op, q, k, progress)
        if fast is not None:
            return fast
    n, b = q.shape
    full = reorth == "full"
    alpha = np.zeros((b, k))
    beta = np.zeros((b, k))  # beta[:, j] couples steps j and j+1; beta[:, k-1] is the residual
    steps = np.full(b, k, dtype=np.intp)
    scale = np.zeros(b)
    basis = np.zeros((b, k, n), dtype=basis_dtype) if full else None
    # ring[iq] holds q_j and ring[1 - iq] holds q_{j-1} (zero before the first step).
    ring = np.zeros((2, n, b))
    ring[0] = q
    iq = 0
    group = max(1, 2048 // b)  # rows per long inner loop of a per-column scaling
    chunk = group * max(1, (1 << 17) // (group * b))  # rows per cache block (~1 MiB)
    tmp = np.empty(min(chunk, n) * b)

    def colwise(ufunc, x, s, s_tiled, out):
        """``out = ufunc(x, s)``, ``s[c]`` applied to column ``c`` (C-order ``x``, ``out``)."""
        m = x.shape[0] - x.shape[0] % group
        if m:
            ufunc(
                x[:m].reshape(-1, group * b), s_tiled, out=out[:m].reshape(-1, group * b)
            )
        if m < x.shape[0]:
            ufunc(x[m:], s, out=out[m:])
    beta_prev = np.zeros(b)
    active = np.arange(b)
    num_matvecs = 0

    iterator = range(k)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=k, desc="Lanczos", unit="step")

    for j in iterator:
        q, q_prev = ring[iq], ring[1 - iq]
        every = active.size == b
        cols = slice(None) if every else active
        qa = q if every else q[:, active]
        W = _apply(op, qa, j + 1)
        if not (W.flags.c_contiguous and W.flags.writeable) or np.may_share_memory(W, ring):
            W = np.array(W, order="C")  # updated in place below: own it
        num_matvecs += active.size
        # Elementwise numpy only (no level-1 BLAS): multithreaded BLAS on memory-bound
        # vector operations is slower, and erratic on a busy machine.
        a = np.einsum("ij,ij->j", qa, W)
        sumsq = None
        if every:
            # W -= a q; W -= β q_prev, block by block; without reorthogonalisation the
            # squared norms of the result are summed in the same pass.
            a_tiled, b_tiled = np.tile(a, group), np.tile(beta_prev, group)
            sumsq = None if full else np.zeros(b)
            for start in range(0, n, chunk):
                rows = slice(start, min(start + chunk, n))
                Wc = W[rows]
                t = tmp[: Wc.size].reshape(Wc.shape)
                colwise(np.multiply, q[rows], a, a_tiled, t)
                Wc -= t
                if j > 0:
                    colwise(np.multiply, q_prev[rows], beta_prev, b_tiled, t)
                    Wc -= t
                if sumsq is not None:
                    sumsq += np.einsum("ij,ij->j", Wc, Wc)
        else:
            W -= qa * a
            if j > 0:
                W -= q_prev[:, active] * beta_prev[active]
        if full:
            basis[cols, j, :] = qa.T
            Wt = W.T if W.shape[1] == 1 else np.ascontiguousarray(W.T)  # rows: one per column
            for c_local, c in enumerate(active):
                if basis.dtype != np.float64:  # float32 basis: float64 accumulation by blocks
                    from ._array_lanczos import cgs2_numpy

                    cgs2_numpy(basis[c, : j + 1], Wt[c_local])
                    continue
                QcT = basis[c, : j + 1].T  # (n, j+1), Fortran order: BLAS reads it in place
                w = Wt[c_local]
                # Classical Gram–Schmidt as two gemv, repeated once if the pass cancelled
                # more than 1 − 1/√2 of the norm (DGKS): after a pass that keeps most of
                # ‖w‖ the components left along the basis are at rounding level already.
                before = _blas.dnrm2(w)
                for _ in range(2):
                    h = _blas.dgemv(1.0, QcT, w, trans=1)
                    _blas.dgemv(-1.0, QcT, h, beta=1.0, y=w, overwrite_y=1)
                    after = _blas.dnrm2(w)
                    if not after < DGKS_ETA * before:
                        break
                    before = after
            if W.shape[1] > 1:
                W[...] = Wt.T
        if sumsq is None:
            sumsq = np.einsum("ij,ij->j", W, W)
        bnext = np.sqrt(sumsq)
        keep = _record_step(j, a, bnext, active, alpha, beta, scale, beta_prev, steps)
        if keep is None:
            break
        new_active = active[keep]
        # Advance the recurrence for the columns that go on: q_{j+1} = W / β_j goes into
        # the buffer of q_{j-1}, which is no longer needed.
        if every and new_active.size == b:
            colwise(np.divide, W, bnext, np.tile(bnext, group), q_prev)
            iq = 1 - iq
        else:
            q_prev[:, new_active] = q[:, new_active]
            q[:, new_active] = W[:, keep] / bnext[keep]
        beta_prev[new_active] = bnext[keep]
        active = new_active

    return _finish(
        alpha,
        beta,
        steps,
        basis=None if basis is None else basis.transpose(0, 2, 1),
        num_matvecs=num_matvecs,
        reorth=reorth,
    )


def _record_step(
    j: int,
    a: np.ndarray,
    bnext: np.ndarray,
    active: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    scale: np.ndarray,
    beta_prev: np.ndarray,
    steps: np.ndarray,
) -> np.ndarray | None:
    """Store ``α_j``, ``β_j`` of the ``active`` columns and retire those that broke down.

    Shared by every recurrence (NumPy, numba, array API). A column breaks down when
    ``β_j ≤ BREAKDOWN_RTOL · max_i (|α_i| + β_{i−1} + β_i)`` (its Krylov space is
    exhausted to rounding level); its ``steps`` becomes ``j + 1``. Returns the mask, over
    ``active``, of the columns that go on, or ``None`` when the run ends here: at the last
    step (``alpha.shape[1] − 1``, where nothing is retired) or when every column broke down.
    """
    alpha[active, j] = a
    beta[active, j] = bnext
    scale[active] = np.maximum(scale[active], np.abs(a) + beta_prev[active] + bnext)
    if j == alpha.shape[1] - 1:
        return None
    broke = bnext <= BREAKDOWN_RTOL * scale[active]
    steps[active[broke]] = j + 1
    keep = ~broke
    return keep if keep.any() else None


def _finish(
    alpha: np.ndarray,
    beta: np.ndarray,
    steps: np.ndarray,
    *,
    basis: np.ndarray | None,
    num_matvecs: int,
    reorth: str,
) -> LanczosResult:
    """Pack the coefficients of a run, shared by every recurrence (NumPy, numba, array API).

    ``alpha`` and ``beta`` have shape ``(b, k)``; ``beta[c, j]`` is the norm found at step
    ``j`` (the coupling to step ``j + 1``, or the residual at the last step). Columns that
    stopped early (``steps[c] < k``) get zeros past their last step; their last ``beta``,
    the tiny norm that ended them, is the residual, not a coupling, so it is moved to
    ``residual`` and cleared. Modifies ``alpha`` and ``beta`` in place.
    """
    k = alpha.shape[1]
    for c, s in enumerate(steps):
        alpha[c, s:] = 0.0
        if s < k:
            beta[c, s:] = 0.0
    residual = np.array([beta[c, s - 1] for c, s in enumerate(steps)])
    for c, s in enumerate(steps):
        if s < k:
            beta[c, s - 1] = 0.0
    return LanczosResult(
        alpha=alpha,
        beta=beta[:, : k - 1].copy(),
        residual=residual,
        steps=steps,
        basis=basis,
        num_matvecs=num_matvecs,
        reorth=reorth,
    )
