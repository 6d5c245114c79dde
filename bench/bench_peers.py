"""Side-by-side comparison of spectral with peer SLQ libraries: time ratios and W1 accuracy.

Every library runs the same work: ``k`` Lanczos steps on each of ``P`` random probes
(defaults ``k = 80``, ``P = 10``), with reorthogonalisation ``"none"`` or ``"full"``. Peers
that offer one mode only are compared in that mode:

================== ========================= ==========================================
library            what is timed             reorthogonalisation
================== ========================= ==========================================
spectral           ``spectral.slq``          ``"none"`` and ``"full"``
PyHessian 0.1      ``hessian.density``       full (one Gram-Schmidt pass); needs a shim
hessian-eigenthings ``spectral_density``     full (always)
curvlinops         Papyan's ``fast_lanczos`` none (always)
                   + smoothing, P times
matfree            ``decomp.tridiag_sym``    ``reortho="none"`` and ``"full"``
                   vmapped over the probes,
                   + ``eigh(T)``, one ``jit``
imate              ``imate.density``         ``orthogonalize=0`` (none), ``-1`` (full)
                   (``method="slq"``)
================== ========================= ==========================================

Problems:

* a dense symmetric ``n = 2000`` matrix :func:`spectral.matrices.from_spectrum` with a
  Hessian-like spectrum (:func:`spectral.matrices.hessian_like`);
* the sparse 2-D grid Laplacian :func:`spectral.matrices.grid_laplacian` (exact eigenvalues
  in closed form), ``n = 10⁶`` with reorth "none"; with reorth "full" ``n = 10⁵`` by default
  (``--full-nx``): full reorthogonalisation of 10 probes × 80 steps at ``n = 10⁶`` streams
  about 1 TB of Lanczos basis through memory per library and run, minutes each;
* a PyTorch MLP 64-32-32-10 (tanh, float64, 3,466 parameters), trained briefly on all 1,797
  scikit-learn digits, full-batch cross-entropy Hessian (exact spectrum: dense ``eigh`` of
  the Hessian from :func:`torch.func.hessian`), through spectral's PyTorch adapter and the
  peers; and the same model and data in JAX through spectral's JAX adapter against matfree
  (both jit-compiled, warm).

Timing: each library's own SLQ / density call, after one untimed warm-up run; the
``--repeats`` runs are interleaved across libraries (the order rotates from repeat to
repeat) and the minimum is reported, so that noise from other work on the machine hits all
libraries alike. Operators and models are built outside the timed region.

Accuracy: the W1 (earth mover's) distance between the exact eigenvalue distribution
``(1/n) Σ δ_{λ_i}`` and each library's quadrature ``(1/P) Σ_ℓ Σ_j ω_j^ℓ δ_{θ_j^ℓ}`` (weights
normalised to sum 1 per probe), integrated exactly as ``∫ |F_true − F_est|`` between the
merged breakpoints of the two step functions; mean over the timed repeats (each repeat
draws new probes with its own seed), with its standard error: with 10 probes W1 varies
from seed to seed by some 25 % on the MLP, so differences within two standard errors are
noise. spectral draws Rademacher probes here (``--probe-kind``), as PyHessian,
hessian-eigenthings, imate and (in this script) matfree do; curvlinops draws Gaussian probes.
imate returns no nodes or weights: its CDF is evaluated
by imate itself (``cumulative=True`` on an :class:`imate.AffineMatrixFunction` ``A + tI`` with
many shifts ``t``, one SLQ run, the same seed as the timed call, untimed) on a grid of 40,001
points with a kernel width of half the grid step, and integrated on that grid (``W1*``).

Also printed: spectral's HVPs alone on the MLP (the same ``k`` batched products of an
``n × P`` block, timed bare) and SLQ / HVP-only; batched probes (``P`` in one matmat) vs
``P`` sequential runs on the MLP and on the grid Laplacian; the bare SciPy products on the
grid (``k`` block products ``L @ X``, ``X`` of shape ``(n, P)``, and ``k·P`` single-vector
products); the peak traced memory of spectral's reorth "none" run on the grid.

Allocator: unless ``--no-retain``, the script first calls
:func:`spectral.retain_freed_memory`, which keeps large freed blocks in the heap of the
whole process, so every library of the run profits alike (XLA and PyTorch allocate large
scratch buffers per product; without it each Lanczos step page-faults them in again).

Install the peers with the ``bench`` extra, pinned (torch stays at the version of
``constraints.txt``; curvlinops is installed without its dependency backpack, which pulls
torchvision and is only used by curvlinops' experimental modules)::

    pip install -c constraints.txt -c bench/constraints-bench.txt -e ".[bench]"
    pip install --no-deps -c constraints.txt -c bench/constraints-bench.txt \\
        curvlinops-for-pytorch

PyHessian 0.1 (the release on PyPI) calls ``torch.eig``, removed from PyTorch in 2.x; the
benchmark replaces it, for the duration of PyHessian's own call only, by a documented shim
(:func:`_torch_eig_shim`: ``torch.linalg.eigh`` of the symmetric tridiagonal, returned in
``torch.eig``'s old format). A peer that is missing or fails is reported in the table as
such, with the error.

Run from the repository root::

    python bench/bench_peers.py            # the full comparison (about 30 minutes)
    python bench/bench_peers.py --quick    # grid n = 10⁵ (full: 10⁴), 2 repeats
    python bench/bench_peers.py --only mlp --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.metadata
import math
import os
import platform
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import spectral
from spectral.matrices import from_spectrum, grid_laplacian, hessian_like

# ---------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------


def w1_quadrature(lam: np.ndarray, nodes: np.ndarray, weights: np.ndarray) -> float:
    """Exact W1 distance between ``(1/n) Σ δ_λ`` and the averaged per-probe Gauss rules.

    ``nodes`` and ``weights`` have shape ``(P, k)``; each row of weights is normalised to
    sum one (NaN nodes, from padded runs, are dropped with their weights). Both CDFs are
    step functions, so ``∫ |F_true − F_est|`` is a finite sum over the merged breakpoints.
    """
    lam = np.asarray(lam, dtype=np.float64).ravel()
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    weights = np.where(np.isfinite(nodes), weights, 0.0)
    nodes = np.where(np.isfinite(nodes), nodes, 0.0)
    weights = weights / weights.sum(axis=1, keepdims=True) / weights.shape[0]
    x = np.concatenate([lam, nodes.ravel()])
    mass = np.concatenate([np.full(lam.size, 1.0 / lam.size), -weights.ravel()])
    order = np.argsort(x, kind="stable")
    x, diff = x[order], np.cumsum(mass[order])
    return float(np.sum(np.abs(diff[:-1]) * np.diff(x)))


def w1_cdf_grid(lam: np.ndarray, x: np.ndarray, cdf: np.ndarray) -> float:
    """W1 from an estimated CDF tabulated on the grid ``x`` (trapezoid rule)."""
    true = np.searchsorted(np.sort(lam), x, side="right") / lam.size
    return float(np.trapezoid(np.abs(true - cdf), x))


# ---------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One row of the table: a library (or a bare-products baseline) on one problem.

    ``run(seed)`` is the timed call; it returns ``(nodes, weights)`` of shape ``(P, k)`` or
    ``None`` (baselines). ``accuracy(seed, out)`` returns the W1 distance; by default the
    exact W1 of ``out``. ``ours`` names the spectral row the ratio is taken against.
    """

    library: str
    reorth: str
    run: Callable[[int], object]
    ours: str | None = None
    accuracy: Callable[[int, object], float] | None = None
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    w1: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.library} [{self.reorth}]"

    @property
    def best(self) -> float:
        return min(self.times) if self.times else math.nan


