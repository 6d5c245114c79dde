r"""TensorFlow / Keras adapter: the Hessian of a data-set loss as a linear operator.

The data-set loss of a Keras model :math:`f_\theta` with per-sample losses
:math:`\ell_i(\theta) = \ell(y_i, f_\theta(x_i))` over :math:`N` samples is

.. math::

    L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell_i(\theta)

(or :math:`\sum_i \ell_i(\theta)` with ``reduction="sum"``), and its Hessian is
:math:`H = \frac{1}{N} \sum_i \nabla^2 \ell_i(\theta)`. The data arrive in batches
:math:`B_1, \dots, B_m` of sizes :math:`n_1, \dots, n_m` (the last one may be smaller) and
a Keras loss returns the batch mean :math:`L_b = \frac{1}{n_b} \sum_{i \in B_b} \ell_i`,
so the adapter weights each batch by its sample count,
:math:`H = \frac{1}{N} \sum_b n_b \nabla^2 L_b`, which is exact for uneven batches.

Products :math:`HV` with a block :math:`V = [v_1, \dots, v_k]` are computed by
forward-over-reverse differentiation, :math:`H v = \frac{d}{d\varepsilon} \nabla L(\theta +
\varepsilon v)\big|_{\varepsilon=0}`: a :class:`tf.autodiff.ForwardAccumulator` carrying the
tangent :math:`v` wraps the :class:`tf.GradientTape` that computes :math:`\nabla L_b`, and
:func:`tf.vectorized_map` vectorises this over the :math:`k` columns. One call of a
:func:`tf.function` handles one data batch for all :math:`k` columns, so a block product is
one pass over the data. Where forward mode is not supported (Keras recurrent layers, whose
``tf.while_loop`` the forward accumulator cannot differentiate) the adapter falls back to
reverse-over-reverse differentiation, :math:`H v = \nabla_\theta \langle \nabla_\theta
L(\theta), v \rangle`, with nested tapes.

Public names: :func:`hessian`, :func:`gradient`, :func:`flatten`, :func:`unflatten` and the
operator class :class:`TensorFlowHessian`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from spectral.adapters._common import DeterminismError, HessianOperator

__all__ = [
    "DeterminismError",
    "TensorFlowHessian",
    "flatten",
    "gradient",
    "hessian",
    "unflatten",
]

Method = Literal["auto", "forward-over-reverse", "reverse-over-reverse"]
Reduction = Literal["mean", "sum"]

_METHODS = ("auto", "forward-over-reverse", "reverse-over-reverse")
_ZERO = tf.UnconnectedGradients.ZERO


# ---------------------------------------------------------------------------------------
# flat vectors <-> lists of tensors
# ---------------------------------------------------------------------------------------
def flatten(tensors: Iterable[Any]) -> np.ndarray:
    """Concatenate tensors or variables into one flat float64 NumPy vector.

    Parameters
    ----------
    tensors : iterable of tf.Tensor, tf.Variable, keras.Variable or array_like
        For example ``model.trainable_variables`` or the list returned by
        :func:`unflatten`. Each is flattened in row-major (C) order and the pieces are
        concatenated in the order given.

    Returns
    -------
    numpy.ndarray
        Vector of length ``sum(t.size for t in tensors)``, dtype float64. This is the
        ordering of the rows and columns of :func:`hessian` and of :func:`gradient` for
        the same list of variables.
    """
    pieces = [np.asarray(_to_numpy(t), dtype=np.float64).reshape(-1) for t in tensors]
    if not pieces:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(pieces)


def unflatten(vector: Any, like: Sequence[Any]) -> list[tf.Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (the inverse of :func:`flatten`).

    Parameters
    ----------
    vector : array_like, shape (n,)
        Flat vector, for example an eigenvector of the operator returned by
        :func:`hessian` or the output of :func:`gradient`.
    like : sequence of tf.Variable, keras.Variable or tf.Tensor
        The variables that define the layout (the ``variables`` passed to
        :func:`hessian`, ``model.trainable_variables`` by default).

    Returns
    -------
    list of tf.Tensor
        One tensor per entry of ``like`` with its shape and dtype, so that
        ``flatten(unflatten(v, like)) == v`` (up to the dtype cast). Use
        ``var.assign(t)`` to write them into the variables.

    Raises
    ------
    ValueError
        If the length of ``vector`` is not the total size of ``like``.
    """
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    shapes = [tuple(int(d) for d in _shape(t)) for t in like]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if vector.size != sum(sizes):
        raise ValueError(
            f"vector has {vector.size} entries but the tensors hold {sum(sizes)} numbers"
        )
    out = []
    start = 0
    for t, shape, size in zip(like, shapes, sizes, strict=True):
        piece = vector[start : start + size].reshape(shape)
        out.append(tf.constant(piece, dtype=_dtype(t)))
        start += size
    return out


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    if hasattr(t, "numpy"):
        return np.asarray(t.numpy())
    return np.asarray(tf.convert_to_tensor(t))


