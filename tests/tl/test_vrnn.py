"""ct.tl.vrnn_cluster and friends: slots, copy, k selection, MuData, determinism, stability, export, bad inputs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import chromtools as ct
from chromtools.tl._vrnn_timing import response_timing

torch.set_num_threads(1)
FAST = {"max_epochs": 60, "progress": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def sim():
    return ct.datasets.simulate_timecourse(150, cells_per_time=40, random_state=2)


@pytest.fixture(scope="module")
def clustered(sim):
    adata = sim.copy()
    ct.tl.vrnn_cluster(adata, "time", 5, layer="counts", n_top_genes=120, **FAST)
    return adata


def test_slots_are_written(clustered):
    a = clustered
    uns = a.uns["vrnn"]
    T = 7
    sel = a.var["vrnn_selected"].to_numpy()
    assert sel.sum() == 120 and a.var["vrnn_cluster"].notna().sum() == 120
    assert a.varm["X_vrnn"].shape == (150, T * 4)
    assert np.isnan(a.varm["X_vrnn"][~sel]).all() and np.isfinite(a.varm["X_vrnn"][sel]).all()
    for name in ("vrnn_input", "vrnn_recon", "vrnn_se"):
        assert a.varm[name].shape == (150, T) and np.isnan(a.varm[name][~sel]).all()
    assert np.isfinite(a.varm["vrnn_mean"]).all()  # raw per-time means for every gene
    assert isinstance(a.var["vrnn_cluster"].dtype, pd.CategoricalDtype)
    assert list(a.var["vrnn_cluster"].cat.categories) == ["0", "1", "2", "3", "4"]
    assert set(a.var["vrnn_response"].cat.categories) == {"fast", "delayed", "transient", "down", "flat"}
    for col in ("vrnn_onset", "vrnn_peak_time", "vrnn_baseline", "vrnn_amplitude", "vrnn_dynamic_qval"):
        assert col in a.var
    assert uns["time_points"].tolist() == [0, 1, 3, 6, 12, 24, 48]
    assert uns["cluster_means"].shape == (5, T) and uns["cluster_sd"].shape == (5, T)
    assert uns["cluster_sizes"].sum() == 120
    assert uns["n_clusters"] == 5 and uns["params"]["time_key"] == "time"
    assert uns["params"]["layer"] == "counts"
    hist = uns["history"]
    assert hist["elbo_train"].size == 60 and hist["kl_weight"][-1] == pytest.approx(1.0)
    # modules are numbered by the time of their mean peak
    means = uns["cluster_means"]
    peaks = [uns["time_points"][np.argmax(np.abs(m - m[0]))] for m in means]
    assert peaks == sorted(peaks)


def test_recovers_planted_modules_and_timing(clustered):
    a = clustered
    sel = a.var["vrnn_selected"].to_numpy()
    ari = adjusted_rand_score(a.var["module"][sel], a.var["vrnn_cluster"][sel])
    assert ari > 0.75
    table = pd.crosstab(a.var["module"], a.var["vrnn_response"])
    share = lambda m, r: table.loc[m, r] / table.loc[m].sum()
    assert share("delayed", "delayed") > 0.8
    assert share("down", "down") > 0.8
    assert share("fast_transient", "transient") > 0.8
    assert share("fast_sustained", "fast") > 0.7
    assert share("flat", "flat") > 0.7
    delayed = a.var.loc[a.var["vrnn_response"] == "delayed", "vrnn_onset"]
    fast = a.var.loc[a.var["vrnn_response"] == "fast", "vrnn_onset"]
    assert delayed.median() > 2.5 * fast.median()
    assert a.var.loc[a.var["vrnn_response"] == "flat", "vrnn_onset"].isna().all()


def test_response_timing_rules():
    times = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
    mean = np.array(
        [
            [0, 2, 2, 2, 2],  # fast: half-max at 0.5
            [0, 0, 0, 1, 2],  # delayed: half-max reached at 4
            [0, 4, 1, 0, 0],  # transient
            [5, 3, 1, 1, 1],  # down
            [1, 1.1, 0.9, 1, 1],  # flat (not responding)
        ],
        float,
    )
    out = response_timing(mean, times, np.array([True, True, True, True, False]), fast_window=1.5)
    assert out["response"].astype(str).tolist() == ["fast", "delayed", "transient", "down", "flat"]
    assert out["onset"].tolist()[:4] == pytest.approx([0.5, 4.0, 0.5, 1.0])
    assert out["peak_time"].tolist()[:4] == [1.0, 8.0, 1.0, 2.0]
    assert np.isnan(out["onset"].iloc[4])


def test_copy_and_key_added(sim):
    a = sim.copy()
    before = a.copy()
    out = ct.tl.vrnn_cluster(a, "time", 3, layer="counts", n_top_genes=60, copy=True, key_added="tc", **FAST)
    assert isinstance(out, ad.AnnData) and out is not a
    assert "tc" in out.uns and "X_tc" in out.varm and "tc_cluster" in out.var
    assert "tc" not in a.uns and list(a.var.columns) == list(before.var.columns)
    assert list(a.varm) == list(before.varm)
    assert ct.tl.vrnn_cluster(a, "time", 3, layer="counts", n_top_genes=60, key_added="tc", **FAST) is None
    assert np.array_equal(a.varm["X_tc"], out.varm["X_tc"], equal_nan=True)


def test_same_seed_same_result_other_seed_differs(sim):
    runs = []
    for seed in (7, 7, 8):
        a = sim.copy()
        ct.tl.vrnn_cluster(
            a, "time", 4, layer="counts", n_top_genes=60, random_state=seed, **{**FAST, "max_epochs": 15}
        )
        runs.append(a)
    assert np.array_equal(runs[0].varm["X_vrnn"], runs[1].varm["X_vrnn"], equal_nan=True)
    assert runs[0].var["vrnn_cluster"].equals(runs[1].var["vrnn_cluster"])
    assert not np.allclose(runs[0].varm["X_vrnn"], runs[2].varm["X_vrnn"], equal_nan=True)


def test_k_chosen_when_n_clusters_is_none(sim):
    a = ct.datasets.simulate_timecourse(250, cells_per_time=50, random_state=2)
    ct.tl.vrnn_cluster(a, "time", None, layer="counts", k_range=range(2, 8), **FAST)
    scores = a.uns["vrnn"]["k_scores"]
    assert scores["k"].tolist() == list(range(2, 8))
    assert scores["silhouette"].between(-1, 1).all() and scores["stability"].between(-1, 1).all()
    k = a.uns["vrnn"]["n_clusters"]
    assert k == scores.loc[scores["silhouette"].idxmax(), "k"]
    assert a.var["vrnn_cluster"].cat.categories.size == k
    assert k in (4, 5)  # five planted modules; silhouettes of 4 and 5 are within 0.01 here (k-means too)
    assert adjusted_rand_score(a.var["module"], a.var["vrnn_cluster"]) > 0.8
    b = sim.copy()
    ct.tl.vrnn_cluster(
        b, "time", None, layer="counts", n_top_genes=120, k_range=[3, 5], k_selection="stability", **FAST
    )
    s = b.uns["vrnn"]["k_scores"]
    assert b.uns["vrnn"]["n_clusters"] == s.loc[s["stability"].idxmax(), "k"]


def test_mudata_input(sim):
    from mudata import MuData

    rna = sim.copy()
    rna.obs = rna.obs.drop(columns=["time", "time_point"])
    mdata = MuData({"rna": rna})
    mdata.obs["time"] = sim.obs["time"].to_numpy()
    out = ct.tl.vrnn_cluster(mdata, "time", 3, mod="rna", layer="counts", n_top_genes=60, copy=True, **FAST)
    assert isinstance(out, MuData)
    assert "vrnn_cluster" in out.mod["rna"].var and "vrnn_cluster" not in mdata.mod["rna"].var
    ct.tl.vrnn_cluster(mdata, "time", 3, mod="rna", layer="counts", n_top_genes=60, **FAST)
    assert np.array_equal(mdata.mod["rna"].varm["X_vrnn"], out.mod["rna"].varm["X_vrnn"], equal_nan=True)
    with pytest.raises(KeyError, match="no modality 'atac'"):
        ct.tl.vrnn_cluster(mdata, "time", 3, **FAST)


def test_h5ad_roundtrip(clustered, tmp_path):
    path = tmp_path / "tc.h5ad"
    clustered.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.var["vrnn_cluster"].equals(clustered.var["vrnn_cluster"])
    assert np.array_equal(back.varm["X_vrnn"], clustered.varm["X_vrnn"], equal_nan=True)
    assert back.uns["vrnn"]["params"]["n_bins"] == "None"


def test_stability_and_export(clustered, tmp_path, leftovers):
    a = clustered.copy()
    table = ct.tl.vrnn_stability(a, 2, method="seed")
    assert table.shape == (2, 3) and table["ari"].between(0.5, 1).all()
    st = a.uns["vrnn"]["stability"]
    assert st["pairwise_ari"].shape == (2, 2) and st["mean_ari"] == pytest.approx(table["ari"].mean())
    gene_stab = a.var["vrnn_stability"]
    assert gene_stab[a.var["vrnn_selected"]].between(0, 1).all() and gene_stab[~a.var["vrnn_selected"]].isna().all()
    cells = ct.tl.vrnn_stability(a, 1, method="cells")
    assert 0.3 < cells["ari"].iloc[0] <= 1
    genes = ct.tl.vrnn_stability(a, 1, method="genes")
    assert 0.3 < genes["ari"].iloc[0] <= 1

    path = tmp_path / "modules.csv"
    out = ct.tl.vrnn_export(a, path, curves=True)
    back = pd.read_csv(path)
    assert len(back) == 120 == len(out)
    assert {
        "gene",
        "cluster",
        "membership",
        "response",
        "onset",
        "peak_time",
        "baseline",
        "amplitude",
        "stability",
    } <= set(back)
    assert [c for c in back if c.startswith("mean_")] == [f"mean_{t}" for t in ["0", "1", "3", "6", "12", "24", "48"]]
    g = back["gene"].iloc[0]
    assert back.loc[0, "mean_48"] == pytest.approx(float(a.varm["vrnn_mean"][a.var_names.get_loc(g), -1]), rel=1e-5)
    assert not leftovers(tmp_path)
    everything = ct.tl.vrnn_export(a, tmp_path / "all.csv", selected_only=False)
    assert len(everything) == a.n_vars
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ct.tl.vrnn_export(a, tmp_path / "missing" / "x.csv")


def test_bad_inputs(sim):
    one = sim[sim.obs["time"] == 6].copy()
    with pytest.raises(ValueError, match="single time point"):
        ct.tl.vrnn_cluster(one, "time", **FAST)
    nan = sim.copy()
    nan.obs.loc[nan.obs_names[::7], "time"] = np.nan
    with pytest.raises(ValueError, match="have no value in the time column"):
        ct.tl.vrnn_cluster(nan, "time", **FAST)
    few = sim[:, :4].copy()
    with pytest.raises(ValueError, match="fewer than the 5 clusters"):
        ct.tl.vrnn_cluster(few, "time", 5, **FAST)
    const = sim.copy()
    const.X = np.full(const.shape, 2.0, np.float32)
    with pytest.raises(ValueError, match="same mean at every time point"):
        ct.tl.vrnn_cluster(const, "time", **FAST)
    partly = sim.copy()
    partly.X[:, :3] = 1.0
    with pytest.raises(ValueError, match="cannot be standardised"):
        ct.tl.vrnn_cluster(partly, "time", 2, genes=list(partly.var_names[:6]), **FAST)
    with pytest.raises(KeyError, match="Layer 'activity' does not exist"):
        ct.tl.vrnn_cluster(sim, "time", layer="activity", **FAST)
    with pytest.raises(KeyError, match="Time column 'hours'"):
        ct.tl.vrnn_cluster(sim, "hours", **FAST)
    with pytest.raises(ValueError, match="n_clusters must be at least 2"):
        ct.tl.vrnn_cluster(sim, "time", 1, **FAST)
    with pytest.raises(TypeError, match="random_state"):
        ct.tl.vrnn_cluster(sim, "time", random_state="x", **FAST)
    with pytest.raises(KeyError, match="run ct.tl.vrnn_cluster"):
        ct.tl.vrnn_export(sim, "x.csv")
    with pytest.raises(ValueError, match="method"):
        ct.tl.vrnn_stability(sim, method="jackknife")


def test_bulk_stability_refuses_cell_bootstrap(shared_data):
    yeast = ct.datasets.cho1998_yeast(shared_data)
    ct.tl.vrnn_cluster(yeast, "time", 5, **{**FAST, "max_epochs": 5})
    assert yeast.var["vrnn_selected"].all() and yeast.uns["vrnn"]["test"] == "von_neumann"
    with pytest.raises(ValueError, match="single sample"):
        ct.tl.vrnn_stability(yeast, 1, method="cells")


def test_thp1_real_time_course(shared_data):
    thp1 = ct.datasets.kouno2013_thp1(shared_data)
    ct.tl.vrnn_cluster(thp1, "time", 4, **FAST)
    uns = thp1.uns["vrnn"]
    assert uns["time_points"].tolist() == [0, 1, 6, 12, 24, 48, 72, 96]
    assert uns["n_cells"].tolist() == [120] * 8
    assert thp1.var["vrnn_cluster"].notna().sum() == 45
    assert (thp1.var["vrnn_response"] != "flat").mean() > 0.5


def test_global_random_state_is_left_alone(sim):
    np.random.seed(11)
    torch.manual_seed(11)
    expected = (np.random.rand(), torch.rand(1).item())
    np.random.seed(11)
    torch.manual_seed(11)
    ct.tl.vrnn_cluster(sim.copy(), "time", 3, layer="counts", n_top_genes=40, **{**FAST, "max_epochs": 3})
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_memberships_and_module_timing(clustered):
    a = clustered
    sel = a.var["vrnn_selected"].to_numpy()
    member = a.varm["vrnn_membership"]
    assert member.shape == (150, 5) and np.isnan(member[~sel]).all()
    assert np.allclose(member[sel].sum(1), 1.0) and (member[sel] >= 0).all()
    assert np.allclose(a.var["vrnn_membership"][sel], member[sel].max(1))
    codes = a.var["vrnn_cluster"].cat.codes.to_numpy()[sel]
    assert (member[sel].argmax(1) == codes).mean() > 0.85  # posterior samples mostly fall in the gene's module
    assert (member[sel].max(1) < 1).any()  # and some genes are genuinely uncertain
    assert a.varm["vrnn_observed"][sel].all()
    timing = a.uns["vrnn"]["module_timing"]
    assert timing["module"].tolist() == ["0", "1", "2", "3", "4"]
    assert timing["n_genes"].sum() == 120
    ok = timing["onset"].notna()
    assert (timing.loc[ok, "onset_low"] <= timing.loc[ok, "onset"] + 1e-9).all()
    assert (timing.loc[ok, "onset"] <= timing.loc[ok, "onset_high"] + 1e-9).all()
    # the module holding most planted delayed genes starts later than the one holding the fast sustained ones
    cluster = a.var["vrnn_cluster"].astype(str)
    delayed = cluster[a.var["module"] == "delayed"].mode()[0]
    fast = cluster[a.var["module"] == "fast_sustained"].mode()[0]
    onset = timing.set_index("module")["onset"]
    assert onset[delayed] > 3 * onset[fast]
    assert a.uns["vrnn"]["method"] == "vrnn"


@pytest.mark.parametrize("method", ["kmeans", "fcm", "kshape"])
def test_baselines_run_through_the_same_api(sim, method):
    if method == "kshape":
        pytest.importorskip("tslearn")
    a = sim.copy()
    ct.tl.vrnn_cluster(a, "time", 5, method=method, layer="counts", n_top_genes=120, key_added="b", **FAST)
    sel = a.var["b_selected"].to_numpy()
    assert a.uns["b"]["method"] == method and a.uns["b"]["params"]["method"] == method
    assert a.uns["b"]["history"] == {}
    member = a.varm["b_membership"][sel]
    assert np.allclose(member.sum(1), 1.0)
    codes = a.var["b_cluster"].cat.codes.to_numpy()[sel]
    if method == "fcm":
        assert np.array_equal(member.argmax(1), codes)
    else:
        assert (member.argmax(1) == codes).mean() > 0.85
    # the features of a baseline are the standardised profiles it clustered
    assert np.allclose(a.varm["X_b"][sel], a.varm["b_input"][sel])
    if method != "kshape":
        assert adjusted_rand_score(a.var["module"][sel], a.var["b_cluster"][sel]) > 0.7
    fig = ct.pl.vrnn_trajectories(a, key="b", show=False)
    assert fig is not None
    if method == "kmeans":
        table = ct.tl.vrnn_stability(a, 2, key="b")
        assert (table["ari"] > 0.9).all()
        with pytest.raises(ValueError, match="retrains the VRNN"):
            ct.tl.vrnn_stability(a, 1, key="b", method="genes")


def test_missing_time_points_end_to_end():
    a = ct.datasets.simulate_timecourse_variant("irregular", 150, random_state=5)
    ct.tl.vrnn_cluster(a, "time", 5, layer="counts", n_top_genes=None, **FAST)
    sel = a.var["vrnn_selected"].to_numpy()
    observed = a.varm["vrnn_observed"][sel]
    assert (observed == 0).any() and np.array_equal(observed.astype(bool), a.varm["observed"][sel])
    assert np.isfinite(a.varm["vrnn_recon"][sel]).all() and np.isfinite(a.varm["X_vrnn"][sel]).all()
    assert adjusted_rand_score(a.var["module"][sel], a.var["vrnn_cluster"][sel]) > 0.6
    assert a.var.loc[a.var["vrnn_response"] != "flat", "vrnn_onset"].notna().all()
    with pytest.raises(ValueError, match="method must be one of"):
        ct.tl.vrnn_cluster(a, "time", 5, method="hmm", **FAST)