@dataclass
class Problem:
    name: str
    lam: np.ndarray | None
    entries: list[Entry]
    lines: list[str] = field(default_factory=list)


def _short_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:150]


def run_problem(problem: Problem, repeats: int, verbose: bool = True) -> None:
    """Warm every entry up once, then time ``repeats`` interleaved rounds."""
    lam = problem.lam
    print(f"\n== {problem.name}", flush=True)
    for e in problem.entries:
        t0 = time.perf_counter()
        try:
            e.run(0)
        except Exception as exc:  # a peer that fails is reported, not fatal
            e.error = _short_error(exc)
            if verbose:
                traceback.print_exc(limit=3)
        print(f"  warm-up {e.key:<46} {time.perf_counter() - t0:8.2f} s"
              + (f"  FAILED {e.error}" if e.error else ""), flush=True)
    live = [e for e in problem.entries if e.error is None]
    for r in range(1, repeats + 1):
        shift = (r - 1) % max(len(live), 1)
        for e in live[shift:] + live[:shift]:
            if e.error is not None:
                continue
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            try:
                out = e.run(r)
            except Exception as exc:
                e.error = _short_error(exc)
                continue
            t = time.perf_counter() - t0
            e.times.append(t)
            e.cpu.append(time.process_time() - c0)
            if lam is not None and (out is not None or e.accuracy is not None):
                e.w1.append(
                    e.accuracy(r, out) if e.accuracy is not None else w1_quadrature(lam, *out)
                )
            if verbose:
                w = f"  W1 {e.w1[-1]:.3e}" if e.w1 and len(e.w1) == len(e.times) else ""
                print(f"  repeat {r}: {e.key:<46} {t:8.3f} s (cpu {e.cpu[-1]:7.3f} s){w}",
                      flush=True)


