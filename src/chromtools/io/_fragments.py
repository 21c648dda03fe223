"""10x-style fragments files (``fragments.tsv.gz``): where they are, and reading them whole or by region."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from chromtools._utils import GZIP_DAMAGE_ERRORS, PathLike, get_modality, open_maybe_gzip

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

FRAGMENT_COLUMNS = ["chrom", "start", "end", "barcode", "count"]
_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(?::(?P<start>[\d,]+)-(?P<end>[\d,]+))?$")

Region = str | tuple[str, int, int]


def fragments_path(data: AnnData | MuData, *, mod: str | None = None) -> Path:
    """Path of the fragments file recorded in ``uns['files']['fragments']`` (muon's convention).

    A MuData is searched first in its own ``uns``, then in modality ``mod`` (``'atac'`` by default).
    """
    from mudata import MuData

    candidates = [data] if not isinstance(data, MuData) else [data, get_modality(data, mod)]
    for obj in candidates:
        files = obj.uns.get("files", {})
        if isinstance(files, dict) and "fragments" in files:
            path = Path(str(files["fragments"]))
            if not path.exists():
                msg = (
                    f"The fragments file recorded in uns['files']['fragments'] ('{path}') does not exist; re-point it, "
                    "e.g. data.uns['files']['fragments'] = '/path/to/fragments.tsv.gz', or pass fragments=..."
                )
                raise FileNotFoundError(msg)
            return path
    msg = (
        "No fragments file is recorded in uns['files']['fragments']; set it "
        "(data.uns['files'] = {'fragments': '/path/to/fragments.tsv.gz'}) or pass fragments=..."
    )
    raise KeyError(msg)


def parse_region(region: Region) -> tuple[str, int | None, int | None]:
    """Parse ``'chr1:100-200'``, ``'chr1'`` or ``('chr1', 100, 200)`` into (chrom, start, end)."""
    start: int | None
    end: int | None
    if isinstance(region, tuple):
        chrom, start, end = region
        start, end = int(start), int(end)
    else:
        m = _REGION.match(region.strip())
        if m is None:
            msg = f"Region {region!r} is not of the form 'chr1:100-200' or 'chr1'."
            raise ValueError(msg)
        chrom = m["chrom"]
        start = int(m["start"].replace(",", "")) if m["start"] else None
        end = int(m["end"].replace(",", "")) if m["end"] else None
    if start is not None and end is not None and (start < 0 or end <= start):
        msg = f"Region {region!r} is empty, inverted or negative; use 0 <= start < end."
        raise ValueError(msg)
    return chrom, start, end


def _n_header_lines(path: Path) -> tuple[int, int]:
    """Number of leading '#' lines and the number of columns of the first data line."""
    n = 0
    try:
        with io.TextIOWrapper(open_maybe_gzip(path), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("#"):
                    n += 1
                    continue
                if not line.strip():
                    msg = f"Fragments file '{path}' has an empty line at line {n + 1}; remove it."
                    raise ValueError(msg)
                return n, len(line.rstrip("\n").split("\t"))
    except GZIP_DAMAGE_ERRORS as err:
        msg = (
            f"Fragments file '{path}' is corrupt or truncated ({err}); download it again, or re-compress it "
            "with `bgzip`."
        )
        raise ValueError(msg) from None
    except OSError as err:
        msg = f"Fragments file '{path}' could not be read ({err})."
        raise ValueError(msg) from None
    msg = f"Fragments file '{path}' contains no fragments."
    raise ValueError(msg)


def validate_fragments(
    fragments: pd.DataFrame,
    path: PathLike,
    first: int = 1,
    *,
    unit: Literal["line", "fragment"] = "line",
    check_barcodes: bool = True,
) -> pd.DataFrame:
    """Check a block of fragments: coordinates (and barcodes) present, ``0 <= start < end``.

    Parameters
    ----------
    fragments
        Columns ``chrom``, ``start``, ``end``, ``barcode`` (as :func:`read_fragments` returns).
    path
        The file they came from, named in the error.
    first
        Number of the block's first row in the file, counted in ``unit``.
    unit
        What ``first`` counts: file ``'line'`` s (headers included) or ``'fragment'`` s.
    check_barcodes
        Also require a barcode on every fragment (a reader that skips fragments without one
        passes ``False``).

    Returns
    -------
    ``fragments`` itself; a bad row raises a :class:`ValueError` naming the file and its line or
    fragment number.
    """
    df = fragments
    bad = df["start"].isna() | df["end"].isna()
    if check_barcodes:
        bad |= df["barcode"].isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        msg = f"{path}, {unit} {first + i}: expected 'chrom start end barcode [count]' with integer coordinates."
        raise ValueError(msg)
    start = df["start"].to_numpy()
    end = df["end"].to_numpy()
    wrong = (start < 0) | (end <= start)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        msg = (
            f"{path}, {unit} {first + i}: fragment {df['chrom'].iat[i]}:{start[i]}-{end[i]} is empty, inverted "
            "or negative; fragments are 0-based half-open with start < end."
        )
        raise ValueError(msg)
    return df


def _read_csv_chunks(path: Path, n_header: int, n_cols: int, chunksize: int) -> Iterator[pd.DataFrame]:
    if n_cols < 4:
        msg = f"Fragments file '{path}' has {n_cols} columns; expected 'chrom start end barcode [count]'."
        raise ValueError(msg)
    names = FRAGMENT_COLUMNS[: min(n_cols, 5)]
    line = n_header + 1
    try:
        source = open_maybe_gzip(path)  # ISA-L, not the zlib pandas would use
    except OSError as err:
        msg = f"Fragments file '{path}' could not be opened ({err})."
        raise ValueError(msg) from None
    try:
        reader = pd.read_csv(
            source,
            sep="\t",
            header=None,
            names=names,
            usecols=range(len(names)),
            skiprows=n_header,
            chunksize=chunksize,
            dtype={"chrom": str, "barcode": str},
            engine="c",
        )
        for chunk in reader:
            for col in ("start", "end"):
                if chunk[col].dtype.kind not in "iu":
                    chunk[col] = pd.to_numeric(chunk[col], errors="coerce")
            chunk = validate_fragments(chunk, path, line)
            chunk["start"] = chunk["start"].astype(np.int64)
            chunk["end"] = chunk["end"].astype(np.int64)
            if "count" not in chunk:
                chunk["count"] = 1
            line += len(chunk)
            yield chunk.reset_index(drop=True)
    except GZIP_DAMAGE_ERRORS as err:
        msg = (
            f"Fragments file '{path}' is corrupt or truncated near line {line} ({err}); download it again, or "
            "re-compress it with `bgzip` and index it with `tabix -p bed`."
        )
        raise ValueError(msg) from None
    except pd.errors.ParserError as err:
        msg = f"Fragments file '{path}' could not be parsed near line {line}: {err}"
        raise ValueError(msg) from None
    finally:
        source.close()


def _tabix_fetch(path: Path, chrom: str, start: int | None, end: int | None) -> pd.DataFrame:
    import pysam

    try:
        tbx = pysam.TabixFile(str(path))
    except OSError as err:
        msg = f"Tabix index of '{path}' could not be opened ({err}); re-create it with `tabix -p bed {path.name}`."
        raise ValueError(msg) from None
    with tbx:
        if chrom not in tbx.contigs:
            msg = (
                f"Fragments file '{path.name}' has no fragments on chromosome '{chrom}' "
                f"(its index lists {list(tbx.contigs)[:10]}); check the chromosome naming (e.g. 'chr1' vs '1')."
            )
            raise KeyError(msg)
        lines = list(tbx.fetch(chrom, start, end))
    if not lines:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in zip(FRAGMENT_COLUMNS, [str, np.int64, np.int64, str, np.int64], strict=True)
            }
        )
    df = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", header=None, dtype={0: str, 3: str})
    df = df.iloc[:, :5]
    df.columns = FRAGMENT_COLUMNS[: df.shape[1]]
    if "count" not in df:
        df["count"] = 1
    return validate_fragments(df, path, 1)


def iter_fragments(
    path: PathLike, *, region: Region | None = None, chunksize: int = 2_000_000
) -> Iterator[pd.DataFrame]:
    """Stream fragments in chunks of ``chunksize`` rows (chrom, start, end, barcode, count).

    Parameters
    ----------
    path
        A fragments file (gzip/bgzip or plain text), optionally tabix-indexed (``.tbi`` beside it).
    region
        Only fragments overlapping this region (``'chr1:100-200'``, ``'chr1'`` or a tuple). Uses the
        tabix index when present; without it the whole file is scanned (with a warning).
    chunksize
        Rows per chunk.
    """
    path = Path(path)
    if not path.exists():
        msg = f"Fragments file '{path}' does not exist."
        raise FileNotFoundError(msg)
    if path.stat().st_size == 0:
        msg = f"Fragments file '{path}' is empty."
        raise ValueError(msg)
    n_header, n_cols = _n_header_lines(path)
    if region is not None:
        chrom, start, end = parse_region(region)
        if Path(f"{path}.tbi").exists() or Path(f"{path}.csi").exists():
            yield _tabix_fetch(path, chrom, start, end)
            return
        warnings.warn(
            f"'{path.name}' has no tabix index; scanning the whole file for {region!r}. "
            f"Index it with `tabix -p bed {path.name}` for fast region reads.",
            stacklevel=2,
        )
        for chunk in _read_csv_chunks(path, n_header, n_cols, chunksize):
            keep = chunk["chrom"].to_numpy() == chrom
            if start is not None:
                keep &= (chunk["end"].to_numpy() > start) & (chunk["start"].to_numpy() < end)
            if keep.any():
                yield chunk.loc[keep].reset_index(drop=True)
        return
    yield from _read_csv_chunks(path, n_header, n_cols, chunksize)


def read_fragments(
    path: PathLike,
    region: Region | None = None,
    *,
    barcodes: list[str] | pd.Index | None = None,
) -> pd.DataFrame:
    """Read fragments into a DataFrame (chrom, start, end, barcode, count).

    Parameters
    ----------
    path
        A fragments file, tabix-indexed for fast region reads.
    region
        Only fragments overlapping this region, e.g. ``'chr1:1000000-1100000'``.
    barcodes
        Keep only fragments of these cell barcodes.
    """
    keep = pd.Index(barcodes) if barcodes is not None else None
    parts = []
    for chunk in iter_fragments(path, region=region):
        if keep is not None:
            chunk = chunk.loc[keep.get_indexer(chunk["barcode"]) >= 0]
        parts.append(chunk)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FRAGMENT_COLUMNS)
    df["chrom"] = df["chrom"].astype("category")
    return df
