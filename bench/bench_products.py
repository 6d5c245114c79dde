"""Bare operator products, the measurements behind the notes on the peer comparison.

Three questions, each answered side by side in one run:

``allocator``
    Time of 80 bare block products (block of ``P = 10``) of the digits-MLP Hessian through
    spectral's JAX and PyTorch adapters, with glibc's default allocator settings and after
    :func:`spectral.retain_freed_memory`. The setting cannot be undone exactly, so each
    configuration runs in a fresh interpreter (this script, ``--child``); the configurations
    alternate over ``--repeats`` rounds and the minimum is kept.
``jax-loop``
    The same 80 JAX products (``jax.vmap`` of ``jax.jvp`` of ``jax.grad``, jit-compiled)
    called one by one from Python, as a host-side Lanczos loop calls them, against the same
    80 products inside one compiled ``jax.lax.fori_loop``, as matfree's compiled loop runs
    them (with the allocator setting on).
``dense``
    80 products of a dense symmetric ``2000 × 2000`` matrix with a ``(2000, 10)`` block:
    NumPy (OpenBLAS ``dgemm``) against a jit-compiled JAX product (XLA).

Run from the repository root (needs the ``bench`` extra: torch, jax, scikit-learn)::

    python bench/bench_products.py                  # all three, 3 repeats
    python bench/bench_products.py --only allocator --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
K, P = 80, 10


def _mlp():
    sys.path.insert(0, HERE)
    import bench_peers

    bench_peers.configure_threads(None)
    model, X, y, _ = bench_peers.make_mlp()
    return bench_peers, model, X, y


def _jax_operator(bench_peers, model, X, y):
    jax = bench_peers._jax()
    import jax.numpy as jnp

    from spectral.adapters import jax as spj

    loss_fn, params, batch = bench_peers.jax_mlp(model, X, y)
    return jax, jnp, loss_fn, params, batch, spj.hessian(loss_fn, params, [batch])


def _time_products(H, repeats=1) -> float:
    V = np.random.default_rng(0).standard_normal((H.shape[0], P))
    H @ V  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(K):
            H @ V
        best = min(best, time.perf_counter() - t0)
    return best


def child(framework: str, retain: bool) -> None:
    """One configuration in this fresh process; prints the time as JSON."""
    import spectral

    applied = spectral.retain_freed_memory() if retain else False
    bench_peers, model, X, y = _mlp()
    if framework == "jax":
        H = _jax_operator(bench_peers, model, X, y)[-1]
    else:
        import torch

        from spectral.adapters import torch as spt

        H = spt.hessian(model, torch.nn.CrossEntropyLoss(), [(X, y)])
    print(json.dumps({"seconds": _time_products(H), "applied": applied}))


def allocator(repeats: int) -> None:
    print(f"\n== allocator: {K} bare block products (n x {P}) of the digits-MLP Hessian")
    results = {}
    for _ in range(repeats):
        for framework in ("jax", "torch"):
            for retain in (False, True):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", framework, str(int(retain))],
                    capture_output=True, text=True, check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((framework, retain), []).append(r["seconds"])
    for framework in ("jax", "torch"):
        off = min(results[(framework, False)])
        on = min(results[(framework, True)])
        print(f"  {framework:<6} glibc defaults {off:7.3f} s   retain_freed_memory {on:7.3f} s"
              f"   speed-up {off / on:5.2f}x   ({1e3 * off / K:.1f} -> {1e3 * on / K:.1f} ms "
              "per block)")


def jax_loop(repeats: int) -> None:
    import spectral

    spectral.retain_freed_memory()
    bench_peers, model, X, y = _mlp()
    jax, jnp, loss_fn, params, batch, _ = _jax_operator(bench_peers, model, X, y)
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)

    def block(theta, VT, batch):
        grad = jax.grad(lambda t: loss_fn(unravel(t), batch))
        return jax.vmap(lambda v: jax.jvp(grad, (theta,), (v,))[1])(VT)

    def loop(theta, VT, batch):
        def body(_, W):
            W = block(theta, W, batch)
            return W / jnp.linalg.norm(W, axis=1, keepdims=True)

        return jax.lax.fori_loop(0, K, body, VT)

    one, fused = jax.jit(block), jax.jit(loop)
    VT = jnp.asarray(np.random.default_rng(0).standard_normal((P, flat.size)))
    one(flat, VT, batch).block_until_ready()
    fused(flat, VT, batch).block_until_ready()
    calls, looped = np.inf, np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(K):
            one(flat, VT, batch).block_until_ready()
        calls = min(calls, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fused(flat, VT, batch).block_until_ready()
        looped = min(looped, time.perf_counter() - t0)
    print(f"\n== jax-loop: {K} compiled JAX block products (n x {P}) of the digits-MLP Hessian")
    print(f"  called one by one {calls:7.3f} s   in one fori_loop {looped:7.3f} s   "
          f"ratio {calls / looped:5.2f}")


def dense(repeats: int) -> None:
    from spectral.matrices import from_spectrum, hessian_like

    A = from_spectrum(hessian_like(2000, seed=0)[1], seed=1)[0]
    X = np.random.default_rng(0).standard_normal((2000, P))
    sys.path.insert(0, HERE)
    import bench_peers

    jax = bench_peers._jax()
    import jax.numpy as jnp

    Aj, Xj = jnp.asarray(A), jnp.asarray(X)
    product = jax.jit(lambda a, x: a @ x)
    product(Aj, Xj).block_until_ready()
    A @ X
    t_np, t_jax = np.inf, np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(K):
            A @ X
        t_np = min(t_np, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(K):
            product(Aj, Xj).block_until_ready()
        t_jax = min(t_jax, time.perf_counter() - t0)
    print(f"\n== dense: {K} products of a 2000 x 2000 symmetric matrix with a (2000, {P}) block")
    print(f"  numpy (OpenBLAS dgemm) {t_np:7.3f} s   jax (XLA) {t_jax:7.3f} s   "
          f"numpy / jax {t_np / t_jax:5.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=["allocator", "jax-loop", "dense"],
                        default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "RETAIN"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], bool(int(args.child[1])))
        return
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    todo = args.only or ["allocator", "jax-loop", "dense"]
    if "allocator" in todo:
        allocator(args.repeats)
    if "jax-loop" in todo:
        jax_loop(args.repeats)
    if "dense" in todo:
        dense(args.repeats)
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
