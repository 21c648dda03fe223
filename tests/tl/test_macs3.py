from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct
from chromtools.tl._macs3 import poisson_pscore

pytest.importorskip("MACS3", reason="MACS3 (the 'peaks' extra) is not installed")


def test_pscore():
    s = poisson_pscore(np.array([0, 1, 5, 20], np.float32), np.full(4, 2.0, np.float32))
    assert s[0] == 0 and s[1] < 0.2 and 1.0 < s[2] < 1.5 and s[3] > 10
    deep = poisson_pscore(np.array([50_000.0], np.float32), np.array([1.0], np.float32))
    assert np.isfinite(deep).all() and deep[0] > 1_000


def test_macs3_finds_planted_peaks(sim_tracks, tmp_path):
    clean = ct.tl.macs3_peaks(sim_tracks.clean, tmp_path / "clean.narrowPeak")
    noisy = ct.tl.macs3_peaks(sim_tracks.noisy)
    on_clean = ct.metrics.peak_overlap(clean, sim_tracks.peaks)
    on_noisy = ct.metrics.peak_overlap(noisy, sim_tracks.peaks)
    assert on_clean["f1"] > 0.85 and on_clean["precision"] > 0.95
    assert on_noisy["recall"] < on_clean["recall"]  # the classical baseline loses peaks at low depth
    written = ct.io.read_narrowpeak(tmp_path / "clean.narrowPeak")
    assert len(written) == len(clean) and (written["pValue"] >= 3).all()


def test_macs3_on_real_hsc_reproduces_clean_labels(shared_data):
    hsc = ct.datasets.hsc_bulk(shared_data)
    called = ct.tl.macs3_peaks(hsc.clean, chroms=["chr2"])
    assert ct.metrics.peak_overlap(called, hsc.peaks, chroms=["chr2"])["f1"] > 0.8


@pytest.mark.parametrize(("n", "width"), [(1_000, 10), (1_001, 11), (5_000, 100), (20, 7)])
def test_box_mean_is_the_centred_moving_average(n, width):
    from chromtools._utils import box_mean

    x = np.random.default_rng(n).random(n).astype(np.float32)
    np.testing.assert_allclose(box_mean(x, width), np.convolve(x, np.ones(width) / width, mode="same"), atol=1e-6)
