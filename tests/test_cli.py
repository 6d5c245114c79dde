"""The ``spectral`` command: summaries, files written, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import spectral
from spectral.cli import main
from spectral.matrices import from_spectrum


@pytest.fixture
def spectrum():
    rng = np.random.default_rng(3)
    return np.concatenate([rng.normal(size=120), [6.0, 9.0]])


def _run(capsys, argv):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("fmt", ["npy", "npz", "mtx"])
def test_density_reads_every_format_and_writes_outputs(tmp_path, capsys, spectrum, fmt):
    A, lam = from_spectrum(spectrum, seed=1)
    path = tmp_path / f"matrix.{fmt}"
    if fmt == "npy":
        np.save(path, A)
    elif fmt == "npz":
        sp.save_npz(path, sp.csr_matrix(A))
    else:
        scipy.io.mmwrite(path, sp.coo_matrix(A))
    out_dir = tmp_path / "out"
    status, text, err = _run(
        capsys, ["density", str(path), "--steps", "30", "--probes", "3", "--out", str(out_dir)]
    )
    assert status == 0, err
    assert f"order n           {lam.size}" in text
    assert "W1 bound" in text and "CDF band width" in text and "trace" in text
    assert (out_dir / "density.png").stat().st_size > 10_000
    m = spectral.load(out_dir / "measure.npz")
    assert m.n == lam.size and m.nodes.shape == (3, 30)
    # The printed extreme Ritz values are those of the saved measure and lie in the spectrum.
    lo, hi = m.node_range()
    assert lam[0] - 1e-9 <= lo and hi <= lam[-1] + 1e-9
    assert f"{lo:.6g} .. {hi:.6g}" in text
    # The summary's trace is the measure's, and it is within 5 standard errors of the truth.
    t = m.trace()
    assert abs(t.value - lam.sum()) <= 5 * t.stderr + 1e-8


def test_log_plot_and_sigma_option(tmp_path, capsys, spectrum):
    A, _ = from_spectrum(spectrum, seed=2)
    np.save(tmp_path / "a.npy", A)
    status, text, err = _run(
        capsys,
        ["density", str(tmp_path / "a.npy"), "--sigma", "0.25", "--log", "--out", str(tmp_path)],
    )
    assert status == 0, err
    assert "smoothing σ       0.25" in text
    assert (tmp_path / "density.png").exists()


def test_demo_reports_true_distance_under_certified_bound(tmp_path, capsys):
    status, text, err = _run(
        capsys, ["demo", "--n", "3000", "--steps", "40", "--probes", "4", "--out", str(tmp_path)]
    )
    assert status == 0, err
    values = {}
    for line in text.splitlines():
        if line.startswith("W1 bound"):
            values["bound"] = float(line.split()[2])
        if line.startswith("true W1 distance"):
            values["true"] = float(line.split()[3])
        if line.startswith("outliers"):
            values["outliers"] = [float(v) for v in line.split(None, 1)[1].split(",")]
    assert values["true"] <= values["bound"]
    # hessian_like has outliers -3.5, -2, 4, 6, 8, 11, 15, 20: the demo finds them all.
    np.testing.assert_allclose(values["outliers"], [-3.5, -2, 4, 6, 8, 11, 15, 20], atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.npy", "no such file"),
        (lambda d: (d / "bad.npy").write_bytes(b"not an array") and d / "bad.npy", "cannot read"),
        (lambda d: (d / "m.txt").write_text("1 2") and d / "m.txt", "unsupported file type"),
        (lambda d: np.save(d / "r.npy", np.ones((3, 4))) or d / "r.npy", "square"),
        (lambda d: np.save(d / "u.npy", np.triu(np.ones((4, 4)))) or d / "u.npy", "symmetric"),
    ],
)
def test_bad_files_give_one_line_error(tmp_path, capsys, make, message):
    path = make(tmp_path)
    status, _, err = _run(capsys, ["density", str(path), "--out", str(tmp_path / "o")])
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("spectral: error:")
    assert message in err
    assert "Traceback" not in err


def test_python_dash_m_entry_point(tmp_path):
    np.save(tmp_path / "a.npy", np.diag(np.arange(1.0, 41.0)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spectral",
            "density",
            str(tmp_path / "a.npy"),
            "--steps",
            "10",
            "--probes",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "order n           40" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "spectral", "density", str(tmp_path / "nope.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
