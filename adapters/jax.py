r"""JAX adapter: the Hessian of a data-set loss as a SciPy linear operator.

The loss is a pure function ``loss_fn(params, batch)`` that returns the *mean* loss over the
samples of ``batch``; ``params`` is any pytree of floating-point arrays. :func:`hessian`
returns the Hessian of the data-set loss with respect to the flattened parameters,

.. math::

    L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell_i(\theta), \qquad
    H = \nabla^2 L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \nabla^2 \ell_i(\theta)
      = \sum_{\text{batches } b} \frac{n_b}{N} \nabla^2 L_b(\theta),

where :math:`L_b` is the mean loss of a batch of :math:`n_b` samples, as a
:class:`~spectral.adapters.HessianOperator` (a :class:`scipy.sparse.linalg.LinearOperator`).
Each product is computed by forward-over-reverse differentiation,

.. math::

    H v = \left.\frac{\mathrm d}{\mathrm d\varepsilon}\,
          \nabla L(\theta + \varepsilon v)\right|_{\varepsilon = 0},

that is ``jax.jvp(jax.grad(L_b), (theta,), (v,))[1]`` per batch, vectorised over the ``b``
columns of a block with :func:`jax.vmap` and compiled with :func:`jax.jit`, so ``H @ V`` costs
one pass over the data for all columns. Operators built from the same ``loss_fn`` object share
the compiled code (one compilation per batch shape and block width).

Flat vectors use the ordering of :func:`jax.flatten_util.ravel_pytree`: the leaves in
:func:`jax.tree_util.tree_leaves` order (dictionary keys sorted), each leaf raveled in C
order. :func:`flatten` and :func:`unflatten` convert between the two forms.

Float64 models need ``jax.config.update("jax_enable_x64", True)`` before any array is
created; this module never changes that global flag, and :func:`hessian` refuses float64
parameters while it is off (JAX would silently round them to float32).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._common import DeterminismError, HessianOperator

__all__ = [
    "DeterminismError",
    "JaxHessianOperator",
    "flatten",
    "gradient",
    "hessian",
    "loss",
    "unflatten",
]

Reduction = Literal["mean", "sum"]
Mode = Literal["auto", "forward-over-reverse", "reverse-over-reverse"]

_MODES = ("auto", "forward-over-reverse", "reverse-over-reverse")

#: Substring of the error JAX raises when forward-mode differentiation meets a
#: ``jax.custom_vjp`` function (for instance one called inside another one's backward rule).
_NO_FORWARD_MODE = "forward-mode"


# -- flat vectors <-> pytrees -------------------------------------------------------------


def flatten(params: Any) -> np.ndarray:
    """Concatenate the leaves of a pytree into one float64 NumPy vector.

    Parameters
    ----------
    params : pytree
        Pytree of arrays (JAX or NumPy), for instance model parameters, a gradient, or a
        direction in parameter space.

    Returns
    -------
    numpy.ndarray
        Vector of shape ``(n,)`` and dtype float64, in the ordering of the operators returned
        by :func:`hessian`: leaves in :func:`jax.tree_util.tree_leaves` order (dictionary keys
        sorted), each raveled in C order, the ordering of
        :func:`jax.flatten_util.ravel_pytree`. Values are converted on the host, so float64
        NumPy leaves keep their precision even when ``jax_enable_x64`` is off.
    """
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        return np.zeros(0)
    return np.concatenate([np.asarray(leaf, dtype=np.float64).ravel() for leaf in leaves])


def unflatten(vector: np.ndarray, like: Any) -> Any:
    """Split a flat vector into a pytree with the structure, shapes and dtypes of ``like``.

    The inverse of :func:`flatten`; use it to view an eigenvector or a Ritz vector of a
    Hessian operator as parameters.

    Parameters
    ----------
    vector : array_like, shape (n,)
        Flat vector, ``n`` being the number of scalars in ``like``.
    like : pytree
        Template pytree (typically the parameters passed to :func:`hessian`).

    Returns
    -------
    pytree
        Same structure as ``like``, with JAX array leaves of the same shapes and dtypes
        (the values are rounded to each leaf's dtype).

    Raises
    ------
    ValueError
        If ``vector`` is not one-dimensional of length ``n``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(like)
    shapes = [np.shape(leaf) for leaf in leaves]
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    vector = np.asarray(vector)
    if vector.shape != (sum(sizes),):
        raise ValueError(
            f"expected a vector of shape ({sum(sizes)},) (the number of parameters), "
            f"got {vector.shape}"
        )
    pieces = np.split(vector, np.cumsum(sizes)[:-1]) if leaves else []
    new = [
        jnp.asarray(piece.reshape(shape), dtype=jnp.result_type(leaf))
        for piece, shape, leaf in zip(pieces, shapes, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, new)


# -- input checks -------------------------------------------------------------------------


def _x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def _check_params(params: Any) -> None:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves: there is nothing to differentiate")
    for leaf in leaves:
        python_scalar = isinstance(leaf, (bool, int, float, complex))
        dtype = np.asarray(leaf).dtype if python_scalar else getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"every leaf of params must be a real floating-point array, found dtype {dtype}; "
                "close over non-trainable values in loss_fn instead of passing them in params"
            )
        if not python_scalar and np.dtype(dtype) == np.float64 and not _x64_enabled():
            raise ValueError(
                "params contain float64 arrays but JAX's 64-bit mode is off, so JAX would "
                "silently round them to float32. Call "
                'jax.config.update("jax_enable_x64", True) at the start of the program '
                "(before creating any JAX array), or cast the parameters to float32."
            )


def _check_reduction(reduction: str, data: Any) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f'reduction must be "mean" or "sum", got {reduction!r}')
    if data is None and reduction == "sum":
        raise ValueError(
            'reduction="sum" needs data (it multiplies each batch mean by its sample count); '
            "with data=None, loss_fn(params) is used as it is"
        )


