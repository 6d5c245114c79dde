r"""PyTorch adapter: the Hessian of a data-set loss as a SciPy linear operator.

For a model with parameters :math:`\theta \in \mathbb{R}^n` and a data set of :math:`N`
samples :math:`(x_i, y_i)`, :func:`hessian` returns the operator

.. math::

    H = \nabla^2_\theta L(\theta), \qquad
    L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell\big(f_\theta(x_i), y_i\big)

(``reduction="mean"``; ``reduction="sum"`` drops the :math:`1/N`). Each product ``H @ V``
with a block ``V`` of ``b`` columns is **one** pass over the data: per batch the adapter
computes :math:`\partial_t \nabla L_k(\theta + t v)|_{t=0} = \nabla^2 L_k\, v`
(forward-over-reverse: :func:`torch.func.jvp` of :func:`torch.func.grad`, through
:func:`torch.func.functional_call`), vectorised over the ``b`` columns with
:func:`torch.func.vmap`, and sums the batch products weighted by the batch sizes. Models
that forward-mode AD or ``vmap`` cannot handle fall back to double backward (Pearlmutter):
:math:`\nabla(\nabla L_k \cdot v)` by :func:`torch.autograd.grad` with
``create_graph=True``.

Public names: :func:`hessian`, :func:`gradient`, :func:`loss`, :func:`flatten`,
:func:`unflatten`, :class:`TorchHessian`, :class:`DeterminismError`.

Examples
--------
>>> import torch
>>> from spectral.adapters import torch as spt
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
>>> x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
>>> H = spt.hessian(model.eval(), torch.nn.CrossEntropyLoss(), [(x[:6], y[:6]), (x[6:], y[6:])])
>>> H.shape
(23, 23)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ._common import DeterminismError, HessianOperator

__all__ = [
    "DeterminismError",
    "TorchHessian",
    "flatten",
    "gradient",
    "hessian",
    "loss",
    "unflatten",
]

Reduction = Literal["mean", "sum"]
HvpMethod = Literal["auto", "forward-over-reverse", "double-backward"]

_RANDOM_SAMPLERS = (
    torch.utils.data.RandomSampler,
    torch.utils.data.SubsetRandomSampler,
    torch.utils.data.WeightedRandomSampler,
)

_GENERIC_HINT = (
    "the usual causes are dropout layers that are active (model in training mode), "
    "BatchNorm in training mode (it normalises with the statistics of each batch), a "
    "DataLoader that shuffles (shuffle=True or a random sampler) and random data "
    "augmentation. Fix: call model.eval() before hessian(), build the DataLoader with "
    "shuffle=False (a fixed order) and without random transforms"
)


# ---------------------------------------------------------------------------------------
# flat vectors <-> tensors
# ---------------------------------------------------------------------------------------
def _is_named_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], torch.Tensor)
    )


def _tensors_of(tensors: Any) -> tuple[list[str] | None, list[torch.Tensor]]:
    """Split a mapping, a sequence of ``(name, tensor)`` pairs or of tensors."""
    if isinstance(tensors, torch.Tensor):
        return None, [tensors]
    if isinstance(tensors, Mapping):
        return list(tensors.keys()), list(tensors.values())
    items = list(tensors)
    if items and all(_is_named_pair(item) for item in items):
        return [name for name, _ in items], [t for _, t in items]
    if not all(isinstance(item, torch.Tensor) for item in items):
        raise TypeError(
            "expected tensors, a mapping name -> tensor or (name, tensor) pairs; got an "
            f"iterable containing {sorted({type(i).__name__ for i in items})}"
        )
    return None, items


def flatten(tensors: Mapping[str, torch.Tensor] | Iterable[Any] | torch.Tensor) -> np.ndarray:
    """Concatenate tensors into one flat float64 NumPy vector.

    Parameters
    ----------
    tensors : mapping, iterable of tensors or of ``(name, tensor)`` pairs
        For example ``model.parameters()``, ``model.named_parameters()``, a ``state_dict``
        or the ``named_parameters`` of a :class:`TorchHessian`. Each tensor is flattened in
        row-major (C) order and the pieces are concatenated in iteration order — the
        ordering of :func:`hessian` and :func:`gradient` when given the same parameters.

    Returns
    -------
    numpy.ndarray
        1-D float64 array on the host (values are copied from any device).
    """
    _, values = _tensors_of(tensors)
    if not values:
        return np.zeros(0)
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in values])
    return flat.numpy()


def unflatten(
    vector: np.ndarray | torch.Tensor,
    like: Mapping[str, torch.Tensor] | Iterable[Any],
) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (inverse of :func:`flatten`).

    Parameters
    ----------
    vector : array_like of shape (n,)
        Flat vector, e.g. a Ritz vector from :func:`scipy.sparse.linalg.eigsh` or the output
        of :func:`gradient`.
    like : mapping, iterable of tensors or of ``(name, tensor)`` pairs
        Templates giving the shape, dtype and device of each piece, in the order of the
        flat vector (``model.named_parameters()``, ``H.named_parameters``, ...).

    Returns
    -------
    dict or list of torch.Tensor
        A dict ``name -> tensor`` when ``like`` carries names, otherwise a list. The
        tensors are new (detached) tensors with the dtype and device of their templates.

    Raises
    ------
    ValueError
        If the length of ``vector`` is not the total number of elements of ``like``.
    """
    names, templates = _tensors_of(like)
    flat = torch.as_tensor(np.asarray(vector) if not isinstance(vector, torch.Tensor) else vector)
    flat = flat.reshape(-1)
    total = sum(t.numel() for t in templates)
    if flat.numel() != total:
        raise ValueError(f"vector has {flat.numel()} entries, the templates hold {total}")
    pieces = []
    offset = 0
    for t in templates:
        piece = flat[offset : offset + t.numel()].reshape(t.shape)
        pieces.append(piece.to(device=t.device, dtype=t.dtype).clone())
        offset += t.numel()
    if names is None:
        return pieces
    return dict(zip(names, pieces, strict=True))


