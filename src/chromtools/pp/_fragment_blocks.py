"""Stream a fragments file as parsed blocks: decompression in a thread, a compiled tokenizer.

Gzip/BGZF input is decompressed with ISA-L (``isal.igzip``, the ``isal`` package), about three
times as fast as the standard library's zlib on the PBMC fragments (0.021 against 0.066 CPU
seconds for 16.6 MB of text). It reads the same multi-member streams and raises the same
``EOFError`` on a truncated file and ``BadGzipFile`` on a bad header, but its own error class
(``isal_zlib.error``, not ``zlib.error``) on a damaged deflate stream; all of them become one
"corrupt or truncated" ``ValueError``. The opener and that error tuple live in
``chromtools._utils`` (``open_maybe_gzip``, ``GZIP_DAMAGE_ERRORS``), shared with ``ct.io.read_fragments``.

:func:`fragment_chunks` yields DataFrames with ``chrom`` and ``barcode`` as categoricals and
``start``/``end`` as int64. Regular blocks (every line ``chrom<TAB>start<TAB>end<TAB>barcode[...]``
with the same number of columns) are tokenized by one numba-compiled pass over their bytes that
releases the GIL, so blocks are parsed in parallel threads: integers from their digits,
chromosomes and barcodes coded by byte-for-byte comparison through a hash table. When the cells to
count are known, barcodes are looked up among them directly (codes are the cells' positions, -1 for
other barcodes) and no per-block names are built. Anything else (a ``#`` or ``"`` anywhere in a line, which
pandas reads as a comment or a quote, carriage returns, signs, ragged rows, a byte-order mark) goes through
pandas' C parser, which also words the errors; there only an empty field is missing (a barcode ``NA`` is a
barcode). Both give the same table; the tests compare them. The kernel is compiled on the first call after
installation and cached on disk (``numba``'s ``cache=True``); later processes load it.
"""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from chromtools._utils import GZIP_DAMAGE_ERRORS, open_maybe_gzip

#: Decompressed bytes per parsed block (about 90,000 fragments): small enough for threads to overlap.
BLOCK_BYTES = 4 << 20
#: Longest integer field the tokenizer reads (int64 holds 18 decimal digits).
_MAX_DIGITS = 18
_NEWLINE, _HASH = 10, 35
_UTF8_BOM = b"\xef\xbb\xbf"
#: More distinct chromosome names than this in one block (an unsorted file of many contigs) -> pandas.
_MAX_CHROMS_PER_BLOCK = 1024


def _compiled(fn):
    """``numba.njit(nogil=True)``, cached on disk where numba finds a writable place for its cache."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # "no locator available": a read-only installation and no user cache directory
        return numba.njit(nogil=True)(fn)


def _text_blocks(path: Path, block_bytes: int):
    """Decompressed text of the file in blocks that end at a line end."""
    rest = b""
    with open_maybe_gzip(path) as fh:
        while True:
            data = fh.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            yield data[:cut]
            rest = data[cut:]
    if rest.strip():
        yield rest + b"\n"


def _prefetch(iterator, depth: int = 2):
    """Run ``iterator`` in a background thread (decompression releases the GIL, so it overlaps parsing)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work():
        try:
            for item in iterator:
                q.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            q.put(err)
        q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        item = q.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


# ----------------------------------------------------------------------------------------------
# tokenizer: one compiled pass over a block's bytes
# ----------------------------------------------------------------------------------------------
@_compiled
def _same_bytes(a, s1, e1, b, s2, e2):  # pragma: no cover - compiled; exercised by the tests
    if e1 - s1 != e2 - s2:
        return False
    for k in range(e1 - s1):
        if a[s1 + k] != b[s2 + k]:
            return False
    return True


@_compiled
def _slot(a, s, e, mask):  # pragma: no cover - compiled
    """Hash-table slot of the bytes ``a[s:e]`` (FNV-1a, upper bits folded in)."""
    h = np.uint64(14695981039346656037)
    for k in range(s, e):
        h = (h ^ np.uint64(a[k])) * np.uint64(1099511628211)
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@_compiled
def _table_size(n):  # pragma: no cover - compiled
    """Slots of an open-addressing table for ``n`` keys: a power of two, at least half of them empty."""
    size = 2
    while size < 2 * n:
        size *= 2
    return size


