from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct


def test_tracks_structure(sim_tracks):
    sizes = ct.io.read_chrom_sizes(sim_tracks.chrom_sizes)
    assert sizes == {"chr1": 2_000_000, "chr2": 1_000_000}
    peaks = ct.io.read_bed(sim_tracks.peaks, chrom_sizes=sizes)
    planted = sim_tracks.planted
    assert len(peaks) == planted["labelled"].sum() > 100
    assert 150 <= (peaks["end"] - peaks["start"]).min() and (peaks["end"] - peaks["start"]).max() <= 3_500
    noisy = ct.io.read_bigwig(sim_tracks.noisy, "chr1")
    clean = ct.io.read_bigwig(sim_tracks.clean, "chr1")
    # depth ratio 16 and integer coverage, as in the real HSC pair
    assert 13 < clean.sum() / noisy.sum() < 19
    assert np.all(clean == np.round(clean)) and (noisy == 0).mean() > 0.8
    inside = np.zeros(clean.size, bool)
    for s, e in peaks.loc[peaks["chrom"] == "chr1", ["start", "end"]].to_numpy():
        inside[s:e] = True
    assert clean[inside].mean() > 20 * clean[~inside].mean()
    summits = ct.io.read_narrowpeak(sim_tracks.narrowpeak)
    assert ((summits["peak"] >= 0) & (summits["peak"] < summits["end"] - summits["start"])).all()


def test_tracks_seeded(tmp_path):
    a = ct.datasets.simulate_tracks(tmp_path / "a", chrom_sizes={"chrA": 300_000}, random_state=5)
    b = ct.datasets.simulate_tracks(tmp_path / "b", chrom_sizes={"chrA": 300_000}, random_state=5)
    c = ct.datasets.simulate_tracks(tmp_path / "c", chrom_sizes={"chrA": 300_000}, random_state=6)
    x = ct.io.read_bigwig(a.noisy, "chrA")
    assert np.array_equal(x, ct.io.read_bigwig(b.noisy, "chrA"))
    assert not np.array_equal(x, ct.io.read_bigwig(c.noisy, "chrA"))


def test_tracks_blockwise_genome(tmp_path):
    # a chromosome longer than one generation block: coverage must be continuous across blocks
    sim = ct.datasets.simulate_tracks(tmp_path, chrom_sizes={"chrL": 4_500_000}, random_state=1)
    clean = ct.io.read_bigwig(sim.clean, "chrL")
    assert clean.size == 4_500_000
    block = 1 << 21
    jump = np.abs(np.diff(clean[block - 200 : block + 200])).max()
    assert jump <= max(10, np.abs(np.diff(clean)).max())


def test_scatac_structure_and_absent_type():
    a = ct.datasets.simulate_scatac(
        2_000, 3_000, n_cell_types=6, n_batches=3, absent_cell_type="type_2", random_state=0
    )
    assert a.shape == (2_000, 3_000) and a.X.dtype == np.int32
    assert 0.01 < a.X.nnz / np.prod(a.shape) < 0.15
    ref = a.obs["batch"].isin(["batch_0", "batch_1"])
    assert (a.obs.loc[ref, "cell_type"] != "type_2").all()
    assert (a.obs.loc[~ref, "cell_type"] == "type_2").sum() > 20
    depth = a.obs.groupby("batch", observed=True)["n_counts"].median()
    assert depth["batch_2"] > 1.8 * depth["batch_0"]  # batch depth factors 0.6 .. 1.5
    parsed = ct.io.parse_peak_names(a.var_names)
    assert parsed["start"].tolist() == a.var["start"].tolist()
    with pytest.raises(ValueError, match="not one of the simulated types"):
        ct.datasets.simulate_scatac(100, 100, absent_cell_type="type_99")


def test_scatac_cell_types_are_separable():
    from sklearn.decomposition import TruncatedSVD
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    a = ct.datasets.simulate_scatac(1_500, 2_000, random_state=1)
    x = TruncatedSVD(20, random_state=0).fit_transform(np.log1p(a.X.astype(np.float32)))
    acc = cross_val_score(KNeighborsClassifier(15), x, a.obs["cell_type"], cv=3).mean()
    assert acc > 0.8


