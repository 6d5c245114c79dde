"""Coercion of user input to a checked, symmetric :class:`~scipy.sparse.linalg.LinearOperator`.

Every public entry point of :mod:`spectral` calls :func:`aslinearoperator` first, so the
checks below (square, real, numeric, symmetric) run once, before any expensive product.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from ._backends import as_native_operator

__all__ = ["SymmetryWarning", "aslinearoperator"]

#: Relative tolerance for the symmetry test of an explicit matrix:
#: ``max |A - Aᵀ| <= SYMMETRY_RTOL * max |A|``.
SYMMETRY_RTOL = 1e-10

#: Relative tolerance of the randomised symmetry test of a matrix-free operator:
#: ``|yᵀAx - xᵀAy| <= RANDOM_SYMMETRY_RTOL * (‖Ax‖‖y‖ + ‖Ay‖‖x‖)``. Loose enough for
#: float32 products (Hessian-vector products of float32 models).
RANDOM_SYMMETRY_RTOL = 1e-3


class SymmetryWarning(UserWarning):
    """A matrix-free operator failed the randomised symmetry test."""


def _check_dtype(dtype: Any, what: str) -> np.dtype:
    """Return the float dtype products are evaluated in, or raise for unsupported dtypes."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{what} has dtype {dtype!r}, which is not a numeric dtype") from exc
    if dtype.kind == "c":
        raise TypeError(
            f"{what} is complex ({dtype}); spectral handles real symmetric matrices only "
            "(for a Hermitian matrix, use the real symmetric embedding [[Re, -Im], [Im, Re]])"
        )
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(f"{what} has dtype {dtype}, which is not a real numeric dtype")


def _check_shape(shape: Any, what: str) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise TypeError(f"{what} has no usable shape: {shape!r}") from exc
    if len(shape) != 2:
        raise ValueError(f"{what} must be two-dimensional, got shape {shape}")
    if shape[0] != shape[1]:
        raise ValueError(f"{what} must be square, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {shape})")
    return shape


class _ExplicitOperator(LinearOperator):
    """A dense array or sparse matrix, multiplied in its own precision."""

    is_symmetric = True

    def __init__(self, matrix, dtype: np.dtype):
        super().__init__(dtype=dtype, shape=matrix.shape)
        self.matrix = matrix

    def _matvec(self, x):
        return self.matrix @ x

    def _matmat(self, X):
        return self.matrix @ X

    def _adjoint(self):
        return self

    def _transpose(self):
        return self


class _CallableOperator(LinearOperator):
    """Any object with ``shape``, ``dtype`` and ``matvec`` (and optionally ``matmat``)."""

    def __init__(self, obj, shape, dtype: np.dtype):
        super().__init__(dtype=dtype, shape=shape)
        self.obj = obj
        self._has_matmat = callable(getattr(obj, "matmat", None))
        self.is_symmetric = bool(getattr(obj, "is_symmetric", False))

    def _matvec(self, x):
        return np.asarray(self.obj.matvec(x))

    def _matmat(self, X):
        if self._has_matmat:
            return np.asarray(self.obj.matmat(X))
        return np.column_stack([np.asarray(self.obj.matvec(X[:, j])) for j in range(X.shape[1])])

    def _adjoint(self):
        return self

    def _transpose(self):
        return self


def _check_explicit_symmetry(matrix) -> None:
    if sp.issparse(matrix):
        diff = abs(matrix - matrix.T)
        asym = float(diff.max()) if diff.nnz else 0.0
        scale = float(abs(matrix).max()) if matrix.nnz else 0.0
    else:
        with np.errstate(invalid="ignore"):  # inf - inf: reported as non-finite below
            asym = float(np.max(np.abs(matrix - matrix.T)))
        scale = float(np.max(np.abs(matrix)))
    _symmetry_verdict(asym, scale)


