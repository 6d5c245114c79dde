"""SpectralMeasure: cdf, moments, spectral sums (trace, logdet), Estimate, save/load, combine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import eigen, probe_measure, step_cdf
from strategies import few_distinct_problems, problems

import spectral
from spectral.matrices import from_spectrum, grid_laplacian
from spectral.probes import draw_probes


@settings(max_examples=40, deadline=None)
@given(problem=problems(max_n=120), num_steps=st.integers(1, 20), num_probes=st.integers(1, 4))
def test_cdf_is_the_average_of_the_probe_rules(problem, num_steps, num_probes):
    m = spectral.slq(problem.A, num_steps, num_probes, seed=problem.seed)
    x = np.unique(np.concatenate((m.nodes.ravel(), problem.eigenvalues)))
    x = np.concatenate(([x[0] - 1.0], x, [x[-1] + 1.0], 0.5 * (x[1:] + x[:-1])))
    expected = np.mean([step_cdf(m.nodes[p], m.weights[p], x) for p in range(num_probes)], 0)
    np.testing.assert_allclose(m.cdf(x), expected, atol=1e-14)
    assert m.cdf(x[0]) == 0.0 and m.cdf(m.nodes.min()) > 0.0
    assert m.cdf(np.inf) == pytest.approx(1.0, abs=1e-14) and m.cdf(-np.inf) == 0.0
    assert np.all(np.diff(m.cdf(np.sort(x))) >= -1e-15)
    grid = x.reshape(-1, 1)[: 2 * (x.size // 2)].reshape(2, -1)  # any shape
    assert m.cdf(grid).shape == grid.shape


@settings(max_examples=40, deadline=None)
@given(problem=few_distinct_problems(), num_probes=st.integers(1, 5))
def test_moments_and_spectral_sums_are_exact_per_probe(problem, num_probes):
    """k ≥ #distinct: per probe, n Σ ω f(θ) = n vᵀ f(A) v for any f; moments likewise."""
    k = len(problem.distinct)
    m = spectral.slq(problem.A, k, num_probes, seed=problem.seed)
    lam, U = eigen(problem.A)
    V = draw_probes(problem.n, num_probes, "sphere", problem.seed)
    norm = max(np.abs(lam).max(), 1e-300)
    W = np.array([probe_measure(lam, U, V[:, p])[1] for p in range(num_probes)])  # (P, n)
    fs = {
        "cube": lambda x: x**3,
        "exp": lambda x: np.exp(x / norm),
        "abs": np.abs,
        # a step between the two smallest distinct eigenvalues (never at an eigenvalue)
        "step": lambda x: (x > problem.distinct[:2].mean() + (len(problem.distinct) == 1)).astype(
            float
        ),
    }
    for name, f in fs.items():
        est = m.spectral_sum(f)
        per_probe = problem.n * W @ f(lam)
        scale = problem.n * max(np.max(np.abs(f(lam))), 1e-300)
        np.testing.assert_allclose(est.per_probe, per_probe, atol=1e-9 * scale, err_msg=name)
        assert est.value == pytest.approx(per_probe.mean(), abs=1e-9 * scale)
    powers = np.arange(6)
    true_moments = (lam[None, :] ** powers[:, None]) @ W.mean(axis=0)
    assert np.all(np.abs(m.moments(powers) - true_moments) <= 1e-10 * norm**powers)
    assert m.moments(0) == pytest.approx(1.0)
    assert m.moments(np.array([[1, 2]])).shape == (1, 2)


def test_trace_is_unbiased_within_a_few_standard_errors():
    A, lam = from_spectrum(np.concatenate([np.linspace(-1, 3, 150), [10.0, 12.0]]), seed=3)
    m = spectral.slq(A, 10, 40, seed=8)
    est = m.trace()
    assert abs(est.value - np.trace(A)) <= 4 * est.stderr
    V = draw_probes(152, 40, "sphere", 8)
    np.testing.assert_allclose(est.per_probe, 152 * np.einsum("ip,ij,jp->p", V, A, V), atol=1e-11)
    # Rademacher probes on a diagonal matrix: every probe gives the exact trace
    D = sp.diags(lam).tocsr()
    r = spectral.slq(D, 5, 6, seed=1, probes="rademacher").trace()
    np.testing.assert_allclose(r.per_probe, lam.sum(), rtol=1e-13)
    assert r.stderr == pytest.approx(0.0, abs=1e-12)


