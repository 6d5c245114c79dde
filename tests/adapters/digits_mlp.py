"""One small MLP on scikit-learn's digits, defined in NumPy, shared by the adapter tests.

Every framework builds the same network from these arrays, so the Hessian spectra of the
three adapters can be compared with each other (they must agree to rounding error).

Architecture: 64 -> HIDDEN (tanh) -> 10, mean softmax cross-entropy over the samples.
Weights follow the ``x @ W + b`` convention (``W`` has shape ``(in, out)``); a framework
that stores ``(out, in)`` (PyTorch's ``nn.Linear``) uses ``W.T``.
"""

from __future__ import annotations

import numpy as np

HIDDEN = 12
NUM_CLASSES = 10


def digits_data(num_samples: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """First ``num_samples`` digits images scaled to [0, 1] and their integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data[:num_samples] / 16.0).astype(np.float64)
    y = data.target[:num_samples].astype(np.int64)
    return x, y


def mlp_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights ``W1 (64, HIDDEN), b1, W2 (HIDDEN, 10), b2`` drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(scale=1 / 8, size=(64, HIDDEN)),
        "b1": rng.normal(scale=0.1, size=HIDDEN),
        "W2": rng.normal(scale=1 / np.sqrt(HIDDEN), size=(HIDDEN, NUM_CLASSES)),
        "b2": rng.normal(scale=0.1, size=NUM_CLASSES),
    }


def num_params() -> int:
    """Number of scalar parameters of the MLP."""
    return 64 * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES


def loss_numpy(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The data-set loss in NumPy (a reference value for each framework's loss)."""
    h = np.tanh(x @ w["W1"] + w["b1"])
    z = h @ w["W2"] + w["b2"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())
