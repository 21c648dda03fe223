"""Out-of-core reference mapping: backed AnnData read in row blocks give the in-memory numbers, and the block helpers."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import chromtools as ct
from chromtools.models import _backed
from chromtools.models._input_checks import compute_idf

SMALL = {"n_hidden": 32, "n_latent": 6}
EPOCHS = 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A simulated reference and query written to h5ad (counts in X only), and their in-memory copies."""
    folder = tmp_path_factory.mktemp("backed")
    a = ct.datasets.simulate_scatac(900, 300, n_cell_types=4, n_batches=3, random_state=2)
    del a.layers["counts"]
    ref = a[a.obs["batch"] != "batch_2"].copy()
    query = a[a.obs["batch"] == "batch_2"].copy()
    ref.write_h5ad(folder / "ref.h5ad")
    query.write_h5ad(folder / "query.h5ad")
    return folder, ref, query


@pytest.fixture(scope="module")
def in_memory(files):
    """Reference trained and query mapped in memory: the run every backed result must equal."""
    folder, ref, query = files
    ref, query = ref.copy(), query.copy()
    model = folder / "in_memory_reference"
    ct.tl.train_reference(ref, "batch", "cell_type", max_epochs=EPOCHS, model_kwargs=SMALL, model_dir=model)
    ct.tl.map_query(query, model, max_epochs=3)
    ct.tl.transfer_labels(query, model, "cell_type")
    return ref, query, model


class _ReadSpy:
    """Records how many rows every read of a backed sparse matrix returned."""

    def __init__(self, monkeypatch, dataset):
        self.rows: list[int] = []
        cls = type(dataset)
        original = cls.__getitem__

        def spy(obj, index):
            out = original(obj, index)
            self.rows.append(int(out.shape[0]) if hasattr(out, "shape") and len(out.shape) == 2 else 1)
            return out

        monkeypatch.setattr(cls, "__getitem__", spy)


def test_backed_reference_and_query_map_like_in_memory_reading_only_blocks(files, in_memory, monkeypatch, tmp_path):
    folder, _, _ = files
    mem_ref, mem_query, _ = in_memory
    monkeypatch.setattr(_backed, "BLOCK_NNZ", 5_000)  # blocks of a few dozen cells, as a huge file would get
    ref = ad.read_h5ad(folder / "ref.h5ad", backed="r")
    query = ad.read_h5ad(folder / "query.h5ad", backed="r")
    spy = _ReadSpy(monkeypatch, ref.X)
    model = tmp_path / "backed_reference"
    ct.tl.train_reference(ref, "batch", "cell_type", max_epochs=EPOCHS, model_kwargs=SMALL, model_dir=model)
    reference_reads, spy.rows = spy.rows, []
    ct.tl.map_query(query, model, max_epochs=3)
    ct.tl.transfer_labels(query, model, "cell_type")
    # same minibatches in the same order as in memory: the same numbers, not just close ones
    np.testing.assert_allclose(ref.obsm["X_reference"], mem_ref.obsm["X_reference"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(query.obsm["X_reference"], mem_query.obsm["X_reference"], rtol=0, atol=1e-6)
    assert (query.obs["cell_type_pred"].astype(str) == mem_query.obs["cell_type_pred"].astype(str)).all()
    assert ref.uns["X_reference"]["params"]["out_of_core"] and query.uns["X_reference"]["params"]["out_of_core"]
    assert not mem_query.uns["X_reference"]["params"]["out_of_core"]
    # no pass reads the matrix whole: every read is a block (BLOCK_NNZ) or a minibatch — 256 cells in
    # training, 128 when encoding the query, 1024 when store_reference encodes the reference
    assert max(reference_reads) <= 1024 and 1 < len(reference_reads)
    assert spy.rows and max(spy.rows) <= 256 < query.n_obs
    # scvi-tools' registration went to the model's light AnnData, not to the user's backed object
    assert not any(c.startswith("_scvi") for c in ref.obs.columns)
    assert _backed.is_lazy_matrix(ref.X)
    # the read-only file is untouched; results live in memory until the user writes them
    assert "X_reference" not in ad.read_h5ad(folder / "query.h5ad").obsm
    ad.AnnData(obs=query.obs, obsm=dict(query.obsm)).write_h5ad(folder / "mapped.h5ad")  # the documented recipe
    mapped = ad.read_h5ad(folder / "mapped.h5ad")
    np.testing.assert_array_equal(mapped.obsm["X_reference"], query.obsm["X_reference"])
    assert (mapped.obs["cell_type_pred"] == query.obs["cell_type_pred"]).all()


def test_backed_query_with_other_features_maps_through_a_blockwise_scratch_copy(
    files, in_memory, tmp_path, monkeypatch
):
    folder, _, mem_query = files
    _, _, model = in_memory
    monkeypatch.setattr(_backed, "BLOCK_NNZ", 5_000)
    order = np.random.default_rng(0).permutation(mem_query.n_vars)[: mem_query.n_vars - 20]  # shuffled, 20 missing
    shuffled = mem_query[:, order].copy()
    shuffled.write_h5ad(tmp_path / "shuffled.h5ad")
    backed = ad.read_h5ad(tmp_path / "shuffled.h5ad", backed="r")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fewer than all features: warned in both runs
        ct.tl.map_query(shuffled, model, max_epochs=3)
        ct.tl.map_query(backed, model, max_epochs=3, scratch_dir=scratch, model_dir=tmp_path / "query_model")
    np.testing.assert_allclose(backed.obsm["X_reference"], shuffled.obsm["X_reference"], rtol=0, atol=1e-6)
    assert backed.uns["X_reference"]["features"]["n_shared"] == mem_query.n_vars - 20
    # the aligned copy was removed once the query was encoded and its model saved
    assert list(scratch.iterdir()) == []
    qm = ct.tl.load_model(tmp_path / "query_model")
    assert qm.summary_stats.n_vars == mem_query.n_vars and qm.summary_stats.n_batch == 3
    # without model_dir too
    again = ad.read_h5ad(tmp_path / "shuffled.h5ad", backed="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ct.tl.map_query(again, model, max_epochs=3, scratch_dir=scratch)
    assert list(scratch.iterdir()) == []
    np.testing.assert_array_equal(again.obsm["X_reference"], backed.obsm["X_reference"])


def test_blockwise_helpers_equal_whole_matrix_results(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    X = sp.random(500, 60, density=0.1, format="csr", random_state=1, dtype=np.float32)
    X.data = rng.integers(1, 4, X.nnz).astype(np.float32)
    ad.AnnData(X=X).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r").X
    monkeypatch.setattr(_backed, "BLOCK_NNZ", 200)
    assert _backed.block_rows(backed) < 50
    np.testing.assert_array_equal(compute_idf(backed), compute_idf(X))
    S = sp.random(60, 40, density=0.05, format="csr", random_state=2)
    S.data[:] = 1
    scratch = _backed.Scratch(tmp_path)
    copy = scratch.write_csr(backed, S)
    assert (copy[:] != (X @ S)).nnz == 0
    dense = tmp_path / "dense.h5ad"
    ad.AnnData(X=X.toarray()).write_h5ad(dense)  # a dense backed X is copied to CSR block by block
    as_csr, dense_scratch = _backed.rows_as_csr_dataset(ad.read_h5ad(dense, backed="r").X, tmp_path)
    assert (as_csr[:] != X).nnz == 0
    scratch.close()
    dense_scratch.close()
    assert not scratch.path.exists() and not dense_scratch.path.exists()
