"""The core on every array backend: numpy, array-api-strict, torch (CPU) and JAX (CPU).

Each check runs on explicit matrices of the backend and on matrix-free operators that declare
their namespace (the native operator protocol), and compares with the NumPy path, which the
rest of the suite validates against exact references. ``array_api_strict`` proves that the
generic recurrence uses nothing outside the array API standard. CuPy and CUDA tests at the
end run on a GPU and skip without one.
"""

from __future__ import annotations

import contextlib
import copy
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from oracles import eigen, first_converged_step, probe_measure, step_cdf, w1_discrete

import spectral
from spectral import _array_lanczos, _backends
from spectral.matrices import from_spectrum
from spectral.probes import draw_probes

pytest.importorskip("array_api_compat")

BACKENDS = ["numpy", "array_api_strict", "torch", "jax"]


class Backend:
    """Conversion to and from one array library, and its namespace."""

    def __init__(self, name: str):
        self.name = name
        self._stack = contextlib.ExitStack()
        if name == "array_api_strict":
            self.lib = pytest.importorskip("array_api_strict")
        elif name == "torch":
            self.lib = pytest.importorskip("torch")
        elif name == "jax":
            jax = pytest.importorskip("jax")
            self._stack.enter_context(jax.enable_x64(True))
            import jax.numpy as jnp

            self.lib = jnp
        else:
            self.lib = np

    def asarray(self, x):
        x = np.asarray(x)
        if self.name == "numpy":
            return x
        if self.name == "torch":
            return self.lib.from_numpy(np.ascontiguousarray(x))
        return self.lib.asarray(x)

    def is_native(self, x) -> bool:
        import array_api_compat

        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        return array_api_compat.array_namespace(x) is array_api_compat.array_namespace(
            self.asarray(np.zeros(1))
        )

    def namespace(self):
        import array_api_compat

        return array_api_compat.array_namespace(self.asarray(np.zeros(1)))

    def close(self):
        self._stack.close()


@pytest.fixture(params=BACKENDS)
def backend(request):
    b = Backend(request.param)
    yield b
    b.close()


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def foreign(request):
    b = Backend(request.param)
    yield b
    b.close()


class Declared:
    """A matrix-free operator following the native protocol (``array_namespace``, ``device``).

    Records the width and the array type of every block it is asked to multiply.
    """

    def __init__(self, A, backend: Backend, *, dtype="float64", symmetric=True):
        import array_api_compat

        self.A = backend.asarray(np.asarray(A, dtype=dtype))
        self.array_namespace = backend.namespace()
        self.device = array_api_compat.device(self.A)
        self.shape = tuple(int(s) for s in self.A.shape)
        self.dtype = np.dtype(dtype)
        self.calls = []
        if symmetric:
            self.is_symmetric = True

    def matmat(self, X):
        self.calls.append((int(X.shape[1]), type(X).__name__, _backends.dtype_name(X.dtype)))
        return self.array_namespace.matmul(self.A, X)


def make_operator(kind: str, A, backend: Backend):
    if kind == "explicit":
        return backend.asarray(A)
    return Declared(A, backend)


OPERATOR_KINDS = ["explicit", "declared"]


def problem(n=80, seed=0):
    lam = np.concatenate([np.linspace(-1.0, 1.0, n - 3), [1.5, 2.0, 3.0]])
    A, lam = from_spectrum(lam, seed=seed)
    return A, lam


# ---------------------------------------------------------------------------------------
# operator coercion
# ---------------------------------------------------------------------------------------
def test_foreign_arrays_and_declared_operators_stay_native(foreign):
    A, _ = problem(20)
    for obj in (foreign.asarray(A), Declared(A, foreign)):
        op = spectral.aslinearoperator(obj)
        assert isinstance(op, _backends.NativeOperator)
        assert op.native_recurrence
        assert op.shape == (20, 20) and op.dtype == np.float64
        assert op.array_namespace is foreign.namespace()
        X = foreign.asarray(np.eye(20)[:, :3])
        np.testing.assert_allclose(_backends.to_host(op.native_matmat(X)), A[:, :3], atol=1e-15)
        # SciPy's protocol still works, through host copies
        np.testing.assert_allclose(op @ np.ones(20), A @ np.ones(20), atol=1e-14)
    assert spectral.aslinearoperator(np.asarray(A)).__class__.__name__ == "_ExplicitOperator"


