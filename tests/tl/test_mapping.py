from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import chromtools as ct
from chromtools.models import freeze_for_surgery, reference_state_dict
from chromtools.tl._query_alignment import feature_indexer

SMALL = {"n_hidden": 32, "n_latent": 6}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim():
    a = ct.datasets.simulate_scatac(900, 400, n_cell_types=4, n_batches=3, absent_cell_type="type_3", random_state=1)
    ref = a[a.obs["batch"] != "batch_2"].copy()
    query = a[a.obs["batch"] == "batch_2"].copy()
    return ref, query


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    ref, _ = sim
    ref = ref.copy()
    folder = tmp_path_factory.mktemp("reference")
    assert ct.tl.train_reference(ref, "batch", "cell_type", model_dir=folder, max_epochs=30, model_kwargs=SMALL) is None
    assert ref.uns["X_reference"]["params"]["model_dir"] == str(folder)
    return ref, ct.tl.load_model(folder, ref)


def _block(t: torch.Tensor, shape) -> torch.Tensor:
    return t[tuple(slice(0, s) for s in shape)]


# ----------------------------------------------------------------------------------------------
# surgery
# ----------------------------------------------------------------------------------------------
def test_surgery_trains_new_batch_rows_and_keeps_every_reference_tensor_bit_identical(
    sim, reference, tmp_path, monkeypatch
):
    from chromtools.tl import _surgery

    ref_adata, model = reference
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    query = sim[1].copy()
    built = []  # the query model as surgery built it (dropout frozen in memory, not in the saved file)
    freeze = _surgery.freeze_for_surgery
    monkeypatch.setattr(_surgery, "freeze_for_surgery", lambda qm, state: built.append(qm) or freeze(qm, state))
    assert ct.tl.map_query(query, model, max_epochs=5, model_dir=tmp_path / "query_model") is None
    (qm,) = built
    saved = ct.tl.load_model(tmp_path / "query_model")
    assert all(torch.equal(v, saved.module.state_dict()[k]) for k, v in qm.module.state_dict().items())
    after = qm.module.state_dict()
    assert set(after) == set(before)
    grown = []
    for name, old in before.items():
        new = after[name]
        assert torch.equal(_block(new, old.shape), old), f"{name} changed"
        if new.shape != old.shape:
            grown.append(name)
    assert sorted(grown) == ["decoder.batch_weight", "encoder.batch_weight"]
    # the reference model itself is untouched too
    assert all(torch.equal(v, before[k]) for k, v in model.module.state_dict().items())
    info = query.uns["X_reference"]
    assert info["frozen_identical"] and info["frozen_max_abs_diff"] == 0.0
    assert info["new_batches"] == ["batch_2"] and info["n_epochs"] >= 1
    assert info["n_trained_parameters"] == 2 * SMALL["n_hidden"]
    assert query.obsm["X_reference"].shape == (query.n_obs, SMALL["n_latent"])
    # surgery ran with dropout switched off
    assert all(m.p == 0 for m in qm.module.modules() if isinstance(m, torch.nn.Dropout))


def test_only_new_rows_train_even_with_weight_decay(sim, reference):
    _, model = reference
    query = sim[1].copy()
    query.obs["cell_type"] = "Unknown"
    qm = ct.models.PeakSCANVI.load_query_data(query, model, freeze_dropout=True)
    state = reference_state_dict(model)
    table = freeze_for_surgery(qm, state)
    assert int(table["n_trainable"].sum()) == 2 * SMALL["n_hidden"]
    init = qm.module.encoder.batch_weight.detach().clone()
    qm.train(max_epochs=3, weight_decay=0.0, module_mode="eval", early_stopping=False)
    w = qm.module.encoder.batch_weight.detach()
    assert torch.equal(w[:2], state["encoder.batch_weight"])  # reference batches
    assert not torch.equal(w[2], init[2])  # the query batch was trained
    frozen = [p for n, p in qm.module.named_parameters() if "batch_weight" not in n]
    assert all(not p.requires_grad for p in frozen)