@_compiled
def _barcode_table(names, offsets):  # pragma: no cover - compiled
    """Open-addressing table (slot -> index in ``offsets``) of the known barcodes' bytes."""
    n = offsets.size - 1
    size = _table_size(n)
    table = np.full(size, -1, np.int64)
    for i in range(n):
        slot = _slot(names, offsets[i], offsets[i + 1], size - 1)
        while table[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        table[slot] = i
    return table


@_compiled
def _scan(a, names, offsets, table):  # pragma: no cover - compiled
    """Parse ``chrom<TAB>start<TAB>end<TAB>barcode[<TAB>...]`` lines of ``a`` (ending in a newline).

    Returns ``n_tabs`` (tabs per line; -1 when the block is not regular and needs pandas), start,
    end, chromosome codes and the (start, end) byte positions of each chromosome's first name,
    barcode codes and, when no known barcodes are given (``table`` empty), the positions of each
    barcode's first occurrence. Chromosome codes, and barcode codes without a table, are numbered in
    order of first appearance; with a table, a barcode's code is its index among the known ones (-1
    when it is not one of them). Strings are compared byte for byte, so codes are exact whatever the
    hashes do. Bytes that pandas' parser treats specially anywhere in a line (``#`` starts a comment,
    ``"`` a quoted field), carriage returns and NULs send the block to pandas.
    """
    n = 0
    for x in a:
        if x == 10:
            n += 1
    start = np.empty(n, np.int64)
    end = np.empty(n, np.int64)
    chrom = np.empty(n, np.int64)
    code = np.empty(n, np.int64)
    chrom_pos = np.empty((16, 2), np.int64)
    fail = (-1, start, end, chrom, chrom_pos[:0], code, chrom_pos[:0])
    known = table.size > 0
    if known:
        bc_pos = np.empty((0, 2), np.int64)
        seen = table
    else:
        bc_pos = np.empty((n, 2), np.int64)
        seen = np.full(_table_size(n), -1, np.int64)
    mask = seen.size - 1
    n_chrom = 0
    n_bc = 0
    n_tabs = -1
    pos = 0
    prev_s = -1
    prev_e = -1
    prev_code = -1
    for i in range(n):
        # chromosome: compared with the previous line's first (files are sorted), then with the list
        line = pos
        c = a[pos]
        while c != 9:
            if c == 10 or c == 13 or c == 0 or c == 34 or c == 35:
                return fail
            pos += 1
            c = a[pos]
        if pos == line:
            return fail
        if prev_code < 0 or not _same_bytes(a, line, pos, a, prev_s, prev_e):
            prev_code = -1
            for k in range(n_chrom):
                if _same_bytes(a, line, pos, a, chrom_pos[k, 0], chrom_pos[k, 1]):
                    prev_code = k
                    break
            if prev_code < 0:
                if n_chrom == _MAX_CHROMS_PER_BLOCK:
                    return fail
                if n_chrom == chrom_pos.shape[0]:
                    grown = np.empty((2 * n_chrom, 2), np.int64)
                    grown[:n_chrom] = chrom_pos
                    chrom_pos = grown
                chrom_pos[n_chrom, 0] = line
                chrom_pos[n_chrom, 1] = pos
                prev_code = n_chrom
                n_chrom += 1
            prev_s = line
            prev_e = pos
        chrom[i] = prev_code
        # start and end: unsigned decimal integers of 1 to _MAX_DIGITS digits
        for field in range(2):
            pos += 1
            first = pos
            value = 0
            c = a[pos]
            while c != 9:
                digit = np.int64(c) - 48
                if digit < 0 or digit > 9:
                    return fail
                value = value * 10 + digit
                pos += 1
                c = a[pos]
            if pos == first or pos - first > _MAX_DIGITS:
                return fail
            if field == 0:
                start[i] = value
            else:
                end[i] = value
        # barcode
        pos += 1
        first = pos
        c = a[pos]
        while c != 9 and c != 10:
            if c == 13 or c == 0 or c == 34 or c == 35:
                return fail
            pos += 1
            c = a[pos]
        if pos == first:
            return fail
        slot = _slot(a, first, pos, mask)
        while True:
            k = seen[slot]
            if k < 0:
                if known:
                    code[i] = -1
                else:
                    bc_pos[n_bc, 0] = first
                    bc_pos[n_bc, 1] = pos
                    seen[slot] = n_bc
                    code[i] = n_bc
                    n_bc += 1
                break
            if known:
                if _same_bytes(a, first, pos, names, offsets[k], offsets[k + 1]):
                    code[i] = k
                    break
            elif _same_bytes(a, first, pos, a, bc_pos[k, 0], bc_pos[k, 1]):
                code[i] = k
                break
            slot = (slot + 1) & mask
        # the rest of the line: every line must have as many columns as the first
        tabs = 3
        while c != 10:
            if c == 9:
                tabs += 1
            elif c == 13 or c == 0 or c == 34 or c == 35:
                return fail
            pos += 1
            c = a[pos]
        if n_tabs < 0:
            n_tabs = tabs
        elif tabs != n_tabs:
            return fail
        pos += 1
    return n_tabs, start, end, chrom, chrom_pos[:n_chrom], code, bc_pos[:n_bc]


class KnownBarcodes:
    """The cells to count, as bytes and a hash table the compiled tokenizer looks barcodes up in."""

    def __init__(self, barcodes: pd.Index):
        encoded = [str(b).encode() for b in barcodes]
        self.dtype = pd.CategoricalDtype(pd.Index(barcodes, dtype=object))
        self.names = np.frombuffer(b"".join(encoded), np.uint8)  # read-only, like a block: one compiled signature
        self.offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.table = _barcode_table(self.names, self.offsets)


_NO_TABLE = np.zeros(0, np.int64)
_NO_NAMES = np.frombuffer(b"", np.uint8)
_NO_OFFSETS = np.zeros(1, np.int64)


def _names(block: bytes, positions: np.ndarray) -> pd.Index:
    return pd.Index([block[s:e].decode() for s, e in positions.tolist()], dtype=object)


def _tokenize(block: bytes, known: KnownBarcodes | None = None) -> pd.DataFrame | None:
    """Parse a regular block in one compiled pass; None when the block needs pandas' general parser."""
    a = np.frombuffer(block, np.uint8)
    if a.size == 0 or a[-1] != _NEWLINE or block.startswith(_UTF8_BOM):
        return None
    if a[0] == _HASH:  # header lines at the top of the file
        body = 0
        while body < a.size and a[body] == _HASH:
            body = block.index(b"\n", body) + 1
        return _tokenize(block[body:], known) if body < a.size else None
    lookup = (_NO_NAMES, _NO_OFFSETS, _NO_TABLE) if known is None else (known.names, known.offsets, known.table)
    n_tabs, start, end, chrom, chrom_pos, code, bc_pos = _scan(a, *lookup)
    if n_tabs < 3:
        return None
    try:
        chroms = _names(block, chrom_pos)
        if known is None:
            barcode = pd.Categorical.from_codes(code, categories=_names(block, bc_pos), validate=False)
        else:
            barcode = pd.Categorical.from_codes(code, dtype=known.dtype, validate=False)
    except UnicodeDecodeError:
        return None
    chrom_cat = pd.Categorical.from_codes(chrom, categories=chroms, validate=False)
    return pd.DataFrame({"chrom": chrom_cat, "start": start, "end": end, "barcode": barcode})


def _read_csv_block(block: bytes) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(block),
        sep="\t",
        header=None,
        comment="#",
        keep_default_na=False,  # only an empty field is missing: a barcode "NA" is a barcode, as in the tokenizer
        na_values=[""],
        usecols=[0, 1, 2, 3],
        names=["chrom", "start", "end", "barcode"],
        dtype={"chrom": "category", "start": np.int64, "end": np.int64, "barcode": "category"},
        engine="c",
    )