# ---------------------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------------------
def _select_params(model: nn.Module, params: Any) -> list[tuple[str, torch.Tensor]]:
    """Resolve ``params`` to ``(name, parameter)`` pairs named as in ``model``."""
    named = dict(model.named_parameters())
    if params is None:
        selected = [(name, p) for name, p in named.items() if p.requires_grad]
        if not selected:
            raise ValueError("the model has no parameters with requires_grad=True")
        return selected
    by_id = {id(p): name for name, p in named.items()}

    def resolve(item: Any) -> list[str]:
        if isinstance(item, nn.Module):
            return [resolve_tensor(p) for p in item.parameters()]
        if isinstance(item, str):
            if item not in named:
                sample = ", ".join(list(named)[:8])
                raise ValueError(
                    f"the model has no parameter named {item!r} (it has: {sample}, ...)"
                )
            return [item]
        if _is_named_pair(item):
            # a pair from a sub-module's named_parameters() carries a relative name:
            # identify the tensor itself
            return [resolve_tensor(item[1])]
        if isinstance(item, torch.Tensor):
            return [resolve_tensor(item)]
        raise TypeError(
            "params must hold parameter names, parameters, (name, parameter) pairs or "
            f"modules; got {type(item).__name__}"
        )

    def resolve_tensor(t: torch.Tensor) -> str:
        if id(t) not in by_id:
            raise ValueError(
                f"a tensor of shape {tuple(t.shape)} in params is not a parameter of the model"
            )
        return by_id[id(t)]

    items = [params] if isinstance(params, (nn.Module, str, torch.Tensor)) else list(params)
    names: list[str] = []
    for item in items:
        for name in resolve(item):
            if name in names:
                raise ValueError(f"parameter {name!r} is selected twice")
            names.append(name)
    if not names:
        raise ValueError("params selects no parameters")
    return [(name, named[name]) for name in names]


def _check_loss_fn(loss_fn: Any) -> None:
    reduction = getattr(loss_fn, "reduction", "mean")
    if isinstance(loss_fn, nn.Module) and reduction != "mean":
        raise ValueError(
            f"loss_fn has reduction={reduction!r}; it must return the MEAN over the batch "
            "(the adapter weights each batch by its number of samples itself). Use "
            "reduction='mean' in the loss and pass reduction='sum' to hessian()/gradient() "
            "for the summed data-set loss"
        )