def _shape(t: Any) -> tuple:
    shape = t.shape
    return tuple(shape.as_list()) if isinstance(shape, tf.TensorShape) else tuple(shape)


def _dtype(t: Any) -> tf.DType:
    return tf.as_dtype(t.dtype)


def _tf_variable(v: Any) -> tf.Variable:
    """Return the ``tf.Variable`` behind a Keras 3 variable (or the ``tf.Variable`` itself)."""
    if isinstance(v, tf.Variable):
        return v
    inner = getattr(v, "value", None)
    if isinstance(inner, tf.Variable):
        return inner
    raise TypeError(
        f"expected a tf.Variable or a keras.Variable, got {type(v).__name__}; pass "
        "variables such as model.trainable_variables or layer.trainable_variables"
    )


# ---------------------------------------------------------------------------------------
# the data-set pass
# ---------------------------------------------------------------------------------------
def _check_reiterable(data: Any) -> None:
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(
            "data must be a tf.data.Dataset or an iterable of (inputs, targets) batches, "
            f"got {type(data).__name__}"
        ) from None
    if it is data:
        raise TypeError(
            "data is a one-shot iterator (iter(data) is data): every Hessian-vector product "
            "makes a full pass over the data, so pass something that can be iterated again, "
            "such as a tf.data.Dataset, a list of (inputs, targets) batches or a "
            "keras.utils.PyDataset"
        )


def _as_tensors(structure: Any) -> Any:
    def convert(leaf):
        if isinstance(leaf, (tf.Tensor, tf.Variable, tf.SparseTensor, tf.RaggedTensor)):
            return leaf
        return tf.convert_to_tensor(leaf)

    return tf.nest.map_structure(convert, structure)


def _batch_size(targets: Any) -> int:
    leaves = tf.nest.flatten(targets)
    if not leaves:
        raise ValueError("a batch has no targets")
    shape = _shape(leaves[0])
    if not shape or shape[0] is None:
        raise ValueError(
            "cannot read the batch size from the targets: their first dimension must be the "
            f"sample dimension (got shape {shape})"
        )
    return int(shape[0])


def _batches(data: Any):
    """Yield ``(inputs, targets, batch_size)`` for one pass over ``data``."""
    count = 0
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                "each batch must be a pair (inputs, targets); got "
                + (
                    f"a sequence of length {len(batch)}"
                    if isinstance(batch, (tuple, list))
                    else type(batch).__name__
                )
                + ". Map a tf.data.Dataset of dictionaries to pairs with "
                "dataset.map(lambda d: (d['x'], d['y']))"
            )
        inputs, targets = batch
        size = _batch_size(targets)
        if size == 0:
            continue
        count += 1
        yield _as_tensors(inputs), _as_tensors(targets), size
    if count == 0:
        raise ValueError("data yielded no (non-empty) batches")