def test_explicit_foreign_arrays_are_checked_in_their_namespace(foreign):
    A, _ = problem(12)
    B = A.copy()
    B[0, 1] += 1e-3
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.aslinearoperator(foreign.asarray(B))
    C = A.copy()
    C[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        spectral.aslinearoperator(foreign.asarray(C))
    with pytest.raises(ValueError, match="square"):
        spectral.aslinearoperator(foreign.asarray(np.ones((3, 4))))
    with pytest.raises(ValueError, match="two-dimensional"):
        spectral.aslinearoperator(foreign.asarray(np.ones(3)))
    if foreign.name != "array_api_strict" or hasattr(foreign.lib, "complex128"):
        with pytest.raises(TypeError, match="complex"):
            spectral.aslinearoperator(foreign.asarray(A.astype(np.complex128)))
    integer = foreign.asarray(np.array([[2, 1], [1, 2]], dtype=np.int64))
    op = spectral.aslinearoperator(integer)
    assert op.dtype == np.float64
    m = spectral.slq(integer, 2, 1, seed=0)
    np.testing.assert_allclose(np.sort(m.nodes[0]), [1.0, 3.0], atol=1e-14)


def test_declared_operator_gets_the_randomised_symmetry_test(foreign):
    B = np.triu(np.ones((6, 6)))
    with pytest.warns(spectral.SymmetryWarning, match="does not look symmetric"):
        spectral.aslinearoperator(Declared(B, foreign, symmetric=False))


# ---------------------------------------------------------------------------------------
# the core checks, on every backend
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", OPERATOR_KINDS)
@pytest.mark.parametrize("reorth", ["full", "none"])
def test_gauss_moment_identity(backend, kind, reorth):
    """Σ_j ω_j θ_j^p = vᵀ A^p v for p ≤ 2k − 1, for each probe."""
    A, _ = problem(60)
    k, P, seed = 6, 3, 4
    m = spectral.slq(make_operator(kind, A, backend), k, P, seed=seed, reorth=reorth)
    V = draw_probes(60, P, "sphere", seed)
    AV = V.copy()
    for p in range(2 * k):
        exact = np.einsum("ip,ip->p", V, AV)
        quad = np.sum(m.weights * m.nodes**p, axis=1)
        np.testing.assert_allclose(quad, exact, rtol=0, atol=1e-11 * 3.0**p)
        AV = A @ AV


@pytest.mark.parametrize("kind", OPERATOR_KINDS)
def test_exact_at_full_depth(backend, kind):
    """k = n: the Gauss rule is the probe's spectral measure (nodes λ_i, weights (u_iᵀv)²)."""
    A, lam = problem(24, seed=1)
    lam_, U = eigen(A)
    m = spectral.slq(make_operator(kind, A, backend), 24, 2, seed=3)
    V = draw_probes(24, 2, "sphere", 3)
    for p in range(2):
        pos, mass = probe_measure(lam_, U, V[:, p])
        assert w1_discrete(pos, mass, m.nodes[p], m.weights[p]) < 1e-10
        np.testing.assert_allclose(np.sort(m.nodes[p][m.weights[p] > 1e-12]), lam, atol=1e-10)


@pytest.mark.parametrize("kind", OPERATOR_KINDS)
@pytest.mark.parametrize("reorth", ["full", "none"])
def test_equals_the_numpy_path(backend, kind, reorth):
    """α, β, nodes, weights, densities and bounds equal the NumPy path's to 1e-10."""
    A, lam = problem(200, seed=2)
    ref = spectral.slq(A, 25, 4, seed=7, reorth=reorth)
    m = spectral.slq(make_operator(kind, A, backend), 25, 4, seed=7, reorth=reorth)
    for p in range(4):
        s = min(first_converged_step(ref.alpha[p], ref.beta[p], 25), 25)
        np.testing.assert_allclose(m.alpha[p, :s], ref.alpha[p, :s], rtol=0, atol=1e-10)
        np.testing.assert_allclose(m.beta[p, : s - 1], ref.beta[p, : s - 1], rtol=0, atol=1e-10)
    if reorth == "full":  # no amplification of rounding with reorthogonalisation here
        np.testing.assert_allclose(m.alpha, ref.alpha, rtol=0, atol=1e-10)
        np.testing.assert_allclose(m.nodes, ref.nodes, rtol=0, atol=1e-10)
        np.testing.assert_allclose(m.weights, ref.weights, rtol=0, atol=1e-10)
        interval = (lam[0], lam[-1])
        eb, eb_ref = m.bounds(interval=interval), ref.bounds(interval=interval)
        assert eb.wasserstein == pytest.approx(eb_ref.wasserstein, abs=1e-10)
        assert eb.ks == pytest.approx(eb_ref.ks, abs=1e-10)
        d, d_ref = m.density(sigma=0.1), ref.density(sigma=0.1)
        np.testing.assert_allclose(d.grid, d_ref.grid, atol=1e-10)
        np.testing.assert_allclose(d.values, d_ref.values, atol=1e-9)
    assert m.num_matvecs == ref.num_matvecs and m.dtype == "float64"
    np.testing.assert_array_equal(m.steps, ref.steps)


@pytest.mark.parametrize("kind", OPERATOR_KINDS)
def test_bounds_hold(backend, kind):
    """The certified W₁ / KS bounds and the CDF band contain the true spectrum's CDF."""
    A, lam = problem(300, seed=5)
    n = lam.size
    m = spectral.slq(make_operator(kind, A, backend), 20, 3, seed=1)
    eb = m.bounds(interval=(lam[0], lam[-1]), confidence=0.99)
    assert eb.certified
    nodes, masses = m.nodes.ravel(), (m.weights / 3).ravel()
    assert w1_discrete(lam, np.full(n, 1 / n), nodes, masses) <= eb.wasserstein
    x = np.unique(np.concatenate((lam, nodes)))
    lo, up = eb.cdf_band(x)
    phi = step_cdf(lam, np.full(n, 1 / n), x)
    assert np.all(lo <= phi + 1e-12) and np.all(phi <= up + 1e-12)


def test_density_of_a_foreign_operator(foreign):
    A, lam = problem(150, seed=6)
    m = spectral.slq(foreign.asarray(A), 30, 4, seed=2)
    d = m.density(sigma=0.05, interval=(lam[0], lam[-1]))
    assert np.all(np.isfinite(d.values)) and np.all(d.values >= 0)
    assert np.sum(d.values) * (d.grid[1] - d.grid[0]) == pytest.approx(1.0, abs=0.02)
    ref = spectral.slq(A, 30, 4, seed=2).density(sigma=0.05, interval=(lam[0], lam[-1]))
    np.testing.assert_allclose(d.values, ref.values, atol=1e-9)
    np.testing.assert_allclose(d.bound, ref.bound, atol=1e-9)


@pytest.mark.parametrize("reorth", ["full", "none"])
def test_batched_equals_sequential(backend, reorth):
    """b columns in one run = b runs of one column; one matmat of the active width per step."""
    A, _ = problem(150, seed=3)
    V = draw_probes(150, 4, "sphere", 9)
    op = Declared(A, backend)
    block = spectral.lanczos(op, V, 30, reorth=reorth)
    assert [c[0] for c in op.calls] == [4] * 30
    for c in range(4):
        single = spectral.lanczos(Declared(A, backend), V[:, c], 30, reorth=reorth)
        s = first_converged_step(single.alpha, single.beta, 30)
        np.testing.assert_allclose(block.alpha[c, :s], single.alpha[:s], rtol=0, atol=1e-12)
        np.testing.assert_allclose(block.beta[c, : s - 1], single.beta[: s - 1], atol=1e-12)
    ref = spectral.slq(Declared(A, backend), 30, 5, seed=1, reorth=reorth)
    for batch_size in (1, 2):
        m = spectral.slq(Declared(A, backend), 30, 5, seed=1, reorth=reorth, batch_size=batch_size)
        s = min(first_converged_step(ref.alpha[p], ref.beta[p], 30) for p in range(5))
        np.testing.assert_allclose(m.alpha[:, :s], ref.alpha[:, :s], rtol=0, atol=1e-12)


def test_products_see_the_backend_arrays_in_the_operator_dtype(foreign):
    lam = np.linspace(0.5, 2.0, 40)
    op = Declared(np.diag(lam), foreign, dtype="float32")
    res = spectral.lanczos(op, np.random.default_rng(0).standard_normal(40), 6)
    assert {c[2] for c in op.calls} == {"float32"}
    assert all(foreign.is_native(foreign.asarray(np.zeros(1))) for _ in op.calls)
    assert res.alpha.dtype == np.float64
    ref = spectral.lanczos(np.diag(lam).astype(np.float32), np.ones(40), 6)
    assert spectral.slq(op, 6, 2, seed=0).dtype == "float32"
    assert ref.alpha.dtype == np.float64


# ---------------------------------------------------------------------------------------
# lanczos(): basis, breakdown, errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("basis_device", ["device", "host"])
def test_basis_is_orthonormal_in_the_backend(backend, basis_device):
    A, _ = problem(50, seed=8)
    v0 = backend.asarray(np.arange(50.0) - 20)
    res = spectral.lanczos(backend.asarray(A), v0, 15, basis_device=basis_device)
    Q = _backends.to_host(res.basis)
    if basis_device == "host":
        assert isinstance(res.basis, np.ndarray)
    else:
        assert backend.is_native(res.basis)
    T = np.diag(res.alpha) + np.diag(res.beta, 1) + np.diag(res.beta, -1)
    np.testing.assert_allclose(Q.T @ Q, np.eye(15), atol=1e-12)
    np.testing.assert_allclose(Q.T @ A @ Q, T, atol=1e-12)
    ref = spectral.lanczos(A, np.arange(50.0) - 20, 15)
    np.testing.assert_allclose(res.alpha, ref.alpha, atol=1e-12)
    np.testing.assert_allclose(Q, ref.basis, atol=1e-10)


@pytest.mark.parametrize("reorth", ["full", "none"])
def test_breakdown_and_dropped_columns(backend, reorth):
    """Columns stop at an invariant subspace and leave the block, as on the NumPy path."""
    A = np.diag(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    V = np.ones((6, 3))
    V[:, 0] = [0, 0, 1.0, 0, 0, 0]  # eigenvector: stops after step 1
    V[:, 1] = [1.0, 1.0, 0, 0, 0, 0]  # two eigenvalues: stops after step 2
    op = Declared(A, backend)
    res = spectral.lanczos(op, V, 5, reorth=reorth)
    ref = spectral.lanczos(A, V, 5, reorth=reorth)
    np.testing.assert_array_equal(res.steps, [1, 2, 5])
    assert [c[0] for c in op.calls] == [3, 2, 1, 1, 1]
    np.testing.assert_allclose(res.alpha, ref.alpha, atol=1e-14)
    np.testing.assert_allclose(res.beta, ref.beta, atol=1e-14)
    np.testing.assert_allclose(res.residual, ref.residual, atol=1e-14)
    assert res.num_matvecs == ref.num_matvecs == 3 + 2 + 1 + 1 + 1
    if reorth == "full":
        Q = _backends.to_host(res.basis)
        np.testing.assert_allclose(Q, ref.basis, atol=1e-14)


def test_non_finite_products_and_wrong_shapes_are_reported(foreign):
    class Bad(Declared):
        def __init__(self, A, backend, *, nan_at=None, shape=None):
            super().__init__(A, backend)
            self.nan_at, self.bad_shape, self.step = nan_at, shape, 0

        def matmat(self, X):
            self.step += 1
            Y = super().matmat(X)
            if self.step == self.nan_at:
                return Y * float("nan")
            if self.bad_shape:
                return self.array_namespace.zeros(self.bad_shape, dtype=Y.dtype)
            return Y

    A, _ = problem(30)
    with pytest.raises(FloatingPointError, match=r"30 non-finite value.*step 3"):
        spectral.lanczos(Bad(A, foreign, nan_at=3), np.ones(30), 10)
    with pytest.raises(FloatingPointError, match="step 1"):
        spectral.slq(Bad(A, foreign, nan_at=1), 10, 2, seed=0, reorth="none")
    with pytest.raises(ValueError, match=r"shape \(29, 1\) at Lanczos step 1"):
        spectral.lanczos(Bad(A, foreign, shape=(29, 1)), np.ones(30), 10)


def test_start_vector_checks(foreign):
    A, _ = problem(10)
    with pytest.raises(ValueError, match="zero"):
        spectral.lanczos(foreign.asarray(A), foreign.asarray(np.zeros(10)), 3)
    with pytest.raises(ValueError, match="shape"):
        spectral.lanczos(foreign.asarray(A), np.ones(9), 3)
    with pytest.raises(ValueError, match="basis_dtype"):
        spectral.lanczos(foreign.asarray(A), np.ones(10), 3, basis_dtype="float16")
    with pytest.raises(ValueError, match="basis_device"):
        spectral.slq(foreign.asarray(A), 3, basis_device="gpu")


def test_no_host_round_trip_per_step(foreign, monkeypatch):
    """Per step only α, β (2b numbers) cross to the host; each probe block crosses once."""
    A, _ = problem(300)
    sizes_out, sizes_in = [], []
    to_host, to_device = _backends.to_host, _backends.to_device

    def spy_host(x):
        sizes_out.append(int(np.prod(x.shape)))
        return to_host(x)

    def spy_device(xp, x, device, dtype=None):
        sizes_in.append(int(np.size(x)))
        return to_device(xp, x, device, dtype)

    monkeypatch.setattr(_array_lanczos, "to_host", spy_host)
    monkeypatch.setattr(_array_lanczos, "to_device", spy_device)
    monkeypatch.setattr(sys.modules["spectral.slq"], "to_device", spy_device)
    for reorth in ("full", "none"):
        sizes_out.clear()
        sizes_in.clear()
        spectral.slq(foreign.asarray(A), 20, 4, seed=0, reorth=reorth, batch_size=2)
        assert len(sizes_out) == 2 * 20 and max(sizes_out) == 2 * 2 + 1
        assert sizes_in == [300 * 2, 300 * 2]


# ---------------------------------------------------------------------------------------
# backend specifics
# ---------------------------------------------------------------------------------------
def test_jax_without_x64_runs_the_recurrence_on_the_host():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    A, _ = problem(40)
    with jax.enable_x64(False):
        J = jnp.asarray(A.astype(np.float32))
        op = spectral.aslinearoperator(J)
        assert isinstance(op, _backends.NativeOperator) and not op.native_recurrence
        m = spectral.slq(J, 10, 2, seed=0)
    ref = spectral.slq(A.astype(np.float32), 10, 2, seed=0)
    assert m.dtype == "float32"
    np.testing.assert_allclose(m.alpha, ref.alpha, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Sparse")
def test_torch_sparse_and_low_precision_tensors():
    torch = pytest.importorskip("torch")
    A = sp.random(200, 200, density=0.02, random_state=0)
    A = (A + A.T).tocoo()
    dense = A.toarray()
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    coo = torch.sparse_coo_tensor(idx, torch.from_numpy(A.data), (200, 200))
    ref = spectral.slq(dense, 20, 3, seed=0)
    for T in (coo, coo.to_sparse_csr()):
        m = spectral.slq(T, 20, 3, seed=0)
        np.testing.assert_allclose(m.alpha, ref.alpha, atol=1e-10)
    asym = coo.to_dense()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.aslinearoperator(asym.to_sparse_coo())
    half = torch.from_numpy(dense).to(torch.bfloat16)
    op = spectral.aslinearoperator(half)
    assert op.dtype == np.float32 and op.xp_dtype == torch.bfloat16
    m = spectral.slq(half, 10, 2, seed=0)
    assert m.dtype == "float32" and np.all(np.isfinite(m.nodes))


def test_torch_tensor_with_grad_is_detached():
    torch = pytest.importorskip("torch")
    A, _ = problem(30)
    T = torch.from_numpy(A).requires_grad_(True)
    m = spectral.slq(T, 10, 2, seed=0)
    np.testing.assert_allclose(m.alpha, spectral.slq(A, 10, 2, seed=0).alpha, atol=1e-12)


# ---------------------------------------------------------------------------------------
# the adapters' native path
# ---------------------------------------------------------------------------------------
def _torch_problem(torch, dropout=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)]
    model = torch.nn.Sequential(*layers).double().eval()
    x, y = torch.randn(60, 5, dtype=torch.float64), torch.randint(0, 3, (60,))
    return model, torch.nn.CrossEntropyLoss(), [(x[:25], y[:25]), (x[25:], y[25:])]


def test_torch_hessian_native_path_matches_the_host_path():
    torch = pytest.importorskip("torch")
    from spectral.adapters import torch as spt

    model, loss, data = _torch_problem(torch)
    H = spt.hessian(model, loss, data)
    Hn = spt.hessian(model, loss, data, native=True)
    assert not H.native and H.array_namespace is None  # CPU default: host path
    assert Hn.native and Hn.array_namespace is not None and Hn.device == torch.device("cpu")
    assert spectral.aslinearoperator(H) is H
    op = spectral.aslinearoperator(Hn)
    assert isinstance(op, _backends.NativeOperator) and op.native_recurrence
    V = np.random.default_rng(0).standard_normal((H.shape[0], 3))
    out = Hn.native_matmat(torch.from_numpy(V))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), H @ V, atol=1e-12)
    np.testing.assert_allclose(Hn @ V, H @ V, atol=1e-12)  # SciPy protocol unchanged
    a = spectral.slq(H, 20, 3, seed=0)
    passes = H.num_passes
    b = spectral.slq(Hn, 20, 3, seed=0)
    np.testing.assert_allclose(b.alpha, a.alpha, atol=1e-10)
    np.testing.assert_allclose(b.nodes, a.nodes, atol=1e-10)
    assert Hn.num_passes == passes  # one pass per step on both paths
    res = spectral.lanczos(Hn, np.ones(H.shape[0]), 10)
    assert isinstance(res.basis, torch.Tensor)


