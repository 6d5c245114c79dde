"""Tests of the PyTorch adapter against PyTorch's own dense Hessians (float64, 1e-10)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as sla

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from spectral.adapters import torch as spt  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    # torch's own one-time set-up of forward-mode decompositions
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

F64 = torch.float64
N_SAMPLES = 145
UNEVEN = (64, 64, 17)


# ---------------------------------------------------------------------------------------
# shared digits MLP
# ---------------------------------------------------------------------------------------
def _digits_module():
    """Import tests/adapters/digits_mlp.py (pytest runs with --import-mode=importlib)."""
    if "digits_mlp" not in sys.modules:
        path = Path(__file__).with_name("digits_mlp.py")
        spec = importlib.util.spec_from_file_location("digits_mlp", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["digits_mlp"] = module
        spec.loader.exec_module(module)
    return sys.modules["digits_mlp"]


def build_digits_mlp_torch(num_samples: int = 300, batch_size: int = 128, seed: int = 0):
    """The shared digits MLP in PyTorch: ``(model, loss_fn, data)`` for ``spt.hessian``.

    float64, evaluation mode; ``data`` is a list of ``(x, y)`` batches of ``batch_size``
    samples (the last one shorter). ``nn.Linear`` stores ``W.T`` of the NumPy weights.
    """
    dm = _digits_module()
    w = dm.mlp_weights(seed)
    x, y = dm.digits_data(num_samples)
    model = nn.Sequential(nn.Linear(64, dm.HIDDEN), nn.Tanh(), nn.Linear(dm.HIDDEN, dm.NUM_CLASSES))
    model = model.to(F64).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w["W1"].T))
        model[0].bias.copy_(torch.from_numpy(w["b1"]))
        model[2].weight.copy_(torch.from_numpy(w["W2"].T))
        model[2].bias.copy_(torch.from_numpy(w["b2"]))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    data = [
        (xt[i : i + batch_size], yt[i : i + batch_size]) for i in range(0, num_samples, batch_size)
    ]
    return model, nn.CrossEntropyLoss(), data


# ---------------------------------------------------------------------------------------
# tiny float64 models and data
# ---------------------------------------------------------------------------------------
class Unused(nn.Module):
    """An MLP with a parameter and a whole layer that the output never touches."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.spare = nn.Parameter(torch.ones(3))
        self.dead = nn.Linear(2, 2)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class _TanhNoJvp(torch.autograd.Function):
    """tanh with a hand-written, differentiable backward and no forward-mode rule."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class NoForwardMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(_TanhNoJvp.apply(self.fc1(x)))


class Noise(nn.Module):
    """Random in every mode: invisible to the up-front checks, caught by the guard."""

    def forward(self, x):
        return x + 1e-2 * torch.randn_like(x)


def _set_bn_stats(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
    return model


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    elif kind == "mlp_bn":
        model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    elif kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    elif kind == "cnn_bn":
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)
        )
    elif kind == "unused":
        model = Unused()
    elif kind == "no_forward_mode":
        model = NoForwardMode()
    else:  # pragma: no cover
        raise ValueError(kind)
    return _set_bn_stats(model.to(F64)).eval()


def make_data(kind: str, n: int = N_SAMPLES, dtype=F64):
    gen = torch.Generator().manual_seed(2)
    shape = (n, 1, 6, 6) if kind.startswith("cnn") else (n, 4)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def split(x, y, sizes=UNEVEN):
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    assert start == len(y)
    return out


def dense_hessian(model, loss_fn, x, y, names=None, reduction="mean", functorch=True):
    """Dense Hessian of the full-data loss by torch.func.hessian (or autograd.functional)."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else list(names)
    fixed = {k: v.detach() for k, v in named.items() if k not in names}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    shapes = [named[k].shape for k in names]
    sizes = [named[k].numel() for k in names]
    flat0 = torch.cat([named[k].detach().reshape(-1) for k in names])
    scale = len(y) if reduction == "sum" else 1

    def f(flat):
        values = [p.reshape(s) for p, s in zip(flat.split(sizes), shapes, strict=True)]
        pieces = dict(zip(names, values, strict=True))
        return scale * loss_fn(functional_call(model, ({**fixed, **pieces}, buffers), (x,)), y)

    if functorch:
        return torch.func.hessian(f)(flat0).detach().numpy()
    return torch.autograd.functional.hessian(f, flat0).detach().numpy()


