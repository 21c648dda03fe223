from __future__ import annotations

import numpy as np
import pyBigWig
import pytest

import chromtools as ct


def test_write_read_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    chr1 = rng.poisson(0.5, size=10_000).astype(np.float32)
    chr1[2_000:3_000] = 0
    chr2 = rng.normal(size=777).astype(np.float32)  # every base differs, negative values too
    path = ct.io.write_bigwig(tmp_path / "t.bw", {"chr1": chr1, "chr2": chr2})
    assert np.array_equal(ct.io.read_bigwig(path, "chr1"), chr1)
    assert np.array_equal(ct.io.read_bigwig(path, "chr2"), chr2)
    assert np.array_equal(ct.io.read_bigwig(path, "chr1", 1_990, 3_010), chr1[1_990:3_010])
    assert ct.io.read_chrom_sizes(path) == {"chr1": 10_000, "chr2": 777}


def test_writer_streams_blocks_and_run_length_encodes(tmp_path):
    sizes = {"chrA": 1_000, "chrB": 500}
    with ct.io.BigWigWriter(tmp_path / "s.bw", sizes) as out:
        out.add("chrA", np.full(400, 2.0), start=0)
        out.add("chrA", np.full(100, 2.0), start=400)
        out.add("chrA", np.r_[np.zeros(250), np.full(250, 3.0)], start=500)
        out.add_intervals("chrB", [10, 100], [20, 150], [1.5, -2.0])
    assert out.n_runs == 5  # zeros are not stored; equal neighbours within one block are one run
    with ct.io.BigWigReader(tmp_path / "s.bw") as bw:
        a = bw.values("chrA")
        assert a[:500].tolist() == [2.0] * 500 and a[500:750].sum() == 0 and (a[750:] == 3).all()
        s, e, v = bw.intervals("chrB")
        assert s.tolist() == [10, 100] and e.tolist() == [20, 150] and v.tolist() == [1.5, -2.0]
        assert not bw.is_empty()


def test_writer_mixes_per_base_and_run_entries(tmp_path):
    # blocks whose values change at most bases go in as fixed-step entries, the others as runs
    rng = np.random.default_rng(0)
    dense = rng.random(3_000).astype(np.float32)
    sizes = {"chrA": 10_000}
    with ct.io.BigWigWriter(tmp_path / "m.bw", sizes) as out:
        out.add("chrA", dense, start=0)
        out.add("chrA", np.full(4_000, 1.5), start=3_000)
        out.add("chrA", dense, start=7_000)
    with ct.io.BigWigReader(tmp_path / "m.bw") as bw:
        a = bw.values("chrA")
    np.testing.assert_array_equal(a, np.r_[dense, np.full(4_000, 1.5, np.float32), dense])


def test_writer_rejects_wrong_order_and_leaves_nothing(tmp_path, leftovers):
    out_path = tmp_path / "bad.bw"
    with pytest.raises(ValueError, match="order of chrom_sizes"):
        with ct.io.BigWigWriter(out_path, {"chr1": 100, "chr2": 100}) as out:
            out.add("chr2", np.ones(100))
            out.add("chr1", np.ones(100))
    assert not out_path.exists() and leftovers(tmp_path) == []


def test_writer_unknown_chromosome_and_overrun(tmp_path):
    with pytest.raises(KeyError, match="chr9.*not in the chromosome sizes"):
        with ct.io.BigWigWriter(tmp_path / "u.bw", {"chr1": 100}) as out:
            out.add("chr9", np.ones(10))
    with pytest.raises(ValueError, match="past the chromosome end"):
        with ct.io.BigWigWriter(tmp_path / "o.bw", {"chr1": 100}) as out:
            out.add("chr1", np.ones(10), start=95)
    assert list(tmp_path.iterdir()) == []


def test_writer_dropped_without_close_leaves_no_temp(tmp_path):
    w = ct.io.BigWigWriter(tmp_path / "x.bw", {"chr1": 100})
    w.add("chr1", np.ones(100))
    del w
    assert list(tmp_path.iterdir()) == []


def test_reader_errors(tmp_path, sim_tracks):
    with ct.io.BigWigReader(sim_tracks.noisy) as bw:
        with pytest.raises(KeyError, match="no chromosome 'chr3'.*pass one of these"):
            bw.values("chr3", 0, 10)
        with pytest.raises(ValueError, match="not inside chr1"):
            bw.values("chr1", -5, 10)
        with pytest.raises(ValueError, match="not inside chr1"):
            bw.values("chr1", 100, 50)
        with pytest.raises(ValueError, match="not inside chr1"):
            bw.values("chr1", 0, 10**9)
    fake = tmp_path / "fake.bw"
    fake.write_text("chr1\t0\t10\t1\n")
    with pytest.raises(ValueError, match="not a bigWig"):
        ct.io.BigWigReader(fake)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ct.io.read_bigwig(tmp_path / "missing.bw", "chr1")


