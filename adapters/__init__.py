"""Framework adapters: Hessians of data-set losses as linear operators.

Each submodule imports only its own framework and is imported explicitly::

    from spectral.adapters import torch as spt      # PyTorch
    from spectral.adapters import jax as spj        # JAX
    from spectral.adapters import tensorflow as sptf  # TensorFlow / Keras

Every adapter's ``hessian(...)`` returns a :class:`HessianOperator`, a
:class:`scipy.sparse.linalg.LinearOperator` whose ``matmat`` is one batched
Hessian-vector product over the whole data set.
"""

from ._common import DeterminismError, HessianOperator

__all__ = ["DeterminismError", "HessianOperator"]