def unflatten_dict(flat, model):
    """Differentiable split of a flat tensor into ``{name: tensor}`` (test reference)."""
    out, offset = {}, 0
    for k, p in model.named_parameters():
        out[k] = flat[offset : offset + p.numel()].reshape(p.shape)
        offset += p.numel()
    return out


def dense_gradient(model, loss_fn, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


def as_dense(H) -> np.ndarray:
    return H @ np.eye(H.shape[0])


def assert_close(actual, desired, tol=1e-10):
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * scale)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy machine they cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CE = nn.CrossEntropyLoss()
KINDS = ["mlp", "mlp_bn", "cnn", "cnn_bn", "unused"]


# ---------------------------------------------------------------------------------------
# the operator equals PyTorch's dense Hessian
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("hvp", ["auto", "double-backward"])
@pytest.mark.parametrize("kind", KINDS)
def test_hessian_matches_dense(kind, hvp):
    model = make_model(kind)
    x, y = make_data(kind)
    H = spt.hessian(model, CE, split(x, y), hvp=hvp)
    n = sum(p.numel() for p in model.parameters())
    assert H.shape == (n, n)
    assert H.dtype == np.float64
    assert_close(as_dense(H), dense_hessian(model, CE, x, y))
    expected = "forward-over-reverse" if hvp == "auto" else "double-backward"
    assert H.hvp_method == expected


def test_unused_parameters_have_zero_rows():
    model = make_model("unused")
    x, y = make_data("unused")
    H = spt.hessian(model, CE, split(x, y))
    dense = as_dense(H)
    for name in ("spare", "dead.weight", "dead.bias"):
        assert np.all(dense[H.slices[name]] == 0)
        assert np.all(dense[:, H.slices[name]] == 0)
    g = spt.gradient(model, CE, split(x, y))
    assert np.all(g[H.slices["spare"]] == 0)


def test_fallback_to_double_backward_without_forward_mode():
    model = make_model("no_forward_mode")
    x, y = make_data("mlp")
    H = spt.hessian(model, CE, split(x, y))
    dense = as_dense(H)
    assert H.hvp_method == "double-backward"
    assert H.fallback_reason
    assert_close(dense, dense_hessian(model, CE, x, y, functorch=False))
    with pytest.raises(Exception):  # noqa: B017 - forcing forward mode surfaces torch's error
        spt.hessian(model, CE, split(x, y), hvp="forward-over-reverse") @ np.ones(H.shape[0])


@pytest.mark.parametrize("kind", ["mlp", "cnn_bn", "unused"])
def test_gradient_matches_autograd(kind):
    model = make_model(kind)
    x, y = make_data(kind)
    g = spt.gradient(model, CE, split(x, y))
    assert g.dtype == np.float64
    assert_close(g, dense_gradient(model, CE, x, y), tol=1e-12)
    expected = float(CE(model(x), y).detach())
    assert spt.loss(model, CE, split(x, y)) == pytest.approx(expected, rel=1e-13)


def test_matmat_equals_matvecs_in_one_pass():
    model = make_model("mlp_bn")
    x, y = make_data("mlp_bn")
    H = spt.hessian(model, CE, split(x, y), check_determinism=False)
    V = np.random.default_rng(0).standard_normal((H.shape[0], 4))
    block = H @ V
    assert (H.num_passes, H.num_hvps) == (1, 4)
    columns = np.column_stack([H @ V[:, j] for j in range(4)])
    assert_close(block, columns, tol=1e-13)
    assert H.matvec(V[:, 0]).shape == (H.shape[0],)
    # the guard costs one extra pass on the first product only
    G = spt.hessian(model, CE, split(x, y))
    G @ V
    G @ V
    assert G.num_passes == 3


