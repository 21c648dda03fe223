from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData, read_h5ad

import chromtools as ct
from chromtools.tl._label_transfer import (
    _weights,
    balance_label_prior,
    distance_ratio,
    knn_label_probabilities,
    reference_self_consistency,
)


def _adata(latent, labels=None, key="X_reference"):
    obs = pd.DataFrame(index=[f"c{i}" for i in range(len(latent))])
    if labels is not None:
        obs["cell_type"] = pd.Categorical(labels)
    ad = AnnData(X=np.zeros((len(latent), 1), np.float32), obs=obs)
    ad.obsm[key] = np.asarray(latent, np.float32)
    return ad


def _naive(ref, labels, query, k, weighting):
    """Per-cell loop, written independently of the vectorised implementation."""
    classes = sorted(set(labels))
    out = np.zeros((len(query), len(classes)))
    for i, q in enumerate(query):
        d = np.linalg.norm(ref - q, axis=1)
        nn = np.argsort(d, kind="stable")[:k]
        dd = d[nn]
        if weighting == "uniform":
            w = np.ones(k)
        elif weighting == "distance":
            w = 1 / np.maximum(dd, 1e-12)
        elif weighting == "scarches":
            w = np.exp(-dd / (2 / dd.std()) ** 2)
        else:
            w = np.exp(-0.5 * (dd / np.median(dd)) ** 2)
        w = w / w.sum()
        for j, n in enumerate(nn):
            out[i, classes.index(labels[n])] += w[j]
    return out


def test_hand_computed_inverse_distance_vote():
    ref = _adata([[0.0], [1.0], [3.0], [10.0]], ["A", "A", "B", "B"])
    query = _adata([[2.0]])
    ct.tl.transfer_labels(query, ref, "cell_type", n_neighbors=3, weighting="distance", novelty=False)
    # neighbours at distances 1 (x=1, A), 1 (x=3, B), 2 (x=0, A): weights 1, 1, 1/2
    assert list(query.uns["cell_type_pred"]["labels"]) == ["A", "B"]
    probs = query.obsm["cell_type_pred_probabilities"][0]
    assert probs[0] == pytest.approx(1.5 / 2.5) and probs[1] == pytest.approx(1.0 / 2.5)
    assert query.obs["cell_type_pred"].iloc[0] == "A"
    assert query.obs["cell_type_pred_probability"].iloc[0] == pytest.approx(0.6)
    assert query.obs["cell_type_pred_uncertainty"].iloc[0] == pytest.approx(0.4)
    assert query.obs["cell_type_pred_ambiguity"].iloc[0] == pytest.approx(1 - (0.6 - 0.4))


