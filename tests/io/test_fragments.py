from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import chromtools as ct


def write_fragments(path, rows, header=True):
    with gzip.open(path, "wt") as fh:
        if header:
            fh.write("# id=test\n# pipeline=none\n")
        for r in rows:
            fh.write("\t".join(map(str, r)) + "\n")
    return path


@pytest.fixture
def frag_adata(tmp_path):
    rows = []
    rng = np.random.default_rng(1)
    for chrom in ("chr1", "chr2"):
        for i in range(400):
            s = int(rng.integers(0, 9_000))
            rows.append((chrom, s, s + int(rng.integers(50, 400)), f"bc{i % 40}", 1))
    rows.sort(key=lambda r: (r[0], r[1]))
    path = write_fragments(tmp_path / "frags.tsv.gz", rows)
    a = AnnData(np.zeros((40, 1), np.float32))
    a.obs_names = [f"bc{i}" for i in range(40)]
    a.obs["cell_type"] = ["A"] * 30 + ["B"] * 10
    a.uns["files"] = {"fragments": str(path)}
    return a, rows


def test_read_and_region_without_index(frag_adata):
    a, rows = frag_adata
    df = ct.io.read_fragments(ct.io.fragments_path(a))
    assert len(df) == len(rows) and df.columns.tolist() == ["chrom", "start", "end", "barcode", "count"]
    with pytest.warns(UserWarning, match="no tabix index"):
        sub = ct.io.read_fragments(a.uns["files"]["fragments"], "chr2:100-2000")
    expect = [r for r in rows if r[0] == "chr2" and r[2] > 100 and r[1] < 2000]
    assert len(sub) == len(expect)
    only = ct.io.read_fragments(a.uns["files"]["fragments"], barcodes=["bc1", "bc2"])
    assert set(only["barcode"]) == {"bc1", "bc2"}


def test_coverage_counts_cut_sites_exactly(frag_adata, tmp_path):
    a, rows = frag_adata
    res = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "cov", chrom_sizes={"chr1": 10_000, "chr2": 10_000})
    assert res.loc["A", "n_cells"] == 30 and res.loc["B", "n_fragments"] == 200
    expect = {c: np.zeros(10_000) for c in ("chr1", "chr2")}
    for chrom, s, e, bc, _ in rows:
        if int(bc[2:]) >= 30:  # group B
            expect[chrom][s] += 1
            expect[chrom][e - 1] += 1
    for chrom in ("chr1", "chr2"):
        assert np.array_equal(ct.io.read_bigwig(res.loc["B", "path"], chrom), expect[chrom])


def test_groups_whose_file_names_clash_get_distinct_files(frag_adata, tmp_path):
    a, rows = frag_adata
    a.obs["cell_type"] = ["T/NK"] * 30 + ["T NK"] * 10  # both would be T_NK.bw
    res = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "cov", chrom_sizes={"chr1": 10_000, "chr2": 10_000})
    assert res.loc["T/NK", "path"] != res.loc["T NK", "path"]
    assert sorted(p.name for p in (tmp_path / "cov").iterdir()) == ["T_NK.bw", "T_NK_2.bw"]
    expect = np.zeros(10_000)
    for chrom, s, e, bc, _ in rows:
        if chrom == "chr1" and int(bc[2:]) >= 30:  # the 10 cells of 'T NK'
            expect[s] += 1
            expect[e - 1] += 1
    assert np.array_equal(ct.io.read_bigwig(res.loc["T NK", "path"], "chr1"), expect)