def test_empty_bigwig(tmp_path):
    empty = tmp_path / "empty.bw"
    bw = pyBigWig.open(str(empty), "w")
    bw.addHeader([("chr1", 1000)])
    bw.close()
    with ct.io.BigWigReader(empty) as r:
        assert r.is_empty()
        assert r.values("chr1").sum() == 0


def test_sizes_file_and_mismatch(tmp_path, sim_tracks):
    sizes = ct.io.read_chrom_sizes(sim_tracks.chrom_sizes)
    assert sizes == ct.io.read_chrom_sizes(sim_tracks.noisy)
    wrong = dict(sizes, chr1=sizes["chr1"] + 1)
    with pytest.raises(ValueError, match="same genome assembly"):
        ct.io.check_chrom_sizes(ct.io.read_chrom_sizes(sim_tracks.noisy), wrong, found_name="bigWig 'noisy.bw'")
    with pytest.raises(KeyError, match="no chromosome 'chrX'"):
        ct.io.check_chrom_sizes(sizes, {"chrX": 10})
    bad = tmp_path / "bad.sizes"
    bad.write_text("chr1\t100\nchr2\tten\n")
    with pytest.raises(ValueError, match=r"bad.sizes, line 2.*not an integer"):
        ct.io.read_chrom_sizes(bad)
    dup = tmp_path / "dup.sizes"
    dup.write_text("chr1 100\nchr1 100\n")
    with pytest.raises(ValueError, match="listed twice"):
        ct.io.read_chrom_sizes(dup)
    empty = tmp_path / "empty.sizes"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no chromosomes"):
        ct.io.read_chrom_sizes(empty)
    with pytest.raises(ValueError, match="positive integer"):
        ct.io.read_chrom_sizes({"chr1": -3})
    out = ct.io.write_chrom_sizes(sizes, tmp_path / "out.sizes")
    assert ct.io.read_chrom_sizes(out) == sizes


def test_runs_from_values():
    s, e, v = ct.io.runs_from_values(np.array([0, 0, 1, 1, 2, np.nan, 0, 5], np.float32), offset=100)
    assert s.tolist() == [102, 104, 107] and e.tolist() == [104, 105, 108] and v.tolist() == [1, 2, 5]


def test_real_hsc_roundtrip_is_exact(shared_data, tmp_path):
    hsc = ct.datasets.hsc_bulk(shared_data)
    for src in (hsc.noisy, hsc.clean):
        sizes = ct.io.read_chrom_sizes(src)
        with ct.io.BigWigReader(src) as bw:
            tracks = {c: bw.values(c) for c in sizes}
        out = ct.io.write_bigwig(tmp_path / f"{src.stem}.bw", tracks, sizes)
        with ct.io.BigWigReader(src) as a, ct.io.BigWigReader(out) as b:
            for c in sizes:
                assert np.array_equal(a.values(c), b.values(c))
                # the stored runs are identical too, not only the per-base values
                sa, ea, va = a.intervals(c)
                sb, eb, vb = b.intervals(c)
                assert np.array_equal(va, vb) and np.array_equal(sa, sb) and np.array_equal(ea, eb)
    clean = ct.io.read_bigwig(hsc.clean, "chr1", 0, 1_000_000)
    assert clean.dtype == np.float32 and clean.max() > 100  # real coverage, not an empty read


def test_chrom_sizes_table_survives_strict_h5ad(tmp_path):
    import anndata
    import pandas as pd

    sizes = {"chr1": 1_000, "HLA-A*01:01:01:01": 3_503, "chrUn/7": 250}  # '/' would be refused as an h5ad key
    table = pd.DataFrame({"size": list(sizes.values())}, index=pd.Index(list(sizes), name="chrom"))  # as denoise_groups
    assert ct.io.read_chrom_sizes(table) == ct.io.read_chrom_sizes(table["size"]) == sizes
    with pytest.raises(ValueError, match="needs a 'size' column"):
        ct.io.read_chrom_sizes(table.rename(columns={"size": "length"}))
    adata = anndata.AnnData(np.zeros((2, 1)), uns={"ct_denoise": {"chrom_sizes": table}})
    strict = "disallow_forward_slash_in_h5ad"  # anndata's coming default
    if not hasattr(anndata.settings, strict):
        pytest.skip(f"this anndata ({anndata.__version__}) has no {strict} setting")
    with anndata.settings.override(**{strict: True}):
        adata.write_h5ad(tmp_path / "sizes.h5ad")
        with pytest.raises(ValueError, match="/"):  # the dict it replaced could not be written
            anndata.AnnData(np.zeros((2, 1)), uns={"s": sizes}).write_h5ad(tmp_path / "dict.h5ad")
    back = anndata.read_h5ad(tmp_path / "sizes.h5ad").uns["ct_denoise"]["chrom_sizes"]
    assert ct.io.read_chrom_sizes(back) == sizes