def _symmetry_verdict(asym: float, scale: float) -> None:
    """Raise unless ``max |A − Aᵀ| = asym`` is within ``SYMMETRY_RTOL · max |A|`` (finite)."""
    if not np.isfinite(asym) or not np.isfinite(scale):
        raise ValueError("the matrix contains NaN or infinite entries")
    if asym > SYMMETRY_RTOL * scale:
        raise ValueError(
            f"the matrix is not symmetric: max |A - Aᵀ| = {asym:.3e} exceeds "
            f"{SYMMETRY_RTOL:g} * max |A| = {SYMMETRY_RTOL * scale:.3e}; spectral estimates "
            "eigenvalue densities of symmetric matrices only (use (A + A.T) / 2 if the "
            "asymmetry is rounding noise)"
        )


def _randomised_symmetry_test(op: LinearOperator, seed: int = 12345) -> None:
    """Warn when ``yᵀ A x`` and ``xᵀ A y`` differ for two random vectors (2 products)."""
    n = op.shape[0]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    AX = np.asarray(op.matmat(X.astype(op.dtype, copy=False)), dtype=np.float64)
    if AX.shape != (n, 2) or not np.all(np.isfinite(AX)):
        # Shape and finiteness are reported with the step number by the Lanczos loop.
        return
    x, y = X[:, 0], X[:, 1]
    ax, ay = AX[:, 0], AX[:, 1]
    lhs, rhs = float(y @ ax), float(x @ ay)
    scale = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(ay) * np.linalg.norm(x)
    if abs(lhs - rhs) > RANDOM_SYMMETRY_RTOL * scale:
        warnings.warn(
            f"the operator does not look symmetric: for two random vectors yᵀAx = {lhs:.6e} "
            f"but xᵀAy = {rhs:.6e}; the spectral density of a non-symmetric operator is "
            "meaningless. Pass check_symmetry=False to skip this test.",
            SymmetryWarning,
            stacklevel=3,
        )


