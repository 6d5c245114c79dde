"""
Quick start: a density, its CDF and their certified bands
=========================================================

:func:`spectral.matrices.hessian_like` builds a matrix whose spectrum looks like a
neural-network Hessian's: half of the eigenvalues are exactly zero, a narrow bulk sits around
zero, and eight outliers lie on both sides. Its exact eigenvalues come with it, so we can
hold the estimate against the truth.
"""

import matplotlib.pyplot as plt
import numpy as np

import spectral
import spectral.plot
from spectral.matrices import hessian_like

A, eigenvalues = hessian_like(6000, seed=0)
print(A.shape, "eigenvalues in", eigenvalues[0], "...", eigenvalues[-1])

# %%
# One call computes everything: ``num_probes`` random unit vectors, ``num_steps`` Lanczos
# steps each, all probes advancing together (one sparse product per step for all of them).
m = spectral.slq(A, num_steps=90, num_probes=8, seed=0)
print(m.num_matvecs, "matrix-vector products; nodes", m.nodes.shape)

# %%
# Everything else is post-processing of the Gauss rules in ``m`` and never touches ``A``
# again. The certified bounds need a bracket ``[a, b]`` of the spectrum; here we know one.
# Without it, :meth:`~spectral.SpectralMeasure.bounds` estimates one from the extreme Ritz
# values and says so in ``conditions``.
b = m.bounds(interval=(eigenvalues[0], eigenvalues[-1]))
print(f"W1 bound {b.wasserstein:.4f}, KS bound {b.ks:.4f}, statistical eps {b.epsilon:.4f}")
print("certified:", b.certified)
for condition in b.conditions:
    print(" -", condition)

# %%
# The smoothed density
# --------------------
# :meth:`~spectral.SpectralMeasure.density` smooths the Gauss rules with a Gaussian of width
# σ (by default the Lanczos resolution rule). The light band is the certified envelope of the
# smoothed true density, the darker one is ±2 standard errors across probes (typical noise,
# not a guarantee), the dashed line is the exact spectrum smoothed with the same σ, and the
# red ticks are the Ritz values with the isolated ones labelled.
d = m.density(interval=b.interval)
fig, axes = plt.subplots(2, 1, figsize=(7, 7), layout="constrained")
spectral.plot.density(d, axes[0], measure=m, truth=eigenvalues)
spectral.plot.density(d, axes[1], log=True, truth=eigenvalues, certified=False)
axes[1].set_ylim(1e-7, None)
axes[1].set_title("the same on a log scale (bands of probe noise only)")
plt.show()

# %%
# On the linear scale the certified band is wide where the density is steep: it covers every
# spectrum consistent with the moments the run has measured. On the log scale the tails are
# where the probes disagree most (see :doc:`/concepts/probes`).
print(f"sigma = {d.sigma:.4f}; smoothing moves the spectrum by at most {d.smoothing_bias:.4f}")
print(f"L1 bound on the smoothed density: {d.l1_bound:.3f}; sup bound: {d.sup_bound:.3f}")

# %%
# A finer σ
# ---------
# The default σ is tied to what 90 steps can resolve across the whole range ``[-3.5, 20]``,
# so the spike of zeros and the bulk merge into one peak. The same run can be smoothed with
# any σ at no cost: with ``sigma=0.02`` the spike and the skewed bulk separate. The certified
# band widens (the density bounds grow like ``1/σ`` or faster), which is the price of asking for
# detail finer than the run's resolution.
fine = m.density(np.linspace(-0.4, 0.6, 800), sigma=0.02, interval=b.interval)
spectral.plot.density(fine, truth=eigenvalues)
plt.show()

# %%
# The CDF and its band
# --------------------
# The band ``lower <= true CDF <= upper`` holds at every point at once with probability
# ``b.confidence``. The true CDF (dashed) stays inside it; the zoom on the right shows the
# jump of one half at the zero eigenvalues.
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
spectral.plot.cdf(m, axes[0], bounds=b, truth=eigenvalues)
spectral.plot.cdf(m, axes[1], bounds=b, truth=eigenvalues, x=np.linspace(-0.4, 0.6, 2000))
axes[1].set_title("zoom on the spike and the bulk")
plt.show()

x = np.linspace(-4, 21, 2001)
lower, upper = b.cdf_band(x)
true_cdf = np.searchsorted(eigenvalues, x, side="right") / eigenvalues.size
print("band holds everywhere on the grid:", bool(np.all((lower <= true_cdf) & (true_cdf <= upper))))

# %%
# Since the eigenvalues are known here, the true Wasserstein-1 distance can be computed: it
# is far below the certified bound, which has to hold for every spectrum consistent with
# the moments the run has measured (:doc:`/concepts/bounds`).
xs = np.sort(np.concatenate([m.nodes.ravel(), eigenvalues]))
gap = np.abs(np.searchsorted(eigenvalues, xs, side="right") / eigenvalues.size - m.cdf(xs))
print(f"true W1 {np.sum(gap[:-1] * np.diff(xs)):.4f} <= certified {b.wasserstein:.4f}")

# %%
# Spectral sums and outliers
# --------------------------
# The same run estimates traces (and any ``tr f(A)``) with a standard error across probes,
# and finds the isolated eigenvalues.
t = m.trace()
print(f"trace {t.value:.2f} ± {t.stderr:.2f} (exact {eigenvalues.sum():.2f})")
print("outliers found:", spectral.ritz_outliers(m))