def test_torch_native_path_runs_the_determinism_guard():
    torch = pytest.importorskip("torch")
    from spectral.adapters import torch as spt

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2).double()

        def forward(self, x):
            return self.lin(x) * (1 + 0.1 * torch.rand(()))

    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    H = spt.hessian(Noisy().eval(), torch.nn.CrossEntropyLoss(), [(x, y)], native=True)
    with pytest.raises(spt.DeterminismError, match="differ"):
        spectral.slq(H, 5, 2, seed=0)


def test_jax_hessian_native_path_matches_the_host_path():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from spectral.adapters import jax as spj

    def loss_fn(p, batch):
        x, y = batch
        return jnp.mean((jnp.tanh(x @ p["w"]) @ p["v"] - y) ** 2)

    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(rng.normal(size=(4, 6))), "v": jnp.asarray(rng.normal(size=6))}
        data = [(rng.normal(size=(20, 4)), rng.normal(size=20))]
        H = spj.hessian(loss_fn, params, data)
        Hn = spj.hessian(loss_fn, params, data, native=True)
        assert not H.native and H.array_namespace is None  # CPU default: host path
        assert Hn.native and Hn.array_namespace is jnp
        assert isinstance(spectral.aslinearoperator(Hn), _backends.NativeOperator)
        a = spectral.slq(H, 15, 3, seed=0)
        b = spectral.slq(Hn, 15, 3, seed=0)
        np.testing.assert_allclose(b.alpha, a.alpha, atol=1e-10)
        res = spectral.lanczos(Hn, np.ones(30), 8)
        assert isinstance(res.basis, jax.Array)
    with jax.enable_x64(False):
        params32 = {"w": jnp.ones((4, 6), dtype=jnp.float32), "v": jnp.ones(6, jnp.float32)}
        with pytest.raises(ValueError, match="jax_enable_x64"):
            spj.hessian(loss_fn, params32, data, native=True)
        assert not spj.hessian(loss_fn, params32, data).native


