"""Stochastic Lanczos quadrature: the one function that calls the operator."""

from __future__ import annotations

import numpy as np

from ._backends import to_device
from .lanczos import REORTH_MODES, _lanczos_block
from .measure import SpectralMeasure
from .operators import aslinearoperator
from .probes import PROBE_KINDS, draw_probes

__all__ = ["slq"]


def slq(
    A,
    num_steps: int = 90,
    num_probes: int = 1,
    *,
    seed: int | np.random.Generator | None = None,
    probes: str = "sphere",
    reorth: str = "full",
    batch_size: int | None = None,
    progress: bool = False,
    check_symmetry: bool = True,
    basis_dtype: str = "float64",
    basis_device: str = "device",
) -> SpectralMeasure:
    """Estimate the spectral measure of a symmetric operator by stochastic Lanczos quadrature.

    For each of ``P`` random unit probes ``v``, ``k`` Lanczos steps give the Gauss rule
    ``(θ_j, ω_j)`` of the probe's weighted spectral measure
    ``Ψ_v = Σ_i (u_iᵀv)² δ_{λ_i}`` (Golub & Welsch); since ``E[Ψ_v] = (1/n) Σ_i δ_{λ_i}``
    for the probe distributions offered, the average of the rules estimates the eigenvalue
    distribution (Ghorbani, Krishnan & Xiao 2019, Algorithm 1; Ubaru, Chen & Saad 2017).

    Parameters
    ----------
    A : array_like, sparse matrix, LinearOperator or operator-like
        Real symmetric ``n × n`` operator (see :func:`spectral.aslinearoperator`).
    num_steps : int, default 90
        Lanczos steps ``k`` per probe (capped at ``n``). Moments up to degree ``2k − 1``
        are exact; the a-priori quadrature error is ``W₁ ≤ π(b − a)/(4k)``.
    num_probes : int, default 1
        Number of probes ``P``. In high dimension one probe often suffices for the bulk
        (the statistical error is ``sqrt(ln(2n/η)/((n+2)P))`` in KS distance); log-scale
        tails need more.
    seed : int, Generator or None
        Seed of the probes; the same seed gives the same result, whatever ``batch_size``.
    probes : {"sphere", "rademacher", "gaussian"}, default "sphere"
        Probe distribution (see :mod:`spectral.probes`); the certified statistical bound is
        proven for sphere probes (Gaussian probes are normalised, hence the same law).
    reorth : {"full", "none"}, default "full"
        Full reorthogonalisation (basis of ``k·n`` float64 numbers per probe in a batch) or
        none (``O(n)`` memory per probe); see :func:`spectral.lanczos` and the memory table
        in :doc:`/concepts/precision`.
    batch_size : int, optional
        How many probes share one ``matmat`` (all of them by default). Memory with full
        reorthogonalisation grows as ``batch_size · k · n``.
    progress : bool, default False
        Show a :mod:`tqdm` progress bar over Lanczos steps.
    check_symmetry : bool, default True
        Run the symmetry check of :func:`spectral.aslinearoperator` (two extra products
        for a matrix-free operator without ``is_symmetric = True``).
    basis_dtype : {"float64", "float32"}, default "float64"
        With ``reorth="full"``, store the basis in float32 (half the memory; Gram–Schmidt
        still accumulated in float64); see :func:`spectral.lanczos`.
    basis_device : {"device", "host"}, default "device"
        With ``reorth="full"`` and an operator on a GPU, ``"host"`` keeps the basis in host
        memory; see :func:`spectral.lanczos`.

    Notes
    -----
    Operators whose arrays live in another library (CuPy, PyTorch, JAX; see
    :func:`spectral.aslinearoperator`) run the recurrence on their device: the probes are
    drawn with NumPy from ``seed`` — the same seed gives the same probes on every
    backend — and each batch is copied to the device once.

    Returns
    -------
    SpectralMeasure
        Raw per-probe quadrature with ``cdf``, ``moments``, ``spectral_sum``, ``trace``,
        ``logdet``, ``density``, ``bounds``, ``save`` and ``combine``.

    Raises
    ------
    ValueError, TypeError
        For invalid input (see :func:`spectral.aslinearoperator`) or arguments.
    FloatingPointError
        When the operator returns NaN or inf.

    Examples
    --------
    >>> import numpy as np, spectral
    >>> A = np.diag(np.linspace(-1.0, 1.0, 200))
    >>> m = spectral.slq(A, num_steps=30, num_probes=4, seed=0)
    >>> m.nodes.shape
    (4, 30)
    >>> bool(m.bounds(interval=(-1, 1)).wasserstein < 0.5)
    True
    """
    op = aslinearoperator(A, check_symmetry=check_symmetry)
    n = op.shape[0]
    if probes not in PROBE_KINDS:
        raise ValueError(f"probes must be one of {PROBE_KINDS}, got {probes!r}")
    if reorth not in REORTH_MODES:
        raise ValueError(f"reorth must be one of {REORTH_MODES}, got {reorth!r}")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    num_probes = int(num_probes)
    if num_probes < 1:
        raise ValueError(f"num_probes must be at least 1, got {num_probes}")
    batch = num_probes if batch_size is None else int(batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    k = min(int(num_steps), n)
    from ._array_lanczos import check_memory_options, lanczos_native

    basis_dtype, basis_device = check_memory_options(basis_dtype, basis_device)
    native = getattr(op, "native_recurrence", False)

    V = draw_probes(n, num_probes, probes, seed)
    alphas, betas, residuals, steps = [], [], [], []
    num_matvecs = 0
    for start in range(0, num_probes, batch):
        if native:  # the batch goes to the operator's device once; the recurrence stays there
            block = to_device(op.array_namespace, V[:, start : start + batch], op.device)
            res = lanczos_native(
                op,
                block,
                k,
                reorth,
                progress,
                basis_dtype=basis_dtype,
                basis_device=basis_device,
                keep_basis=False,
            )
        else:
            block = np.asfortranarray(V[:, start : start + batch])
            res = _lanczos_block(op, block, k, reorth, progress, basis_dtype=basis_dtype)
        alphas.append(res.alpha)
        betas.append(res.beta)
        residuals.append(res.residual)
        steps.append(res.steps)
        num_matvecs += res.num_matvecs
        del res
    return SpectralMeasure.from_lanczos(
        np.concatenate(alphas),
        np.concatenate(betas),
        np.concatenate(residuals),
        np.concatenate(steps),
        n=n,
        num_matvecs=num_matvecs,
        probes=probes,
        reorth=reorth,
        dtype=str(op.dtype),
    )
