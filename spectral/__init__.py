"""spectral: eigenvalue densities of huge implicit symmetric matrices.

Stochastic Lanczos quadrature (SLQ) with certified error bounds. The expensive part,
:func:`slq`, calls the operator; everything else is a cheap function of its result.

Public API
----------
aslinearoperator  coerce an array, sparse matrix or operator, with input checks
lanczos           batched Lanczos tridiagonalisation in float64
slq               stochastic Lanczos quadrature -> SpectralMeasure
SpectralMeasure   raw quadrature: cdf, moments, spectral_sum, trace, logdet, density, bounds
Density           a smoothed density with standard errors and certified bounds
ErrorBounds       certified Wasserstein / Kolmogorov-Smirnov bounds and the CDF band
Estimate          a scalar estimate with its standard error
load, combine     read a saved measure; pool the probes of several runs
gradient_concentration  fraction of a gradient in the top eigenspace (certified version too)
ritz_outliers     isolated eigenvalues found by a run (ghosts merged)
retain_freed_memory  keep large freed blocks in the heap: faster repeated framework products
"""

from .allocator import retain_freed_memory
from .analysis import GradientConcentration, gradient_concentration, ritz_outliers
from .bounds import ErrorBounds
from .lanczos import LanczosResult, lanczos
from .measure import Estimate, SpectralMeasure, combine, load
from .operators import SymmetryWarning, aslinearoperator
from .slq import slq
from .smoothing import Density

__version__ = "0.1.0"

__all__ = [
    "Density",
    "ErrorBounds",
    "Estimate",
    "GradientConcentration",
    "LanczosResult",
    "SpectralMeasure",
    "SymmetryWarning",
    "__version__",
    "aslinearoperator",
    "combine",
    "gradient_concentration",
    "lanczos",
    "load",
    "retain_freed_memory",
    "ritz_outliers",
    "slq",
]
