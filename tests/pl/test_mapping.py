from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import chromtools as ct


@pytest.fixture(scope="module")
def mapped():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], float)
    labels = rng.integers(0, 3, size=150)
    ref = AnnData(X=np.zeros((150, 1)), obs=pd.DataFrame(index=[f"r{i}" for i in range(150)]))
    ref.obs["cell_type"] = pd.Categorical(np.array(["A", "B", "C"])[labels])
    ref.obs["batch"] = "ref"
    ref.obsm["X_reference"] = centres[labels] + rng.normal(0, 0.5, size=(150, 3))
    qlab = rng.integers(0, 3, size=60)
    query = AnnData(X=np.zeros((60, 1)), obs=pd.DataFrame(index=[f"q{i}" for i in range(60)]))
    query.obs["cell_type"] = pd.Categorical(np.array(["A", "B", "C"])[qlab])
    query.obs["batch"] = "query"
    query.obsm["X_reference"] = centres[qlab] + rng.normal(0, 0.5, size=(60, 3))
    ct.tl.transfer_labels(query, ref, "cell_type")
    return ref, query


def test_mapping_umap_panels(mapped):
    ref, query = mapped
    fig = ct.pl.mapping_umap(query, ref, show=False)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles == ["dataset", "batch", "cell_type", "cell_type_pred", "cell_type_pred_uncertainty"]
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    query.obsm["X_2d"] = query.obsm["X_reference"][:, :2]
    ref.obsm["X_2d"] = ref.obsm["X_reference"][:, :2]
    out = ct.pl.mapping_umap(query, ref, color=["dataset", "cell_type_pred_uncertainty"], basis="X_2d", ax=axes)
    assert out is fig
    # reference cells have no uncertainty: drawn grey below the coloured query cells
    offsets = axes[1].collections[0].get_offsets()
    assert len(offsets) == ref.n_obs
    np.testing.assert_allclose(np.asarray(offsets), ref.obsm["X_2d"])
    plt.close(fig)


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
