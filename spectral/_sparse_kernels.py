r"""Fused, multi-threaded CSR kernels for the three-term Lanczos recurrence (numba).

For an explicit SciPy CSR matrix (float64 or float32) and ``reorth="none"``,
:func:`lanczos_block_csr` runs the batched recurrence of
:func:`spectral.lanczos._lanczos_block` with two fused passes over the ``(n, b)`` block per
step, each a numba ``prange`` over fixed chunks of rows:

1. ``W = A Q`` (row-major blocks: the CSR gather reads ``b`` contiguous values per stored
   entry) and, in the same pass, the partial column dots ``α = colsum(Q ∘ W)``;
2. ``W ← (W − α Q) − β_{j−1} Q_{j−1}``, written over the dead ``Q_{j−1}`` buffer, with the
   partial column sums of squares for ``β = ‖W‖``.

The normalisation ``q_{j+1} = W / β_j`` costs no pass of its own: each Lanczos vector is
kept unnormalised with its scale ``1/β_j``, applied as the kernels read it. A step thus
reads the block four times and writes it twice, plus one pass over the matrix, and holds
three ``(n, b)`` float64 blocks. (``β`` cannot come from the first pass through
``‖W‖² − α² − β_{j−1}²``: that cancels catastrophically near a breakdown.)

Reductions are in float64, one partial sum per chunk of :data:`CHUNK_ROWS` rows, added in
chunk order: the result does not depend on the number of threads or their scheduling, so
a run is bit for bit reproducible. Products are formed exactly as SciPy forms them (the
vector rounded to the matrix dtype, products and sums in that dtype, a row's entries in
storage order), bit for bit; the recurrence stays in float64.

The recurrence mirrors the plain path line for line: breakdown test, dropped columns,
``steps``, ``residual``, ``num_matvecs``, and a :class:`FloatingPointError` naming the step
when a product is not finite (raised by the plain path's own checked product, so the
message is the same). Results agree with the plain path to rounding (reductions are
ordered differently, and ``W · (1/β)`` replaces ``W / β``): about ``1e-12`` relative in
``alpha`` and ``beta`` after 80 steps on a 10⁶ grid Laplacian. For a float32 matrix the
paths agree to 1e-12 for the first steps, then drift apart to float32 accuracy once a
vector entry rounds to float32 differently in the two (a one-ulp float64 difference
decides it), as any two float32 computations of the recurrence do.

When it is used
---------------
:func:`lanczos_block_csr` returns ``None``, and the caller runs the plain path, unless all
of these hold: the environment variable ``SPECTRAL_DISABLE_NUMBA`` is unset, empty or
``0``; the block has at least :data:`MIN_COLUMNS` columns (one probe at a time takes the
plain path, whose BLAS update is as fast here); the operator is an explicit SciPy sparse
matrix in CSR format (which :func:`spectral.aslinearoperator` makes of any SciPy sparse
input) with float32 or float64 values and at least :data:`MIN_ROWS` rows; and numba
imports. Set ``SPECTRAL_DISABLE_NUMBA=1`` to force the plain path, e.g. to compare the two
(``bench/bench_numba.py`` does).

numba is imported on first use only: ``import spectral`` neither needs nor pays for it.
The kernels are compiled once per (matrix dtype, index dtype) with ``cache=True``: the first
process on a machine compiles them (20–30 s on a busy 2-core machine), later ones load them
from numba's cache (2–3 s there, numba's own import included).

Threads: a block of at least :data:`PARALLEL_MIN_WORK` elements runs on numba's thread
count (all cores unless ``NUMBA_NUM_THREADS`` or :func:`numba.set_num_threads` say
otherwise), a smaller one on one thread. On a machine whose cores are all busy with other
work, one thread is faster at every size (``NUMBA_NUM_THREADS=1``): each parallel launch
then waits for its other threads to be scheduled. Calls into the kernels are serialised by
a lock, since numba's ``workqueue`` threading layer does not allow concurrent launches
from several Python threads; with numba's GNU OpenMP layer, a process that used the
kernels must not ``fork`` children that use them too (use ``spawn``, or the switch).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading

import numpy as np
import scipy.sparse as sp

from .operators import _ExplicitOperator

__all__ = ["CHUNK_ROWS", "MIN_COLUMNS", "MIN_ROWS", "lanczos_block_csr", "numba_enabled"]

#: Rows per reduction chunk. Fixed (not derived from the thread count) so that the float64
#: partial sums, added in chunk order, give the same bits with any number of threads.
CHUNK_ROWS = 2048

#: Smallest matrix order for which the fused kernels are used. Below it a whole run on the
#: plain path takes about a second or less, which numba's one-time import and cache load
#: (2–3 s) would not pay back.
MIN_ROWS = 50_000

#: Smallest block width for which the fused kernels are used. A single column takes the
#: plain path, whose BLAS update is about as fast as the kernels on one thread
#: (``bench/README.md``, "numba fused kernel").
MIN_COLUMNS = 2

#: Smallest ``n · b`` (elements of the block) for which the kernels run on all of numba's
#: threads; smaller blocks run on one thread. On a machine whose cores are busy with other
#: work, a parallel launch waits milliseconds for its second thread to be scheduled, which
#: only blocks this large amortise (``bench/README.md``, "numba fused kernel").
PARALLEL_MIN_WORK = 2_000_000

_LOCK = threading.Lock()

# The module, not the function that ``spectral`` exports under the same name.
_lz = importlib.import_module(".lanczos", __package__)

# Replaced by ``numba.prange`` before the kernels below are compiled; as plain Python the
# kernels then still run (slowly), which is how they can be read and debugged.
prange = range


def _disabled_by_env() -> bool:
    flag = os.environ.get("SPECTRAL_DISABLE_NUMBA", "").strip().lower()
    return flag not in ("", "0", "false", "no", "off")


def numba_enabled() -> bool:
    """Whether the fused kernels may be used: numba imports and the switch is not set."""
    return not _disabled_by_env() and _kernels() is not None


# --------------------------------------------------------------------------------------
# Kernels. ``R`` holds the unnormalised Lanczos vector whose normalised form is ``R * s``.
# ``_round_like(v, data)`` rounds ``v`` to the dtype of the matrix values (float32 or
# float64), as SciPy's product rounds the vector to the matrix dtype. Column indices are
# cast to unsigned (checked in range beforehand), which spares numba's negative-index
# wraparound in the innermost loop.
# --------------------------------------------------------------------------------------


def _round_like(v, data):
    """``v`` as a scalar of ``data.dtype`` (numba overloads this; see :func:`_kernels`)."""
    return data.dtype.type(v)


def _product_alpha(indptr, indices, data, R, s, W, chunk, apart, bad):
    """``W = A (R s)``; per chunk of rows, ``colsum((R s) ∘ W)``, and a NaN flag if not finite.

    ``R, W`` have shape (n, b), ``apart`` (chunks, b), ``bad`` (chunks,). The columns go in
    groups of four (then two, then one) with scalar accumulators, which the compiler keeps
    in registers; a row's few stored entries are re-read per group.
    """
    n, b = R.shape
    zero = _round_like(0.0, data)
    for ch in prange(apart.shape[0]):
        lo = ch * chunk
        hi = min(lo + chunk, n)
        asum = np.zeros(b)
        flag = 0.0
        k0 = np.uint64(indptr[lo])
        for i in range(lo, hi):
            k1 = np.uint64(indptr[i + 1])
            ui = np.uint64(i)
            c = 0
            while c + 4 <= b:
                c0 = np.uint64(c)
                c1 = c0 + np.uint64(1)
                c2 = c0 + np.uint64(2)
                c3 = c0 + np.uint64(3)
                s0, s1, s2, s3 = s[c0], s[c1], s[c2], s[c3]
                a0, a1, a2, a3 = zero, zero, zero, zero
                for kk in range(k0, k1):
                    a = data[kk]
                    jc = np.uint64(indices[kk])
                    a0 += a * _round_like(R[jc, c0] * s0, data)
                    a1 += a * _round_like(R[jc, c1] * s1, data)
                    a2 += a * _round_like(R[jc, c2] * s2, data)
                    a3 += a * _round_like(R[jc, c3] * s3, data)
                w0, w1, w2, w3 = np.float64(a0), np.float64(a1), np.float64(a2), np.float64(a3)
                W[ui, c0] = w0
                W[ui, c1] = w1
                W[ui, c2] = w2
                W[ui, c3] = w3
                asum[c0] += (R[ui, c0] * s0) * w0
                asum[c1] += (R[ui, c1] * s1) * w1
                asum[c2] += (R[ui, c2] * s2) * w2
                asum[c3] += (R[ui, c3] * s3) * w3
                flag += (w0 * 0.0 + w1 * 0.0) + (w2 * 0.0 + w3 * 0.0)
                c += 4
            if c + 2 <= b:
                c0 = np.uint64(c)
                c1 = c0 + np.uint64(1)
                s0, s1 = s[c0], s[c1]
                a0, a1 = zero, zero
                for kk in range(k0, k1):
                    a = data[kk]
                    jc = np.uint64(indices[kk])
                    a0 += a * _round_like(R[jc, c0] * s0, data)
                    a1 += a * _round_like(R[jc, c1] * s1, data)
                w0, w1 = np.float64(a0), np.float64(a1)
                W[ui, c0] = w0
                W[ui, c1] = w1
                asum[c0] += (R[ui, c0] * s0) * w0
                asum[c1] += (R[ui, c1] * s1) * w1
                flag += w0 * 0.0 + w1 * 0.0
                c += 2
            if c < b:
                c0 = np.uint64(c)
                s0 = s[c0]
                a0 = zero
                for kk in range(k0, k1):
                    a0 += data[kk] * _round_like(R[np.uint64(indices[kk]), c0] * s0, data)
                w0 = np.float64(a0)
                W[ui, c0] = w0
                asum[c0] += (R[ui, c0] * s0) * w0
                flag += w0 * 0.0
            k0 = k1
        for c in range(b):
            apart[ch, c] = asum[c]
        bad[ch] = flag


def _update_beta(W, R, s, Rp, sp, a, bp, chunk, bpart):
    """``Rp = (W − a (R s)) − bp (Rp sp)`` column-wise; per chunk of rows, ``colsum(Rp²)``."""
    n, b = R.shape
    for ch in prange(bpart.shape[0]):
        lo = ch * chunk
        hi = min(lo + chunk, n)
        bsum = np.zeros(b)
        for i in range(lo, hi):
            for c in range(b):
                v = W[i, c] - a[c] * (R[i, c] * s[c])
                v = v - bp[c] * (Rp[i, c] * sp[c])
                Rp[i, c] = v
                bsum[c] += v * v
        for c in range(b):
            bpart[ch, c] = bsum[c]


@functools.cache
def _kernels():
    """Compile (or load from numba's cache) the kernels; ``None`` when numba is missing."""
    try:
        import numba
    except ImportError:
        return None
    from numba.extending import overload

    @overload(_round_like)
    def _round_like_impl(v, data):
        if data.dtype == numba.float32:
            return lambda v, data: np.float32(v)
        return lambda v, data: np.float64(v)

    globals()["prange"] = numba.prange
    return {
        "numba": numba,
        "product_alpha": parallel_jit(numba, _product_alpha),
        "update_beta": parallel_jit(numba, _update_beta),
    }


def parallel_jit(numba, fn):
    """``numba.njit(parallel=True)`` with the on-disk cache where numba finds a place for it.

    Shared by the kernel modules; each sets its module's ``prange`` to ``numba.prange``
    before compiling, so that the same source also runs as plain Python.
    """
    try:
        return numba.njit(parallel=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location: compile per process
        return numba.njit(parallel=True)(fn)


@contextlib.contextmanager
def _num_threads(numba, count: int):
    """Run numba's parallel launches of this Python thread on ``count`` threads."""
    old = numba.get_num_threads()
    numba.set_num_threads(min(count, old))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _csr_of(op) -> sp.csr_matrix | None:
    """Return the CSR matrix behind ``op`` if the fused kernels apply to it, else ``None``."""
    if not isinstance(op, _ExplicitOperator):
        return None
    M = op.matrix
    if not sp.issparse(M) or M.format != "csr" or M.dtype != op.dtype:
        return None
    if M.dtype not in (np.float32, np.float64) or M.indices.dtype not in (np.int32, np.int64):
        return None
    if M.shape[0] < MIN_ROWS or M.nnz == 0:
        return None
    return M


def _well_formed(M) -> bool:
    """Check the index arrays, which the kernels read without bounds checks."""
    indptr, indices = M.indptr, M.indices
    if indptr.dtype != indices.dtype or indptr.size != M.shape[0] + 1:
        return False
    if indptr[0] != 0 or indptr[-1] > min(indices.size, M.data.size):
        return False
    if np.any(indptr[1:] < indptr[:-1]):
        return False
    ind = indices[: indptr[-1]]
    return bool(ind.min() >= 0 and ind.max() < M.shape[1])


def lanczos_block_csr(op, q: np.ndarray, k: int, progress: bool = False):
    """``reorth="none"`` recurrence of :func:`spectral.lanczos._lanczos_block` by fused kernels.

    Returns the same :class:`~spectral.lanczos.LanczosResult` as the plain path, or
    ``None`` when the kernels do not apply (see the module docstring) and the caller must
    run the plain path.
    """
    if _disabled_by_env() or q.shape[1] < MIN_COLUMNS:
        return None
    M = _csr_of(op)
    if M is None:
        return None
    K = _kernels()
    if K is None or not _well_formed(M):
        return None
    indptr = np.ascontiguousarray(M.indptr)
    indices = np.ascontiguousarray(M.indices)
    data = np.ascontiguousarray(M.data)

    n, b = q.shape
    chunk = CHUNK_ROWS
    nch = -(-n // chunk)
    alpha = np.zeros((b, k))
    beta = np.zeros((b, k))  # beta[:, j] couples steps j and j+1; beta[:, k-1] is the residual
    steps = np.full(b, k, dtype=np.intp)
    scale = np.zeros(b)
    beta_prev = np.zeros(b)
    active = np.arange(b)
    num_matvecs = 0
    # Work buffers for the active columns only (compacted when a column breaks down):
    # q_j = R * s and q_{j-1} = Rp * sp (zero before the first step); W = A q_j.
    R = np.array(q, dtype=np.float64, order="C")
    Rp = np.zeros_like(R)
    W = np.empty_like(R)
    s = np.ones(b)
    sp_ = np.zeros(b)
    bp = np.zeros(b)
    bad = np.empty(nch)

    iterator = range(k)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=k, desc="Lanczos", unit="step")

    threads = K["numba"].get_num_threads() if n * b >= PARALLEL_MIN_WORK else 1
    with _num_threads(K["numba"], threads):
        for j in iterator:
            m = active.size
            apart = np.empty((nch, m))
            bpart = np.empty((nch, m))
            with _LOCK:
                K["product_alpha"](indptr, indices, data, R, s, W, chunk, apart, bad)
            if not np.isfinite(bad).all():
                # The plain path's checked product raises with the step and the count.
                _lz._apply(op, R * s, j + 1)
                raise FloatingPointError(  # pragma: no cover - the line above raises
                    f"the operator returned non-finite values at Lanczos step {j + 1}"
                )
            num_matvecs += m
            a = apart.sum(axis=0)
            with _LOCK:
                K["update_beta"](W, R, s, Rp, sp_, a, bp, chunk, bpart)
            bnext = np.sqrt(bpart.sum(axis=0))
            keep = _lz._record_step(j, a, bnext, active, alpha, beta, scale, beta_prev, steps)
            if keep is None:
                break
            new_active = active[keep]
            # q_{j+1} = W / β_j is the updated block now in Rp, with scale 1 / β_j.
            R, Rp = Rp, R
            sp_, s, bp = s, 1.0 / bnext, bnext
            if new_active.size < m:
                R = np.ascontiguousarray(R[:, keep])
                Rp = np.ascontiguousarray(Rp[:, keep])
                W = np.empty_like(R)
                s, sp_, bp = s[keep], sp_[keep], bp[keep]
            beta_prev[new_active] = bnext[keep]
            active = new_active

    return _lz._finish(alpha, beta, steps, basis=None, num_matvecs=num_matvecs, reorth="none")