def _check_data(data: Any) -> None:
    if data is None:
        return
    if isinstance(data, Iterator):
        raise TypeError(
            "data is a one-shot iterator (for instance a generator); every Hessian-vector "
            "product iterates over the data again, so pass a re-iterable object: a list of "
            "batches, or an object whose __iter__ returns a fresh iterator (a data loader)"
        )
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be an iterable of batches or None, got {type(data).__name__}")


def _as_array(leaf: Any) -> Any:
    # Leave JAX arrays on their device; convert the rest (NumPy arrays, PyTorch CPU tensors,
    # eager TensorFlow tensors, Python scalars) through the NumPy array protocol.
    return leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)


def _num_samples(batch: Any) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("a batch has no array leaves, so its sample count is unknown")
    shape = np.shape(leaves[0])
    if len(shape) == 0:
        raise ValueError(
            "the first leaf of a batch is a scalar; the sample count of a batch is the leading "
            "dimension of its first leaf (jax.tree_util.tree_leaves order)"
        )
    return int(shape[0])


# -- data-set sums ------------------------------------------------------------------------


class _DataSetLoss:
    """A loss, its parameters and a data set, with sample-weighted passes over the batches."""

    def __init__(self, loss_fn: Callable, params: Any, data: Iterable | None, reduction: str):
        _check_params(params)
        _check_reduction(reduction, data)
        _check_data(data)
        self.loss_fn = loss_fn
        self.params = params
        self.data = data
        self.reduction = reduction
        # Parameters as JAX arrays once (NumPy leaves would be copied to the device per batch).
        self.params_dev = jax.tree_util.tree_map(jnp.asarray, params)
        flat = jax.eval_shape(lambda p: ravel_pytree(p)[0], self.params_dev)
        #: Number of scalar parameters and dtype of the flat vector (the promoted leaf dtype).
        self.size, self.dtype = int(flat.size), np.dtype(flat.dtype)
        #: Accumulator dtype: float64 for float64 models, float32 otherwise (bfloat16 included).
        self.acc_dtype = np.dtype(np.float64 if self.dtype == np.float64 else np.float32)
        devices = set().union(
            *(leaf.devices() for leaf in jax.tree_util.tree_leaves(self.params_dev))
        )
        self.device = next(iter(devices)) if len(devices) == 1 else None
        #: Number of samples seen by the last pass (``None`` before the first pass).
        self.num_samples: int | None = None
        self._zeros: dict[tuple[int, ...], jax.Array] = {}

    def batches(self) -> Iterator[tuple[Any, int]]:
        if self.data is None:
            yield None, 1
            return
        for batch in self.data:
            batch = jax.tree_util.tree_map(_as_array, batch)
            yield batch, _num_samples(batch)

    def accumulate(self, step: Callable, args: tuple, shape: tuple[int, ...]) -> jax.Array:
        """Return ``sum_b n_b step_b`` (divided by N for the mean) over one pass."""
        # JAX arrays are immutable, so one zero block per shape serves every pass (creating
        # it costs about a millisecond, which adds up over a Lanczos run's products).
        acc = self._zeros.get(shape)
        if acc is None:
            acc = self._zeros[shape] = jnp.zeros(shape, dtype=self.acc_dtype, device=self.device)
        total = 0
        previous = getattr(_TRACING, "loss_fn", None)
        _TRACING.loss_fn = self.loss_fn  # read by the step when it traces a new shape
        try:
            for batch, count in self.batches():
                acc = step(self.params_dev, *args, batch, acc, count)
                total += count
        finally:
            _TRACING.loss_fn = previous
        if total == 0:
            raise ValueError("data yielded no batches (or only empty ones)")
        self.num_samples = total
        if self.reduction == "mean" and self.data is not None:
            acc = acc / total
        return acc

    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(array, dtype=self.dtype), self.device)


