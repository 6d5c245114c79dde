"""Operators whose products run on the arrays of another library (CuPy, PyTorch, JAX, …).

:func:`spectral.aslinearoperator` hands every input that is not a NumPy array, a SciPy sparse
matrix or a host operator to :func:`as_native_operator`, which wraps it in a
:class:`NativeOperator`: a :class:`~scipy.sparse.linalg.LinearOperator` (so SciPy can still
use it, through host copies) that also exposes the *native* product
``native_matmat(X)`` on arrays of the operator's own namespace and device. The Lanczos
recurrence of :mod:`spectral._array_lanczos` runs on those arrays through the array API
standard (:mod:`array_api_compat`), so nothing crosses to the host per step but a few
scalars.

Recognised inputs
-----------------
* explicit arrays of any array-API library other than NumPy — PyTorch tensors, JAX arrays,
  ``array_api_strict`` arrays, CuPy arrays — detected by :mod:`array_api_compat`;
* CuPy sparse matrices (``cupyx.scipy.sparse``) and CuPy linear operators
  (``cupyx.scipy.sparse.linalg.LinearOperator``), recognised by their module name (CuPy is
  imported only when such an object is passed);
* any object following the **native operator protocol**: attributes ``shape`` and
  ``dtype``, ``array_namespace`` (not ``None``), optionally ``device``, and a product taking
  and returning arrays of that namespace on that device — ``native_matmat(X)`` if the object
  has it, else ``matmat(X)`` (else ``matvec(x)`` column by column). The adapters' Hessian
  operators follow it when their native path is on (``hessian(..., native=True)``).

The dial between the native and the host recurrence is float64: the recurrence keeps its
vectors in float64 on the operator's device, so where the device has no float64 (JAX with
``jax_enable_x64`` off, Apple MPS) the operator is still evaluated natively but the recurrence
runs on the host, as for a NumPy operator (``NativeOperator.native_recurrence`` is False).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator

__all__ = ["NativeOperator", "as_native_operator", "to_host", "xp_dtype"]

#: Module prefixes of array libraries whose arrays are kept native (checked by name, so
#: none of them is imported to test an input).
_FOREIGN_MODULES = ("torch", "jax", "jaxlib", "array_api_strict", "cupy", "dask", "ndonnx")


def _compat():
    import array_api_compat

    return array_api_compat


def normalise_namespace(xp: Any) -> Any:
    """Map a library module (``torch``, ``cupy``, ``numpy``) to its array-API namespace."""
    name = getattr(xp, "__name__", "")
    if name in ("torch", "cupy", "numpy", "dask.array"):
        import importlib

        return importlib.import_module(f"array_api_compat.{name.split('.')[0]}")
    return xp


def dtype_name(dtype: Any) -> str:
    """Return ``"float32"`` for ``np.float32``, ``torch.float32``, ``array_api_strict.float32``."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1].strip("'>")


def xp_dtype(xp: Any, name: str) -> Any:
    """Return the dtype object called ``name`` in namespace ``xp``."""
    return getattr(xp, name)


def to_host(x: Any) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array (the one D→H transfer)."""
    if isinstance(x, np.ndarray):
        return x
    c = _compat()
    if c.is_cupy_array(x):
        return x.get()
    if c.is_torch_array(x):
        return x.detach().to("cpu").numpy()
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError, ValueError):
        return np.asarray(x)


def to_device(xp: Any, x: np.ndarray, device: Any, dtype: Any = None) -> Any:
    """Copy a NumPy array to ``device`` in namespace ``xp`` (the one H→D transfer)."""
    out = xp.asarray(x, device=device) if device is not None else xp.asarray(x)
    if dtype is not None and out.dtype != dtype:
        out = xp.astype(out, dtype)
    return out


def supports_float64(xp: Any, device: Any) -> bool:
    """Tell whether ``device`` holds float64 arrays (not JAX without x64, not Apple MPS)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = xp.zeros((1,), dtype=xp.float64, device=device)
        return dtype_name(probe.dtype) == "float64"
    except Exception:  # a device without float64 raises (MPS) or downcasts (JAX)
        return False


