from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct


@pytest.fixture(scope="module")
def sim():
    return ct.datasets.simulate_scatac(500, 400, n_cell_types=3, n_batches=2, random_state=0)


def test_tfidf_matrix_values():
    X = np.array([[2, 0, 1], [0, 0, 3], [0, 0, 0]])
    T, idf = ct.pp.tfidf_matrix(X)
    np.testing.assert_allclose(idf, np.log1p(3 / (1 + np.array([1, 0, 2]))), rtol=1e-6)
    expected = np.log1p(np.array([[0.5 * idf[0], 0, 0.5 * idf[2]], [0, 0, idf[2]], [0, 0, 0]]) * 1e4)
    np.testing.assert_allclose(T.toarray(), expected, rtol=1e-5)


def test_lsi_fit_and_projection_of_the_reference_itself(sim):
    ref = sim.copy()
    ct.pp.lsi(ref, 10)
    assert ref.obsm["X_lsi"].shape == (ref.n_obs, 9)  # first component dropped
    np.testing.assert_allclose(np.linalg.norm(ref.obsm["X_lsi"], axis=1), 1.0, rtol=1e-5)
    assert ref.varm["X_lsi"].shape == (ref.n_vars, 10)
    T, _ = ct.pp.tfidf_matrix(ref.X)
    raw = (T @ ref.varm["X_lsi"])[:, 1:]
    np.testing.assert_allclose(ref.obsm["X_lsi"], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    U, S, _ = np.linalg.svd(T.toarray(), full_matrices=False)  # exact SVD: the leading axes agree
    for j in range(1, 4):
        assert abs(np.corrcoef((T @ ref.varm["X_lsi"])[:, j], U[:, j] * S[j])[0, 1]) > 0.99
    # projecting the reference onto its own LSI gives its coordinates back
    again = sim.copy()
    ct.pp.lsi(again, reference=ref)
    np.testing.assert_allclose(again.obsm["X_lsi"], ref.obsm["X_lsi"], atol=1e-4)
    assert again.uns["X_lsi"]["params"]["projected"]


def test_projection_aligns_features_and_errors(sim):
    ref = sim[sim.obs["batch"] == "batch_0"].copy()
    query = sim[sim.obs["batch"] == "batch_1"].copy()
    ct.pp.lsi(ref, 10, normalize=False, drop_first=False)
    shuffled = query[:, np.random.default_rng(0).permutation(query.n_vars)].copy()
    ct.pp.lsi(query, reference=ref)
    ct.pp.lsi(shuffled, reference=ref)
    np.testing.assert_allclose(shuffled.obsm["X_lsi"], query.obsm["X_lsi"], atol=1e-5)
    assert query.obsm["X_lsi"].shape == (query.n_obs, 10)
    with pytest.raises(KeyError, match="run chromtools.pp.lsi on it first"):
        ct.pp.lsi(query, reference=sim)
    with pytest.raises(ValueError, match="n_comps must be between 2"):
        ct.pp.lsi(sim.copy(), 1)
    out = ct.pp.lsi(sim, 5, copy=True)
    assert "X_lsi" in out.obsm and "X_lsi" not in sim.obsm