# ---------------------------------------------------------------------------------------
# GPU: CuPy and CUDA tensors (skipped without a GPU; run for real on one)
# ---------------------------------------------------------------------------------------
def _cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (no GPU stack)")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CUDA driver missing
        pytest.skip(f"no usable CUDA device: {exc}")
    return cupy


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return torch


@pytest.mark.parametrize("reorth", ["full", "none"])
def test_cupy_dense_sparse_and_linear_operator(reorth):
    cupy = _cupy()
    import cupyx.scipy.sparse as csp
    import cupyx.scipy.sparse.linalg as csla

    A, _ = problem(400, seed=4)
    ref = spectral.slq(A, 30, 4, seed=0, reorth=reorth)
    Ad = cupy.asarray(A)
    S = csp.csr_matrix(Ad)
    L = csla.LinearOperator(
        A.shape, matvec=lambda x: Ad @ x, matmat=lambda X: Ad @ X, dtype=A.dtype
    )
    for obj in (Ad, S, L):
        op = spectral.aslinearoperator(obj, check_symmetry=False)
        assert op.native_recurrence
        m = spectral.slq(obj, 30, 4, seed=0, reorth=reorth, check_symmetry=False)
        s = min(first_converged_step(ref.alpha[p], ref.beta[p], 30) for p in range(4))
        np.testing.assert_allclose(m.alpha[:, :s], ref.alpha[:, :s], atol=1e-10)
    res = spectral.lanczos(Ad, np.ones(400), 20)
    assert isinstance(res.basis, cupy.ndarray)
    host = spectral.lanczos(Ad, np.ones(400), 20, basis_device="host", basis_dtype="float32")
    assert isinstance(host.basis, np.ndarray) and host.basis.dtype == np.float32
    np.testing.assert_allclose(host.alpha, res.alpha, atol=1e-6)
    B = A.copy()
    B[0, 1] += 1e-3
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.aslinearoperator(csp.csr_matrix(cupy.asarray(B)))


