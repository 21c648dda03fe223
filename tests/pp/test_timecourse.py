"""Cells × genes → genes × time points: statistics, time handling, gene selection and bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import chromtools as ct


@pytest.fixture(scope="module")
def sim():
    return ct.datasets.simulate_timecourse(60, cells_per_time=20, random_state=1)


def test_means_variances_counts_match_pandas(sim):
    s = ct.pp.timecourse_summary(sim, "time", layer="counts", n_top_genes=None, shrink=False)
    counts = pd.DataFrame(sim.layers["counts"].toarray(), columns=sim.var_names)
    counts["t"] = sim.obs["time"].to_numpy()
    expected = counts.groupby("t").mean().T.loc[s.obs_names]
    assert np.allclose(s.layers["mean"], expected.to_numpy(), rtol=1e-5)
    assert s.var["time"].tolist() == [0, 1, 3, 6, 12, 24, 48]
    assert s.var["n_cells"].tolist() == [20] * 7
    assert s.var["dt"].to_numpy() * 4.5 == pytest.approx([0, 1, 2, 3, 6, 12, 24])  # gaps over the median gap
    z = s.layers["zscore"]
    assert np.allclose(z.mean(1), 0, atol=1e-5) and np.allclose(z.std(1), 1, atol=1e-4)
    assert np.allclose(s.X, z)  # shrink=False
    raw_var = counts.groupby("t").var().T.loc[s.obs_names].to_numpy()
    pooled = raw_var.mean(1, keepdims=True)  # equal cells per time point
    shrunk = (19 * raw_var + 2 * pooled) / 21
    assert np.allclose(s.layers["variance"], shrunk, rtol=1e-4)
    scale = s.obs["scale"].to_numpy()[:, None]
    assert np.allclose(s.layers["noise"], shrunk / 20 / scale**2, rtol=1e-4)
    assert np.allclose(s.obs["baseline"], expected.mean(1))


def test_shrinkage_pulls_noisy_means_to_zero(sim):
    plain = ct.pp.timecourse_summary(sim, "time", layer="counts", n_top_genes=None, shrink=False)
    shrunk = ct.pp.timecourse_summary(sim, "time", layer="counts", n_top_genes=None)
    se2 = plain.layers["noise"]
    assert np.allclose(shrunk.X, plain.X / (1 + se2), atol=1e-5)
    assert np.allclose(shrunk.layers["noise"], se2 / (1 + se2) ** 2, rtol=1e-4)
    flat = (sim.var["module"] == "flat").to_numpy()
    amp = np.abs(shrunk.X).mean(1)
    assert np.median(amp[flat]) < 0.6 * np.median(amp[~flat])


def test_unsorted_cells_give_the_same_summary(sim):
    a = ct.pp.timecourse_summary(sim, "time", layer="counts")
    order = np.argsort(sim.obs["time"].to_numpy(), kind="stable")
    b = ct.pp.timecourse_summary(sim[order].copy(), "time", layer="counts")
    assert a.obs_names.equals(b.obs_names)
    assert np.allclose(a.X, b.X, atol=1e-6)


def test_dense_and_sparse_agree(sim):
    a = ct.pp.timecourse_summary(sim, "time", layer="counts")
    dense = sim.copy()
    dense.layers["counts"] = dense.layers["counts"].toarray()
    b = ct.pp.timecourse_summary(dense, "time", layer="counts")
    assert np.allclose(a.X, b.X, atol=1e-6)


def test_top_genes_ranked_by_anova(sim):
    s = ct.pp.timecourse_summary(sim, "time", layer="counts", n_top_genes=10)
    assert s.n_obs == 10
    full = ct.pp.timecourse_summary(sim, "time", layer="counts", n_top_genes=None)
    top = full.obs["dynamic_score"].sort_values(ascending=False).index[:10]
    assert set(top) == set(s.obs_names)
    assert (s.obs["dynamic_pval"] < 1e-3).all()
    # the planted flat genes rank low
    flat = sim.var.loc[full.obs_names, "module"] == "flat"
    assert full.obs.loc[flat, "dynamic_score"].median() < full.obs.loc[~flat, "dynamic_score"].median() / 5


def test_pseudotime_is_binned():
    rng = np.random.default_rng(0)
    n = 500
    pt = rng.uniform(0, 10, n)
    X = np.c_[np.sin(pt), pt, rng.normal(size=n)] + rng.normal(scale=0.1, size=(n, 3))
    adata = AnnData(X.astype(np.float32), obs=pd.DataFrame({"pt": pt}, index=[f"c{i}" for i in range(n)]))
    s = ct.pp.timecourse_summary(adata, "pt")
    assert s.n_vars == 10 and s.uns["timecourse"]["binned"]
    assert s.uns["timecourse"]["params"] == {
        "time_key": "pt",
        "layer": "None",
        "mod": "None",
        "n_bins": -1,
        "n_top_genes": 2_000,
        "genes_given": False,
        "shrink": True,
    }
    assert np.all(np.diff(s.var["time"]) > 0)
    assert s.var["n_cells"].sum() == n and s.var["n_cells"].min() >= 45
    s4 = ct.pp.timecourse_summary(adata, "pt", n_bins=4)
    assert s4.n_vars == 4
    assert s4.var["time"].iloc[0] == pytest.approx(pt[pt <= np.quantile(pt, 0.25)].mean(), rel=1e-6)


def test_time_labels_and_categories():
    col = pd.Series(["24h", "3h", "0h", "3h", "12h"])
    tp = ct.pp.time_points(col)
    assert tp.labels == ["0h", "3h", "12h", "24h"] and tp.times.tolist() == [0, 3, 12, 24]
    assert tp.index.tolist() == [3, 1, 0, 1, 2]
    ordered = pd.Series(pd.Categorical(["late", "early", "mid"], categories=["early", "mid", "late"], ordered=True))
    tp = ct.pp.time_points(ordered)
    assert tp.labels == ["early", "mid", "late"] and tp.times.tolist() == [0, 1, 2]


def test_bulk_time_course_uses_von_neumann(shared_data):
    yeast = ct.datasets.cho1998_yeast(shared_data)
    s = ct.pp.timecourse_summary(yeast, "time", n_top_genes=None)
    assert s.shape == (384, 17)
    assert s.uns["timecourse"]["test"] == "von_neumann"
    assert np.all(s.layers["noise"] == 0) and np.all(s.layers["variance"] == 0)
    assert s.var["n_cells"].tolist() == [1] * 17
    assert (s.obs["dynamic_pval"] < 0.05).mean() > 0.8  # cell-cycle genes are smooth, not white noise


def test_mudata_time_column_from_mudata_obs(sim):
    from mudata import MuData

    rna = sim.copy()
    rna.obs = rna.obs.drop(columns=["time", "time_point"])
    mdata = MuData({"rna": rna})
    mdata.obs["time"] = sim.obs["time"].to_numpy()
    s = ct.pp.timecourse_summary(mdata, "time", mod="rna", layer="counts")
    ref = ct.pp.timecourse_summary(sim, "time", layer="counts")
    assert np.allclose(s.X, ref.X)


def test_bad_inputs(sim):
    one = sim[sim.obs["time"] == 0].copy()
    with pytest.raises(ValueError, match="single time point"):
        ct.pp.timecourse_summary(one, "time")
    nan = sim.copy()
    nan.obs.loc[nan.obs_names[:3], "time"] = np.nan
    with pytest.raises(ValueError, match="3 of .* cells have no value"):
        ct.pp.timecourse_summary(nan, "time")
    with pytest.raises(KeyError, match="Layer 'nope' does not exist"):
        ct.pp.timecourse_summary(sim, "time", layer="nope")
    with pytest.raises(KeyError, match="Time column 'hours'"):
        ct.pp.timecourse_summary(sim, "hours")
    bad = sim.copy()
    bad.X[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite values"):
        ct.pp.timecourse_summary(bad, "time")
    const = sim.copy()
    const.X = np.ones_like(const.X)
    with pytest.raises(ValueError, match="same mean at every time point"):
        ct.pp.timecourse_summary(const, "time")
    partly = sim.copy()
    partly.layers["counts"] = sp.csr_matrix(partly.layers["counts"].toarray())
    dense = partly.layers["counts"].toarray()
    dense[:, 0] = 5.0
    partly.layers["counts"] = sp.csr_matrix(dense)
    s = ct.pp.timecourse_summary(partly, "time", layer="counts", n_top_genes=None)
    assert "gene_0" not in s.obs_names and s.n_obs == sim.n_vars - 1
    with pytest.raises(ValueError, match="cannot be standardised"):
        ct.pp.timecourse_summary(partly, "time", layer="counts", genes=["gene_0", "gene_1"])
    with pytest.raises(KeyError, match="not in var_names"):
        ct.pp.timecourse_summary(sim, "time", genes=["nope"])


def test_missing_values_and_missing_time_points():
    a = ct.datasets.simulate_timecourse(40, cells_per_time=(30, 5, 20, 10, 30, 8, 25), missing=0.3, random_state=4)
    truth = a.varm["observed"]
    assert (~truth).sum(1).tolist() == [2] * 40 and truth[:, 0].all()
    s = ct.pp.timecourse_summary(a, "time", layer="counts", n_top_genes=None, shrink=False)
    order = a.var_names.get_indexer(s.obs_names)
    observed = s.layers["observed"].astype(bool)
    assert np.array_equal(observed, truth[order])
    # means over the measured cells only, NaN where the gene was not measured
    counts = pd.DataFrame(a.layers["counts"].toarray(), columns=a.var_names)
    counts["t"] = a.obs["time"].to_numpy()
    expected = counts.groupby("t").mean().T.loc[s.obs_names].to_numpy()  # pandas skips NaN
    assert np.allclose(s.layers["mean"][observed], expected[observed], rtol=1e-5)
    assert np.isnan(s.layers["mean"][~observed]).all()
    assert s.var["n_cells"].tolist() == [30, 5, 20, 10, 30, 8, 25]
    assert np.array_equal(s.layers["n_cells"], observed * s.var["n_cells"].to_numpy()[None, :])
    assert (s.layers["noise"][~observed] == 0).all() and (s.layers["noise"][observed] > 0).all()
    # X at a missing point: linear interpolation in real time between the neighbouring measured points
    times = s.var["time"].to_numpy()
    g = int(np.flatnonzero((~observed[:, 1:-1]).any(1))[0])
    t = 1 + int(np.flatnonzero(~observed[g, 1:-1])[0])
    left = max(i for i in range(t) if observed[g, i])
    right = min(i for i in range(t + 1, len(times)) if observed[g, i])
    w = (times[t] - times[left]) / (times[right] - times[left])
    assert s.X[g, t] == pytest.approx((1 - w) * s.X[g, left] + w * s.X[g, right], rel=1e-4)
    # standardised on the interpolated curve
    assert np.allclose(s.layers["zscore"].mean(1), 0, atol=1e-5)
    assert s.uns["timecourse"]["n_missing"] == int((~observed).sum())
    # dense NaN and sparse NaN give the same summary
    dense = a.copy()
    dense.layers["counts"] = a.layers["counts"].toarray()
    d = ct.pp.timecourse_summary(dense, "time", layer="counts", n_top_genes=None, shrink=False)
    assert np.allclose(d.X, s.X, atol=1e-6) and np.array_equal(d.layers["observed"], s.layers["observed"])
    assert np.allclose(d.obs["dynamic_pval"], s.obs["dynamic_pval"])
    # a gene measured at fewer than two time points cannot be standardised
    few = dense.copy()
    few.layers["counts"][few.obs["time"].to_numpy() > 0, 0] = np.nan
    out = ct.pp.timecourse_summary(few, "time", layer="counts", n_top_genes=None)
    assert "gene_0" not in out.obs_names


def _bh_before_scipy(p: np.ndarray) -> np.ndarray:
    """The Benjamini-Hochberg adjustment chromtools computed itself before scipy's false_discovery_control."""
    n = p.size
    order = np.argsort(p)
    q = np.minimum.accumulate((p[order] * n / np.arange(1, n + 1))[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def test_dynamic_qvalues_are_the_old_benjamini_hochberg():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    p = rng.random(2_000) ** 3
    p[:500] = p[500:1_000]  # ties
    p[-10:] = 1.0
    assert np.allclose(false_discovery_control(p), _bh_before_scipy(p), rtol=1e-12, atol=0)
    tc = ct.datasets.simulate_timecourse(300, time_points=(0, 1, 3, 6, 12), cells_per_time=20, random_state=0)
    summary = ct.pp.timecourse_summary(tc, n_top_genes=None)
    st = ct.pp.gene_time_stats(ct.pp.timecourse_matrix(tc, None), ct.pp.time_points(tc.obs["time"]))
    expected = _bh_before_scipy(st.pval)[tc.var_names.get_indexer(summary.obs_names)]
    assert np.allclose(summary.obs["dynamic_qval"], expected, rtol=1e-12, atol=0)
