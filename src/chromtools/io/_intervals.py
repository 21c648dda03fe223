"""BED, narrowPeak and bedGraph files as validated pandas DataFrames (0-based, half-open)."""

from __future__ import annotations

import gzip
import io
import logging
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from chromtools._utils import PathLike, atomic_output

from ._sizes import read_chrom_sizes

logger = logging.getLogger(__name__)

BED_COLUMNS = ["chrom", "start", "end", "name", "score", "strand"]
#: Columns of a narrowPeak table, in file order (what :func:`read_narrowpeak` returns).
NARROWPEAK_COLUMNS = ["chrom", "start", "end", "name", "score", "strand", "signalValue", "pValue", "qValue", "peak"]
BEDGRAPH_COLUMNS = ["chrom", "start", "end", "value"]
_HEADER_PREFIXES = ("#", "track", "browser")

IntervalFormat = Literal["bed", "narrowPeak", "bedGraph"]


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"))
    return open(path)


def _read_table(path: PathLike, kind: str, min_cols: int, max_cols: int | None) -> tuple[pd.DataFrame, int]:
    """Read a whitespace-separated interval table; return it and the number of header lines skipped."""
    path = Path(path)
    if not path.exists():
        msg = f"{kind} file '{path}' does not exist."
        raise FileNotFoundError(msg)
    try:
        with _open_text(path) as fh:
            text = fh.read()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        msg = f"{kind} file '{path}' could not be read ({err}); it may be corrupt or not a text/gzip file."
        raise ValueError(msg) from None
    lines = text.splitlines()
    n_header = 0
    while n_header < len(lines) and lines[n_header].startswith(_HEADER_PREFIXES):
        n_header += 1
    body = "\n".join(lines[n_header:])
    if not body.strip():
        msg = f"{kind} file '{path}' contains no intervals."
        raise ValueError(msg)
    df = pd.read_csv(
        io.StringIO(body), sep="\t", header=None, dtype=str, skip_blank_lines=False, keep_default_na=False, quoting=3
    )
    df = df.replace("", np.nan)
    blank = df.isna().all(axis=1).to_numpy()
    n_cols = df.notna().sum(axis=1).to_numpy()
    bad = (~blank) & ((n_cols < min_cols) | ((n_cols > max_cols) if max_cols else False))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        want = (
            f"{min_cols}"
            if max_cols == min_cols
            else f"at least {min_cols}"
            if max_cols is None
            else f"{min_cols}-{max_cols}"
        )
        msg = (
            f"{path}, line {n_header + i + 1}: expected {want} tab-separated columns for {kind}, got {n_cols[i]}: "
            f"{lines[n_header + i]!r}. Fix or remove the line."
        )
        raise ValueError(msg)
    # The index keeps each row's position in the body, so later errors can name the line.
    return df.loc[~blank], n_header


def _coerce_intervals(df: pd.DataFrame, path: PathLike | None, n_header: int = 0) -> pd.DataFrame:
    """Turn chrom/start/end into str/int64 columns and check 0 <= start < end; errors name the line."""
    where = f"{path}, line " if path is not None else "row "
    for col in ("start", "end"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num != np.floor(num))
        if bad.any():
            i = bad.to_numpy().nonzero()[0][0]
            msg = f"{where}{int(df.index[i]) + n_header + 1}: {col} {df[col].iloc[i]!r} is not an integer coordinate."
            raise ValueError(msg)
        df[col] = num.astype(np.int64)
    neg = (df["start"] < 0).to_numpy()
    if neg.any():
        i = neg.nonzero()[0][0]
        msg = f"{where}{int(df.index[i]) + n_header + 1}: start {df['start'].iloc[i]} is negative; coordinates are 0-based."
        raise ValueError(msg)
    inv = (df["end"] <= df["start"]).to_numpy()
    if inv.any():
        i = inv.nonzero()[0][0]
        msg = (
            f"{where}{int(df.index[i]) + n_header + 1}: interval {df['chrom'].iloc[i]}:{df['start'].iloc[i]}-"
            f"{df['end'].iloc[i]} is empty or inverted (end <= start); BED intervals are 0-based half-open, "
            "so end must be greater than start."
        )
        raise ValueError(msg)
    df["chrom"] = df["chrom"].astype(str)
    return df.reset_index(drop=True)