def test_coverage_shift_smooth_and_normalize(frag_adata, tmp_path):
    a, rows = frag_adata
    sizes = {"chr1": 10_000, "chr2": 10_000}
    raw = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "r", chrom_sizes=sizes, shift=(4, -5), groups=["B"])
    smooth = ct.io.pseudobulk_coverage(
        a, "cell_type", tmp_path / "s", chrom_sizes=sizes, shift=(4, -5), smooth=51, groups=["B"]
    )
    cpm = ct.io.pseudobulk_coverage(
        a, "cell_type", tmp_path / "c", chrom_sizes=sizes, shift=(4, -5), normalize="cpm", groups=["B"]
    )
    x = ct.io.read_bigwig(raw.loc["B", "path"], "chr1")
    s = ct.io.read_bigwig(smooth.loc["B", "path"], "chr1")
    # the smoothed track is the cut-site track summed over a centred 51-bp window
    ref = np.convolve(x, np.ones(51), mode="same")
    assert np.allclose(s, ref)
    first = [r for r in rows if r[0] == "chr1" and int(r[3][2:]) >= 30][0]
    assert x[first[1] + 4] >= 1 and x[first[2] - 6] >= 1
    c = ct.io.read_bigwig(cpm.loc["B", "path"], "chr1")
    assert np.isclose(c.sum() + ct.io.read_bigwig(cpm.loc["B", "path"], "chr2").sum(), 1e6, rtol=1e-5)


def test_subsampling_is_seeded_and_checked(frag_adata, tmp_path):
    a, _ = frag_adata
    r1 = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "a", n_cells=5, random_state=3)
    r2 = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "b", n_cells=5, random_state=3)
    assert (r1["n_cells"] == 5).all()
    assert r1["n_fragments"].tolist() == r2["n_fragments"].tolist()
    assert np.array_equal(
        ct.io.read_bigwig(r1.loc["A", "path"], "chr1"), ct.io.read_bigwig(r2.loc["A", "path"], "chr1")
    )
    out = tmp_path / "few"
    with pytest.raises(
        ValueError, match=r"Group 'B' of 'cell_type' has 10 cells, fewer than n_cells=20; lower n_cells"
    ):
        ct.io.pseudobulk_coverage(a, "cell_type", out, n_cells=20)
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_inputs(frag_adata, tmp_path):
    a, rows = frag_adata
    with pytest.raises(KeyError, match="no column 'celltype'"):
        ct.io.pseudobulk_coverage(a, "celltype", tmp_path / "x")
    with pytest.raises(KeyError, match="not covered by chrom_sizes; pass chroms"):
        ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "x", chrom_sizes={"chr1": 10_000})
    res = ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "y", chrom_sizes={"chr1": 10_000}, chroms=["chr1"])
    assert ct.io.read_chrom_sizes(res.loc["A", "path"]) == {"chr1": 10_000}
    b = a.copy()
    b.uns["files"] = {"fragments": str(tmp_path / "moved.tsv.gz")}
    with pytest.raises(FileNotFoundError, match="re-point it"):
        ct.io.fragments_path(b)
    del b.uns["files"]
    with pytest.raises(KeyError, match="No fragments file is recorded"):
        ct.io.fragments_path(b)


def test_isal_reader_handles_bgzf_members_and_damage(frag_adata, tmp_path):
    # the reader decompresses with ISA-L: BGZF-style multi-member files read whole, and both kinds
    # of damage (a truncated file: EOFError; a damaged deflate stream: ISA-L's own error) name the file
    a, rows = frag_adata
    text = "# id=test\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    cut = text.index("\n", len(text) // 2) + 1
    members = tmp_path / "members.tsv.gz"
    members.write_bytes(gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode()))
    df = ct.io.read_fragments(members)
    assert len(df) == len(rows)
    assert df["start"].tolist() == [r[1] for r in rows] and df["barcode"].tolist() == [r[3] for r in rows]
    plain = tmp_path / "plain.tsv"
    plain.write_text(text)
    pd.testing.assert_frame_equal(ct.io.read_fragments(plain), df)
    # a file of about 320 kB compressed: the header scan decompresses only its first part, so damage in
    # the middle is met by the chunked reader (0xFF bytes make ISA-L raise its own error there; zeros
    # would decode and fail the CRC check instead), damage at the start by the header scan
    rng = np.random.default_rng(2)
    starts = np.sort(rng.integers(0, 10_000_000, 40_000))
    ends = starts + rng.integers(50, 400, starts.size)
    cells = rng.integers(0, 40, starts.size)
    big = "# id=test\n" + "".join(f"chr1\t{s}\t{e}\tbc{c}\t1\n" for s, e, c in zip(starts, ends, cells, strict=True))
    raw = gzip.compress(big.encode())
    mid = len(raw) // 2
    damaged = {
        "truncated": raw[:mid],
        "corrupt_start": raw[:20] + bytes(200) + raw[220:],
        "corrupt_middle": raw[:mid] + b"\xff" * 200 + raw[mid + 200 :],
    }
    for name, data in damaged.items():
        bad = tmp_path / f"{name}.tsv.gz"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=f"{name}.tsv.gz' is corrupt or truncated"):
            ct.io.read_fragments(bad)


