"""Helpers shared by the benchmark scripts: where the data is, machine facts, writing results."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("CHROMTOOLS_DATA", ROOT.parent / "shared" / "data"))


def require_data() -> Path:
    if not DATA.is_dir():
        sys.exit(f"benchmark needs the real data folder {DATA} (set CHROMTOOLS_DATA)")
    return DATA


def machine() -> dict:
    import numpy
    import torch

    import chromtools

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "chromtools": chromtools.__version__,
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def git_commit(
    dirty_paths: tuple[str, ...] = ("src", "benchmarks", ":(exclude)benchmarks/results"), root: Path = ROOT
) -> str:
    """The commit checked out in ``root`` (empty outside a git checkout), with ``-dirty`` when ``dirty_paths`` have uncommitted changes.

    Results files are not code: one benchmark's fresh results do not make the next one's commit dirty.
    """
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", *dirty_paths],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() + ("-dirty" if out.stdout.strip() and dirty.stdout.strip() else "")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer():
    t = {"start": time.perf_counter()}
    yield t
    t["seconds"] = time.perf_counter() - t["start"]


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def chosen_mapping_kwargs() -> dict:
    """PeakSCANVI settings that ``benchmarks/mapping.py`` chose on the choose split (from its committed results)."""
    return json.loads((RESULTS / "mapping.json").read_text())["results"]["chromtools"]["model_kwargs"]
