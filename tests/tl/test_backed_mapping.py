"""Out-of-core mapping through ct.tl: backed inputs that cannot stay bounded are refused, and the kNN switch.

That a backed reference and query map to the in-memory numbers, reading only row blocks, is tested
with the block helpers in tests/models/test_backed.py.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import chromtools as ct
from chromtools.tl import _label_transfer

SMALL = {"n_hidden": 32, "n_latent": 6}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A simulated reference and query written to h5ad (counts in X only), and a reference trained briefly."""
    folder = tmp_path_factory.mktemp("backed")
    sim = ct.datasets.simulate_scatac(300, 120, n_cell_types=3, n_batches=2, random_state=3)
    del sim.layers["counts"]
    sim[sim.obs["batch"] == "batch_1"].copy().write_h5ad(folder / "query.h5ad")
    ref = sim[sim.obs["batch"] == "batch_0"].copy()
    model = folder / "reference"
    ct.tl.train_reference(ref.copy(), "batch", "cell_type", max_epochs=1, model_kwargs=SMALL, model_dir=model)
    return folder, ref, model


def test_backed_inputs_that_cannot_stay_bounded_are_refused_with_the_fix(files, tmp_path):
    folder, ref_mem, model = files
    query = ad.read_h5ad(folder / "query.h5ad", backed="r")
    with pytest.raises(ValueError, match="copy=False"):
        ct.tl.map_query(query, model, copy=True)
    query.obsm["X_reference"] = np.zeros((query.n_obs, SMALL["n_latent"]), np.float32)
    with pytest.raises(ValueError, match="to_memory"):
        ct.tl.transfer_labels(query, model, "cell_type", copy=True)
    with pytest.raises(FileNotFoundError, match="scratch_dir"):
        ct.tl.map_query(query, model, scratch_dir=tmp_path / "nope", max_epochs=1)
    # CSC on disk: rows cannot be read in blocks
    csc = ref_mem.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(ValueError, match="tocsr"):
        ct.tl.train_reference(
            ad.read_h5ad(tmp_path / "csc.h5ad", backed="r"), "batch", "cell_type", max_epochs=1, model_dir=tmp_path
        )
    # normalised values are caught on the sampled blocks
    norm = ref_mem.copy()
    norm.X = norm.X.astype(np.float32) * 0.37
    norm.write_h5ad(tmp_path / "norm.h5ad")
    with pytest.raises(ValueError, match="non-integer"):
        ct.tl.train_reference(
            ad.read_h5ad(tmp_path / "norm.h5ad", backed="r"), "batch", "cell_type", max_epochs=1, model_dir=tmp_path
        )
    with pytest.raises(ValueError, match="non-integer"):
        ct.tl.map_query(ad.read_h5ad(tmp_path / "norm.h5ad", backed="r"), model, max_epochs=1)


def _lsi_split():
    a = ct.datasets.simulate_scatac(6000, 1000, n_cell_types=6, n_batches=3, random_state=4)
    ct.pp.lsi(a, n_comps=10)
    ref = a[a.obs["batch"] != "batch_2"].copy()
    query = a[a.obs["batch"] == "batch_2"].copy()
    return ref, query


def test_pynndescent_agrees_with_exact_knn_and_is_seeded(monkeypatch):
    ref, query = _lsi_split()
    exact = ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", knn_method="exact", copy=True)
    approx = ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", knn_method="pynndescent", copy=True)
    again = ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", knn_method="pynndescent", copy=True)
    pred = "cell_type_pred"
    agree = float((exact.obs[pred].astype(str) == approx.obs[pred].astype(str)).mean())
    assert agree >= 0.99
    diff = np.abs(approx.obs[f"{pred}_probability"].to_numpy() - exact.obs[f"{pred}_probability"].to_numpy())
    assert diff.mean() < 0.01  # a few cells see one or two other neighbours
    pd.testing.assert_frame_equal(approx.obs, again.obs)  # same seed, same index, same calls
    assert approx.uns[pred]["params"]["knn_method_used"] == "pynndescent"
    assert exact.uns[pred]["params"]["knn_method_used"] == "exact"
    # 'auto' switches at the documented reference size
    auto = ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", novelty=False, copy=True)
    assert auto.uns[pred]["params"]["knn_method_used"] == "exact"
    assert _label_transfer.resolve_knn_method("auto", 49_999) == "exact"
    assert _label_transfer.resolve_knn_method("auto", 50_000) == "pynndescent"
    monkeypatch.setattr(_label_transfer, "APPROX_KNN_MIN_CELLS", ref.n_obs)
    auto = ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", novelty=False, copy=True)
    assert auto.uns[pred]["params"]["knn_method_used"] == "pynndescent"
    with pytest.raises(ValueError, match="knn_method"):
        ct.tl.transfer_labels(query, ref, "cell_type", use_rep="X_lsi", knn_method="annoy", copy=True)