def aslinearoperator(A: Any, *, check_symmetry: bool = True) -> LinearOperator:
    """Return ``A`` as a symmetric :class:`~scipy.sparse.linalg.LinearOperator`.

    Parameters
    ----------
    A : array_like, sparse matrix, LinearOperator or operator-like
        A real symmetric ``n × n`` matrix in any of these forms: a NumPy array (or
        anything :func:`numpy.asarray` accepts), a SciPy sparse matrix or array, a
        :class:`scipy.sparse.linalg.LinearOperator`, or any object with ``shape``,
        ``dtype`` and ``matvec`` (and optionally ``matmat``) attributes, such as the
        framework adapters' Hessian operators. Arrays and operators of other libraries
        stay in their library and on their device (see Notes): CuPy arrays and
        ``cupyx.scipy.sparse`` matrices and linear operators, PyTorch tensors (dense or
        sparse, CPU or GPU), JAX arrays, ``array_api_strict`` arrays, and operators that
        declare ``array_namespace``.
    check_symmetry : bool, default True
        Explicit matrices are always tested exactly: ``max |A − Aᵀ| ≤ 10⁻¹⁰ max |A|``
        or :class:`ValueError`. For a matrix-free operator this flag runs a cheap
        randomised test (two products, one ``matmat``): for Gaussian ``x, y``,
        ``|yᵀAx − xᵀAy| ≤ 10⁻³ (‖Ax‖‖y‖ + ‖Ay‖‖x‖)``, and warns with
        :class:`SymmetryWarning` when it fails. Operators with ``is_symmetric = True``
        (the adapters' Hessians) skip it.

    Returns
    -------
    LinearOperator
        An operator whose ``dtype`` is the floating dtype products are evaluated in
        (integer and boolean matrices are multiplied in float64). For arrays of other
        libraries, a native operator that also has ``array_namespace``, ``device`` and
        ``native_matmat`` (its ``matmat`` still takes NumPy arrays, through copies).

    Raises
    ------
    TypeError
        For complex, non-numeric or shapeless input.
    ValueError
        For a non-square, empty, non-finite or non-symmetric explicit matrix.

    Notes
    -----
    **Native operator protocol.** An object with ``shape``, ``dtype`` (NumPy's or its
    library's), ``array_namespace`` — the :mod:`array_api_compat` namespace of its arrays,
    e.g. ``array_api_compat.torch`` (the plain ``torch``, ``cupy`` or ``numpy`` module is
    accepted and mapped) or ``jax.numpy`` — and optionally ``device`` (where to put the
    start vectors; the namespace's default device when absent or ``None``) is multiplied
    on arrays of that namespace: ``native_matmat(X)`` if it has one, else ``matmat(X)``
    (else ``matvec`` column by column), with ``X`` of shape ``(n, b)`` in the operator's
    dtype on ``device``, returning the same kind of array. :func:`spectral.slq` and
    :func:`spectral.lanczos` then keep the Lanczos vectors on that device (float64) and
    bring only ``α_j, β_j`` to the host per step. Explicit arrays of other libraries are
    checked like NumPy ones, in their own namespace (the exact symmetry test runs on the
    device); ``cupyx.scipy.sparse.linalg.LinearOperator`` is recognised by its module
    name (CuPy is never imported to test an input). Where the device has no float64
    (JAX without ``jax_enable_x64``, Apple MPS) the products stay native and the
    recurrence runs on the host.

    Examples
    --------
    >>> import numpy as np, spectral
    >>> op = spectral.aslinearoperator(np.diag([1.0, 2.0, 3.0]))
    >>> op.shape, op.dtype
    ((3, 3), dtype('float64'))
    """
    if sp.issparse(A):
        shape = _check_shape(A.shape, "the sparse matrix")
        dtype = _check_dtype(A.dtype, "the sparse matrix")
        matrix = A.tocsr()
        if matrix.dtype != dtype:
            matrix = matrix.astype(dtype)
        _check_explicit_symmetry(matrix)
        return _ExplicitOperator(matrix, dtype)

    # Arrays and operators of other libraries (CuPy, PyTorch, JAX, array-api-strict, or any
    # operator declaring ``array_namespace``) stay native: see spectral._backends.
    native = as_native_operator(A)
    if native is not None:
        if check_symmetry and not native.is_symmetric:
            _randomised_symmetry_test(native)
        return native

    if isinstance(A, np.ndarray) or (
        not hasattr(A, "matvec") and not isinstance(A, LinearOperator)
    ):
        if not hasattr(A, "__array__") and not isinstance(A, (list, tuple)):
            raise TypeError(
                f"cannot use an object of type {type(A).__name__} as a matrix: pass an "
                "array, a sparse matrix, a LinearOperator, or an object with shape, dtype "
                "and matvec"
            )
        try:
            matrix = np.asarray(A)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot convert {type(A).__name__} to an array: {exc}") from exc
        shape = _check_shape(matrix.shape, "the matrix")
        dtype = _check_dtype(matrix.dtype, "the matrix")
        matrix = np.ascontiguousarray(matrix, dtype=dtype)
        _check_explicit_symmetry(matrix)
        return _ExplicitOperator(matrix, dtype)

    for attribute in ("shape", "dtype"):
        if getattr(A, attribute, None) is None:
            raise TypeError(
                f"the operator of type {type(A).__name__} has no {attribute!r} attribute"
            )
    shape = _check_shape(A.shape, "the operator")
    dtype = _check_dtype(A.dtype, "the operator")
    if isinstance(A, LinearOperator):
        op = A if A.dtype == dtype else _CallableOperator(A, shape, dtype)
        symmetric_flag = bool(getattr(A, "is_symmetric", False))
    else:
        if not callable(getattr(A, "matvec", None)):
            raise TypeError(f"the operator of type {type(A).__name__} has no callable matvec")
        op = _CallableOperator(A, shape, dtype)
        symmetric_flag = op.is_symmetric
    if check_symmetry and not symmetric_flag:
        _randomised_symmetry_test(op)
    return op
