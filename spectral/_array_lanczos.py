r"""Batched Lanczos on the arrays of any array-API namespace: the device path.

The same recurrence as :func:`spectral.lanczos._lanczos_block` (same breakdown rule, same
dropping of finished columns, same checks and messages), written against the array API
standard (:mod:`array_api_compat`) so that it runs where the operator's arrays live — CuPy or
PyTorch on a GPU, JAX, PyTorch on the CPU, ``array_api_strict`` in the tests:

* the Lanczos vectors (float64, shape ``(n, b)``), the products' outputs and the
  reorthogonalisation stay on the operator's device, in its namespace; each block is cast
  to the operator's dtype for the product and the result back to float64;
* per step, one small array ``[α_j; β_j]`` of ``2b`` numbers comes to the host: the
  breakdown test and the dropping of finished columns are decided there, with the NumPy
  path's rule, and a non-finite ``α`` or ``β`` triggers the count of non-finite product
  entries that names the step;
* the tridiagonal eigenproblems (Gauss rules) run on the host, on ``α`` and ``β``.

The basis for ``reorth="full"`` is kept in one of three stores (the memory dial):
``(b, k, n)`` on the device in float64 or float32 (``basis_dtype``), or in host memory
(``basis_device="host"``: each new vector is copied to the host, and the Gram–Schmidt passes
run there on NumPy, so the device holds only the ``O(n b)`` working vectors). A float32
basis is read in chunks converted to float64, so the Gram–Schmidt coefficients and updates
are accumulated in float64 against the rounded vectors.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas as _blas

from ._backends import NativeOperator, dtype_name, to_device, to_host, xp_dtype
from .lanczos import LanczosResult, _finish, _record_step, _start_block

__all__ = [
    "BASIS_DEVICES",
    "BASIS_DTYPES",
    "cgs2_numpy",
    "check_memory_options",
    "lanczos_native",
    "start_block_native",
]

BASIS_DTYPES = ("float64", "float32")
BASIS_DEVICES = ("device", "host")

#: Elements of one float64 chunk when a float32 basis is read for the Gram–Schmidt passes:
#: cache-sized on the host; on a device (where each chunk costs kernel launches) as large as
#: one n-vector per column, up to ``LOWP_CHUNK_DEVICE`` (see :func:`_device_chunk`).
LOWP_CHUNK_HOST = 1 << 18
LOWP_CHUNK_DEVICE = 1 << 24


def _device_chunk(n: int, b: int) -> int:
    """Elements of a float64 chunk on a device: ``min(n b, 2²⁴)``, at least ``2¹⁶``."""
    return min(LOWP_CHUNK_DEVICE, max(1 << 16, n * b))


def check_memory_options(basis_dtype, basis_device) -> tuple[str, str]:
    """Validate and normalise the memory-dial arguments of :func:`spectral.lanczos`/``slq``."""
    try:
        name = np.dtype(basis_dtype).name
    except TypeError:
        name = str(basis_dtype)
    if name not in BASIS_DTYPES:
        raise ValueError(f"basis_dtype must be one of {BASIS_DTYPES}, got {basis_dtype!r}")
    if basis_device not in BASIS_DEVICES:
        raise ValueError(f"basis_device must be one of {BASIS_DEVICES}, got {basis_device!r}")
    return name, basis_device


# ---------------------------------------------------------------------------------------
# classical Gram–Schmidt, twice, on the host (NumPy)
# ---------------------------------------------------------------------------------------
def cgs2_numpy(Q: np.ndarray, w: np.ndarray, chunk: int = LOWP_CHUNK_HOST) -> None:
    """Orthogonalise ``w`` (float64, 1-D, contiguous) against the rows of ``Q``, in place.

    Classical Gram–Schmidt applied twice. A float64 ``Q`` (C-order rows) is read by two
    ``dgemv`` per pass; a float32 ``Q`` is converted to float64 in cache-sized blocks of
    columns, so that ``h = Q w`` and ``w −= Qᵀ h`` are accumulated in float64 without a
    float64 copy of ``Q`` (the extra memory is ``chunk`` numbers, not ``m · n``).
    """
    if Q.dtype == np.float64:
        QT = Q.T  # (n, m), Fortran order: BLAS reads it in place
        for _ in range(2):
            h = _blas.dgemv(1.0, QT, w, trans=1)
            _blas.dgemv(-1.0, QT, h, beta=1.0, y=w, overwrite_y=1)
        return
    m, n = Q.shape
    rows = max(1, chunk // m)
    buf = np.empty((m, min(rows, n)))
    for _ in range(2):
        h = np.zeros(m)
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            block = buf[:, : r1 - r0]
            block[...] = Q[:, r0:r1]
            h += block @ w[r0:r1]
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            block = buf[:, : r1 - r0]
            block[...] = Q[:, r0:r1]
            w[r0:r1] -= h @ block


# ---------------------------------------------------------------------------------------
# classical Gram–Schmidt, twice, in any namespace
# ---------------------------------------------------------------------------------------
def _cgs2(xp, Q, w, chunk: int):
    """Return ``w`` orthogonalised against ``Q``: ``Q`` of shape (..., m, n), ``w`` (..., n, 1).

    ``w`` is float64 and ours: it is updated in place where the namespace allows (rebound
    otherwise). A ``Q`` of lower precision is converted in blocks of columns of at most
    ``chunk`` elements, so the coefficients are accumulated in float64.
    """
    import array_api_compat

    f64 = xp.float64
    if dtype_name(Q.dtype) == "float64":
        for _ in range(2):
            h = xp.matmul(Q, w)
            w -= xp.matmul(xp.matrix_transpose(Q), h)
        return w
    m, n = Q.shape[-2], Q.shape[-1]
    batch = int(np.prod(Q.shape[:-2], dtype=np.int64)) if len(Q.shape) > 2 else 1
    rows = max(1, chunk // max(1, m * batch))
    bounds = [(r0, min(r0 + rows, n)) for r0 in range(0, n, rows)]  # in-bounds slices
    writeable = array_api_compat.is_writeable_array(w)
    for _ in range(2):
        h = None
        for r0, r1 in bounds:
            t = xp.matmul(xp.astype(Q[..., r0:r1], f64), w[..., r0:r1, :])
            h = t if h is None else h + t
        if writeable:  # w[rows] −= Q[:, rows]ᵀ h, block by block
            for r0, r1 in bounds:
                w[..., r0:r1, :] -= xp.matmul(xp.matrix_transpose(xp.astype(Q[..., r0:r1], f64)), h)
            continue
        parts = [
            xp.matmul(xp.matrix_transpose(xp.astype(Q[..., r0:r1], f64)), h) for r0, r1 in bounds
        ]
        update = parts[0] if len(parts) == 1 else xp.concat(parts, axis=-2)
        del parts
        w = w - update
    return w


class _DeviceStore:
    """Basis ``(b, k, n)`` preallocated in the namespace (arrays that support assignment)."""

    def __init__(self, xp, device, b, k, n, dtype_name_):
        self.xp = xp
        self.dtype = xp_dtype(xp, dtype_name_)
        self.B = xp.zeros((b, k, n), dtype=self.dtype, device=device)
        self.b, self.n = b, n
        self.chunk = _device_chunk(n, b)

    def put(self, j, q, active):
        xp = self.xp
        qt = xp.matrix_transpose(q)
        if dtype_name(qt.dtype) != dtype_name(self.dtype):
            qt = xp.astype(qt, self.dtype)
        if active.size == self.b:
            self.B[:, j, :] = qt
        else:
            for c_local, c in enumerate(active.tolist()):
                self.B[c, j, :] = qt[c_local, :]

    def project(self, W, active, j):
        xp, n = self.xp, self.n
        Wt = xp.matrix_transpose(W)
        if active.size == self.b:
            w = xp.reshape(Wt, (self.b, n, 1))
            w = _cgs2(xp, self.B[:, : j + 1, :], w, self.chunk)
            return xp.matrix_transpose(xp.reshape(w, (self.b, n)))
        cols = []
        for c_local, c in enumerate(active.tolist()):
            w = xp.reshape(Wt[c_local, :], (n, 1))
            cols.append(xp.reshape(_cgs2(xp, self.B[c, : j + 1, :], w, self.chunk), (n,)))
        return xp.stack(cols, axis=1)

    def basis(self, steps_taken):
        return self.xp.permute_dims(self.B, (0, 2, 1))


class _HostStore:
    """Basis ``(b, k, n)`` in host memory (NumPy); Gram–Schmidt on the host."""

    def __init__(self, xp, device, b, k, n, dtype_name_):
        self.xp, self.device = xp, device
        self.B = np.zeros((b, k, n), dtype=dtype_name_)
        self.b = b

    def put(self, j, q, active):
        qt = to_host(q).T
        if active.size == self.b:
            self.B[:, j, :] = qt
        else:
            self.B[active, j, :] = qt

    def project(self, W, active, j):
        Wt = np.array(to_host(W).T, dtype=np.float64, order="C")  # rows: one per column
        for c_local, c in enumerate(active.tolist()):
            cgs2_numpy(self.B[c, : j + 1], Wt[c_local])
        return to_device(self.xp, Wt.T, self.device)

    def basis(self, steps_taken):
        return self.B.transpose(0, 2, 1)


class _ListStore:
    """Basis as a list of ``(b_j, n)`` blocks, for namespaces without assignment (JAX).

    Gram–Schmidt stacks the blocks in chunks of a fixed number of steps (about one
    n-vector per column, see :func:`_device_chunk`; converted to float64 for a float32
    basis), the last chunk padded with zero blocks: every chunk has the same shape, so a
    tracing library (JAX) compiles its operations once rather than at every step. The
    ``(b, n, k)`` basis is assembled on request (twice the basis memory for a moment).
    """

    def __init__(self, xp, device, b, k, n, dtype_name_):
        self.xp, self.device = xp, device
        self.dtype = xp_dtype(xp, dtype_name_)
        self.b, self.k, self.n = b, k, n
        self.blocks: list = []  # (b_j, n) in the basis dtype
        self.actives: list[np.ndarray] = []
        self._zeros: dict[int, object] = {}

    def put(self, j, q, active):
        xp = self.xp
        qt = xp.matrix_transpose(q)
        if dtype_name(qt.dtype) != dtype_name(self.dtype):
            qt = xp.astype(qt, self.dtype)
        self.blocks.append(qt)
        self.actives.append(active.copy())

    def _rows(self, i, active):
        if i >= len(self.blocks):  # padding
            if active.size not in self._zeros:
                self._zeros[active.size] = self.xp.zeros(
                    (active.size, self.n), dtype=self.dtype, device=self.device
                )
            return self._zeros[active.size]
        block, act = self.blocks[i], self.actives[i]
        if act.size == active.size:  # columns only ever leave the active set
            return block
        idx = np.searchsorted(act, active)
        return self.xp.take(block, to_device(self.xp, idx, self.device), axis=0)

    def project(self, W, active, j):
        xp, n, ba = self.xp, self.n, active.size
        f64 = xp.float64
        w = xp.reshape(xp.matrix_transpose(W), (ba, n, 1))
        m = max(1, min(self.k, _device_chunk(n, self.b) // (ba * n)))
        chunks = [range(i0, i0 + m) for i0 in range(0, j + 1, m)]

        def stacked(chunk):
            Q = xp.stack([self._rows(i, active) for i in chunk], axis=1)  # (ba, m, n)
            return Q if dtype_name(Q.dtype) == "float64" else xp.astype(Q, f64)

        for _ in range(2):
            hs = [xp.matmul(stacked(chunk), w) for chunk in chunks]
            for chunk, h in zip(chunks, hs, strict=True):
                w -= xp.matmul(xp.matrix_transpose(stacked(chunk)), h)
        return xp.matrix_transpose(xp.reshape(w, (ba, n)))

    def basis(self, steps_taken):
        xp, b, n = self.xp, self.b, self.n
        zero = xp.zeros((1, n), dtype=self.dtype, device=self.device)
        full = []
        for block, act in zip(self.blocks, self.actives, strict=True):
            if act.size == b:
                full.append(block)
                continue
            idx = np.full(b, act.size)
            idx[act] = np.arange(act.size)
            padded = xp.concat([block, zero], axis=0)
            full.append(xp.take(padded, to_device(xp, idx, self.device), axis=0))
        while len(full) < self.k:
            full.append(xp.zeros((b, n), dtype=self.dtype, device=self.device))
        self.blocks = []
        return xp.stack(full, axis=-1)  # (b, n, k)


# ---------------------------------------------------------------------------------------
# the recurrence
# ---------------------------------------------------------------------------------------
def _apply(op: NativeOperator, X, step: int):
    """One checked block product in the operator's dtype, returned in float64 (namespace)."""
    import array_api_compat

    xp = op.array_namespace
    Xin = X if dtype_name(op.xp_dtype) == "float64" else xp.astype(X, op.xp_dtype)
    shape_in = tuple(int(s) for s in X.shape)
    try:
        Y = op.native_matmat(Xin)
    except ValueError as exc:
        raise ValueError(
            f"the operator's product failed at Lanczos step {step} on a block of shape "
            f"{shape_in}: {exc}"
        ) from exc
    try:
        same = array_api_compat.array_namespace(Y) is xp
    except TypeError:
        same = False
    if not same:
        Y = xp.asarray(Y, device=op.device)
    shape_out = tuple(int(s) for s in Y.shape)
    if shape_out != shape_in:
        if len(shape_out) == 1 and shape_out[0] == shape_in[0] and shape_in[1] == 1:
            Y = xp.reshape(Y, shape_in)
        else:
            raise ValueError(
                f"the operator returned an array of shape {shape_out} at Lanczos step {step} "
                f"for an input of shape {shape_in}"
            )
    if xp.isdtype(Y.dtype, "complex floating"):
        raise TypeError(f"the operator returned complex values at Lanczos step {step}")
    if dtype_name(Y.dtype) != "float64":
        Y = xp.astype(Y, xp.float64)
    return Y


