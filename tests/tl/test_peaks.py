from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct


def test_threshold_gap_merge_min_length_and_summit():
    p = np.zeros(200, np.float32)
    p[10:20] = 0.9
    p[22:30] = 0.7  # 2 bp from the first run
    p[100:103] = 0.8  # short
    track = np.arange(200, dtype=np.float32)
    track[15] = 1_000
    sep = ct.tl.call_peaks(p, track, chrom="chrA", start=1_000)
    assert sep[["start", "end"]].to_numpy().tolist() == [[1_010, 1_020], [1_022, 1_030], [1_100, 1_103]]
    assert sep["name"].tolist() == ["peak_1", "peak_2", "peak_3"]
    merged = ct.tl.call_peaks(p, track, chrom="chrA", start=1_000, merge_gap=2, min_length=5)
    assert merged[["start", "end"]].to_numpy().tolist() == [[1_010, 1_030]]
    row = merged.iloc[0]
    assert row["summit"] == 1_015 and row["peak"] == 5 and row["score"] == 900 and row["signalValue"] == 1_000
    assert row["mean_prob"] == pytest.approx((10 * 0.9 + 8 * 0.7) / 18, rel=1e-5)


def test_stream_joins_peaks_across_chunks():
    rng = np.random.default_rng(0)
    p = (rng.random(5_000) > 0.7).astype(np.float32) * rng.random(5_000)
    whole = ct.tl.call_peaks(p, merge_gap=3, min_length=4)
    stream = ct.tl.PeakStream("chr", merge_gap=3, min_length=4)
    cuts = [0, 17, 999, 1_000, 2_345, 5_000]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        stream.feed(a, p[a:b], p[a:b])
    chunked = stream.finish()
    assert (
        chunked[["start", "end", "summit"]].to_numpy().tolist() == whole[["start", "end", "summit"]].to_numpy().tolist()
    )
    with pytest.raises(ValueError, match="consecutive"):
        stream.feed(10, p[:5], p[:5])


def test_bad_rules():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ct.tl.PeakStream("c", threshold=1.0)
    with pytest.raises(ValueError, match="merge_gap must be >= 0"):
        ct.tl.PeakStream("c", merge_gap=-1)


def test_stream_skips_ahead_but_not_back():
    stream = ct.tl.PeakStream("c", threshold=0.5)
    stream.feed(0, np.array([0.9, 0.9], np.float32), np.ones(2, np.float32))
    stream.skip_to(10)
    stream.feed(10, np.array([0.9], np.float32), np.ones(1, np.float32))
    assert stream.finish()[["start", "end"]].to_numpy().tolist() == [[0, 2], [10, 11]]
    with pytest.raises(ValueError, match="cannot go back"):
        stream.skip_to(5)