def test_chunked_vmap_is_identical():
    model = make_model("mlp")
    x, y = make_data("mlp")
    H = spt.hessian(model, CE, split(x, y))
    V = np.random.default_rng(1).standard_normal((H.shape[0], 5))
    full = H @ V
    chunked = spt.hessian(model, CE, split(x, y), chunk_size=2) @ V
    assert_close(chunked, full, tol=1e-13)


# ---------------------------------------------------------------------------------------
# batching, reductions, data forms
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn_bn"])
def test_uneven_batches_equal_one_batch(kind):
    model = make_model(kind)
    x, y = make_data(kind)
    uneven = as_dense(spt.hessian(model, CE, split(x, y, UNEVEN)))
    single = as_dense(spt.hessian(model, CE, [(x, y)]))
    assert_close(uneven, single, tol=1e-12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    assert [len(b[1]) for b in loader] == list(UNEVEN)
    assert_close(as_dense(spt.hessian(model, CE, loader)), single, tol=1e-12)
    assert_close(spt.gradient(model, CE, split(x, y)), spt.gradient(model, CE, [(x, y)]), tol=1e-14)


def test_sum_reduction():
    model = make_model("mlp")
    x, y = make_data("mlp")
    mean = as_dense(spt.hessian(model, CE, split(x, y)))
    total = as_dense(spt.hessian(model, CE, split(x, y), reduction="sum"))
    assert_close(total, N_SAMPLES * mean, tol=1e-12)
    assert_close(total, dense_hessian(model, CE, x, y, reduction="sum"))
    assert_close(
        spt.gradient(model, CE, split(x, y), reduction="sum"),
        N_SAMPLES * spt.gradient(model, CE, split(x, y)),
        tol=1e-12,
    )
    assert spt.loss(model, CE, split(x, y), reduction="sum") == pytest.approx(
        N_SAMPLES * spt.loss(model, CE, split(x, y)), rel=1e-13
    )


def test_mse_and_numpy_batches_and_float_casting():
    model = make_model("mlp")
    gen = np.random.default_rng(3)
    x = gen.standard_normal((30, 4)).astype(np.float32)  # cast to the model's float64
    t = gen.standard_normal((30, 3))
    data = [(x[:20], t[:20]), (x[20:], t[20:])]
    H = spt.hessian(model, nn.MSELoss(), data)
    xt, tt = torch.from_numpy(x).to(F64), torch.from_numpy(t)
    assert_close(as_dense(H), dense_hessian(model, nn.MSELoss(), xt, tt))


def test_multiple_and_keyword_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 3)
            self.b = nn.Linear(2, 3)

        def forward(self, u, v):
            return torch.tanh(self.a(u)) * self.b(v)

    torch.manual_seed(0)
    model = TwoInputs().to(F64)
    u, v = torch.randn(10, 2, dtype=F64), torch.randn(10, 2, dtype=F64)
    y = torch.randint(0, 3, (10,))
    positional = as_dense(spt.hessian(model, CE, [((u, v), y)]))
    keyword = as_dense(spt.hessian(model, CE, [({"u": u, "v": v}, y)]))
    assert_close(keyword, positional, tol=1e-14)

    flat0 = torch.from_numpy(spt.flatten(model.parameters()))

    def f(flat):
        return CE(functional_call(model, unflatten_dict(flat, model), (u, v)), y)

    assert_close(positional, torch.func.hessian(f)(flat0).numpy())


