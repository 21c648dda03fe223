"""The compiled tokenizer of fragment blocks gives pandas' table, and hands irregular blocks to pandas."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

import chromtools as ct
from chromtools.pp._fragment_blocks import (
    KnownBarcodes,
    _read_csv_block,
    _tokenize,
    fragment_chunks,
    parse_block,
)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) == ["chrom", "start", "end", "barcode"]
    for col in ("start", "end"):
        assert a[col].dtype == b[col].dtype == np.int64
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    for col in ("chrom", "barcode"):
        assert isinstance(a[col].dtype, pd.CategoricalDtype)
        np.testing.assert_array_equal(a[col].astype(str).to_numpy(), b[col].astype(str).to_numpy())


def _lines(rng, n, *, n_extra_cols=1, ragged_names=True):
    chroms = ["chr1", "chr2", "chrX", "chr19_KI270866v1_alt"] if ragged_names else ["chr1", "chr2"]
    barcodes = [f"{'ACGT' * 4}-{i}" for i in range(30)] + (
        ["A", "cell_with_a_long_name_1234567890"] if ragged_names else []
    )
    start = rng.integers(0, 10**9, n)
    start[:3] = [0, 9, 10]  # one-digit and boundary values
    rows = []
    for c, s, e, b in zip(
        rng.choice(chroms, n), start, start + rng.integers(1, 900, n), rng.choice(barcodes, n), strict=True
    ):
        rows.append("\t".join([c, str(s), str(e), b] + ["1"] * n_extra_cols))
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("n_extra_cols", [0, 1, 3])
@pytest.mark.parametrize("ragged_names", [True, False])
def test_tokenizer_equals_pandas(n_extra_cols, ragged_names):
    rng = np.random.default_rng(n_extra_cols)
    block = _lines(rng, 2000, n_extra_cols=n_extra_cols, ragged_names=ragged_names).encode()
    fast = _tokenize(block)
    assert fast is not None
    _same(fast, _read_csv_block(block))
    # categories in order of first appearance, each once
    assert fast["barcode"].cat.categories.is_unique
    first = pd.unique(fast["barcode"].astype(str).to_numpy())
    assert list(fast["barcode"].cat.categories) == list(first)


def test_barcodes_sharing_a_key_prefix_stay_apart():
    # 24-byte barcodes that differ only in their last word, and in one byte each
    names = [f"{'A' * 16}{i:08d}" for i in range(500)] + [f"{'A' * 15}C{i:08d}" for i in range(500)]
    block = "".join(f"chr1\t{i}\t{i + 10}\t{b}\n" for i, b in enumerate(names * 2)).encode()
    fast = _tokenize(block)
    assert fast is not None
    assert fast["barcode"].cat.categories.size == 1000
    _same(fast, _read_csv_block(block))


def test_many_barcodes_sharing_hash_slots_stay_apart():
    # up to 20,000 barcodes in a table of 131,072 slots (sized for the 60,000 lines): many share a slot
    # and are told apart by their bytes
    rng = np.random.default_rng(5)
    names = [f"{'ACGT' * 4}-{i}" for i in range(20_000)]
    picks = rng.choice(names, 60_000)
    block = "".join(f"chr1\t{i}\t{i + 10}\t{b}\n" for i, b in enumerate(picks)).encode()
    fast = _tokenize(block)
    assert fast is not None
    assert fast["barcode"].cat.categories.size == len(set(picks))
    _same(fast, _read_csv_block(block))


@pytest.mark.parametrize("irregular", [False, True])
def test_known_barcodes_are_coded_by_their_position(irregular):
    # the cells to count: some absent from the block; the block also has barcodes that are not cells
    rng = np.random.default_rng(6)
    text = _lines(rng, 3000)
    if irregular:  # a comment inside the block sends it to pandas, which must give the same codes
        text = text.replace("\n", "\n# comment\n", 1)
    block = text.encode()
    cells = pd.Index([f"{'ACGT' * 4}-{i}" for i in range(0, 40, 2)] + ["A", "not_in_file"])
    known = KnownBarcodes(cells)
    table = parse_block(block, known)
    assert (_tokenize(block, known) is None) == irregular
    assert list(table["barcode"].cat.categories) == list(cells)
    slow = _read_csv_block(block)
    expected = cells.get_indexer(slow["barcode"].astype(str))
    np.testing.assert_array_equal(table["barcode"].cat.codes.to_numpy(), expected)
    assert (expected == -1).any() and (expected >= 0).any()
    for col in ("chrom", "start", "end"):
        np.testing.assert_array_equal(table[col].astype(str).to_numpy(), slow[col].astype(str).to_numpy())


def test_header_lines_are_skipped():
    rng = np.random.default_rng(1)
    body = _lines(rng, 50)
    block = ("# id=x\n# pipeline=cellranger-arc\n" + body).encode()
    fast = _tokenize(block)
    assert fast is not None
    assert len(fast) == 50
    _same(fast, _read_csv_block(block))


@pytest.mark.parametrize(
    "text",
    [
        "chr1\t10\t20\tAAA\t1\n# a comment in the middle\nchr1\t30\t40\tCCC\t1\n",  # comment inside
        "chr1\t10\t20\tAAA\r\nchr1\t30\t40\tCCC\r\n",  # Windows line ends after the barcode
        "chr1\t10\t20\tAAA\t1\nchr1\t30\t40\tCCC\n",  # ragged columns
        "chr1\t+10\t20\tAAA\t1\n",  # a sign
        "chr1\t10\t20\tAAA\t1\n\nchr1\t30\t40\tCCC\t1\n",  # an empty line
        "chr1\t10\t20\tAA#A\t1\nchr1\t30\t40\tCCC\t1\n",  # pandas cuts a line at '#' anywhere
        "chr1\t10\t20\tAAA\t1#x\nchr1\t30\t40\tCCC\t1\n",
        'chr1\t10\t20\t"AAA"\t1\nchr1\t30\t40\tCCC\t1\n',  # pandas strips quotes
        "\ufeffchr1\t10\t20\tAAA\t1\n",  # a byte-order mark, which pandas drops
        "".join(f"c{i}\t10\t20\tAAA\t1\n" for i in range(1100)),  # more contigs in one block than the kernel lists
    ],
)
def test_irregular_blocks_go_to_pandas(text):
    block = text.encode()
    assert _tokenize(block) is None
    _same(parse_block(block), _read_csv_block(block))


def test_na_like_barcodes_are_barcodes_in_both_parsers():
    # pandas would read "NA"/"null" as missing by default; both parsers keep them, only an empty field is missing
    block = b"chr1\t10\t20\tNA\t1\nchr1\t30\t40\tnull\t1\n"
    fast = _tokenize(block)
    assert fast is not None
    assert list(fast["barcode"].astype(str)) == ["NA", "null"]
    _same(fast, _read_csv_block(block))
    assert _read_csv_block(b"chr1\t10\t20\t\t1\n")["barcode"].isna().all()


def test_negative_and_non_numeric_coordinates_still_get_clear_errors(tmp_path):
    peaks = pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [100]})
    neg = tmp_path / "neg.tsv"
    neg.write_text("chr1\t-5\t10\tAAA\t1\n")
    with pytest.raises(ValueError, match="empty, inverted or negative"):
        ct.pp.peak_matrix(neg, peaks)
    text = tmp_path / "text.tsv"
    text.write_text("chr1\tten\t20\tAAA\t1\n")
    with pytest.raises(ValueError, match="could not be parsed"):
        ct.pp.peak_matrix(text, peaks)


def test_streamed_file_equals_one_pandas_read(tmp_path):
    rng = np.random.default_rng(3)
    text = "# header\n" + _lines(rng, 30_000)
    path = tmp_path / "f.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    chunks = list(fragment_chunks(path, chunksize=2_000, n_jobs=2))  # ~96 kB blocks: many of them
    assert len(chunks) > 5
    streamed = pd.concat([c.astype({"chrom": str, "barcode": str}) for c in chunks], ignore_index=True)
    whole = _read_csv_block(text.encode()).astype({"chrom": str, "barcode": str})
    pd.testing.assert_frame_equal(streamed, whole)


def test_multi_member_gzip_and_damaged_files(tmp_path):
    # BGZF is a series of gzip members; ISA-L must read them all, and say when a file is damaged
    rng = np.random.default_rng(4)
    text = _lines(rng, 6_000)
    cut = text.index("\n", len(text) // 2) + 1
    path = tmp_path / "members.tsv.gz"
    path.write_bytes(gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode()))
    streamed = pd.concat(list(fragment_chunks(path, chunksize=500, n_jobs=2)), ignore_index=True)
    assert len(streamed) == 6_000
    _same(streamed.astype({"chrom": "category", "barcode": "category"}), _read_csv_block(text.encode()))
    raw = gzip.compress(text.encode())
    peaks = pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [10**9]})
    damaged = {"truncated": raw[: len(raw) // 2], "corrupt": raw[:20] + bytes(200) + raw[220:]}
    for name, data in damaged.items():
        bad = tmp_path / f"{name}.tsv.gz"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match="corrupt or truncated"):
            ct.pp.peak_matrix(bad, peaks)