class _Problem:
    """A Keras model, a loss, data and the variables to differentiate, resolved once."""

    def __init__(
        self,
        model: Any,
        loss_fn: Callable[[Any, Any], Any],
        data: Any,
        variables: Sequence[Any] | None,
        reduction: str,
        training: bool,
    ):
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(y_true, y_pred)")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        _check_reiterable(data)
        if variables is None:
            if not model.trainable_variables:
                raise ValueError(
                    "the model has no trainable variables; build it first (for example "
                    "with keras.Input or by calling it on one batch)"
                )
            variables = model.trainable_variables
        variables = list(variables)
        if not variables:
            raise ValueError("variables is empty")
        tf_vars = [_tf_variable(v) for v in variables]
        if len({id(v) for v in tf_vars}) != len(tf_vars):
            raise ValueError("variables lists the same variable more than once")
        for v in tf_vars:
            if not v.dtype.is_floating:
                raise TypeError(f"variable {v.name} has non-floating dtype {v.dtype.name}")

        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.variables = variables
        self.tf_variables = tf_vars
        self.reduction = reduction
        self.training = bool(training)
        self.shapes = [tuple(int(d) for d in v.shape) for v in tf_vars]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.dtypes = [v.dtype for v in tf_vars]
        self.num_params = int(sum(self.sizes))
        self.np_dtype = (
            np.dtype(np.float64)
            if all(d == tf.float64 for d in self.dtypes)
            else np.dtype(np.float32)
        )
        self._check_loss_dtype()
        # training=True runs BatchNormalization (and similar layers) in training mode, which
        # assigns new moving statistics on every call; these are restored after each pass so
        # that computing a spectrum leaves the model unchanged. Integer state (the seed
        # generators of dropout layers) is not restored, so dropout stays random.
        self.float_state = []
        if self.training:
            self.float_state = [
                _tf_variable(v)
                for v in getattr(model, "non_trainable_variables", [])
                if _tf_variable(v).dtype.is_floating
            ]
        self.num_samples: int | None = None

    def _check_loss_dtype(self) -> None:
        # A keras.losses.Loss converts y_pred to its own dtype (keras.backend.floatx() when
        # it was created): a float32 loss on a float64 model would silently compute the
        # Hessian of a float32 loss.
        loss_dtype = getattr(self.loss_fn, "dtype", None)
        if loss_dtype is None:
            return
        try:
            loss_dtype = tf.as_dtype(loss_dtype)
        except TypeError:
            return
        if not loss_dtype.is_floating:
            return
        widest = max(d.size for d in self.dtypes)
        if loss_dtype.size < widest:
            raise ValueError(
                f"the loss computes in {loss_dtype.name} but the variables are "
                f"{max(self.dtypes, key=lambda d: d.size).name}: a keras.losses.Loss casts "
                "the predictions to its own dtype. Create it with a matching dtype, e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
                "dtype='float64'), or call keras.backend.set_floatx('float64') before "
                "creating it"
            )

    # -- traced pieces --------------------------------------------------------------------
    def batch_loss(self, inputs: Any, targets: Any) -> tf.Tensor:
        """Mean loss of one batch (a per-sample loss vector is averaged)."""
        pred = self.model(inputs, training=self.training)
        value = tf.convert_to_tensor(self.loss_fn(targets, pred))
        if value.shape.rank != 0:
            value = tf.reduce_mean(value)
        return value

    def split_columns(self, V: tf.Tensor) -> list[tf.Tensor]:
        """(n, b) float64 block -> one (b, *shape) tangent per variable, in its dtype."""
        parts = tf.split(V, self.sizes, axis=0)
        return [
            tf.cast(tf.reshape(tf.transpose(p), (-1, *shape)), dtype)
            for p, shape, dtype in zip(parts, self.shapes, self.dtypes, strict=True)
        ]

    def join_columns(self, blocks: Sequence[tf.Tensor], b: tf.Tensor) -> tf.Tensor:
        """One (b, *shape) tensor per variable -> (n, b) float64 block."""
        flat = [tf.reshape(tf.cast(x, tf.float64), (b, -1)) for x in blocks]
        return tf.transpose(tf.concat(flat, axis=1))

    def gradient_of_batch(self, inputs: Any, targets: Any) -> list[tf.Tensor]:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.tf_variables)
            value = self.batch_loss(inputs, targets)
        return tape.gradient(value, self.tf_variables, unconnected_gradients=_ZERO)

    def hvp_forward_over_reverse(self, inputs: Any, targets: Any, V: tf.Tensor) -> tf.Tensor:
        tangents = self.split_columns(V)

        def one_column(tangent):
            with tf.autodiff.ForwardAccumulator(self.tf_variables, tangent) as acc:
                grads = self.gradient_of_batch(inputs, targets)
            return acc.jvp(grads, unconnected_gradients=_ZERO)

        out = tf.vectorized_map(one_column, tangents)
        return self.join_columns(out, tf.shape(V)[1])

    def hvp_reverse_over_reverse(
        self, inputs: Any, targets: Any, V: tf.Tensor, vectorize: bool = True
    ) -> tf.Tensor:
        tangents = self.split_columns(V)
        b = tf.shape(V)[1]
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(self.tf_variables)
            grads = self.gradient_of_batch(inputs, targets)
            # <g, v_j> for every column j, in the variables' dtype: a (b,) vector whose
            # Jacobian has the rows (H v_j)^T.
            gv = tf.add_n(
                [
                    tf.cast(
                        tf.linalg.matvec(tf.reshape(t, (b, -1)), tf.reshape(g, (-1,))),
                        tf.float64,
                    )
                    for t, g in zip(tangents, grads, strict=True)
                ]
            )
        jac = outer.jacobian(
            gv, self.tf_variables, unconnected_gradients=_ZERO, experimental_use_pfor=vectorize
        )
        return self.join_columns(jac, b)

    def hvp_reverse_over_reverse_loop(self, inputs: Any, targets: Any, V: tf.Tensor) -> tf.Tensor:
        return self.hvp_reverse_over_reverse(inputs, targets, V, vectorize=False)

    # -- eager passes ---------------------------------------------------------------------
    def weighted_pass(self, fn: Callable[..., tf.Tensor], *args: Any) -> np.ndarray:
        """Return ``sum_b n_b fn(batch_b, *args)`` divided by N for ``reduction="mean"``."""
        saved = [v.read_value() for v in self.float_state]
        total = None
        num_samples = 0
        try:
            for inputs, targets, size in _batches(self.data):
                value = fn(inputs, targets, *args) * tf.constant(float(size), tf.float64)
                total = value if total is None else total + value
                num_samples += size
        finally:
            for v, value in zip(self.float_state, saved, strict=True):
                v.assign(value)
        self.num_samples = num_samples
        out = total.numpy()
        if self.reduction == "mean":
            out = out / num_samples
        return out