class NativeOperator(LinearOperator):
    """A symmetric operator whose products take and return arrays of one namespace and device.

    Attributes
    ----------
    array_namespace : module
        The :mod:`array_api_compat` namespace of the operator's arrays.
    device : object
        Their device (as :func:`array_api_compat.device` reports it).
    xp_dtype : dtype of the namespace
        Dtype the products are evaluated in; ``dtype`` is its NumPy counterpart (float32 for
        bfloat16).
    native_recurrence : bool
        True when the device holds float64, so that the Lanczos recurrence runs there.
    source : object
        What was wrapped (the matrix or the user's operator).
    """

    def __init__(
        self,
        product: Callable[[Any], Any],
        shape: tuple[int, int],
        xp: Any,
        device: Any,
        xp_dtype_: Any,
        *,
        is_symmetric: bool,
        source: Any,
    ):
        name = dtype_name(xp_dtype_)
        np_dtype = np.dtype(name) if name in ("float16", "float32", "float64") else np.float32
        super().__init__(dtype=np_dtype, shape=shape)
        self._product = product
        self.array_namespace = xp
        self.device = device
        self.xp_dtype = xp_dtype_
        self.is_symmetric = bool(is_symmetric)
        self.source = source
        self.native_recurrence = supports_float64(xp, device)

    def native_matmat(self, X: Any) -> Any:
        """Return ``A @ X`` for a block ``X`` of shape ``(n, b)`` in the operator's namespace."""
        return self._product(X)

    # -- SciPy's LinearOperator protocol: host arrays, copied to the device and back ---------
    def _matmat(self, X):
        X = np.asarray(X)
        Xd = to_device(self.array_namespace, np.ascontiguousarray(X), self.device, self.xp_dtype)
        return to_host(self.native_matmat(Xd))

    def _matvec(self, x):
        return self._matmat(np.reshape(x, (-1, 1))).reshape(-1)

    def _adjoint(self):
        return self

    def _transpose(self):
        return self


# ---------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------
def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def _is_cupy_sparse(obj: Any) -> bool:
    return _module(obj).startswith("cupyx.scipy.sparse") and not _is_cupy_linear_operator(obj)


def _is_cupy_linear_operator(obj: Any) -> bool:
    return any(
        (cls.__module__ or "").startswith("cupyx.scipy.sparse.linalg")
        and cls.__name__ == "LinearOperator"
        for cls in type(obj).__mro__
    )


def _is_foreign_array(obj: Any) -> bool:
    mod = _module(obj).split(".", 1)[0]
    if mod not in _FOREIGN_MODULES and not hasattr(obj, "__array_namespace__"):
        return False
    try:
        c = _compat()
    except ImportError:  # pragma: no cover - array-api-compat is a dependency
        return False
    return bool(c.is_array_api_obj(obj)) and not c.is_numpy_array(obj)


def _check_real_dtype(xp: Any, dtype: Any, what: str) -> str:
    """``"float"`` for real floating, ``"cast"`` for integer/boolean; raise otherwise."""
    if xp.isdtype(dtype, "complex floating"):
        raise TypeError(
            f"{what} is complex ({dtype_name(dtype)}); spectral handles real symmetric matrices "
            "only (for a Hermitian matrix, use the real symmetric embedding [[Re, -Im], [Im, Re]])"
        )
    if xp.isdtype(dtype, "real floating"):
        return "float"
    if xp.isdtype(dtype, "integral") or xp.isdtype(dtype, "bool"):
        return "cast"
    raise TypeError(f"{what} has dtype {dtype}, which is not a real numeric dtype")


def _shape(obj: Any, what: str) -> tuple[int, int]:
    from .operators import _check_shape

    return _check_shape(obj.shape, what)


def _symmetry_verdict(asym: float, scale: float) -> None:
    from .operators import _symmetry_verdict as verdict

    verdict(asym, scale)


def _explicit_array(A: Any) -> NativeOperator:
    """Wrap a dense non-NumPy array, checked (shape, dtype, symmetry) in its namespace."""
    c = _compat()
    if c.is_torch_array(A) and str(A.layout) != "torch.strided":
        return _torch_sparse(A)
    xp = c.array_namespace(A)
    if c.is_torch_array(A):
        A = A.detach()
    shape = _shape(A, "the matrix")
    device = c.device(A)
    if _check_real_dtype(xp, A.dtype, "the matrix") == "cast":
        target = xp.float64 if supports_float64(xp, device) else xp.float32
        A = xp.astype(A, target)
    diff = xp.abs(A - xp.matrix_transpose(A))
    asym = float(xp.max(diff))
    del diff
    _symmetry_verdict(asym, float(xp.max(xp.abs(A))))
    return NativeOperator(
        lambda X: xp.matmul(A, X), shape, xp, device, A.dtype, is_symmetric=True, source=A
    )


