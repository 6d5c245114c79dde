"""The same MLP, weights and data in PyTorch, JAX and TensorFlow give the same Hessian spectrum."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import spectral

pytest.importorskip("torch", reason="PyTorch is not installed")
pytest.importorskip("jax", reason="JAX is not installed")
pytest.importorskip("tensorflow", reason="TensorFlow is not installed")

HERE = Path(__file__).parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_cross_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def operators():
    import jax

    jax.config.update("jax_enable_x64", True)
    from spectral.adapters import jax as spj
    from spectral.adapters import tensorflow as sptf
    from spectral.adapters import torch as spt

    # Uneven batches in torch and TensorFlow ([128, 128, 44]), one batch in JAX: the
    # data-set mean over samples must not depend on the batching.
    model, loss_fn, data = _load("test_torch").build_digits_mlp_torch(num_samples=300)
    H_torch = spt.hessian(model, loss_fn, data)
    loss_j, params, data_j = _load("test_jax").build_digits_mlp_jax(num_samples=300)
    H_jax = spj.hessian(loss_j, params, data_j)
    kmodel, kloss, kdata = _load("test_tensorflow").build_digits_mlp_tensorflow(num_samples=300)
    H_tf = sptf.hessian(kmodel, kloss, kdata)
    return {"torch": H_torch, "jax": H_jax, "tensorflow": H_tf}


@pytest.fixture(scope="module")
def spectra(operators):
    out = {}
    for name, H in operators.items():
        n = H.shape[0]
        dense = H @ np.eye(n)
        np.testing.assert_allclose(dense, dense.T, atol=1e-10)
        out[name] = np.linalg.eigvalsh((dense + dense.T) / 2)
    return out


def test_three_frameworks_agree_on_the_spectrum(spectra):
    num_params = _load("digits_mlp").num_params

    ref = spectra["torch"]
    assert ref.size == num_params()
    scale = np.max(np.abs(ref))
    for name in ("jax", "tensorflow"):
        np.testing.assert_allclose(spectra[name], ref, rtol=0, atol=1e-8 * max(scale, 1.0))
    # A real spectrum, not a trivial one: indefinite away from the optimum, with spread.
    assert ref[0] < -1e-3 and ref[-1] > 1e-3


@pytest.mark.parametrize("name", ["torch", "jax", "tensorflow"])
def test_slq_on_each_adapter_is_within_the_certified_distance(operators, spectra, name):
    lam = spectra[name]
    m = spectral.slq(operators[name], num_steps=40, num_probes=2, seed=0)
    bounds = m.bounds(interval=(lam[0], lam[-1]))
    grid = np.unique(np.concatenate([lam, m.nodes.reshape(-1)]))
    true_cdf = np.searchsorted(lam, grid, side="right") / lam.size
    true_w1 = float(np.sum(np.abs(true_cdf - m.cdf(grid))[:-1] * np.diff(grid)))
    assert true_w1 <= bounds.wasserstein
    lo, up = bounds.cdf_band(grid)
    assert np.all(lo <= true_cdf + 1e-12) and np.all(true_cdf <= up + 1e-12)
