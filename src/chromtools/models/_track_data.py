"""Training windows from (noisy, clean, peaks) bigWig/BED triples, streamed from disk."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from scvi import REGISTRY_KEYS
from torch.utils.data import DataLoader, Dataset

from chromtools._utils import PathLike, moving_average
from chromtools.io import (
    BigWigReader,
    bigwig_mean,
    check_chrom_sizes,
    parse_region,
    read_chrom_sizes,
    read_peaks,
    read_window,
)
from chromtools.models._distributed import shard_sampler

logger = logging.getLogger(__name__)

# Keys of the tensors a batch carries (the module reads them by these names); the input is
# scvi-tools' own X key, as in the reference models.
X_KEY = REGISTRY_KEYS.X_KEY
TARGET_KEY = "target"
PEAKS_KEY = "peaks"
MASK_KEY = "mask"


class PeakMask:
    """Per-base 0/1 peak labels from a BED/narrowPeak file, painted into any interval on demand."""

    def __init__(self, path: PathLike, chrom_sizes: dict[str, int]):
        peaks = read_peaks(path)
        self.path = Path(path)
        self._by_chrom: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for chrom, df in peaks.groupby("chrom", sort=False):
            df = df.sort_values("start")
            self._by_chrom[str(chrom)] = (df["start"].to_numpy(np.int64), df["end"].to_numpy(np.int64))
        self.chroms = set(self._by_chrom)
        self.n_peaks = len(peaks)
        self.covered = sorted(self.chroms & set(chrom_sizes))

    def paint(self, chrom: str, start: int, end: int) -> np.ndarray:
        """0/1 float32 labels of ``chrom:[start, end)`` (positions outside the chromosome are 0)."""
        out = np.zeros(end - start, np.float32)
        if chrom not in self._by_chrom:
            return out
        starts, ends = self._by_chrom[chrom]
        lo = np.searchsorted(ends, start, side="right")
        hi = np.searchsorted(starts, end, side="left")
        for s, e in zip(starts[lo:hi], ends[lo:hi], strict=True):
            out[max(s, start) - start : min(e, end) - start] = 1.0
        return out

    def count(self, regions: Sequence[str]) -> int:
        """Number of labelled peaks overlapping ``regions`` (chromosomes or ``'chr1:100-200'`` strings)."""
        n = 0
        for chrom, start, end in (parse_region(r) for r in regions):
            if chrom not in self._by_chrom:
                continue
            starts, ends = self._by_chrom[chrom]
            if start is None:
                n += starts.size
            else:
                n += int(np.sum((ends > start) & (starts < end)))
        return n


@dataclass
class TrackPair:
    """One training sample: a noisy track, its clean counterpart, clean peak labels, extra inputs."""

    noisy: Path
    clean: Path
    peaks: Path
    extra: tuple[Path, ...] = ()
    chrom_sizes: dict[str, int] = field(default_factory=dict)
    noisy_mean: float = 0.0
    clean_mean: float = 0.0
    extra_means: tuple[float, ...] = ()
    labels: PeakMask = field(kw_only=True)  # the clean peaks as a mask; make_setup always sets it


def input_transform(x: np.ndarray, scale: float) -> np.ndarray:
    """The :class:`TrackDenoiser`'s input transform: depth-scale and log-compress a coverage track.

    Training windows and :func:`chromtools.tl.denoise` both pass their input tracks through it,
    so a model sees the same numbers at inference as in training.

    Parameters
    ----------
    x
        Coverage values (negative values count as 0).
    scale
        Depth divisor, e.g. the track's :func:`chromtools.io.bigwig_mean`.

    Returns
    -------
    ``log1p(max(x, 0) / scale)`` as float32.
    """
    return np.log1p(np.maximum(x, 0) / scale).astype(np.float32)


@dataclass
class TrackSetup:
    """Training pairs, the chromosome split and the windows drawn from them.

    Made by :meth:`chromtools.models.TrackDenoiser.setup_tracks`; holds no signal in memory:
    windows are read from the bigWigs when a batch is built.
    """

    pairs: list[TrackPair]
    window: int
    train_chroms: list[str]  # regions, 'chr1' or 'chr1:0-8000000'
    val_chroms: list[str]
    holdout_chroms: list[str]
    train_windows: np.ndarray  # rows: pair index, chromosome index, start, region start, region end
    val_windows: np.ndarray
    chrom_names: list[str]
    skip_empty: bool
    smooth: int = 0

    @property
    def n_channels(self) -> int:
        return 1 + len(self.pairs[0].extra)

    def scales(self, pair: TrackPair, depth_scaling: str = "mean") -> tuple[float, float, tuple[float, ...]]:
        """Divisors of the noisy, clean and extra tracks of ``pair``.

        ``'mean'`` depth scaling divides each track by its own mean coverage; ``'none'`` divides every
        pair by the means averaged over all training pairs, which is what inference does with it.
        """
        if depth_scaling == "mean":
            return pair.noisy_mean, pair.clean_mean, pair.extra_means
        extra = tuple(float(np.mean(m)) for m in zip(*[p.extra_means for p in self.pairs], strict=True))
        return (
            float(np.mean([p.noisy_mean for p in self.pairs])),
            float(np.mean([p.clean_mean for p in self.pairs])),
            extra,
        )

    @property
    def genome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out.update(p.chrom_sizes)
        return out

    def summary(self) -> pd.DataFrame:
        """Windows and labelled peaks per split."""
        rows = []
        for name, chroms, wins in (
            ("train", self.train_chroms, self.train_windows),
            ("validation", self.val_chroms, self.val_windows),
            ("holdout", self.holdout_chroms, np.zeros((0, 5), np.int64)),
        ):
            rows.append(
                {
                    "split": name,
                    "regions": ",".join(chroms),
                    "windows": len(wins),
                    "peaks": sum(p.labels.count(chroms) for p in self.pairs),
                }
            )
        return pd.DataFrame(rows).set_index("split")


def make_setup(
    noisy: Sequence[PathLike],
    clean: Sequence[PathLike],
    peaks: Sequence[PathLike],
    *,
    extra: Sequence[Sequence[PathLike]] | None,
    val_chroms: Sequence[str],
    holdout_chroms: Sequence[str],
    train_chroms: Sequence[str] | None,
    window: int,
    skip_empty: bool,
    smooth: int,
) -> TrackSetup:
    """Check the training triples and cut their chromosomes into windows (see ``TrackDenoiser.setup_tracks``)."""
    if not (len(noisy) == len(clean) == len(peaks)):
        msg = f"Give one clean track and one peaks file per noisy track (got {len(noisy)}, {len(clean)}, {len(peaks)})."
        raise ValueError(msg)
    if not noisy:
        msg = "Give at least one (noisy, clean, peaks) training triple."
        raise ValueError(msg)
    extra = [tuple(e) for e in extra] if extra is not None else [() for _ in noisy]
    if len(extra) != len(noisy) or len({len(e) for e in extra}) != 1:
        msg = "extra must give the same number of extra input tracks for every training pair."
        raise ValueError(msg)
    if window <= 0:
        msg = f"window must be positive, got {window}."
        raise ValueError(msg)
    pairs = []
    for n, c, p, e in zip(noisy, clean, peaks, extra, strict=True):
        sizes = read_chrom_sizes(n)
        check_chrom_sizes(
            read_chrom_sizes(c),
            sizes,
            found_name=f"clean bigWig '{Path(c).name}'",
            expected_name=f"noisy bigWig '{Path(n).name}'",
        )
        for t in e:
            check_chrom_sizes(
                read_chrom_sizes(t),
                sizes,
                found_name=f"extra track '{Path(t).name}'",
                expected_name=f"noisy bigWig '{Path(n).name}'",
            )
        labels = PeakMask(p, sizes)
        if not labels.covered:
            msg = (
                f"Peaks file '{Path(p).name}' has no peak on the chromosomes of '{Path(n).name}' "
                f"(peaks on {sorted(labels.chroms)[:5]}, tracks on {list(sizes)[:5]}); use the peaks of the same sample and genome."
            )
            raise ValueError(msg)
        with BigWigReader(n) as bw:
            if bw.is_empty():
                msg = f"Noisy bigWig '{Path(n).name}' stores no data; check the file."
                raise ValueError(msg)
        pair = TrackPair(
            noisy=Path(n),
            clean=Path(c),
            peaks=Path(p),
            extra=tuple(Path(t) for t in e),
            chrom_sizes=sizes,
            noisy_mean=bigwig_mean(n),
            clean_mean=bigwig_mean(c),
            extra_means=tuple(bigwig_mean(t) for t in e),
            labels=labels,
        )
        if pair.noisy_mean <= 0 or pair.clean_mean <= 0:
            msg = f"Track pair '{Path(n).name}'/'{Path(c).name}' has no positive coverage."
            raise ValueError(msg)
        pairs.append(pair)

    genome: dict[str, int] = {}
    for pair in pairs:
        genome.update(pair.chrom_sizes)
    train, val, holdout = split_regions(genome, train_chroms, val_chroms, holdout_chroms)
    names = list(genome)
    index = {c: i for i, c in enumerate(names)}

    def windows_for(regions: list[tuple[str, int, int]]) -> np.ndarray:
        rows = []
        for pi, pair in enumerate(pairs):
            with BigWigReader(pair.noisy) as bw:
                for chrom, lo, hi in regions:
                    if chrom not in pair.chrom_sizes:
                        continue
                    for start in range(lo, hi, window):
                        if skip_empty:
                            s, _, v = bw.intervals(chrom, int(start), int(min(start + window, hi)))
                            if s.size == 0 or not np.any(v != 0):
                                continue
                        rows.append((pi, index[chrom], start, lo, hi))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 5)

    train_windows = windows_for(train)
    val_windows = windows_for(val)
    if len(train_windows) == 0:
        msg = f"No non-empty training window in {format_regions(train)}; the noisy tracks hold no coverage there."
        raise ValueError(msg)
    if len(val_windows) == 0:
        msg = f"No non-empty validation window in {format_regions(val)}; pick validation regions with coverage."
        raise ValueError(msg)
    return TrackSetup(
        pairs=pairs,
        window=window,
        train_chroms=format_regions(train, genome),
        val_chroms=format_regions(val, genome),
        holdout_chroms=format_regions(holdout, genome),
        train_windows=train_windows,
        val_windows=val_windows,
        chrom_names=names,
        skip_empty=skip_empty,
        smooth=smooth,
    )


Interval = tuple[str, int, int]


def _resolve(regions: Sequence[str], genome: dict[str, int], what: str) -> list[Interval]:
    """Parse chromosome / ``'chr1:100-200'`` strings into intervals clipped to the genome."""
    out = []
    for r in regions:
        chrom, start, end = parse_region(r)
        if chrom not in genome:
            msg = f"{what} region {r!r}: chromosome '{chrom}' is not in the tracks' chromosome sizes ({list(genome)[:10]})."
            raise KeyError(msg)
        if start is None or end is None:  # parse_region gives both or neither
            start, end = 0, genome[chrom]
        else:
            end = min(end, genome[chrom])
        if start >= end:
            msg = f"{what} region {r!r} lies past the end of {chrom} ({genome[chrom]:,} bp)."
            raise ValueError(msg)
        out.append((chrom, int(start), int(end)))
    return sorted(out, key=lambda t: (list(genome).index(t[0]), t[1]))


def _overlap(a: list[Interval], b: list[Interval]) -> Interval | None:
    for c, s, e in a:
        for c2, s2, e2 in b:
            if c == c2 and s < e2 and s2 < e:
                return (c, max(s, s2), min(e, e2))
    return None


def _subtract(genome: dict[str, int], used: list[Interval]) -> list[Interval]:
    """The parts of the genome not covered by ``used``."""
    out = []
    for chrom, size in genome.items():
        pos = 0
        for _, s, e in sorted(u for u in used if u[0] == chrom):
            if s > pos:
                out.append((chrom, pos, s))
            pos = max(pos, e)
        if pos < size:
            out.append((chrom, pos, size))
    return out


def format_regions(regions: list[Interval], genome: dict[str, int] | None = None) -> list[str]:
    """``['chr1:0-8000000', 'chr2']``-style strings (a whole chromosome is written by its name when known)."""
    return [c if genome is not None and s == 0 and e == genome.get(c) else f"{c}:{s}-{e}" for c, s, e in regions]


def split_regions(
    genome: dict[str, int],
    train: Sequence[str] | None,
    val: Sequence[str],
    holdout: Sequence[str],
) -> tuple[list[Interval], list[Interval], list[Interval]]:
    """Three disjoint sets of genomic intervals: training, validation (model choice) and holdout.

    Each is a list of chromosomes or ``'chr1:8000000-10000000'`` regions; training defaults to
    every base that is neither validation nor holdout.
    """
    val_r = _resolve(val, genome, "Validation")
    hold_r = _resolve(holdout, genome, "Holdout")
    if not val_r:
        msg = "Give at least one validation chromosome or region (val_chroms=[...]): it chooses the best model."
        raise ValueError(msg)
    for (a_name, a), (b_name, b) in ((("validation", val_r), ("holdout", hold_r)),):
        clash = _overlap(a, b)
        if clash:
            msg = f"{clash[0]}:{clash[1]}-{clash[2]} is in both the {a_name} and the {b_name} regions; make them disjoint."
            raise ValueError(msg)
    if train is None:
        train_r = _subtract(genome, val_r + hold_r)
    else:
        train_r = _resolve(train, genome, "Training")
        clash = _overlap(train_r, val_r + hold_r)
        if clash:
            msg = (
                f"Training region {clash[0]}:{clash[1]}-{clash[2]} is also used for validation or holdout; "
                "the three splits must be disjoint."
            )
            raise ValueError(msg)
    if not train_r:
        msg = "No region is left for training; give fewer or smaller val_chroms/holdout_chroms."
        raise ValueError(msg)
    return train_r, val_r, hold_r


class TrackWindows(Dataset):
    """Padded windows of one split, read from the bigWigs on access.

    With ``jitter=True`` (training) every access shifts the window by a random multiple of
    ``bin_size`` (up to half a window), so each epoch sees new cuts of the training chromosomes,
    and reverses it with probability 1/2: coverage has no direction, so a reversed window is an
    equally valid example.
    """

    def __init__(
        self,
        setup: TrackSetup,
        windows: np.ndarray,
        *,
        pad: int,
        bin_size: int,
        jitter: bool,
        depth_scaling: str = "mean",
    ):
        self.setup = setup
        self.depth_scaling = depth_scaling
        self.windows = windows
        self.pad = pad
        self.bin_size = bin_size
        self.jitter = jitter
        self._readers: dict[Path, BigWigReader] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def _reader(self, path: Path) -> BigWigReader:
        # opened lazily, per process, so the dataset can be used by DataLoader workers
        if path not in self._readers:
            self._readers[path] = BigWigReader(path)
        return self._readers[path]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        pi, ci, start, region_start, region_end = (int(v) for v in self.windows[i])
        pair = self.setup.pairs[pi]
        chrom = self.setup.chrom_names[ci]
        window = self.setup.window
        if self.jitter:
            n_steps = max(window // (2 * self.bin_size), 1)
            start += int(torch.randint(-n_steps, n_steps + 1, (1,))) * self.bin_size
        lo, hi = start - self.pad, start + window + self.pad
        noisy_scale, clean_scale, extra_scales = self.setup.scales(pair, self.depth_scaling)
        channels = [
            input_transform(
                moving_average(read_window(self._reader(pair.noisy), chrom, lo, hi), self.setup.smooth), noisy_scale
            )
        ]
        for path, scale in zip(pair.extra, extra_scales, strict=True):
            channels.append(input_transform(read_window(self._reader(path), chrom, lo, hi), scale))
        target = read_window(self._reader(pair.clean), chrom, lo, hi) / clean_scale
        peaks = pair.labels.paint(chrom, lo, hi)
        pos = np.arange(lo, hi)
        # only the window's bases inside its own split region count, so jitter never trains on another split
        mask = ((pos >= max(start, region_start)) & (pos < min(start + window, region_end))).astype(np.float32)
        x = np.stack(channels)
        target = target.astype(np.float32)
        if self.jitter and bool(torch.rand(1) < 0.5):
            x, target, peaks, mask = x[:, ::-1], target[::-1], peaks[::-1], mask[::-1]
        return {
            X_KEY: torch.from_numpy(np.ascontiguousarray(x)),
            TARGET_KEY: torch.from_numpy(np.ascontiguousarray(target)),
            PEAKS_KEY: torch.from_numpy(np.ascontiguousarray(peaks)),
            MASK_KEY: torch.from_numpy(np.ascontiguousarray(mask)),
        }


class _WindowOptions(TypedDict):
    """The options a :class:`TrackDataModule` gives both of its :class:`TrackWindows`."""

    pad: int
    bin_size: int
    depth_scaling: str


class TrackDataModule(LightningDataModule):
    """Lightning data module over a :class:`TrackSetup` (training windows jittered, validation fixed)."""

    def __init__(
        self,
        setup: TrackSetup,
        *,
        pad: int,
        bin_size: int,
        batch_size: int = 8,
        jitter: bool = True,
        depth_scaling: str = "mean",
    ):
        super().__init__()
        if setup.window % bin_size or pad % bin_size:
            msg = f"window ({setup.window}) and pad ({pad}) must be multiples of the model's bin size ({bin_size})."
            raise ValueError(msg)
        self.setup_ = setup
        kw: _WindowOptions = {"pad": pad, "bin_size": bin_size, "depth_scaling": depth_scaling}
        self.train_set = TrackWindows(setup, setup.train_windows, jitter=jitter, **kw)
        self.val_set = TrackWindows(setup, setup.val_windows, jitter=False, **kw)
        self.batch_size = batch_size
        self.n_obs = len(self.train_set)
        self.n_train = len(self.train_set)
        self.n_val = len(self.val_set)

    def train_dataloader(self) -> DataLoader:
        # under DDP each process trains on its own share of the windows; validation stays whole on
        # every process, so that AUPRC, early stopping and the kept epoch agree across processes
        sampler = shard_sampler(self.train_set, shuffle=True, seed=int(torch.initial_seed() % 2**31))
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=False
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)


def pad_for(receptive_field: int, bin_size: int) -> int:
    """Smallest padding (a multiple of ``bin_size``) covering half the receptive field."""
    half = math.ceil(receptive_field / 2)
    return int(math.ceil(half / bin_size) * bin_size)
