from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CHROMTOOLS_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the project; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits at ../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_dir_or_none() -> Path | None:
    """The real data folder, or None when absent (for code that falls back to simulated data)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def sim_tracks(tmp_path_factory):
    import chromtools as ct

    return ct.datasets.simulate_tracks(tmp_path_factory.mktemp("sim_tracks"), random_state=0)


@pytest.fixture(scope="session")
def leftovers():
    """A function listing the temporary files a failed writer might have left in a folder."""

    def find(folder: Path) -> list[str]:
        return sorted(p.name for p in Path(folder).iterdir() if ".tmp" in p.name)

    return find
