"""The documentation builds with warnings as errors, executing every gallery example.

This runs the same command as the docs job,
``python -m sphinx -W --keep-going -b html docs docs/_build/html``, into a temporary folder
with a fresh environment and every example re-executed, so that a broken docstring, a
dangling reference or an example that no longer runs against the current code fails here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Import names of what the ``docs`` extra installs.
DOC_PACKAGES = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "myst_parser")

_missing = [
    name for name in (*DOC_PACKAGES, "matplotlib") if importlib.util.find_spec(name) is None
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(_missing),
        reason=f"the docs extra is not installed (missing: {', '.join(_missing)}); "
        "install it with pip install -c constraints.txt -e '.[docs]'",
    ),
]


def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),  # a fresh environment: every page is read again
        "-D",
        "sphinx_gallery_conf.run_stale_examples=True",  # run the examples even if unchanged
        str(DOCS),
        str(out),
    ]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, f"the documentation build failed:\n{log}"

    assert (out / "index.html").is_file()
    examples = sorted((DOCS / "examples").glob("plot_*.py"))
    assert examples, "the gallery has no examples"
    for example in examples:
        page = out / "auto_examples" / f"{example.stem}.html"
        assert page.is_file(), f"no page for {example.name}"
        assert "sphx-glr-single-img" in page.read_text(encoding="utf-8") or (
            "sphx-glr-multi-img" in page.read_text(encoding="utf-8")
        ), f"{example.name} produced no figure"
    api = out / "gen_modules" / "api"
    import spectral

    public = [f"spectral.{name}" for name in spectral.__all__ if not name.startswith("_")]
    for name in (*public, "spectral.plot", "spectral.matrices"):
        assert (api / f"{name}.html").is_file(), f"no API page for {name} (add it to docs/api.rst)"
    for adapter in sorted((ROOT / "adapters").glob("[!_]*.py")):
        assert (api / f"spectral.adapters.{adapter.stem}.html").is_file(), (
            f"no API page for spectral.adapters.{adapter.stem}"
        )
