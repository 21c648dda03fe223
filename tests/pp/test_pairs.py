from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct


@pytest.fixture(scope="module")
def pbmc(shared_data):
    m = ct.datasets.pbmc_multiome(shared_data)
    m.mod["atac"].obs["group"] = np.where(np.arange(m.n_obs) < 700, "big", "small")
    return m


def test_training_pair_from_fragments(pbmc, tmp_path):
    pytest.importorskip("MACS3")
    pair = ct.pp.training_pair(pbmc, "group", "big", tmp_path, n_cells=50, progress=False)
    assert pair.n_cells_noisy == 50 and pair.n_cells_clean == 700
    noisy, clean = ct.io.read_bigwig(pair.noisy, "chr1"), ct.io.read_bigwig(pair.clean, "chr1")
    assert 5 < clean.sum() / noisy.sum() < 30  # roughly 700 / 50 cells
    assert len(ct.io.read_peaks(pair.peaks)) > 5
    with pytest.raises(ValueError, match="has 300 cells; the noisy track needs fewer"):
        ct.pp.training_pair(pbmc, "group", "small", tmp_path / "s", n_cells=300, peaks=pair.peaks, progress=False)


def test_denoise_groups_records_in_uns(pbmc, tiny_model, tmp_path):
    # the tiny model comes from simulated data; here only the plumbing is under test
    with pytest.raises(ValueError, match="different assemblies"):
        ct.tl.denoise_groups(pbmc, tiny_model, "group", out_dir=tmp_path / "x", chroms=["chr1"], progress=False)
    res = ct.tl.denoise_groups(
        pbmc, tiny_model, "group", out_dir=tmp_path, chroms=["chr1"], copy=True, progress=False, check_genome=False
    )
    assert res is not pbmc
    rec = res.mod["atac"].uns["ct_denoise"]
    assert rec["params"]["groupby"] == "group" and rec["params"]["groups"] == ["big", "small"]
    table = rec["outputs"]
    assert table.loc["big", "n_cells"] == 700 and table.loc["small", "n_cells"] == 300
    for col in ("coverage", "track", "peakprob", "peaks"):
        assert all(p.endswith((".bw", ".narrowPeak")) for p in table[col])
    assert set(rec["peaks"]) == {"big", "small"}
    assert "ct_denoise" not in pbmc.mod["atac"].uns
    res.write(tmp_path / "with_peaks.h5mu")  # the record survives serialisation