def _check_reiterable(data: Any) -> None:
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}"
        ) from None
    if iterator is data:
        raise TypeError(
            "data is a one-shot iterator (e.g. a generator): every Hessian-vector product "
            "makes a full pass over the data, so it must be re-iterable. Pass a list of "
            "batches or a torch.utils.data.DataLoader"
        )


def _shuffling_loader(data: Any) -> str | None:
    """Describe how ``data`` shuffles, or return None when it keeps a fixed order."""
    if not isinstance(data, torch.utils.data.DataLoader):
        return None
    samplers = [getattr(data, "sampler", None)]
    batch_sampler = getattr(data, "batch_sampler", None)
    samplers += [batch_sampler, getattr(batch_sampler, "sampler", None)]
    for sampler in samplers:
        if isinstance(sampler, _RANDOM_SAMPLERS):
            return (
                f"the DataLoader draws its batches with a {type(sampler).__name__} "
                "(shuffle=True or a random sampler), so every pass sees differently composed "
                "batches; build it with shuffle=False"
            )
    return None


def _train_mode_problems(model: nn.Module) -> list[str]:
    """Describe the layers that make products random or batch-dependent."""
    problems = []
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({type(module).__name__})"
        if isinstance(module, nn.modules.dropout._DropoutNd):
            if module.training and module.p > 0:
                problems.append(
                    f"{label} is a dropout layer in training mode: it draws a new random mask "
                    "on every forward pass"
                )
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or module.running_mean is None:
                why = "in training mode" if module.training else "without running statistics"
                problems.append(
                    f"{label} is a BatchNorm layer {why}: it normalises with the statistics "
                    "of each batch, so the Hessian depends on how the data are split into "
                    "batches (and on their order) instead of using the population statistics"
                )
    return problems


def _batch_size(targets: Any, args: tuple, kwargs: dict) -> int:
    """Count the samples of a batch: the leading dimension of the targets.

    A 0-d tensor or a Python number is one sample; ``targets=None`` (a loss without
    targets) falls back to the leading dimension of the first input tensor.
    """
    if isinstance(targets, torch.Tensor):
        return int(targets.shape[0]) if targets.ndim > 0 else 1
    if targets is None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
        raise TypeError("cannot tell the number of samples of a batch without targets or inputs")
    return len(targets) if hasattr(targets, "__len__") else 1


class _Batches:
    """Iterate over ``(args, kwargs, targets, size)`` moved to the model's device and dtype."""

    def __init__(self, data: Any, device: torch.device, dtype: torch.dtype):
        self.data = data
        self.device = device
        self.dtype = dtype

    def _move(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value)
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.dtype != self.dtype:
                value = value.to(self.dtype)
            return value.to(self.device)
        return value

    def __iter__(self):
        for batch in self.data:
            try:
                inputs, targets = batch
            except (TypeError, ValueError):
                raise TypeError(
                    "each batch must be a pair (inputs, targets); got "
                    f"{type(batch).__name__}"
                    + (f" of length {len(batch)}" if hasattr(batch, "__len__") else "")
                ) from None
            if isinstance(inputs, Mapping):
                args, kwargs = (), {k: self._move(v) for k, v in inputs.items()}
            elif isinstance(inputs, (tuple, list)):
                args, kwargs = tuple(self._move(v) for v in inputs), {}
            else:
                args, kwargs = (self._move(inputs),), {}
            yield args, kwargs, self._move(targets), _batch_size(targets, args, kwargs)