def _check_chroms(df: pd.DataFrame, chrom_sizes: PathLike | Mapping[str, int] | None, what: str) -> None:
    if chrom_sizes is None:
        return
    sizes = read_chrom_sizes(chrom_sizes)
    unknown = sorted(set(df["chrom"].unique()) - set(sizes))
    if unknown:
        msg = (
            f"{what} has intervals on chromosomes {unknown[:10]} that are not in the chromosome sizes; "
            "use sizes of the same genome or filter those intervals out."
        )
        raise KeyError(msg)
    over = df["end"].to_numpy() > df["chrom"].map(sizes).to_numpy()
    if over.any():
        i = over.nonzero()[0][0]
        row = df.iloc[i]
        msg = (
            f"{what}: interval {row['chrom']}:{row['start']}-{row['end']} runs past the chromosome end "
            f"({sizes[row['chrom']]:,}); use sizes of the same genome or clip the interval."
        )
        raise ValueError(msg)


def read_bed(path: PathLike, *, chrom_sizes: PathLike | Mapping[str, int] | None = None) -> pd.DataFrame:
    """Read a BED file (BED3 to BED6+, optionally gzipped).

    Parameters
    ----------
    path
        The BED file; ``track``, ``browser`` and ``#`` header lines are skipped.
    chrom_sizes
        If given, every interval must lie on a listed chromosome and inside it.

    Returns
    -------
    A DataFrame with columns ``chrom``, ``start``, ``end`` (0-based, half-open) and, when present,
    ``name``, ``score``, ``strand``; further columns are kept as ``col6``, ``col7`` ...
    """
    df, n_header = _read_table(path, "BED", 3, None)
    names = BED_COLUMNS[: min(df.shape[1], 6)] + [f"col{i}" for i in range(6, df.shape[1])]
    df.columns = names
    df = _coerce_intervals(df, path, n_header)
    if "score" in df:
        df["score"] = pd.to_numeric(df["score"], errors="coerce")
    _check_chroms(df, chrom_sizes, f"BED file '{path}'")
    return df