@pytest.mark.parametrize("weighting", ["gaussian", "scarches", "distance", "uniform"])
def test_vectorised_rule_equals_a_per_cell_loop(weighting):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 5))
    labels = list(rng.choice(["x", "y", "z"], size=300))
    query = rng.normal(size=(50, 5))
    probs, dist, idx = knn_label_probabilities(ref, labels, query, n_neighbors=12, weighting=weighting)
    np.testing.assert_allclose(probs.to_numpy(), _naive(ref, labels, query, 12, weighting), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert dist.shape == idx.shape == (50, 12) and np.all(np.diff(dist, axis=1) >= 0)


def test_balanced_prior_divides_votes_by_reference_shares():
    # reference: 3 A, 1 B (shares 3/4, 1/4); votes 0.6 A / 0.4 B become 0.8 / 1.6, renormalised 1/3 / 2/3
    probs = pd.DataFrame([[0.6, 0.4], [1.0, 0.0], [0.0, 0.0]], columns=pd.Index(["A", "B"], name="label"))
    out = balance_label_prior(probs, ["A", "A", "A", "B"])
    np.testing.assert_allclose(out.to_numpy(), [[1 / 3, 2 / 3], [1.0, 0.0], [0.0, 0.0]])
    assert list(out.columns) == ["A", "B"]
    with pytest.raises(ValueError, match="no reference cell"):
        balance_label_prior(probs, ["A", "A"])


def test_balanced_prior_finds_a_type_rare_in_the_reference_but_common_in_the_query():
    # two overlapping types; B is 10 % of the reference but half of the query
    rng = np.random.default_rng(3)
    ref_latent = np.r_[rng.normal(0.0, 1.0, (900, 2)), rng.normal(1.5, 1.0, (100, 2))]
    ref = _adata(ref_latent, ["A"] * 900 + ["B"] * 100)
    q_latent = np.r_[rng.normal(0.0, 1.0, (500, 2)), rng.normal(1.5, 1.0, (500, 2))]
    truth = np.array(["A"] * 500 + ["B"] * 500)
    recall_b, acc = {}, {}
    for prior in ("balanced", "reference"):
        query = _adata(q_latent)
        ct.tl.transfer_labels(query, ref, "cell_type", n_neighbors=30, label_prior=prior, novelty=False)
        pred = query.obs["cell_type_pred"].astype(str).to_numpy()
        recall_b[prior] = float(np.mean(pred[truth == "B"] == "B"))
        acc[prior] = float(np.mean(pred == truth))
        assert query.uns["cell_type_pred"]["params"]["label_prior"] == prior
        np.testing.assert_allclose(query.obsm["cell_type_pred_probabilities"].sum(axis=1), 1.0)
    # the reference prior gives most B cells to A; the balanced prior recovers them
    assert recall_b["reference"] < 0.5 < 0.75 < recall_b["balanced"]
    assert acc["balanced"] > acc["reference"] + 0.08
    with pytest.raises(ValueError, match="label_prior"):
        ct.tl.transfer_labels(_adata(q_latent), ref, "cell_type", label_prior="uniform")


def test_reference_self_consistency_by_hand():
    # x = 0, 1 (A), 2, 10 (B); each cell's one nearest other cell: 1, 0, 1, 2 -> votes A, A, A, B
    dist = np.array([[1.0], [1.0], [1.0], [8.0]])
    idx = np.array([[1], [0], [1], [2]])
    acc, recall = reference_self_consistency(
        dist, idx, ["A", "A", "B", "B"], weighting="uniform", label_prior="reference"
    )
    assert acc == pytest.approx(0.75)
    assert recall.to_dict("index") == {"A": {"n_cells": 2, "recall": 1.0}, "B": {"n_cells": 2, "recall": 0.5}}


@pytest.mark.parametrize("knn_method", ["exact", "pynndescent"])
def test_leave_one_out_excludes_the_cell_itself_among_twins(knn_method):
    # every cell has a twin at the same point with the other label: its only other neighbour is the
    # twin, so leave-one-out gets every cell wrong (a search may list the twin before the cell itself)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(100, 3)) * 10
    ref = _adata(np.repeat(points, 2, axis=0), ["A", "B"] * 100)
    if knn_method == "pynndescent":  # the approximate index needs more cells than its graph degree
        ref = _adata(np.repeat(np.r_[points, rng.normal(size=(100, 3)) * 10], 2, axis=0), ["A", "B"] * 200)
    query = _adata(points[:5])
    ct.tl.transfer_labels(
        query, ref, "cell_type", n_neighbors=1, weighting="uniform", label_prior="reference", knn_method=knn_method
    )
    assert query.uns["cell_type_pred"]["reference_loo_accuracy"] == 0.0


def test_transfer_labels_reports_how_well_the_space_separates_the_reference():
    rng = np.random.default_rng(5)
    labels = np.repeat(["A", "B", "C"], [300, 200, 100])
    centres = {"A": (0.0, 0.0), "B": (6.0, 0.0), "C": (0.0, 6.0)}
    separated = np.array([centres[c] for c in labels]) + rng.normal(0, 1.0, (600, 2))
    query = _adata(rng.normal(0, 1.0, (50, 2)))
    out = {}
    for name, latent in (("separated", separated), ("noise", rng.normal(0, 1.0, (600, 2)))):
        for prior in ("balanced", "reference"):
            for novelty in (True, False):
                q = query.copy()
                ct.tl.transfer_labels(q, _adata(latent, labels), "cell_type", label_prior=prior, novelty=novelty)
                info = q.uns["cell_type_pred"]
                out[name, prior, novelty] = info["reference_loo_accuracy"], info["reference_loo_recall"]["recall"]
    for prior in ("balanced", "reference"):  # the self-neighbours of the novelty score are reused as they are
        assert out["separated", prior, True][0] == out["separated", prior, False][0]
        pd.testing.assert_series_equal(out["separated", prior, True][1], out["separated", prior, False][1])
    acc, recall = out["separated", "balanced", True]
    assert acc > 0.98 and list(recall.index) == ["A", "B", "C"] and recall.min() > 0.95
    # a space without type signal: votes as cast lean to the majority (A, half the cells), balanced ones scatter
    # over the three types (accuracy about 1/3)
    acc_ref, recall_ref = out["noise", "reference", True]
    acc_bal, recall_bal = out["noise", "balanced", True]
    assert 0.35 < acc_ref < 0.6 and recall_ref["A"] > 0.6 and recall_ref["C"] < 0.1
    assert abs(acc_bal - 1 / 3) < 0.08 and acc_bal < acc_ref - 0.05 and recall_bal["C"] > recall_ref["C"] + 0.2


def test_label_transfer_results_survive_an_h5ad_round_trip_with_slashes_in_labels(tmp_path):
    # labels with a slash (the BMMC multiome's 'G/M prog') cannot be keys of an h5ad group
    ref = _adata([[0.0], [1.0], [5.0], [6.0]], ["G/M prog", "G/M prog", "B", "B"])
    query = _adata([[0.5], [5.5]])
    ct.tl.transfer_labels(query, ref, "cell_type", n_neighbors=1, novelty=False)
    import anndata

    # the query as it is written after label transfer, under the rule anndata is making its default
    strict = "disallow_forward_slash_in_h5ad"
    with (
        anndata.settings.override(**{strict: True}) if hasattr(anndata.settings, strict) else nullcontext(),
        warnings.catch_warnings(),  # anndata warns of slashes in keys before it refuses them
    ):
        warnings.simplefilter("error", FutureWarning)
        query.write_h5ad(tmp_path / "q.h5ad")
    back = read_h5ad(tmp_path / "q.h5ad")
    info = back.uns["cell_type_pred"]
    assert info["reference_loo_accuracy"] == 1.0
    assert info["reference_loo_recall"].loc["G/M prog", "n_cells"] == 2
    probs = pd.DataFrame(back.obsm["cell_type_pred_probabilities"], index=back.obs_names, columns=info["labels"])
    assert probs.loc["c0", "G/M prog"] == 1.0 and probs.loc["c1", "B"] == 1.0
    assert back.obs["cell_type_pred"].astype(str).tolist() == ["G/M prog", "B"]


def test_weights_are_normalised_and_decrease_with_distance():
    d = np.array([[0.1, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 0.0]])
    for weighting in ("gaussian", "distance"):
        w = _weights(d.copy(), weighting)
        np.testing.assert_allclose(w.sum(1), 1.0)
        assert np.all(np.diff(w[0]) < 0)
        np.testing.assert_allclose(w[1], 0.25)  # all neighbours at distance 0: equal weights


def test_threshold_calls_unknown_and_zero_threshold_never_does():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.3, size=(100, 2))
    b = rng.normal(0, 0.3, size=(100, 2)) + [3, 0]
    ref = _adata(np.vstack([a, b]), ["A"] * 100 + ["B"] * 100)
    query = _adata([[0.0, 0.0], [3.0, 0.0], [1.5, 0.0]])  # A, B, halfway
    ct.tl.transfer_labels(query, ref, "cell_type", n_neighbors=30, weighting="uniform", novelty=False, threshold=0.9)
    pred = query.obs["cell_type_pred"].astype(str).tolist()
    assert pred[:2] == ["A", "B"]
    assert query.obs["cell_type_pred"].cat.categories.tolist() == ["A", "B", "Unknown"]
    ct.tl.transfer_labels(query, ref, "cell_type", threshold=0.0, novelty=False, key_added="raw")
    assert "Unknown" not in query.obs["raw"].astype(str).tolist()


