from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import chromtools as ct

REF = pd.Index(["chr1:100-600", "chr1:1000-1500", "chr1:2000-2500", "chr2:0-500"])


def _query(names, X):
    a = AnnData(X=sp.csr_matrix(np.asarray(X, np.float32)), var=pd.DataFrame(index=names))
    ct.io.add_peak_coordinates(a)
    return a


def test_overlap_rules_for_one_to_many_overlaps():
    # q0 overlaps r0 only; q1 and q2 both overlap r1 (q2 more); q3 spans r1 and r2; nothing overlaps r3
    names = ["chr1:50-200", "chr1:900-1050", "chr1:1100-1400", "chr1:1450-2100"]
    q = _query(names, [[1, 2, 3, 4], [10, 20, 30, 40]])
    with pytest.warns(UserWarning, match="peak_matrix"):
        S, info = ct.pp.feature_map(q.var, REF, matching="overlap", min_overlap=0.5)
    X = (q.X @ S).toarray()
    np.testing.assert_array_equal(X, [[1, 2 + 3 + 4, 4, 0], [10, 20 + 30 + 40, 40, 0]])  # 'sum'
    assert info["matched_by"] == "peak overlap" and info["n_shared"] == 3 and info["overlap"] == 0.75
    assert info["n_reference_with_several_query_peaks"] == 1
    assert info["n_query_peaks_in_several_reference_peaks"] == 1
    with pytest.warns(UserWarning):
        S, info = ct.pp.feature_map(q.var, REF, matching="overlap", overlap_rule="largest", min_overlap=0.5)
    np.testing.assert_array_equal((q.X @ S).toarray(), [[1, 3, 4, 0], [10, 30, 40, 0]])  # q2 overlaps r1 most
    # a 100-bp minimum drops q1 (50 bp into r1) and q3's 50 bp into r1
    with pytest.warns(UserWarning):
        S, _ = ct.pp.feature_map(q.var, REF, matching="overlap", min_overlap_bp=100, min_overlap=0.5)
    np.testing.assert_array_equal((q.X @ S).toarray()[0], [1, 3, 4, 0])


def test_auto_prefers_names_and_falls_back_to_overlap():
    same = _query(list(REF), np.eye(4))
    S, info = ct.pp.feature_map(same.var, REF)
    assert info["matched_by"] == "names" and info["overlap"] == 1.0
    shifted = _query(["chr1:150-650", "chr1:1000-1490", "chr1:2010-2500", "chr2:20-480"], np.eye(4))
    with pytest.warns(UserWarning, match="peaks differ from the reference's"):
        out = ct.pp.align_features(shifted, REF)
    np.testing.assert_array_equal(out.X.toarray(), np.eye(4))
    assert out.uns["features"]["matched_by"] == "peak overlap"
    assert out.var_names.tolist() == REF.tolist()
    with pytest.raises(ValueError, match="Only 0.0%|shares no features"):
        ct.pp.feature_map(shifted.var, REF, matching="names")
    genes = AnnData(X=np.zeros((1, 2), np.float32), var=pd.DataFrame(index=["CD3E", "MS4A1"]))
    with pytest.raises(ValueError, match="needs peak coordinates"):
        ct.pp.feature_map(genes.var, REF, matching="overlap")
    with pytest.raises(ValueError, match="matching must be one of"):
        ct.pp.feature_map(genes.var, REF, matching="fuzzy")