def test_cuda_tensors_and_native_torch_hessian():
    torch = _cuda_torch()
    from spectral.adapters import torch as spt

    A, _ = problem(300, seed=2)
    ref = spectral.slq(A, 25, 4, seed=0)
    m = spectral.slq(torch.from_numpy(A).cuda(), 25, 4, seed=0)
    np.testing.assert_allclose(m.alpha, ref.alpha, atol=1e-10)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model = model.double().eval()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    H_cpu = spt.hessian(model, torch.nn.CrossEntropyLoss(), [(x, y)])
    a = spectral.slq(H_cpu, 20, 3, seed=0)
    H_gpu = spt.hessian(copy.deepcopy(model).cuda(), torch.nn.CrossEntropyLoss(), [(x, y)])
    assert H_gpu.native and not H_cpu.native
    assert isinstance(spectral.aslinearoperator(H_gpu), _backends.NativeOperator)
    b = spectral.slq(H_gpu, 20, 3, seed=0)
    np.testing.assert_allclose(b.alpha, a.alpha, atol=1e-9)
    for options in ({"basis_dtype": "float32"}, {"basis_device": "host"}):
        c = spectral.slq(H_gpu, 20, 3, seed=0, **options)
        np.testing.assert_allclose(c.nodes, a.nodes, atol=1e-6)
    off = spt.hessian(
        copy.deepcopy(model).cuda(), torch.nn.CrossEntropyLoss(), [(x, y)], native=False
    )
    assert not off.native and spectral.aslinearoperator(off) is off
    np.testing.assert_allclose(spectral.slq(off, 20, 3, seed=0).alpha, a.alpha, atol=1e-9)