def format_table(problems: list[Problem]) -> str:
    """One table: time (min), their time / ours, CPU time (min), W1 (mean over the repeats,
    which draw new probes, and its standard error), W1 / ours."""
    rows = []
    head = ("problem", "library [reorth]", "time (s)", "time / ours", "cpu (s)", "W1",
            "W1 se", "W1 / ours", "note")
    for p in problems:
        by_key = {e.key: e for e in p.entries}
        for e in p.entries:
            ours = by_key.get(e.ours) if e.ours else None
            if e.error is not None:
                rows.append((p.name, e.key, "failed", "", "", "", "", "", e.error))
                continue
            ratio = e.best / ours.best if ours is not None and ours.times else math.nan
            w1 = float(np.mean(e.w1)) if e.w1 else math.nan
            w1_ours = float(np.mean(ours.w1)) if ours is not None and ours.w1 else math.nan
            rows.append(
                (
                    p.name,
                    e.key,
                    f"{e.best:.3f}",
                    "" if math.isnan(ratio) else f"{ratio:.2f}",
                    f"{min(e.cpu):.3f}",
                    "" if math.isnan(w1) else f"{w1:.2e}",
                    f"{np.std(e.w1, ddof=1) / np.sqrt(len(e.w1)):.1e}" if len(e.w1) > 1 else "",
                    "" if math.isnan(w1) or math.isnan(w1_ours) else f"{w1 / w1_ours:.2f}",
                    e.note,
                )
            )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"

    def line(r):
        cells = [
            f" {c!s:<{w}} " if i in (0, 1, 7) else f" {c!s:>{w}} "
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "|" + "|".join(cells) + "|"

    return "\n".join([line(head), sep, *(line(r) for r in rows)])


# ---------------------------------------------------------------------------------------
# peers: helpers shared by several problems
# ---------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _missing(library: str, reorth: str, exc: BaseException, ours: str) -> Entry:
    def fail(seed):
        raise RuntimeError(f"not available: {_short_error(exc)}")

    return Entry(library, reorth, fail, ours=ours)


def _rademacher(n: int, P: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(10_000 + seed)
    return rng.choice(np.array([-1.0, 1.0]), size=(n, P))


#: Probe distribution of spectral's runs; set by ``--probe-kind``.
PROBE_KIND = "rademacher"


def spectral_entry(A, k, P, reorth, *, batch_size=None, label="spectral", note="") -> Entry:
    def run(seed):
        m = spectral.slq(A, k, P, reorth=reorth, seed=seed, batch_size=batch_size,
                         probes=PROBE_KIND)
        return m.nodes, m.weights

    return Entry(label, reorth, run, ours=f"spectral [{reorth}]", note=note)


def imate_entries(A, lam, k, P, ours_none, ours_full) -> list[Entry]:
    """imate's SLQ density call, timed at one abscissa; accuracy from its own CDF curve."""
    try:
        import imate
    except Exception as exc:
        return [_missing("imate", m, exc, o) for m, o in (("none", ours_none),
                                                           ("full", ours_full))]
    lo, hi = float(lam[0]), float(lam[-1])
    pad = 0.02 * (hi - lo)
    x = np.linspace(lo - pad, hi + pad, 40001)
    sigma = 0.5 * (x[1] - x[0])
    affine = imate.AffineMatrixFunction(A)
    entries = []
    for reorth, orth, ours in (("none", 0, ours_none), ("full", -1, ours_full)):

        def run(seed, orth=orth):
            d, _ = imate.density(
                A, mu=0.5 * (lo + hi), sigma=sigma, method="slq", lanczos_degree=k,
                min_num_samples=P, max_num_samples=P, orthogonalize=orth, seed=seed,
                num_threads=IMATE_THREADS,
            )
            return d

        def accuracy(seed, out, orth=orth):
            d, _ = imate.density(
                affine, mu=0.0, sigma=sigma, method="slq", cumulative=True,
                parameters=(-x).tolist(), lanczos_degree=k, min_num_samples=P,
                max_num_samples=P, orthogonalize=orth, seed=seed, num_threads=IMATE_THREADS,
            )
            d = np.asarray(d, dtype=np.float64).ravel()
            cdf = 1.0 - d if d[0] > d[-1] else d  # imate integrates the kernel from mu up
            return w1_cdf_grid(lam, x, cdf)

        entries.append(
            Entry("imate", reorth, run, ours=ours, accuracy=accuracy,
                  note=f"orthogonalize={orth}; W1* from imate's CDF on a grid")
        )
    return entries


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def matfree_entries(matvec, n, k, P, ours_none, ours_full, *, params=(), note="") -> list[Entry]:
    """matfree: tridiag_sym vmapped over the probes, then eigh(T), in one jit.

    ``matvec(v, *params)``; ``params`` (e.g. a sparse matrix) are passed as arguments of
    the jitted function, not captured as constants (XLA would constant-fold their index
    arrays for minutes).
    """
    try:
        jax = _jax()
        import jax.numpy as jnp
        from matfree import decomp
    except Exception as exc:
        return [_missing("matfree", m, exc, o) for m, o in (("none", ours_none),
                                                             ("full", ours_full))]
    entries = []
    for reorth, ours in (("none", ours_none), ("full", ours_full)):
        tridiag = decomp.tridiag_sym(k, reortho=reorth, materialize=True)

        def one_probe(v, *p, tridiag=tridiag):
            _, T, *_ = tridiag(matvec, v, *p)
            evals, evecs = jnp.linalg.eigh(T)
            return evals, evecs[0, :] ** 2

        slq = jax.jit(jax.vmap(one_probe, in_axes=(0,) + (None,) * len(params)))

        def run(seed, slq=slq):
            V = jnp.asarray(_rademacher(n, P, seed).T)
            nodes, weights = slq(V, *params)
            nodes.block_until_ready()
            return np.asarray(nodes), np.asarray(weights)

        entries.append(Entry("matfree", reorth, run, ours=ours,
                             note=f'reortho="{reorth}"' + (f"; {note}" if note else "")))
    return entries


def _torch_matrix_operator(M, n):
    """A curvlinops PyTorchLinearOperator for an explicit torch matrix (dense or CSR)."""
    import torch
    from curvlinops._torch_base import PyTorchLinearOperator

    class TorchMatrixOperator(PyTorchLinearOperator):
        SELF_ADJOINT = True

        def __init__(self):
            super().__init__([(n,)], [(n,)])

        def _matmat(self, X):
            return [M @ X[0]]

        @property
        def device(self):
            return torch.device("cpu")

        @property
        def dtype(self):
            return torch.float64

    return TorchMatrixOperator()


def curvlinops_spectrum_entry(A_op, k, P, boundaries, ours, note="") -> Entry:
    """curvlinops' SLQ density (Papyan 2020 Algorithm 2): lanczos_approximate_spectrum's
    body, i.e. ``fast_lanczos`` P times and the Gaussian smoothing of each run, with the
    spectrum boundaries given (not estimated with ARPACK)."""
    import torch
    from curvlinops.papyan2020traces.spectrum import (
        fast_lanczos,
        lanczos_approximate_spectrum_from_iter,
    )

    def run(seed):
        torch.manual_seed(seed)
        nodes, weights = [], []
        density = None
        for _ in range(P):
            evals, evecs = fast_lanczos(A_op, k)
            _, dens = lanczos_approximate_spectrum_from_iter(
                (evals, evecs), boundaries, 1024, 3.0, 0.05
            )
            density = dens if density is None else density + dens
            nodes.append(evals.numpy())
            weights.append((evecs[0, :] ** 2).numpy())
        return np.array(nodes), np.array(weights)

    return Entry("curvlinops", "none", run, ours=ours,
                 note="fast_lanczos + smoothing, boundaries given" + (f"; {note}" if note else ""))


def eigenthings_entry(op, k, P, ours, note="") -> Entry:
    from hessian_eigenthings.algorithms.spectral_density import spectral_density

    def run(seed):
        res = spectral_density(op, num_runs=P, lanczos_steps=k, seed=1000 * seed)
        return res.raw_eigenvalues.numpy(), res.raw_weights.numpy()

    return Entry("hessian-eigenthings", "full", run, ours=ours,
                 note="spectral_density (always full reorth)" + (f"; {note}" if note else ""))


# ---------------------------------------------------------------------------------------
# problem 1 and 2: explicit matrices
# ---------------------------------------------------------------------------------------


def explicit_problem(name, A, lam, k, P, *, sparse: bool, reorths, bare: bool) -> Problem:
    n = A.shape[0]
    entries: list[Entry] = []
    ours = {r: f"spectral [{r}]" for r in ("none", "full")}
    for reorth in reorths:
        entries.append(spectral_entry(A, k, P, reorth))
    if sparse and bare and "none" in reorths:
        entries.append(
            spectral_entry(A, k, P, "none", batch_size=1, label="spectral sequential",
                           note=f"{P} runs of one probe (batch_size=1)")
        )
        Xb = np.ascontiguousarray(np.random.default_rng(0).standard_normal((n, P)))

        def bare_batched(seed):
            for _ in range(k):
                A @ Xb

        def bare_seq(seed):
            for p in range(P):
                x = np.ascontiguousarray(Xb[:, p])
                for _ in range(k):
                    A @ x

        entries.append(Entry("scipy bare matmat", "none", bare_batched, ours=ours["none"],
                             note=f"{k} products L @ X, X of shape (n, {P})"))
        entries.append(Entry("scipy bare matvec", "none", bare_seq, ours=ours["none"],
                             note=f"{k * P} single-vector products L @ x"))
    # imate: explicit matrices only
    for e in imate_entries(A, lam, k, P, ours["none"], ours["full"]):
        if e.reorth in reorths:
            entries.append(e)
    # matfree (JAX): dense jnp array or BCSR sparse matrix
    try:
        _jax()
        import jax.numpy as jnp

        if sparse:
            from jax.experimental import sparse as jsparse

            Aj = jsparse.BCSR.from_scipy_sparse(A.tocsr())
            note = "jax.experimental.sparse BCSR matvec"
        else:
            Aj = jnp.asarray(A)
            note = "jnp dense matvec"

        def matvec(v, M):
            return M @ v

        for e in matfree_entries(matvec, n, k, P, ours["none"], ours["full"], params=(Aj,),
                                 note=note):
            if e.reorth in reorths:
                entries.append(e)
    except Exception as exc:
        for r in reorths:
            entries.append(_missing("matfree", r, exc, ours[r]))
    # PyTorch peers on the explicit matrix as a torch tensor
    try:
        import torch

        if sparse:
            Acsr = A.tocsr()
            M = torch.sparse_csr_tensor(
                torch.from_numpy(Acsr.indptr.astype(np.int64)),
                torch.from_numpy(Acsr.indices.astype(np.int64)),
                torch.from_numpy(Acsr.data.astype(np.float64)),
                size=A.shape,
            )
            tnote = "torch sparse CSR"
        else:
            M = torch.from_numpy(np.asarray(A, dtype=np.float64))
            tnote = "torch dense"
        if "none" in reorths:
            try:
                op = _torch_matrix_operator(M, n)
                bounds = (float(lam[0]), float(lam[-1]))
                entries.append(curvlinops_spectrum_entry(op, k, P, bounds, ours["none"],
                                                         note=tnote))
            except Exception as exc:
                entries.append(_missing("curvlinops", "none", exc, ours["none"]))
        if "full" in reorths:
            try:
                from hessian_eigenthings.operators import LambdaOperator

                if sparse:
                    def mv(v):
                        return (M @ v.unsqueeze(1)).squeeze(1)
                else:
                    def mv(v):
                        return M @ v

                op = LambdaOperator(mv, n, dtype=torch.float64)
                entries.append(eigenthings_entry(op, k, P, ours["full"],
                                                 note=f"LambdaOperator, {tnote}"))
            except Exception as exc:
                entries.append(_missing("hessian-eigenthings", "full", exc, ours["full"]))
    except Exception as exc:
        entries.append(_missing("torch peers", "none", exc, ours["none"]))
    return Problem(name, lam, entries)


# ---------------------------------------------------------------------------------------
# problem 3: the MLP on the digits
# ---------------------------------------------------------------------------------------


def make_mlp(train_steps: int = 60):
    """MLP 64-32-32-10 (tanh, float64) trained briefly (full-batch Adam) on all digits."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target, dtype=torch.int64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 10),
    ).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crit = torch.nn.CrossEntropyLoss()
    for _ in range(train_steps):
        opt.zero_grad()
        loss = crit(model(X), y)
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        final = float(crit(model(X), y))
    return model, X, y, final


def exact_hessian(model, X, y, chunk: int = 128) -> np.ndarray:
    """Dense Hessian of the mean cross-entropy by torch.func.hessian, summed over chunks."""
    import torch
    from torch.func import functional_call, hessian

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(t, xb, yb):
        parts = torch.split(t, sizes)
        params = {nm: pc.reshape(sh) for nm, pc, sh in zip(names, parts, shapes, strict=True)}
        out = functional_call(model, params, (xb,))
        return torch.nn.functional.cross_entropy(out, yb, reduction="sum")

    H = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for s in range(0, X.shape[0], chunk):
        H += hessian(loss)(theta, X[s : s + chunk], y[s : s + chunk])
    H /= X.shape[0]
    return ((H + H.T) / 2).numpy()


def exact_spectrum(model, X, y, cache_dir: str | None):
    """Eigenvalues of the exact Hessian, cached by a hash of the parameters and data.

    The dense Hessian costs 3,466 forward-over-reverse products over all samples (minutes
    on a busy 2-core machine); the cache makes reruns cheap. Returns ``(H or None,
    eigenvalues, read_from_cache)``.
    """
    import hashlib

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    h.update(X.numpy().tobytes())
    h.update(y.numpy().tobytes())
    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"mlp_spectrum_{h.hexdigest()[:16]}.npy")
        if os.path.exists(path):
            return None, np.load(path), True
    Hd = exact_hessian(model, X, y)
    lam = np.linalg.eigvalsh(Hd)
    if path:
        np.save(path, lam)
    return Hd, lam, False


@contextlib.contextmanager
def _torch_eig_shim():
    """Let PyHessian 0.1 run on PyTorch ≥ 2: provide the removed ``torch.eig``.

    PyHessian's ``density`` eigen-decomposes the symmetric tridiagonal ``T`` with
    ``a_, b_ = torch.eig(T, eigenvectors=True)`` and reads the eigenvalues as ``a_[:, 0]``
    (the real parts) and the eigenvectors as the columns of ``b_``. ``torch.eig`` now only
    raises. For the duration of PyHessian's call the shim computes the same thing with
    ``torch.linalg.eigh`` (T is symmetric, so the eigenvalues are real), returned in the old
    format ``(n × 2 [real, imaginary], eigenvectors)``; the original is restored afterwards.
    Nothing of PyHessian is copied or changed.
    """
    import torch

    def eig(input, eigenvectors=False):
        w, v = torch.linalg.eigh(input)
        values = torch.stack([w, torch.zeros_like(w)], dim=1)
        return values, (v if eigenvectors else torch.empty(0, dtype=input.dtype))

    original = torch.eig
    torch.eig = eig
    try:
        yield
    finally:
        torch.eig = original


def mlp_torch_problem(model, X, y, lam, k, P) -> Problem:
    import torch

    from spectral.adapters import torch as spt

    crit = torch.nn.CrossEntropyLoss()
    data = [(X, y)]
    H = spt.hessian(model, crit, data)
    n = H.shape[0]
    entries = [spectral_entry(H, k, P, "full"), spectral_entry(H, k, P, "none")]
    entries.append(spectral_entry(H, k, P, "none", batch_size=1, label="spectral sequential",
                                  note=f"{P} runs of one probe (batch_size=1)"))
    V = np.random.default_rng(0).standard_normal((n, P))

    def hvp_only(seed):
        for _ in range(k):
            H @ V

    entries.append(Entry("spectral HVPs only", "none", hvp_only, ours="spectral [none]",
                         note=f"{k} bare products H @ V, V of shape (n, {P})"))
    lo, hi = float(lam[0]), float(lam[-1])
    # PyHessian 0.1 (needs the torch.eig shim)
    try:
        from pyhessian import hessian as pyhessian_hessian

        ph_model = copy.deepcopy(model)
        hc = pyhessian_hessian(ph_model, crit, data=(X, y), cuda=False)

        def run_pyhessian(seed):
            torch.manual_seed(seed)
            with _torch_eig_shim():
                nodes, weights = hc.density(iter=k, n_v=P)
            return np.array(nodes, dtype=np.float64), np.array(weights, dtype=np.float64)

        entries.append(Entry("PyHessian", "full", run_pyhessian, ours="spectral [full]",
                             note="density(); torch.eig shim; one-batch graph reused"))
    except Exception as exc:
        entries.append(_missing("PyHessian", "full", exc, "spectral [full]"))
    # hessian-eigenthings
    try:
        from hessian_eigenthings.loss_fns import supervised_loss
        from hessian_eigenthings.operators import HessianOperator

        op = HessianOperator(model, data, supervised_loss(torch.nn.functional.cross_entropy))
        entries.append(eigenthings_entry(op, k, P, "spectral [full]", note="HessianOperator"))
    except Exception as exc:
        entries.append(_missing("hessian-eigenthings", "full", exc, "spectral [full]"))
    # curvlinops
    try:
        from curvlinops import HessianLinearOperator

        params = [p for p in model.parameters() if p.requires_grad]
        Hc = HessianLinearOperator(model, crit, params, data)
        entries.append(curvlinops_spectrum_entry(Hc, k, P, (lo, hi), "spectral [none]",
                                                 note="HessianLinearOperator"))
    except Exception as exc:
        entries.append(_missing("curvlinops", "none", exc, "spectral [none]"))
    return Problem("MLP digits, PyTorch", lam, entries)


def jax_mlp(model, X, y):
    """The PyTorch MLP and data in JAX: ``(loss_fn, params, (X, y))``, the same function.

    ``loss_fn(params, batch)`` is the batch-mean cross-entropy of the tanh MLP, with the
    parameters as a dict of JAX arrays keyed by the module names (dots as underscores).
    """
    jax = _jax()
    import jax.numpy as jnp

    params = {
        name.replace(".", "_"): jnp.asarray(p.detach().numpy())
        for name, p in model.named_parameters()
    }

    def loss_fn(p, batch):
        xb, yb = batch
        h = jnp.tanh(xb @ p["0_weight"].T + p["0_bias"])
        h = jnp.tanh(h @ p["2_weight"].T + p["2_bias"])
        logits = h @ p["4_weight"].T + p["4_bias"]
        logz = jax.nn.logsumexp(logits, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(logits, yb[:, None], axis=1)[:, 0])

    return loss_fn, params, (jnp.asarray(X.numpy()), jnp.asarray(y.numpy()))


def mlp_jax_problem(model, X, y, lam, k, P) -> Problem:
    jax = _jax()
    from jax.flatten_util import ravel_pytree

    from spectral.adapters import jax as spj

    loss_fn, params, (Xj, yj) = jax_mlp(model, X, y)
    H = spj.hessian(loss_fn, params, [(Xj, yj)])
    n = H.shape[0]
    entries = [spectral_entry(H, k, P, "full"), spectral_entry(H, k, P, "none")]
    flat, unravel = ravel_pytree(params)

    def loss_flat(theta):
        return loss_fn(unravel(theta), (Xj, yj))

    grad = jax.grad(loss_flat)

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    entries += matfree_entries(hvp, n, k, P, "spectral [none]", "spectral [full]",
                               note="HVP jvp(grad), forward-over-reverse")
    return Problem("MLP digits, JAX", lam, entries)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unavailable"


def versions() -> str:
    dists = [
        "spectral-slq", "numpy", "scipy", "numba", "torch", "jax", "jaxlib", "scikit-learn",
        "PyHessian", "hessian-eigenthings", "curvlinops-for-pytorch", "matfree", "imate",
    ]
    return ", ".join(f"{d} {_version(d)}" for d in dists)


def grid_memory_line(L, k, P) -> str:
    """Peak traced memory of spectral's reorth "none" run on the grid, in n-vectors/probe."""
    n = L.shape[0]
    gc.collect()
    tracemalloc.start()
    spectral.slq(L, k, P, reorth="none", seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_probe = peak / (8 * n * P)
    return (f'spectral reorth "none" on the grid (n = {n:,}, P = {P}): peak traced memory '
            f"{peak / 1e6:.1f} MB = {per_probe:.2f} float64 vectors of length n per probe")


#: Threads for imate (0: all cores); set by ``--threads``.
IMATE_THREADS = 0
_LIMITS = []


def configure_threads(threads: int | None) -> str:
    """Set the OpenMP wait policy and, with ``threads``, cap every library's thread count.

    ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) keeps idle OpenMP threads (PyTorch,
    numba, imate) from spinning: on a shared machine busy with other work, spinning
    threads of a 2-thread team slowed PyTorch's products by up to 17x here. It must be set
    before the OpenMP runtime starts, hence before torch, numba or imate are imported.
    """
    global IMATE_THREADS
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        IMATE_THREADS = threads
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
        if threads == 1:
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "")
                + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            ).strip()
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            _LIMITS.append(threadpool_limits(threads))
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(threads)
            torch.set_num_interop_threads(threads)
    return (f"threads: {'library defaults (all cores)' if threads is None else threads}; "
            f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="grid n = 10^5 (full reorth: 10^4), 2 repeats")
    parser.add_argument("--k", type=int, default=80, help="Lanczos steps (80)")
    parser.add_argument("--probes", type=int, default=10, help="probes P (10)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (3)")
    parser.add_argument("--nx", type=int, default=None,
                        help='grid side for reorth "none"; n = nx^2 (1000; --quick 316)')
    parser.add_argument("--full-nx", type=int, default=None,
                        help='grid side for reorth "full" (316; --quick 100)')
    parser.add_argument("--dense-n", type=int, default=2000, help="dense matrix order (2000)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["dense", "grid", "grid-full", "mlp", "mlp-jax"],
                        help="run only these problems")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap the threads of every library (default: all cores)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "spectral-bench"),
                        help="folder caching the exact MLP spectrum ('' for none)")
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    parser.add_argument("--probe-kind", default="rademacher",
                        choices=["rademacher", "sphere"],
                        help="spectral's probes (rademacher, as PyHessian, hessian-eigenthings, "
                             "imate and matfree here; curvlinops draws Gaussian probes)")
    parser.add_argument("--no-retain", action="store_true",
                        help="leave glibc's malloc as it is (default: "
                             "spectral.retain_freed_memory(), for every library of the run)")
    args = parser.parse_args(argv)
    global PROBE_KIND
    PROBE_KIND = args.probe_kind
    thread_line = configure_threads(args.threads)
    retain = False if args.no_retain else spectral.retain_freed_memory()
    repeats = args.repeats or (2 if args.quick else 3)
    nx = args.nx or (316 if args.quick else 1000)
    full_nx = args.full_nx or (100 if args.quick else 316)
    k, P = args.k, args.probes
    todo = set(args.only or ["dense", "grid", "grid-full", "mlp", "mlp-jax"])

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
          f"{cpu_model()}; python {platform.python_version()}")
    print(f"versions: {versions()}")
    print(thread_line)
    print("allocator: " + ("spectral.retain_freed_memory() applied (the whole process, every "
                           "library)" if retain else "glibc defaults") +
          f"; spectral's probes: {PROBE_KIND}")
    print(f"k = {k}, P = {P}, repeats = {repeats} (minimum reported, interleaved); "
          f"load average before: {load_average()}")
    problems: list[Problem] = []
    extra: list[str] = []

    if "dense" in todo:
        lam = hessian_like(args.dense_n, seed=0)[1]
        A, lam = from_spectrum(lam, seed=1)
        problems.append(explicit_problem(
            f"dense n={args.dense_n}", A, lam, k, P, sparse=False, reorths=("none", "full"),
            bare=False,
        ))
        run_problem(problems[-1], repeats, not args.quiet)
        del A
    if "grid" in todo:
        L, lam = grid_laplacian(nx)
        problems.append(explicit_problem(
            f"grid n={L.shape[0]:.0e}", L, lam, k, P, sparse=True, reorths=("none",),
            bare=True,
        ))
        run_problem(problems[-1], repeats, not args.quiet)
        extra.append(grid_memory_line(L, k, P))
        del L
    if "grid-full" in todo:
        L, lam = grid_laplacian(full_nx)
        problems.append(explicit_problem(
            f"grid n={L.shape[0]:.0e}", L, lam, k, P, sparse=True, reorths=("full",),
            bare=False,
        ))
        run_problem(problems[-1], repeats, not args.quiet)
        del L
    if todo & {"mlp", "mlp-jax"}:
        model, X, y, final_loss = make_mlp()
        t0 = time.perf_counter()
        Hd, lam, cached = exact_spectrum(model, X, y, args.cache)
        extra.append(
            f"MLP: n = {lam.size} parameters, {X.shape[0]} samples, training loss "
            f"{final_loss:.3f}; exact spectrum in [{lam[0]:.3g}, {lam[-1]:.3g}] "
            + ("(read from the cache)" if cached else
               f"({time.perf_counter() - t0:.1f} s for torch.func.hessian + eigh)")
        )
        if "mlp" in todo and Hd is not None:
            from spectral.adapters import torch as spt

            v = np.random.default_rng(1).standard_normal(Hd.shape[0])
            Hop = spt.hessian(model, torch_cross_entropy(), [(X, y)])
            rel = np.linalg.norm(Hop @ v - Hd @ v) / np.linalg.norm(Hd @ v)
            extra.append(f"MLP: torch adapter product vs exact Hessian: relative error {rel:.1e}")
        if "mlp" in todo:
            problems.append(mlp_torch_problem(model, X, y, lam, k, P))
            run_problem(problems[-1], repeats, not args.quiet)
        if "mlp-jax" in todo:
            problems.append(mlp_jax_problem(model, X, y, lam, k, P))
            run_problem(problems[-1], repeats, not args.quiet)

    print(f"\nload average after: {load_average()}")
    print()
    print(format_table(problems))
    print()
    derived = derived_lines(problems, k, P)
    for line in extra + derived:
        print(line)


def torch_cross_entropy():
    import torch

    return torch.nn.CrossEntropyLoss()


def derived_lines(problems: list[Problem], k: int, P: int) -> list[str]:
    """The ratios the targets of issue 4 are stated in."""
    out = []
    for p in problems:
        by = {e.key: e for e in p.entries if e.times}
        ours = by.get("spectral [none]")
        seq = by.get("spectral sequential [none]")
        if ours and seq:
            out.append(f"{p.name}: batched P={P} in one matmat vs {P} sequential runs: "
                       f"{seq.best / ours.best:.2f}x faster")
        hvp = by.get("spectral HVPs only [none]")
        if hvp:
            for r in ("none", "full"):
                s = by.get(f"spectral [{r}]")
                if s:
                    out.append(f"{p.name}: SLQ reorth {r} / its HVPs alone "
                               f"({k} products of an n x {P} block, {hvp.best:.3f} s): "
                               f"{s.best / hvp.best:.2f}")
        for bare in ("scipy bare matmat [none]", "scipy bare matvec [none]"):
            b = by.get(bare)
            if ours and b:
                out.append(f"{p.name}: spectral reorth none / {bare[:-7]}: "
                           f"{ours.best / b.best:.2f}")
    return out


if __name__ == "__main__":
    main()
