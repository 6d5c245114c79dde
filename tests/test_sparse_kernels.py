"""The numba fast path of the ``reorth="none"`` recurrence on CSR matrices.

Every test compares the fused kernels (:mod:`spectral._sparse_kernels`) with the plain numpy
path of :func:`spectral.lanczos._lanczos_block` on the same input: same ``steps``,
``num_matvecs`` and errors, and ``alpha``/``beta`` equal to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("numba", reason="numba is not installed: the fused CSR kernels are off")

import spectral
import spectral._sparse_kernels as sk
from spectral.matrices import grid_laplacian
from spectral.operators import aslinearoperator
from spectral.probes import draw_probes


@pytest.fixture
def kernels_on(monkeypatch):
    """Fused kernels for any size, and a counter of the runs that used them."""
    monkeypatch.delenv("SPECTRAL_DISABLE_NUMBA", raising=False)
    monkeypatch.setattr(sk, "MIN_ROWS", 0)
    calls = {"fast": 0, "raised": 0}
    original = sk.lanczos_block_csr

    def counting(*args, **kwargs):
        try:
            res = original(*args, **kwargs)
        except Exception:
            calls["raised"] += 1
            raise
        calls["fast"] += res is not None
        return res

    monkeypatch.setattr(sk, "lanczos_block_csr", counting)
    return calls


def both_paths(monkeypatch, A, V, k):
    """``spectral.lanczos(A, V, k, reorth="none")`` by the fused and by the plain path."""
    fast = spectral.lanczos(A, V, k, reorth="none")
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    plain = spectral.lanczos(A, V, k, reorth="none")
    monkeypatch.delenv("SPECTRAL_DISABLE_NUMBA")
    return fast, plain


def assert_same(fast, plain, rtol=1e-12):
    np.testing.assert_array_equal(fast.steps, plain.steps)
    assert fast.num_matvecs == plain.num_matvecs
    assert fast.basis is None and fast.reorth == "none"
    np.testing.assert_allclose(fast.alpha, plain.alpha, rtol=rtol, atol=0)
    np.testing.assert_allclose(fast.beta, plain.beta, rtol=rtol, atol=0)
    np.testing.assert_allclose(fast.residual, plain.residual, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("b", [2, 3, 5, 10])
def test_fused_equals_plain_float64(kernels_on, monkeypatch, b):
    L, _ = grid_laplacian(37, 41)
    V = draw_probes(L.shape[0], b, "sphere", 3)
    fast, plain = both_paths(monkeypatch, L, V, 30)
    assert kernels_on["fast"] == 1
    assert_same(fast, plain)


def test_one_column_takes_the_plain_path_unless_forced(kernels_on, monkeypatch):
    L, _ = grid_laplacian(37, 41)
    v = draw_probes(L.shape[0], 1, "sphere", 3)[:, 0]
    spectral.lanczos(L, v, 30, reorth="none")
    assert kernels_on["fast"] == 0
    monkeypatch.setattr(sk, "MIN_COLUMNS", 1)
    fast, plain = both_paths(monkeypatch, L, v, 30)
    assert kernels_on["fast"] == 1
    assert_same(fast, plain)


def test_deterministic_whatever_the_thread_count(kernels_on, monkeypatch):
    import numba

    monkeypatch.setattr(sk, "PARALLEL_MIN_WORK", 0)  # all threads even for a small block
    L, _ = grid_laplacian(60)
    V = draw_probes(L.shape[0], 3, "sphere", 0)
    threads = numba.get_num_threads()
    try:
        runs = []
        for t in [*sorted({1, threads}), threads]:
            numba.set_num_threads(t)
            runs.append(spectral.lanczos(L, V, 25, reorth="none"))
            assert numba.get_num_threads() == t  # restored after the call
    finally:
        numba.set_num_threads(threads)
    for res in runs[1:]:
        np.testing.assert_array_equal(res.alpha, runs[0].alpha)
        np.testing.assert_array_equal(res.beta, runs[0].beta)


def test_breakdown_columns_dropped_as_in_the_plain_path(kernels_on, monkeypatch):
    """Columns in invariant subspaces of dimension 1, 3 and 5 stop there; one runs on."""
    L, _ = grid_laplacian(20)  # 400 distinct-enough eigenvalues: no breakdown in 30 steps
    D = sp.diags(np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], 40))  # 5 distinct eigenvalues
    A = sp.block_diag([L, D], format="csr")
    n, m = L.shape[0], D.shape[0]
    rng = np.random.default_rng(1)
    V = np.zeros((n + m, 4))
    V[:n, 0] = rng.standard_normal(n)
    V[n : n + 40, 1] = rng.standard_normal(40)  # an eigenvector: breaks down after 1 step
    V[n : n + 120, 2] = rng.standard_normal(120)  # 3 eigenvalues
    V[n:, 3] = rng.standard_normal(m)  # 5 eigenvalues
    fast, plain = both_paths(monkeypatch, A, V, 30)
    assert kernels_on["fast"] == 1
    np.testing.assert_array_equal(fast.steps, [30, 1, 3, 5])
    np.testing.assert_array_equal(fast.steps, plain.steps)
    assert fast.num_matvecs == plain.num_matvecs == 30 + 1 + 3 + 5
    np.testing.assert_allclose(fast.alpha, plain.alpha, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast.beta, plain.beta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast.residual, plain.residual, rtol=1e-12, atol=1e-12)
    assert np.all(fast.residual[1:] < 1e-10)


def test_float32_matrix(kernels_on, monkeypatch):
    """Products as SciPy forms them in float32 (bit for bit), the recurrence in float64.

    The float32 rounding of each Lanczos vector before the product makes the two paths
    drift apart once one of them rounds a value the other way (a float64 difference of
    one ulp in the reductions decides it), so only the first steps agree to 1e-12 and
    the rest to float32 accuracy.
    """
    L, _ = grid_laplacian(40)
    L32 = L.astype(np.float32)
    V = draw_probes(L.shape[0], 3, "sphere", 5)
    fast, plain = both_paths(monkeypatch, L32, V, 40)
    assert kernels_on["fast"] == 1
    np.testing.assert_array_equal(fast.steps, plain.steps)
    np.testing.assert_allclose(fast.alpha[:, :5], plain.alpha[:, :5], rtol=1e-12)
    np.testing.assert_allclose(fast.beta[:, :5], plain.beta[:, :5], rtol=1e-12)
    np.testing.assert_allclose(fast.alpha, plain.alpha, rtol=1e-5)
    np.testing.assert_allclose(fast.beta, plain.beta, rtol=1e-5)
    assert fast.alpha.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b", [1, 2, 3, 4, 7])
def test_product_kernel_is_scipys_product(dtype, b):
    """``W = A (R s)`` bit for bit as ``(A @ (R s).astype(dtype)).astype(float64)``."""
    K = sk._kernels()
    L, _ = grid_laplacian(23)
    A = L.astype(dtype)
    n = A.shape[0]
    rng = np.random.default_rng(b)
    R, s = rng.standard_normal((n, b)), rng.uniform(0.5, 2.0, b)
    chunk = 64
    nch = -(-n // chunk)
    W, apart, bad = np.empty((n, b)), np.empty((nch, b)), np.empty(nch)
    K["product_alpha"](A.indptr, A.indices, A.data, R, s, W, chunk, apart, bad)
    expected = np.asarray(A @ (R * s).astype(dtype), dtype=np.float64)
    np.testing.assert_array_equal(W, expected)
    np.testing.assert_allclose(apart.sum(axis=0), np.sum(R * s * expected, axis=0), rtol=1e-13)
    assert not np.any(bad)


def test_overflow_raises_with_the_step_like_the_plain_path(kernels_on, monkeypatch):
    """A float32 product that overflows at step 2 raises the plain path's error."""
    L, _ = grid_laplacian(10)
    B = sp.csr_matrix(np.full((100, 100), 1e38, dtype=np.float32))
    A = sp.block_diag([L.astype(np.float32), B], format="csr")
    v = np.ones((A.shape[0], 2))
    v[L.shape[0] :] = 1e-4  # step 1 stays finite; the next vectors lie along B's top vector
    with pytest.raises(FloatingPointError, match="at Lanczos step 2;") as fast:
        spectral.lanczos(A, v, 10, reorth="none")
    assert kernels_on["raised"] == 1  # raised inside the fused path
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    with pytest.raises(FloatingPointError) as plain:
        spectral.lanczos(A, v, 10, reorth="none")
    assert str(fast.value) == str(plain.value)


