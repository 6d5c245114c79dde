"""The certified error bounds hold, against the truth from dense eigendecompositions.

Quadrature part (deterministic): on every Hypothesis example, each probe's interlacing
bounds contain the probe's true weighted CDF Ψ_v, and the per-probe W₁ and KS bounds exceed
the true distances W₁(Ψ_v, Ψ̂_v), KS(Ψ_v, Ψ̂_v). Statistical part: coverage over many seeds
reaches the confidence level. The full bounds (W₁, KS, CDF band, density transfer) are
checked against the true eigenvalue CDF Φ on fixed seeds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import (
    eigen,
    ks_discrete,
    probe_measure,
    smoothed_cdf,
    smoothed_density,
    step_cdf,
    w1_discrete,
)
from strategies import probe_kinds, problems

import spectral
from spectral.bounds import error_bounds, statistical_epsilon
from spectral.matrices import from_spectrum, grid_laplacian, hessian_like
from spectral.probes import draw_probes

TOL = 1e-9  # rounding tolerance on CDF values (weights are sums of rounded squares)
#: Rounding tolerance on positions, relative to the bracket width: Ritz values and eigh's
#: eigenvalues of the same (repeated) eigenvalue differ in the last bits, and when rounding
#: keeps Lanczos going past a breakdown, a repeated eigenvalue shows up as two Ritz values
#: 10⁻¹⁶ apart sharing its weight; which of them comes first is then rounding noise.
POS_TOL = 1e-10


def assert_between(lower_fn, cdf_fn, upper_fn, x, delta):
    """lower(x) ≤ F(x + δ) + TOL and F(x − δ) ≤ upper(x) + TOL at the points ``x``."""
    lower, upper = lower_fn(x), upper_fn(x)
    assert np.all(lower <= cdf_fn(x + delta) + TOL), np.max(lower - cdf_fn(x + delta))
    assert np.all(cdf_fn(x - delta) <= upper + TOL), np.max(cdf_fn(x - delta) - upper)


def interlacing_bounds(nodes, weights, x):
    """Ψ̂↓(x) = Σ_{j<k} ω_j 1[θ_{j+1} ≤ x] and Ψ̂↑(x) = ω_1 + Σ_{j≥2} ω_j 1[θ_{j−1} ≤ x]."""
    lower = step_cdf(nodes[1:], weights[:-1], x)
    upper = weights[0] + step_cdf(nodes[:-1], weights[1:], x)
    return lower, upper


def w1_bound_formula(nodes, weights, a, b):
    """Σ_{j=0}^{k} max(ω_j, ω_{j+1}) (θ_{j+1} − θ_j), θ_0 = a, θ_{k+1} = b, ω_0 = ω_{k+1} = 0."""
    th = np.concatenate(([a], nodes, [b]))
    om = np.concatenate(([0.0], weights, [0.0]))
    return float(np.sum(np.maximum(om[:-1], om[1:]) * np.diff(th)))


@st.composite
def brackets(draw, eigenvalues):
    """A true bracket [a, b] ⊇ [λ_min, λ_max], tight or padded."""
    lo, hi = float(eigenvalues[0]), float(eigenvalues[-1])
    width = max(hi - lo, abs(lo), abs(hi), 1e-300)
    pad_lo, pad_hi = draw(st.sampled_from([0.0, 0.01, 0.5])), draw(st.sampled_from([0.0, 0.5]))
    return lo - pad_lo * width, hi + pad_hi * width


# -- quadrature part, every example -----------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    problem=problems(max_n=150),
    num_steps=st.integers(1, 25),
    num_probes=st.integers(1, 3),
    kind=probe_kinds,
    data=st.data(),
)
def test_per_probe_interlacing_bounds_contain_true_weighted_cdf(
    problem, num_steps, num_probes, kind, data
):
    lam, U = eigen(problem.A)
    a, b = data.draw(brackets(lam))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Rademacher: statistical part heuristic
        m = spectral.slq(problem.A, num_steps, num_probes, seed=problem.seed, probes=kind)
        eb = m.bounds(interval=(a, b))
    V = draw_probes(problem.n, num_probes, kind, problem.seed)
    a, b = eb.interval  # widened by at most rounding when a node strays
    for p in range(num_probes):
        atoms, w = probe_measure(lam, U, V[:, p])
        s = int(m.steps[p])
        th, om = m.nodes[p, :s], m.weights[p, :s]
        scale = max(b - a, abs(a), abs(b), 1e-300)
        delta = POS_TOL * scale
        x = np.unique(np.concatenate((atoms, th, [a, b])))
        x = x[(x >= a) & (x <= b)]
        assert_between(
            lambda t, th=th, om=om: interlacing_bounds(th, om, t)[0],
            lambda t, atoms=atoms, w=w: step_cdf(atoms, w, t),
            lambda t, th=th, om=om: interlacing_bounds(th, om, t)[1],
            x,
            delta,
        )

        # the library's per-probe numbers: formulas of the docstring, and true bounds
        true_w1 = w1_discrete(atoms, w, th, om)
        true_ks = ks_discrete(atoms, w, th, om, slack=delta)
        assert eb.per_probe_wasserstein[p] == pytest.approx(
            w1_bound_formula(th, om, a, b), rel=1e-12, abs=1e-15 * scale
        )
        assert eb.per_probe_ks[p] == pytest.approx(np.max(om), rel=1e-12)
        assert true_w1 <= eb.per_probe_wasserstein[p] + TOL * scale
        assert true_ks <= eb.per_probe_ks[p] + TOL
        # a-priori planning bound π(b − a)/(4k) (Jackson), valid for every probe
        assert true_w1 <= eb.a_priori_wasserstein + TOL * scale


@settings(max_examples=50, deadline=None)
@given(problem=problems(max_n=120), num_steps=st.integers(1, 20), data=st.data())
def test_single_probe_error_bounds_band_is_interlacing_widened_by_epsilon(problem, num_steps, data):
    """ErrorBounds of a one-probe measure: band = clip(Ψ̂↓ − ε), clip(Ψ̂↑ + ε) ∋ Ψ_v."""
    lam, U = eigen(problem.A)
    a, b = data.draw(brackets(lam))
    m = spectral.slq(problem.A, num_steps, 2, seed=problem.seed)
    V = draw_probes(problem.n, 2, "sphere", problem.seed)
    for p in range(2):
        eb = error_bounds(
            m.nodes[p : p + 1],
            m.weights[p : p + 1],
            m.steps[p : p + 1],
            problem.n,
            (a, b),
            confidence=0.95,
        )
        assert eb.epsilon == pytest.approx(statistical_epsilon(problem.n, 1, 0.95))
        lo_a, hi_b = eb.interval
        s = int(m.steps[p])
        th, om = m.nodes[p, :s], m.weights[p, :s]
        atoms, w = probe_measure(lam, U, V[:, p])
        x = np.unique(np.concatenate((atoms, th, [lo_a, hi_b])))
        inside = x[(x >= lo_a) & (x < hi_b)]
        lower, upper = interlacing_bounds(th, om, inside)
        band_lo, band_up = eb.cdf_band(inside)
        np.testing.assert_allclose(band_lo, np.clip(lower - eb.epsilon, 0, 1), atol=1e-14)
        np.testing.assert_allclose(band_up, np.clip(upper + eb.epsilon, 0, 1), atol=1e-14)
        delta = POS_TOL * max(hi_b - lo_a, abs(lo_a), abs(hi_b), 1e-300)
        assert_between(
            lambda t, eb=eb: eb.cdf_band(t)[0],
            lambda t, atoms=atoms, w=w: step_cdf(atoms, w, t),
            lambda t, eb=eb: eb.cdf_band(t)[1],
            inside,
            delta,
        )
        # outside the bracket the band is exact: 0 below a, 1 from b on
        below, above = eb.cdf_band(np.array([lo_a - 1.0, hi_b, hi_b + 1.0]))
        np.testing.assert_array_equal(below, [0.0, 1.0, 1.0])
        np.testing.assert_array_equal(above, [0.0, 1.0, 1.0])


# -- statistical part: coverage over seeds ----------------------------------------------------


def _mixed_matrix():
    rng = np.random.default_rng(5)
    lam = np.concatenate([rng.uniform(-1, 1, 40), np.full(12, 0.3), [4.0, -3.0, 6.0], np.zeros(5)])
    return from_spectrum(lam, seed=1)


@pytest.mark.parametrize("num_probes", [1, 2])
def test_cdf_band_coverage_reaches_confidence(num_probes):
    """Over 300 seeds the band holds everywhere in ≥ 90 % of runs at confidence 0.9.

    Checked twice: for the full band ``cdf_band`` (quadrature + statistical part) and for the
    statistical part alone, ``|⟨Ψ_v⟩ − Φ| ≤ ε`` with the probes' exact CDFs, which is the
    sharp part (its coverage is ~0.98; with ε/2 it falls to ~0.5, so the check has power).
    """
    A, lam = _mixed_matrix()
    n, confidence, seeds = lam.size, 0.9, range(300)
    L, U = np.linalg.eigh(A)
    eps = statistical_epsilon(n, num_probes, confidence)
    band_ok, stat_ok, stat_half_ok = [], [], []
    for seed in seeds:
        m = spectral.slq(A, 6, num_probes, seed=seed)
        eb = m.bounds(interval=(lam[0], lam[-1]), confidence=confidence)
        assert eb.epsilon == eps
        x = np.unique(np.concatenate((lam, m.nodes.ravel(), eb.interval)))
        phi = step_cdf(lam, np.full(n, 1.0 / n), x)
        lo, up = eb.cdf_band(x)
        band_ok.append(np.all((lo <= phi + TOL) & (phi <= up + TOL)))
        V = draw_probes(n, num_probes, "sphere", seed)
        psi = np.mean([step_cdf(*probe_measure(L, U, V[:, p]), x) for p in range(num_probes)], 0)
        dev = np.max(np.abs(psi - phi))
        stat_ok.append(dev <= eps)
        stat_half_ok.append(dev <= eps / 2)
    assert np.mean(band_ok) >= confidence
    assert np.mean(stat_ok) >= confidence
    assert np.mean(stat_half_ok) < confidence  # the coverage check can fail


def test_cdf_band_coverage_large_diagonal():
    """n = 2000 (ε ≈ 0.07): the statistical part is sharp here too."""
    lam = np.sort(np.random.default_rng(3).standard_normal(2000))
    A = sp.diags(lam).tocsr()
    n, confidence = lam.size, 0.9
    eps = statistical_epsilon(n, 1, confidence)
    ok, ok_stat = [], []
    for seed in range(300):
        m = spectral.slq(A, 10, 1, seed=seed)
        eb = m.bounds(interval=(lam[0], lam[-1]), confidence=confidence)
        x = np.unique(np.concatenate((lam, m.nodes.ravel(), eb.interval)))
        phi = step_cdf(lam, np.full(n, 1.0 / n), x)
        lo, up = eb.cdf_band(x)
        ok.append(np.all((lo <= phi + TOL) & (phi <= up + TOL)))
        v = draw_probes(n, 1, "sphere", seed)[:, 0]
        ok_stat.append(np.max(np.abs(step_cdf(lam, v * v, x) - phi)) <= eps)
    assert np.mean(ok) >= confidence and np.mean(ok_stat) >= confidence


# -- full ErrorBounds on fixed seeds ----------------------------------------------------------


def _fixed_problems():
    hess, hess_lam = hessian_like(3000, seed=0)
    uni, uni_lam = from_spectrum(
        np.concatenate([np.linspace(-1, 1, 300), np.full(100, 0.25)]), seed=2
    )
    lap, lap_lam = grid_laplacian(30)
    return [
        ("hessian_like", hess, hess_lam, (hess_lam[0], hess_lam[-1]), 30, 3),
        ("uniform+repeated", uni, uni_lam, (-1.0, 1.0), 15, 1),
        ("grid_laplacian", lap, lap_lam, (0.0, 8.0), 20, 2),
    ]


FIXED = _fixed_problems()


@pytest.mark.parametrize("case", FIXED, ids=[c[0] for c in FIXED])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_error_bounds_hold_on_fixed_seeds(case, seed):
    _name, A, lam, interval, k, P = case
    n = lam.size
    m = spectral.slq(A, k, P, seed=seed)
    eb = m.bounds(interval=interval, confidence=0.99)
    assert eb.certified and not eb.interval_estimated
    a, b = eb.interval
    nodes, masses = m.nodes.ravel(), (m.weights / P).ravel()
    true_w1 = w1_discrete(lam, np.full(n, 1.0 / n), nodes, masses)
    true_ks = ks_discrete(lam, np.full(n, 1.0 / n), nodes, masses)
    assert true_w1 <= eb.wasserstein
    assert true_ks <= eb.ks
    x = np.unique(np.concatenate((lam, nodes, [a, b])))
    phi = step_cdf(lam, np.full(n, 1.0 / n), x)
    lo, up = eb.cdf_band(x)
    assert np.all(lo <= phi + TOL) and np.all(phi <= up + TOL)
    # the band is informative and the bounds consistent with it
    assert eb.wasserstein < 0.5 * (b - a) and eb.ks < 1.0
    est = m.cdf(x)
    inside = (x >= a) & (x < b)
    assert np.max(np.maximum(up - est, est - lo)[inside]) <= eb.ks + 1e-12
    # per-probe bounds are the quadrature part of the total
    assert eb.epsilon == pytest.approx(statistical_epsilon(n, P, 0.99))
    assert eb.a_priori_wasserstein == pytest.approx(math.pi * (b - a) / (4 * m.num_steps))


@pytest.mark.parametrize("case", FIXED, ids=[c[0] for c in FIXED])
def test_density_transfer_bounds_hold(case):
    """Pointwise e(t), L1 and sup bounds on |φ_σ − φ̂_σ| with the exact smoothed density."""
    _name, A, lam, interval, k, P = case
    m = spectral.slq(A, k, P, seed=11)
    a, b = interval
    for sigma in (0.02 * (b - a), 0.25 * (b - a)):
        grid = np.linspace(a - 8 * sigma, b + 8 * sigma, 4001)  # step ≤ σ/10
        dens = m.density(grid, sigma=sigma, interval=interval)
        assert dens.sigma == sigma and not dens.normalised
        exact = smoothed_density(lam, grid, sigma)
        err = np.abs(exact - dens.values)
        assert np.all(err <= dens.bound + 1e-12 * exact.max())
        assert np.all(dens.lower <= exact + 1e-12) and np.all(exact <= dens.upper + 1e-12)
        h = grid[1] - grid[0]
        l1 = float(np.sum(err) * h)  # Riemann sum of a smooth integrand, step ≤ σ/10
        if sigma > 0.2 * (b - a):
            assert dens.l1_bound < 2.0  # not the trivial cap: the check has teeth
        assert l1 <= dens.l1_bound * (1 + 1e-3)
        assert err.max() <= dens.sup_bound
        eb = dens.bounds
        assert dens.l1_bound == pytest.approx(
            min(2.0, math.sqrt(2 / math.pi) * eb.wasserstein / sigma)
        )
        assert dens.sup_bound == pytest.approx(
            min(
                eb.wasserstein / (sigma**2 * math.sqrt(2 * math.pi * math.e)),
                math.sqrt(2 / math.pi) * eb.ks / sigma,
            )
        )


@pytest.mark.parametrize("sigma", [0.01, 0.3])
def test_smoothing_bias_bounds_the_smoothing_distance(sigma):
    """W₁(Φ, Φ * g_σ) ≤ σ√(2/π), with equality for a single atom (one eigenvalue, any n)."""
    x = np.linspace(-12.0, 12.0, 480_001)
    h = x[1] - x[0]
    for lam in (np.array([0.7]), np.full(5, -1.5), np.array([-3.0, 0.0, 0.0, 0.1, 5.0])):
        m = spectral.slq(np.diag(lam), 5, 1, seed=0)
        bias = m.bounds(interval=(lam.min(), lam.max())).smoothing_bias(sigma)
        assert bias == pytest.approx(sigma * math.sqrt(2 / math.pi))
        phi = step_cdf(lam, np.full(lam.size, 1 / lam.size), x)
        w1 = float(np.sum(np.abs(phi - smoothed_cdf(lam, x, sigma))) * h)
        assert w1 <= bias * (1 + 1e-3)
        if np.unique(lam).size == 1:
            assert w1 == pytest.approx(bias, rel=1e-3)


# -- flags, conditions and argument checks ----------------------------------------------------


def _small():
    A, lam = from_spectrum(np.linspace(-1.0, 2.0, 30), seed=0)
    return A, lam


def test_estimated_interval_is_flagged_and_contains_the_nodes():
    A, lam = _small()
    m = spectral.slq(A, 8, 2, seed=0)
    eb = m.bounds()
    assert eb.interval_estimated and not eb.certified
    assert any("estimated" in c for c in eb.conditions)
    lo, hi = m.estimate_interval()
    assert lo <= m.nodes.min() and hi >= m.nodes.max()
    assert eb.interval == pytest.approx((lo, hi))
    given_eb = m.bounds(interval=(lam[0], lam[-1]))
    assert given_eb.certified and not given_eb.interval_estimated


def test_rademacher_and_no_reorth_are_not_certified():
    A, _ = _small()
    with pytest.warns(UserWarning, match="Rademacher"):
        eb = spectral.slq(A, 8, 2, seed=0, probes="rademacher").bounds(interval=(-1, 2))
    assert not eb.certified and any("Rademacher" in c for c in eb.conditions)
    eb = spectral.slq(A, 8, 2, seed=0, reorth="none").bounds(interval=(-1, 2))
    assert not eb.certified and any("reorthogonalisation" in c for c in eb.conditions)
    eb = spectral.slq(A, 8, 2, seed=0, probes="gaussian").bounds(interval=(-1, 2))
    assert eb.certified


@pytest.mark.parametrize(
    "interval",
    [(-0.5, 2.0), (-1.0, 1.5), (0.0, 0.5), (3.0, 4.0), (2.0, -1.0), (-np.inf, 2.0), (np.nan, 1)],
)
def test_interval_that_is_not_a_bracket_raises(interval):
    A, _ = _small()
    m = spectral.slq(A, 30, 1, seed=0)  # k = n: extreme nodes are the extreme eigenvalues
    with pytest.raises(ValueError, match="interval"):
        m.bounds(interval=interval)


def test_interval_rounding_slack_is_accepted():
    A, _ = _small()
    m = spectral.slq(A, 30, 1, seed=0)
    lo, hi = m.nodes.min(), m.nodes.max()
    eb = m.bounds(interval=(lo + 1e-13, hi - 1e-13))  # within rounding of the nodes
    assert eb.interval[0] <= lo and eb.interval[1] >= hi


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.1, 1.5])
def test_confidence_must_be_a_probability(confidence):
    A, _ = _small()
    m = spectral.slq(A, 5, 1, seed=0)
    with pytest.raises(ValueError, match="confidence"):
        m.bounds(interval=(-1, 2), confidence=confidence)


@pytest.mark.parametrize(("n", "P", "conf"), [(10, 1, 0.9), (1000, 3, 0.99), (10**7, 1, 0.5)])
def test_statistical_epsilon_formula(n, P, conf):
    expected = min(1.0, math.sqrt(math.log(2 * n / (1 - conf)) / ((n + 2) * P)))
    assert statistical_epsilon(n, P, conf) == pytest.approx(expected, rel=1e-14)
    # more probes or less confidence: a narrower band
    assert statistical_epsilon(n, P + 1, conf) <= statistical_epsilon(n, P, conf)
    assert statistical_epsilon(n, P, conf / 2) <= statistical_epsilon(n, P, conf)
