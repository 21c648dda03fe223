"""Simulated pairs of low- and high-coverage ATAC tracks with planted peaks."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chromtools._docs import doc_params
from chromtools._utils import PathLike
from chromtools.io import BigWigWriter, read_chrom_sizes, write_bed, write_chrom_sizes, write_narrowpeak

logger = logging.getLogger(__name__)

#: Two small chromosomes: enough peaks to train on one and validate on the other in seconds.
DEFAULT_SIM_SIZES = {"chr1": 2_000_000, "chr2": 1_000_000}
_BLOCK = 1 << 21


@dataclass(frozen=True)
class SimulatedTracks:
    """Paths of a simulated track pair, and the planted truth.

    Attributes
    ----------
    noisy
        Low-coverage bigWig (the model input).
    clean
        High-coverage bigWig (the regression target).
    peaks
        BED of the labelled (clean) peaks.
    narrowpeak
        The same peaks as narrowPeak with summits.
    chrom_sizes
        ``.sizes`` file of the simulated genome.
    planted
        Every planted peak (labelled or too weak to be labelled) with its height and width.
    """

    noisy: Path
    clean: Path
    peaks: Path
    narrowpeak: Path
    chrom_sizes: Path
    planted: pd.DataFrame


def _background(n: int, rng: np.random.Generator, mean: float, scale: int = 20_000) -> np.ndarray:
    """Smooth, log-normal background cut intensity with unmappable gaps."""
    n_knots = n // scale + 3
    knots = rng.normal(0.0, 0.8, size=n_knots)
    field = np.interp(np.arange(n) / scale, np.arange(n_knots), knots)
    bg = mean * np.exp(field - 0.32)
    # Unmappable stretches (about 3% of the genome) have no reads at all.
    n_gaps = max(1, n // 1_000_000 * 3)
    for start in rng.integers(0, n, size=n_gaps):
        bg[start : start + int(rng.integers(5_000, 20_000))] = 0.0
    return bg


def _profile(span: np.ndarray, centre: float, shape: np.ndarray) -> np.ndarray:
    """Sum of Gaussian sub-summits; ``shape`` rows are (offset, sd, amplitude), amplitude 0 = unused."""
    prof = np.zeros(span.size)
    for offset, sd, amp in shape:
        if amp > 0:
            prof += amp * np.exp(-0.5 * ((span - (centre + offset)) / sd) ** 2)
    return prof


def _plant_peaks(
    n: int, rng: np.random.Generator, density: float, median_height: float, label_min_height: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """Planted peaks of one chromosome, and each peak's sub-summit shape (n_peaks x 3 x 3)."""
    n_peaks = rng.poisson(density * n / 1e6)
    centres = np.sort(rng.integers(2_000, max(n - 2_000, 2_001), size=n_peaks))
    widths = np.clip(rng.lognormal(np.log(520), 0.6, size=n_peaks), 150, 3_500).astype(np.int64)
    heights = median_height * rng.lognormal(0.0, 1.0, size=n_peaks)
    n_sub = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1], size=n_peaks)
    shape = np.zeros((n_peaks, 3, 3))
    for i in range(n_peaks):
        k = n_sub[i]
        shape[i, :k, 0] = rng.uniform(-0.25, 0.25, size=k) * widths[i] if k > 1 else 0.0
        shape[i, :k, 1] = widths[i] / (4.0 + 2.0 * (k - 1)) * rng.uniform(0.8, 1.2, size=k)
        shape[i, :k, 2] = np.r_[1.0, rng.uniform(0.5, 1.0, size=k - 1)]
    # Drop peaks that would overlap a previous one so the labelled intervals stay disjoint.
    keep = np.ones(n_peaks, bool)
    last_end = -1
    for i, (c, w) in enumerate(zip(centres, widths, strict=True)):
        if c - w // 2 - 200 < last_end:
            keep[i] = False
        else:
            last_end = c + w - w // 2
    df = pd.DataFrame({"centre": centres, "width": widths, "height": heights, "n_summits": n_sub}).loc[keep]
    df = df.reset_index(drop=True)
    shape = shape[keep]
    df["start"] = df["centre"] - df["width"] // 2
    df["end"] = df["start"] + df["width"]
    df["labelled"] = df["height"] >= label_min_height
    summits = np.empty(len(df), np.int64)
    for i, row in enumerate(df.itertuples()):
        span = np.arange(row.start - row.width, row.end + row.width)
        prof = _profile(span, row.centre, shape[i])
        shape[i, :, 2] *= row.height / prof.max()
        summits[i] = span[int(np.argmax(prof))]
    df["summit"] = summits
    return df, shape


def _peak_intensity(peaks: pd.DataFrame, shape: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Cut intensity of the planted peaks on ``[lo, hi)``."""
    out = np.zeros(hi - lo)
    for i, row in enumerate(peaks.itertuples()):
        a, b = max(row.start - row.width, lo), min(row.end + row.width, hi)
        if a < b:
            out[a - lo : b - lo] += _profile(np.arange(a, b), row.centre, shape[i])
    return out


def _window_sum(cuts: np.ndarray, carry: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of cut sites in a trailing window; returns per-base coverage and the next carry."""
    ext = np.concatenate([carry, cuts]).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(ext)])
    cov = csum[window:] - csum[:-window]
    return cov[-cuts.size :] if cuts.size else cov[:0], ext[-(window - 1) :] if window > 1 else ext[:0]


