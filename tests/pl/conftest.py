from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData


@pytest.fixture(scope="module")
def mapped():
    """A reference and a query in a shared 3-D space with three well-separated cell types, labels transferred."""
    import chromtools as ct

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


@pytest.fixture(scope="module")
def kmeans_modules():
    """Temporal modules found quickly (k-means baseline, no training) on an irregularly sampled simulation."""
    import chromtools as ct

    adata = ct.datasets.simulate_timecourse_variant("irregular", 60, random_state=1)
    ct.tl.vrnn_cluster(adata, "time", 3, method="kmeans", layer="counts", n_top_genes=None)
    return adata
