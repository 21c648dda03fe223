"""The denoiser's narrowPeak scoring and blacklist filtering (``models/_track_peaks.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_narrowpeak_scores_pvalues_and_qvalues():
    from scipy.stats import poisson

    from chromtools.models._track_peaks import fdr_curve, poisson_log10_pvalue, score_peaks

    # the continuous Poisson tail agrees with scipy's at integer coverage
    got = poisson_log10_pvalue(np.array([1.0, 5.0, 20.0]), 2.0)
    want = -np.log10(poisson.sf(np.array([0, 4, 19]), 2.0))
    assert np.allclose(got, want, rtol=1e-6)
    assert poisson_log10_pvalue(np.array([0.0]), 2.0)[0] == 0 and poisson_log10_pvalue(np.array([1e6]), 2.0)[0] == 300
    # FDR: share of unmatched peaks at or above each cut, never rising with the cut
    grid = np.array([0.0, 0.5, 0.8, 0.95])
    fdr = fdr_curve(np.array([0.6, 0.7, 0.9, 0.99]), np.array([False, True, True, True]), grid)
    assert fdr.tolist() == [0.25, 0.25, 0.0, 0.0]
    peaks = pd.DataFrame({"max_prob": [0.6, 0.9], "summit_value": [3.0, 40.0]})
    scored = score_peaks(peaks, background=2.0, fdr_grid=grid.tolist(), fdr=fdr.tolist(), n_fdr=4)
    assert scored["pValue"].is_monotonic_increasing and scored["pValue"].iloc[1] > 10
    # FDR 0.25 -> q = -log10(0.25); FDR 0 is floored at 1 / (n + 1)
    assert scored["qValue"].tolist() == pytest.approx([-np.log10(0.25), -np.log10(0.2)])
    assert scored["score"].tolist() == [750, 800]
    uncalibrated = score_peaks(peaks, background=2.0, fdr_grid=None, fdr=None)
    assert (uncalibrated["qValue"] == -1).all() and uncalibrated["score"].tolist() == [600, 900]


def test_blacklist_drops_overlapping_peaks():
    from chromtools.models._track_peaks import drop_blacklisted

    peaks = pd.DataFrame({"chrom": ["c1", "c1", "c1", "c2"], "start": [0, 100, 500, 0], "end": [50, 200, 600, 10]})
    blacklist = pd.DataFrame({"chrom": ["c1", "c1"], "start": [199, 40], "end": [300, 45]})
    kept = drop_blacklisted(peaks, blacklist)
    assert kept[["chrom", "start"]].to_numpy().tolist() == [["c1", 500], ["c2", 0]]
