"""The memory dial: peak memory of each mode, measured with tracemalloc.

NumPy (and array-api-strict, which wraps NumPy) report their allocations to
:mod:`tracemalloc`, so the peak of the traced memory during a run is the peak of the arrays
it holds. The targets are in ``n``-vectors of float64 per probe (see
``docs/concepts/precision.rst``): ``reorth="none"`` must stay below 10 whatever ``k`` (no
``O(n·k)`` array), and a float32 basis must take half the basis memory of a float64 one.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import spectral

N_LARGE = 4_000_000
VECTOR = 8 * N_LARGE  # bytes of one float64 n-vector


def traced_peak(fn) -> tuple[int, object]:
    """Peak traced memory above the level before ``fn`` (bytes), and its result."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


class DiagonalOperator:
    """A matrix-free diagonal operator in any array-API namespace (native protocol)."""

    def __init__(self, d, xp):
        self.d = xp.asarray(d)[:, None]
        self.array_namespace = xp
        self.device = None
        self.shape = (d.size, d.size)
        self.dtype = np.float64
        self.is_symmetric = True

    def matmat(self, X):
        return self.d * X


@pytest.fixture(scope="module")
def diagonal():
    d = np.linspace(-1.0, 1.0, N_LARGE)
    return d, sp.diags(d).tocsr()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["default", "numpy"])
def test_reorth_none_holds_no_n_by_k_array(diagonal, path, monkeypatch):
    """n = 4·10⁶, k = 30, one probe: peak ≤ 10 n-vectors (an (n, k) basis would be 30)."""
    if path == "numpy":  # the plain NumPy recurrence rather than the fused CSR kernels
        monkeypatch.setenv("SPECTRAL_DISABLE_NUMBA", "1")
    _, A = diagonal
    start = time.perf_counter()
    peak, m = traced_peak(lambda: spectral.slq(A, 30, 1, seed=0, reorth="none"))
    assert time.perf_counter() - start < 30
    assert m.steps[0] == 30
    assert peak <= 10 * VECTOR, f"peak {peak / VECTOR:.1f} n-vectors"
    # the run is the real thing: its Gauss rule spans the spectrum
    assert m.nodes[0, 0] < -0.99 and m.nodes[0, -1] > 0.99


@pytest.mark.slow
def test_reorth_none_on_the_array_path_holds_no_n_by_k_array(diagonal):
    """The same bound for the generic array-API recurrence (array-api-strict arrays)."""
    xs = pytest.importorskip("array_api_strict")
    d, _ = diagonal
    op = DiagonalOperator(d, xs)
    peak, m = traced_peak(lambda: spectral.slq(op, 30, 1, seed=0, reorth="none"))
    assert peak <= 10 * VECTOR, f"peak {peak / VECTOR:.1f} n-vectors"
    ref = spectral.slq(diagonal[1], 30, 1, seed=0, reorth="none")
    np.testing.assert_allclose(m.alpha[0, :10], ref.alpha[0, :10], atol=1e-10)


@pytest.mark.parametrize("path", ["numpy", "array_api_strict"])
def test_float32_basis_takes_half_the_basis_memory(path):
    """Full reorthogonalisation: peak ≈ basis + O(n); a float32 basis halves the basis."""
    n, k, P = 200_000, 30, 2
    d = np.linspace(-1.0, 1.0, n)
    if path == "numpy":
        A = sp.diags(d).tocsr()
    else:
        A = DiagonalOperator(d, pytest.importorskip("array_api_strict"))
    basis64 = P * k * n * 8
    vector = 8 * n * P
    peak64, m64 = traced_peak(lambda: spectral.slq(A, k, P, seed=0))
    peak32, m32 = traced_peak(lambda: spectral.slq(A, k, P, seed=0, basis_dtype="float32"))
    assert basis64 <= peak64 <= basis64 + 10 * vector
    assert basis64 / 2 <= peak32 <= basis64 / 2 + 10 * vector
    assert peak64 - peak32 == pytest.approx(basis64 / 2, rel=0.15)
    # same quadrature to the orthogonality level of a float32 basis
    np.testing.assert_allclose(m32.nodes, m64.nodes, atol=1e-6)
    np.testing.assert_allclose(m32.weights, m64.weights, atol=1e-6)


def test_float32_basis_is_semi_orthogonal_and_accurate():
    """lanczos(basis_dtype="float32"): float32 basis orthogonal to ~1e-7, T_k accurate."""
    from spectral.matrices import from_spectrum

    A, _ = from_spectrum(np.concatenate([np.linspace(-1, 1, 390), [2, 3, 5, 8, 9]]), seed=0)
    v0 = np.random.default_rng(1).standard_normal(A.shape[0])
    ref = spectral.lanczos(A, v0, 60)
    low = spectral.lanczos(A, v0, 60, basis_dtype="float32")
    assert low.basis.dtype == np.float32 and ref.basis.dtype == np.float64
    Q = low.basis.astype(np.float64)
    assert np.max(np.abs(Q.T @ Q - np.eye(60))) < 1e-5
    np.testing.assert_allclose(low.alpha, ref.alpha, atol=1e-6)
    np.testing.assert_allclose(low.beta, ref.beta, atol=1e-6)
    # the outliers are found once each (no ghosts), as with the float64 basis
    T = np.diag(low.alpha) + np.diag(low.beta, 1) + np.diag(low.beta, -1)
    theta = np.linalg.eigvalsh(T)
    for outlier in (2, 3, 5, 8, 9):
        assert np.sum(np.abs(theta - outlier) < 1e-6) == 1


def test_cuda_basis_on_the_host_keeps_device_memory_at_o_n():
    """On a GPU: basis_device="host" keeps the device peak at O(n·b) with reorth="full"."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    n, k, P = 2_000_000, 40, 2
    d = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device="cuda")

    class Diag:
        array_namespace = torch
        device = d.device
        shape = (n, n)
        dtype = np.float64
        is_symmetric = True

        def matmat(self, X):
            return d[:, None] * X

    vector = 8 * n * P
    peaks = {}
    for where in ("device", "host"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        spectral.slq(Diag(), k, P, seed=0, basis_device=where)
        torch.cuda.synchronize()
        peaks[where] = torch.cuda.max_memory_allocated() - base
    assert peaks["device"] >= k * vector
    assert peaks["host"] <= 12 * vector, peaks
