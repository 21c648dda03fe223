"""Genome-browser-style figures of coverage tracks and peak calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chromtools._docs import doc_params
from chromtools._utils import PathLike
from chromtools.io import BigWigReader, parse_region, read_peaks

from ._utils import figure_of, show_or_return

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLORS = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b"]


def _track_values(track: PathLike | np.ndarray, chrom: str, start: int, end: int) -> np.ndarray:
    if isinstance(track, np.ndarray):
        if track.size != end - start:
            msg = f"An array track must cover the region exactly ({end - start} values), got {track.size}."
            raise ValueError(msg)
        return track
    with BigWigReader(track) as bw:
        return bw.values(chrom, start, end)


def _peaks_in(peaks: PathLike | pd.DataFrame, chrom: str, start: int, end: int) -> pd.DataFrame:
    df = peaks if isinstance(peaks, pd.DataFrame) else read_peaks(peaks)
    sel = (df["chrom"] == chrom) & (df["end"] > start) & (df["start"] < end)
    return df.loc[sel]


def _bin(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Max-pool long regions to at most ``max_points`` bins so peaks stay visible."""
    n = values.size
    if n <= max_points:
        return np.arange(n), values
    width = int(np.ceil(n / max_points))
    pad = (-n) % width
    v = np.pad(values, (0, pad)).reshape(-1, width).max(axis=1)
    return np.arange(v.size) * width, v


@doc_params
def tracks(
    tracks: Mapping[str, PathLike | np.ndarray],
    region: str | tuple[str, int, int],
    *,
    peaks: Mapping[str, PathLike | pd.DataFrame] | None = None,
    colors: Sequence[str] | None = None,
    sharey: bool = False,
    max_points: int = 4_000,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """Plot coverage tracks and peak calls over a region, one row per track.

    Parameters
    ----------
    tracks
        Track label → bigWig path, or an array of per-base values covering ``region`` exactly
        (e.g. ``{"noisy": "noisy.bw", "denoised": "out.track.bw", "clean": "clean.bw"}``).
    region
        ``'chr1:100000-150000'`` or ``('chr1', 100000, 150000)``.
    peaks
        Peak-set label → BED/narrowPeak path or DataFrame; each set is drawn as a row of boxes.
    colors
        One colour per track.
    sharey
        Use one y scale for all tracks (useful when they have the same depth).
    max_points
        Longer regions are max-pooled to this many bins.
    title
        Figure title; default the region.
    figsize
        Figure size; default grows with the number of rows.
    ax
        Axes to draw into, one per track plus one for all peak sets.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``.
    """
    chrom, start, end = parse_region(region)
    if start is None or end is None:
        msg = f"Give a region with coordinates, e.g. '{chrom}:1-100000', not a whole chromosome."
        raise ValueError(msg)
    peaks = dict(peaks or {})
    n_rows = len(tracks) + (1 if peaks else 0)
    if ax is None:
        heights = [1.0] * len(tracks) + ([0.25 * len(peaks) + 0.2] if peaks else [])
        fig, grid = plt.subplots(
            n_rows,
            1,
            figsize=figsize or (10, 1.3 * len(tracks) + 0.4 * len(peaks) + 0.6),
            sharex=True,
            gridspec_kw={"height_ratios": heights},
            squeeze=False,
        )
        axes = list(grid[:, 0])
    else:
        axes = list(ax)
        if len(axes) != n_rows:
            msg = f"ax needs {n_rows} axes (one per track, one for all peak sets), got {len(axes)}."
            raise ValueError(msg)
        fig = figure_of(axes[0])
    colors = list(colors) if colors is not None else _COLORS
    values = {name: _track_values(t, chrom, start, end) for name, t in tracks.items()}
    ymax = max((float(v.max()) for v in values.values() if v.size), default=1.0) or 1.0
    for i, (name, v) in enumerate(values.items()):
        x, y = _bin(v, max_points)
        a = axes[i]
        a.fill_between(x + start, y, step="post", color=colors[i % len(colors)], linewidth=0)
        a.set_ylabel(name, rotation=0, ha="right", va="center")
        a.set_ylim(0, (ymax if sharey else max(float(y.max()), 1e-6)) * 1.05)
        a.spines[["top", "right"]].set_visible(False)
    if peaks:
        a = axes[-1]
        for j, p in enumerate(peaks.values()):
            sel = _peaks_in(p, chrom, start, end)
            a.broken_barh(
                list(zip(sel["start"], sel["end"] - sel["start"], strict=True)),
                (j + 0.15, 0.7),
                color=colors[(len(values) + j) % len(colors)],
            )
        a.set_yticks(np.arange(len(peaks)) + 0.5, list(peaks))
        a.set_ylim(0, len(peaks))
        a.spines[["top", "right", "left"]].set_visible(False)
    axes[-1].set_xlim(start, end)
    axes[-1].set_xlabel(f"{chrom} position (bp)")
    axes[-1].ticklabel_format(axis="x", style="plain", useOffset=False)
    fig.suptitle(title if title is not None else f"{chrom}:{start:,}-{end:,}")
    fig.tight_layout()
    return show_or_return(fig, show=show, save=save)