def test_scvi_tools_peakvi_reference_is_frozen_despite_its_weight_decay(sim, tmp_path):
    # PEAKVI.train() forces weight_decay=1e-3 unless told otherwise: map_query must pass 0
    ref, query = (x.copy() for x in sim)
    ct.tl.train_reference(ref, "batch", model="peakvi", max_epochs=3, model_dir=tmp_path / "peakvi")
    model = ct.tl.load_model(tmp_path / "peakvi", ref)  # scvi-tools models load with their data
    assert type(model).__name__ == "PEAKVI" and model.module.encode_covariates  # surgery needs encoded covariates
    ct.tl.map_query(query, tmp_path / "peakvi", max_epochs=3)
    assert query.uns["X_reference"]["frozen_identical"]
    assert query.uns["X_reference"]["n_trained_parameters"] > 0


@pytest.mark.parametrize("kind", ["scvi", "scanvi", "totalvi"])
def test_any_scvi_arches_model_can_be_the_reference(kind):
    import scvi

    ad = scvi.data.synthetic_iid(batch_size=80, n_batches=3, n_genes=40, n_proteins=5)
    ref = ad[ad.obs["batch"] != "batch_2"].copy()
    query = ad[ad.obs["batch"] == "batch_2"].copy()
    scvi.settings.seed = 0
    if kind == "scvi":
        scvi.model.SCVI.setup_anndata(ref, batch_key="batch")
        model = scvi.model.SCVI(ref, n_latent=4, encode_covariates=True)
    elif kind == "scanvi":
        ref.obs["labels"] = ref.obs["labels"].astype(str)
        scvi.model.SCANVI.setup_anndata(ref, batch_key="batch", labels_key="labels", unlabeled_category="Unknown")
        model = scvi.model.SCANVI(ref, n_latent=4)
    else:
        scvi.model.TOTALVI.setup_anndata(ref, batch_key="batch", protein_expression_obsm_key="protein_expression")
        model = scvi.model.TOTALVI(ref, n_latent=4)
    model.train(max_epochs=2, enable_progress_bar=False)
    ct.tl.map_query(query, model, max_epochs=2, key_added="X_scvi")
    info = query.uns["X_scvi"]
    assert info["params"]["reference"] == type(model).__name__
    assert info["frozen_identical"] and info["n_trained_parameters"] > 0
    assert query.obsm["X_scvi"].shape == (query.n_obs, 4)


# ----------------------------------------------------------------------------------------------
# feature alignment
# ----------------------------------------------------------------------------------------------
def test_feature_indexer_and_zero_filled_alignment():
    ref_names = pd.Index(["a", "b", "c", "d"])
    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 4]]))  # query features: d, x, b
    idx, frac, how = feature_indexer(pd.Index(["d", "x", "b"]), ref_names, min_overlap=0.5)
    np.testing.assert_array_equal(idx, [-1, 2, -1, 0])
    assert frac == 0.5 and how == "names"
    S, info = ct.pp.feature_map(pd.Index(["d", "x", "b"]), ref_names, matching="names")
    np.testing.assert_array_equal((X @ S).toarray(), [[0, 2, 0, 1], [0, 4, 0, 0]])
    assert info["n_shared"] == 2 and info["matched_by"] == "names"


def test_peak_names_in_another_style_match_by_coordinates():
    ref_names = pd.Index(["chr1:100-600", "chr1:900-1400", "chr2:5-505"])
    idx, frac, how = feature_indexer(pd.Index(["chr2-5-505", "chr1_100_600", "chr1-900-1400"]), ref_names)
    np.testing.assert_array_equal(idx, [1, 2, 0])
    assert frac == 1.0 and how == "peak coordinates"


