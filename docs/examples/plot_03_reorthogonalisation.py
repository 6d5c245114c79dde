"""
Reorthogonalisation: ghosts and why densities do not mind
=========================================================

``reorth="full"`` keeps every Lanczos vector and orthogonalises each new one against all of
them (``k·n`` stored numbers per probe). ``reorth="none"`` runs the bare three-term
recurrence with three vectors per probe (``O(n)`` memory). In floating point the bare
recurrence loses orthogonality as soon as a Ritz value converges and then finds the same
eigenvalue again and again: *ghost* Ritz values. This example shows the ghosts, shows that
the density does not change, and shows :func:`spectral.ritz_outliers` merging the ghosts
back into single eigenvalues.
"""

import matplotlib.pyplot as plt
import numpy as np

import spectral
import spectral.plot
from spectral.matrices import hessian_like

A, eigenvalues = hessian_like(4000, seed=0)
interval = (eigenvalues[0], eigenvalues[-1])
runs = {
    reorth: spectral.slq(A, num_steps=150, num_probes=2, seed=3, reorth=reorth)
    for reorth in ("full", "none")
}

# %%
# Counting Ritz values
# --------------------
# The matrix has six eigenvalues above 3 (the positive outliers ``4, 6, 8, 11, 15, 20``).
# With full reorthogonalisation each probe finds each of them once; without it the outliers,
# which converge first, are found many times over.
for reorth, m in runs.items():
    per_probe = [int(np.sum(m.nodes[p] > 3)) for p in range(m.num_probes)]
    print(f"reorth={reorth!r}: Ritz values above 3 per probe: {per_probe}")

# %%
# Greenbaum's analysis explains why this is harmless for a density: the finite-precision
# run is an exact run on a slightly larger matrix whose eigenvalues cluster tightly around
# the true ones, and the weights of the copies in a cluster add up to the weight of the one
# eigenvalue they copy. So the quadrature *measure* is right; only eigenvalue *counts* are
# wrong. The weights of the copies of the top eigenvalue confirm it:
top = eigenvalues[-1]
for reorth, m in runs.items():
    near = np.abs(m.nodes[0] - top) < 1e-6 * top
    print(
        f"reorth={reorth!r}: {int(near.sum())} Ritz value(s) at {top:g}, "
        f"total weight {m.weights[0, near].sum():.6e}"
    )

# %%
# The Ritz values of one probe, in ascending order, make the ghosts visible: without
# reorthogonalisation each outlier becomes a plateau of repeated values.
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for (reorth, m), marker in zip(runs.items(), ("o", "x"), strict=True):
    ax.plot(m.nodes[0], marker, ms=4, ls="none", label=f'reorth="{reorth}"')
for value in eigenvalues[eigenvalues > 3]:
    ax.axhline(value, color="0.8", lw=0.8, zorder=0)
ax.set_xlabel("index j of the Ritz value (probe 0)")
ax.set_ylabel("Ritz value θ_j")
ax.legend()
plt.show()

# %%
# The densities agree
# -------------------
fig, axes = plt.subplots(2, 1, figsize=(7, 6.5), layout="constrained", sharex=True)
for ax, (reorth, m) in zip(axes, runs.items(), strict=True):
    d = m.density(interval=interval)
    spectral.plot.density(d, ax, log=True, certified=False, truth=eigenvalues)
    ax.set_ylim(1e-7, None)
    ax.set_title(f'reorth="{reorth}" (σ = {d.sigma:.3g})')
plt.show()

# %%
# The curves are the same up to probe noise, and both runs are about equally far from the
# true spectrum:


def true_wasserstein(measure, eigenvalues):
    """W1 distance between the estimate's CDF and the true eigenvalue CDF (known here)."""
    x = np.sort(np.concatenate([measure.nodes.ravel(), eigenvalues]))
    true_cdf = np.searchsorted(eigenvalues, x, side="right") / eigenvalues.size
    return float(np.sum(np.abs(true_cdf - measure.cdf(x))[:-1] * np.diff(x)))


for reorth, m in runs.items():
    print(f"reorth={reorth!r}: true W1 = {true_wasserstein(m, eigenvalues):.5f}")

# %%
# Outliers with the ghosts merged
# -------------------------------
# :func:`spectral.ritz_outliers` keeps converged Ritz values outside the bulk and merges
# copies that agree to a relative tolerance, so both runs report the same eight isolated
# eigenvalues.
for reorth, m in runs.items():
    print(f"reorth={reorth!r}: outliers {spectral.ritz_outliers(m)}")

# %%
# What changes is the certificate
# -------------------------------
# The interlacing bounds are statements about exact arithmetic. With full
# reorthogonalisation (to working precision) they apply; without it they hold only
# approximately, and :class:`~spectral.ErrorBounds` says so: ``certified`` is False and
# ``conditions`` names the reason.
for reorth, m in runs.items():
    eb = m.bounds(interval)
    print(f"reorth={reorth!r}: W1 bound {eb.wasserstein:.3f}, certified={eb.certified}")
print(*runs["none"].bounds(interval).conditions, sep="\n")

# %%
# Memory is the reason to choose ``"none"``: a Hessian with ``n = 10⁷`` parameters and
# ``k = 90`` steps needs 7.2 GB of float64 basis per probe with full reorthogonalisation and
# about 240 MB with none. Use ``"full"`` when the basis fits, or when Ritz *vectors* matter
# (:func:`spectral.gradient_concentration` always reorthogonalises); use ``"none"`` for
# densities and spectral sums of models too large for the basis, with a few more steps.
