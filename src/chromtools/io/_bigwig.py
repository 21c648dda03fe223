"""bigWig reading into NumPy and streaming, run-length-encoded writing with pyBigWig."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import pyBigWig

from chromtools._utils import PathLike, atomic_output

from ._sizes import ChromSizes, is_bigwig, read_chrom_sizes

logger = logging.getLogger(__name__)

#: Largest number of runs handed to pyBigWig in one call; bounds the temporary Python-side copies.
_ENTRY_BLOCK = 1 << 20


class BigWigReader:
    """Open a bigWig once and read many intervals from it as NumPy arrays.

    Parameters
    ----------
    path
        The bigWig file.

    Examples
    --------
    >>> with ct.io.BigWigReader("noisy.bw") as bw:
    ...     x = bw.values("chr1", 0, 50_000)
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.exists():
            msg = f"bigWig file '{self.path}' does not exist."
            raise FileNotFoundError(msg)
        if not is_bigwig(self.path):
            msg = f"'{self.path}' is not a bigWig file (wrong magic number); convert bedGraph with ct.io.write_bigwig."
            raise ValueError(msg)
        try:
            self._bw = pyBigWig.open(str(self.path))
        except RuntimeError as err:
            msg = f"bigWig file '{self.path}' could not be opened ({err}); it may be truncated or corrupt."
            raise ValueError(msg) from None
        if self._bw is None or not self._bw.isBigWig():
            msg = f"'{self.path}' could not be read as a bigWig file."
            raise ValueError(msg)
        self.chrom_sizes: ChromSizes = dict(self._bw.chroms())
        if not self.chrom_sizes:
            msg = f"bigWig file '{self.path}' lists no chromosomes in its header; it is empty."
            raise ValueError(msg)

    def _check(self, chrom: str, start: int, end: int | None) -> tuple[int, int]:
        if chrom not in self.chrom_sizes:
            msg = (
                f"bigWig '{self.path.name}' has no chromosome '{chrom}' "
                f"(it has {list(self.chrom_sizes)[:10]}{' ...' if len(self.chrom_sizes) > 10 else ''}); "
                "pass one of these or use a track of the right genome."
            )
            raise KeyError(msg)
        size = self.chrom_sizes[chrom]
        end = size if end is None else int(end)
        start = int(start)
        if start < 0 or end > size or start > end:
            msg = (
                f"Interval {chrom}:{start}-{end} is not inside {chrom} (length {size:,}) of '{self.path.name}'; "
                "use 0 <= start <= end <= chromosome length."
            )
            raise ValueError(msg)
        return start, end

    def values(
        self, chrom: str, start: int = 0, end: int | None = None, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-base values of ``chrom:[start, end)`` as float32; bases without data are 0.

        Parameters
        ----------
        chrom, start, end
            0-based, half-open interval; ``end=None`` reads to the chromosome end.
        out
            Optional float32 array of length ``end - start`` to fill instead of allocating.
        """
        start, end = self._check(chrom, start, end)
        if end == start:
            return np.zeros(0, np.float32) if out is None else out
        vals = self._bw.values(chrom, start, end, numpy=True)
        if out is None:
            out = vals.astype(np.float32, copy=False)
        else:
            out[:] = vals
        np.nan_to_num(out, copy=False, nan=0.0)
        return out

    def intervals(
        self, chrom: str, start: int = 0, end: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored runs overlapping ``chrom:[start, end)`` as ``(starts, ends, values)`` arrays."""
        start, end = self._check(chrom, start, end)
        runs = self._bw.intervals(chrom, start, end) or ()
        if not runs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        arr = np.asarray(runs, dtype=np.float64)
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].astype(np.float32)

    def is_empty(self) -> bool:
        """Whether the file stores no data at all."""
        return int(self._bw.header().get("nBasesCovered", 0)) == 0

    def close(self) -> None:
        """Close the file."""
        if getattr(self, "_bw", None) is not None:
            self._bw.close()
            self._bw = None

    def __enter__(self) -> BigWigReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def read_bigwig(path: PathLike, chrom: str, start: int = 0, end: int | None = None) -> np.ndarray:
    """Read per-base values of one interval of a bigWig (0-based, half-open; missing → 0).

    For many reads from the same file, keep a :class:`BigWigReader` open instead.
    """
    with BigWigReader(path) as bw:
        return bw.values(chrom, start, end)