def test_shuffled_query_with_missing_and_extra_peaks_maps_like_the_aligned_one(sim, reference):
    _, model = reference
    query = sim[1].copy()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(query.n_vars, size=int(0.9 * query.n_vars), replace=False))
    messy = query[:, keep].copy()
    extra = ct.datasets.simulate_scatac(query.n_obs, 20, random_state=9)
    extra.var_names = [f"extra_{i}" for i in range(20)]
    extra.obs_names = messy.obs_names
    import anndata as ad

    messy = ad.concat([messy, extra], axis=1, merge="first")
    messy.obs = query.obs.copy()
    messy = messy[:, rng.permutation(messy.n_vars)].copy()
    clean = query.copy()
    dense = clean.X.toarray() if sp.issparse(clean.X) else np.array(clean.X)
    dense[:, np.setdiff1d(np.arange(query.n_vars), keep)] = 0  # what zero-filling must produce
    clean.X = sp.csr_matrix(dense)
    clean.X.eliminate_zeros()
    ct.tl.map_query(messy, model, max_epochs=3)
    ct.tl.map_query(clean, model, max_epochs=3)
    np.testing.assert_allclose(messy.obsm["X_reference"], clean.obsm["X_reference"], rtol=1e-5, atol=1e-5)
    assert messy.uns["X_reference"]["features"]["n_shared"] == keep.size
    assert messy.uns["X_reference"]["features"]["overlap"] == pytest.approx(0.9, abs=0.01)


def test_low_overlap_warns_and_too_low_or_no_overlap_is_refused(sim, reference):
    _, model = reference
    query = sim[1]
    n = query.n_vars
    with pytest.warns(UserWarning, match=r"Only 70\.0% of the reference's features"):
        ct.tl.map_query(query[:, : int(0.7 * n)].copy(), model, max_epochs=1)
    with pytest.raises(ValueError, match=r"Only 40\.0%.*at least 50%"):
        ct.tl.map_query(query[:, : int(0.4 * n)].copy(), model, max_epochs=1)
    ct.tl.map_query(query[:, : int(0.4 * n)].copy(), model, max_epochs=1, min_overlap=0.3)  # allowed on request
    renamed = query.copy()
    renamed.var = pd.DataFrame(index=[f"gene{i}" for i in range(n)])  # no names nor coordinates to match
    with pytest.raises(ValueError, match="shares no features with the reference"):
        ct.tl.map_query(renamed, model)


# ----------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------
def test_query_batch_column(sim, reference):
    _, model = reference
    query = sim[1].copy()
    query.obs = query.obs.rename(columns={"batch": "library"})
    with pytest.raises(KeyError, match="no batch column 'batch'.*batch_key="):
        ct.tl.map_query(query, model)
    ct.tl.map_query(query, model, batch_key="library", max_epochs=2)
    assert query.uns["X_reference"]["new_batches"] == ["batch_2"]
    query.obs["library"] = query.obs["library"].astype(object)
    query.obs.iloc[0, query.obs.columns.get_loc("library")] = np.nan
    with pytest.raises(ValueError, match="batch column 'library' has missing values"):
        ct.tl.map_query(query, model, batch_key="library")


def test_non_count_query_and_bad_references_are_refused(sim, reference, tmp_path):
    _, model = reference
    query = sim[1].copy()
    query.layers["log"] = np.log1p(query.X.toarray())
    with pytest.raises(ValueError, match="non-integer values.*raw peak counts"):
        ct.tl.map_query(query, model, layer="log")
    with pytest.raises(TypeError, match="trained scvi-tools/chromtools model or a saved model folder"):
        ct.tl.map_query(query, 42)
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        ct.tl.map_query(query, tmp_path)
    untrained = ref = sim[0].copy()
    ct.models.PeakTRVAE.setup_anndata(ref, batch_key="batch")
    untrained = ct.models.PeakTRVAE(ref)
    with pytest.raises(ValueError, match="not trained"):
        ct.tl.map_query(query, untrained)


