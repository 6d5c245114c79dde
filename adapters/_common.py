"""Framework-independent base for Hessian-vector-product operators.

A framework adapter subclasses :class:`HessianOperator` and implements one method,
``_hvp(V)``, that maps a float64 NumPy block ``V`` of shape ``(n, b)`` to ``H @ V``.
The base class supplies the :class:`scipy.sparse.linalg.LinearOperator` protocol
(``matvec``, ``matmat``, ``@``, ``adjoint``), counts data-set passes and runs the
determinism guard on the first product.

**Native path.** An adapter may also implement ``_hvp_native(V)`` on the framework's own
arrays (a block on the model's device, in the operator's dtype, returning ``H @ V`` on that
device) and set ``array_namespace`` (its :mod:`array_api_compat` namespace) and ``device``
when that path is on. :func:`spectral.aslinearoperator` then recognises the operator by its
``array_namespace`` (the native operator protocol of :mod:`spectral._backends`) and the
Lanczos recurrence calls :meth:`HessianOperator.native_matmat`, keeping its vectors on the
device: no host round trip per step. ``matmat`` and ``@`` keep taking NumPy arrays.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

__all__ = ["DeterminismError", "HessianOperator"]

#: Relative tolerance of the determinism guard: two evaluations of the first product
#: may differ by floating-point reassociation only.
_DETERMINISM_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


class DeterminismError(RuntimeError):
    """Two evaluations of the same Hessian-vector product disagreed.

    Lanczos assumes a fixed matrix; an operator that changes between products (dropout,
    batch-norm in training mode, a shuffling data loader, data augmentation) produces a
    meaningless spectrum, so the adapters refuse it.
    """


class HessianOperator(LinearOperator):
    """Symmetric linear operator defined by batched Hessian-vector products.

    Parameters
    ----------
    num_params : int
        Order ``n`` of the Hessian (number of scalar parameters).
    dtype : numpy dtype
        Dtype the operator advertises to SciPy and :mod:`spectral` (``float32`` or
        ``float64``; a ``bfloat16`` model advertises ``float32``).
    check_determinism : bool, default True
        If true, the first product is evaluated twice and compared; a mismatch raises
        :class:`DeterminismError` with the hint from :meth:`_nondeterminism_hint`.

    Notes
    -----
    The operator is symmetric by construction (a Hessian of a twice-differentiable loss),
    so it sets ``is_symmetric = True``; :func:`spectral.aslinearoperator` then skips its
    randomised symmetry test, which would cost two extra passes over the data.
    """

    is_symmetric = True

    #: :mod:`array_api_compat` namespace of the native products, or ``None`` when the
    #: operator is used through host NumPy products only (the default; an adapter sets it
    #: when its native path is on).
    array_namespace = None

    def __init__(self, num_params: int, dtype, *, check_determinism: bool = True):
        super().__init__(dtype=np.dtype(dtype), shape=(int(num_params), int(num_params)))
        self._check_pending = bool(check_determinism)
        #: Number of Hessian-vector products evaluated (a block of b columns counts b).
        self.num_hvps = 0
        #: Number of batched passes over the data set.
        self.num_passes = 0

    # -- to implement in a framework adapter -------------------------------------------
    def _hvp(self, V: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Return ``H @ V`` for a float64 array ``V`` of shape ``(n, b)``."""
        raise NotImplementedError

    def _hvp_native(self, V):  # pragma: no cover - optional
        """Return ``H @ V`` for a framework array ``V`` of shape ``(n, b)`` on the device."""
        raise NotImplementedError(f"{type(self).__name__} has no native path")

    def _nondeterminism_hint(self) -> str:
        """Say what usually makes this framework's products non-deterministic."""
        return (
            "put the model in evaluation mode, iterate over the data in a fixed order and "
            "switch off data augmentation"
        )

    # -- LinearOperator protocol ---------------------------------------------------------
    def _matvec(self, x):
        return self._matmat(np.reshape(x, (-1, 1))).reshape(-1)

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != self.shape[0]:
            raise ValueError(f"expected a block of shape ({self.shape[0]}, b), got {X.shape}")
        out = self._evaluate(X)
        if self._check_pending:
            self._check_pending = False
            again = self._evaluate(X)
            rtol = _DETERMINISM_RTOL.get(self.dtype, 1e-3)
            scale = max(float(np.max(np.abs(out))), np.finfo(np.float64).tiny)
            if float(np.max(np.abs(out - again))) > rtol * scale:
                self._raise_nondeterministic(float(np.max(np.abs(out - again))) / scale)
        return out

    def _raise_nondeterministic(self, relative: float) -> None:
        raise DeterminismError(
            "two evaluations of the same Hessian-vector product differ "
            f"(max relative difference {relative:.2e}): "
            + self._nondeterminism_hint()
            + ". Pass check_determinism=False to skip this test."
        )

    # -- native protocol (see the module docstring) ------------------------------------
    def native_matmat(self, X):
        """Return ``H @ X`` for a block ``X`` of shape ``(n, b)`` of the framework's arrays.

        Available when the native path is on (``array_namespace`` is not ``None``); the
        result stays on the device. Counts products and runs the determinism guard like
        ``matmat``.
        """
        xp = self.array_namespace
        if xp is None:
            raise TypeError(
                f"the native path of this {type(self).__name__} is off (build it with "
                "native=True); use matmat with NumPy arrays"
            )
        shape = tuple(int(s) for s in X.shape)
        if len(shape) != 2 or shape[0] != self.shape[0]:
            raise ValueError(f"expected a block of shape ({self.shape[0]}, b), got {shape}")
        out = self._evaluate_native(X, shape)
        if self._check_pending:
            self._check_pending = False
            again = self._evaluate_native(X, shape)
            rtol = _DETERMINISM_RTOL.get(self.dtype, 1e-3)
            scale = max(float(xp.max(xp.abs(out))), np.finfo(np.float64).tiny)
            diff = float(xp.max(xp.abs(out - again)))
            if diff > rtol * scale:
                self._raise_nondeterministic(diff / scale)
        return out

    def _evaluate_native(self, X, shape: tuple[int, int]):
        out = self._hvp_native(X)
        self.num_hvps += shape[1]
        self.num_passes += 1
        if tuple(int(s) for s in out.shape) != shape:
            raise ValueError(
                f"Hessian-vector product returned shape {tuple(out.shape)}, expected {shape}"
            )
        return out

    def _evaluate(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self._hvp(X))
        self.num_hvps += X.shape[1]
        self.num_passes += 1
        if out.shape != X.shape:
            raise ValueError(
                f"Hessian-vector product returned shape {out.shape}, expected {X.shape}"
            )
        return out

    def _adjoint(self):
        return self

    def _transpose(self):
        return self