def test_novelty_flags_cells_far_from_every_reference_cell():
    rng = np.random.default_rng(2)
    ref_latent = np.vstack([rng.normal(0, 1, size=(400, 3)), rng.normal(0, 1, size=(400, 3)) + [6, 0, 0]])
    labels = ["A"] * 400 + ["B"] * 400
    ref = _adata(ref_latent, labels)
    known = np.vstack([rng.normal(0, 1, size=(100, 3)), rng.normal(0, 1, size=(100, 3)) + [6, 0, 0]])
    novel = rng.normal(0, 0.5, size=(50, 3)) + [-1, 8, 0]  # a cluster the reference does not have, nearest to A
    query = _adata(np.vstack([known, novel]))
    # votes alone: every novel cell's neighbours agree, so it looks certain
    ct.tl.transfer_labels(query, ref, "cell_type", novelty=False, key_added="votes")
    is_novel = np.r_[np.zeros(200, bool), np.ones(50, bool)]
    assert ct.metrics.unknown_detection_auroc(is_novel, query.obs["votes_uncertainty"]) < 0.8
    ct.tl.transfer_labels(query, ref, "cell_type")
    u = query.obs["cell_type_pred_uncertainty"].to_numpy()
    assert ct.metrics.unknown_detection_auroc(is_novel, u) > 0.99
    pred = query.obs["cell_type_pred"].astype(str).to_numpy()
    assert (pred[is_novel] == "Unknown").mean() > 0.95
    assert (pred[~is_novel] == "Unknown").mean() < 0.05
    ratio = query.obs["cell_type_pred_distance_ratio"].to_numpy()
    assert np.median(ratio[~is_novel]) < 1.0 < ratio[is_novel].min()


