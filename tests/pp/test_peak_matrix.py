from __future__ import annotations

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import chromtools as ct


def _simulate(rng, n_frag=3000, n_cells=40):
    """Peaks with nested, overlapping and adjacent ones on two chromosomes, and fragments hitting their edges."""
    peaks = pd.DataFrame(
        {
            "chrom": ["chr1"] * 7 + ["chr2"] * 3,
            "start": [100, 150, 400, 450, 1000, 1200, 1300, 50, 500, 500],
            "end": [300, 200, 500, 700, 1200, 1400, 5000, 400, 501, 900],
        }
    )
    chrom = rng.choice(["chr1", "chr2", "chr3"], size=n_frag, p=[0.6, 0.3, 0.1])
    start = rng.integers(0, 5200, size=n_frag)
    edges = rng.random(n_frag) < 0.3  # many fragments start or end exactly at a peak boundary
    pick = rng.integers(0, len(peaks), size=n_frag)
    start[edges] = np.where(
        rng.random(edges.sum()) < 0.5, peaks["start"].to_numpy()[pick[edges]], peaks["end"].to_numpy()[pick[edges]] - 1
    )
    length = rng.integers(1, 400, size=n_frag)
    barcodes = np.array([f"cell{i:02d}" for i in range(n_cells)])
    frags = pd.DataFrame(
        {"chrom": chrom, "start": start, "end": start + length, "barcode": rng.choice(barcodes, n_frag), "count": 1}
    )
    order = np.lexsort((frags["start"], frags["chrom"]))
    return peaks, frags.iloc[order].reset_index(drop=True), barcodes


def _brute_force(frags, peaks, cells, counting):
    """Loop over fragments and peaks: the reference implementation."""
    row = {c: i for i, c in enumerate(cells)}
    out = np.zeros((len(cells), len(peaks)), np.int64)
    for f in frags.itertuples():
        if f.barcode not in row:
            continue
        for j, p in enumerate(peaks.itertuples()):
            if p.chrom != f.chrom:
                continue
            if counting == "fragments":
                out[row[f.barcode], j] += int(f.start < p.end and f.end > p.start)
            else:
                out[row[f.barcode], j] += int(p.start <= f.start < p.end) + int(p.start <= f.end - 1 < p.end)
    return out


def _write(frags, path):
    with gzip.open(path, "wt") as fh:
        fh.write("# a header line\n")
        frags.to_csv(fh, sep="\t", header=False, index=False)
    return path


@pytest.mark.parametrize("counting", ["fragments", "cut_sites"])
def test_counts_equal_a_brute_force_count(tmp_path, counting):
    rng = np.random.default_rng(0)
    peaks, frags, _ = _simulate(rng)
    path = _write(frags, tmp_path / "fragments.tsv.gz")
    # chunks of 97 fragments: many chunks, and each chunk's matrix is folded into the result
    out = ct.pp.peak_matrix(path, peaks, counting=counting, chunksize=97)
    cells = out.obs_names
    assert list(cells) == list(pd.unique(frags["barcode"]))  # every barcode, in order of first appearance
    expected = _brute_force(frags, peaks, cells, counting)
    assert sp.isspmatrix_csr(out.X) or isinstance(out.X, sp.csr_array)
    np.testing.assert_array_equal(out.X.toarray(), expected)
    assert expected.sum() > 500  # the test counts something
    np.testing.assert_array_equal(out.obs["n_fragments"], frags["barcode"].value_counts()[cells].to_numpy())
    assert out.var_names[0] == "chr1:100-300"
    assert out.uns["peak_matrix"]["n_fragments_read"] == len(frags)
    # one chunk gives the same matrix
    whole = ct.pp.peak_matrix(path, peaks, counting=counting)
    np.testing.assert_array_equal(whole.X.toarray(), expected)


def test_anndata_input_carries_obs_and_accepts_bed_and_anndata_peaks(tmp_path):
    rng = np.random.default_rng(1)
    peaks, frags, barcodes = _simulate(rng)
    path = _write(frags, tmp_path / "f.tsv.gz")
    cells = list(barcodes[:10]) + ["not_in_file"]
    query = ad.AnnData(obs=pd.DataFrame({"donor": ["d1"] * 11}, index=cells))
    query.uns["files"] = {"fragments": str(path)}
    bed = tmp_path / "peaks.bed"
    peaks.to_csv(bed, sep="\t", header=False, index=False)
    out = ct.pp.peak_matrix(query, bed)
    assert out.obs_names.tolist() == cells
    assert (out.obs["donor"] == "d1").all()
    assert out.X[10].sum() == 0 and out.obs["n_fragments"].iloc[10] == 0
    np.testing.assert_array_equal(out.X.toarray(), _brute_force(frags, peaks, cells, "fragments"))
    assert out.uns["files"]["fragments"] == str(path)
    # the reference's peaks given as an AnnData: its var_names become the features
    ref = ad.AnnData(X=sp.csr_matrix((1, len(peaks))), var=pd.DataFrame(index=[f"p{i}" for i in range(len(peaks))]))
    ref.var[["chrom", "start", "end"]] = peaks[["chrom", "start", "end"]].to_numpy()
    ref.var["start"] = ref.var["start"].astype(int)
    ref.var["end"] = ref.var["end"].astype(int)
    again = ct.pp.peak_matrix(query, ref)
    assert again.var_names.tolist() == ref.var_names.tolist()
    np.testing.assert_array_equal(again.X.toarray(), out.X.toarray())
    # MuData: the 'atac' modality's obs and fragments
    import mudata as md

    mdata = md.MuData({"atac": query})
    np.testing.assert_array_equal(ct.pp.peak_matrix(mdata, bed).X.toarray(), out.X.toarray())