class _Setup:
    """Everything the three data-set functions share: model, parameters, data, loss."""

    def __init__(self, model, loss_fn, data, params, reduction):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(outputs, targets)")
        _check_loss_fn(loss_fn)
        _check_reiterable(data)
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.reduction = reduction
        self.selected = _select_params(model, params)
        dtypes = {p.dtype for _, p in self.selected}
        devices = {p.device for _, p in self.selected}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                "the selected parameters must share one dtype and one device; got dtypes "
                f"{sorted(map(str, dtypes))} on devices {sorted(map(str, devices))}"
            )
        self.dtype = dtypes.pop()
        self.device = devices.pop()
        if not self.dtype.is_floating_point:
            raise TypeError(f"parameters must be floating point, got {self.dtype}")
        self.names = [name for name, _ in self.selected]
        self.shapes = [tuple(p.shape) for _, p in self.selected]
        self.numels = [p.numel() for _, p in self.selected]

    # -- pieces of one pass ----------------------------------------------------------------
    def batches(self) -> _Batches:
        return _Batches(self.data, self.device, self.dtype)

    def frozen(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Detached unselected parameters and the buffers for :func:`functional_call`.

        In training mode BatchNorm updates its running statistics in place; the buffers are
        then cloned so that computing a Hessian never changes the model.
        """
        chosen = set(self.names)
        others = {
            name: p.detach() for name, p in self.model.named_parameters() if name not in chosen
        }
        training = any(m.training for m in self.model.modules())
        buffers = {
            name: (b.detach().clone() if training else b.detach())
            for name, b in self.model.named_buffers()
        }
        return others, buffers

    def batch_loss(self, sel, frozen, args, kwargs, targets) -> torch.Tensor:
        """Mean loss of one batch as a function of the selected parameters ``sel``."""
        others, buffers = frozen
        outputs = functional_call(self.model, ({**others, **sel}, buffers), args, kwargs)
        return self.loss_fn(outputs, targets)

    def finish(self, total: torch.Tensor, count: int) -> torch.Tensor:
        r"""Turn a sum of batch means weighted by batch sizes into the data-set value.

        :math:`\sum_k n_k \bar g_k` is the data-set sum; the mean divides it by
        :math:`N = \sum_k n_k`.
        """
        if count == 0:
            raise ValueError("data holds no samples")
        return total / count if self.reduction == "mean" else total

    def accumulator_dtype(self) -> torch.dtype:
        return torch.float32 if self.device.type == "mps" else torch.float64

    def leaves(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().requires_grad_(True) for name, p in self.selected}

    def zeros_for_unused(self, grads, leaves) -> list[torch.Tensor]:
        return [
            torch.zeros_like(leaf) if g is None else g
            for g, leaf in zip(grads, leaves, strict=True)
        ]


# ---------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------
class TorchHessian(HessianOperator):
    r"""Hessian of a PyTorch data-set loss, applied by batched Hessian-vector products.

    Build it with :func:`hessian`. A product ``H @ V`` (``V`` of shape ``(n, b)``, float64)
    converts ``V`` to the parameters' dtype and device, makes one pass over the data and
    returns float64.

    Attributes
    ----------
    names : list of str
        Parameter names (as in ``model.named_parameters()``) in the order of the flat
        vector.
    shapes : list of tuple of int
        Their shapes.
    slices : dict of str to slice
        Where each parameter lies in the flat vector.
    named_parameters : list of (str, torch.Tensor)
        The selected parameters themselves (templates for :func:`unflatten`).
    hvp_method : str
        ``"forward-over-reverse"`` or ``"double-backward"``; with ``hvp="auto"`` it is
        ``None`` until the first product decides (see :func:`hessian`).
    fallback_reason : str or None
        Why forward-over-reverse was abandoned, when it was.
    native : bool
        Whether the native path is on: ``array_namespace`` is then
        ``array_api_compat.torch`` and :meth:`native_matmat` takes and returns tensors on
        ``device`` (see :func:`hessian`).
    """

    def __init__(
        self,
        setup: _Setup,
        *,
        check_determinism: bool,
        hvp: HvpMethod,
        chunk_size: int | None,
        native: bool | None = None,
    ):
        advertised = np.float64 if setup.dtype == torch.float64 else np.float32
        super().__init__(sum(setup.numels), advertised, check_determinism=check_determinism)
        self._setup = setup
        self.names = list(setup.names)
        self.shapes = list(setup.shapes)
        self.slices = {}
        offset = 0
        for name, numel in zip(setup.names, setup.numels, strict=True):
            self.slices[name] = slice(offset, offset + numel)
            offset += numel
        self.named_parameters = list(setup.selected)
        self.hvp_method: str | None = None if hvp == "auto" else hvp
        self.fallback_reason: str | None = None
        self._fallback_exception: BaseException | None = None
        self.chunk_size = chunk_size
        if native is None:  # automatic: on a GPU (any device with float64 but the CPU)
            native = setup.device.type not in ("cpu", "mps")
        elif native and setup.device.type == "mps":
            raise ValueError(
                "native=True needs float64 on the model's device for the Lanczos vectors, "
                "and MPS has none; leave native unset (host recurrence)"
            )
        #: Whether the native path is on (see :func:`hessian`, ``native``).
        self.native = bool(native)

    @property
    def array_namespace(self):
        """:mod:`array_api_compat` namespace of the native path (``None`` when it is off)."""
        if not self.native:
            return None
        import array_api_compat.torch

        return array_api_compat.torch

    @property
    def model(self) -> nn.Module:
        """The model whose Hessian this is."""
        return self._setup.model

    @property
    def torch_dtype(self) -> torch.dtype:
        """Dtype in which the products are computed (that of the parameters)."""
        return self._setup.dtype

    @property
    def device(self) -> torch.device:
        """Device on which the products are computed (that of the parameters)."""
        return self._setup.device

    def unflatten(self, vector: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector of length ``n`` into ``{name: tensor}`` (see :func:`unflatten`)."""
        return unflatten(vector, self.named_parameters)

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Flatten ``{name: tensor}`` in this operator's order (missing names raise KeyError)."""
        return flatten([tensors[name] for name in self.names])

    # -- products ----------------------------------------------------------------------------
    def _nondeterminism_hint(self) -> str:
        found = _train_mode_problems(self._setup.model)
        shuffle = _shuffling_loader(self._setup.data)
        if shuffle:
            found.append(shuffle)
        hint = _GENERIC_HINT
        if found:
            hint += ". Found: " + "; ".join(found)
        return hint

    def _tangents(self, V: np.ndarray) -> torch.Tensor:
        s = self._setup
        T = torch.from_numpy(np.ascontiguousarray(V.T)).to(s.dtype)
        return T.to(s.device)

    def _split(self, T: torch.Tensor) -> dict[str, torch.Tensor]:
        """(b, n) -> {name: (b, *shape)}."""
        s = self._setup
        pieces = torch.split(T, s.numels, dim=1)
        return {
            name: piece.reshape(T.shape[0], *shape)
            for name, piece, shape in zip(s.names, pieces, s.shapes, strict=True)
        }

    def _hvp(self, V: np.ndarray) -> np.ndarray:
        out = self._products(self._tangents(V))
        return np.ascontiguousarray(out.to("cpu", torch.float64).numpy().T)

    def _hvp_native(self, V: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for a tensor ``V`` of shape (n, b); the result stays on the device."""
        s = self._setup
        T = V.T.to(device=s.device, dtype=s.dtype).contiguous()
        return self._products(T).T

    def _products(self, T: torch.Tensor) -> torch.Tensor:
        """One pass over the data for the tangents ``T`` (b, n); returns (b, n) on the device."""
        if self.hvp_method == "double-backward":
            out = self._pass_double_backward(T)
        elif self.hvp_method == "forward-over-reverse":
            out = self._pass_forward(T, decide=False)
        else:
            out = self._pass_forward(T, decide=True)
            if out is None:
                try:
                    out = self._pass_double_backward(T)
                except Exception as exc:
                    # both methods fail: most likely the model or the data, not the method
                    self.hvp_method = None
                    raise exc from self._fallback_exception
                finally:
                    self._fallback_exception = None
        return out

    def _pass_forward(self, T: torch.Tensor, *, decide: bool) -> torch.Tensor | None:
        """One pass of forward-over-reverse products, vmapped over the columns of ``T``.

        With ``decide=True`` a failure on the first batch switches the operator to double
        backward for good and returns None.
        """
        s = self._setup
        frozen = s.frozen()
        primals = {name: p.detach() for name, p in s.selected}
        tangents = self._split(T)
        total = torch.zeros(T.shape, dtype=s.accumulator_dtype(), device=s.device)
        count = 0
        for args, kwargs, targets, size in s.batches():

            def grad_fn(p, args=args, kwargs=kwargs, targets=targets):
                return torch.func.grad(s.batch_loss)(p, frozen, args, kwargs, targets)

            def column(t, grad_fn=grad_fn):
                return torch.func.jvp(grad_fn, (primals,), (t,))[1]

            try:
                hv = torch.func.vmap(column, chunk_size=self.chunk_size)(tangents)
            except torch.cuda.OutOfMemoryError:
                raise  # not a missing forward-mode rule: pass a smaller chunk_size
            except Exception as exc:
                if not decide:
                    raise
                self.hvp_method = "double-backward"
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                self._fallback_exception = exc
                return None
            if decide:
                self.hvp_method = "forward-over-reverse"
                decide = False
            flat = torch.cat([hv[name].reshape(T.shape[0], -1) for name in s.names], dim=1)
            total += size * flat.to(total.dtype)
            count += size
        if decide:  # no batch at all
            self.hvp_method = None
        return s.finish(total, count)

    def _pass_double_backward(self, T: torch.Tensor) -> torch.Tensor:
        r"""One pass of double-backward products :math:`\nabla(\nabla L_k \cdot v)`."""
        s = self._setup
        frozen = s.frozen()
        b = T.shape[0]
        columns = [self._split(T[j : j + 1]) for j in range(b)]
        total = torch.zeros(T.shape, dtype=s.accumulator_dtype(), device=s.device)
        count = 0
        for args, kwargs, targets, size in s.batches():
            leaves = s.leaves()
            inputs = list(leaves.values())
            with torch.enable_grad():
                value = s.batch_loss(leaves, frozen, args, kwargs, targets)
                grads = torch.autograd.grad(value, inputs, create_graph=True, allow_unused=True)
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            weight = float(size)
            for j in range(b):
                if not live:  # the loss is at most linear in the parameters
                    continue
                hv = torch.autograd.grad(
                    [grads[i] for i in live],
                    inputs,
                    grad_outputs=[columns[j][s.names[i]][0] for i in live],
                    retain_graph=j < b - 1,
                    allow_unused=True,
                )
                hv = s.zeros_for_unused(hv, inputs)
                flat = torch.cat([h.reshape(-1) for h in hv])
                total[j] += weight * flat.to(total.dtype)
            count += size
        return s.finish(total, count)


# ---------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------
def hessian(
    model: nn.Module,
    loss_fn: Any,
    data: Iterable[Any],
    *,
    params: Any = None,
    reduction: Reduction = "mean",
    check_determinism: bool = True,
    hvp: HvpMethod = "auto",
    chunk_size: int | None = None,
    native: bool | None = None,
) -> TorchHessian:
    r"""Hessian of a model's data-set loss as a :class:`scipy.sparse.linalg.LinearOperator`.

    .. math::

        H = \nabla^2_\theta \Big(\frac{1}{N}\sum_{i=1}^N \ell(f_\theta(x_i), y_i)\Big)
          = \frac{1}{N} \sum_{i=1}^N \nabla^2_\theta\, \ell_i

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is called as ``model(inputs)`` (``model(*inputs)`` for a tuple or
        list of inputs, ``model(**inputs)`` for a dict) through
        :func:`torch.func.functional_call`, with its buffers. It is never modified: in
        training mode the buffers are cloned for each pass, so BatchNorm running statistics
        stay as they are. Call ``model.eval()`` first (see Notes).
    loss_fn : callable
        ``loss_fn(outputs, targets)`` returning the **mean** loss over the batch, e.g.
        ``torch.nn.CrossEntropyLoss()``. A torch loss module with ``reduction`` other than
        ``"mean"`` is rejected.
    data : iterable of (inputs, targets)
        Batches, re-iterable: a list of pairs or a :class:`torch.utils.data.DataLoader`
        (with ``shuffle=False``). A one-shot generator is rejected. The number of samples
        of a batch is ``targets.shape[0]`` (``len(targets)``; the first input's leading
        dimension when ``targets`` is None). Floating-point tensors (and NumPy arrays) are
        converted to the parameters' dtype and moved to their device; integer tensors (class
        labels) keep their dtype.
    params : optional
        Which parameters the Hessian is taken with respect to (the others stay fixed).
        ``None`` (default): every parameter with ``requires_grad=True``, in
        ``model.named_parameters()`` order. Otherwise an iterable of parameter names,
        parameters, ``(name, parameter)`` pairs or sub-modules (their parameters), or one
        of these alone, e.g. ``params=model.fc1`` or ``params=["fc1.weight"]``: the
        diagonal block of the full Hessian, in the given order (per-layer spectra).
    reduction : {"mean", "sum"}, default "mean"
        Data-set loss: the mean over the ``N`` samples or their sum (``N`` times the mean).
    check_determinism : bool, default True
        Refuse operators that change between products. Up front, raise
        :class:`DeterminismError` if a dropout or BatchNorm layer is in training mode or
        ``data`` is a shuffling DataLoader; then evaluate the first product twice and raise
        if the two differ (see :class:`~spectral.adapters.HessianOperator`).
    hvp : {"auto", "forward-over-reverse", "double-backward"}, default "auto"
        How products are computed. ``"auto"`` tries forward-over-reverse on the first batch
        and, if it raises (a custom :class:`torch.autograd.Function` without forward-mode
        support, an operator without a ``vmap`` rule, in-place updates of captured tensors
        such as BatchNorm running statistics in training mode, random operations inside
        ``vmap``), switches to double backward for the lifetime of the operator
        (``H.hvp_method`` and ``H.fallback_reason`` record the choice).
    chunk_size : int, optional
        Passed to :func:`torch.func.vmap`: evaluate at most this many columns at a time
        (less memory, same single pass over the data). ``None`` evaluates all at once.
    native : bool, optional
        Offer the native path: :func:`spectral.slq` and :func:`spectral.lanczos` then run
        the Lanczos recurrence on tensors on the model's device (through
        :mod:`array_api_compat`), with no host round trip per step. ``None`` (default):
        on when the parameters are on a GPU (any device but ``cpu`` and ``mps``), off on
        the CPU, where host NumPy is as fast; ``True`` on the CPU too (tests). Not
        available on MPS, which has no float64 for the Lanczos vectors. The operator's
        ``matmat`` and ``@`` take NumPy arrays either way.

    Returns
    -------
    TorchHessian
        A symmetric operator of shape ``(n, n)``, ``n`` the number of selected scalar
        parameters, with ``dtype`` float64 for a float64 model and float32 otherwise
        (float32, bfloat16, float16). Use it with :func:`spectral.slq` or
        :func:`scipy.sparse.linalg.eigsh`.

    Raises
    ------
    DeterminismError
        See ``check_determinism``.
    TypeError
        ``data`` is a one-shot iterator, or an argument has the wrong type.
    ValueError
        Unknown parameter names, parameters not in the model, a loss with a non-mean
        reduction, selected parameters of mixed dtypes or devices.

    Notes
    -----
    **Uneven batches.** ``loss_fn`` returns the batch mean :math:`\bar\ell_k` over
    :math:`n_k` samples. The data-set sum is :math:`\sum_k n_k \bar\ell_k` and the data-set
    mean is that divided by :math:`N = \sum_k n_k`, so each batch's product is weighted by
    :math:`n_k` and (for ``"mean"``) the total divided by :math:`N` counted during the pass.
    Batches of sizes 64, 64 and 17 give the same operator as one batch of 145.

    **Products.** For a block :math:`V = [v_1, \dots, v_b]` and each batch,

    .. math:: H_k v_j = \frac{d}{dt} \nabla_\theta \bar\ell_k(\theta + t v_j)\Big|_{t=0}

    by :func:`torch.func.jvp` of :func:`torch.func.grad`, vectorised over :math:`j` by
    :func:`torch.func.vmap`, so the data are read once per block. The double-backward
    fallback computes :math:`H_k v_j = \nabla_\theta (\nabla_\theta \bar\ell_k \cdot v_j)`
    column by column on one retained graph per batch (still one pass over the data).
    Parameters that do not influence the loss get zero rows and columns.

    **Precision and device.** Products run in the parameters' dtype on their device; the
    batch results are accumulated in float64 (float32 on MPS) on that device and returned
    as float64 NumPy arrays (as float64 tensors on the device on the native path). Lanczos
    in :mod:`spectral` runs in float64 regardless.

    **BatchNorm.** In evaluation mode (``model.eval()``) BatchNorm normalises with its
    running (population) statistics: every sample's loss depends only on that sample, and
    :math:`H` is the Hessian of the data-set mean of per-sample losses, independent of the
    batching. In training mode it normalises with the statistics of the current batch:
    the loss of a sample depends on the other samples of its batch, so :math:`H` is
    :math:`\sum_k (n_k/N) \nabla^2 \bar\ell_k` of the batch-statistics losses, which
    changes with the batch size, the batch composition and the order of a shuffling
    loader. The determinism check therefore refuses train-mode BatchNorm; pass
    ``check_determinism=False`` to analyse that loss deliberately (with a fixed batch order
    it is a well-defined, symmetric operator).

    **Dropout** in training mode draws new masks on every pass: call ``model.eval()``.

    Examples
    --------
    >>> import torch, scipy.sparse.linalg as sla
    >>> from spectral.adapters import torch as spt
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
    ...                             torch.nn.Linear(8, 3)).double().eval()
    >>> x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
    ...                                      batch_size=16)
    >>> H = spt.hessian(model, torch.nn.CrossEntropyLoss(), loader)
    >>> top = sla.eigsh(H, k=3, return_eigenvectors=False)
    """
    if hvp not in ("auto", "forward-over-reverse", "double-backward"):
        raise ValueError(
            f"hvp must be 'auto', 'forward-over-reverse' or 'double-backward', got {hvp!r}"
        )
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    setup = _Setup(model, loss_fn, data, params, reduction)
    if check_determinism:
        problems = _train_mode_problems(model)
        shuffle = _shuffling_loader(data)
        if shuffle:
            problems.append(shuffle)
        if problems:
            raise DeterminismError(
                "the Hessian would change from one product to the next, which makes Lanczos "
                "meaningless: "
                + "; ".join(problems)
                + ". Fix: call model.eval() (population BatchNorm statistics, no dropout) and "
                "iterate over the data in a fixed order (DataLoader(..., shuffle=False)). "
                "Pass check_determinism=False to skip this check."
            )
    return TorchHessian(
        setup,
        check_determinism=check_determinism,
        hvp=hvp,
        chunk_size=None if chunk_size is None else int(chunk_size),
        native=native,
    )


def gradient(
    model: nn.Module,
    loss_fn: Any,
    data: Iterable[Any],
    *,
    params: Any = None,
    reduction: Reduction = "mean",
) -> np.ndarray:
    r"""Gradient of the data-set loss, flattened like :func:`hessian`'s operator.

    .. math:: g = \nabla_\theta L = \frac{1}{N} \sum_k n_k \nabla_\theta \bar\ell_k

    (without :math:`1/N` for ``reduction="sum"``). Arguments as in :func:`hessian`;
    parameters that do not influence the loss get zeros. The model is not modified.

    Returns
    -------
    numpy.ndarray
        Float64 vector of length ``n`` (the parameters in ``params`` order).
    """
    setup = _Setup(model, loss_fn, data, params, reduction)
    frozen = setup.frozen()
    total = torch.zeros(sum(setup.numels), dtype=setup.accumulator_dtype(), device=setup.device)
    count = 0
    for args, kwargs, targets, size in setup.batches():
        leaves = setup.leaves()
        inputs = list(leaves.values())
        with torch.enable_grad():
            value = setup.batch_loss(leaves, frozen, args, kwargs, targets)
            grads = torch.autograd.grad(value, inputs, allow_unused=True)
        grads = setup.zeros_for_unused(grads, inputs)
        flat = torch.cat([g.reshape(-1) for g in grads])
        total += size * flat.to(total.dtype)
        count += size
    return setup.finish(total, count).to("cpu", torch.float64).numpy()


def loss(
    model: nn.Module,
    loss_fn: Any,
    data: Iterable[Any],
    *,
    reduction: Reduction = "mean",
) -> float:
    r"""Evaluate the data-set loss :math:`L = \frac{1}{N}\sum_k n_k \bar\ell_k` (or the sum).

    Arguments as in :func:`hessian`. Evaluated without gradients; the model is not
    modified (buffers are cloned in training mode).
    """
    setup = _Setup(model, loss_fn, data, None, reduction)
    frozen = setup.frozen()
    current = {name: p.detach() for name, p in setup.selected}
    total = 0.0
    count = 0
    with torch.no_grad():
        for args, kwargs, targets, size in setup.batches():
            value = setup.batch_loss(current, frozen, args, kwargs, targets)
            total += size * float(value.to(torch.float64))
            count += size
    if count == 0:
        raise ValueError("data holds no samples")
    return total / count if reduction == "mean" else total