def test_ambiguity_and_novelty_tell_apart_between_types_and_unlike_any_type():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 0.3, size=(300, 2))
    b = rng.normal(0, 0.3, size=(300, 2)) + [2, 0]
    ref = _adata(np.vstack([a, b]), ["A"] * 300 + ["B"] * 300)
    query = _adata([[0.0, 0.0], [1.0, 0.0], [-1.0, 6.0]])  # inside A; between A and B; far from both (nearer A)
    ct.tl.transfer_labels(query, ref, "cell_type", n_neighbors=30)
    amb = query.obs["cell_type_pred_ambiguity"].to_numpy()
    nov = query.obs["cell_type_pred_novelty"].to_numpy()
    pv = query.obs["cell_type_pred_novelty_pvalue"].to_numpy()
    assert amb[0] < 0.05 and amb[1] > 0.5 and amb[2] < 0.5  # the far cell's neighbours mostly agree
    assert nov[2] > 5 * max(nov[0], nov[1])
    assert pv[2] == pytest.approx(1 / 601) and pv[0] > 0.1
    assert query.obs["cell_type_pred"].astype(str).tolist() == ["A", query.obs["cell_type_pred"].iloc[1], "Unknown"]
    assert query.obs["cell_type_pred"].iloc[1] != "Unknown"  # ambiguous, not novel
    assert query.uns["cell_type_pred"]["n_novel"] == 1


def test_novelty_threshold_is_calibrated_leave_one_batch_out():
    """On query cells drawn like the reference, about 1 - novelty_quantile of them are called Unknown."""
    rng = np.random.default_rng(6)
    centres = rng.normal(0, 4, size=(4, 5))

    def draw(n, shift):
        lab = rng.integers(0, 4, n)
        return centres[lab] + rng.normal(size=(n, 5)) + shift, [f"t{i}" for i in lab]

    xa, la = draw(1500, 0.0)
    xb, lb = draw(1500, 0.3)  # a second reference batch, slightly shifted
    ref = _adata(np.vstack([xa, xb]), la + lb)
    ref.obs["batch"] = ["a"] * 1500 + ["b"] * 1500
    xq, _ = draw(2000, 0.15)
    novel = rng.normal(size=(200, 5)) + [9, 9, 9, 9, 9]
    query = _adata(np.vstack([xq, novel]))
    is_novel = np.r_[np.zeros(2000, bool), np.ones(200, bool)]
    ct.tl.transfer_labels(query, ref, "cell_type", batch_key="batch", novelty_quantile=0.95)
    info = query.uns["cell_type_pred"]
    assert info["calibration"] == "leave-one-batch-out" and info["n_calibration_cells"] == 3000
    called = query.obs["cell_type_pred"].astype(str).to_numpy() == "Unknown"
    assert 0.01 < called[~is_novel].mean() < 0.10  # about 5 %
    assert called[is_novel].mean() > 0.99
    pv = query.obs["cell_type_pred_novelty_pvalue"].to_numpy()[~is_novel]
    assert 0.4 < pv.mean() < 0.6  # conformal p-values of exchangeable cells are about uniform
    assert ct.metrics.unknown_detection_auroc(is_novel, query.obs["cell_type_pred_novelty"]) > 0.99
    # the batch column recorded by train_reference is the default
    ref.uns["X_reference"] = {"params": {"batch_key": "batch"}}
    ct.tl.transfer_labels(query, ref, "cell_type", key_added="auto")
    assert query.uns["auto"]["calibration"] == "leave-one-batch-out"
    ct.tl.transfer_labels(query, ref, "cell_type", calibration="leave-one-out", key_added="loo")
    assert query.uns["loo"]["calibration"] == "leave-one-out"
    with pytest.raises(ValueError, match="calibration must be one of"):
        ct.tl.transfer_labels(query, ref, "cell_type", calibration="split")
    with pytest.raises(KeyError, match="no obs column 'donor'"):
        ct.tl.transfer_labels(query, ref, "cell_type", batch_key="donor")


