"""Peak calls from a per-base peak-probability track, streamed window by window."""

from __future__ import annotations

import numpy as np
import pandas as pd

PEAK_COLUMNS = ["chrom", "start", "end", "name", "score", "strand", "signalValue", "pValue", "qValue", "peak"]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the True runs of a boolean array."""
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


class PeakStream:
    """Call peaks on one chromosome from consecutive chunks of probabilities and denoised coverage.

    Bases with probability ``>= threshold`` form runs; runs closer than ``merge_gap`` bp are
    merged, also across chunk boundaries, and merged peaks shorter than ``min_length`` bp are
    dropped. Each peak keeps its summit (the base of highest denoised coverage), that coverage,
    and its highest and mean probability. Memory holds one open peak, not the chromosome.
    """

    def __init__(self, chrom: str, *, threshold: float = 0.5, merge_gap: int = 0, min_length: int = 1):
        if not 0 < threshold < 1:
            msg = f"threshold must be a probability strictly between 0 and 1, got {threshold}."
            raise ValueError(msg)
        if merge_gap < 0 or min_length < 1:
            msg = f"merge_gap must be >= 0 and min_length >= 1 (got {merge_gap}, {min_length})."
            raise ValueError(msg)
        self.chrom = chrom
        self.threshold = threshold
        self.merge_gap = merge_gap
        self.min_length = min_length
        self._open: list | None = None  # [start, end, max_prob, prob_sum, n_above, summit, summit_value]
        self._done: list[list] = []
        self._next = 0

    def feed(self, start: int, probs: np.ndarray, track: np.ndarray) -> None:
        """Add the chunk ``[start, start + len(probs))``; chunks must come in order without gaps."""
        if start != self._next:
            msg = f"Chunks of {self.chrom} must be consecutive: expected start {self._next}, got {start}."
            raise ValueError(msg)
        self._next = start + probs.size
        starts, ends = _runs(probs >= self.threshold)
        if starts.size == 0:
            return
        # Between two run starts lie the run and a gap below threshold, so the maximum over that
        # span is the run's maximum; sums come from cumulative sums over the runs only.
        pmax = np.maximum.reduceat(probs, starts)
        csum = np.concatenate(([0.0], np.cumsum(probs, dtype=np.float64)))
        psum = csum[ends] - csum[starts]
        arg = np.array([s + int(np.argmax(track[s:e])) for s, e in zip(starts, ends, strict=True)])
        for s, e, mx, sm, a in zip(starts + start, ends + start, pmax, psum, arg, strict=True):
            value = float(track[a])
            if self._open is not None and s - self._open[1] <= self.merge_gap:
                o = self._open
                o[1] = e
                o[2] = max(o[2], float(mx))
                o[3] += float(sm)
                o[4] += int(e - s)
                if value > o[6]:
                    o[5], o[6] = int(a + start), value
            else:
                self._close()
                self._open = [int(s), int(e), float(mx), float(sm), int(e - s), int(a + start), value]

    def _close(self) -> None:
        if self._open is not None and self._open[1] - self._open[0] >= self.min_length:
            self._done.append(self._open)
        self._open = None

    def finish(self) -> pd.DataFrame:
        """Close the last peak and return this chromosome's peaks (narrowPeak columns + extras)."""
        self._close()
        rows = self._done
        df = pd.DataFrame(rows, columns=["start", "end", "max_prob", "prob_sum", "n_above", "summit", "summit_value"])
        df.insert(0, "chrom", self.chrom)
        df["mean_prob"] = df["prob_sum"] / df["n_above"].clip(lower=1)
        df["score"] = np.clip(np.round(df["max_prob"] * 1000), 0, 1000).astype(np.int64)
        df["strand"] = "."
        df["signalValue"] = df["summit_value"]
        df["pValue"] = -1.0
        df["qValue"] = -1.0
        df["peak"] = (df["summit"] - df["start"]).astype(np.int64)
        return df.drop(columns=["prob_sum", "n_above"])


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
