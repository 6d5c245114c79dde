"""Tests of the JAX adapter against JAX's own dense Hessians (float64, 1e-10)."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed")
# Float64 models need JAX's 64-bit mode; switch it on before any JAX array is created.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from scipy.sparse.linalg import eigsh  # noqa: E402

from spectral.adapters import jax as spj  # noqa: E402
from spectral.adapters._common import DeterminismError, HessianOperator  # noqa: E402

SIZES = (64, 64, 17)  # uneven batches of the N = 145 samples
N = sum(SIZES)
ATOL = 1e-10


def _load_digits_mlp():
    """Import the shared tests/adapters/digits_mlp.py (tests are not a package)."""
    name = "digits_mlp"
    if name not in sys.modules:
        path = Path(__file__).with_name("digits_mlp.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- tiny models -----------------------------------------------------------------------------


def _cross_entropy(logits, y):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def _normalise(z, params, norm, stats, axes):
    """Batch-norm-like layer: batch statistics, fixed population statistics, or none."""
    if norm == "none":
        return z
    if norm == "batch":
        mean = jnp.mean(z, axis=axes, keepdims=True)
        var = jnp.var(z, axis=axes, keepdims=True)
    else:
        mean, var = stats
    return params["gamma"] * (z - mean) / jnp.sqrt(var + 1e-5) + params["beta"]


def _mlp_features(params, x):
    return x @ params["W1"] + params["b1"]


def _cnn_features(params, x):
    z = jax.lax.conv_general_dilated(
        x,
        params["K"],
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return z + params["c"][None, :, None, None]


@functools.cache
def make_problem(kind="mlp", norm="none", dtype=np.float64, seed=0):
    """Return ``loss_fn(params, (x, y))``, params, x, y for a tiny classifier.

    ``kind``: "mlp" (4 -> 6 tanh -> 3) or "cnn" (1x6x6 -> conv 2x3x3, tanh -> 3).
    ``norm``: "none", "batch" (statistics of the batch) or "population" (fixed statistics).
    Cached: the same ``loss_fn`` object lets operators share their compiled products.
    """
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        x = rng.normal(size=(N, 4))
        params = {
            "W1": rng.normal(scale=0.5, size=(4, 6)),
            "b1": rng.normal(scale=0.1, size=6),
            "W2": rng.normal(scale=0.5, size=(6, 3)),
            "b2": rng.normal(scale=0.1, size=3),
        }
        features, axes, shape = _mlp_features, (0,), (6,)
    else:
        x = rng.normal(size=(N, 1, 6, 6))
        params = {
            "K": rng.normal(scale=0.4, size=(2, 1, 3, 3)),
            "c": rng.normal(scale=0.1, size=2),
            "W2": rng.normal(scale=0.2, size=(32, 3)),
            "b2": rng.normal(scale=0.1, size=3),
        }
        features, axes, shape = _cnn_features, (0, 2, 3), (1, 2, 1, 1)
    if norm != "none":
        params["gamma"] = 1.0 + rng.normal(scale=0.1, size=shape)
        params["beta"] = rng.normal(scale=0.1, size=shape)
    y = rng.integers(0, 3, size=N)
    params = {k: jnp.asarray(v, dtype=dtype) for k, v in params.items()}
    x = np.asarray(x).astype(dtype)
    stats = None
    if norm == "population":  # fixed statistics, e.g. running averages from training
        z = np.asarray(features(params, jnp.asarray(x)), dtype=np.float64)
        stats = (
            jnp.asarray(z.mean(axis=axes, keepdims=True) + 0.1, dtype=dtype),
            jnp.asarray(z.var(axis=axes, keepdims=True) * 1.2, dtype=dtype),
        )

    def loss_fn(params, batch):
        xb, yb = batch
        h = jnp.tanh(_normalise(features(params, xb), params, norm, stats, axes))
        logits = h.reshape(h.shape[0], -1) @ params["W2"] + params["b2"]
        return _cross_entropy(logits, yb)

    return loss_fn, params, x, y


def split(x, y, sizes=SIZES):
    edges = np.cumsum((0, *sizes))
    return [(x[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]


def dense_hessian(loss_fn, params, batch):
    """JAX's own dense Hessian of ``loss_fn(., batch)`` on the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), batch)))(flat))


