"""Shared pytest set-up for the core tests.

* The tests are not a package (pytest runs with ``--import-mode=importlib``), so this folder
  is put on ``sys.path`` for ``import strategies`` and ``import oracles``.
* BLAS runs single-threaded (via threadpoolctl when it is installed): the dense matrices
  here have at most a few hundred rows, where threads only add overhead, and on a loaded
  2-core machine OpenBLAS' spinning threads made a 150 × 150 ``eigh`` 25× slower in CPU
  time. Set ``SPECTRAL_TEST_BLAS_THREADS`` to change the limit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy  # noqa: F401  (BLAS must be loaded before its threads can be limited)
import scipy.linalg  # noqa: F401

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    threadpool_limits = None

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

if threadpool_limits is not None:
    _BLAS_LIMIT = threadpool_limits(
        limits=int(os.environ.get("SPECTRAL_TEST_BLAS_THREADS", "1")), user_api="blas"
    )