def _torch_sparse(A: Any) -> NativeOperator:
    """Wrap a torch sparse tensor (COO, CSR, …); symmetry is tested on its COO form."""
    import array_api_compat.torch as xp

    A = A.detach()
    shape = _shape(A, "the sparse matrix")
    if _check_real_dtype(xp, A.dtype, "the sparse matrix") == "cast":
        A = A.to(xp.float64)
    coo = A.to_sparse_coo().coalesce()
    diff = (coo - coo.t()).coalesce().values()
    asym = float(diff.abs().max()) if diff.numel() else 0.0
    vals = coo.values()
    _symmetry_verdict(asym, float(vals.abs().max()) if vals.numel() else 0.0)
    return NativeOperator(
        lambda X: A @ X, shape, xp, A.device, A.dtype, is_symmetric=True, source=A
    )


def _cupy_sparse(A: Any) -> NativeOperator:
    import array_api_compat.cupy as xp

    shape = _shape(A, "the sparse matrix")
    if _check_real_dtype(xp, A.dtype, "the sparse matrix") == "cast":
        A = A.astype(np.float64)
    M = A.tocsr()
    diff = abs(M - M.T)
    asym = float(diff.max()) if diff.nnz else 0.0
    scale = float(abs(M).max()) if M.nnz else 0.0
    _symmetry_verdict(asym, scale)
    device = M.data.device
    return NativeOperator(lambda X: M @ X, shape, xp, device, M.dtype, is_symmetric=True, source=M)


def _protocol_product(obj: Any) -> Callable[[Any], Any]:
    native = getattr(obj, "native_matmat", None)
    if callable(native):
        return native
    matmat = getattr(obj, "matmat", None)
    if callable(matmat):
        return matmat
    matvec = getattr(obj, "matvec", None)
    if not callable(matvec):
        raise TypeError(f"the operator of type {type(obj).__name__} has no callable matvec")

    def by_columns(X):
        xp = _compat().array_namespace(X)
        return xp.stack([matvec(X[:, j]) for j in range(X.shape[1])], axis=1)

    return by_columns


def _declared(obj: Any, xp: Any, device: Any) -> NativeOperator:
    """Wrap an operator that declares its namespace (protocol) or a CuPy LinearOperator."""
    for attribute in ("shape", "dtype"):
        if getattr(obj, attribute, None) is None:
            raise TypeError(
                f"the operator of type {type(obj).__name__} has no {attribute!r} attribute"
            )
    shape = _shape(obj, "the operator")
    name = dtype_name(obj.dtype)
    from .operators import _check_dtype

    if name != "bfloat16":
        name = _check_dtype(np.dtype(name), "the operator").name
    return NativeOperator(
        _protocol_product(obj),
        shape,
        xp,
        device,
        xp_dtype(xp, name),
        is_symmetric=bool(getattr(obj, "is_symmetric", False)),
        source=obj,
    )


def as_native_operator(A: Any) -> NativeOperator | None:
    """Wrap ``A`` in a :class:`NativeOperator`, or return None for host (NumPy) input.

    Explicit matrices are checked here (shape, dtype, exact symmetry, finiteness); the
    randomised symmetry test of matrix-free operators is left to the caller.
    """
    if isinstance(A, NativeOperator):
        return A
    if isinstance(A, (np.ndarray, np.generic, list, tuple)):
        return None
    declared = getattr(A, "array_namespace", None)
    if declared is not None and not callable(declared):
        return _declared(A, normalise_namespace(declared), getattr(A, "device", None))
    if _is_cupy_linear_operator(A):
        import array_api_compat.cupy as xp
        import cupy

        return _declared(A, xp, cupy.cuda.Device())
    if _is_cupy_sparse(A):
        return _cupy_sparse(A)
    if _is_foreign_array(A):
        return _explicit_array(A)
    return None