def read_narrowpeak(path: PathLike, *, chrom_sizes: PathLike | Mapping[str, int] | None = None) -> pd.DataFrame:
    """Read an ENCODE narrowPeak file (BED6+4).

    Returns
    -------
    A DataFrame with columns chrom, start, end, name, score, strand, signalValue, pValue, qValue,
    peak (summit offset from start, -1 if unknown).
    """
    df, n_header = _read_table(path, "narrowPeak", 10, 10)
    df.columns = NARROWPEAK_COLUMNS
    df = _coerce_intervals(df, path, n_header)
    for col in ("score", "signalValue", "pValue", "qValue"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["peak"] = pd.to_numeric(df["peak"], errors="coerce").fillna(-1).astype(np.int64)
    _check_chroms(df, chrom_sizes, f"narrowPeak file '{path}'")
    return df


def read_bedgraph(path: PathLike, *, chrom_sizes: PathLike | Mapping[str, int] | None = None) -> pd.DataFrame:
    """Read a bedGraph file (chrom, start, end, value).

    Returns
    -------
    A DataFrame with columns chrom, start, end, value (float32).
    """
    df, n_header = _read_table(path, "bedGraph", 4, 4)
    df.columns = BEDGRAPH_COLUMNS
    df = _coerce_intervals(df, path, n_header)
    val = pd.to_numeric(df["value"], errors="coerce")
    if val.isna().any():
        i = val.isna().to_numpy().nonzero()[0][0]
        msg = f"{path}, line {n_header + i + 1}: value {df['value'].iloc[i]!r} is not a number."
        raise ValueError(msg)
    df["value"] = val.astype(np.float32)
    _check_chroms(df, chrom_sizes, f"bedGraph file '{path}'")
    return df


def empty_peaks() -> pd.DataFrame:
    """An empty peak table with the narrowPeak columns and their types."""
    types = {"chrom": str, "start": np.int64, "end": np.int64, "name": str, "score": np.int64, "strand": str}
    types.update({"signalValue": np.float64, "pValue": np.float64, "qValue": np.float64, "peak": np.int64})
    return pd.DataFrame({c: pd.Series(dtype=types[c]) for c in NARROWPEAK_COLUMNS})


def read_peaks(path: PathLike, *, chrom_sizes: PathLike | Mapping[str, int] | None = None) -> pd.DataFrame:
    """Read peaks from a narrowPeak or BED file, telling them apart by the number of columns.

    A file without any peak (a peak caller that found none writes one) is a valid answer: it
    gives an empty table with the narrowPeak columns, and a warning.
    """
    path = Path(path)
    if not path.exists():
        msg = f"Peaks file '{path}' does not exist."
        raise FileNotFoundError(msg)
    with _open_text(path) as fh:
        first = next((line for line in fh if line.strip() and not line.startswith(_HEADER_PREFIXES)), "")
    if not first:
        warnings.warn(f"Peaks file '{path}' contains no peaks; returning an empty table.", UserWarning, stacklevel=2)
        return empty_peaks()
    if len(first.rstrip("\n").split("\t")) == 10:
        return read_narrowpeak(path, chrom_sizes=chrom_sizes)
    return read_bed(path, chrom_sizes=chrom_sizes)


def validate_intervals(df: pd.DataFrame, *, what: str = "intervals") -> pd.DataFrame:
    """Check a DataFrame of intervals (chrom/start/end columns) and return a cleaned copy."""
    missing = [c for c in ("chrom", "start", "end") if c not in df.columns]
    if missing:
        msg = f"{what} lack the columns {missing}; a BED-like DataFrame needs chrom, start and end."
        raise KeyError(msg)
    return _coerce_intervals(df.copy(), None)


def _write_table(df: pd.DataFrame, path: PathLike, columns: list[str], float_format: str | None = None) -> Path:
    path = Path(path)
    compress = path.suffix == ".gz"
    with atomic_output(path) as tmp:
        buf = df[columns].to_csv(sep="\t", header=False, index=False, float_format=float_format)
        if compress:
            with gzip.open(tmp, "wt") as fh:
                fh.write(buf)
        else:
            with open(tmp, "w") as fh:
                fh.write(buf)
    return path


def write_bed(df: pd.DataFrame, path: PathLike) -> Path:
    """Write intervals as BED (chrom, start, end and name/score/strand when present); atomically."""
    df = validate_intervals(df, what="BED intervals")
    cols = [c for c in BED_COLUMNS if c in df.columns]
    # BED columns are positional: a later column needs every earlier one.
    cols = BED_COLUMNS[: max(BED_COLUMNS.index(c) for c in cols) + 1]
    for c in cols:
        if c not in df.columns:
            df[c] = {"name": ".", "score": 0, "strand": "."}[c]
    return _write_table(df, path, cols)


def write_narrowpeak(df: pd.DataFrame, path: PathLike) -> Path:
    """Write peaks as narrowPeak (BED6+4), filling absent columns with their 'unknown' values; atomically."""
    df = validate_intervals(df, what="narrowPeak peaks")
    defaults = {"name": ".", "score": 0, "strand": ".", "signalValue": -1.0, "pValue": -1.0, "qValue": -1.0, "peak": -1}
    for col, value in defaults.items():
        if col not in df.columns:
            df[col] = value
    if "name" in df and (df["name"] == ".").all():
        df["name"] = [f"peak_{i + 1}" for i in range(len(df))]
    df["score"] = np.clip(np.round(pd.to_numeric(df["score"], errors="coerce").fillna(0)), 0, 1000).astype(np.int64)
    df["peak"] = pd.to_numeric(df["peak"], errors="coerce").fillna(-1).astype(np.int64)
    return _write_table(df, path, NARROWPEAK_COLUMNS, float_format="%.6g")


def write_bedgraph(df: pd.DataFrame, path: PathLike) -> Path:
    """Write a bedGraph (chrom, start, end, value); atomically."""
    df = validate_intervals(df, what="bedGraph intervals")
    if "value" not in df.columns:
        msg = "bedGraph intervals need a 'value' column."
        raise KeyError(msg)
    return _write_table(df, path, BEDGRAPH_COLUMNS, float_format="%.6g")