def test_reference_saved_by_an_incompatible_version_is_refused(sim, reference, tmp_path):
    _, model = reference
    path = tmp_path / "ref"
    model.save(path, overwrite=True)
    saved = torch.load(path / "model.pt", weights_only=False)
    saved["attr_dict"]["chromtools_format_"] = MODEL_FORMAT = 999
    saved["attr_dict"]["chromtools_version_"] = "9.0.0"
    torch.save(saved, path / "model.pt")
    with pytest.raises(ValueError, match=rf"saved by chromtools 9\.0\.0 \(model format {MODEL_FORMAT}\)"):
        ct.tl.map_query(sim[1].copy(), str(path))
    query = sim[1].copy()
    query.obsm["X_reference"] = np.zeros((query.n_obs, SMALL["n_latent"]), np.float32)
    with pytest.raises(ValueError, match="model format 999"):
        ct.tl.transfer_labels(query, path, "cell_type")


# ----------------------------------------------------------------------------------------------
# MuData, save/load, determinism
# ----------------------------------------------------------------------------------------------
def test_mudata_query_uses_its_atac_modality(sim, reference):
    import mudata as md

    _, model = reference
    query = sim[1].copy()
    rna = ct.datasets.simulate_scatac(query.n_obs, 30, random_state=5)
    rna.obs_names = query.obs_names
    mdata = md.MuData({"atac": query, "rna": rna})
    ct.tl.map_query(mdata, model, max_epochs=2)
    assert mdata["atac"].obsm["X_reference"].shape == (query.n_obs, SMALL["n_latent"])
    assert mdata["atac"].uns["X_reference"]["frozen_identical"]


def test_rna_atac_mudata_with_multivi(tmp_path):
    import mudata as md

    atac = ct.datasets.simulate_scatac(300, 120, n_cell_types=3, n_batches=2, random_state=2)
    rng = np.random.default_rng(0)
    types = atac.obs["cell_type"].cat.codes.to_numpy()
    rate = rng.gamma(2.0, 1.0, size=(3, 50))[types]
    rna = ct.datasets.simulate_scatac(300, 50, random_state=0)
    rna.X = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
    rna.var_names = [f"g{i}" for i in range(50)]
    rna.obs = atac.obs.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["batch"] = atac.obs["batch"].to_numpy()
    mdata.obs["cell_type"] = atac.obs["cell_type"].to_numpy()
    ref = mdata[mdata.obs["batch"] == "batch_0"].copy()
    query = mdata[mdata.obs["batch"] == "batch_1"].copy()
    ct.tl.train_reference(ref, "batch", "cell_type", max_epochs=3, model_dir=tmp_path / "multivi")
    assert ref.uns["X_reference"]["params"]["model"] == "multivi" and ref.obsm["X_reference"].shape[0] == ref.n_obs
    assert type(ct.tl.load_model(tmp_path / "multivi", ref)).__name__ == "MULTIVI"
    ct.tl.map_query(query, str(tmp_path / "multivi"), max_epochs=2)
    assert query.obsm["X_reference"].shape == (query.n_obs, ref.obsm["X_reference"].shape[1])
    assert query.uns["X_reference"]["frozen_identical"]
    assert set(query.uns["X_reference"]["features"]["modalities"]) == {"rna", "atac"}
    ct.tl.transfer_labels(query, ref, "cell_type")
    assert "cell_type_pred" in query.obs


