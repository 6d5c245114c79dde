"""Sphinx configuration of the spectral documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Generated folders (git-ignored): ``docs/auto_examples`` (the executed gallery),
``docs/gen_modules`` (API stubs and gallery back-references) and ``docs/_build``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Build against an install (``pip install -c constraints.txt -e '.[docs]'``): ``spectral.adapters``
# is the top-level ``adapters/`` folder, which only an install maps into the package. Without
# one, the core is imported from the working tree.
if importlib.util.find_spec("spectral") is None:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(DOCS / "_ext"))

import spectral  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")

# -- Project -----------------------------------------------------------------------------
project = "spectral"
author = "spectral developers"
copyright = "spectral developers"
release = spectral.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions --------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "test_inventory",  # docs/_ext: the test-suite inventory on the Validation page
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# ``examples/`` holds the gallery's sources; sphinx-gallery turns them into auto_examples/.
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
default_role = "math"
pygments_style = "sphinx"

# -- API reference -----------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections carry the types

# The adapters import their framework at import time. CI installs all three (the ``all``
# extra); a docs-only install mocks the missing ones so the reference still builds.
_FRAMEWORKS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
autodoc_mock_imports = [
    module for module in _FRAMEWORKS.values() if importlib.util.find_spec(module) is None
]


def _write_adapter_reference(frameworks: dict[str, str]) -> None:
    """Write the adapters' API page, listing the adapter modules that exist.

    An adapter whose module has not landed yet is named in a note instead of an
    ``autosummary`` entry that could not import; it appears by itself once its file exists.
    """
    present = [name for name in frameworks if (ROOT / "adapters" / f"{name}.py").is_file()]
    missing = [name for name in frameworks if name not in present]
    lines = [
        "Framework adapters",
        "==================",
        "",
        "Each adapter turns a model, a loss and a data set into a",
        ":class:`~spectral.adapters.HessianOperator`, a",
        ":class:`scipy.sparse.linalg.LinearOperator` whose block product is one pass over the",
        "data set. Each module imports only its own framework.",
        "",
        ".. currentmodule:: spectral",
        "",
        ".. autosummary::",
        "   :toctree: api",
        "   :template: spectral_module.rst",
        "",
        "   adapters",
        *(f"   adapters.{name}" for name in present),
        "",
    ]
    if missing:
        names = ", ".join(f"``spectral.adapters.{name}``" for name in missing)
        lines += [f".. note:: Not yet part of this build: {names}.", ""]
    target = DOCS / "gen_modules" / "api_adapters.rst"
    text = "\n".join(lines)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


_write_adapter_reference(_FRAMEWORKS)

# Names that several modules re-export are documented once, where they are defined for users;
# the module template skips them elsewhere (``spectral_module.rst``).
autosummary_context = {
    "documented_in": {
        "DeterminismError": "spectral.adapters",
        "HessianOperator": "spectral.adapters",
    }
}

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Docstring checks that fail the build (warnings are errors): every parameter documented,
# no unknown ones, a Returns section for functions that return. The result classes are
# frozen dataclasses documented by their Attributes (users never construct them), and the
# adapters (spectral.adapters.*) are still being written: both are excluded for now.
numpydoc_validation_checks = {"PR01", "PR02", "PR03", "PR10", "RT01"}
numpydoc_validation_exclude = {
    r"^spectral\.(Density|ErrorBounds|Estimate|GradientConcentration|LanczosResult"
    r"|SpectralMeasure)$",
    r"^spectral\.adapters\.",
}

# -- MyST (the adapter guides are Markdown) ----------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Gallery -----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "sphinx_gallery.sorting.FileNameSortKey",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("spectral",),
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "min_reported_time": 1,
    "show_memory": False,
    "capture_repr": ("_repr_html_", "__repr__"),
}

# -- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"spectral {release}"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
html_show_sourcelink = False