def test_peak_overlaps_lists_every_overlapping_pair():
    a = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [0, 100, 0], "end": [150, 120, 10]})
    b = pd.DataFrame({"chrom": ["chr1", "chr1", "chr1", "chr3"], "start": [50, 110, 150, 0], "end": [60, 400, 160, 10]})
    ov = ct.pp.peak_overlaps(a, b)
    pairs = sorted(zip(ov["query"], ov["reference"], ov["overlap_bp"], strict=True))
    assert pairs == [(0, 0, 10), (0, 1, 40), (1, 1, 10)]  # [0,150) and [150,160) only touch: no overlap


def test_real_pbmc_fragments_match_a_per_peak_count(shared_data):
    mdata = ct.datasets.pbmc_multiome(shared_data)
    atac = mdata["atac"]
    out = ct.pp.peak_matrix(mdata, atac, counting="fragments")
    frags = ct.io.read_fragments(atac.uns["files"]["fragments"])
    assert out.uns["peak_matrix"]["n_fragments_read"] == len(frags) == 367_439
    # per-peak vectorised count, independent of the searchsorted path
    rows = atac.obs_names.get_indexer(frags["barcode"])
    expected = np.zeros(out.shape, np.int64)
    chrom = frags["chrom"].astype(str).to_numpy()
    for j, (c, s, e) in enumerate(atac.var[["chrom", "start", "end"]].itertuples(index=False)):
        hit = (chrom == c) & (frags["start"].to_numpy() < e) & (frags["end"].to_numpy() > s) & (rows >= 0)
        np.add.at(expected[:, j], rows[hit], 1)
    np.testing.assert_array_equal(out.X.toarray(), expected)
    assert expected.sum() > 10_000
    # Cell Ranger ARC's own matrix in the h5mu counts cut sites: on the peaks inside the file's
    # windows (it holds only +-5 kb around 45 genes), ours equals it in every cell for most peaks
    cuts = ct.pp.peak_matrix(mdata, atac, counting="cut_sites").X.toarray()
    tenx = np.asarray(atac.X.todense() if sp.issparse(atac.X) else atac.X)
    covered = cuts.sum(axis=0) > 0
    assert covered.sum() > 120
    assert (cuts[:, covered] == tenx[:, covered]).all(axis=0).sum() >= 110


def test_bad_input_is_refused(tmp_path):
    peaks = pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [100]})
    with pytest.raises(ValueError, match="counting must be one of"):
        ct.pp.peak_matrix(tmp_path / "x.tsv.gz", peaks, counting="reads")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ct.pp.peak_matrix(tmp_path / "x.tsv.gz", peaks)
    bad = tmp_path / "bad.tsv"
    bad.write_text("chr1\t50\t10\tAAA\t1\n")
    with pytest.raises(ValueError, match="empty, inverted or negative"):
        ct.pp.peak_matrix(bad, peaks)
    with pytest.raises(KeyError, match="uns\\['files'\\]\\['fragments'\\]"):
        ct.pp.peak_matrix(ad.AnnData(obs=pd.DataFrame(index=["a"])), peaks)
    with pytest.raises(ValueError, match="duplicated names"):
        ct.pp.peak_table(["chr1:1-10", "chr1:1-10"])


def test_fragments_without_a_barcode_count_for_no_cell(tmp_path):
    # an empty barcode field is missing in both parsers: not a cell named "nan", and no crash when no
    # fragment of a block has a barcode (the second file)
    peaks = pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [100]})
    path = tmp_path / "f.tsv"
    path.write_text("chr1\t1\t20\tAC\t1\nchr1\t5\t30\t\t1\n# a comment sends this block to pandas\n")
    fixed = ct.pp.peak_matrix(path, peaks, barcodes=["AC", "nan"])
    np.testing.assert_array_equal(fixed.X.toarray().ravel(), [1, 0])
    found = ct.pp.peak_matrix(path, peaks)
    assert list(found.obs_names) == ["AC"]
    none = tmp_path / "none.tsv"
    none.write_text("chr1\t1\t20\t\t1\nchr1\t5\t30\t\t1\n")
    empty = ct.pp.peak_matrix(none, peaks)
    assert empty.n_obs == 0
    assert empty.uns["peak_matrix"]["n_fragments_read"] == 2