def test_distance_ratio_is_about_one_for_cells_like_the_reference():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(2000, 4))
    query = rng.normal(size=(500, 4))
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=15).fit(ref).kneighbors(query)
    ratio = distance_ratio(ref, dist, idx, quantile=0.99)
    assert np.quantile(ratio, 0.95) < 1.0 and np.median(ratio) > 0.5


def test_any_embedding_a_stored_model_or_a_saved_folder_can_be_the_reference(tmp_path):
    sim = ct.datasets.simulate_scatac(600, 300, n_cell_types=3, n_batches=2, random_state=4)
    ref = sim[sim.obs["batch"] == "batch_0"].copy()
    query = sim[sim.obs["batch"] == "batch_1"].copy()
    ct.pp.lsi(ref, 20)
    ct.pp.lsi(query, reference=ref)
    ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", key_added="lsi")
    truth = query.obs["cell_type"].astype(str)
    assert (query.obs["lsi"].astype(str) == truth).mean() > 0.9
    ct.tl.train_reference(
        ref, "batch", "cell_type", max_epochs=20, model_kwargs={"n_hidden": 32, "n_latent": 5}, model_dir=tmp_path / "m"
    )
    model = ct.tl.load_model(tmp_path / "m")
    assert model.reference_["latent"].shape == (ref.n_obs, 5)
    ct.tl.map_query(query, tmp_path / "m", max_epochs=3)
    ct.tl.transfer_labels(query, ref, "cell_type", key_added="from_adata")
    ct.tl.transfer_labels(query, model, "cell_type", key_added="from_model")
    ct.tl.transfer_labels(query, tmp_path / "m", "cell_type", key_added="from_folder")
    for key in ("from_model", "from_folder"):
        np.testing.assert_allclose(query.obs[f"{key}_probability"], query.obs["from_adata_probability"])
        np.testing.assert_allclose(query.obs[f"{key}_novelty"], query.obs["from_adata_novelty"], rtol=1e-5)
    pred = query.obs["from_adata"].astype(str)
    assert ((pred == truth) | (pred == "Unknown")).mean() > 0.97
    assert (pred == "Unknown").mean() < 0.2  # a one-batch reference calibrates leave-one-out: tighter
    assert query.uns["from_adata"]["calibration"] == "leave-one-out"
    assert query.uns["from_model"]["params"]["n_neighbors"] == 15


def test_mudata_query_and_copy():
    import mudata as md

    ref = _adata([[0.0], [1.0], [5.0], [6.0]], ["A", "A", "B", "B"])
    atac = _adata([[0.5], [5.5]])
    mdata = md.MuData({"atac": atac})
    out = ct.tl.transfer_labels(mdata, ref, "cell_type", n_neighbors=2, copy=True, novelty=False)
    assert "cell_type_pred" not in mdata["atac"].obs
    assert out["atac"].obs["cell_type_pred"].astype(str).tolist() == ["A", "B"]