def test_bad_arguments():
    model = make_model("mlp")
    x, y = make_data("mlp")
    with pytest.raises(TypeError, match="re-iterable"):
        spt.hessian(model, CE, (b for b in split(x, y)))
    with pytest.raises(ValueError, match="MEAN"):
        spt.hessian(model, nn.CrossEntropyLoss(reduction="sum"), split(x, y))
    with pytest.raises(ValueError, match="reduction"):
        spt.hessian(model, CE, split(x, y), reduction="max")
    with pytest.raises(ValueError, match="no parameter named"):
        spt.hessian(model, CE, split(x, y), params=["nope"])
    with pytest.raises(ValueError, match="not a parameter"):
        spt.hessian(model, CE, split(x, y), params=[torch.zeros(3)])
    with pytest.raises(ValueError, match="twice"):
        spt.hessian(model, CE, split(x, y), params=["0.bias", model[0].bias])
    with pytest.raises(TypeError, match="pair"):
        spt.hessian(model, CE, [x], check_determinism=False) @ np.ones(43)
    with pytest.raises(ValueError, match="no samples"):
        spt.gradient(model, CE, [])


def test_errors_of_the_model_surface_with_their_cause():
    model = make_model("mlp")
    x, y = make_data("mlp")
    wrong = [(x[:, :3], y)]  # 3 features for a 4-feature model
    H = spt.hessian(model, CE, wrong)
    with pytest.raises(RuntimeError) as info:
        H @ np.ones(H.shape[0])
    assert isinstance(info.value.__cause__, RuntimeError)  # the forward-mode attempt
    assert H.hvp_method is None  # the next product tries forward mode again
    H._setup.data = split(x, y)
    assert_close(H @ np.eye(43), dense_hessian(model, CE, x, y))
    assert H.hvp_method == "forward-over-reverse"


def test_targets_without_length_use_the_inputs():
    model = make_model("mlp")
    x, _ = make_data("mlp")

    def energy(outputs, _targets):
        return (outputs**2).sum(dim=1).mean()

    H = spt.hessian(model, energy, [(xb, None) for xb, _ in split(x, x[:, 0])])
    flat0 = torch.from_numpy(spt.flatten(model.parameters()))

    def f(flat):
        return energy(functional_call(model, unflatten_dict(flat, model), (x,)), None)

    assert_close(as_dense(H), torch.func.hessian(f)(flat0).numpy())
    # a map-style dataset is a sequence of single samples (0-d targets: one sample each)
    y = make_data("mlp")[1]
    per_sample = spt.gradient(model, CE, torch.utils.data.TensorDataset(x, y))
    assert_close(per_sample, spt.gradient(model, CE, [(x, y)]), tol=1e-13)


# ---------------------------------------------------------------------------------------
# parameter subsets and flat vectors
# ---------------------------------------------------------------------------------------
def test_parameter_subsets_are_diagonal_blocks():
    model = make_model("mlp_bn")
    x, y = make_data("mlp_bn")
    full = dense_hessian(model, CE, x, y)
    H_all = spt.hessian(model, CE, split(x, y))
    wanted = ["3.weight", "1.bias"]
    positions = np.arange(H_all.shape[0])
    index = np.concatenate([positions[H_all.slices[k]] for k in wanted])
    block = full[np.ix_(index, index)]
    selections = [
        wanted,
        [model[3].weight, model[1].bias],
        [("3.weight", model[3].weight), ("whatever", model[1].bias)],
    ]
    for params in selections:
        H = spt.hessian(model, CE, split(x, y), params=params)
        assert H.names == wanted
        assert_close(as_dense(H), block)
        assert_close(
            spt.gradient(model, CE, split(x, y), params=params),
            spt.gradient(model, CE, split(x, y))[index],
            tol=1e-14,
        )
    # a whole layer, by module or by its (relative) named_parameters
    layer = np.concatenate([positions[H_all.slices[k]] for k in ("3.weight", "3.bias")])
    for params in (model[3], model[3].named_parameters(), model[3].parameters()):
        H = spt.hessian(model, CE, split(x, y), params=params)
        assert H.names == ["3.weight", "3.bias"]
        assert_close(as_dense(H), full[np.ix_(layer, layer)])