def _hvp_block(loss: Callable, flat: jax.Array, V: jax.Array, mode: str) -> jax.Array:
    """Return ``H @ V`` for the Hessian of ``loss`` at ``flat`` and a block ``V`` (n, b)."""
    grad = jax.grad(loss)
    if mode == "forward-over-reverse":

        def column(v):
            return jax.jvp(grad, (flat,), (v,))[1]

        return jax.vmap(column, in_axes=1, out_axes=1)(V)
    # Reverse-over-reverse: one linearisation of the gradient, b pullbacks. The Hessian is
    # symmetric, so the pullback v -> H^T v is the product H v.
    _, pullback = jax.vjp(grad, flat)
    return jax.vmap(lambda v: pullback(v)[0], in_axes=1, out_axes=1)(V)


#: Compiled per-batch steps, keyed weakly by the user's loss function, so that operators
#: built from the same loss (for instance at many checkpoints of a training run) share one
#: compilation per batch shape and block width. The steps do not refer to the loss: they read
#: it from ``_TRACING`` while tracing, which :meth:`_DataSetLoss.accumulate` sets.
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRACING = threading.local()


def _step(loss_fn: Callable, kind: str, mode: str, with_data: bool, jit: bool) -> Callable:
    """Return ``step(params, [V,] batch, acc, weight) -> acc + weight * (H_b V, g_b or L_b)``."""
    key = (kind, mode, with_data)
    table = None
    if jit:
        try:
            table = _STEPS.setdefault(loss_fn, {})
        except TypeError:  # not weak-referenceable or not hashable: compile per operator
            table = None
        if table is not None and key in table:
            return table[key]

    def batch_loss(params, batch):
        loss, (flat, unravel) = _TRACING.loss_fn, ravel_pytree(params)
        if with_data:
            return (lambda p: loss(unravel(p), batch)), flat
        return (lambda p: loss(unravel(p))), flat

    if kind == "hvp":

        def step(params, V, batch, acc, weight):
            f, flat = batch_loss(params, batch)
            return acc + weight * _hvp_block(f, flat, V, mode).astype(acc.dtype)

    elif kind == "grad":

        def step(params, batch, acc, weight):
            f, flat = batch_loss(params, batch)
            return acc + weight * jax.grad(f)(flat).astype(acc.dtype)

    else:  # "loss"

        def step(params, batch, acc, weight):
            f, flat = batch_loss(params, batch)
            return acc + weight * f(flat).astype(acc.dtype)

    if not jit:
        return step
    # jax.jit keeps one compiled executable per batch shape and block width.
    step = jax.jit(step)
    if table is not None:
        table[key] = step
    return step