def parse_block(block: bytes, known: KnownBarcodes | None = None) -> pd.DataFrame:
    """One block of fragment lines as (chrom, start, end, barcode); compiled tokenizer, else pandas.

    With ``known`` cells, ``barcode`` has exactly their categories (other barcodes are missing).
    """
    table = _tokenize(block, known)
    if table is not None:
        return table
    table = _read_csv_block(block)
    if known is not None:  # recode onto the cells (missing and unknown barcodes -> -1)
        cat = table["barcode"].cat
        position = known.dtype.categories.get_indexer(cat.categories.astype(str))
        found = cat.codes.to_numpy()
        codes = np.full(len(table), -1, np.int64)
        ok = found >= 0
        codes[ok] = position[found[ok]]
        table["barcode"] = pd.Categorical.from_codes(codes, dtype=known.dtype)
    return table


def fragment_chunks(path: Path, chunksize: int, n_jobs: int, barcodes: pd.Index | None = None):
    """Stream (chrom, start, end, barcode) chunks; chrom and barcode as categoricals (fast to map).

    Decompression runs in a background thread and up to ``n_jobs`` blocks are parsed at once
    (ISA-L and the compiled tokenizer release the GIL); at most ``n_jobs + 2`` blocks are held.
    With ``barcodes`` (unique), every chunk's ``barcode`` categories are exactly those barcodes, so
    its codes are their positions (-1 for fragments of other barcodes).
    """
    known = KnownBarcodes(barcodes) if barcodes is not None else None
    try:
        with ThreadPoolExecutor(max_workers=max(n_jobs, 1)) as pool:
            pending: deque = deque()
            for block in _prefetch(_text_blocks(path, min(max(chunksize, 1) * 48, BLOCK_BYTES))):
                pending.append(pool.submit(parse_block, block, known))
                if len(pending) >= max(n_jobs, 1):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    except GZIP_DAMAGE_ERRORS as err:
        msg = f"Fragments file '{path}' is corrupt or truncated ({err}); re-create it with `bgzip`."
        raise ValueError(msg) from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        msg = (
            f"Fragments file '{path}' could not be parsed as 'chrom start end barcode [count]' with integer "
            f"coordinates ({err})."
        )
        raise ValueError(msg) from None