def test_frozen_parameters_are_skipped_by_default():
    model = make_model("mlp")
    model[0].weight.requires_grad_(False)
    x, y = make_data("mlp")
    H = spt.hessian(model, CE, split(x, y))
    assert H.names == ["0.bias", "2.weight", "2.bias"]
    assert H.shape == (43 - 20, 43 - 20)


def test_flatten_unflatten_round_trip():
    model = make_model("cnn_bn")
    flat = spt.flatten(model.parameters())
    assert flat.dtype == np.float64
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    as_dict = spt.unflatten(flat, model.named_parameters())
    assert list(as_dict) == [k for k, _ in model.named_parameters()]
    for k, p in model.named_parameters():
        assert as_dict[k].shape == p.shape and as_dict[k].dtype == p.dtype
        assert torch.equal(as_dict[k], p.detach())
    as_list = spt.unflatten(flat, list(model.parameters()))
    assert isinstance(as_list, list)
    np.testing.assert_array_equal(spt.flatten(as_list), flat)
    np.testing.assert_array_equal(spt.flatten(as_dict), flat)
    x, y = make_data("cnn_bn")
    H = spt.hessian(model, CE, split(x, y))
    assert list(H.unflatten(flat)) == H.names
    np.testing.assert_array_equal(H.flatten(H.unflatten(flat)), flat)
    with pytest.raises(ValueError, match="entries"):
        spt.unflatten(flat[:-1], model.parameters())


# ---------------------------------------------------------------------------------------
# SciPy and spectral
# ---------------------------------------------------------------------------------------
def test_eigsh_on_the_operator():
    model = make_model("mlp_bn")
    x, y = make_data("mlp_bn")
    H = spt.hessian(model, CE, split(x, y))
    eigs = np.linalg.eigvalsh(dense_hessian(model, CE, x, y))
    top = eigs[np.argsort(np.abs(eigs))[-5:]]
    vals = sla.eigsh(H, k=5, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.sort(top), rtol=1e-8, atol=1e-10)


def _slq_available() -> bool:
    try:
        import spectral
    except ImportError:  # pragma: no cover
        return False
    return hasattr(spectral, "slq")


def _exact_w1(eigs: np.ndarray, cdf, nodes: np.ndarray) -> float:
    """W1 = integral of |F_true - F_est| between two step CDFs, exactly (midpoint rule)."""
    points = np.unique(np.concatenate([eigs, nodes.ravel()]))
    mids = 0.5 * (points[1:] + points[:-1])
    f_true = np.searchsorted(np.sort(eigs), mids, side="right") / eigs.size
    f_est = np.asarray(cdf(mids), dtype=float)
    return float(np.sum(np.abs(f_true - f_est) * np.diff(points)))


@pytest.mark.skipif(not _slq_available(), reason="spectral.slq (the core) is not available")
@pytest.mark.parametrize("kind", ["mlp", "cnn_bn"])
def test_slq_within_certified_wasserstein_bound(kind):
    import spectral

    model = make_model(kind)
    x, y = make_data(kind)
    H = spt.hessian(model, CE, split(x, y))
    eigs = np.linalg.eigvalsh(dense_hessian(model, CE, x, y))
    pad = 1e-3 * (eigs[-1] - eigs[0])
    interval = (eigs[0] - pad, eigs[-1] + pad)
    m = spectral.slq(H, num_steps=20, num_probes=4, seed=0)
    bounds = m.bounds(interval=interval)
    assert _exact_w1(eigs, m.cdf, np.asarray(m.nodes)) <= bounds.wasserstein
    # full Krylov depth: Gauss quadrature is exact on every eigenvalue it sees
    deep = spectral.slq(H, num_steps=H.shape[0], num_probes=2, seed=1)
    assert (
        _exact_w1(eigs, deep.cdf, np.asarray(deep.nodes))
        <= deep.bounds(interval=interval).wasserstein
    )


