"""Keep large freed blocks in the process heap (glibc), so repeated products stop page-faulting.

A Lanczos run calls the operator ``k`` times with blocks of the same shape. Framework
products — a jitted JAX Hessian-vector product, a :func:`torch.func.vmap` of ``jvp`` over
``grad`` — allocate large temporaries on every call (XLA allocates one scratch buffer per
execution: 37 MB for the 3,466-parameter digits MLP of ``bench/`` and a block of 10
vectors) and free them at its end. GNU libc serves every block above
``M_MMAP_THRESHOLD`` (128 KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap``, so each call touches its scratch memory for the first time again:
one page fault per 4 KiB page, some 9,000 for 37 MB, which cost more than the arithmetic
of such a product.

:func:`retain_freed_memory` sets three ``mallopt`` parameters so that blocks up to ``limit``
bytes come from the heap and freed memory stays there for the next call:

* ``M_MMAP_THRESHOLD = limit`` — blocks up to ``limit`` are carved from the heap;
* ``M_TRIM_THRESHOLD = limit`` — free memory at the top of the heap is returned to the
  system only when it exceeds ``limit``;
* ``M_TOP_PAD = pad`` — each growth of the heap asks the kernel for ``pad`` extra bytes.

The price is resident memory: up to about ``limit`` bytes that the process freed stay
mapped. Measured on the digits MLP (``bench/bench_products.py``, ``bench/README.md``, 2-core
machine): the JAX adapter's products 2.3x faster (47 ms → 20 ms per block of 10), the
PyTorch adapter's 1.25x. NumPy and SciPy operators allocate little per product (the numpy
recurrence works in buffers it owns) and are not expected to gain.

This is a process-wide setting of the C library, which is why :mod:`spectral` never applies
it on its own: call it once at the start of a program that runs many products. Only GNU libc
(Linux) has these parameters; elsewhere the call does nothing and returns ``False``.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: glibc's defaults (``mallopt(3)``): what ``limit=0`` restores.
_DEFAULT_THRESHOLD = 128 * 1024
_DEFAULT_TOP_PAD = 128 * 1024

_INT_MAX = 2**31 - 1


def _glibc():
    """Return the loaded GNU C library, or ``None`` (another platform or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname; musl and others have no such file
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def retain_freed_memory(limit: int = 1 << 30, pad: int = 64 << 20) -> bool:
    """Serve blocks up to ``limit`` bytes from the heap and keep freed memory there.

    Speeds up Lanczos runs on framework operators (the adapters' Hessian-vector products)
    whose every call allocates and frees large scratch buffers; see the module docstring
    for the mechanism and the measurements. Process-wide; call it once, early.

    Parameters
    ----------
    limit : int, default 2**30
        Largest block, in bytes, taken from the heap instead of its own ``mmap``; also the
        amount of free memory at the top of the heap kept before any is returned to the
        system. At most ``2**31 - 1`` (``mallopt`` takes a C ``int``). ``0`` restores
        glibc's default values (128 KiB); the dynamic raising of the mmap threshold, which
        glibc turns off once the threshold is set, stays off.
    pad : int, default 2**26
        Extra bytes requested from the kernel whenever the heap grows (``M_TOP_PAD``).
        Ignored (reset to the default 128 KiB) with ``limit=0``.

    Returns
    -------
    bool
        ``True`` if glibc accepted all three settings; ``False`` where they do not exist
        (macOS, Windows, musl) or were refused: the program then runs as before.

    Raises
    ------
    ValueError
        If ``limit`` or ``pad`` is negative or above ``2**31 - 1``.

    Examples
    --------
    >>> import spectral
    >>> spectral.retain_freed_memory()  # doctest: +SKIP
    True
    """
    for name, value in (("limit", limit), ("pad", pad)):
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"{name} must be an integer number of bytes, got {value!r}")
        if not 0 <= int(value) <= _INT_MAX:
            raise ValueError(f"{name} must be between 0 and 2**31 - 1 bytes (a C int), got {value}")
    libc = _glibc()
    if libc is None:
        return False
    if int(limit) == 0:
        settings = (
            (_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD),
            (_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD),
            (_M_TOP_PAD, _DEFAULT_TOP_PAD),
        )
    else:
        settings = (
            (_M_MMAP_THRESHOLD, int(limit)),
            (_M_TRIM_THRESHOLD, int(limit)),
            (_M_TOP_PAD, int(pad)),
        )
    accepted = [libc.mallopt(param, value) == 1 for param, value in settings]
    return all(accepted)
