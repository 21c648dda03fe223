from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import chromtools as ct


def test_track_correlation_in_and_outside_peaks():
    rng = np.random.default_rng(0)
    target = rng.random(1_000)
    pred = target + rng.normal(0, 0.1, 1_000)
    mask = np.zeros(1_000, bool)
    mask[100:300] = True
    out = ct.metrics.track_correlation(pred, target, mask)
    assert out["pearson"] == pytest.approx(np.corrcoef(pred, target)[0, 1])
    assert out["pearson_in_peaks"] == pytest.approx(np.corrcoef(pred[mask], target[mask])[0, 1])
    assert out["mse_outside_peaks"] == pytest.approx(np.mean((pred[~mask] - target[~mask]) ** 2))
    from scipy.stats import spearmanr

    assert out["spearman"] == pytest.approx(spearmanr(pred, target).statistic)
    with pytest.raises(ValueError, match="same shape"):
        ct.metrics.track_correlation(pred[:5], target)


def test_peak_classification_and_one_class():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.2, 0.4])
    out = ct.metrics.peak_classification(scores, labels, threshold=0.5)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["auroc"] == pytest.approx(8 / 9)
    with pytest.warns(RuntimeWarning, match="one class"):
        one = ct.metrics.peak_classification(scores, np.zeros(6))
    assert np.isnan(one["auroc"]) and np.isnan(one["auprc"])


def test_peak_overlap():
    truth = pd.DataFrame({"chrom": ["c1", "c1", "c2"], "start": [0, 100, 0], "end": [50, 200, 10]})
    pred = pd.DataFrame({"chrom": ["c1", "c1", "c1"], "start": [40, 300, 199], "end": [45, 400, 250]})
    out = ct.metrics.peak_overlap(pred, truth)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    on_c2 = ct.metrics.peak_overlap(pred, truth, chroms=["c2"])  # no predicted peak there
    assert np.isnan(on_c2["precision"]) and on_c2["recall"] == 0 and on_c2["f1"] == 0


def test_peak_overlap_is_one_to_one():
    truth = pd.DataFrame({"chrom": ["c1"] * 4, "start": [0, 100, 200, 1_000], "end": [50, 150, 250, 1_100]})
    # one wide peak spanning three true peaks, and two fragments of the fourth
    merged = pd.DataFrame({"chrom": ["c1"] * 3, "start": [10, 1_000, 1_060], "end": [240, 1_050, 1_100]})
    strict = ct.metrics.peak_overlap(merged, truth)
    assert strict["n_matched"] == 2 and strict["recall"] == pytest.approx(2 / 4)
    assert strict["precision"] == pytest.approx(2 / 3)
    loose = ct.metrics.peak_overlap(merged, truth, one_to_one=False)
    assert loose["recall"] == pytest.approx(4 / 4) and loose["precision"] == pytest.approx(3 / 3)
    # the matching is maximal, not greedy: b overlaps x and y, a only x; both find a partner
    pred = pd.DataFrame({"chrom": ["c1", "c1"], "start": [0, 40], "end": [60, 160]})
    both = pd.DataFrame({"chrom": ["c1", "c1"], "start": [30, 120], "end": [70, 130]})
    assert sorted(ct.metrics.match_peaks(pred, both).tolist()) == [0, 1]


def test_peak_mask():
    peaks = pd.DataFrame({"chrom": ["c1", "c1"], "start": [5, 18], "end": [8, 30]})
    m = ct.metrics.peak_mask(peaks, "c1", 10, start=0)
    assert m.tolist() == [False] * 5 + [True] * 3 + [False] * 2
    assert ct.metrics.peak_mask(peaks, "c1", 5, start=20).all()


def test_real_hsc_noisy_baseline(shared_data):
    hsc = ct.datasets.hsc_bulk(shared_data)
    base = ct.metrics.evaluate_denoising(hsc.clean, hsc.peaks, track=hsc.noisy, peaks=hsc.noisy_peaks, chroms=["chr2"])
    assert 0.9 < base["pearson"] < 0.99 and 0.55 < base["peak_f1"] < 0.75
