"""Chromosome sizes: from ``.sizes`` files, bigWig headers or mappings, and checks between them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from chromtools._utils import PathLike, atomic_output

logger = logging.getLogger(__name__)

ChromSizes = dict[str, int]
BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")


def is_bigwig(path: PathLike) -> bool:
    """Whether ``path`` starts with the bigWig magic number."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (BIGWIG_MAGIC, BIGWIG_MAGIC[::-1])


def read_chrom_sizes(source: PathLike | Mapping[str, int] | pd.Series | pd.DataFrame) -> ChromSizes:
    """Read chromosome sizes.

    Parameters
    ----------
    source
        A two-column ``.sizes``/``.genome`` file (name and length, tab or space separated,
        ``#`` comments allowed), a bigWig file (its header is read), a mapping that is
        validated and copied, or a pandas Series (or a DataFrame with a ``size`` column)
        indexed by chromosome, such as the ``chrom_sizes`` table that
        :func:`chromtools.tl.denoise_groups` records in ``uns``.

    Returns
    -------
    Chromosome name → length, in the order given.
    """
    if isinstance(source, pd.DataFrame):
        if "size" not in source.columns:
            msg = f"A chrom_sizes table needs a 'size' column indexed by chromosome; found columns {list(source.columns)}."
            raise ValueError(msg)
        source = source["size"]
    if isinstance(source, pd.Series):
        return _validate_sizes({str(k): v for k, v in source.items()}, "the chrom_sizes table")
    if isinstance(source, Mapping):
        return _validate_sizes(dict(source), "the chrom_sizes mapping")
    path = Path(source)
    if not path.exists():
        msg = f"Chromosome sizes file '{path}' does not exist; pass a .sizes file, a bigWig, or a dict."
        raise FileNotFoundError(msg)
    if is_bigwig(path):
        from ._bigwig import BigWigReader

        with BigWigReader(path) as bw:
            return dict(bw.chrom_sizes)
    sizes: ChromSizes = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) < 2:
                msg = f"{path}, line {lineno}: expected 'name<TAB>length', got {line!r}. Fix the line or remove it."
                raise ValueError(msg)
            name, length = fields[0], fields[1]
            try:
                size = int(length)
            except ValueError:
                msg = f"{path}, line {lineno}: length {length!r} of '{name}' is not an integer."
                raise ValueError(msg) from None
            if name in sizes:
                msg = f"{path}, line {lineno}: chromosome '{name}' is listed twice; keep one line per chromosome."
                raise ValueError(msg)
            sizes[name] = size
    if not sizes:
        msg = f"Chromosome sizes file '{path}' lists no chromosomes."
        raise ValueError(msg)
    return _validate_sizes(sizes, f"'{path}'")


def _validate_sizes(sizes: ChromSizes, where: str) -> ChromSizes:
    if not sizes:
        msg = f"{where} lists no chromosomes."
        raise ValueError(msg)
    out: ChromSizes = {}
    for name, size in sizes.items():
        if not isinstance(name, str) or not name:
            msg = f"{where}: chromosome names must be non-empty strings, got {name!r}."
            raise ValueError(msg)
        if int(size) != size or int(size) <= 0:
            msg = f"{where}: length of '{name}' must be a positive integer, got {size!r}."
            raise ValueError(msg)
        out[name] = int(size)
    return out


def write_chrom_sizes(sizes: Mapping[str, int], path: PathLike) -> Path:
    """Write chromosome sizes as a two-column, tab-separated file (atomically)."""
    sizes = _validate_sizes(dict(sizes), "the chrom_sizes mapping")
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        for name, size in sizes.items():
            fh.write(f"{name}\t{size}\n")
    return Path(path)


def check_chrom_sizes(
    found: Mapping[str, int],
    expected: Mapping[str, int],
    *,
    found_name: str = "the track",
    expected_name: str = "the chromosome sizes",
    chroms: Sequence[str] | None = None,
) -> list[str]:
    """Check that ``found`` agrees with ``expected`` on the chromosomes in use.

    Parameters
    ----------
    found
        Sizes read from a file (e.g. a bigWig header).
    expected
        Sizes the caller works with (e.g. a ``.sizes`` file, or a model's training genome).
    found_name, expected_name
        How the two sources are named in error messages.
    chroms
        Chromosomes to check; default: all of ``expected``.

    Returns
    -------
    The chromosomes checked, in the order of ``expected``.

    Raises
    ------
    KeyError
        A chromosome is missing from ``found``.
    ValueError
        A chromosome has a different length in the two sources.
    """
    use = list(expected) if chroms is None else list(chroms)
    for chrom in use:
        if chrom not in expected:
            msg = (
                f"Chromosome '{chrom}' is not listed in {expected_name}; "
                f"pass chroms= with chromosomes from {sorted(expected)[:10]} or fix the sizes."
            )
            raise KeyError(msg)
        if chrom not in found:
            msg = (
                f"{found_name} has no chromosome '{chrom}' listed in {expected_name} "
                f"(it has {sorted(found)[:10]}{' ...' if len(found) > 10 else ''}); "
                "pass chroms=... to restrict the chromosomes or fix the sizes file."
            )
            raise KeyError(msg)
        if found[chrom] != expected[chrom]:
            msg = (
                f"Chromosome '{chrom}' is {found[chrom]:,} bp in {found_name} but {expected[chrom]:,} bp in "
                f"{expected_name}; both must come from the same genome assembly. Use the sizes of the track's "
                "genome, or rebuild the track on the expected genome."
            )
            raise ValueError(msg)
    return use