def _count_nonfinite(xp, Y):
    """Return the number of NaN/inf entries of ``Y`` as a float64 array of shape (1,)."""
    mask = xp.logical_not(xp.isfinite(Y))
    if hasattr(xp, "count_nonzero"):
        bad = xp.count_nonzero(mask)
    else:  # pragma: no cover - pre-2023.12 namespaces
        bad = xp.sum(xp.astype(mask, xp.int8), dtype=xp.int64)
    return xp.reshape(xp.astype(bad, xp.float64), (1,))


def _raise_nonfinite(bad: int, step: int) -> None:
    """Raise for non-finite product entries; an overflow of finite ones goes on (NumPy path)."""
    if bad:
        raise FloatingPointError(
            f"the operator returned {bad} non-finite value(s) (NaN or inf) at Lanczos step "
            f"{step}; check the matrix or the model (for a Hessian: the loss may be "
            "non-finite or overflow in low precision)"
        )


def _coldot(xp, X, Y):
    if hasattr(xp, "vecdot"):
        return xp.vecdot(X, Y, axis=-2)
    return xp.sum(X * Y, axis=0)  # pragma: no cover - pre-2022.12 namespaces


def _colnorm(xp, W):
    linalg = getattr(xp, "linalg", None)
    if linalg is not None and hasattr(linalg, "vector_norm"):
        return linalg.vector_norm(W, axis=0)
    return xp.sqrt(xp.sum(W * W, axis=0))  # pragma: no cover


