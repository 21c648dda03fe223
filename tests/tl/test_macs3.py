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