def read_window(bw: BigWigReader, chrom: str, start: int, end: int) -> np.ndarray:
    """Per-base values of ``chrom:[start, end)`` from an open reader, zero outside the chromosome.

    Unlike :meth:`BigWigReader.values`, the window may overhang either end of the chromosome
    (the overhang reads as 0), which is what fixed-size model windows at chromosome ends need.

    Parameters
    ----------
    bw
        An open :class:`BigWigReader`.
    chrom, start, end
        The window, 0-based and half-open; ``start`` may be negative and ``end`` past the end.

    Returns
    -------
    float32 values, ``end - start`` of them.
    """
    size = bw.chrom_sizes[chrom]
    out = np.zeros(end - start, np.float32)
    a, b = max(start, 0), min(end, size)
    if a < b:
        bw.values(chrom, a, b, out=out[a - start : b - start])
    return out


def bigwig_mean(path: PathLike, chroms: Sequence[str] | None = None) -> float:
    """Mean value per base of a bigWig over ``chroms`` (default: every chromosome of its header).

    Reads the stored runs, not per-base arrays, so it is fast on whole genomes. The denoiser
    divides its input tracks by this (depth scaling); the ratio of two tracks' means is their
    sequencing-depth ratio.

    Parameters
    ----------
    path
        bigWig file.
    chroms
        Chromosomes to average over; bases without data count as 0.

    Returns
    -------
    Sum of values over the chromosomes divided by their total length.
    """
    with BigWigReader(path) as bw:
        use = list(bw.chrom_sizes) if chroms is None else list(chroms)
        total = 0.0
        for c in use:
            s, e, v = bw.intervals(c)
            total += float(np.dot(e - s, v.astype(np.float64)))
        length = sum(bw.chrom_sizes[c] for c in use)
    return total / max(length, 1)