def test_timecourse_modules():
    tc = ct.datasets.simulate_timecourse(500, time_points=(0, 1, 3, 6, 12, 24, 48), cells_per_time=50, random_state=0)
    assert tc.shape == (350, 500)
    assert not tc.obs["time"].is_monotonic_increasing  # cells come shuffled
    mean = tc.to_df(layer="counts").groupby(tc.obs["time"].to_numpy()).mean()
    log_fc = np.log((mean + 0.5) / (mean.iloc[0] + 0.5))
    by_module = log_fc.T.groupby(tc.var["module"].to_numpy()).median().T
    assert by_module.loc[1, "fast_transient"] > 0.5 and abs(by_module.loc[48, "fast_transient"]) < 0.3
    assert by_module.loc[48, "fast_sustained"] > 0.8
    assert by_module.loc[3, "delayed"] < 0.3 and by_module.loc[48, "delayed"] > 0.8
    assert by_module.loc[48, "down"] < -0.8
    assert abs(by_module["flat"]).max() < 0.15
    # magnitudes vary widely between genes
    assert np.ptp(tc.var["baseline"]) > 4
    curve = ct.datasets.module_curve("fast_transient", np.array([0.0, 2.0, 50.0]), tau=2.0, onset=10.0)
    assert curve[0] == 0 and np.isclose(curve[1], 1.0) and curve[2] < 0.01


def test_timecourse_variants():
    standard = ct.datasets.simulate_timecourse(200, random_state=3)
    same = ct.datasets.simulate_timecourse_variant("standard", 200, random_state=3)
    assert np.array_equal(standard.layers["counts"].toarray(), same.layers["counts"].toarray())
    assert same.uns["simulation"]["variant"] == "standard" and same.varm["observed"].all()

    uneven = ct.datasets.simulate_timecourse_variant("uneven_cells", 200, random_state=3)
    assert uneven.obs["time"].value_counts().sort_index().tolist() == [200, 12, 150, 8, 100, 10, 60]

    irregular = ct.datasets.simulate_timecourse_variant("irregular", 200, random_state=3)
    observed = irregular.varm["observed"]
    assert observed.shape == (200, 12) and observed[:, 0].all()
    assert (observed.sum(1) == 6).all()  # each gene measured at half of the 12 time points ...
    assert len({tuple(row) for row in observed}) > 100  # ... a different half per gene
    counts = irregular.layers["counts"].toarray()
    cell_t = np.searchsorted(irregular.uns["simulation"]["time_points"], irregular.obs["time"].to_numpy())
    assert np.array_equal(np.isnan(counts), ~observed.T[cell_t])
    assert np.array_equal(np.isnan(irregular.X), np.isnan(counts))

    shifted = ct.datasets.simulate_timecourse_variant("shifted", 300, random_state=3)
    assert 0 <= shifted.var["shift"].min() and shifted.var["shift"].max() <= 8 and shifted.var["shift"].std() > 1.5
    late = shifted.var["shift"] > 5
    sustained = (shifted.var["module"] == "fast_sustained").to_numpy()
    truth = shifted.varm["truth"] - shifted.var["baseline"].to_numpy()[:, None]
    t3 = shifted.uns["simulation"]["time_points"].index(3.0)
    early = (shifted.var["shift"] < 2).to_numpy()
    assert np.abs(truth[sustained & late, t3]).max() < 1e-6 < truth[sustained & early, t3].min()

    sparse = ct.datasets.simulate_timecourse_variant("sparse", 200, random_state=3)
    assert (sparse.layers["counts"].toarray() == 0).mean() > 0.5 > (standard.layers["counts"].toarray() == 0).mean()
    with pytest.raises(ValueError, match="Unknown time-course variant"):
        ct.datasets.simulate_timecourse_variant("weird")
    with pytest.raises(ValueError, match="one per time point"):
        ct.datasets.simulate_timecourse(10, cells_per_time=(5, 5))