def test_bad_inputs_are_refused():
    ref = _adata([[0.0], [1.0], [5.0]], ["A", "B", "B"])
    query = _adata([[0.5]])
    ref_nan = ref.copy()
    ref_nan.obs["cell_type"] = ref_nan.obs["cell_type"].astype(object)
    ref_nan.obs.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        ct.tl.transfer_labels(query, ref_nan, "cell_type")
    with pytest.raises(KeyError, match="no obs column 'label'"):
        ct.tl.transfer_labels(query, ref, "label")
    with pytest.raises(KeyError, match="query has no obsm\\['X_pca'\\]"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_pca")
    query.obsm["X_other"] = np.zeros((1, 2))
    ref.obsm["X_other"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="2 dimensions in the query but 3"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_other")
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        ct.tl.transfer_labels(query, ref, "cell_type", threshold=1.5)
    with pytest.raises(ValueError, match="weighting must be one of"):
        ct.tl.transfer_labels(query, ref, "cell_type", weighting="cosine")
    bare = ct.models.PeakTRVAE
    with pytest.raises(ValueError, match="stores no reference cells"):
        ct.tl.transfer_labels(query, type("M", (), {"reference_": None})(), "cell_type")
    del bare


def _views(rng, centres, lab, noise, n_views):
    """Cells of known types seen through independent noisy spaces (one per ensemble member)."""
    return [centres[lab] + rng.normal(0, noise, size=(lab.size, centres.shape[1])) for _ in range(n_views)]


def test_an_ensemble_averages_the_votes_and_novelty_of_its_spaces(tmp_path):
    rng = np.random.default_rng(11)
    centres = rng.normal(0, 1.5, size=(5, 4))
    lab_r, lab_q = rng.integers(0, 5, 1500), rng.integers(0, 5, 600)
    ref_views, q_views = _views(rng, centres, lab_r, 1.0, 3), _views(rng, centres, lab_q, 1.0, 3)
    ref = _adata(ref_views[0], [f"t{i}" for i in lab_r], key="z0")
    query = _adata(q_views[0], key="z0")
    for m in (1, 2):
        ref.obsm[f"z{m}"], query.obsm[f"z{m}"] = ref_views[m], q_views[m]
    keys = ["z0", "z1", "z2"]
    truth = np.array([f"t{i}" for i in lab_q])
    single = {}
    for key in keys:
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep=key, key_added=key)
        single[key] = (query.obs[key].astype(str).to_numpy() == truth).mean()
    ct.tl.transfer_labels(query, ref, "cell_type", use_rep=keys, novelty_quantile=0.95, key_added="ens")
    # the ensemble's vote shares are the mean of its members' (each after the balanced prior)
    mean_votes = np.mean([query.obsm[f"{k}_probabilities"] for k in keys], axis=0)
    np.testing.assert_allclose(query.obsm["ens_probabilities"], mean_votes, rtol=1e-12)
    np.testing.assert_allclose(
        query.obs["ens_novelty"], np.mean([query.obs[f"{k}_novelty"] for k in keys], axis=0), rtol=1e-12
    )
    # independent noise in each space: averaging beats every member
    acc = (query.obs["ens"].astype(str).to_numpy() == truth).mean()
    assert acc > max(single.values()) + 0.03, (acc, single)
    assert query.uns["ens"]["reference_loo_accuracy"] > max(query.uns[k]["reference_loo_accuracy"] for k in keys)
    # the averaged score is calibrated on the averaged reference scores: cells like the reference are
    # called Unknown at about 1 - novelty_quantile
    assert 0.01 < (query.obs["ens"].astype(str) == "Unknown").mean() < 0.10
    assert list(query.uns["ens"]["params"]["use_rep"]) == keys
    query.write_h5ad(tmp_path / "ens.h5ad")
    assert list(read_h5ad(tmp_path / "ens.h5ad").uns["ens"]["params"]["use_rep"]) == keys


def test_an_ensemble_of_one_space_twice_is_that_space():
    rng = np.random.default_rng(12)
    centres = rng.normal(0, 2, size=(3, 3))
    lab = rng.integers(0, 3, 400)
    ref = _adata(_views(rng, centres, lab, 1.0, 1)[0], [f"t{i}" for i in lab])
    query = _adata(_views(rng, centres, rng.integers(0, 3, 100), 1.0, 1)[0])
    ref.obsm["copy"], query.obsm["copy"] = ref.obsm["X_reference"], query.obsm["X_reference"]
    ct.tl.transfer_labels(query, ref, "cell_type", key_added="one")
    ct.tl.transfer_labels(query, ref, "cell_type", use_rep=["X_reference", "copy"], key_added="two")
    for col in ("", "_probability", "_novelty", "_novelty_pvalue", "_distance_ratio"):
        pd.testing.assert_series_equal(query.obs[f"one{col}"], query.obs[f"two{col}"], check_names=False)
    for k in ("novelty_threshold", "reference_loo_accuracy"):
        assert query.uns["one"][k] == pytest.approx(query.uns["two"][k])


def test_an_ensemble_refuses_bad_spaces(tmp_path):
    ref = _adata(np.random.default_rng(0).normal(size=(50, 2)), ["A", "B"] * 25)
    query = _adata(np.zeros((3, 2)))
    ref.obsm["other"], query.obsm["other"] = np.zeros((50, 2)), np.zeros((3, 1))
    with pytest.raises(ValueError, match="list of distinct obsm keys"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep=["X_reference", "X_reference"])
    with pytest.raises(ValueError, match="list of distinct obsm keys"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep=[])
    with pytest.raises(KeyError, match=r"query has no obsm\['missing'\]"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep=["X_reference", "missing"])
    with pytest.raises(ValueError, match=r"obsm\['other'\] has 1 dimensions in the query but 2"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep=["X_reference", "other"])
    with pytest.raises(TypeError, match="needs the reference as an AnnData"):
        ct.tl.transfer_labels(query, tmp_path / "a_saved_model", "cell_type", use_rep=["X_reference", "other"])
