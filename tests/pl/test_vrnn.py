"""Figures of temporal modules: trajectories over real time, UMAP of gene latents, chosen genes with reconstruction."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import chromtools as ct

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clustered():
    adata = ct.datasets.simulate_timecourse(100, cells_per_time=30, random_state=4)
    ct.tl.vrnn_cluster(adata, "time", 4, layer="counts", n_top_genes=80, max_epochs=30, accelerator="cpu")
    return adata


def test_trajectories_use_real_time(clustered):
    fig = ct.pl.vrnn_trajectories(clustered, n_genes=2, show=False)
    assert isinstance(fig, Figure)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4
    times = clustered.uns["vrnn"]["time_points"]
    mean_line = axes[0].lines[0]
    assert np.allclose(mean_line.get_xdata(), times)  # hours, uneven gaps kept
    assert np.allclose(mean_line.get_ydata(), clustered.uns["vrnn"]["cluster_means"][0])
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert len(legend) == 2 and all(g in clustered.var_names for g in legend)
    assert "time" in axes[-1].get_xlabel()
    plt.close(fig)
    fig, ax = plt.subplots(1, 2)
    out = ct.pl.vrnn_trajectories(clustered, clusters=["1", "3"], ax=ax, show=False, time_label="hours")
    assert out is fig and ax[0].get_title().startswith("module 1")
    plt.close(fig)
    with pytest.raises(ValueError, match="Unknown modules"):
        ct.pl.vrnn_trajectories(clustered, clusters=["9"], show=False)


def test_umap_labels_only_named_genes(clustered):
    named = list(clustered.var_names[clustered.var["vrnn_selected"]][:2])
    fig = ct.pl.vrnn_umap(clustered, genes=named, show=False)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert sorted(texts) == sorted(named)
    assert len(ax.collections[0].get_offsets()) == int(clustered.var["vrnn_selected"].sum())  # one point per gene
    rings = ax.collections[-len(named) :]  # and a ring around each named gene, drawn last
    assert [len(r.get_offsets()) for r in rings] == [1] * len(named)
    assert "vrnn_umap" not in clustered.varm  # computed, not stored
    plt.close(fig)
    fig = ct.pl.vrnn_umap(clustered, show=False)
    assert not fig.axes[0].texts
    plt.close(fig)
    fig = ct.pl.vrnn_umap(clustered, color="vrnn_onset", show=False)
    assert len(fig.axes) == 2  # colour bar for a numeric column
    plt.close(fig)
    with pytest.raises(KeyError, match="not in var_names"):
        ct.pl.vrnn_umap(clustered, genes=["nope"], show=False)


def test_genes_show_data_and_reconstruction(clustered):
    genes = list(clustered.var_names[clustered.var["vrnn_selected"]][:3])
    fig = ct.pl.vrnn_genes(clustered, genes, show=False)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 3
    i = clustered.var_names.get_loc(genes[0])
    recon = next(line for line in axes[0].lines if line.get_label() == "VRNN")
    assert np.allclose(recon.get_ydata(), clustered.varm["vrnn_recon"][i])
    assert np.allclose(recon.get_xdata(), clustered.uns["vrnn"]["time_points"])
    assert genes[0] in axes[0].get_title()
    plt.close(fig)
    unmodelled = clustered.var_names[~clustered.var["vrnn_selected"]][0]
    with pytest.raises(ValueError, match="were not modelled"):
        ct.pl.vrnn_genes(clustered, [unmodelled], show=False)
    with pytest.raises(KeyError, match="not in var_names"):
        ct.pl.vrnn_genes(clustered, ["nope"], show=False)
    with pytest.raises(ValueError, match="at least one gene"):
        ct.pl.vrnn_genes(clustered, [], show=False)


def test_plots_need_a_clustering():
    adata = ct.datasets.simulate_timecourse(20, cells_per_time=5)
    for plot in (ct.pl.vrnn_trajectories, ct.pl.vrnn_umap):
        with pytest.raises(KeyError, match="run ct.tl.vrnn_cluster"):
            plot(adata, show=False)
    with pytest.raises(KeyError, match="run ct.tl.vrnn_cluster"):
        ct.pl.vrnn_genes(adata, ["gene_0"], show=False)


def test_module_timing_plot(clustered):
    fig = ct.pl.vrnn_module_timing(clustered, show=False)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    table = clustered.uns["vrnn"]["module_timing"]
    assert [t.get_text() for t in ax.get_yticklabels()][-1].startswith(f"module {table['module'].iloc[0]}")
    onsets = table["onset"].dropna().to_numpy()
    drawn = np.concatenate([line.get_xdata() for line in ax.lines if line.get_marker() == "o"])
    assert np.allclose(np.sort(drawn), np.sort(onsets))
    plt.close(fig)
    fig, ax = plt.subplots()
    assert ct.pl.vrnn_module_timing(clustered, ax=ax, show=False) is fig
    plt.close(fig)


def test_genes_plot_marks_missing_points():
    a = ct.datasets.simulate_timecourse_variant("irregular", 60, random_state=1)
    ct.tl.vrnn_cluster(a, "time", 3, method="kmeans", layer="counts", n_top_genes=None)
    gene = a.var_names[a.var["vrnn_selected"].to_numpy()][0]
    fig = ct.pl.vrnn_genes(a, [gene], show=False)
    ax = fig.axes[0]
    hollow = [line for line in ax.lines if line.get_label() == "not measured"]
    n_missing = int((a.varm["vrnn_observed"][a.var_names.get_loc(gene)] == 0).sum())
    assert len(hollow) == 1 and len(hollow[0].get_xdata()) == n_missing == 6
    assert any(line.get_label() == "kmeans profile" for line in ax.lines)
    plt.close(fig)


def test_umap_basis_stored_once_and_reused(kmeans_modules):
    adata = kmeans_modules
    selected = adata.var["vrnn_selected"].to_numpy()
    fig = ct.pl.vrnn_umap(adata, basis="vrnn_umap", show=False)
    plt.close(fig)
    coords = adata.varm["vrnn_umap"]
    assert coords.shape == (adata.n_vars, 2)
    assert np.isfinite(coords[selected]).all() and np.isnan(coords[~selected]).all()
    # drawn as stored, not recomputed nor overwritten
    adata.varm["vrnn_umap"] = coords * 2
    fig = ct.pl.vrnn_umap(adata, basis="vrnn_umap", show=False)
    np.testing.assert_allclose(np.asarray(fig.axes[0].collections[0].get_offsets()), coords[selected] * 2)
    np.testing.assert_array_equal(adata.varm["vrnn_umap"], coords * 2)
    plt.close(fig)
    # the same seed gives the same layout
    fig = ct.pl.vrnn_umap(adata, basis="again", show=False)
    np.testing.assert_allclose(adata.varm["again"], coords)
    plt.close(fig)