class _Compiled:
    """``tf.function`` of ``body(inputs, targets, *blocks)`` traced once for all batch sizes.

    The first call traces ``body`` with the sample dimension of ``inputs`` and ``targets``
    and the column dimension of the ``(n, b)`` blocks left unknown, so that a smaller last
    batch or a new block width does not trace again (tracing a vectorised Hessian-vector
    product costs seconds). Models that need a static batch size are traced per shape.
    """

    def __init__(self, body: Callable[..., tf.Tensor]):
        self._function = tf.function(body, reduce_retracing=True)
        self._traced = False

    def __call__(self, inputs: Any, targets: Any, *blocks: tf.Tensor) -> tf.Tensor:
        if not self._traced:
            self._traced = True
            specs = (
                tf.nest.map_structure(_relaxed_spec, inputs),
                tf.nest.map_structure(_relaxed_spec, targets),
                *(tf.TensorSpec((b.shape[0], None), b.dtype) for b in blocks),
            )
            try:
                self._function.get_concrete_function(*specs)
            except Exception:  # fall back to tracing once per batch shape
                pass
        return self._function(inputs, targets, *blocks)


def _relaxed_spec(leaf: Any) -> Any:
    if isinstance(leaf, tf.Tensor) and leaf.shape.rank:
        return tf.TensorSpec((None, *leaf.shape[1:]), leaf.dtype)
    return tf.type_spec_from_value(leaf)