def test_saved_reference_maps_a_query_in_a_fresh_process(sim, reference, tmp_path):
    _, model = reference
    folder = tmp_path / "reference"
    model.save(folder, overwrite=True)
    query = sim[1].copy()
    query.write_h5ad(tmp_path / "query.h5ad")
    ct.tl.map_query(query, str(folder), max_epochs=3)
    ct.tl.transfer_labels(query, str(folder), "cell_type")
    script = textwrap.dedent(
        f"""
        import anndata as ad
        import chromtools as ct
        q = ad.read_h5ad({str(tmp_path / "query.h5ad")!r})
        ct.tl.map_query(q, {str(folder)!r}, max_epochs=3)
        ct.tl.transfer_labels(q, {str(folder)!r}, "cell_type")
        q.write_h5ad({str(tmp_path / "mapped.h5ad")!r})
        """
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import anndata as ad

    mapped = ad.read_h5ad(tmp_path / "mapped.h5ad")
    np.testing.assert_allclose(mapped.obsm["X_reference"], query.obsm["X_reference"], rtol=1e-5, atol=1e-5)
    assert (mapped.obs["cell_type_pred"].astype(str) == query.obs["cell_type_pred"].astype(str)).all()
    known = mapped.obs["cell_type"] != "type_3"
    acc = (mapped.obs["cell_type_pred"].astype(str) == mapped.obs["cell_type"].astype(str))[known].mean()
    assert acc > 0.9


def test_copy_and_determinism(sim, reference, tmp_path):
    ref_adata, model = reference
    query = sim[1].copy()
    out = ct.tl.map_query(query, model, max_epochs=3, copy=True)
    assert "X_reference" not in query.obsm and "X_reference" in out.obsm
    again = ct.tl.map_query(query, model, max_epochs=3, copy=True)
    np.testing.assert_array_equal(out.obsm["X_reference"], again.obsm["X_reference"])
    # the saved folder (what train_reference leaves) maps to the same numbers as the model object
    model.save(tmp_path / "ref", overwrite=True)
    res = ct.tl.map_query(query, tmp_path / "ref", max_epochs=3, copy=True, model_dir=tmp_path / "q")
    np.testing.assert_array_equal(res.obsm["X_reference"], out.obsm["X_reference"])
    qm = ct.tl.load_model(tmp_path / "q")
    assert isinstance(qm, ct.models.PeakSCANVI) and res is not query
    assert res.uns["X_reference"]["params"]["model_dir"] == str(tmp_path / "q")
    # train_reference: copy=True returns a new object and leaves the input untouched
    small = ref_adata[:200].copy()
    del small.obsm["X_reference"], small.uns["X_reference"]
    trained = ct.tl.train_reference(
        small, "batch", "cell_type", model_dir=tmp_path / "r", max_epochs=1, model_kwargs=SMALL, copy=True
    )
    assert "X_reference" in trained.obsm and "X_reference" not in small.obsm
    with pytest.raises(FileNotFoundError, match="model_dir"):
        ct.tl.train_reference(small, "batch", "cell_type", model_dir=tmp_path / "no" / "such")


def test_query_with_its_own_peaks_maps_by_overlap(sim, reference):
    """Peaks re-called on the query (shifted, resized, some missing) are matched by overlap, with a warning."""
    ref_adata, model = reference
    query = sim[1].copy()
    ct.tl.map_query(query, model, max_epochs=5, random_state=0)
    ct.tl.transfer_labels(query, ref_adata, "cell_type", novelty=False, key_added="exact")
    rng = np.random.default_rng(3)
    own = query.copy()
    start = own.var["start"].to_numpy() + rng.integers(-150, 150, own.n_vars)
    end = own.var["end"].to_numpy() + rng.integers(-150, 150, own.n_vars)
    own.var_names = [f"{c}:{s}-{e}" for c, s, e in zip(own.var["chrom"], start, end, strict=True)]
    own.var["start"], own.var["end"] = start, end
    own = own[:, rng.random(own.n_vars) < 0.9].copy()  # and 10 % of the peaks were not called
    with pytest.warns(UserWarning, match="peaks differ from the reference's.*peak_matrix"):
        ct.tl.map_query(own, model, max_epochs=5, random_state=0)
    info = own.uns["X_reference"]["features"]
    assert info["matched_by"] == "peak overlap" and info["overlap_rule"] == "sum"
    assert 0.85 < info["overlap"] < 0.95 and info["n_shared"] == round(info["overlap"] * info["n_features"])
    ct.tl.transfer_labels(own, ref_adata, "cell_type", novelty=False, key_added="overlap")
    truth = own.obs["cell_type"].astype(str)
    known = truth != "type_3"
    acc_exact = (query.obs["exact"].astype(str) == truth)[known].mean()
    acc_overlap = (own.obs["overlap"].astype(str) == truth)[known].mean()
    assert acc_overlap > 0.9 and acc_overlap > acc_exact - 0.05
    with pytest.raises(ValueError, match="shares no features.*peak_matrix"):
        ct.tl.map_query(own, model, feature_matching="names", max_epochs=1)
