"""Random probe vectors for stochastic quadrature.

All probes are returned with unit Euclidean norm, so that the Gauss weights of every probe sum
to one. Normalisation changes the distributions as follows:

``"sphere"``
    ``v = g / ‖g‖`` with ``g ~ N(0, I)``: uniform on the unit sphere ``S^{n−1}``. For this
    distribution the weighted spectral CDF ``Ψ_v(x)`` of every probe is exactly
    ``Beta(m/2, (n−m)/2)``-distributed with ``m = n Φ(x)`` (Chen, Trogdon & Ubaru 2021),
    which is what the statistical error bounds of :mod:`spectral.bounds` use.
``"rademacher"``
    entries ``±1/√n``; already of unit norm. Lower variance for traces of matrices with a
    heavy diagonal, but the Beta law (and hence the certified statistical bound) does not hold.
``"gaussian"``
    ``N(0, I/n)`` scaled to unit norm, which is the sphere distribution again; offered for
    parity with Hutchinson's Gaussian estimator. It draws the same stream as ``"sphere"``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PROBE_KINDS", "draw_probes"]

PROBE_KINDS = ("sphere", "rademacher", "gaussian")


def draw_probes(
    n: int, num_probes: int, kind: str = "sphere", seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Draw ``num_probes`` unit-norm probe vectors of length ``n``.

    Parameters
    ----------
    n : int
        Length of each probe.
    num_probes : int
        Number of probes ``P``.
    kind : {"sphere", "rademacher", "gaussian"}
        Distribution, see the module docstring.
    seed : int, numpy.random.Generator or None
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same probes.

    Returns
    -------
    ndarray of shape (n, P), float64
        Columns of unit Euclidean norm.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"probes must be one of {PROBE_KINDS}, got {kind!r}")
    if int(num_probes) < 1:
        raise ValueError(f"num_probes must be at least 1, got {num_probes}")
    rng = np.random.default_rng(seed)
    if kind == "rademacher":
        V = rng.integers(0, 2, size=(num_probes, n)).astype(np.float64) * 2.0 - 1.0
        V /= np.sqrt(n)
    else:
        V = rng.standard_normal((num_probes, n))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
    return np.ascontiguousarray(V.T)