def to_dense(H):
    return H @ np.eye(H.shape[0])


@functools.cache
def reference(kind="mlp", norm="none"):
    """Dense full-data Hessian of ``make_problem(kind, norm)`` (cached: compiling is slow)."""
    loss_fn, params, x, y = make_problem(kind, norm)
    return dense_hessian(loss_fn, params, (x, y))


@functools.cache
def operator_dense(kind="mlp", norm="none", sizes=SIZES):
    """Dense matrix of the adapter's operator for ``make_problem(kind, norm)`` (cached)."""
    loss_fn, params, x, y = make_problem(kind, norm)
    return to_dense(spj.hessian(loss_fn, params, split(x, y, sizes)))


# -- exactness against jax.hessian -------------------------------------------------------------
# -- exactness against jax.hessian -------------------------------------------------------------
# Compiling dominates the run time, so most tests use one batch shape (one compilation) and
# reuse the cached dense matrices above; the uneven [64, 64, 17] split is tested where it matters.

EQUAL = (29,) * 5  # five equal batches: one batch shape, one compilation


@pytest.mark.parametrize(
    ("kind", "norm", "sizes"),
    [
        ("mlp", "none", SIZES),
        ("mlp", "population", SIZES),
        ("cnn", "none", (N,)),  # one batch shape: compiling the CNN twice is slow
        ("cnn", "population", SIZES),
    ],
)
def test_operator_equals_dense_hessian(kind, norm, sizes):
    np.testing.assert_allclose(
        operator_dense(kind, norm, sizes), reference(kind, norm), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_batch_statistics_single_batch_equals_dense_hessian(kind):
    np.testing.assert_allclose(
        operator_dense(kind, "batch", (N,)), reference(kind, "batch"), rtol=0, atol=ATOL
    )


def test_batch_statistics_hessian_depends_on_batching():
    # With batch statistics the loss is not a sum of per-sample losses: the operator is the
    # sample-weighted mean of the per-batch Hessians, which differs from the one-batch Hessian.
    loss_fn, params, x, y = make_problem("mlp", "batch")
    flat, unravel = ravel_pytree(params)
    batch_hessian = jax.jit(lambda f, b: jax.hessian(lambda g: loss_fn(unravel(g), b))(f))
    batches = split(x, y, EQUAL)
    expected = sum(np.asarray(batch_hessian(flat, b)) for b in batches) / len(batches)
    dense = operator_dense("mlp", "batch", EQUAL)
    np.testing.assert_allclose(dense, expected, rtol=0, atol=ATOL)
    assert np.max(np.abs(dense - reference("mlp", "batch"))) > 1e-3


def test_uneven_batches_equal_single_batch():
    np.testing.assert_allclose(
        operator_dense("mlp", "none"), operator_dense("mlp", "none", (N,)), rtol=0, atol=ATOL
    )


def test_reduction_sum_is_n_times_mean():
    loss_fn, params, x, y = make_problem("mlp")
    data = split(x, y)
    total = to_dense(spj.hessian(loss_fn, params, data, reduction="sum"))
    np.testing.assert_allclose(total, N * operator_dense("mlp", "none"), rtol=1e-12, atol=ATOL)
    g_mean = spj.gradient(loss_fn, params, data)
    g_sum = spj.gradient(loss_fn, params, data, reduction="sum")
    np.testing.assert_allclose(g_sum, N * g_mean, rtol=1e-12, atol=ATOL)


def test_unused_parameter_gives_zero_rows_and_columns():
    loss_fn, params, x, y = make_problem("mlp")
    params = {**params, "unused": jnp.ones((2, 3))}  # sorts last in the flat ordering
    dense = to_dense(spj.hessian(loss_fn, params, [(x, y)]))
    unused = spj.flatten(
        {**{k: jnp.zeros_like(v) for k, v in params.items()}, "unused": jnp.ones((2, 3))}
    ).astype(bool)
    assert unused.sum() == 6 and np.all(unused[-6:])
    assert np.all(dense[unused] == 0) and np.all(dense[:, unused] == 0)
    np.testing.assert_allclose(dense[:-6, :-6], reference("mlp"), rtol=0, atol=ATOL)
    g = spj.gradient(loss_fn, params, [(x, y)])
    assert np.all(g[unused] == 0)


def test_data_none_uses_loss_as_is():
    loss_fn, params, x, y = make_problem("mlp")
    H = spj.hessian(lambda p: loss_fn(p, (x, y)), params)
    np.testing.assert_allclose(to_dense(H), reference("mlp"), rtol=0, atol=ATOL)
    assert H.num_samples == 1


def test_custom_vjp_falls_back_to_reverse_over_reverse():
    # A custom_vjp whose backward rule calls another custom_vjp cannot be differentiated in
    # forward mode; "auto" must switch to reverse-over-reverse.
    @jax.custom_vjp
    def inner(z):
        return jnp.cos(z)

    inner.defvjp(lambda z: (jnp.cos(z), z), lambda z, ct: (-ct * jnp.sin(z),))

    @jax.custom_vjp
    def act(z):
        return jnp.sin(z)

    act.defvjp(lambda z: (jnp.sin(z), z), lambda z, ct: (ct * inner(z),))

    _, params, x, y = make_problem("mlp")

    def loss_custom(p, batch):
        xb, yb = batch
        return _cross_entropy(act(xb @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"], yb)

    H = spj.hessian(loss_custom, params, [(x, y)])
    flat, unravel = ravel_pytree(params)
    expected = jax.jit(jax.jacrev(jax.jacrev(lambda f: loss_custom(unravel(f), (x, y)))))(flat)
    np.testing.assert_allclose(to_dense(H), np.asarray(expected), rtol=0, atol=ATOL)
    assert H.mode == "reverse-over-reverse"
    forced = spj.hessian(loss_custom, params, [(x, y)], mode="forward-over-reverse")
    with pytest.raises(TypeError, match="forward-mode"):
        forced @ np.ones(H.shape[0])


def test_reverse_over_reverse_mode_matches():
    loss_fn, params, x, y = make_problem("cnn")
    H = spj.hessian(loss_fn, params, [(x, y)], mode="reverse-over-reverse")
    np.testing.assert_allclose(to_dense(H), reference("cnn"), rtol=0, atol=ATOL)


# -- gradient, flat helpers, matmat, eigsh -----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "norm", "sizes"), [("mlp", "none", SIZES), ("cnn", "batch", (N,))]
)
def test_gradient_equals_jax_grad(kind, norm, sizes):
    loss_fn, params, x, y = make_problem(kind, norm)
    g = spj.gradient(loss_fn, params, split(x, y, sizes))
    assert g.dtype == np.float64 and g.shape == (ravel_pytree(params)[0].size,)
    expected = jax.grad(loss_fn)(params, (x, y))
    np.testing.assert_allclose(g, spj.flatten(expected), rtol=0, atol=1e-12)
    tree = spj.unflatten(g, params)
    for key in params:
        np.testing.assert_allclose(tree[key], expected[key], rtol=0, atol=1e-12)


def test_flatten_unflatten_round_trip():
    _, params, _, _ = make_problem("cnn", "batch")
    flat = spj.flatten(params)
    assert flat.dtype == np.float64 and flat.flags.writeable
    back = spj.unflatten(flat, params)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for key in params:
        assert back[key].shape == params[key].shape and back[key].dtype == params[key].dtype
        np.testing.assert_array_equal(back[key], params[key])
    H = spj.hessian(lambda p: jnp.sum(p["c"] ** 2), params)
    np.testing.assert_array_equal(H.flatten(H.unflatten(flat)), flat)
    with pytest.raises(ValueError, match="shape"):
        spj.unflatten(flat[:-1], params)


def test_matmat_equals_columnwise_matvec():
    loss_fn, params, x, y = make_problem("mlp", "population")
    H = spj.hessian(loss_fn, params, [(x, y)])
    assert isinstance(H, HessianOperator) and H.dtype == np.float64
    assert H.shape == (ravel_pytree(params)[0].size,) * 2
    V = np.random.default_rng(1).normal(size=(H.shape[0], 5))
    block = H @ V
    assert block.flags.writeable  # spectral.lanczos updates products in place
    assert (H.num_passes, H.num_hvps) == (2, 10)  # the guard evaluated the first block twice
    columns = np.column_stack([H @ V[:, j] for j in range(V.shape[1])])
    np.testing.assert_allclose(block, columns, rtol=0, atol=1e-12)
    assert (H.num_passes, H.num_hvps) == (7, 15)
    assert H.num_samples == N and H.mode == "forward-over-reverse"


def test_operators_from_one_loss_share_compilations():
    loss_fn, params, x, y = make_problem("mlp", "population")
    data = split(x, y, EQUAL)
    spj.hessian(loss_fn, params, data) @ np.eye(ravel_pytree(params)[0].size)
    compiled = spj._STEPS[loss_fn][("hvp", "forward-over-reverse", True)]
    count = compiled._cache_size()
    later = jax.tree_util.tree_map(jnp.copy, params)  # e.g. a later checkpoint
    H = spj.hessian(loss_fn, later, data, reduction="sum")
    dense = to_dense(H)
    assert compiled._cache_size() == count
    np.testing.assert_allclose(dense, N * reference("mlp", "population"), rtol=0, atol=N * ATOL)


def test_eigsh_top_eigenvalues():
    loss_fn, params, x, y = make_problem("mlp")
    H = spj.hessian(loss_fn, params, [(x, y)])
    vals = eigsh(H, k=5, which="LA", return_eigenvectors=False)
    true = np.linalg.eigvalsh(reference("mlp"))
    np.testing.assert_allclose(np.sort(vals), true[-5:], rtol=1e-8, atol=1e-10)


# -- precision ---------------------------------------------------------------------------------


def test_float32_model_stays_float32():
    loss_fn, params, x, y = make_problem("mlp", dtype=np.float32)
    H = spj.hessian(loss_fn, params, [(x, y)])
    assert H.dtype == np.float32
    dense = to_dense(H)
    assert dense.dtype == np.float64  # float64 NumPy out, float32 arithmetic inside
    expected = reference("mlp")
    error = np.max(np.abs(dense - expected)) / np.max(np.abs(expected))
    assert 1e-12 < error < 1e-4


def test_bfloat16_model():
    loss_fn, params, x, y = make_problem("mlp", dtype=jnp.bfloat16)
    H = spj.hessian(loss_fn, params, [(x, y)])
    assert H.dtype == np.float32
    expected = reference("mlp")
    error = np.max(np.abs(to_dense(H) - expected)) / np.max(np.abs(expected))
    assert error < 0.1


def test_float64_params_without_x64_raise():
    loss_fn, params, x, y = make_problem("mlp")
    numpy_params = {k: np.asarray(v) for k, v in params.items()}
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        spj.hessian(loss_fn, numpy_params, split(x, y))


def test_input_errors():
    loss_fn, params, x, y = make_problem("mlp")
    with pytest.raises(TypeError, match="one-shot iterator"):
        spj.hessian(loss_fn, params, iter(split(x, y)))
    with pytest.raises(ValueError, match="reduction"):
        spj.hessian(loss_fn, params, split(x, y), reduction="max")
    with pytest.raises(ValueError, match="needs data"):
        spj.hessian(lambda p: loss_fn(p, (x, y)), params, reduction="sum")
    with pytest.raises(TypeError, match="floating-point"):
        spj.hessian(loss_fn, {**params, "step": jnp.zeros((), jnp.int32)}, split(x, y))
    with pytest.raises(ValueError, match="no array leaves"):
        spj.hessian(loss_fn, {}, split(x, y))
    with pytest.raises(ValueError, match="mode"):
        spj.hessian(loss_fn, params, split(x, y), mode="forward")
    with pytest.raises(ValueError, match="no batches"):
        spj.hessian(loss_fn, params, []) @ np.ones(51)


# -- determinism guard -------------------------------------------------------------------------


class Reshuffling:
    """Data set whose ``__iter__`` permutes the samples every time (a shuffling loader)."""

    def __init__(self, x, y, sizes=EQUAL, subset=None, seed=0):
        self.x, self.y, self.sizes, self.subset = x, y, sizes, subset
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        order = self.rng.permutation(len(self.y))
        if self.subset is not None:  # a random mini-batch, as in stochastic training
            yield self.x[order[: self.subset]], self.y[order[: self.subset]]
            return
        yield from split(self.x[order], self.y[order], self.sizes)


def test_guard_fires_for_reshuffled_batch_statistics():
    loss_fn, params, x, y = make_problem("mlp", "batch")
    H = spj.hessian(loss_fn, params, Reshuffling(x, y))
    assert spj.DeterminismError is DeterminismError
    with pytest.raises(DeterminismError, match="reshuffles") as info:
        H @ np.ones(H.shape[0])
    assert "list(loader)" in str(info.value) and "check_determinism=False" in str(info.value)
    H = spj.hessian(loss_fn, params, Reshuffling(x, y), check_determinism=False)
    H @ np.ones(H.shape[0])  # switched off: no error


def test_guard_fires_for_random_subsets():
    loss_fn, params, x, y = make_problem("mlp")
    H = spj.hessian(loss_fn, params, Reshuffling(x, y, subset=32))
    with pytest.raises(DeterminismError):
        H @ np.ones(H.shape[0])


def test_reshuffling_is_harmless_for_per_sample_losses():
    # Without batch statistics the data-set mean does not depend on the order of the samples.
    loss_fn, params, x, y = make_problem("mlp", "population")
    H = spj.hessian(loss_fn, params, Reshuffling(x, y))
    np.testing.assert_allclose(to_dense(H), reference("mlp", "population"), rtol=0, atol=ATOL)


def test_guard_fires_for_dropout_key_in_batch():
    base_loss, params, x, y = make_problem("mlp")

    def loss_fn(params, batch):
        xb, yb, key = batch
        keep = jax.random.bernoulli(key, 0.8, params["W1"].shape)
        return base_loss({**params, "W1": jnp.where(keep, params["W1"] / 0.8, 0.0)}, (xb, yb))

    class WithFreshKeys:
        calls = 0

        def __iter__(self):
            for xb, yb in split(x, y, EQUAL):
                self.calls += 1
                yield xb, yb, jax.random.PRNGKey(self.calls)

    H = spj.hessian(loss_fn, params, WithFreshKeys())
    with pytest.raises(DeterminismError, match="dropout"):
        H @ np.ones(H.shape[0])
    # The fix: materialised batches (fixed keys) give a fixed matrix.
    spj.hessian(loss_fn, params, list(WithFreshKeys())) @ np.ones(H.shape[0])


def test_guard_fires_for_loss_with_fresh_randomness():
    _, _, x, y = make_problem("mlp")
    rng = np.random.default_rng(0)

    def loss_fn(params, batch):  # draws a new dropout mask at every call (so jit=False)
        xb, yb = batch
        keep = jnp.asarray(rng.random(params["w"].shape) < 0.8)
        return jnp.mean((jnp.tanh(xb @ jnp.where(keep, params["w"] / 0.8, 0.0)) - yb) ** 2)

    params = {"w": jnp.full(4, 0.3)}
    H = spj.hessian(loss_fn, params, [(x, y)], jit=False)
    with pytest.raises(DeterminismError):
        H @ np.ones(H.shape[0])


# -- spectral density (needs the core) ---------------------------------------------------------


def _exact_w1(eigenvalues, measure, interval):
    """W1 distance between the eigenvalue CDF and ``measure.cdf`` (exact for step CDFs)."""
    lo, hi = interval
    points = np.concatenate([eigenvalues, np.ravel(measure.nodes), np.linspace(lo, hi, 20001)])
    points = np.unique(np.clip(points, lo, hi))
    mid = 0.5 * (points[1:] + points[:-1])
    true_cdf = np.searchsorted(np.sort(eigenvalues), mid, side="right") / eigenvalues.size
    est_cdf = np.asarray(measure.cdf(mid), dtype=np.float64)
    return float(np.sum(np.abs(true_cdf - est_cdf) * np.diff(points)))


@functools.cache
def _mlp_operator():
    loss_fn, params, x, y = make_problem("mlp")
    return spj.hessian(loss_fn, params, [(x, y)])


@pytest.mark.parametrize("num_steps", [20, 51])
def test_slq_within_certified_w1_bound(num_steps):
    spectral = pytest.importorskip("spectral")
    if not hasattr(spectral, "slq"):
        pytest.skip("the spectral core (spectral.slq) is not available yet")
    H = _mlp_operator()
    eigenvalues = np.linalg.eigvalsh(reference("mlp"))
    pad = 1e-6 * np.max(np.abs(eigenvalues))
    interval = (eigenvalues[0] - pad, eigenvalues[-1] + pad)
    measure = spectral.slq(H, num_steps=num_steps, num_probes=4, seed=0)
    bounds = measure.bounds(interval=interval)
    assert _exact_w1(eigenvalues, measure, interval) <= bounds.wasserstein


def build_digits_mlp_jax(num_samples: int = 300, batch_size: int | None = None, seed: int = 0):
    """The shared digits MLP (tests/adapters/digits_mlp.py) in JAX, float64.

    Returns ``(loss_fn, params, data)`` for ``spj.hessian(loss_fn, params, data)``: ``params``
    is the dict ``{"W1", "b1", "W2", "b2"}`` of float64 JAX arrays (``x @ W + b`` convention,
    flat order b1, b2, W1, W2), ``data`` a list of ``(x, y)`` batches of ``batch_size`` samples
    (the last one shorter; default: one batch of all samples). Needs ``jax_enable_x64``
    (switched on when this module is imported).
    """
    digits = _load_digits_mlp()
    x, y = digits.digits_data(num_samples)
    params = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in digits.mlp_weights(seed).items()}

    def loss_fn(params, batch):
        xb, yb = batch
        h = jnp.tanh(xb @ params["W1"] + params["b1"])
        return _cross_entropy(h @ params["W2"] + params["b2"], yb)

    size = batch_size or len(y)
    data = [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
    return loss_fn, params, data


def test_digits_mlp_loss_equals_numpy():
    digits = _load_digits_mlp()
    loss_fn, params, data = build_digits_mlp_jax(batch_size=128)
    x, y = digits.digits_data(300)
    expected = digits.loss_numpy(digits.mlp_weights(0), x, y)
    assert [len(b[1]) for b in data] == [128, 128, 44]
    assert spj.loss(loss_fn, params, data) == pytest.approx(expected, rel=1e-13)
    total = spj.loss(loss_fn, params, data, reduction="sum")
    assert total == pytest.approx(300 * expected, rel=1e-13)
    assert float(loss_fn(params, (x, y))) == pytest.approx(expected, rel=1e-13)
    loss_fn, params, data = build_digits_mlp_jax()
    H = spj.hessian(loss_fn, params, data)
    assert H.shape == (digits.num_params(),) * 2
    v = np.random.default_rng(0).normal(size=H.shape[0])
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f: loss_fn(unravel(f), (x, y)))
    _, hv = jax.jit(lambda f, t: jax.jvp(grad, (f,), (t,)))(flat, jnp.asarray(v))
    np.testing.assert_allclose(H @ v, np.asarray(hv), rtol=1e-10, atol=1e-12)
