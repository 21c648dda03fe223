"""Genome-wide denoising: stream a noisy bigWig through a TrackDenoiser into bigWigs and narrowPeak peaks."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast, overload

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from chromtools._docs import doc_params
from chromtools._utils import PathLike, moving_average
from chromtools.io import (
    BigWigReader,
    BigWigWriter,
    bigwig_mean,
    check_chrom_sizes,
    read_chrom_sizes,
    read_peaks,
    read_window,
    write_narrowpeak,
)
from chromtools.models import PeakStream, TrackDenoiser, drop_blacklisted, input_transform, score_peaks
from chromtools.tl._peaks import name_peaks
from chromtools.tl._windows import tile

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)
INFERENCE_WINDOW = 200_000


@dataclass
class DenoiseResult:
    """What :func:`denoise` wrote and measured.

    Attributes
    ----------
    track
        Denoised coverage bigWig.
    peakprob
        Per-base peak probability bigWig.
    peaks
        narrowPeak file of the called peaks.
    peak_table
        The peaks as a DataFrame (narrowPeak columns plus ``max_prob``, ``mean_prob``,
        ``summit``, ``summit_value``).
    params
        The settings used, the input and output scales, and the windows run.
    n_bases
        Bases processed.
    seconds
        Wall time.
    """

    track: Path
    peakprob: Path
    peaks: Path
    peak_table: pd.DataFrame
    n_bases: int
    seconds: float
    params: dict = field(default_factory=dict)

    @property
    def bases_per_second(self) -> float:
        """Throughput of the whole run (reading, network, writing, peak calling)."""
        return self.n_bases / max(self.seconds, 1e-9)


def _resolve_device(accelerator: str, devices) -> torch.device:
    from scvi.model._utils import parse_device_args

    _, _, device = parse_device_args(accelerator, devices, return_device="torch", validate_single_device=True)
    return device


def _check_inputs(
    noisy: Path,
    spec: Mapping[str, Any],  # a TrackDenoiser's spec_
    extra: Sequence[PathLike],
    chrom_sizes: PathLike | Mapping[str, int] | None,
    chroms: Sequence[str] | None,
    check_genome: bool,
) -> dict[str, int]:
    with BigWigReader(noisy) as bw:
        header = dict(bw.chrom_sizes)
        if bw.is_empty():
            msg = f"Noisy bigWig '{noisy.name}' stores no data (an empty track); check how it was made."
            raise ValueError(msg)
    if chrom_sizes is not None:
        sizes = read_chrom_sizes(chrom_sizes)
        check_chrom_sizes(
            header, sizes, found_name=f"bigWig '{noisy.name}'", expected_name="chrom_sizes", chroms=chroms
        )
    else:
        sizes = header
    if chroms is not None:
        missing = [c for c in chroms if c not in sizes]
        if missing:
            msg = f"Chromosomes {missing} are absent from the chromosome sizes ({list(sizes)[:10]}); fix chroms=... or the sizes."
            raise KeyError(msg)
        missing = [c for c in chroms if c not in header]
        if missing:
            msg = f"Chromosomes {missing} are not in bigWig '{noisy.name}'; fix chroms=... or use the right track."
            raise KeyError(msg)
        sizes = {c: sizes[c] for c in chroms}
    else:
        sizes = {c: s for c, s in sizes.items() if c in header}
    if check_genome and spec.get("genome"):
        trained = spec["genome"]
        clash = {c: (s, trained[c]) for c, s in sizes.items() if c in trained and trained[c] != s}
        if clash:
            c, (s, t) = next(iter(clash.items()))
            msg = (
                f"Chromosome '{c}' is {s:,} bp in '{noisy.name}' but {t:,} bp in the model's training genome: the track "
                "and the model come from different assemblies (e.g. hg19 vs hg38). Use a model trained on this assembly, "
                "or pass check_genome=False if the names mean the same sequences."
            )
            raise ValueError(msg)
    n_extra = spec["n_channels"] - 1
    if len(extra) != n_extra:
        msg = f"The model was trained with {n_extra} extra input track(s); pass exactly that many with extra=[...], got {len(extra)}."
        raise ValueError(msg)
    for path in extra:
        check_chrom_sizes(
            read_chrom_sizes(path),
            sizes,
            found_name=f"extra track '{Path(path).name}'",
            expected_name=f"'{noisy.name}'",
        )
    return sizes


def _chrom_sizes_table(sizes: Mapping[str, int]) -> pd.DataFrame:
    """Chromosome sizes as a DataFrame (index ``chrom``, column ``size``), the form kept in ``uns``.

    Contig names are values here, not keys, so names holding '/' can be written to h5ad.
    """
    return pd.DataFrame({"size": [int(v) for v in sizes.values()]}, index=pd.Index(list(sizes), name="chrom"))


def _round(values: np.ndarray, decimals: int | None) -> np.ndarray:
    return values if decimals is None else np.round(values, decimals)


class _DenoiseOptions(TypedDict):
    """The options :func:`denoise` passes on unchanged for each of several bigWigs."""

    extra: Sequence[PathLike]
    window: int | None
    batch_size: int
    threshold: float | None
    merge_gap: int | None
    min_length: int | None
    blacklist: PathLike | pd.DataFrame | None
    decimals: int | None
    zoom_levels: int
    check_genome: bool
    accelerator: str
    devices: int | list[int] | str


# A str is also a Sequence[str]: one path matches the first overload, which wins.
@overload
def denoise(  # type: ignore[overload-overlap]
    noisy: PathLike,
    model: TrackDenoiser | PathLike,
    out_prefix: PathLike,
    *,
    extra: Sequence[PathLike] = (),
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    window: int | None = None,
    batch_size: int = 8,
    threshold: float | None = None,
    merge_gap: int | None = None,
    min_length: int | None = None,
    blacklist: PathLike | pd.DataFrame | None = None,
    decimals: int | None = 1,
    zoom_levels: int = 10,
    input_means: Sequence[float] | None = None,
    check_genome: bool = True,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = True,
    client: Client | str | None = None,
    n_workers: int | None = None,
) -> DenoiseResult: ...


@overload
def denoise(
    noisy: Sequence[PathLike],
    model: TrackDenoiser | PathLike,
    out_prefix: Sequence[PathLike],
    *,
    extra: Sequence[PathLike] = (),
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    window: int | None = None,
    batch_size: int = 8,
    threshold: float | None = None,
    merge_gap: int | None = None,
    min_length: int | None = None,
    blacklist: PathLike | pd.DataFrame | None = None,
    decimals: int | None = 1,
    zoom_levels: int = 10,
    input_means: Sequence[float] | None = None,
    check_genome: bool = True,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = True,
    client: Client | str | None = None,
    n_workers: int | None = None,
) -> list[DenoiseResult]: ...


@doc_params
def denoise(
    noisy: PathLike | Sequence[PathLike],
    model: TrackDenoiser | PathLike,
    out_prefix: PathLike | Sequence[PathLike],
    *,
    extra: Sequence[PathLike] = (),
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    window: int | None = None,
    batch_size: int = 8,
    threshold: float | None = None,
    merge_gap: int | None = None,
    min_length: int | None = None,
    blacklist: PathLike | pd.DataFrame | None = None,
    decimals: int | None = 1,
    zoom_levels: int = 10,
    input_means: Sequence[float] | None = None,
    check_genome: bool = True,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = True,
    client: Client | str | None = None,
    n_workers: int | None = None,
) -> DenoiseResult | list[DenoiseResult]:
    """Denoise a low-coverage ATAC bigWig genome-wide and call peaks (bigWig in, bigWig and narrowPeak out).

    Chromosomes are tiled into windows read with the model's padding on both sides (zeros past
    the chromosome ends), so every base gets a prediction — chromosome tails included — and the
    output does not depend on the window size. Windows are processed in batches and written as
    they come: memory grows with ``batch_size``, not with the genome. Windows whose padded input
    is all zero take the model's (constant) prediction for empty input without running it.

    The denoised track is in the units of the model's clean training track: the network output
    (coverage / mean coverage) times this input's mean coverage, the training clean/noisy depth
    ratio and the track scale fitted on the validation region (``params['output_scale']``).

    Peaks are the runs of bases whose peak probability reaches ``threshold``, merged across gaps of
    up to ``merge_gap`` bp; the narrowPeak columns are: ``score`` = 1000 × the estimated precision
    of peaks this strong (1 − FDR); ``signalValue`` = denoised coverage at the summit; ``pValue`` =
    −log10 of the Poisson probability of that summit coverage when the genome-wide mean of the
    denoised track is expected (MACS' summit test, capped at 300); ``qValue`` = −log10 of the FDR
    estimated on the model's validation region (the share of validation peaks with at least this
    peak probability that matched no true peak one to one); ``peak`` = summit offset from the start.

    With ``client=``, the genome is sharded into one task per chromosome (and per sample) run on
    Dask workers, and the shards are merged into the same files, identical value for value to a
    single-process run (see "Running at scale" in the docs).

    Parameters
    ----------
    noisy
        Low-coverage coverage bigWig, or a list of them (several samples: then ``out_prefix`` is a
        list too, and the result a list).
    model
        A trained :class:`~chromtools.models.TrackDenoiser` or the folder it was saved to.
    out_prefix
        Writes ``{{out_prefix}}.track.bw`` (denoised coverage), ``{{out_prefix}}.peakprob.bw``
        (peak probability) and ``{{out_prefix}}.peaks.narrowPeak``; the folder is created.
    extra
        Extra input tracks, if the model was trained with them (same order).
    chrom_sizes
        Genome sizes; must agree with the bigWig header. Default: the header.
    chroms
        Chromosomes to process; default all in the header (and in ``chrom_sizes``).
    window
        Window length (bp), a multiple of the model's bin size; default 200 kb (or the training window
        if longer), so that the context padding read around each window costs little.
    batch_size
        Windows per forward pass.
    threshold
        Peak probability at or above which a base is in a peak; default the threshold chosen on the
        model's validation region (best one-to-one peak F1, together with ``merge_gap``).
    merge_gap
        Peaks closer than this (bp) are merged; default the model's (chosen with the threshold on
        its validation region).
    min_length
        Peaks shorter than this (bp) are dropped; default the model's (50 bp).
    blacklist
        BED file (or table) of regions to exclude (e.g. the ENCODE blacklist): peaks overlapping
        one by at least 1 bp are dropped. The tracks are written unchanged.
    decimals
        Decimals kept in the denoised track (``None``: full float32); rounding makes the bigWig
        smaller and faster to write. Probabilities keep 3 decimals.
    zoom_levels
        Zoom levels precomputed in the output bigWigs (for fast zoomed-out browsing); 0 writes none,
        which is faster for intermediate files.
    input_means
        Mean coverage per base of ``noisy`` and of each ``extra`` track (in that order), used for depth
        scaling, when already known (e.g. computed once for many shards of one sample); default: read
        from the files. Ignored by models trained with ``depth_scaling='none'``.
    check_genome
        Refuse chromosomes whose length differs from the model's training genome.
    {accelerator}
    {devices}
    {progress}
    client
        Run on Dask: a :class:`distributed.Client`, a scheduler address, or ``'local'`` for a
        :class:`~distributed.LocalCluster` of ``n_workers`` single-threaded workers started for this
        call. Needs the ``scale`` extra (``dask[distributed]``). ``None`` runs in this process.
    n_workers
        Workers of the local cluster (default: one per core).

    Returns
    -------
    The output paths, the peak table and the throughput (a list of them for a list of bigWigs).
    """
    several = not isinstance(noisy, str | os.PathLike)
    if several or client is not None:
        if input_means is not None:
            msg = "input_means describes one bigWig; with several bigWigs or client=, each sample's means are computed."
            raise ValueError(msg)
        noisy_list = [noisy] if isinstance(noisy, str | os.PathLike) else list(noisy)
        # the overloads pair one bigWig with one output prefix, and a list with a list
        prefixes = list(cast("Sequence[PathLike]", out_prefix)) if several else [cast("PathLike", out_prefix)]
        opts: _DenoiseOptions = {
            "extra": extra,
            "window": window,
            "batch_size": batch_size,
            "threshold": threshold,
            "merge_gap": merge_gap,
            "min_length": min_length,
            "blacklist": blacklist,
            "decimals": decimals,
            "zoom_levels": zoom_levels,
            "check_genome": check_genome,
            "accelerator": accelerator,
            "devices": devices,
        }
        if client is None:
            results = [
                denoise(n, model, p, chrom_sizes=chrom_sizes, chroms=chroms, progress=progress, **opts)
                for n, p in zip(noisy_list, prefixes, strict=True)
            ]
        else:
            from ._denoise_distributed import denoise_distributed

            results = denoise_distributed(
                noisy_list,
                model,
                prefixes,
                client=client,
                n_workers=n_workers,
                chrom_sizes=chrom_sizes,
                chroms=chroms,
                **opts,
            )
        return results if several else results[0]
    assert isinstance(noisy, str | os.PathLike)  # `several` is False
    return _denoise_one(
        noisy,
        model,
        cast("PathLike", out_prefix),
        extra=extra,
        chrom_sizes=chrom_sizes,
        chroms=chroms,
        window=window,
        batch_size=batch_size,
        threshold=threshold,
        merge_gap=merge_gap,
        min_length=min_length,
        blacklist=blacklist,
        decimals=decimals,
        zoom_levels=zoom_levels,
        input_means=input_means,
        check_genome=check_genome,
        accelerator=accelerator,
        devices=devices,
        progress=progress,
    )


def _denoise_one(
    noisy: PathLike,
    model: TrackDenoiser | PathLike,
    out_prefix: PathLike,
    *,
    extra: Sequence[PathLike] = (),
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    window: int | None = None,
    batch_size: int = 8,
    threshold: float | None = None,
    merge_gap: int | None = None,
    min_length: int | None = None,
    blacklist: PathLike | pd.DataFrame | None = None,
    decimals: int | None = 1,
    zoom_levels: int = 10,
    input_means: Sequence[float] | None = None,
    check_genome: bool = True,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = True,
    shard: bool = False,
) -> DenoiseResult:
    """:func:`denoise` on one bigWig in this process.

    With ``shard=True`` (a Dask task's share: one chromosome), the tracks go to raw ``.npy`` arrays
    (``{out_prefix}.track.npy``, ``{out_prefix}.peakprob.npy``) that the driver appends to the
    bigWigs, so that a bigWig is encoded once, and no narrowPeak is written (the table is returned).
    """
    t0 = time.perf_counter()
    noisy = Path(noisy)
    if not isinstance(model, TrackDenoiser):
        model = TrackDenoiser.load(model)
    spec = model.spec_
    if threshold is None:
        threshold = float(spec.get("peak_threshold", 0.5))
    merge_gap = int(spec.get("peak_merge_gap", 50)) if merge_gap is None else int(merge_gap)
    min_length = int(spec.get("peak_min_length", 50)) if min_length is None else int(min_length)
    if blacklist is not None:
        blacklist = blacklist if isinstance(blacklist, pd.DataFrame) else read_peaks(blacklist)
    sizes = _check_inputs(noisy, spec, list(extra), chrom_sizes, chroms, check_genome)
    bin_size, pad = spec["bin_size"], spec["pad"]
    if window is None:  # long windows amortise the context padding; the output does not depend on the window
        window = max(spec["window"], -(-INFERENCE_WINDOW // bin_size) * bin_size)
    window = int(window)
    if window <= 0 or window % bin_size:
        msg = f"window must be a positive multiple of the model's bin size ({bin_size} bp), got {window}."
        raise ValueError(msg)
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size}."
        raise ValueError(msg)

    if spec["depth_scaling"] == "mean":
        if input_means is None:
            input_means = [bigwig_mean(noisy), *(bigwig_mean(p) for p in extra)]
        if len(input_means) != 1 + len(extra):
            msg = f"input_means needs one mean per input track (noisy + {len(extra)} extra), got {len(input_means)}."
            raise ValueError(msg)
        in_scale, extra_scales = float(input_means[0]), [float(m) for m in input_means[1:]]
        out_scale = in_scale * spec["depth_ratio"]
    else:
        in_scale, extra_scales, out_scale = spec["noisy_mean"], list(spec["extra_means"]), spec["clean_mean"]
    # the clean depth of the input; the track scale (or calibration) is applied by predict_windows
    background = out_scale * float(spec.get("track_scale", 1.0))
    if in_scale <= 0:
        msg = f"Noisy bigWig '{noisy.name}' has no positive coverage."
        raise ValueError(msg)

    device = _resolve_device(accelerator, devices)
    model.module.to(device)
    model.module.eval()
    smooth = int(spec.get("smooth", 0))
    span = window + 2 * pad
    n_channels = spec["n_channels"]
    # The prediction for an all-zero input is the same everywhere (pad covers the receptive field).
    empty_track, empty_probs = model.predict_windows(np.zeros((1, n_channels, span), np.float32), calibrated=True)
    empty_track = _round(empty_track[0, pad : pad + window] * out_scale, decimals).astype(np.float32)
    empty_probs = np.round(empty_probs[0, pad : pad + window], 3).astype(np.float32)

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    ext = "npy" if shard else "bw"
    paths = {k: Path(f"{out_prefix}.{k}") for k in (f"track.{ext}", f"peakprob.{ext}", "peaks.narrowPeak")}
    if shard and len(sizes) != 1:
        msg = "A shard is one chromosome."
        raise ValueError(msg)
    n_windows = sum(len(tile(s, window)) for s in sizes.values())
    readers = [BigWigReader(noisy)] + [BigWigReader(p) for p in extra]
    scales = [in_scale, *extra_scales]
    peak_tables = []
    n_run = 0
    bar = tqdm(total=n_windows, desc="denoise", unit="win", disable=not progress)
    try:
        with contextlib.ExitStack() as outputs:
            out_track, out_prob = (
                cast(  # mypy joins the two context managers to `object`; both have add(chrom, values, start=)
                    "_ArrayShard | BigWigWriter",
                    outputs.enter_context(
                        _ArrayShard(paths[f"{k}.npy"], sizes)
                        if shard
                        else BigWigWriter(paths[f"{k}.bw"], sizes, zoom_levels=zoom_levels)
                    ),
                )
                for k in ("track", "peakprob")
            )
            for chrom, size in sizes.items():
                caller = PeakStream(chrom, threshold=threshold, merge_gap=merge_gap, min_length=min_length)
                starts = tile(size, window)
                for b in range(0, len(starts), batch_size):
                    batch_starts = starts[b : b + batch_size]
                    x = np.zeros((len(batch_starts), n_channels, span), np.float32)
                    for i, s in enumerate(batch_starts):
                        for c, (reader, scale) in enumerate(zip(readers, scales, strict=True)):
                            raw = read_window(reader, chrom, int(s) - pad, int(s) + window + pad)
                            if c == 0:
                                raw = moving_average(raw, smooth)
                            x[i, c] = input_transform(raw, scale)
                    busy = np.flatnonzero(x.reshape(len(batch_starts), -1).any(axis=1))
                    if busy.size:
                        track, probs = model.predict_windows(x[busy], calibrated=True)
                        n_run += busy.size
                    for i, s in enumerate(batch_starts):
                        s = int(s)
                        n = min(window, size - s)
                        j = np.searchsorted(busy, i)
                        if j < busy.size and busy[j] == i:
                            t = _round(track[j, pad : pad + n] * out_scale, decimals).astype(np.float32)
                            p = np.round(probs[j, pad : pad + n], 3).astype(np.float32)
                        else:
                            t, p = empty_track[:n], empty_probs[:n]
                        out_track.add(chrom, t, start=s)
                        out_prob.add(chrom, p, start=s)
                        caller.feed(s, p, t)
                    bar.update(len(batch_starts))
                peak_tables.append(caller.finish())
    finally:
        bar.close()
        for r in readers:
            r.close()
    peaks = pd.concat(peak_tables, ignore_index=True)
    n_called = len(peaks)
    if blacklist is not None:
        peaks = drop_blacklisted(peaks, blacklist)
    peaks = score_peaks(
        peaks,
        background=background,
        fdr_grid=spec.get("fdr_grid"),
        fdr=spec.get("fdr"),
        n_fdr=int(spec.get("fdr_n_peaks", 0)),
    )
    peaks = name_peaks(peaks)
    if not shard:
        write_narrowpeak(peaks, paths["peaks.narrowPeak"]) if len(peaks) else _write_empty(paths["peaks.narrowPeak"])
    seconds = time.perf_counter() - t0
    n_bases = int(sum(sizes.values()))
    logger.info(
        "Denoised %s bp of '%s' in %.1f s (%.2f M bp/s, %d of %d windows run), %d peaks",
        f"{n_bases:,}",
        noisy.name,
        seconds,
        n_bases / seconds / 1e6,
        n_run,
        n_windows,
        len(peaks),
    )
    params = {
        "threshold": threshold,
        "merge_gap": merge_gap,
        "min_length": min_length,
        "window": window,
        "pad": pad,
        "batch_size": batch_size,
        "decimals": decimals,
        "input_scale": in_scale,
        "output_scale": out_scale,
        "windows_run": int(n_run),
        "windows_total": int(n_windows),
        "peaks_blacklisted": int(n_called - len(peaks)),
    }
    return DenoiseResult(
        track=paths[f"track.{ext}"],
        peakprob=paths[f"peakprob.{ext}"],
        peaks=paths["peaks.narrowPeak"],
        peak_table=peaks,
        n_bases=n_bases,
        seconds=seconds,
        params=params,
    )


class _ArrayShard:
    """A one-chromosome track written as a raw float32 ``.npy`` (written to a temporary name, renamed on success)."""

    def __init__(self, path: Path, sizes: Mapping[str, int]):
        ((self.chrom, size),) = sizes.items()
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".part.npy")
        self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32, shape=(size,))

    def add(self, chrom: str, values: np.ndarray, start: int = 0) -> None:
        self._array[start : start + len(values)] = values

    def __enter__(self) -> _ArrayShard:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self._array.flush()
        del self._array
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def _write_empty(path: Path) -> None:
    from chromtools._utils import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text("")


@doc_params
def denoise_groups(
    data,
    model: TrackDenoiser | PathLike,
    groupby: str,
    *,
    out_dir: PathLike,
    groups: Sequence[str] | None = None,
    n_cells: int | None = None,
    fragments: PathLike | None = None,
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    smooth: int = 200,
    threshold: float | None = None,
    merge_gap: int | None = None,
    min_length: int | None = None,
    blacklist: PathLike | None = None,
    check_genome: bool = True,
    key_added: str = "ct_denoise",
    random_state: int = 0,
    mod: str | None = None,
    copy: bool = False,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = True,
):
    """Denoise the pseudobulk coverage of every cell group and call its peaks.

    Builds cut-site coverage per group from the fragments (:func:`chromtools.io.pseudobulk_coverage`),
    runs :func:`denoise` on each, and records everything in the AnnData.

    Parameters
    ----------
    {data}
    model
        A trained :class:`~chromtools.models.TrackDenoiser` or its folder.
    groupby
        Column of ``obs`` with the groups (cell types, clusters ...).
    out_dir
        Folder for the per-group coverage, denoised tracks and peaks.
    groups
        Groups to denoise; default all.
    n_cells
        Use only this many random cells per group (e.g. to match the model's training depth).
    fragments
        Fragments file; default ``uns['files']['fragments']``.
    chrom_sizes
        Genome sizes (e.g. ``TrainingPair.chrom_sizes``); default inferred from the whole fragments
        file, all cells together, as :func:`chromtools.tl.training_pair` does.
    chroms
        Chromosomes to process.
    smooth
        Cut-site window (bp) of the coverage, as used for the model's training tracks.
    threshold, merge_gap, min_length, blacklist
        Peak calling rules of :func:`denoise` (default: the model's).
    check_genome
        Refuse chromosomes whose length differs from the model's training genome (pass ``False``
        to apply a model trained on another assembly).
    {key_added}
    {random_state}
    {mod}
    {copy}
    {accelerator}
    {devices}
    {progress}

    Returns
    -------
    Writes ``adata.uns['ct_denoise' | key_added]`` with ``params``, ``chrom_sizes`` (the genome
    the tracks were written on: a DataFrame indexed by chromosome with a ``size`` column, which
    :func:`chromtools.io.read_chrom_sizes` reads back into a dict), ``outputs`` (a DataFrame
    indexed by group: cells, fragments, coverage/denoised/probability/peak paths, peak count,
    throughput) and ``peaks`` (every group's peaks in one table, its first column ``group``; a
    table rather than a dict by group, because group names such as ``'G/M prog'`` cannot be keys in
    an h5ad file). For a MuData the modality ``mod`` is written.
    Returns the object when ``copy=True``, else ``None``.
    """
    from chromtools._utils import get_modality
    from chromtools.io import pseudobulk_coverage

    data = data.copy() if copy else data
    adata = get_modality(data, mod)
    if not isinstance(model, TrackDenoiser):
        model = TrackDenoiser.load(model)
    out_dir = Path(out_dir)
    coverage = pseudobulk_coverage(
        data,
        groupby,
        out_dir / "coverage",
        fragments=fragments,
        groups=groups,
        n_cells=n_cells,
        chrom_sizes=chrom_sizes,
        chroms=chroms,
        smooth=smooth,
        random_state=random_state,
        mod=mod,
        progress=progress,
    )
    rows, tables = [], []
    for group, row in coverage.iterrows():
        res = denoise(
            row["path"],
            model,
            out_dir / "denoised" / Path(row["path"]).stem,
            chroms=chroms,
            threshold=threshold,
            merge_gap=merge_gap,
            min_length=min_length,
            blacklist=blacklist,
            check_genome=check_genome,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
        )
        rows.append(
            {
                "group": str(group),
                "n_cells": int(row["n_cells"]),
                "n_fragments": int(row["n_fragments"]),
                "coverage": str(row["path"]),
                "track": str(res.track),
                "peakprob": str(res.peakprob),
                "peaks": str(res.peaks),
                "n_peaks": len(res.peak_table),
                "bases_per_second": res.bases_per_second,
            }
        )
        table = res.peak_table.copy()
        table["chrom"] = table["chrom"].astype(str)
        table.insert(0, "group", str(group))
        tables.append(table)
    peaks = pd.concat(tables, ignore_index=True)
    peaks["group"] = pd.Categorical(peaks["group"], categories=[str(g) for g in coverage.index])
    adata.uns[key_added] = {
        "params": {
            "groupby": groupby,
            "groups": [str(g) for g in coverage.index],
            "n_cells": -1 if n_cells is None else int(n_cells),
            "smooth": int(smooth),
            "threshold": float(res.params["threshold"]),
            "merge_gap": int(res.params["merge_gap"]),
            "min_length": int(res.params["min_length"]),
            "blacklist": "" if blacklist is None else str(blacklist),
            "check_genome": bool(check_genome),
            "random_state": int(random_state),
            "model_arch": model.spec_["arch"],
            "out_dir": str(out_dir),
        },
        # a table, not a dict by chromosome: contig names may hold '/', which cannot be an h5ad key
        "chrom_sizes": _chrom_sizes_table(coverage.attrs["chrom_sizes"]),
        "outputs": pd.DataFrame(rows).set_index("group"),
        # one table, not a dict by group: group names such as 'G/M prog' cannot be h5ad keys
        "peaks": peaks,
    }
    return data if copy else None