def test_trace_of_a_multiple_of_the_identity_is_exact():
    m = spectral.slq(3.5 * np.eye(40), 10, 5, seed=0)
    assert m.trace().value == pytest.approx(140.0) and m.trace().stderr == pytest.approx(0.0)
    assert m.logdet().value == pytest.approx(40 * math.log(3.5))


def test_logdet_against_slogdet():
    lam = np.concatenate([np.geomspace(0.01, 5.0, 60), np.full(20, 1.0)])
    A, lam = from_spectrum(lam, seed=2)
    sign, true = np.linalg.slogdet(A)
    assert sign == 1.0
    m = spectral.slq(A, 40, 30, seed=4)
    est = m.logdet()
    assert abs(est.value - true) <= 4 * est.stderr
    L, U = np.linalg.eigh(A)
    V = draw_probes(80, 30, "sphere", 4)
    exact_per_probe = 80 * np.einsum("ip,i,ip->p", U.T @ V, np.log(L), U.T @ V)
    # 40 steps of a spectrum in [0.01, 5]: the Gauss rule integrates log to high accuracy
    np.testing.assert_allclose(est.per_probe, exact_per_probe, rtol=1e-6)


@pytest.mark.parametrize(
    "lam", [[-1.0, 1.0, 2.0], [0.0, 1.0, 2.0], [-3.0, -1.0, -2.0], [0.0, 0.0, 5.0]]
)
def test_logdet_refuses_non_positive_definite(lam):
    """Indefinite, negative definite, and singular (a zero eigenvalue, whose Ritz value is
    zero only up to rounding, e.g. +7e-17: logging it would return garbage like −167)."""
    A, _ = from_spectrum(np.repeat(lam, 5), seed=0)
    m = spectral.slq(A, 15, 2, seed=0)
    with pytest.raises(ValueError, match="positive definite"):
        m.logdet()


def test_logdet_of_an_ill_conditioned_but_definite_matrix_is_accepted():
    """Only rounding-level nodes count as zero: λ_min = 1e-9 ‖A‖ is still logged exactly."""
    lam = np.repeat([1e-9, 1e-3, 1.0], 4)
    A, lam = from_spectrum(lam, seed=1)
    m = spectral.slq(A, 3, 3, seed=0)
    L, U = np.linalg.eigh(A)
    V = draw_probes(12, 3, "sphere", 0)
    W = (U.T @ V) ** 2
    np.testing.assert_allclose(m.logdet().per_probe, 12 * np.log(L) @ W, rtol=1e-6)