def _flat_gradient_fn(problem: _Problem) -> Callable[..., tf.Tensor]:
    def flat_gradient(inputs, targets):
        grads = problem.gradient_of_batch(inputs, targets)
        return tf.concat([tf.reshape(tf.cast(g, tf.float64), (-1,)) for g in grads], axis=0)

    return _Compiled(flat_gradient)


# ---------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------
class TensorFlowHessian(HessianOperator):
    r"""Hessian of a Keras model's data-set loss as a SciPy ``LinearOperator``.

    Build it with :func:`hessian`. ``H @ V`` for a block ``V`` of shape ``(n, b)`` makes
    one pass over the data and returns the float64 array ``H V``.

    Parameters
    ----------
    problem : object
        The model, loss, data and variables, checked by :func:`hessian`.
    method : {"auto", "forward-over-reverse", "reverse-over-reverse"}
        How products are computed (see :func:`hessian`).
    check_determinism : bool
        Evaluate the first product twice and compare.

    Attributes
    ----------
    model : keras.Model
        The model.
    variables : list
        The variables the Hessian is taken with respect to, in the order of the rows.
    method : str
        ``"forward-over-reverse"`` or ``"reverse-over-reverse"``: how the products are
        computed (with ``method="auto"`` this is settled by the first product).
    training : bool
        The ``training`` flag the model is called with.
    reduction : str
        ``"mean"`` or ``"sum"``.
    num_samples : int or None
        Number of samples seen in the last pass over the data (None before the first).
    fallback_error : Exception or None
        The error that made the first product fall back to reverse-over-reverse products
        computed column by column (None when no fallback happened).
    num_hvps, num_passes : int
        Counters of Hessian-vector products and of passes over the data.
    """

    def __init__(self, problem: _Problem, method: Method, check_determinism: bool):
        super().__init__(problem.num_params, problem.np_dtype, check_determinism=check_determinism)
        self._problem = problem
        self._requested = method
        self._kind: str | None = None  # settled by the first product
        self.fallback_error: Exception | None = None
        self.method = (
            "reverse-over-reverse" if method == "reverse-over-reverse" else "forward-over-reverse"
        )
        self._functions: dict[str, Callable[..., tf.Tensor]] = {}

    model = property(lambda self: self._problem.model)
    variables = property(lambda self: self._problem.variables)
    training = property(lambda self: self._problem.training)
    reduction = property(lambda self: self._problem.reduction)
    num_samples = property(lambda self: self._problem.num_samples)

    def _function(self, kind: str) -> Callable[..., tf.Tensor]:
        if kind not in self._functions:
            self._functions[kind] = _Compiled(
                {
                    "forward": self._problem.hvp_forward_over_reverse,
                    "reverse": self._problem.hvp_reverse_over_reverse,
                    "reverse-loop": self._problem.hvp_reverse_over_reverse_loop,
                }[kind]
            )
        return self._functions[kind]

    def _hvp(self, V: np.ndarray) -> np.ndarray:
        block = tf.constant(np.asarray(V, dtype=np.float64))
        if self._kind is not None:
            return self._problem.weighted_pass(self._function(self._kind), block)
        # The first product settles how products are computed. Forward mode fails while
        # tracing for some models (Keras recurrent layers: the forward accumulator cannot
        # differentiate through their tf.while_loop); the same models usually defeat the
        # vectorisation of the reverse-over-reverse Jacobian, so the fallback of "auto"
        # loops over the columns.
        candidates = {
            "auto": ("forward", "reverse-loop"),
            "forward-over-reverse": ("forward",),
            "reverse-over-reverse": ("reverse", "reverse-loop"),
        }[self._requested]
        first_error: Exception | None = None
        for kind in candidates:
            try:
                out = self._problem.weighted_pass(self._function(kind), block)
            except Exception as error:
                first_error = first_error or error
                continue
            if first_error is not None:
                self.fallback_error = first_error
                what = "forward-over-reverse" if candidates[0] == "forward" else "vectorised"
                warnings.warn(
                    f"{what} Hessian-vector products failed for this model "
                    f"({type(first_error).__name__}, kept in the operator's fallback_error); "
                    "using reverse-over-reverse products computed one column at a time",
                    RuntimeWarning,
                    stacklevel=5,
                )
            self._kind = kind
            self.method = "forward-over-reverse" if kind == "forward" else "reverse-over-reverse"
            return out
        assert first_error is not None
        raise first_error

    def _nondeterminism_hint(self) -> str:
        return (
            "the Keras model or the data changed between two passes over the data. Usual "
            "causes: (1) dropout or other random layers (GaussianNoise, RandomFlip, ...) "
            "are active because the operator was built with training=True; keep the default "
            "training=False; (2) BatchNormalization with training=True normalises with the "
            "statistics of each batch, so a pipeline whose batches change between passes "
            "changes the matrix; (3) a tf.data pipeline that reshuffles on every iteration "
            "(dataset.shuffle(...) has reshuffle_each_iteration=True by default) or applies "
            "random augmentation in dataset.map: use dataset.shuffle(buffer, seed=0, "
            "reshuffle_each_iteration=False), or shuffle once and .cache() the result, and "
            "leave augmentation out"
        )

    def __repr__(self) -> str:
        n = self.shape[0]
        return (
            f"<TensorFlowHessian n={n} dtype={self.dtype} method={self.method!r} "
            f"training={self.training} reduction={self.reduction!r}>"
        )


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def hessian(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    data: Any,
    *,
    variables: Sequence[Any] | None = None,
    reduction: Reduction = "mean",
    training: bool = False,
    method: Method = "auto",
    check_determinism: bool = True,
) -> TensorFlowHessian:
    r"""Hessian of a Keras model's loss over a whole data set, as a linear operator.

    Parameters
    ----------
    model : keras.Model
        A built Keras model (Keras 3 with the TensorFlow backend, or ``tf.keras``), called
        as ``model(inputs, training=training)``. Its dtype is kept: a float64 model gives
        float64 products, a float32 model float32 products.
    loss_fn : callable
        ``loss_fn(y_true, y_pred)`` in Keras's argument order returning the **mean** loss
        of the batch, e.g. ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``
        (the default ``"sum_over_batch_size"`` reduction). A loss that returns one value
        per sample (``reduction=None``) is averaged. A ``keras.losses.Loss`` casts the
        predictions to its own dtype, so for a float64 model create it with
        ``dtype="float64"`` (or after ``keras.backend.set_floatx("float64")``).
    data : tf.data.Dataset or iterable of (inputs, targets)
        The batches of the data set, iterated once per product; it must be re-iterable
        (a list, a ``tf.data.Dataset``, a ``keras.utils.PyDataset``), not a one-shot
        iterator or generator, and must yield the same batches in the same order on every
        pass. Batches may have different sizes; the batch size is the first dimension of
        the targets.
    variables : sequence of variables, optional
        The variables to differentiate with respect to, in the order of the rows of the
        Hessian; default ``model.trainable_variables``. A subset (e.g.
        ``model.layers[0].trainable_variables``) gives the corresponding diagonal block,
        for per-layer spectra; the other variables are held fixed.
    reduction : {"mean", "sum"}, default "mean"
        ``"mean"``: the loss is the mean over all samples,
        :math:`L = \frac{1}{N} \sum_i \ell_i`, exact for batches of unequal sizes;
        ``"sum"``: :math:`L = \sum_i \ell_i`.
    training : bool, default False
        Passed to ``model(..., training=training)``. ``False`` is what a Hessian normally
        means: dropout is off and ``BatchNormalization`` uses its moving (population)
        statistics, so :math:`H` is the Hessian of the same function the model computes at
        inference. ``True`` makes ``BatchNormalization`` normalise with the statistics of
        each batch, so the loss and its Hessian depend on how the data are batched (the
        batches must not change between passes); the moving statistics the layer updates
        are restored after every pass. ``True`` also switches dropout on, which makes the
        operator random: the determinism check then fails.
    method : {"auto", "forward-over-reverse", "reverse-over-reverse"}, default "auto"
        How the products are computed. ``"forward-over-reverse"``: a
        :class:`tf.autodiff.ForwardAccumulator` with tangent :math:`v` around the
        :class:`tf.GradientTape` of the batch loss, :math:`Hv = \partial_\varepsilon
        \nabla L(\theta + \varepsilon v)|_0`, vectorised over the columns of the block by
        :func:`tf.vectorized_map`. ``"reverse-over-reverse"``: :math:`Hv = \nabla \langle
        \nabla L, v \rangle` with nested tapes, the outer gradients of all columns
        vectorised by :meth:`tf.GradientTape.jacobian`. ``"auto"`` uses forward-over-reverse
        and falls back to reverse-over-reverse (with a ``RuntimeWarning``) when the first
        product fails, as it does for Keras recurrent layers.
    check_determinism : bool, default True
        Evaluate the first product twice and raise :class:`DeterminismError` if the two
        differ (dropout with ``training=True``, a reshuffling ``tf.data`` pipeline, random
        augmentation). Costs one extra pass over the data.

    Returns
    -------
    TensorFlowHessian
        A symmetric :class:`scipy.sparse.linalg.LinearOperator` of shape ``(n, n)``,
        ``n = sum(v.shape.num_elements() for v in variables)``, whose rows follow
        :func:`flatten` of ``variables``. Its dtype is float64 if all variables are
        float64 and float32 otherwise (mixed-precision models, whose variables are float32,
        advertise float32; their products are computed in the layers' compute dtype).
        ``matmat`` of a block of ``b`` columns makes one pass over the data.

    Raises
    ------
    TypeError
        If ``data`` is a one-shot iterator or ``variables`` holds something that is not a
        variable.
    ValueError
        If ``reduction`` or ``method`` is unknown, the model has no variables, or a Keras
        loss would cast a float64 model's predictions to float32.

    Notes
    -----
    Variables that do not influence the loss (an unused layer, a frozen branch) give zero
    rows and columns. Parameters stay on the device that holds them (a GPU when TensorFlow
    sees one); only the ``(n, b)`` blocks travel between NumPy and the device.

    Examples
    --------
    >>> import keras, numpy as np, tensorflow as tf
    >>> from spectral.adapters import tensorflow as sptf
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"),
    ...                           keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> y = np.arange(20) % 2
    >>> data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    >>> H = sptf.hessian(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                  data)
    >>> H.shape
    (23, 23)
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    problem = _Problem(model, loss_fn, data, variables, reduction, training)
    return TensorFlowHessian(problem, method, check_determinism)


def gradient(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    data: Any,
    *,
    variables: Sequence[Any] | None = None,
    reduction: Reduction = "mean",
    training: bool = False,
) -> np.ndarray:
    r"""Gradient of a Keras model's loss over a whole data set, as a flat vector.

    Parameters
    ----------
    model, loss_fn, data, variables, reduction, training
        As for :func:`hessian`.

    Returns
    -------
    numpy.ndarray
        :math:`\nabla L = \frac{1}{N} \sum_b n_b \nabla L_b` (``reduction="mean"``) or
        :math:`\sum_b n_b \nabla L_b` (``"sum"``), float64, shape ``(n,)``, in the order of
        :func:`flatten` of ``variables`` (the row order of :func:`hessian`). Variables
        that do not influence the loss get zeros.
    """
    problem = _Problem(model, loss_fn, data, variables, reduction, training)
    return problem.weighted_pass(_flat_gradient_fn(problem))
