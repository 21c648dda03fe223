from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
