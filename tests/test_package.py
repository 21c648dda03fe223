from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chromtools as ct

ROOT = Path(__file__).resolve().parents[1]
NAMESPACES = ["pp", "tl", "pl", "io", "datasets", "models", "metrics"]


def test_namespaces_and_version():
    for ns in NAMESPACES:
        assert hasattr(ct, ns)
    assert re.match(r"^\d+\.\d+", ct.__version__)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_public_function_is_documented(ns):
    api = (ROOT / "docs" / "api.md").read_text()
    module = getattr(ct, ns)
    for name in module.__all__:
        assert f"{ns}.{name}" in api, f"ct.{ns}.{name} is missing from docs/api.md"
        obj = getattr(module, name)
        if callable(obj) and not name.isupper():
            assert obj.__doc__ and "{" + "random_state}" not in obj.__doc__, f"ct.{ns}.{name} has no docstring"


def test_cli_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "chromtools._cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "chromtools._cli", "--version"], capture_output=True, text=True, check=True
    )
    assert ct.__version__ in out.stdout


def test_demo_fast(tmp_path):
    from chromtools._demo import run_demo

    outputs = run_demo(tmp_path / "demo", fast=True)
    for path in outputs.values():
        assert Path(path).exists() and Path(path).stat().st_size > 0
    assert (tmp_path / "demo" / "manifest.json").exists()
    kinds = {Path(p).suffix for p in outputs.values()}
    assert {".bw", ".narrowPeak", ".h5ad", ".png"} <= kinds


def test_cli_reports_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "chromtools._cli", "demo", "--out", str(tmp_path / "f" / "x"), "--seed", "notanint"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "invalid int value" in out.stderr


def test_import_is_lazy():
    """`import chromtools` and the data namespaces do not load torch, scvi-tools or Lightning."""
    code = (
        "import sys, chromtools as ct\n"
        "assert 'chromtools.tl' not in sys.modules and 'anndata' not in sys.modules\n"
        "ct.io.read_bigwig, ct.pp.lsi, ct.datasets.simulate_tracks, ct.metrics.accuracy, ct.pl.tracks, ct.tl.transfer_labels\n"
        "heavy = sorted(m for m in ('torch', 'scvi', 'lightning') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "from chromtools.models import TrackDenoiser\n"
        "assert 'torch' in sys.modules and 'scvi' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("ns", ["models", "tl"])
def test_lazy_exports_match_type_checking_imports(ns):
    """The names a lazy namespace serves are the ones its TYPE_CHECKING block imports, from the same modules."""
    import ast

    tree = ast.parse((ROOT / "src" / "chromtools" / ns / "__init__.py").read_text())
    checked = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    module = getattr(ct, ns)
    assert sorted(checked) == sorted(module.__all__)
    import importlib

    for name, source in checked.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"chromtools.{ns}.{source}"), name)
    with pytest.raises(AttributeError, match="has no attribute"):
        module.no_such_name  # noqa: B018 - the attribute access is what raises


@pytest.mark.parametrize(("n", "width"), [(1_000, 10), (1_001, 11), (5_000, 100), (20, 7)])
def test_box_mean_is_the_centred_moving_average(n, width):
    from chromtools._utils import box_mean

    x = np.random.default_rng(n).random(n).astype(np.float32)
    np.testing.assert_allclose(box_mean(x, width), np.convolve(x, np.ones(width) / width, mode="same"), atol=1e-6)


def test_cli_train_and_denoise(tiny_tracks, tmp_path, capsys):
    # in this process, through the console script's own entry point (a new process would import scvi-tools
    # again, 20-30 s each); test_cli_help_and_version runs `python -m chromtools._cli` itself
    from chromtools._cli import main

    train_args = [
        "-q",
        "train-denoiser",
        "--noisy",
        str(tiny_tracks.noisy),
        "--clean",
        str(tiny_tracks.clean),
        "--peaks",
        str(tiny_tracks.peaks),
        "--out",
        str(tmp_path / "model"),
        "--val-chroms",
        "chr2",
        "--holdout-chroms",
        "chr3",
        "--window",
        "16384",
        "--channels",
        "8",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--accelerator",
        "cpu",
    ]
    assert main(train_args) == 0
    assert (tmp_path / "model" / "model.pt").exists() and "saved model" in capsys.readouterr().out
    den_args = ["-q", "denoise", "--model", str(tmp_path / "model"), "--noisy", str(tiny_tracks.noisy)]
    assert (
        main([*den_args, "--out-prefix", str(tmp_path / "out" / "s"), "--chroms", "chr3", "--accelerator", "cpu"]) == 0
    )
    for suffix in ("track.bw", "peakprob.bw", "peaks.narrowPeak"):
        assert (tmp_path / "out" / f"s.{suffix}").exists()
    capsys.readouterr()
    assert main([*den_args, "--out-prefix", str(tmp_path / "bad"), "--chroms", "chrZ"]) == 2
    err = capsys.readouterr().err
    assert "absent from the chromosome sizes" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: a required option is missing
        main(["-q", "train-denoiser", "--noisy", "a.bw", "--clean", "b.bw", "--out", "m"])
    assert exit_info.value.code == 2 and "--peaks" in capsys.readouterr().err