def start_block_native(op: NativeOperator, v0) -> tuple[object, bool]:
    """Check and normalise ``v0`` (host or native, ``(n,)`` or ``(n, b)``) onto the device.

    Returns the float64 ``(n, b)`` block in the operator's namespace and whether ``v0`` was
    one-dimensional. The checks are those of the NumPy path (one copy to the host).
    """
    host = v0 if isinstance(v0, (np.ndarray, list, tuple)) else to_host(v0)
    Q = _start_block(host, op.shape[0])
    xp = op.array_namespace
    return to_device(xp, np.ascontiguousarray(Q), op.device, xp.float64), np.ndim(host) == 1


def lanczos_native(
    op: NativeOperator,
    q,
    k: int,
    reorth: str,
    progress: bool = False,
    *,
    basis_dtype: str = "float64",
    basis_device: str = "device",
    keep_basis: bool = True,
) -> LanczosResult:
    """Batched recurrence on a normalised float64 block ``q`` (n, b) in ``op``'s namespace.

    ``alpha``, ``beta``, ``residual`` and ``steps`` of the result are host NumPy arrays;
    ``basis`` (``keep_basis`` and ``reorth="full"``) is ``(b, n, k)`` in the namespace, or a
    NumPy array with ``basis_device="host"``.
    """
    import array_api_compat

    xp, device = op.array_namespace, op.device
    n, b = (int(s) for s in q.shape)
    full = reorth == "full"
    alpha = np.zeros((b, k))
    beta = np.zeros((b, k))  # beta[:, j] couples steps j and j+1; beta[:, k-1] is the residual
    steps = np.full(b, k, dtype=np.intp)
    scale = np.zeros(b)
    beta_prev = np.zeros(b)
    active = np.arange(b)
    num_matvecs = 0
    store = None
    if full:
        if basis_device == "host":
            kind = _HostStore
        elif array_api_compat.is_writeable_array(q):
            kind = _DeviceStore
        else:
            kind = _ListStore
        store = kind(xp, device, b, k, n, basis_dtype)
    q_prev = None  # q_{j-1} of the active columns (none before the first step)
    bprev = None  # β_{j-1} of the active columns, on the device

    iterator = range(k)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=k, desc="Lanczos", unit="step")

    for j in iterator:
        Y = _apply(op, q, j + 1)
        num_matvecs += active.size
        a = _coldot(xp, q, Y)
        bad = _count_nonfinite(xp, Y)
        # W = A q_j − α_j q_j − β_{j−1} q_{j−1}, with at most one temporary alive: W starts
        # as our own array (−α q), so the updates can be in place (rebinding for JAX), and
        # the product's output is never written to (an operator may reuse it).
        W = q * (-a)
        W += Y
        del Y
        if q_prev is not None:
            W -= q_prev * bprev
        if full:
            store.put(j, q, active)
            W = store.project(W, active, j)
        bnext = _colnorm(xp, W)
        # the one transfer of the step: α_j, β_j of the active columns and the count of
        # non-finite product entries (2b + 1 numbers)
        host = np.asarray(to_host(xp.concat([a, bnext, bad])), dtype=np.float64)
        a_h, b_h = host[: active.size], host[active.size : 2 * active.size]
        if host[-1] > 0 or not np.all(np.isfinite(host)):
            _raise_nonfinite(int(host[-1]), j + 1)
        keep = _record_step(j, a_h, b_h, active, alpha, beta, scale, beta_prev, steps)
        if keep is None:
            break
        new_active = active[keep]
        # q_{j+1} = W / β_j for the columns that go on; finished columns leave the block.
        if new_active.size == active.size:
            q_prev, q, bprev = q, W / bnext, bnext
        else:
            idx = to_device(xp, np.flatnonzero(keep), device)
            bprev = xp.take(bnext, idx, axis=0)
            q_prev = xp.take(q, idx, axis=1)
            q = xp.take(W, idx, axis=1) / bprev
        del W
        beta_prev[new_active] = b_h[keep]
        active = new_active

    basis = store.basis(steps) if (store is not None and keep_basis) else None
    return _finish(alpha, beta, steps, basis=basis, num_matvecs=num_matvecs, reorth=reorth)