# -- the operator -------------------------------------------------------------------------


class JaxHessianOperator(HessianOperator):
    """Hessian of a JAX data-set loss as a symmetric :class:`~scipy.sparse.linalg.LinearOperator`.

    Create it with :func:`hessian`, which documents the mathematics.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch)``, the mean loss of a batch (``loss_fn(params)`` when
        ``data`` is ``None``).
    params : pytree
        Parameters at which the Hessian is taken (real floating-point leaves).
    data : iterable of batches, optional
        Re-iterable collection of batches, or ``None``.
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the samples.
    check_determinism : bool, default True
        Evaluate the first product twice and compare.
    jit : bool, default True
        Compile the batched products with :func:`jax.jit`.
    mode : {"auto", "forward-over-reverse", "reverse-over-reverse"}, default "auto"
        How the products are differentiated.
    native : bool, optional
        Native path (see :func:`hessian`).

    Attributes
    ----------
    params : pytree
        The parameters at which the Hessian is taken (as passed in).
    num_samples : int or None
        Number of samples ``N`` counted during the last pass over the data (``None`` before the
        first product; ``1`` when ``data`` is ``None``).
    mode : str
        Differentiation mode in use: ``"forward-over-reverse"`` or ``"reverse-over-reverse"``
        (``"auto"`` resolves to the first, and switches to the second if the loss cannot be
        differentiated in forward mode).
    num_hvps, num_passes : int
        Counters inherited from :class:`~spectral.adapters.HessianOperator`.
    native : bool
        Whether the native path is on: ``array_namespace`` is then :mod:`jax.numpy` and
        :meth:`native_matmat` takes and returns JAX arrays on ``device``.
    """

    def __init__(
        self,
        loss_fn: Callable,
        params: Any,
        data: Iterable | None = None,
        *,
        reduction: Reduction = "mean",
        check_determinism: bool = True,
        jit: bool = True,
        mode: Mode = "auto",
        native: bool | None = None,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        problem = _DataSetLoss(loss_fn, params, data, reduction)
        if native is None:  # automatic: on an accelerator, when float64 vectors are possible
            native = (
                problem.device is not None and problem.device.platform != "cpu" and _x64_enabled()
            )
        elif native and not _x64_enabled():
            raise ValueError(
                "native=True keeps the float64 Lanczos vectors on the device, which needs "
                'jax.config.update("jax_enable_x64", True); leave native unset otherwise'
            )
        dtype = np.float64 if problem.dtype == np.float64 else np.float32
        super().__init__(problem.size, dtype, check_determinism=check_determinism)
        self._problem = problem
        self._jit = bool(jit)
        self._auto = mode == "auto"
        self.mode = "forward-over-reverse" if mode == "auto" else mode
        self._step = self._make_step()
        #: Whether the native path is on (see :func:`hessian`, ``native``).
        self.native = bool(native)

    @property
    def array_namespace(self):
        """Array-API namespace of the native path (:mod:`jax.numpy`; ``None`` when off)."""
        return jnp if self.native else None

    @property
    def device(self):
        """The parameters' device (``None`` when they span several)."""
        return self._problem.device

    @property
    def params(self) -> Any:
        """The parameters at which the Hessian is taken."""
        return self._problem.params

    @property
    def num_samples(self) -> int | None:
        """Samples counted by the last pass over the data (``None`` before the first)."""
        return self._problem.num_samples

    def flatten(self, tree: Any) -> np.ndarray:
        """Flatten a pytree shaped like ``params`` into a float64 vector.

        Parameters
        ----------
        tree : pytree
            Same structure as ``params`` (a gradient, a direction).

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)``, float64, in the operator's ordering (see :func:`flatten`).
        """
        return flatten(tree)

    def unflatten(self, vector: np.ndarray) -> Any:
        """View a flat vector (an eigenvector, a Ritz vector) as a pytree shaped like ``params``.

        Parameters
        ----------
        vector : array_like, shape (n,)
            Flat vector in the operator's ordering.

        Returns
        -------
        pytree
            Structure, shapes and dtypes of ``params`` (see :func:`unflatten`).
        """
        return unflatten(vector, self._problem.params)

    def _make_step(self) -> Callable:
        problem = self._problem
        return _step(problem.loss_fn, "hvp", self.mode, problem.data is not None, self._jit)

    def _hvp(self, V: np.ndarray) -> np.ndarray:
        out = self._products(self._problem.to_device(V))
        # A writable float64 copy (np.asarray of a JAX array is a read-only view).
        return np.array(out, dtype=np.float64)

    def _hvp_native(self, V: jax.Array) -> jax.Array:
        """``H @ V`` for a JAX array ``V`` of shape (n, b); the result stays on the device."""
        return self._products(jnp.asarray(V, dtype=self._problem.dtype))

    def _products(self, V_dev: jax.Array) -> jax.Array:
        """One pass over the data for the block ``V_dev`` (n, b) on the device."""
        problem = self._problem
        shape = tuple(V_dev.shape)
        try:
            out = problem.accumulate(self._step, (V_dev,), shape)
        except TypeError as error:
            if not (self._auto and _NO_FORWARD_MODE in str(error)):
                raise
            # A jax.custom_vjp function has no forward-mode rule: use reverse-over-reverse.
            self._auto = False
            self.mode = "reverse-over-reverse"
            self._step = self._make_step()
            out = problem.accumulate(self._step, (V_dev,), shape)
        return out

    def _nondeterminism_hint(self) -> str:
        return (
            "with JAX this means stochastic batches or a stochastic loss. Stochastic batches: "
            "a data iterable that draws random subsets, augments, or reshuffles on every "
            "iteration (a shuffling loader; harmless for per-sample losses, not with batch "
            "statistics, i.e. a batch-norm layer in training mode). Fix: materialise the "
            "batches once (data = list(loader)), iterate in a fixed order without augmentation, "
            "and normalise with population statistics (Flax: use_running_average=True). "
            "Stochastic loss: dropout or noise drawn with a PRNG key that changes between calls "
            "(a key carried in the batch, a global counter, NumPy randomness with jit=False). "
            "Fix: evaluate the model deterministically (Flax: deterministic=True / train=False) "
            "or close over one fixed key in loss_fn"
        )


def hessian(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Iterable[Any] | None = None,
    *,
    reduction: Reduction = "mean",
    check_determinism: bool = True,
    jit: bool = True,
    mode: Mode = "auto",
    native: bool | None = None,
) -> JaxHessianOperator:
    r"""Hessian of a JAX loss over a data set, as a matrix-free linear operator.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch) -> scalar``: the **mean** loss over the samples of ``batch``
        (or ``loss_fn(params) -> scalar`` when ``data`` is ``None``). Must be a pure JAX
        function of ``params`` (traceable by :func:`jax.grad`, and by :func:`jax.jit` when
        ``jit=True``).
    params : pytree
        Parameters at which the Hessian is taken: any pytree (dict, list, tuple, Flax/Equinox
        parameter tree) of real floating-point arrays (float32, float64 or bfloat16). Only
        these leaves are differentiated; close over anything else in ``loss_fn``. To take the
        Hessian of a subset of the parameters, pass that subset and close over the rest.
    data : iterable of batches, optional
        Re-iterable collection of batches (a list, or an object whose ``__iter__`` returns a
        fresh iterator, such as a data loader; not a generator), traversed once per product.
        A batch is a pytree such as ``(x, y)`` whose leaves have the samples along their
        leading axis; its sample count ``n_b`` is the leading dimension of its **first leaf**
        (in :func:`jax.tree_util.tree_leaves` order). Leaves that are not JAX arrays (NumPy
        arrays, CPU PyTorch or TensorFlow tensors) are converted with :func:`numpy.asarray`.
        ``None`` means ``loss_fn(params)`` is the whole objective.
    reduction : {"mean", "sum"}, default "mean"
        Loss whose Hessian is taken: the mean over all ``N`` samples, exact for batches of
        unequal sizes (each batch mean is weighted by ``n_b / N``), or the sum over samples
        (weights ``n_b``). ``"sum"`` requires ``data``.
    check_determinism : bool, default True
        Evaluate the first product twice and raise :class:`DeterminismError` if the two
        differ, which happens with stochastic batches or a stochastic loss (see Notes).
    jit : bool, default True
        Compile the batched product with :func:`jax.jit` (one executable per batch shape and
        block width, cached on the operator). ``False`` runs it op by op (slow; for losses
        that cannot be traced by ``jit``).
    mode : {"auto", "forward-over-reverse", "reverse-over-reverse"}, default "auto"
        How ``H v`` is differentiated. ``"auto"`` uses forward-over-reverse and falls back to
        reverse-over-reverse (the VJP of the gradient, which equals ``H v`` by symmetry) if
        JAX cannot differentiate the loss in forward mode (a :func:`jax.custom_vjp` function
        reached by the forward pass over the gradient).
    native : bool, optional
        Offer the native path: :func:`spectral.slq` and :func:`spectral.lanczos` then run
        the Lanczos recurrence on JAX arrays on the parameters' device, with no host round
        trip per step. It needs float64 on the device (``jax_enable_x64``). ``None``
        (default): on when the parameters are on an accelerator (GPU, TPU) and
        ``jax_enable_x64`` is on, off otherwise (host recurrence, a ``2nb`` round trip
        per step); ``True`` forces it (also on the CPU) and raises without
        ``jax_enable_x64``. ``matmat`` and ``@`` take NumPy arrays either way.

    Returns
    -------
    JaxHessianOperator
        Symmetric operator of shape ``(n, n)``, ``n`` the number of scalar parameters, in the
        ordering of :func:`flatten`. Its dtype is float64 for float64 parameters and float32
        otherwise (bfloat16 models compute in bfloat16 and accumulate in float32). Products
        take float64 NumPy blocks and return float64 NumPy blocks; the differentiation runs
        in the parameters' own dtype on the parameters' device. ``H @ V`` for ``V`` of shape
        ``(n, b)`` is one pass over the data for all ``b`` columns.

    Raises
    ------
    ValueError
        If ``params`` holds float64 arrays while ``jax_enable_x64`` is off, if ``params`` is
        empty, if ``reduction`` or ``mode`` is invalid, or (at the first product) if ``data``
        yields no batches or a batch whose first leaf has no leading axis.
    TypeError
        If a leaf of ``params`` is not floating point, or ``data`` is a one-shot iterator.
    DeterminismError
        At the first product, if its two evaluations differ (see Notes).

    Notes
    -----
    With :math:`L_b` the mean loss of a batch of :math:`n_b` samples and
    :math:`N = \sum_b n_b`, a product is

    .. math::

        H V = \sum_b w_b \, \bigl[\, \partial_\varepsilon \nabla L_b(\theta + \varepsilon v_j)
        \bigr]_{j = 1..b}, \qquad w_b = n_b / N \ (\text{mean}) \ \text{or} \ n_b \ (\text{sum}),

    each bracket computed by ``jax.jvp(jax.grad(L_b), (θ,), (v_j,))`` and vectorised over the
    columns :math:`v_j` with :func:`jax.vmap`; the sum over batches is accumulated on the
    device in float64 (float64 models) or float32. Parameters the loss does not use give zero
    rows and columns.

    *Batch statistics.* A loss that normalises with statistics of the batch (batch norm in
    training mode) is not a sum of per-sample losses: its Hessian depends on how the data are
    split into batches, and it is a fixed matrix only for a fixed split. With population
    (running) statistics, as in evaluation mode, the loss is per-sample and the Hessian does
    not depend on the batching.

    *Determinism.* Lanczos needs the same matrix at every product. Stochastic batches (a
    loader that reshuffles with batch statistics, augments, or subsamples) and stochastic
    losses (dropout with a key that changes between calls) break this, and the determinism
    guard reports it. Python-side randomness inside a jitted ``loss_fn`` (``np.random``) is
    drawn once when the function is traced and then frozen.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from spectral.adapters import jax as spj
    >>> def loss_fn(params, batch):
    ...     x, y = batch
    ...     return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)
    >>> params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(10, 3)).astype(np.float32)
    >>> y = rng.normal(size=10).astype(np.float32)
    >>> H = spj.hessian(loss_fn, params, [(x[:6], y[:6]), (x[6:], y[6:])])
    >>> H.shape
    (4, 4)
    """
    return JaxHessianOperator(
        loss_fn,
        params,
        data,
        reduction=reduction,
        check_determinism=check_determinism,
        jit=jit,
        mode=mode,
        native=native,
    )


def gradient(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Iterable[Any] | None = None,
    *,
    reduction: Reduction = "mean",
    jit: bool = True,
) -> np.ndarray:
    r"""Gradient of a JAX loss over a data set, as a flat float64 NumPy vector.

    Parameters
    ----------
    loss_fn, params, data, reduction, jit
        As in :func:`hessian`.

    Returns
    -------
    numpy.ndarray
        :math:`\nabla L(\theta) = \sum_b w_b \nabla L_b(\theta)` with
        :math:`w_b = n_b / N` (``"mean"``) or :math:`n_b` (``"sum"``), shape ``(n,)``, dtype
        float64, in the ordering of :func:`flatten` (view it as parameters with
        :func:`unflatten`). Computed in the parameters' dtype, accumulated in float64 for
        float64 models and float32 otherwise.

    Raises
    ------
    ValueError, TypeError
        As in :func:`hessian`.
    """
    problem = _DataSetLoss(loss_fn, params, data, reduction)
    step = _step(loss_fn, "grad", "reverse", data is not None, bool(jit))
    return np.array(problem.accumulate(step, (), (problem.size,)), dtype=np.float64)


def loss(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Iterable[Any] | None = None,
    *,
    reduction: Reduction = "mean",
    jit: bool = True,
) -> float:
    r"""Value of a JAX loss over a data set.

    Parameters
    ----------
    loss_fn, params, data, reduction, jit
        As in :func:`hessian`.

    Returns
    -------
    float
        :math:`L(\theta) = \sum_b w_b L_b(\theta)` with :math:`w_b = n_b / N` (``"mean"``)
        or :math:`n_b` (``"sum"``): the exact data-set mean (or sum) over samples, whatever
        the batch sizes. Computed in the parameters' dtype, accumulated in float64 for float64
        models and float32 otherwise.

    Raises
    ------
    ValueError, TypeError
        As in :func:`hessian`.
    """
    problem = _DataSetLoss(loss_fn, params, data, reduction)
    step = _step(loss_fn, "loss", "value", data is not None, bool(jit))
    return float(problem.accumulate(step, (), ()))
