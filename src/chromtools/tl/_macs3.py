"""Classical peak calling on a coverage track with MACS3 (the baseline a learned model must beat)."""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chromtools._utils import PathLike, box_mean
from chromtools.io import BigWigReader, runs_from_values, write_narrowpeak
from chromtools.tl._peaks import name_peaks

logger = logging.getLogger(__name__)


def _import_macs3():
    try:
        from MACS3.Signal.BedGraph import bedGraphTrackI
    except ImportError:
        msg = "MACS3 is not installed; install the 'peaks' extra: pip install 'chromtools[peaks]'."
        raise ImportError(msg) from None
    return bedGraphTrackI


#: Largest p-score kept; deeper tails underflow to P = 0 and would be infinite.
MAX_PSCORE = 1e4


def poisson_pscore(coverage: np.ndarray, background: np.ndarray) -> np.ndarray:
    """-log10 P(X >= coverage) for X ~ Poisson(background), per base (float32, capped at 1e4)."""
    from scipy.stats import poisson

    x = np.round(np.maximum(coverage, 0)).astype(np.float64)
    lam = np.maximum(background.astype(np.float64), 1e-6)
    with np.errstate(divide="ignore"):
        score = -poisson.logsf(x - 1, lam) / np.log(10)
    return np.minimum(np.where(x > 0, score, 0.0), MAX_PSCORE).astype(np.float32)


def macs3_peaks(
    track: PathLike,
    out: PathLike | None = None,
    *,
    chroms: Sequence[str] | None = None,
    cutoff: float = 3.0,
    min_length: int = 200,
    max_gap: int = 30,
    local_window: int = 10_000,
) -> pd.DataFrame:
    """Call peaks on a coverage bigWig with MACS3's peak caller (``macs3 bdgpeakcall``), in process (file in, table and optional narrowPeak file out).

    Each base gets a Poisson p-score, ``-log10 P(X >= coverage)``, against a background rate
    ``max(chromosome mean, mean over local_window bp)`` (MACS' local lambda, from the track itself
    as there is no control). MACS3 then joins bases with p-score >= ``cutoff`` into peaks,
    merging gaps up to ``max_gap`` bp and dropping peaks under ``min_length`` bp. This is how the
    clean-data labels of AtacWorks were made (cutoff 3), and applied to a low-coverage track it is
    the classical baseline.

    Parameters
    ----------
    track
        Coverage bigWig (integer-like counts, e.g. smoothed cut sites).
    out
        Optional narrowPeak output (written atomically).
    chroms
        Chromosomes to call on; default all in the bigWig.
    cutoff
        Minimum -log10 p-value.
    min_length
        Minimum peak length (bp).
    max_gap
        Largest gap (bp) merged into one peak.
    local_window
        Width (bp) of the local background window.

    Returns
    -------
    Peaks with narrowPeak columns; ``pValue`` and ``score`` hold the summit's -log10 p-value.
    Needs the ``peaks`` extra (MACS3).
    """
    bedgraph_track = _import_macs3()
    rows = []
    with BigWigReader(track) as bw:
        use = list(bw.chrom_sizes) if chroms is None else list(chroms)
        for chrom in use:
            cov = bw.values(chrom)
            mean = float(cov.mean())
            if mean == 0:
                continue
            local = box_mean(cov, local_window) if cov.size > local_window else np.full_like(cov, mean)
            score = poisson_pscore(cov, np.maximum(local, mean))
            starts, ends, values = runs_from_values(score)
            # MACS3 tracks are contiguous segments from 0: fill the gaps between runs with zeros
            bounds = np.empty(2 * starts.size, np.int64)
            vals = np.zeros(2 * starts.size, np.float32)
            bounds[0::2], bounds[1::2] = starts, ends
            vals[1::2] = values
            keep = np.diff(np.concatenate(([0], bounds))) > 0  # no zero-length segments
            bounds, vals = bounds[keep], vals[keep]
            t = bedgraph_track(baseline_value=0)
            t.add_chrom_data(chrom.encode(), array("i", bounds.tolist()), array("f", vals.tolist()))
            called = t.call_peaks(cutoff=cutoff, min_length=min_length, max_gap=max_gap)
            if chrom.encode() not in called.get_chr_names():
                continue
            for p in called.get_data_from_chrom(chrom.encode()):
                rows.append((chrom, int(p["start"]), int(p["end"]), int(p["summit"]), float(p["score"])))
    df = pd.DataFrame(rows, columns=["chrom", "start", "end", "summit", "pValue"])
    df["score"] = np.clip(np.round(df["pValue"] * 10), 0, 1000).astype(np.int64)
    df["strand"] = "."
    df["signalValue"] = -1.0
    df["qValue"] = -1.0
    df["peak"] = (df["summit"] - df["start"]).astype(np.int64)
    df = name_peaks(df, prefix="macs3_peak")
    if out is not None and len(df):
        write_narrowpeak(df, Path(out))
    logger.info("MACS3 called %d peaks on '%s'", len(df), Path(track).name)
    return df
