"""Lanczos: the recurrence identities, batching, breakdown, float64 arithmetic, capping."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import assert_same_recurrence
from strategies import problems

import spectral
from spectral.matrices import from_spectrum
from spectral.probes import draw_probes


def tridiagonal(alpha, beta):
    return np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)


class Recorder:
    """A duck-typed symmetric operator recording every product it is asked for."""

    def __init__(self, A, *, with_matmat=True, dtype=np.float64):
        self.A = np.asarray(A)
        self.shape = self.A.shape
        self.dtype = np.dtype(dtype)
        self.is_symmetric = True
        self.calls = []  # ("matvec" | "matmat", input dtype, number of columns)
        if with_matmat:
            self.matmat = self._matmat

    def matvec(self, x):
        self.calls.append(("matvec", x.dtype, 1))
        return (self.A @ x).astype(self.dtype)

    def _matmat(self, X):
        self.calls.append(("matmat", X.dtype, X.shape[1]))
        return (self.A @ X).astype(self.dtype)


@settings(max_examples=40, deadline=None)
@given(problem=problems(min_n=2, max_n=120), num_steps=st.integers(1, 40))
def test_lanczos_relation_and_orthonormal_basis(problem, num_steps):
    """A Q = Q T + β_k q_{k+1} e_kᵀ, QᵀQ = I, QᵀAQ = T (reorth full)."""
    A = problem.A
    v0 = draw_probes(problem.n, 1, "sphere", problem.seed)[:, 0]
    res = spectral.lanczos(A, v0, num_steps)
    s = res.steps
    Q = res.basis[:, :s]
    T = tridiagonal(res.alpha[:s], res.beta[: s - 1])
    norm = max(np.abs(np.linalg.eigvalsh(A)).max(), 1e-300)
    np.testing.assert_allclose(Q[:, 0], v0 / np.linalg.norm(v0), atol=1e-15)
    np.testing.assert_allclose(Q.T @ Q, np.eye(s), atol=1e-12)
    np.testing.assert_allclose(Q.T @ A @ Q, T, atol=1e-12 * norm)
    R = A @ Q - Q @ T  # zero except the last column, which is β_k q_{k+1} ⟂ Q
    np.testing.assert_allclose(R[:, :-1], 0.0, atol=1e-12 * norm)
    assert np.linalg.norm(R[:, -1]) == pytest.approx(res.residual, rel=1e-6, abs=1e-12 * norm)
    np.testing.assert_allclose(Q.T @ R[:, -1], 0.0, atol=1e-12 * norm)
    assert np.all(res.beta[: s - 1] > 0)


@settings(max_examples=40, deadline=None)
@given(
    problem=problems(max_n=120),
    num_steps=st.integers(1, 40),
    b=st.integers(1, 5),
    reorth=st.sampled_from(["full", "none"]),
)
def test_batched_equals_sequential(problem, num_steps, b, reorth):
    """b columns in one run (one matmat per step) = b runs of one column, to 1e-12."""
    V = draw_probes(problem.n, b, "sphere", problem.seed)
    op = Recorder(problem.A)
    block = spectral.lanczos(op, V, num_steps, reorth=reorth)
    k = min(num_steps, problem.n)
    assert block.alpha.shape == (b, k) and block.beta.shape == (b, k - 1)
    assert [c[0] for c in op.calls] == ["matmat"] * len(op.calls)  # one matmat per step
    assert len(op.calls) == int(np.max(block.steps))
    assert sum(c[2] for c in op.calls) == block.num_matvecs == int(np.sum(block.steps))
    for c in range(b):
        assert_same_recurrence(
            problem.A, V[:, c], block.alpha[c], block.beta[c], block.steps[c], reorth
        )


def test_batched_equals_sequential_fixed_well_conditioned():
    """A fixed case where all columns run the full k steps: alpha/beta agree to 1e-12."""
    A, _ = from_spectrum(np.linspace(-1.0, 1.0, 150) ** 3, seed=4)
    V = draw_probes(150, 4, "sphere", 9)
    for reorth in ("full", "none"):
        block = spectral.lanczos(A, V, 40, reorth=reorth)
        for c in range(4):
            single = spectral.lanczos(A, V[:, c], 40, reorth=reorth)
            np.testing.assert_allclose(block.alpha[c], single.alpha, rtol=0, atol=1e-12)
            np.testing.assert_allclose(block.beta[c], single.beta, rtol=0, atol=1e-12)


def test_output_shapes_one_and_many_columns():
    A, _ = from_spectrum(np.arange(10.0), seed=0)
    one = spectral.lanczos(A, np.ones(10), 4)
    assert one.alpha.shape == (4,) and one.beta.shape == (3,) and one.basis.shape == (10, 4)
    assert isinstance(one.residual, float) and isinstance(one.steps, int)
    many = spectral.lanczos(A, np.ones((10, 3)), 4)
    assert many.alpha.shape == (3, 4) and many.beta.shape == (3, 3)
    assert many.basis.shape == (3, 10, 4) and many.residual.shape == (3,)
    none = spectral.lanczos(A, np.ones((10, 3)), 4, reorth="none")
    assert none.basis is None and none.reorth == "none"
    np.testing.assert_allclose(none.alpha, many.alpha, atol=1e-12)  # no loss yet at k = 4


def test_num_steps_above_n_is_capped():
    A, lam = from_spectrum(np.linspace(1.0, 2.0, 7), seed=1)
    res = spectral.lanczos(A, np.arange(1.0, 8.0), 50)
    assert res.alpha.shape == (7,) and res.beta.shape == (6,)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(tridiagonal(res.alpha, res.beta)), lam, atol=1e-12
    )
    m = spectral.slq(A, 50, 2, seed=0)
    assert m.nodes.shape == (2, 7) and m.num_steps == 7


def test_breakdown_stops_a_column_early_without_nan():
    """v0 = eigenvector: invariant subspace after one step; a 3-eigenvalue mix after three."""
    lam = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 5.0])
    A = np.diag(lam)
    V = np.zeros((6, 2))
    V[5, 0] = 2.0  # eigenvector of 5
    V[:, 1] = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # touches 1, 2 and 3 only
    res = spectral.lanczos(A, V, 6)
    np.testing.assert_array_equal(res.steps, [1, 3])
    assert res.alpha[0, 0] == 5.0 and np.all(res.alpha[0, 1:] == 0) and np.all(res.beta[0] == 0)
    assert np.all(res.alpha[1, 3:] == 0) and np.all(res.beta[1, 2:] == 0)
    assert np.all(np.isfinite(res.alpha)) and np.all(np.isfinite(res.basis))
    assert np.all(res.residual <= 1e-14)
    nodes = np.linalg.eigvalsh(tridiagonal(res.alpha[1, :3], res.beta[1, :2]))
    np.testing.assert_allclose(nodes, [1.0, 2.0, 3.0], atol=1e-14)
    assert res.num_matvecs == 1 + 3


def test_broken_down_columns_leave_the_block():
    """After a column breaks down, later matmats get only the active columns."""
    A = np.diag(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    V = np.ones((6, 3))
    V[:, 0] = [0, 0, 1.0, 0, 0, 0]  # eigenvector: stops after step 1
    V[:, 1] = [1.0, 1.0, 0, 0, 0, 0]  # two eigenvalues: stops after step 2
    op = Recorder(A)
    res = spectral.lanczos(op, V, 5)
    np.testing.assert_array_equal(res.steps, [1, 2, 5])
    assert [c[2] for c in op.calls] == [3, 2, 1, 1, 1]


@pytest.mark.parametrize("op_dtype", [np.float32, np.float16])
def test_recurrence_runs_in_float64_for_low_precision_operators(op_dtype):
    """The operator sees its own dtype; alpha/beta/basis are float64, near the float64 run."""
    lam = np.linspace(0.5, 2.0, 40)
    A64 = np.diag(lam)
    op = Recorder(A64.astype(op_dtype), dtype=op_dtype)
    v0 = np.random.default_rng(0).standard_normal(40)
    res = spectral.lanczos(op, v0, 6)
    ref = spectral.lanczos(A64.astype(op_dtype).astype(np.float64), v0, 6)
    assert all(c[1] == np.dtype(op_dtype) for c in op.calls)
    assert res.alpha.dtype == res.beta.dtype == res.basis.dtype == np.float64
    tol = 10 * np.finfo(op_dtype).eps * 2.0
    np.testing.assert_allclose(res.alpha, ref.alpha, atol=tol)
    np.testing.assert_allclose(res.basis.T @ res.basis, np.eye(6), atol=1e-12)
    m = spectral.slq(op, 6, 2, seed=0)
    assert m.dtype == np.dtype(op_dtype).name and m.nodes.dtype == np.float64


def test_integer_and_boolean_matrices_are_multiplied_in_float64():
    A = np.array([[2, 1, 0], [1, 2, 1], [0, 1, 2]], dtype=np.int64)
    res = spectral.lanczos(A, np.ones(3), 3)  # symmetric start: misses the eigenvalue 2
    assert res.steps == 2 and res.alpha.dtype == np.float64
    nodes = np.linalg.eigvalsh(tridiagonal(res.alpha[:2], res.beta[:1]))
    np.testing.assert_allclose(nodes, [2 - np.sqrt(2), 2 + np.sqrt(2)], atol=1e-14)
    m = spectral.slq(np.eye(4, dtype=bool), 3, 1, seed=0)
    assert m.dtype == "float64" and m.nodes[0, 0] == pytest.approx(1.0) and m.steps[0] == 1


def test_progress_bar_gives_the_same_result(capsys):
    A, _ = from_spectrum(np.linspace(-1, 1, 30), seed=0)
    v0 = np.ones(30)
    quiet = spectral.lanczos(A, v0, 10)
    loud = spectral.lanczos(A, v0, 10, progress=True)
    np.testing.assert_array_equal(quiet.alpha, loud.alpha)
    assert "Lanczos" in capsys.readouterr().err
    m = spectral.slq(A, 10, 2, seed=0, progress=True)
    assert "Lanczos" in capsys.readouterr().err
    np.testing.assert_array_equal(m.alpha, spectral.slq(A, 10, 2, seed=0).alpha)


def test_sparse_and_operator_inputs_give_the_dense_result():
    A, _ = from_spectrum(np.linspace(-1, 3, 25), seed=3)
    v0 = np.arange(25.0) - 12
    dense = spectral.lanczos(A, v0, 8)
    for other in (
        sp.csr_matrix(A),
        sp.csr_array(A),
        spectral.aslinearoperator(A),
        Recorder(A),
        Recorder(A, with_matmat=False),
    ):
        res = spectral.lanczos(other, v0, 8)
        np.testing.assert_allclose(res.alpha, dense.alpha, atol=1e-13)
        np.testing.assert_allclose(res.beta, dense.beta, atol=1e-13)


def test_second_gram_schmidt_pass_runs_when_the_first_cancels(monkeypatch):
    """DGKS: a product with large components along old Lanczos vectors gets a second pass.

    A symmetric operator with full reorthogonalisation never needs it (its products have
    only rounding-level components along the basis). A non-symmetric one does: ``A q_j``
    then points mostly into the span of the earlier vectors, one classical Gram–Schmidt
    pass leaves ``O(ε ‖A q_j‖)`` there — large next to the small remainder — and only the
    second pass makes the basis orthonormal again.
    """
    import importlib

    import scipy.sparse.linalg as sla

    lz = importlib.import_module("spectral.lanczos")
    blas = lz._blas
    calls = {"dgemv": 0}

    class Counting:
        def __getattr__(self, name):
            return getattr(blas, name)

        def dgemv(self, *args, **kwargs):
            calls["dgemv"] += 1
            return blas.dgemv(*args, **kwargs)

    monkeypatch.setattr(lz, "_blas", Counting())
    n, k = 80, 30
    rng = np.random.default_rng(4)
    M = np.diag(np.linspace(1.0, 2.0, n)) + 1e3 * np.tril(rng.standard_normal((n, n)), -1)
    op = sla.LinearOperator((n, n), matvec=lambda x: M @ x, matmat=lambda X: M @ X,
                            dtype=np.float64)
    with pytest.warns(spectral.SymmetryWarning):
        res = spectral.lanczos(op, rng.standard_normal(n), k, reorth="full")
    s = int(np.atleast_1d(res.steps)[0])
    Q = np.asarray(res.basis).reshape(n, -1)[:, :s]
    assert calls["dgemv"] > 2 * (s - 1)  # some steps made the second pass
    np.testing.assert_allclose(Q.T @ Q, np.eye(s), atol=1e-12)
