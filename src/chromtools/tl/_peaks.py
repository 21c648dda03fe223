"""Peak calls from a per-base peak-probability track, streamed window by window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chromtools.io import NARROWPEAK_COLUMNS as PEAK_COLUMNS
from chromtools.models import PeakStream

__all__ = ["PeakStream", "call_peaks", "name_peaks"]


def call_peaks(
    probs: np.ndarray,
    track: np.ndarray | None = None,
    *,
    chrom: str = "chr",
    start: int = 0,
    threshold: float = 0.5,
    merge_gap: int = 0,
    min_length: int = 1,
) -> pd.DataFrame:
    """Call peaks on an in-memory probability track (see :class:`PeakStream` for the rules).

    Parameters
    ----------
    probs
        Per-base peak probabilities.
    track
        Per-base denoised coverage for summits and signal values; default ``probs``.
    chrom, start
        Coordinates of ``probs[0]``.
    threshold, merge_gap, min_length
        Calling rules.

    Returns
    -------
    Peaks with narrowPeak columns (``name`` filled in) plus ``max_prob``, ``mean_prob``,
    ``summit`` and ``summit_value``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    track = probs if track is None else np.asarray(track, dtype=np.float32)
    stream = PeakStream(chrom, threshold=threshold, merge_gap=merge_gap, min_length=min_length)
    stream._next = start
    stream.feed(start, probs, track)
    return name_peaks(stream.finish())


def name_peaks(peaks: pd.DataFrame, prefix: str = "peak") -> pd.DataFrame:
    """Number peaks in genome order (``peak_1``, ``peak_2`` ...)."""
    peaks = peaks.reset_index(drop=True)
    peaks["name"] = [f"{prefix}_{i + 1}" for i in range(len(peaks))]
    return peaks[PEAK_COLUMNS + [c for c in peaks.columns if c not in PEAK_COLUMNS]]
