"""Peak calls from a per-base peak-probability track, streamed window by window, and their narrowPeak scores.

It lives beside the model (not in ``tl``) because training chooses the peak threshold and fits the
FDR calibration by calling peaks on the validation region exactly as :func:`chromtools.tl.denoise` does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: -log10 p-values are capped here (a float64 underflows near 1e-308).
MAX_LOG10 = 300.0


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

    def skip_to(self, start: int) -> None:
        """Jump ahead to ``start``; the bases skipped count as probability 0."""
        if start < self._next:
            msg = f"Chunks of {self.chrom} must come in order: at {self._next}, cannot go back to {start}."
            raise ValueError(msg)
        self._next = start

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


def poisson_log10_pvalue(value: np.ndarray, background: float) -> np.ndarray:
    """``-log10 P(X >= value)`` for ``X ~ Poisson(background)``, continuous in ``value`` (MACS' summit test).

    Uses the regularised lower incomplete gamma function, ``P(X >= k) = gammainc(k, background)``,
    which extends the Poisson tail to non-integer coverage. Values at or below zero give 0.
    """
    from scipy.special import gammainc

    value = np.asarray(value, dtype=np.float64)
    if background <= 0:
        msg = f"The background coverage must be positive, got {background}."
        raise ValueError(msg)
    tail = np.where(value > 0, gammainc(np.maximum(value, 1e-12), background), 1.0)
    return np.minimum(-np.log10(np.maximum(tail, 10.0**-MAX_LOG10)), MAX_LOG10)


def fdr_curve(max_prob: np.ndarray, matched: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Estimated false discovery rate of the peaks whose ``max_prob`` is at least each grid value.

    ``matched`` says which (validation) peaks matched a true peak one to one. Like a q-value, the
    estimate is made monotone (a higher cut never has a higher FDR), and where no peak passes a cut
    the FDR of the next lower cut is carried up.
    """
    max_prob = np.asarray(max_prob, dtype=np.float64)
    false = ~np.asarray(matched, dtype=bool)
    fdr = np.full(grid.size, np.nan)
    for i, g in enumerate(grid):
        sel = max_prob >= g
        if sel.any():
            fdr[i] = false[sel].mean()
    # carry the last estimate up where no peak passes, then make it non-increasing with the cut
    for i in range(1, fdr.size):
        if np.isnan(fdr[i]):
            fdr[i] = fdr[i - 1]
    fdr = np.nan_to_num(fdr, nan=1.0)
    return np.minimum.accumulate(fdr)


def score_peaks(
    peaks: pd.DataFrame, *, background: float, fdr_grid: list[float] | None, fdr: list[float] | None, n_fdr: int = 0
) -> pd.DataFrame:
    """Fill the narrowPeak ``score``, ``pValue`` and ``qValue`` columns of called peaks.

    Parameters
    ----------
    peaks
        Output of :class:`PeakStream` (``max_prob`` and ``summit_value`` columns).
    background
        Expected coverage per base of the denoised track outside peaks (its genome mean).
    fdr_grid, fdr
        The FDR calibration of the model (:func:`fdr_curve` on the validation region); ``None``
        leaves ``qValue`` at -1 (unknown) and the score at ``1000 * max_prob``.
    n_fdr
        Validation peaks behind the calibration; the FDR is floored at ``1 / (n_fdr + 1)``.

    Returns
    -------
    The table with ``pValue = -log10 P(Poisson(background) >= summit value)``,
    ``qValue = -log10 FDR`` and ``score = round(1000 * (1 - FDR))`` (an estimated precision, 0-1000).
    """
    peaks = peaks.copy()
    peaks["pValue"] = poisson_log10_pvalue(peaks["summit_value"].to_numpy(), background) if len(peaks) else []
    if fdr_grid is None or fdr is None:
        peaks["qValue"] = -1.0
        peaks["score"] = np.clip(np.round(peaks["max_prob"] * 1000), 0, 1000).astype(np.int64)
        return peaks
    grid = np.asarray(fdr_grid, dtype=np.float64)
    # the FDR of the highest calibrated cut the peak passes (a step function: no optimistic interpolation)
    idx = np.clip(np.searchsorted(grid, peaks["max_prob"].to_numpy(np.float64), side="right") - 1, 0, grid.size - 1)
    est = np.asarray(fdr, dtype=np.float64)[idx]
    est = np.maximum(est, 1.0 / (n_fdr + 1))
    peaks["qValue"] = -np.log10(est)
    peaks["score"] = np.clip(np.round(1000 * (1 - est)), 0, 1000).astype(np.int64)
    return peaks


def drop_blacklisted(peaks: pd.DataFrame, blacklist: pd.DataFrame) -> pd.DataFrame:
    """Peaks that overlap no blacklisted interval (by at least 1 bp)."""
    keep = np.ones(len(peaks), bool)
    for chrom, bl in blacklist.groupby("chrom", sort=False, observed=True):
        sel = np.flatnonzero(peaks["chrom"].to_numpy() == chrom)
        if not sel.size:
            continue
        bl = bl.sort_values("start")
        bs, be = bl["start"].to_numpy(), np.maximum.accumulate(bl["end"].to_numpy())
        ps, pe = peaks["start"].to_numpy()[sel], peaks["end"].to_numpy()[sel]
        k = np.searchsorted(bs, pe, side="left") - 1  # last blacklist interval starting before the peak ends
        hit = (k >= 0) & (be[np.maximum(k, 0)] > ps)
        keep[sel[hit]] = False
    return peaks.loc[keep].reset_index(drop=True)