# ---------------------------------------------------------------------------------------
# determinism guard and BatchNorm semantics
# ---------------------------------------------------------------------------------------
def test_guard_fires_for_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.3), nn.Tanh(), nn.Linear(5, 3))
    model = model.to(F64).train()
    x, y = make_data("mlp")
    with pytest.raises(spt.DeterminismError, match=r"dropout.*model\.eval\(\)"):
        spt.hessian(model, CE, split(x, y))
    # switched off, the products run (randomly) and do not repeat
    H = spt.hessian(model, CE, split(x, y), check_determinism=False)
    v = np.ones(H.shape[0])
    assert not np.allclose(H @ v, H @ v)
    # evaluation mode fixes it
    spt.hessian(model.eval(), CE, split(x, y)) @ v


def test_guard_fires_for_train_mode_batchnorm():
    model = make_model("mlp_bn").train()
    x, y = make_data("mlp_bn")
    with pytest.raises(spt.DeterminismError, match=r"BatchNorm.*training mode.*model\.eval"):
        spt.hessian(model, CE, split(x, y))


def test_guard_fires_for_shuffling_loader():
    model = make_model("mlp")
    x, y = make_data("mlp")
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    with pytest.raises(spt.DeterminismError, match=r"RandomSampler.*shuffle=False"):
        spt.hessian(model, CE, loader)
    sampler = torch.utils.data.SubsetRandomSampler(range(100))
    with pytest.raises(spt.DeterminismError, match="SubsetRandomSampler"):
        spt.hessian(model, CE, torch.utils.data.DataLoader(dataset, sampler=sampler))
    # shuffling changes only the rounding of an eval-mode data-set Hessian
    H = spt.hessian(model, CE, loader, check_determinism=False)
    assert_close(as_dense(H), dense_hessian(model, CE, x, y))


def test_guard_fires_for_batchnorm_without_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False))
    model = model.to(F64).eval()  # eval mode, yet batch statistics
    x, y = make_data("mlp")
    with pytest.raises(spt.DeterminismError, match="without running statistics"):
        spt.hessian(model, CE, split(x, y))


def test_numerical_guard_catches_what_the_checks_cannot_see():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), Noise(), nn.Tanh(), nn.Linear(5, 3)).to(F64).eval()
    x, y = make_data("mlp")
    H = spt.hessian(model, CE, split(x, y))  # nothing visible up front
    with pytest.raises(spt.DeterminismError) as info:
        H @ np.ones(H.shape[0])
    message = str(info.value)
    for word in ("dropout", "BatchNorm", "shuffle=False", "model.eval()", "check_determinism"):
        assert word in message


def test_batchnorm_eval_uses_population_statistics():
    model = make_model("mlp_bn")
    x, y = make_data("mlp_bn")
    H = as_dense(spt.hessian(model, CE, split(x, y)))
    # reference with the running statistics folded into a plain affine map
    bn = model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(model)
    folded[1] = nn.Identity()
    with torch.no_grad():
        folded[0].weight.mul_(scale[:, None])
        folded[0].bias.copy_((model[0].bias - bn.running_mean) * scale + bn.bias)
    np.testing.assert_allclose(
        spt.loss(model, CE, split(x, y)), spt.loss(folded, CE, split(x, y)), rtol=1e-13
    )
    assert_close(H, dense_hessian(model, CE, x, y))  # eval: batching does not matter
    assert_close(H, as_dense(spt.hessian(model, CE, [(x, y)])), tol=1e-12)


