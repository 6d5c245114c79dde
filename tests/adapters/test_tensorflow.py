"""Tests of the TensorFlow / Keras adapter against dense float64 Hessians from nested tapes."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as sla

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
keras = pytest.importorskip("keras", reason="Keras is not installed")

from spectral.adapters import tensorflow as sptf  # noqa: E402

F64 = "float64"
N_SAMPLES = 145
UNEVEN = (64, 64, 17)
ZERO = tf.UnconnectedGradients.ZERO


def ce(dtype: str = F64):
    """Mean softmax cross-entropy on integer labels, computing in ``dtype``."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)


CE = ce()


# ---------------------------------------------------------------------------------------
# shared digits MLP
# ---------------------------------------------------------------------------------------
def _digits_module():
    """Import tests/adapters/digits_mlp.py (pytest runs with --import-mode=importlib)."""
    if "digits_mlp" not in sys.modules:
        path = Path(__file__).with_name("digits_mlp.py")
        spec = importlib.util.spec_from_file_location("digits_mlp", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["digits_mlp"] = module
        spec.loader.exec_module(module)
    return sys.modules["digits_mlp"]


def build_digits_mlp_tensorflow(num_samples: int = 300, batch_size: int = 128, seed: int = 0):
    """The shared digits MLP in Keras: ``(model, loss_fn, data)`` for ``sptf.hessian``.

    float64 layers and loss; ``data`` is a ``tf.data.Dataset`` of ``(x, y)`` batches of
    ``batch_size`` samples (the last one shorter). The Dense kernels are the NumPy ``W``
    (shape ``(in, out)``), so the parameter order is ``W1, b1, W2, b2``, each row-major.
    """
    dm = _digits_module()
    w = dm.mlp_weights(seed)
    x, y = dm.digits_data(num_samples)
    model = keras.Sequential(
        [
            keras.Input((64,), dtype=F64),
            keras.layers.Dense(dm.HIDDEN, activation="tanh", dtype=F64),
            keras.layers.Dense(dm.NUM_CLASSES, dtype=F64),
        ]
    )
    model.layers[0].set_weights([w["W1"], w["b1"]])
    model.layers[1].set_weights([w["W2"], w["b2"]])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return model, ce(), data


def test_digits_mlp_matches_numpy():
    dm = _digits_module()
    model, loss_fn, data = build_digits_mlp_tensorflow(num_samples=300, batch_size=128)
    x, y = dm.digits_data(300)
    loss = float(loss_fn(y, model(x, training=False)))
    assert loss == pytest.approx(dm.loss_numpy(dm.mlp_weights(0), x, y), rel=1e-13)
    w = dm.mlp_weights(0)
    flat = np.concatenate([w[k].ravel() for k in ("W1", "b1", "W2", "b2")])
    np.testing.assert_array_equal(sptf.flatten(model.trainable_variables), flat)
    H = sptf.hessian(model, loss_fn, data, check_determinism=False)
    assert H.shape == (dm.num_params(), dm.num_params())
    # the data-set gradient of the batched pipeline is the full-batch gradient
    np.testing.assert_allclose(
        sptf.gradient(model, loss_fn, data), dense_gradient(model, loss_fn, x, y), atol=1e-14
    )


# ---------------------------------------------------------------------------------------
# tiny float64 models and data
# ---------------------------------------------------------------------------------------
class WithUnused(keras.Model):
    """An MLP with a weight and a whole layer that the output never touches."""

    def __init__(self):
        super().__init__(dtype=F64)
        self.hidden = keras.layers.Dense(6, activation="tanh", dtype=F64)
        self.out = keras.layers.Dense(3, dtype=F64)
        self.spare = keras.layers.Dense(2, dtype=F64)  # never called
        self.hidden.build((None, 5))
        self.out.build((None, 6))
        self.spare.build((None, 5))
        self.offset = self.add_weight(shape=(3,), initializer="ones", dtype=F64, name="offset")

    def call(self, x, training=False):
        return self.out(self.hidden(x))


def _set_bn_stats(model, seed: int = 1):
    """Give the BatchNormalization layers non-trivial moving statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(scale=0.5, size=size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=size))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=size))
            layer.beta.assign(rng.normal(scale=0.2, size=size))
    return model


def make_model(kind: str, dtype: str = F64, seed: int = 0):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    if kind == "unused":
        return WithUnused()
    bn = kind.endswith("_bn")
    if kind.startswith("mlp"):
        layers = [keras.Input((5,), dtype=dtype), L.Dense(6, dtype=dtype)]
        layers += [L.BatchNormalization(dtype=dtype)] if bn else []
        layers += [L.Activation("tanh", dtype=dtype), L.Dense(3, dtype=dtype)]
    elif kind.startswith("cnn"):
        layers = [keras.Input((6, 6, 1), dtype=dtype), L.Conv2D(3, 3, dtype=dtype)]
        layers += [L.BatchNormalization(dtype=dtype)] if bn else []
        layers += [
            L.Activation("tanh", dtype=dtype),
            L.GlobalAveragePooling2D(dtype=dtype),
            L.Dense(3, dtype=dtype),
        ]
    else:  # pragma: no cover
        raise ValueError(kind)
    return _set_bn_stats(keras.Sequential(layers))


def make_data(kind: str, n: int = N_SAMPLES, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (n, 6, 6, 1) if kind.startswith("cnn") else (n, 5)
    return rng.normal(size=shape), rng.integers(0, 3, size=n)


def split(x, y, sizes=UNEVEN):
    edges = np.cumsum((0, *sizes))
    assert edges[-1] == len(y)
    return [(x[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]


def _tf_vars(variables):
    return [v if isinstance(v, tf.Variable) else v.value for v in variables]


def dense_hessian(
    model, loss_fn, batches, variables=None, training=False, reduction="mean", vectorize=True
):
    """Dense Hessian ``(1/N) sum_b n_b Hess(L_b)`` from nested ``tf.GradientTape`` Jacobians.

    With one batch holding all the data this is the Hessian of the full-data loss.
    ``vectorize=False`` computes the Jacobian in a ``tf.while_loop`` (recurrent layers).
    """
    tvars = _tf_vars(model.trainable_variables if variables is None else variables)
    total, count = 0.0, 0
    for x, y in batches:
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn(y, model(x, training=training))
            grads = inner.gradient(loss, tvars, unconnected_gradients=ZERO)
            flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        jac = outer.jacobian(
            flat, tvars, unconnected_gradients=ZERO, experimental_use_pfor=vectorize
        )
        n = int(flat.shape[0])
        block = np.concatenate([tf.reshape(j, (n, -1)).numpy() for j in jac], axis=1)
        total = total + len(y) * block
        count += len(y)
    return total / count if reduction == "mean" else total


def dense_gradient(model, loss_fn, x, y):
    tvars = _tf_vars(model.trainable_variables)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    return sptf.flatten(tape.gradient(loss, tvars, unconnected_gradients=ZERO))


def as_dense(H) -> np.ndarray:
    return H @ np.eye(H.shape[0])


def assert_close(actual, desired, tol=1e-10):
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * scale)


# ---------------------------------------------------------------------------------------
# import, flat vectors
# ---------------------------------------------------------------------------------------
def test_module_imports_the_real_tensorflow():
    assert sptf.tf is tf
    assert sptf.tf.__name__ == "tensorflow" and hasattr(sptf.tf, "GradientTape")
    assert sptf.__name__ == "spectral.adapters.tensorflow"


def test_flatten_unflatten_round_trip():
    model = make_model("cnn_bn")
    variables = model.trainable_variables
    flat = sptf.flatten(variables)
    assert flat.dtype == np.float64 and flat.size == sum(int(np.prod(v.shape)) for v in variables)
    parts = sptf.unflatten(flat, variables)
    assert [tuple(p.shape) for p in parts] == [tuple(v.shape) for v in variables]
    assert all(p.dtype == tf.float64 for p in parts)
    np.testing.assert_array_equal(sptf.flatten(parts), flat)
    with pytest.raises(ValueError, match="entries"):
        sptf.unflatten(flat[:-1], variables)


# ---------------------------------------------------------------------------------------
# products against dense Hessians
# ---------------------------------------------------------------------------------------
_CASES: dict = {}


def case(kind: str, training: bool = False, method: str = "auto") -> dict:
    """Model, data, operator, its dense form and the dense reference, built once per module.

    Tracing a vectorised Hessian-vector product costs seconds, so the tests share one
    operator per configuration. ``dense`` is ``H @ I``: one batched product (plus the
    determinism re-evaluation) on the batches 64, 64, 17.
    """
    key = (kind, training, method)
    if key not in _CASES:
        model = make_model(kind)
        x, y = make_data(kind)
        batches = split(x, y)
        H = sptf.hessian(model, CE, batches, training=training, method=method)
        dense = as_dense(H)
        passes = H.num_passes
        if training:
            # batch statistics: the Hessian of the per-batch losses, weighted by batch size
            ref = dense_hessian(model, CE, batches, training=True)
        else:
            ref = dense_hessian(model, CE, [(x, y)])  # the full-data loss in one batch
        _CASES[key] = dict(
            model=model, x=x, y=y, batches=batches, H=H, dense=dense, ref=ref, passes=passes
        )
    return _CASES[key]


@pytest.mark.parametrize(
    ("kind", "training", "method"),
    [
        ("mlp", False, "auto"),
        ("mlp", False, "reverse-over-reverse"),
        ("mlp_bn", False, "auto"),
        ("mlp_bn", True, "auto"),
        ("cnn", False, "auto"),
        ("cnn_bn", False, "auto"),
        ("unused", False, "auto"),
    ],
)
def test_hessian_matches_dense(kind, training, method):
    c = case(kind, training, method)
    H = c["H"]
    assert H.dtype == np.float64 and H.is_symmetric
    assert c["passes"] == 2  # one batched product for all n columns, evaluated twice
    assert H.method == ("reverse-over-reverse" if method != "auto" else "forward-over-reverse")
    assert_close(c["dense"], c["ref"])


@pytest.mark.parametrize("kind", ["mlp", "cnn_bn", "unused"])
def test_gradient_matches_gradient_tape(kind):
    c = case(kind)
    np.testing.assert_allclose(
        sptf.gradient(c["model"], CE, c["batches"]),
        dense_gradient(c["model"], CE, c["x"], c["y"]),
        rtol=0,
        atol=1e-14,
    )


@pytest.mark.parametrize("kind", ["mlp", "cnn_bn"])
def test_matmat_equals_matvecs_in_one_pass(kind):
    H = case(kind)["H"]
    V = np.random.default_rng(1).normal(size=(H.shape[0], 3))
    before = H.num_passes, H.num_hvps
    block = H @ V
    assert (H.num_passes, H.num_hvps) == (before[0] + 1, before[1] + 3)
    cols = np.stack([H @ V[:, j] for j in range(3)], axis=1)
    np.testing.assert_allclose(block, cols, rtol=0, atol=1e-12 * np.abs(cols).max())


def test_unused_variables_have_zero_rows():
    c = case("unused")
    model, H = c["model"], c["dense"]
    variables = model.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]
    edges = np.cumsum((0, *sizes))
    spare = [model.offset, model.spare.kernel, model.spare.bias]
    unused = [i for i, v in enumerate(variables) if any(v is w for w in spare)]
    assert len(unused) == 3  # the spare layer's kernel and bias, and the offset weight
    for i in unused:
        assert np.all(H[edges[i] : edges[i + 1]] == 0)
        assert np.all(H[:, edges[i] : edges[i + 1]] == 0)
    g = sptf.gradient(model, CE, c["batches"])
    assert all(np.all(g[edges[i] : edges[i + 1]] == 0) for i in unused)


def test_uneven_batches_equal_one_batch():
    c = case("mlp")  # batches of 64, 64 and 17
    H = sptf.hessian(c["model"], CE, [(c["x"], c["y"])], check_determinism=False)
    assert_close(c["dense"], as_dense(H), tol=1e-12)
    assert c["H"].num_samples == H.num_samples == N_SAMPLES


def test_sum_reduction():
    c = case("mlp")
    Hs = sptf.hessian(c["model"], CE, c["batches"], reduction="sum", check_determinism=False)
    V = np.random.default_rng(0).normal(size=(Hs.shape[0], 2))
    np.testing.assert_allclose(Hs @ V, N_SAMPLES * (c["H"] @ V), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        sptf.gradient(c["model"], CE, c["batches"], reduction="sum"),
        N_SAMPLES * sptf.gradient(c["model"], CE, c["batches"]),
        rtol=1e-12,
        atol=1e-14,
    )


def test_parameter_subsets_are_diagonal_blocks():
    c = case("mlp")
    model, full = c["model"], c["ref"]
    first = model.layers[0].trainable_variables  # kernel (5, 6) and bias (6,): rows 0..35
    H = sptf.hessian(model, CE, c["batches"], variables=first)
    assert H.shape == (36, 36)
    assert_close(as_dense(H), full[:36, :36])
    # a non-contiguous selection, in the order given
    last_bias = model.layers[-1].bias
    H2 = sptf.hessian(model, CE, c["batches"], variables=[last_bias, model.layers[0].kernel])
    idx = np.r_[np.arange(54, 57), np.arange(0, 30)]
    assert_close(as_dense(H2), full[np.ix_(idx, idx)])


def test_fallback_to_reverse_over_reverse_for_recurrent_layers():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 2), dtype=F64),
            keras.layers.SimpleRNN(3, dtype=F64),
            keras.layers.Dense(3, dtype=F64),
        ]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4, 2)), rng.integers(0, 3, size=30)
    batches = split(x, y, (16, 14))
    H = sptf.hessian(model, CE, batches)
    with pytest.warns(RuntimeWarning, match="reverse-over-reverse"):
        got = as_dense(H)
    assert H.method == "reverse-over-reverse"
    assert "while" in str(H.fallback_error)  # forward mode cannot trace the tf.while_loop
    assert_close(got, dense_hessian(model, CE, [(x, y)], vectorize=False))


def test_eigsh_on_the_operator():
    c = case("mlp")
    eigs = np.linalg.eigvalsh(c["ref"])
    top = eigs[np.argsort(np.abs(eigs))[-5:]]
    vals = sla.eigsh(c["H"], k=5, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.sort(top), rtol=1e-8, atol=1e-10)


def _slq_available() -> bool:
    try:
        import spectral
    except ImportError:  # pragma: no cover
        return False
    return hasattr(spectral, "slq")


def _exact_w1(eigs: np.ndarray, cdf, nodes: np.ndarray) -> float:
    """W1 = integral of |F_true - F_est| between two step CDFs, exactly (midpoint rule)."""
    points = np.unique(np.concatenate([eigs, nodes.ravel()]))
    mids = 0.5 * (points[1:] + points[:-1])
    f_true = np.searchsorted(np.sort(eigs), mids, side="right") / eigs.size
    f_est = np.asarray(cdf(mids), dtype=float)
    return float(np.sum(np.abs(f_true - f_est) * np.diff(points)))


@pytest.mark.skipif(not _slq_available(), reason="spectral.slq (the core) is not available")
def test_slq_within_certified_wasserstein_bound():
    import spectral

    c = case("cnn_bn")
    H = c["H"]
    eigs = np.linalg.eigvalsh(c["ref"])
    pad = 1e-3 * (eigs[-1] - eigs[0])
    interval = (eigs[0] - pad, eigs[-1] + pad)
    m = spectral.slq(H, num_steps=15, num_probes=4, seed=0)
    assert _exact_w1(eigs, m.cdf, np.asarray(m.nodes)) <= m.bounds(interval=interval).wasserstein
    # full Krylov depth
    deep = spectral.slq(H, num_steps=H.shape[0], num_probes=2, seed=1)
    assert (
        _exact_w1(eigs, deep.cdf, np.asarray(deep.nodes))
        <= deep.bounds(interval=interval).wasserstein
    )


# ---------------------------------------------------------------------------------------
# determinism guard, BatchNorm and dropout semantics
# ---------------------------------------------------------------------------------------
def test_guard_fires_for_dropout_in_training_mode():
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((5,), dtype=F64),
            L.Dense(6, activation="tanh", dtype=F64),
            L.Dropout(0.3, dtype=F64),
            L.Dense(3, dtype=F64),
        ]
    )
    x, y = make_data("mlp")
    H = sptf.hessian(model, CE, split(x, y), training=True)
    v = np.ones(H.shape[0])
    with pytest.raises(sptf.DeterminismError, match=r"(?s)dropout.*training=False"):
        H @ v
    # once the check is done (or with check_determinism=False) the products run, at random
    assert not np.allclose(H @ v, H @ v)
    # the default training=False switches dropout off: the plain MLP's Hessian, accepted
    H = sptf.hessian(model, CE, split(x, y), method="reverse-over-reverse")
    assert_close(H @ v, dense_hessian(model, CE, [(x, y)]) @ v)


def test_guard_fires_for_a_reshuffling_dataset():
    """A reshuffled pipeline cut to a few batches sees other samples on every pass.

    (Reshuffling *all* the samples does not change a per-sample mean loss, nor its Hessian,
    with training=False; see the BatchNormalization test for where it does.)
    """
    c = case("mlp")
    ds = tf.data.Dataset.from_tensor_slices((c["x"], c["y"]))
    shuffled = ds.shuffle(N_SAMPLES, seed=0, reshuffle_each_iteration=True).batch(32).take(2)
    H = sptf.hessian(c["model"], CE, shuffled)
    with pytest.raises(sptf.DeterminismError, match="reshuffle_each_iteration"):
        H @ np.ones(H.shape[0])
    # shuffled once, in a fixed order: accepted, the Hessian of those 64 samples
    fixed = ds.shuffle(N_SAMPLES, seed=0, reshuffle_each_iteration=False).batch(32).take(2)
    H = sptf.hessian(c["model"], CE, fixed)
    xs = np.concatenate([a.numpy() for a, _ in fixed])
    ys = np.concatenate([b.numpy() for _, b in fixed])
    assert H.num_samples is None
    assert_close(H @ np.eye(H.shape[0]), dense_hessian(c["model"], CE, [(xs, ys)]))
    assert H.num_samples == 64
    # the full data set reshuffled: the same matrix on every pass (up to rounding)
    full = ds.shuffle(N_SAMPLES, seed=0, reshuffle_each_iteration=True).batch(64)
    H = sptf.hessian(c["model"], CE, full)
    assert_close(H @ np.eye(H.shape[0]), c["ref"])


def test_guard_fires_for_training_mode_batchnorm_with_reshuffled_batches():
    c = case("mlp_bn")
    ds = tf.data.Dataset.from_tensor_slices((c["x"], c["y"]))
    shuffled = ds.shuffle(N_SAMPLES, seed=0, reshuffle_each_iteration=True).batch(64)
    H = sptf.hessian(c["model"], CE, shuffled, training=True, method="reverse-over-reverse")
    with pytest.raises(sptf.DeterminismError, match="BatchNormalization with training=True"):
        H @ np.ones(H.shape[0])


def test_batchnorm_training_mode_depends_on_the_batching():
    """training=True: batch statistics, so [64, 64, 17] and [145] are different matrices.

    With fixed batches the operator is deterministic (the guard passes), and the moving
    statistics that the layer updates on every call are restored after every pass.
    """
    train = case("mlp_bn", training=True)  # guard passed, equals the per-batch reference
    evaluation = case("mlp_bn")
    model, x, y = train["model"], train["x"], train["y"]
    bn = model.layers[1]
    stats = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    H_single = as_dense(sptf.hessian(model, CE, [(x, y)], training=True))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), stats[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), stats[1])
    assert_close(H_single, dense_hessian(model, CE, [(x, y)], training=True))
    H_uneven = train["dense"]
    assert np.max(np.abs(H_uneven - H_single)) > 1e-3 * np.max(np.abs(H_single))
    # training=False uses the moving statistics: a third, batching-independent matrix
    H_eval = evaluation["dense"]
    assert np.max(np.abs(H_eval - H_single)) > 1e-3 * np.max(np.abs(H_single))


# ---------------------------------------------------------------------------------------
# precision, arguments
# ---------------------------------------------------------------------------------------
def test_float32_model():
    model32 = make_model("mlp", dtype="float32")
    model64 = make_model("mlp")
    for a, b in zip(model64.trainable_variables, model32.trainable_variables, strict=True):
        a.assign(b.numpy().astype(np.float64))
    x, y = make_data("mlp")
    H = sptf.hessian(model32, ce("float32"), split(x.astype(np.float32), y))
    assert H.dtype == np.float32
    got = as_dense(H)
    ref = dense_hessian(model64, CE, [(x, y)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert np.max(np.abs(got - ref)) > 1e-12  # really computed in float32


def test_float64_model_with_float32_loss_is_refused():
    c = case("mlp")
    with pytest.raises(ValueError, match="dtype='float64'"):
        sptf.hessian(c["model"], ce("float32"), c["batches"])


def test_bad_arguments():
    c = case("mlp")
    model, x, y, batches = c["model"], c["x"], c["y"], c["batches"]
    with pytest.raises(TypeError, match="one-shot iterator"):
        sptf.hessian(model, CE, iter(batches))
    with pytest.raises(TypeError, match="one-shot iterator"):
        sptf.gradient(model, CE, (b for b in batches))
    with pytest.raises(ValueError, match="reduction"):
        sptf.hessian(model, CE, batches, reduction="max")
    with pytest.raises(ValueError, match="method"):
        sptf.hessian(model, CE, batches, method="finite-differences")
    with pytest.raises(ValueError, match="more than once"):
        sptf.hessian(model, CE, batches, variables=[model.layers[0].kernel] * 2)
    with pytest.raises(TypeError, match="variable"):
        sptf.hessian(model, CE, batches, variables=[np.zeros(3)])
    with pytest.raises(ValueError, match="pair"):
        sptf.gradient(model, CE, [(x, y, np.ones(len(y)))])
    with pytest.raises(ValueError, match="no"):
        sptf.gradient(model, CE, [])