def test_spectral_sum_non_finite_at_weighted_nodes_raises():
    A, _ = from_spectrum(np.linspace(-1, 1, 20), seed=0)
    m = spectral.slq(A, 20, 2, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        with np.errstate(divide="ignore", invalid="ignore"):
            m.spectral_sum(lambda x: np.log(x))
    # padding nodes (zero weight) may map to anything
    B = np.diag(np.repeat([1.0, 2.0], 10))
    mb = spectral.slq(B, 10, 1, seed=0)
    assert mb.steps[0] == 2
    f = lambda x: np.where(np.arange(x.shape[-1]) < 2, x, np.nan)  # noqa: E731
    assert np.isfinite(mb.spectral_sum(f).value)
    # a scalar-valued f broadcasts
    assert mb.spectral_sum(lambda x: 1.0).value == pytest.approx(20.0)


def test_estimate_standard_error():
    A, _ = from_spectrum(np.linspace(0, 1, 30), seed=0)
    m = spectral.slq(A, 5, 7, seed=1)
    est = m.spectral_sum(lambda x: x**2)
    assert est.stderr == pytest.approx(np.std(est.per_probe, ddof=1) / math.sqrt(7), rel=1e-12)
    assert float(est) == est.value == pytest.approx(np.mean(est.per_probe))
    single = spectral.slq(A, 5, 1, seed=1).trace()
    assert math.isnan(single.stderr) and single.per_probe.shape == (1,)


# -- save / load ------------------------------------------------------------------------------


def _assert_same_measure(a, b):
    for name in ("nodes", "weights", "alpha", "beta", "residual", "steps", "last_components"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(x, y, err_msg=name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
    for name in ("n", "num_matvecs", "probes", "reorth", "dtype"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("kwargs", [{}, {"reorth": "none", "probes": "rademacher"}])
def test_save_load_round_trip(tmp_path, kwargs):
    A, _ = from_spectrum(np.repeat([0.0, 1.0, 3.0, 4.0], [5, 10, 10, 5]), seed=1)
    m = spectral.slq(A, 8, 3, seed=2, **kwargs)  # breaks down after 4 steps: padding saved
    path = tmp_path / "measure.npz"
    m.save(path)
    with np.load(path, allow_pickle=False) as data:  # a plain npz, no pickled objects
        assert all(data[key].dtype != object for key in data.files)
    loaded = spectral.load(path)
    _assert_same_measure(m, loaded)
    x = np.linspace(-1, 5, 50)
    np.testing.assert_array_equal(loaded.cdf(x), m.cdf(x))
    np.testing.assert_array_equal(
        loaded.density(x, sigma=0.1).values, m.density(x, sigma=0.1).values
    )
    m.save(str(tmp_path / "as_string"))  # numpy adds the .npz suffix
    _assert_same_measure(m, spectral.load(str(tmp_path / "as_string.npz")))


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(ValueError, match="not a spectral measure"):
        spectral.load(path)


# -- combine ----------------------------------------------------------------------------------


def test_combine_pools_probes():
    A, _ = grid_laplacian(12)
    m1 = spectral.slq(A, 20, 2, seed=1)
    m2 = spectral.slq(A, 20, 3, seed=2)
    both = m1.combine(m2)
    assert both.num_probes == 5 and both.num_matvecs == m1.num_matvecs + m2.num_matvecs
    x = np.linspace(-0.5, 8.5, 301)
    np.testing.assert_allclose(both.cdf(x), (2 * m1.cdf(x) + 3 * m2.cdf(x)) / 5, atol=1e-14)
    np.testing.assert_array_equal(both.nodes, np.vstack([m1.nodes, m2.nodes]))
    # the same as one run whose probes are both seeds' probes
    V = np.hstack([draw_probes(144, 2, "sphere", 1), draw_probes(144, 3, "sphere", 2)])
    one = spectral.lanczos(A, V, 20)
    np.testing.assert_allclose(both.alpha, one.alpha, atol=1e-12)
    np.testing.assert_allclose(both.beta, one.beta, atol=1e-12)
    # trace and bounds use all five probes
    assert both.trace().per_probe.size == 5
    assert both.bounds(interval=(0, 8)).epsilon < m1.bounds(interval=(0, 8)).epsilon
    assert spectral.combine(m1).num_probes == 2
    three = spectral.combine(m1, m2, m1)
    assert three.num_probes == 7


def test_combine_pads_shorter_runs_and_mixes_reorth():
    A, _ = from_spectrum(np.linspace(-1, 1, 40), seed=0)
    short = spectral.slq(A, 5, 2, seed=1)
    long = spectral.slq(A, 12, 1, seed=2, reorth="none")
    both = spectral.combine(short, long)
    assert both.nodes.shape == (3, 12) and both.reorth == "none"
    np.testing.assert_array_equal(both.steps, [5, 5, 12])
    assert np.all(both.weights[:2, 5:] == 0) and np.all(np.isfinite(both.nodes))
    np.testing.assert_allclose(both.weights.sum(axis=1), 1.0)
    x = np.linspace(-1.2, 1.2, 100)
    np.testing.assert_allclose(both.cdf(x), (2 * short.cdf(x) + long.cdf(x)) / 3, atol=1e-14)
    eb = both.bounds(interval=(-1, 1))
    np.testing.assert_allclose(
        eb.per_probe_wasserstein[:2], short.bounds(interval=(-1, 1)).per_probe_wasserstein
    )


def test_combine_rejects_incompatible_measures():
    A, _ = from_spectrum(np.linspace(-1, 1, 40), seed=0)
    B, _ = from_spectrum(np.linspace(-1, 1, 30), seed=0)
    m = spectral.slq(A, 5, 1, seed=0)
    with pytest.raises(ValueError, match="order"):
        m.combine(spectral.slq(B, 5, 1, seed=0))
    with pytest.raises(ValueError, match="probes"):
        m.combine(spectral.slq(A, 5, 1, seed=0, probes="rademacher"))
    with pytest.raises(ValueError, match="at least one"):
        spectral.combine()


def test_measure_is_frozen():
    m = spectral.slq(np.eye(3), 2, 1, seed=0)
    with pytest.raises(AttributeError):
        m.n = 4