def test_batchnorm_train_mode_uses_batch_statistics():
    model = make_model("mlp_bn").train()
    before = {k: b.clone() for k, b in model.named_buffers()}
    x, y = make_data("mlp_bn")
    batches = split(x, y)
    H = spt.hessian(model, CE, batches, check_determinism=False)
    dense = as_dense(H)
    assert H.hvp_method == "double-backward"  # in-place running-stat updates block torch.func
    # reference: sum_k (n_k / N) Hessian of each batch's loss with that batch's statistics
    expected = sum(
        len(yb) / N_SAMPLES * dense_hessian(model, CE, xb, yb, functorch=False)
        for xb, yb in batches
    )
    assert_close(dense, expected)
    eval_dense = dense_hessian(model.eval(), CE, x, y)
    model.train()
    assert np.max(np.abs(dense - eval_dense)) > 1e-3  # not the population-statistics Hessian
    single = as_dense(spt.hessian(model, CE, [(x, y)], check_determinism=False))
    assert np.max(np.abs(dense - single)) > 1e-6  # depends on the batching
    gradient = spt.gradient(model, CE, [(x, y)])
    # the adapter leaves the model untouched (a plain forward pass in training mode would not)
    assert model.training
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k
    assert_close(gradient, dense_gradient(copy.deepcopy(model), CE, x, y), tol=1e-12)


# ---------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------
def test_float32_model():
    model64 = make_model("cnn_bn")
    model32 = copy.deepcopy(model64).float()
    x, y = make_data("cnn_bn")
    H = spt.hessian(model32, CE, split(x.float(), y))
    assert H.dtype == np.float32 and H.torch_dtype == torch.float32
    dense32 = as_dense(H)
    assert dense32.dtype == np.float64  # returned to the float64 Lanczos recurrence
    reference = dense_hessian(model64, CE, x, y)
    assert_close(dense32, reference, tol=2e-5)
    assert np.max(np.abs(dense32 - reference)) > 1e-12  # really computed in float32
    assert model32[0].weight.dtype == torch.float32


def test_bfloat16_model():
    model64 = make_model("mlp")
    model16 = copy.deepcopy(model64).to(torch.bfloat16)
    x, y = make_data("mlp")
    H = spt.hessian(model16, CE, split(x, y))  # float64 inputs are cast to bfloat16
    assert H.dtype == np.float32 and H.torch_dtype == torch.bfloat16
    dense = as_dense(H)
    reference = dense_hessian(copy.deepcopy(model16).to(F64), CE, x.bfloat16().to(F64), y)
    assert np.linalg.norm(dense - reference) <= 0.05 * np.linalg.norm(reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_model_stays_on_the_gpu():  # pragma: no cover - needs a GPU
    model = make_model("cnn_bn")
    x, y = make_data("cnn_bn")
    cpu = as_dense(spt.hessian(model, CE, split(x, y)))
    gpu_model = copy.deepcopy(model).cuda()
    H = spt.hessian(gpu_model, CE, split(x, y))  # CPU batches are moved to the GPU
    assert H.device.type == "cuda"
    assert_close(as_dense(H), cpu, tol=1e-10)
    assert next(gpu_model.parameters()).device.type == "cuda"


# ---------------------------------------------------------------------------------------
# shared digits MLP
# ---------------------------------------------------------------------------------------
def test_digits_mlp_matches_numpy_loss():
    dm = _digits_module()
    model, loss_fn, data = build_digits_mlp_torch()
    assert [len(b[1]) for b in data] == [128, 128, 44]
    x, y = dm.digits_data(300)
    expected = dm.loss_numpy(dm.mlp_weights(0), x, y)
    assert spt.loss(model, loss_fn, data) == pytest.approx(expected, rel=1e-13)
    H = spt.hessian(model, loss_fn, data)
    assert H.shape == (dm.num_params(), dm.num_params())
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    flat0 = torch.from_numpy(spt.flatten(model.parameters()))

    def f(flat):
        return loss_fn(functional_call(model, unflatten_dict(flat, model), (xt,)), yt)

    _, hv = torch.autograd.functional.hvp(f, flat0, torch.from_numpy(v))
    assert_close(H @ v, hv.numpy())
