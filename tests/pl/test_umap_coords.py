from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from chromtools.pl._utils import _SCANPY_APPROX_KNN_MIN_ROWS, _CsrMatrixKnn


def test_approximate_neighbours_reach_scanpy_as_a_csr_matrix():
    # from 8,192 rows scanpy switches to pynndescent, whose csr_array graph scanpy 1.11 cannot read
    n = _SCANPY_APPROX_KNN_MIN_ROWS + 8
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (4, 6))
    X = (centres[rng.integers(0, 4, n)] + rng.normal(size=(n, 6))).astype(np.float32)
    knn = _CsrMatrixKnn(n, 15, random_state=0)
    assert knn.get_params()["n_neighbors"] == 15
    graph = knn.fit_transform(X)
    assert isinstance(graph, sp.csr_matrix) and graph.shape == (n, n)
    tmp = AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    tmp.obsm["X_rep"] = X
    sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X_rep", random_state=0, transformer=knn)
    dist = tmp.obsp["distances"]
    assert dist.shape == (n, n)
    # every row holds the same number of neighbours (at least the 14 besides the cell itself), and
    # the 14 nearest match an exact search
    per_row = np.diff(dist.indptr)
    assert per_row.min() == per_row.max() >= 14
    exact = np.sort(np.linalg.norm(X[:50, None] - X[None], axis=2), axis=1)[:, 1:15]
    rows = dist[:50].toarray()
    approx = np.stack([np.sort(r[r > 0])[:14] for r in rows])
    np.testing.assert_allclose(approx, exact, rtol=1e-3)
