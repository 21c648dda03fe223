"""Gene activity from peaks and from fragments: windows, strands, exon tables, real HSMM data."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import chromtools as ct


@pytest.fixture
def annotation():
    # geneA on + (TSS 10_000, body to 20_000); geneB on - (TSS 49_999, body from 40_000); geneC on chr2
    return pd.DataFrame(
        {
            "chrom": ["chr1", "chr1", "chr1", "chr1", "chr2"],
            "start": [10_000, 15_000, 40_000, 45_000, 1_000],
            "end": [12_000, 20_000, 42_000, 50_000, 3_000],
            "strand": ["+", "+", "-", "-", "+"],
            "symbol": ["geneA", "geneA", "geneB", "geneB", "geneC"],
        }
    )


@pytest.fixture
def peaks():
    names = [
        "chr1:7000-7500",  # 2.5-3 kb upstream of geneA: outside the 2-kb promoter
        "chr1:8500-9000",  # geneA promoter
        "chr1:16000-16500",  # geneA body
        "chr1:41000-41200",  # geneB body
        "chr1:50500-51000",  # geneB promoter (upstream on the - strand)
        "chr1:52500-53000",  # beyond geneB's promoter
        "chr2:500-1500",  # geneC promoter and body
        "chr3:0-100",  # no gene
    ]
    counts = np.array(
        [
            [1, 2, 3, 4, 5, 6, 7, 8],
            [0, 1, 0, 1, 0, 1, 0, 1],
        ],
        dtype=np.float32,
    )
    return AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(index=["cellA", "cellB"]), var=pd.DataFrame(index=names))


def test_exons_are_merged_into_gene_bodies(annotation):
    genes = ct.pp.gene_table(annotation)
    assert genes.index.tolist() == ["geneA", "geneB", "geneC"]
    assert genes.loc["geneA", ["start", "end"]].tolist() == [10_000, 20_000]
    assert genes.loc["geneB", ["start", "end", "strand"]].tolist() == [40_000, 50_000, "-"]
    win = ct.pp.gene_windows(genes, upstream=2_000)
    assert win.loc["geneA", ["tss", "window_start", "window_end"]].tolist() == [10_000, 8_000, 20_000]
    assert win.loc["geneB", ["tss", "window_start", "window_end"]].tolist() == [49_999, 40_000, 52_000]
    prom = ct.pp.gene_windows(genes, upstream=2_000, downstream=500, gene_body=False)
    assert prom.loc["geneA", ["window_start", "window_end"]].tolist() == [8_000, 10_501]
    assert prom.loc["geneB", ["window_start", "window_end"]].tolist() == [49_499, 52_000]
    assert prom.loc["geneC", "window_start"] == 0  # clipped at the chromosome start


def test_gene_activity_from_peaks(peaks, annotation):
    ga = ct.pp.gene_activity(peaks, annotation)
    X = ga.X.toarray()
    assert ga.var_names.tolist() == ["geneA", "geneB", "geneC"]
    assert ga.obs_names.tolist() == ["cellA", "cellB"]
    # geneA: promoter (2) + body (3); geneB: body (4) + promoter (5); geneC: 7
    assert X[0].tolist() == [5, 9, 7]
    assert X[1].tolist() == [1, 1, 0]
    assert ga.var["n_peaks"].tolist() == [2, 2, 1]
    assert np.array_equal(ga.layers["counts"].toarray(), X)
    promoter_only = ct.pp.gene_activity(peaks, annotation, gene_body=False)
    assert promoter_only.X.toarray()[0].tolist() == [2, 5, 7]
    wider = ct.pp.gene_activity(peaks, annotation, upstream=3_000)
    assert wider.uns["gene_activity"]["params"]["upstream"] == 3_000
    assert wider.X.toarray()[0].tolist() == [6, 15, 7]


def test_gene_activity_from_fragments(tmp_path, annotation):
    rows = [
        ("chr1", 8_900, 9_300, "cellA", 1),  # both cuts in geneA's promoter -> 2
        ("chr1", 19_990, 20_400, "cellA", 3),  # start in geneA body (end outside) -> 1 (duplicates ignored)
        ("chr1", 51_990, 52_100, "cellB", 1),  # start in geneB promoter, end outside -> 1
        ("chr1", 30_000, 30_200, "cellB", 1),  # nothing
        ("chr2", 100, 2_000, "cellB", 1),  # geneC: both cuts -> 2
        ("chr1", 9_000, 9_100, "other", 1),  # not a cell of the AnnData
    ]
    path = tmp_path / "fragments.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("# comment\n")
        for r in rows:
            fh.write("\t".join(map(str, r)) + "\n")
    cells = AnnData(np.zeros((2, 1), np.float32), obs=pd.DataFrame(index=["cellA", "cellB"]))
    ga = ct.pp.gene_activity(cells, annotation, fragments=path)
    assert ga.X.toarray().tolist() == [[3, 0, 0], [0, 1, 2]]
    assert ga.var["n_insertions"].tolist() == [3, 1, 2]
    cells.uns["files"] = {"fragments": str(path)}
    assert np.array_equal(ct.pp.gene_activity(cells, annotation, fragments=True).X.toarray(), ga.X.toarray())
    strangers = AnnData(np.zeros((1, 1), np.float32), obs=pd.DataFrame(index=["AAAC-1"]))
    with pytest.raises(ValueError, match="No fragment"):
        ct.pp.gene_activity(strangers, annotation, fragments=path)


def test_gtf_annotation(tmp_path, peaks):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        "#!genome-build test\n"
        'chr1\ttest\tgene\t10001\t20000\t.\t+\t.\tgene_id "G1"; gene_name "geneA";\n'
        'chr1\ttest\texon\t10001\t12000\t.\t+\t.\tgene_id "G1"; gene_name "geneA";\n'
        'chr1\ttest\tgene\t40001\t50000\t.\t-\t.\tgene_id "G2"; gene_name "geneB";\n'
    )
    genes = ct.pp.gene_table(gtf)
    assert genes.loc["geneA", ["start", "end"]].tolist() == [10_000, 20_000]
    ga = ct.pp.gene_activity(peaks, gtf)
    assert ga.X.toarray()[0].tolist() == [5, 9]


def test_bad_annotation_and_layer(peaks, annotation):
    with pytest.raises(KeyError, match="lacks column"):
        ct.pp.gene_table(annotation.drop(columns="start"))
    with pytest.raises(KeyError, match="No gene-name column"):
        ct.pp.gene_table(annotation.drop(columns="symbol"))
    with pytest.raises(KeyError, match="gene_key 'x'"):
        ct.pp.gene_table(annotation, gene_key="x")
    with pytest.raises(KeyError, match="Layer 'raw' does not exist"):
        ct.pp.gene_activity(peaks, annotation, layer="raw")
    with pytest.raises(ValueError, match="inverted"):
        ct.pp.gene_table(annotation.assign(end=annotation["start"]))
    with pytest.raises(ValueError, match="must be >= 0"):
        ct.pp.gene_windows(ct.pp.gene_table(annotation), upstream=-1)


def test_hsmm_gene_activity_feeds_the_time_course(shared_data):
    atac = ct.datasets.hsmm_sciatac(shared_data)
    exons = ct.datasets.hsmm_gene_annotation(shared_data)
    ga = ct.pp.gene_activity(atac, exons)
    assert ga.n_obs == 200 and 850 <= ga.n_vars <= 904
    assert (ga.var["n_peaks"] > 0).mean() > 0.7
    # every count of a peak inside a gene window is used; peaks overlap several genes at most a few times
    assert 0.5 * atac.X.sum() < ga.X.sum() < 2 * atac.X.sum()
    assert ga.obs["time_point"].equals(atac.obs["time_point"])
    s = ct.pp.timecourse_summary(ga, "time", layer="counts", n_top_genes=200)
    assert s.shape == (200, 4) and s.var["time"].tolist() == [0, 24, 48, 72]
