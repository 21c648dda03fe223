from __future__ import annotations

from contextlib import nullcontext

import anndata
import mudata
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
    # chr6 (31.6 Mb in the test set's sizes) rather than chr1 (161.6 Mb): the same path, 5 x less to cover
    pair = ct.tl.training_pair(pbmc, "group", "big", tmp_path, n_cells=50, chroms=["chr6"], progress=False)
    assert pair.n_cells_noisy == 50 and pair.n_cells_clean == 700
    noisy, clean = ct.io.read_bigwig(pair.noisy, "chr6"), ct.io.read_bigwig(pair.clean, "chr6")
    assert 5 < clean.sum() / noisy.sum() < 30  # roughly 700 / 50 cells
    assert len(ct.io.read_peaks(pair.peaks)) > 5
    with pytest.raises(ValueError, match="has 300 cells; the noisy track needs fewer"):
        ct.tl.training_pair(pbmc, "group", "small", tmp_path / "s", n_cells=300, peaks=pair.peaks, progress=False)


def test_denoise_groups_records_in_uns(pbmc, tiny_model, tmp_path):
    # the tiny model comes from simulated data; here only the plumbing is under test
    with pytest.raises(ValueError, match="different assemblies"):
        ct.tl.denoise_groups(pbmc, tiny_model, "group", out_dir=tmp_path / "x", chroms=["chr1"], progress=False)
    data = pbmc.copy()  # a group name with a slash, as cell-type names often have ('G/M prog')
    data.mod["atac"].obs["group"] = data.mod["atac"].obs["group"].replace({"small": "NK/ILC"})
    # chr6 (31.6 Mb in the test set's sizes) rather than chr1 (161.6 Mb): the same path, 5 x less to denoise
    res = ct.tl.denoise_groups(
        data, tiny_model, "group", out_dir=tmp_path, chroms=["chr6"], copy=True, progress=False, check_genome=False
    )
    assert res is not data
    rec = res.mod["atac"].uns["ct_denoise"]
    assert rec["params"]["groupby"] == "group" and rec["params"]["groups"] == ["NK/ILC", "big"]
    table = rec["outputs"]
    assert table.loc["big", "n_cells"] == 700 and table.loc["NK/ILC", "n_cells"] == 300
    for col in ("coverage", "track", "peakprob", "peaks"):
        assert all(p.endswith((".bw", ".narrowPeak")) for p in table[col])
    peaks = rec["peaks"]
    assert list(peaks.columns[:4]) == ["group", "chrom", "start", "end"]
    for group in ("big", "NK/ILC"):
        assert (peaks["group"] == group).sum() == table.loc[group, "n_peaks"]
        assert len(ct.io.read_peaks(table.loc[group, "peaks"])) == table.loc[group, "n_peaks"]
    assert "ct_denoise" not in data.mod["atac"].uns
    strict = "disallow_forward_slash_in_h5ad"  # anndata's coming default: no slash in any h5ad key
    with anndata.settings.override(**{strict: True}) if hasattr(anndata.settings, strict) else nullcontext():
        res.write(tmp_path / "with_peaks.h5mu")  # the record survives serialisation
    back = mudata.read_h5mu(tmp_path / "with_peaks.h5mu").mod["atac"].uns["ct_denoise"]
    assert len(back["peaks"]) == len(peaks) and set(back["outputs"].index) == {"big", "NK/ILC"}


def _chain(adata, out, *, chroms=None, peaks=None, **setup_kw):
    """fragments -> training_pair -> setup_tracks -> train -> denoise_groups, one call each."""
    pair = ct.tl.training_pair(
        adata, "group", "A", out / "pair", n_cells=40, peaks=peaks, chroms=chroms, progress=False
    )
    setup = ct.models.TrackDenoiser.setup_tracks(pair.noisy, pair.clean, pair.peaks, window=8_192, **setup_kw)
    model = ct.models.TrackDenoiser(setup, channels=8, dilations=(1, 2, 4))
    model.train(max_epochs=1, accelerator="cpu", progress=False)
    ct.tl.denoise_groups(
        adata, model, "group", out_dir=out / "denoised", n_cells=40, chroms=chroms, progress=False, accelerator="cpu"
    )
    return pair, model


def test_single_cell_chain_on_simulated_fragments(tmp_path):
    adata = ct.datasets.simulate_fragments(tmp_path / "sim", random_state=0)
    peaks = adata.uns["simulation"]["peaks"]
    pair, model = _chain(adata, tmp_path, peaks=peaks, val_chroms=["chr1:300000-400000"], holdout_chroms=["chr2"])
    # one genome: both tracks, the model and every group's coverage share the sizes inferred from all cells
    sizes = ct.io.read_chrom_sizes(pair.chrom_sizes)
    assert ct.io.read_chrom_sizes(pair.noisy) == ct.io.read_chrom_sizes(pair.clean) == sizes
    assert model.spec_["genome"] == sizes
    rec = adata.uns["ct_denoise"]
    assert ct.io.read_chrom_sizes(rec["chrom_sizes"]) == sizes and list(rec["outputs"].index) == ["A", "B"]
    for group in ("A", "B"):
        assert ct.io.read_chrom_sizes(rec["outputs"].loc[group, "track"]) == sizes
    # 40 cells in, clean units out: the denoised mean is near the 300-cell clean track's, not the 40-cell input's
    clean = ct.io.read_bigwig(pair.clean, "chr2").mean()
    noisy = ct.io.read_bigwig(pair.noisy, "chr2").mean()
    a_track = ct.io.read_bigwig(rec["outputs"].loc["A", "track"], "chr2").mean()
    assert clean / noisy > 4 and 0.5 < a_track / clean < 2


def test_single_cell_chain_on_pbmc(pbmc, tmp_path):
    pytest.importorskip("MACS3")
    obs = pbmc.mod["atac"].obs
    before = obs["group"].copy()
    obs["group"] = np.where(np.arange(pbmc.n_obs) < 700, "A", "B")
    try:
        # chr6 holds 10 Mb of the test set's regions: train on its start, choose on its end
        pair, model = _chain(pbmc, tmp_path, chroms=["chr6"], val_chroms=["chr6:29000000-31600000"])
    finally:
        obs["group"] = before
    rec = pbmc.mod["atac"].uns.pop("ct_denoise")
    assert ct.io.read_chrom_sizes(rec["chrom_sizes"]) == ct.io.read_chrom_sizes(pair.chrom_sizes)
    assert ct.io.read_chrom_sizes(rec["chrom_sizes"]) == model.spec_["genome"]
    assert rec["outputs"].loc["A", "n_cells"] == 40 and rec["outputs"]["n_peaks"].ge(0).all()
