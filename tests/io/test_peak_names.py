from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData

import chromtools as ct


def test_parse_all_forms():
    df = ct.io.parse_peak_names(["chr1:100-200", "chr2-5-10", "chrX_7_9", "chr1_KI270706v1_random_30_40"])
    assert df["chrom"].tolist() == ["chr1", "chr2", "chrX", "chr1_KI270706v1_random"]
    assert df["start"].tolist() == [100, 5, 7, 30] and df["end"].tolist() == [200, 10, 9, 40]
    one = ct.io.parse_peak_names(["chr5_180470204_180470704"], one_based=True)
    assert one["start"].item() == 180470203 and one["end"].item() == 180470704


def test_bad_names():
    with pytest.raises(ValueError, match="not of the form"):
        ct.io.parse_peak_names(["chr1:100-200", "gene_ABC"])
    with pytest.raises(ValueError, match="end <= start"):
        ct.io.parse_peak_names(["chr1:200-100"])


def test_add_peak_coordinates_anndata_and_copy():
    a = AnnData(np.zeros((2, 2), np.float32))
    a.var_names = ["chr1:1-5", "chr2-3-9"]
    b = ct.io.add_peak_coordinates(a, copy=True)
    assert "chrom" not in a.var and b.var["end"].tolist() == [5, 9]
    assert ct.io.add_peak_coordinates(a) is None and a.var["chrom"].tolist() == ["chr1", "chr2"]


def test_real_muon_h5mu(shared_data):
    m = ct.datasets.pbmc_multiome(shared_data)
    var = m.mod["atac"].var
    assert var.loc["chr1:100350982-100353664", ["start", "end"]].tolist() == [100350982, 100353664]
    bmmc = ct.datasets.bmmc_multiome(shared_data)
    assert bmmc.mod["atac"].var["chrom"].iloc[0] == "chr1"
