from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb

import chromtools as ct


def test_mapping_umap_panels(mapped):
    ref, query = mapped
    fig = ct.pl.mapping_umap(query, ref, show=False)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles == ["dataset", "batch", "cell_type", "cell_type_pred", "cell_type_pred_uncertainty"]
    assert "X_umap" not in ref.obsm and "X_umap" not in query.obsm  # computed, not stored
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    query.obsm["X_2d"] = query.obsm["X_reference"][:, :2]
    ref.obsm["X_2d"] = ref.obsm["X_reference"][:, :2]
    out = ct.pl.mapping_umap(
        query, ref, color=["dataset", "cell_type_pred_uncertainty"], basis="X_2d", ax=axes, show=False
    )
    assert out is fig
    # one point per cell, reference first so that the query is drawn on top
    points = axes[1].collections[0]
    np.testing.assert_allclose(np.asarray(points.get_offsets()), np.vstack([ref.obsm["X_2d"], query.obsm["X_2d"]]))
    # reference cells have no uncertainty: drawn grey; query cells take colours of the colour map
    fig.canvas.draw()
    rgba = points.get_facecolors()
    np.testing.assert_allclose(rgba[: ref.n_obs, :3], np.broadcast_to(to_rgb("#d9d9d9"), (ref.n_obs, 3)))
    assert not np.allclose(rgba[ref.n_obs :, :3], to_rgb("#d9d9d9"))
    # categorical panels: reference cells translucent
    alpha = axes[0].collections[0].get_alpha()
    np.testing.assert_allclose(alpha, np.r_[np.full(ref.n_obs, 0.35), np.ones(query.n_obs)])
    plt.close(fig)


def test_mapping_umap_basis_computed_once_and_stored(mapped):
    ref, query = mapped
    for obj in (ref, query):
        obj.obsm.pop("X_joint", None)
    fig = ct.pl.mapping_umap(query, ref, color=["dataset"], basis="X_joint", show=False)
    plt.close(fig)
    assert ref.obsm["X_joint"].shape == (ref.n_obs, 2) and query.obsm["X_joint"].shape == (query.n_obs, 2)
    # the same seed gives the same embedding
    joint = np.vstack([ref.obsm["X_joint"], query.obsm["X_joint"]])
    for obj in (ref, query):
        obj.obsm["X_again"] = obj.obsm.pop("X_joint")
    plt.close(ct.pl.mapping_umap(query, ref, color=["dataset"], basis="X_joint", show=False))
    np.testing.assert_allclose(np.vstack([ref.obsm["X_joint"], query.obsm["X_joint"]]), joint)
    # a stored embedding is drawn as is, never recomputed nor overwritten
    ref.obsm["X_joint"] = ref.obsm["X_joint"] + 100.0
    kept = ref.obsm["X_joint"].copy()
    fig = ct.pl.mapping_umap(query, ref, color=["dataset"], basis="X_joint", show=False)
    drawn = np.asarray(fig.axes[0].collections[0].get_offsets())
    np.testing.assert_allclose(drawn[: ref.n_obs], kept)
    np.testing.assert_array_equal(ref.obsm["X_joint"], kept)
    plt.close(fig)
    # coordinates of only one side cannot be joint
    del query.obsm["X_joint"]
    with pytest.raises(KeyError, match="Only the reference has obsm\\['X_joint'\\]"):
        ct.pl.mapping_umap(query, ref, color=["dataset"], basis="X_joint", show=False)
    np.testing.assert_array_equal(ref.obsm["X_joint"], kept)


def test_mapping_umap_errors(mapped):
    ref, query = mapped
    with pytest.raises(KeyError, match="neither 'dataset' nor an obs column"):
        ct.pl.mapping_umap(query, ref, color=["nope"], basis="X_reference")
    with pytest.raises(KeyError, match="has no obsm\\['X_lsi'\\]"):
        ct.pl.mapping_umap(query, ref, use_rep="X_lsi")
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="ax has 1 axes but 2 colour keys"):
        ct.pl.mapping_umap(query, ref, color=["dataset", "batch"], basis="X_reference", ax=[ax])
    plt.close(fig)


def test_confusion_matrix(mapped):
    _, query = mapped
    query.obs["noisy"] = query.obs["cell_type"].astype(str)
    query.obs.iloc[:10, query.obs.columns.get_loc("noisy")] = "Unknown"
    fig = ct.pl.confusion_matrix(query, "cell_type", "noisy")
    ax = fig.axes[0]
    values = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(values).sum(1), 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "Unknown"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C"]
    plt.close(fig)
    fig = ct.pl.confusion_matrix(query, "cell_type", "noisy", normalize="none", annotate=False)
    assert np.asarray(fig.axes[0].images[0].get_array()).sum() == query.n_obs
    plt.close(fig)
    with pytest.raises(KeyError, match="no column 'x'"):
        ct.pl.confusion_matrix(query, "cell_type", "x")
    with pytest.raises(ValueError, match="normalize must be"):
        ct.pl.confusion_matrix(query, "cell_type", "noisy", normalize="all")