def test_corrupt_and_empty_fragments(frag_adata, tmp_path, leftovers):
    a, rows = frag_adata
    good = a.uns["files"]["fragments"]
    raw = open(good, "rb").read()
    corrupt = tmp_path / "corrupt.tsv.gz"
    corrupt.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "cov"
    with pytest.raises(ValueError, match="corrupt or truncated"):
        ct.io.pseudobulk_coverage(a, "cell_type", out, fragments=corrupt)
    assert not out.exists() or list(out.iterdir()) == []
    empty = tmp_path / "empty.tsv.gz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        ct.io.read_fragments(empty)
    only_header = write_fragments(tmp_path / "h.tsv.gz", [])
    with pytest.raises(ValueError, match="contains no fragments"):
        ct.io.read_fragments(only_header)
    inverted = write_fragments(tmp_path / "inv.tsv.gz", [("chr1", 10, 50, "bc1", 1), ("chr1", 90, 60, "bc1", 1)])
    with pytest.raises(ValueError, match=r"inv.tsv.gz, line 4: fragment chr1:90-60 is empty, inverted"):
        ct.io.read_fragments(inverted)
    unsorted = write_fragments(
        tmp_path / "u.tsv.gz", [("chr1", 1, 50, "bc1", 1), ("chr2", 1, 50, "bc1", 1), ("chr1", 60, 90, "bc1", 1)]
    )
    with pytest.raises(ValueError, match="not sorted by chromosome"):
        ct.io.pseudobulk_coverage(a, "cell_type", tmp_path / "u", fragments=unsorted, chunksize=1)
    assert leftovers(tmp_path) == []


def test_region_parsing():
    assert ct.io.parse_region("chr1:1,000-2,000") == ("chr1", 1000, 2000)
    assert ct.io.parse_region("chrM") == ("chrM", None, None)
    with pytest.raises(ValueError, match="empty, inverted or negative"):
        ct.io.parse_region(("chr1", 50, 10))
    with pytest.raises(ValueError, match="not of the form"):
        ct.io.parse_region("chr1:abc")


def test_real_pbmc_fragments(shared_data, tmp_path):
    m = ct.datasets.pbmc_multiome(shared_data)
    frag = ct.io.fragments_path(m)
    region = ct.io.read_fragments(frag, "chr1:100339151-100350000")  # tabix
    assert len(region) == 744 and (region["end"] > 100339151).all() and (region["start"] < 100350000).all()
    with pytest.raises(KeyError, match="no fragments on chromosome 'chrZ'"):
        ct.io.read_fragments(frag, "chrZ:1-100")
    # two groups of 500 cells; a low-coverage track of 50 cells next to a high-coverage one of all cells
    atac = m.mod["atac"]
    atac.obs["half"] = np.where(np.arange(atac.n_obs) < 500, "first", "second")
    full = ct.io.pseudobulk_coverage(m, "half", tmp_path / "full", progress=False)
    low = ct.io.pseudobulk_coverage(m, "half", tmp_path / "low", n_cells=50, progress=False)
    assert full["n_fragments"].sum() == len(ct.io.read_fragments(frag, barcodes=atac.obs_names))
    assert (low["n_fragments"] < full["n_fragments"] / 4).all()
    # every cut site of the group's fragments lands in its track
    frags = ct.io.read_fragments(frag, "chr1", barcodes=atac.obs_names[:500])
    expect = np.zeros(int(frags["end"].max()) + 1)
    np.add.at(expect, frags["start"].to_numpy(), 1)
    np.add.at(expect, frags["end"].to_numpy() - 1, 1)
    got = ct.io.read_bigwig(full.loc["first", "path"], "chr1", 0, expect.size)
    assert np.array_equal(got, expect)
    assert pd.Series(ct.io.read_chrom_sizes(full.loc["first", "path"])).gt(0).all()
