"""
Choosing the number of steps and probes
=======================================

Two numbers set the cost of a run: ``num_steps`` (``k``, Lanczos steps per probe) and
``num_probes`` (``P``). The first controls the *quadrature* error of each probe, the second
the *statistical* error of averaging random probes. This example plans a run with the
a-priori bounds and then checks the plan against the a-posteriori (certified) bounds of an
actual run, read off for every smaller ``k`` and ``P`` at no extra cost.
"""

import math

import matplotlib.pyplot as plt
import numpy as np

import spectral
import spectral.plot
from spectral.bounds import statistical_epsilon
from spectral.matrices import hessian_like

# %%
# Planning before any product
# ---------------------------
# For one probe, ``k`` Gauss-quadrature steps are within Wasserstein-1 distance
# ``π (b − a) / (4k)`` of the probe's spectral measure, whatever the matrix (Jackson's theorem
# applied to the ``2k − 1`` moments the rule matches). To guarantee a fraction ``t`` of the
# spectral width from this part alone one needs ``k ≥ π / (4t)``.
for t in (0.05, 0.02, 0.01, 0.005):
    print(f"W1 <= {t:5.3f} (b - a)  needs  k >= {math.ceil(math.pi / (4 * t)):4d} steps")

# %%
# The statistical part is a Kolmogorov–Smirnov bound: with probability ``1 − η``, the average
# of ``P`` sphere probes is within ``ε = sqrt(ln(2n/η) / ((n + 2) P))`` of the true CDF
# everywhere. It *shrinks* as the matrix grows, which is why one probe is often enough for a
# Hessian with millions of parameters.
for n in (10**3, 10**5, 10**7):
    eps = [statistical_epsilon(n, P, confidence=0.99) for P in (1, 4, 16)]
    print(f"n = {n:>8}: eps = " + ", ".join(f"{e:.4f}" for e in eps) + "  for P = 1, 4, 16")

# %%
# One run, every smaller run for free
# -----------------------------------
# The Lanczos tridiagonal after ``j`` steps is the leading ``j × j`` block of the one after
# ``k`` steps, so :meth:`~spectral.SpectralMeasure.truncate` gives exactly the result a
# shorter run (or one with fewer probes) would have produced. :func:`spectral.plot.convergence`
# uses that to draw the certified bound against ``k`` or ``P``.
A, eigenvalues = hessian_like(6000, seed=0)
interval = (eigenvalues[0], eigenvalues[-1])
m = spectral.slq(A, num_steps=160, num_probes=16, seed=1)


def true_wasserstein(measure, eigenvalues):
    """W1 distance between the estimate's CDF and the true eigenvalue CDF (known here)."""
    x = np.sort(np.concatenate([measure.nodes.ravel(), eigenvalues]))
    true_cdf = np.searchsorted(eigenvalues, x, side="right") / eigenvalues.size
    return float(np.sum(np.abs(true_cdf - measure.cdf(x))[:-1] * np.diff(x)))


fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
spectral.plot.convergence(m, axes[0], over="steps", interval=interval)
spectral.plot.convergence(m, axes[1], over="probes", interval=interval)
steps = np.arange(10, 161, 10)
axes[0].plot(
    steps,
    [true_wasserstein(m.truncate(num_steps=j), eigenvalues) for j in steps],
    "k^--",
    ms=4,
    label="true W₁ (known spectrum)",
)
probes = np.arange(1, 17)
axes[1].plot(
    probes,
    [true_wasserstein(m.truncate(num_probes=p), eigenvalues) for p in probes],
    "k^--",
    ms=4,
    label="true W₁ (known spectrum)",
)
for ax in axes:
    ax.legend(fontsize="small")
axes[0].set_title(f"P = {m.num_probes} probes")
axes[1].set_title(f"k = {m.num_steps} steps")
plt.show()

# %%
# Reading the plots. The certified bound (blue) is the sum of two parts. The quadrature part
# (orange) falls with ``k`` and stays well below the a-priori planning line (dotted), which
# must hold for every spectrum; the statistical part is ``ε (b − a)``, the KS half-width
# spread over the whole bracket. For this small matrix (``n = 6000``) the statistical part
# dominates from about 30 steps on, so the blue curve flattens: more steps no longer buy a
# better certificate, more probes do, as ``1/sqrt(P)`` (right). For a network Hessian with
# millions of parameters ``ε`` is a hundred times smaller and the balance tips the other
# way. The true distance (black, known here) is far below both: a bound must cover every
# spectrum consistent with what the run has seen.
width = interval[1] - interval[0]
for k in (40, 90, 160):
    eb = m.truncate(num_steps=k).bounds(interval)
    print(
        f"k = {k:3d}: certified W1 <= {eb.wasserstein:.3f} = quadrature "
        f"{eb.per_probe_wasserstein.mean():.3f} + statistical {eb.epsilon * width:.3f} (about);"
        f" true {true_wasserstein(m.truncate(num_steps=k), eigenvalues):.4f}"
    )
