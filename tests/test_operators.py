"""Input handling: every accepted form, and every error case of issue #2 §2–4."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

import spectral
from spectral import SymmetryWarning, aslinearoperator
from spectral.matrices import from_spectrum

A5, LAM5 = from_spectrum(np.array([-1.0, 0.0, 0.5, 2.0, 3.0]), seed=0)


class Duck:
    """Any object with shape, dtype and matvec (and optionally matmat)."""

    def __init__(self, A, *, matmat=False, dtype=None, shape=None, out=None):
        self.A = np.asarray(A)
        self.shape = self.A.shape if shape is None else shape
        self.dtype = self.A.dtype if dtype is None else dtype
        self._out = out
        self.matvec_calls = 0
        if matmat:
            self.matmat = lambda X: self.A @ X

    def matvec(self, x):
        self.matvec_calls += 1
        y = self.A @ x
        return y if self._out is None else self._out(y, self.matvec_calls)


# -- accepted inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda A: A,
        lambda A: A.tolist(),
        lambda A: sp.csr_matrix(A),
        lambda A: sp.csc_matrix(A),
        lambda A: sp.coo_array(A),
        lambda A: sp.csr_array(A),
        lambda A: LinearOperator(A.shape, matvec=lambda x: A @ x, dtype=A.dtype),
        lambda A: Duck(A),
        lambda A: Duck(A, matmat=True),
    ],
    ids=[
        "ndarray",
        "list",
        "csr_matrix",
        "csc_matrix",
        "coo_array",
        "csr_array",
        "LinearOperator",
        "duck-matvec",
        "duck-matmat",
    ],
)
def test_every_input_form_gives_the_same_operator_and_measure(make):
    op = aslinearoperator(make(A5))
    assert op.shape == (5, 5) and op.dtype == np.float64
    X = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(op.matmat(X), A5 @ X, atol=1e-14)
    np.testing.assert_allclose(op.matvec(X[:, 0]), A5 @ X[:, 0], atol=1e-14)
    m = spectral.slq(make(A5), 5, 2, seed=0)
    ref = spectral.slq(A5, 5, 2, seed=0)
    np.testing.assert_allclose(m.nodes, ref.nodes, atol=1e-13)
    np.testing.assert_allclose(m.weights, ref.weights, atol=1e-13)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int32, np.float64),
        (np.int64, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
    ],
)
def test_dtypes(dtype, expected):
    A = np.eye(3).astype(dtype)
    assert aslinearoperator(A).dtype == expected
    assert aslinearoperator(sp.csr_matrix(A)).dtype == expected


def test_duck_without_matmat_is_applied_column_by_column():
    duck = Duck(A5)
    op = aslinearoperator(duck, check_symmetry=False)
    X = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(op.matmat(X), A5 @ X, atol=1e-14)
    assert duck.matvec_calls == 4


# -- bad matrices -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((3, 4)),
        np.ones(3),
        np.ones((2, 2, 2)),
        np.zeros((0, 0)),
        sp.csr_matrix(np.ones((3, 4))),
        Duck(np.ones((3, 4))),
    ],
    ids=["rectangular", "1-D", "3-D", "empty", "sparse-rectangular", "duck-rectangular"],
)
def test_non_square_or_empty_raises_value_error(bad):
    with pytest.raises(ValueError, match=r"square|two-dimensional|empty"):
        aslinearoperator(bad)
    with pytest.raises(ValueError, match=r"square|two-dimensional|empty"):
        spectral.slq(bad, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.eye(3) * (1 + 1j),
        sp.csr_matrix(np.eye(3, dtype=complex)),
        Duck(np.eye(3), dtype=np.complex128),
        LinearOperator((3, 3), matvec=lambda x: x, dtype=np.complex64),
    ],
    ids=["dense", "sparse", "duck", "LinearOperator"],
)
def test_complex_raises_type_error(bad):
    with pytest.raises(TypeError, match="complex"):
        aslinearoperator(bad)
    with pytest.raises(TypeError, match="complex"):
        spectral.lanczos(bad, np.ones(3), 2)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([["a", "b"], ["b", "a"]]),
        np.array([[1, None], [None, 1]], dtype=object),
        np.array([[np.datetime64("2020-01-01")] * 2] * 2),
        Duck(np.eye(2), dtype=object),
        object(),
        "matrix",
        3.0,
    ],
    ids=["str", "object", "datetime", "duck-object", "plain-object", "string", "scalar"],
)
def test_non_numeric_raises_type_error(bad):
    with pytest.raises(TypeError, match=r"dtype|cannot"):
        aslinearoperator(bad)
    with pytest.raises(TypeError, match=r"dtype|cannot"):
        spectral.slq(bad, 3)


def test_numpy_scalar_is_not_a_matrix():
    with pytest.raises(ValueError, match="two-dimensional"):
        aslinearoperator(np.float64(3.0))


def test_duck_missing_attributes_raise_type_error():
    class NoShape:
        dtype = np.float64

        def matvec(self, x):
            return x

    class NoDtype:
        shape = (2, 2)

        def matvec(self, x):
            return x

    class NotCallable:
        shape, dtype, matvec = (2, 2), np.float64, "not a function"

    with pytest.raises(TypeError, match="shape"):
        aslinearoperator(NoShape())
    with pytest.raises(TypeError, match="dtype"):
        aslinearoperator(NoDtype())
    with pytest.raises(TypeError, match="matvec"):
        aslinearoperator(NotCallable())


@pytest.mark.parametrize("form", [np.asarray, sp.csr_matrix, sp.csr_array])
def test_non_symmetric_explicit_matrix_raises_value_error(form):
    B = A5.copy()
    B[0, 1] += 1e-6
    with pytest.raises(ValueError, match="not symmetric"):
        aslinearoperator(form(B))
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.slq(form(B), 3)
    # check_symmetry does not switch off the exact test for explicit matrices
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.slq(form(B), 3, check_symmetry=False)
    # rounding-level asymmetry is accepted
    C = A5.copy()
    C[0, 1] += 1e-14
    aslinearoperator(form(C))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_explicit_matrix_raises_value_error(value):
    B = A5.copy()
    B[2, 2] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        aslinearoperator(B)
    with pytest.raises(ValueError, match="NaN or infinite"):
        aslinearoperator(sp.csr_matrix(B))


def test_non_symmetric_matrix_free_operator_warns_and_can_be_silenced():
    B = np.triu(np.ones((6, 6)))
    with pytest.warns(SymmetryWarning, match="does not look symmetric"):
        aslinearoperator(Duck(B))
    with pytest.warns(SymmetryWarning):
        spectral.slq(Duck(B), 3, 1, seed=0)
    with pytest.warns(SymmetryWarning):
        aslinearoperator(LinearOperator((6, 6), matvec=lambda x: B @ x, dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aslinearoperator(Duck(B), check_symmetry=False)
        spectral.slq(Duck(B), 3, 1, seed=0, check_symmetry=False)
        # a symmetric operator passes the randomised test; is_symmetric skips it
        aslinearoperator(Duck(A5))
        flagged = Duck(B)
        flagged.is_symmetric = True
        aslinearoperator(flagged)
        assert flagged.matvec_calls == 0


def test_symmetry_test_tolerates_float32_products():
    A32 = A5.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = aslinearoperator(Duck(A32))
    assert op.dtype == np.float32


# -- bad products -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("bad_step", [1, 3])
def test_non_finite_product_stops_with_the_step(value, bad_step):
    def out(y, call):
        if call >= bad_step:
            y = y.copy()
            y[0] = value
        return y

    duck = Duck(A5, out=out)
    with pytest.raises(FloatingPointError, match=rf"non-finite.*step {bad_step}\b"):
        spectral.slq(duck, 5, 1, seed=0, check_symmetry=False)
    duck = Duck(A5, out=out)
    duck.is_symmetric = True
    with pytest.raises(FloatingPointError, match=rf"step {bad_step}\b"):
        spectral.lanczos(duck, np.ones(5), 5)


def test_non_finite_product_is_caught_after_the_symmetry_check():
    """The symmetry test leaves non-finite products to the Lanczos loop (step 1)."""
    duck = Duck(A5, out=lambda y, call: y * np.nan)
    with pytest.raises(FloatingPointError, match="step 1"):
        spectral.slq(duck, 5, 1, seed=0)


@pytest.mark.parametrize(
    "out",
    [lambda y, c: y[:-1], lambda y, c: np.concatenate([y, y]), lambda y, c: y[:, None] * [1, 1]],
    ids=["short", "long", "2-D"],
)
def test_wrong_output_shape_raises_value_error(out):
    duck = Duck(A5, out=out)
    with pytest.raises(ValueError, match="shape"):
        spectral.slq(duck, 3, 1, seed=0, check_symmetry=False)
    with pytest.raises(ValueError, match="shape"):
        spectral.slq(Duck(A5, out=out), 3, 1, seed=0)


def test_wrong_matmat_output_shape_raises_value_error():
    duck = Duck(A5, matmat=True)
    duck.matmat = lambda X: (A5 @ X)[:, :1]
    duck.is_symmetric = True
    with pytest.raises(ValueError, match="shape"):
        spectral.slq(duck, 3, 2, seed=0)


def test_complex_product_raises_type_error():
    duck = Duck(A5, out=lambda y, c: y + 0j)
    duck.is_symmetric = True
    with pytest.raises(TypeError, match="complex"):
        spectral.slq(duck, 3, 1, seed=0)


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probes": "normal"}, "probes"),
        ({"probes": None}, "probes"),
        ({"reorth": "partial"}, "reorth"),
        ({"reorth": True}, "reorth"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": -3}, "num_steps"),
        ({"num_probes": 0}, "num_probes"),
        ({"num_probes": -1}, "num_probes"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -2}, "batch_size"),
    ],
)
def test_bad_slq_arguments_raise_value_error(kwargs, match):
    args = {"num_steps": 3, "num_probes": 2, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        spectral.slq(A5, **args)


@pytest.mark.parametrize(
    ("v0", "match"),
    [
        (np.zeros(5), "zero"),
        (np.column_stack([np.ones(5), np.zeros(5)]), r"column\(s\) \[1\] are zero"),
        (np.ones(4), "shape"),
        (np.ones((4, 2)), "shape"),
        (np.ones((5, 2, 1)), "shape"),
        (np.ones((5, 0)), "no columns"),
        (np.array([1.0, np.nan, 0, 0, 0]), "NaN"),
        (np.array([1.0, np.inf, 0, 0, 0]), "NaN or infinite"),
    ],
)
def test_bad_start_vectors_raise_value_error(v0, match):
    with pytest.raises(ValueError, match=match):
        spectral.lanczos(A5, v0, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"reorth": "twice"}, "reorth"), ({"num_steps": 0}, "num_steps")]
)
def test_bad_lanczos_arguments_raise_value_error(kwargs, match):
    args = {"num_steps": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        spectral.lanczos(A5, np.ones(5), **args)


@pytest.mark.parametrize(("kind", "P"), [("sphere", 0), ("uniform", 2)])
def test_draw_probes_rejects_bad_arguments(kind, P):
    from spectral.probes import draw_probes

    with pytest.raises(ValueError):
        draw_probes(5, P, kind, 0)


def test_one_by_one_matrix():
    m = spectral.slq(np.array([[2.5]]), 10, 3, seed=0)
    assert m.nodes.shape == (3, 1)
    np.testing.assert_array_equal(m.nodes, 2.5)
    np.testing.assert_array_equal(m.weights, 1.0)
    assert m.trace().value == pytest.approx(2.5) and m.trace().stderr == 0.0
    assert m.logdet().value == pytest.approx(np.log(2.5))


def test_zero_matrix():
    m = spectral.slq(np.zeros((6, 6)), 4, 2, seed=0)
    np.testing.assert_array_equal(m.steps, [1, 1])
    np.testing.assert_array_equal(m.nodes, 0.0)
    assert np.all(np.isfinite(m.weights)) and np.all(m.weights.sum(axis=1) == 1.0)
    d = m.density()
    assert np.all(np.isfinite(d.values)) and d.sigma > 0
    assert m.bounds(interval=(0.0, 0.0)).wasserstein == 0.0
    with pytest.raises(ValueError, match="positive definite"):
        m.logdet()