def runs_from_values(values: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode per-base values, dropping zero and NaN runs.

    Returns ``(starts, ends, values)`` with coordinates shifted by ``offset``; values are float32,
    the precision bigWig stores.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 1:
        msg = f"Track values must be one-dimensional, got shape {v.shape}."
        raise ValueError(msg)
    if v.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    change = np.flatnonzero(v[1:] != v[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [v.size]))
    vals = v[starts]
    keep = (vals != 0) & ~np.isnan(vals)
    return starts[keep] + offset, ends[keep] + offset, vals[keep]


class BigWigWriter:
    """Stream a bigWig to disk chromosome by chromosome, without a bedGraph detour.

    Entries must arrive in the order of ``chrom_sizes`` and, within a chromosome, by position.
    Values are run-length encoded; zero and NaN bases are not stored (they read back as 0).
    The file is written to a temporary path beside ``path`` and renamed on :meth:`close`; if
    the writer is used as a context manager and the block raises, nothing is left behind.

    Parameters
    ----------
    path
        Output bigWig.
    chrom_sizes
        Chromosome sizes (mapping, ``.sizes`` file or bigWig); they define the header and order.
    zoom_levels
        Number of zoom levels pyBigWig precomputes (for fast browsing in genome browsers).

    Examples
    --------
    >>> with ct.io.BigWigWriter("out.bw", {"chr1": 1000}) as out:
    ...     out.add("chr1", np.ones(1000))
    """

    def __init__(self, path: PathLike, chrom_sizes: PathLike | Mapping[str, int], *, zoom_levels: int = 10):
        self.path = Path(path)
        self.chrom_sizes = read_chrom_sizes(chrom_sizes)
        self._order = {c: i for i, c in enumerate(self.chrom_sizes)}
        self._ctx = atomic_output(self.path)
        self._tmp = self._ctx.__enter__()
        self._bw = pyBigWig.open(str(self._tmp), "w")
        if self._bw is None:
            self._abort()
            msg = f"Could not create bigWig '{self.path}'."
            raise OSError(msg)
        self._bw.addHeader(list(self.chrom_sizes.items()), maxZooms=int(zoom_levels))
        self._chrom_idx = -1
        self._pos = 0
        self.n_runs = 0

    def _advance(self, chrom: str, start: int) -> None:
        if chrom not in self._order:
            msg = (
                f"Chromosome '{chrom}' is not in the chromosome sizes of bigWig '{self.path.name}'; "
                "add it to chrom_sizes or drop it."
            )
            raise KeyError(msg)
        idx = self._order[chrom]
        if idx < self._chrom_idx:
            msg = (
                f"'{chrom}' was written after a later chromosome of the sizes order; write chromosomes in the order "
                f"of chrom_sizes ({list(self.chrom_sizes)[:5]} ...)."
            )
            raise ValueError(msg)
        if idx > self._chrom_idx:
            self._chrom_idx, self._pos = idx, 0
        if start < 0 or start < self._pos:
            msg = f"Entries for '{chrom}' must be written by position: {start} comes after {self._pos}."
            raise ValueError(msg)

    def add(self, chrom: str, values: np.ndarray, start: int = 0) -> None:
        """Add per-base ``values`` for ``chrom`` starting at ``start`` (0-based)."""
        values = np.asarray(values)
        self._advance(chrom, start)
        end = start + values.shape[0]
        if end > self.chrom_sizes[chrom]:
            msg = f"Values for {chrom}:{start}-{end} run past the chromosome end ({self.chrom_sizes[chrom]:,})."
            raise ValueError(msg)
        starts, ends, run_values = runs_from_values(values, offset=start)
        if starts.size > values.shape[0] // 4:
            # values that change at most bases (a denoised track): fixed-step entries, one value per
            # base, cost a third of the time of one bedGraph-style entry per run
            self._bw.addEntries(chrom, start, values=values.astype(np.float64), span=1, step=1)
            self.n_runs += starts.size
        else:
            self._write_runs(chrom, starts, ends, run_values)
        self._pos = end

    def add_intervals(self, chrom: str, starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> None:
        """Add sorted, non-overlapping runs ``[starts, ends)`` with ``values`` for ``chrom``."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        values = np.asarray(values, dtype=np.float32)
        if not (starts.shape == ends.shape == values.shape):
            msg = "starts, ends and values must have the same length."
            raise ValueError(msg)
        if starts.size == 0:
            return
        self._advance(chrom, int(starts[0]))
        size = self.chrom_sizes[chrom]
        if ends[-1] > size or np.any(ends <= starts) or np.any(starts[1:] < ends[:-1]):
            msg = (
                f"Runs for '{chrom}' must be sorted, non-overlapping, non-empty and inside 0-{size:,}; "
                "sort them by start and merge overlaps first."
            )
            raise ValueError(msg)
        self._write_runs(chrom, starts, ends, values)
        self._pos = int(ends[-1])

    def _write_runs(self, chrom: str, starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        for lo in range(0, starts.size, _ENTRY_BLOCK):
            hi = min(lo + _ENTRY_BLOCK, starts.size)
            names = [chrom] * (hi - lo)
            self._bw.addEntries(names, starts[lo:hi], ends=ends[lo:hi], values=values[lo:hi])
        self.n_runs += starts.size

    def close(self) -> Path:
        """Finish the file (zoom levels, index) and move it to its final path."""
        if self._bw is None:
            return self.path
        self._bw.close()
        self._bw = None
        self._ctx.__exit__(None, None, None)
        return self.path

    def _abort(self) -> None:
        if getattr(self, "_bw", None) is not None:
            try:
                self._bw.close()
            except RuntimeError:  # pragma: no cover - pyBigWig error while closing a broken file
                pass
            self._bw = None
        if getattr(self, "_ctx", None) is not None:
            try:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass
            del self._ctx  # every later use goes through getattr() or an open _bw

    def __enter__(self) -> BigWigWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def __del__(self) -> None:
        # A writer dropped without close() must not leave a temporary file behind.
        if getattr(self, "_bw", None) is not None:
            self._abort()


def write_bigwig(
    path: PathLike,
    tracks: Mapping[str, np.ndarray],
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    *,
    zoom_levels: int = 10,
) -> Path:
    """Write per-base tracks (one array per chromosome, starting at 0) to a bigWig.

    Parameters
    ----------
    path
        Output bigWig; written atomically.
    tracks
        Chromosome → per-base values from position 0. Arrays may be shorter than the chromosome.
    chrom_sizes
        Header sizes; default: the array lengths.
    zoom_levels
        Number of precomputed zoom levels.
    """
    sizes = read_chrom_sizes(chrom_sizes) if chrom_sizes is not None else {c: len(v) for c, v in tracks.items()}
    unknown = [c for c in tracks if c not in sizes]
    if unknown:
        msg = f"Tracks for {unknown} have no entry in chrom_sizes; add them or drop these tracks."
        raise KeyError(msg)
    with BigWigWriter(path, sizes, zoom_levels=zoom_levels) as out:
        for chrom in sizes:
            if chrom in tracks:
                out.add(chrom, tracks[chrom])
    return Path(path)
