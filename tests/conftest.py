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


#: A small, quick version of the default denoiser used across the denoising tests.
SMALL_ARCH = {"channels": 16, "dilations": (1, 2, 4, 8, 16)}


@pytest.fixture(scope="session")
def small_arch() -> dict:
    return dict(SMALL_ARCH)


@pytest.fixture(scope="session")
def tiny_tracks(tmp_path_factory):
    """A 0.6 Mb simulated genome: chr1 for training, chr2 for validation, chr3 (odd length) held out."""
    import chromtools as ct

    sizes = {"chr1": 400_000, "chr2": 200_000, "chr3": 123_457}
    return ct.datasets.simulate_tracks(tmp_path_factory.mktemp("tiny_tracks"), chrom_sizes=sizes, random_state=3)


@pytest.fixture(scope="session")
def tiny_model(tiny_tracks):
    import chromtools as ct

    setup = ct.models.TrackDenoiser.setup_tracks(
        tiny_tracks.noisy,
        tiny_tracks.clean,
        tiny_tracks.peaks,
        val_chroms=["chr2"],
        holdout_chroms=["chr3"],
        window=8_192,
    )
    model = ct.models.TrackDenoiser(setup, **SMALL_ARCH)
    model.train(max_epochs=6, batch_size=4, lr=5e-3, accelerator="cpu", progress=False, random_state=0)
    return model