def test_int64_indices_and_progress(kernels_on, monkeypatch):
    L, _ = grid_laplacian(30)
    L64 = sp.csr_matrix(
        (L.data, L.indices.astype(np.int64), L.indptr.astype(np.int64)), shape=L.shape
    )
    V = draw_probes(L.shape[0], 2, "sphere", 2)
    fast = spectral.lanczos(L64, V, 20, reorth="none", progress=True)
    assert kernels_on["fast"] == 1
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    assert_same(fast, spectral.lanczos(L, V, 20, reorth="none"))


def test_slq_uses_the_fused_path(kernels_on, monkeypatch):
    L, _ = grid_laplacian(30)
    fast = spectral.slq(L, num_steps=25, num_probes=6, reorth="none", seed=0, batch_size=3)
    assert kernels_on["fast"] == 2
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    plain = spectral.slq(L, num_steps=25, num_probes=6, reorth="none", seed=0, batch_size=3)
    np.testing.assert_allclose(fast.nodes, plain.nodes, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fast.weights, plain.weights, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(
    "make",
    [
        lambda L: L.toarray(),  # dense
        lambda L: sp.linalg.aslinearoperator(L),  # matrix-free
        lambda L: L.tocsc(),  # coerced to CSR by aslinearoperator: still fused
    ],
    ids=["dense", "linear-operator", "csc"],
)
def test_which_operators_take_the_fused_path(kernels_on, make):
    L, _ = grid_laplacian(12)
    op = aslinearoperator(make(L))
    q = draw_probes(L.shape[0], 2, "sphere", 0)
    res = sk.lanczos_block_csr(op, q, 5)
    assert (res is not None) == sp.issparse(getattr(op, "matrix", None))


def test_switches_to_the_plain_path(kernels_on, monkeypatch):
    L, _ = grid_laplacian(12)
    op = aslinearoperator(L)
    q = draw_probes(L.shape[0], 2, "sphere", 0)
    assert sk.lanczos_block_csr(op, q, 5) is not None
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    assert sk.lanczos_block_csr(op, q, 5) is None and not sk.numba_enabled()
    monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "0")
    assert sk.lanczos_block_csr(op, q, 5) is not None
    monkeypatch.setattr(sk, "MIN_ROWS", L.shape[0] + 1)  # too small to pay
    assert sk.lanczos_block_csr(op, q, 5) is None
    monkeypatch.setattr(sk, "MIN_ROWS", 0)
    monkeypatch.setattr(sk, "_kernels", lambda: None)  # as without numba
    assert sk.lanczos_block_csr(op, q, 5) is None and not sk.numba_enabled()


def test_malformed_csr_takes_the_plain_path(kernels_on):
    L, _ = grid_laplacian(12)
    op = aslinearoperator(L)
    op.matrix.indices[3] = L.shape[0] + 5  # out of range: never read by the kernels
    q = draw_probes(L.shape[0], 2, "sphere", 0)
    assert sk.lanczos_block_csr(op, q, 5) is None