@doc_params
def simulate_tracks(
    out_dir: PathLike,
    *,
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    peaks_per_mb: float = 55.0,
    depth_ratio: float = 16.0,
    background: float = 0.018,
    median_height: float = 0.7,
    label_min_height: float = 0.12,
    smooth: int = 100,
    random_state: int = 0,
) -> SimulatedTracks:
    """Simulate a low-/high-coverage ATAC track pair with planted peaks, as bigWig + BED.

    The high-coverage ("clean") cut sites are Poisson draws from a smooth, log-normal background
    with unmappable gaps, plus planted peaks of 150-3,500 bp with one to three summits and
    log-normal heights. The low-coverage ("noisy") cut sites are a binomial subsample of the clean
    ones at ``1 / depth_ratio``, as when reads are downsampled. Both tracks count cut sites in a
    ``smooth``-bp window, like coverage tracks built from ATAC fragments. Defaults match the
    real HSC pair (5M vs 80M reads): about 55 peaks per Mb of median width 470 bp, ~4 % of bases in
    peaks, clean mean coverage ~4.

    Peaks whose summit cut intensity reaches ``label_min_height`` are the labels (the "clean
    peaks"); weaker planted peaks stay unlabelled, as a peak caller on real data would miss them.

    Parameters
    ----------
    out_dir
        Folder for ``noisy.bw``, ``clean.bw``, ``peaks.bed``, ``peaks.narrowPeak`` and
        ``chrom.sizes``; created if needed.
    chrom_sizes
        The genome to simulate; default two chromosomes of 2 and 1 Mb. Chromosomes are
        generated in blocks, so genomes of any size fit in memory.
    peaks_per_mb
        Density of planted peaks.
    depth_ratio
        Clean-to-noisy sequencing depth.
    background
        Mean background cut-site intensity per base of the clean track.
    median_height
        Median summit cut intensity of a peak (per base, clean track).
    label_min_height
        Peaks at least this high are labelled.
    smooth
        Coverage window (bp) around each cut site.
    {random_state}

    Returns
    -------
    Paths of the written files and the planted peaks.
    """
    sizes = read_chrom_sizes(chrom_sizes) if chrom_sizes is not None else dict(DEFAULT_SIM_SIZES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    planted = []
    paths = {"noisy": out / "noisy.bw", "clean": out / "clean.bw"}
    with BigWigWriter(paths["noisy"], sizes) as noisy_bw, BigWigWriter(paths["clean"], sizes) as clean_bw:
        for chrom, size in sizes.items():
            peaks, shape = _plant_peaks(size, rng, peaks_per_mb, median_height, label_min_height)
            carry_c = np.zeros(max(smooth - 1, 0), np.int64)
            carry_n = carry_c.copy()
            shift = smooth // 2
            for lo in range(0, size + shift, _BLOCK):
                hi = min(lo + _BLOCK, size + shift)
                near = (((peaks["end"] + peaks["width"]) > lo) & ((peaks["start"] - peaks["width"]) < hi)).to_numpy()
                valid = np.arange(lo, hi) < size
                intensity = _background(hi - lo, rng, background) + _peak_intensity(peaks[near], shape[near], lo, hi)
                clean_cuts = rng.poisson(intensity * valid)
                noisy_cuts = rng.binomial(clean_cuts, 1.0 / depth_ratio)
                cov_c, carry_c = _window_sum(clean_cuts, carry_c, max(smooth, 1))
                cov_n, carry_n = _window_sum(noisy_cuts, carry_n, max(smooth, 1))
                # A trailing window of cut sites ending at x is centred at x - shift.
                out_lo = max(lo - shift, 0)
                skip = out_lo - (lo - shift)
                cov_c, cov_n = cov_c[skip:], cov_n[skip:]
                n_out = min(cov_c.size, size - out_lo)
                clean_bw.add(chrom, cov_c[:n_out].astype(np.float32), start=out_lo)
                noisy_bw.add(chrom, cov_n[:n_out].astype(np.float32), start=out_lo)
            peaks.insert(0, "chrom", chrom)
            planted.append(peaks)
    planted_df = pd.concat(planted, ignore_index=True)
    labelled = planted_df.loc[planted_df["labelled"]].reset_index(drop=True)
    bed = labelled[["chrom", "start", "end"]].copy()
    write_bed(bed, out / "peaks.bed")
    np_df = bed.copy()
    np_df["score"] = np.clip(labelled["height"] / labelled["height"].max() * 1000, 0, 1000)
    np_df["signalValue"] = labelled["height"]
    np_df["peak"] = labelled["summit"] - labelled["start"]
    write_narrowpeak(np_df, out / "peaks.narrowPeak")
    write_chrom_sizes(sizes, out / "chrom.sizes")
    logger.info(
        "Simulated %d planted peaks (%d labelled) on %d chromosomes (%.1f Mb)",
        len(planted_df),
        len(labelled),
        len(sizes),
        sum(sizes.values()) / 1e6,
    )
    return SimulatedTracks(
        noisy=paths["noisy"],
        clean=paths["clean"],
        peaks=out / "peaks.bed",
        narrowpeak=out / "peaks.narrowPeak",
        chrom_sizes=out / "chrom.sizes",
        planted=planted_df,
    )


@doc_params
def simulate_fragments(
    out_dir: PathLike,
    *,
    n_cells: Mapping[str, int] | None = None,
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    peaks_per_mb: float = 60.0,
    fragments_per_cell: int = 1_000,
    frip: float = 0.5,
    random_state: int = 0,
):
    """Simulate a 10x-style fragments file of cells in groups, with planted peaks, for the single-cell path.

    Every cell draws about ``fragments_per_cell`` fragments (Poisson); a share ``frip`` of them
    falls in the planted peaks (centres normal around the peak centre, peaks chosen with log-normal
    weights shared by all groups), the rest uniformly over the genome. Fragment lengths are
    50 bp plus an exponential of mean 150 bp. The file is sorted by chromosome and start, gzip
    compressed (no tabix index), and its chromosomes end before the simulated sizes, as real ones do.

    Parameters
    ----------
    out_dir
        Folder for ``fragments.tsv.gz``, ``peaks.bed`` and ``chrom.sizes``; created if needed.
    n_cells
        Cells per group; default ``{{'A': 300, 'B': 100}}``.
    chrom_sizes
        The genome; default two chromosomes of 400 and 200 kb.
    peaks_per_mb
        Density of planted peaks.
    fragments_per_cell
        Mean fragments per cell.
    frip
        Share of fragments in peaks.
    {random_state}

    Returns
    -------
    An AnnData with one row per cell (``obs['group']``, no features) and the fragments path in
    ``uns['files']['fragments']``; ``uns['simulation']`` holds the peaks and sizes paths.
    """
    import anndata as ad

    n_cells = dict(n_cells) if n_cells is not None else {"A": 300, "B": 100}
    sizes = read_chrom_sizes(chrom_sizes) if chrom_sizes is not None else {"chr1": 400_000, "chr2": 200_000}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    names = list(sizes)
    offsets = np.cumsum([0] + [sizes[c] for c in names])
    genome = int(offsets[-1])
    n_peaks = max(int(genome / 1e6 * peaks_per_mb), 1)
    centres = np.sort(rng.integers(2_000, genome - 2_000, n_peaks))
    widths = rng.integers(200, 800, n_peaks)
    weights = rng.lognormal(0, 0.8, n_peaks)
    weights /= weights.sum()
    barcodes = [f"{g}_{i:04d}-1" for g, n in n_cells.items() for i in range(n)]
    groups = [g for g, n in n_cells.items() for _ in range(n)]
    counts = rng.poisson(fragments_per_cell, len(barcodes))
    cell = np.repeat(np.arange(len(barcodes)), counts)
    in_peak = rng.random(cell.size) < frip
    k = rng.choice(n_peaks, size=cell.size, p=weights)
    mid = np.where(in_peak, rng.normal(centres[k], widths[k] / 4), rng.integers(0, genome, cell.size))
    length = 50 + rng.exponential(150, cell.size).astype(np.int64)
    start = np.clip(mid - length // 2, 0, genome - 1).astype(np.int64)
    ci = np.searchsorted(offsets, start, side="right") - 1
    start = start - offsets[ci]
    end = np.minimum(start + length, np.asarray([sizes[c] for c in names])[ci] - 1)
    ok = end > start
    order = np.lexsort((start[ok], ci[ok]))
    frags = pd.DataFrame(
        {
            "chrom": np.asarray(names)[ci[ok]][order],
            "start": start[ok][order],
            "end": end[ok][order],
            "barcode": np.asarray(barcodes)[cell[ok]][order],
            "count": 1,
        }
    )
    path = out / "fragments.tsv.gz"
    with gzip.open(path, "wt") as fh:
        frags.to_csv(fh, sep="\t", header=False, index=False)
    pc = np.searchsorted(offsets, centres, side="right") - 1
    peaks = pd.DataFrame(
        {
            "chrom": np.asarray(names)[pc],
            "start": np.maximum(centres - offsets[pc] - widths // 2, 0),
            "end": centres - offsets[pc] + widths // 2,
        }
    )
    write_bed(peaks, out / "peaks.bed")
    write_chrom_sizes(sizes, out / "chrom.sizes")
    adata = ad.AnnData(obs=pd.DataFrame({"group": pd.Categorical(groups)}, index=pd.Index(barcodes)))
    adata.uns["files"] = {"fragments": str(path)}
    adata.uns["simulation"] = {"peaks": str(out / "peaks.bed"), "chrom_sizes": str(out / "chrom.sizes")}
    logger.info("Simulated %d fragments of %d cells, %d peaks", len(frags), len(barcodes), n_peaks)
    return adata
