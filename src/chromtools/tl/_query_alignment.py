"""Feature alignment of a query to the reference's features, in memory or block by block for a backed query."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from chromtools._utils import get_layer
from chromtools.models import Scratch, check_count_matrix, is_lazy_matrix, rows_as_csr_dataset
from chromtools.pp import align_features, feature_map

if TYPE_CHECKING:
    from anndata import AnnData

#: Query features must cover at least this fraction of the reference's features, else map_query refuses.
MIN_FEATURE_OVERLAP = 0.5

Matching = Literal["auto", "names", "overlap"]
OverlapRule = Literal["sum", "largest"]


def feature_indexer(
    query_names: pd.Index, reference_names: pd.Index, *, min_overlap: float = MIN_FEATURE_OVERLAP, what: str = "query"
) -> tuple[np.ndarray, float, str]:
    """Position in the query of every reference feature (-1: missing), the overlap and how it matched.

    Features are matched by name; when fewer than 80 % match and both sides are peak names in
    different styles (``chr1:100-200`` / ``chr1-100-200`` / ``chr1_100_200``), by coordinates.
    Raises when no feature, or fewer than ``min_overlap`` of the reference's features, are found.
    (Exact matching only; :func:`chromtools.pp.feature_map` also matches overlapping peaks.)
    """
    S, info = feature_map(
        pd.Index(query_names), pd.Index(reference_names), matching="names", min_overlap=min_overlap, what=what
    )
    S = S.tocsc()
    idx = np.full(S.shape[1], -1, np.int64)
    has = np.diff(S.indptr) > 0
    idx[has] = S.indices[S.indptr[:-1][has]]
    return idx, info["overlap"], info["matched_by"]


def _align_anndata(
    adata: AnnData,
    reference_names: pd.Index,
    *,
    layer: str | None,
    out_layer: str | None,
    min_overlap: float,
    what: str,
    matching: Matching = "auto",
    overlap_rule: OverlapRule = "sum",
    scratch_dir=None,
) -> tuple[AnnData, dict, Any]:
    """The query in the reference's features, its alignment report, and the scratch copy (or None).

    A backed query stays on disk: when its features are the reference's, in order, the aligned
    AnnData reads the query's own matrix; otherwise the aligned counts are written block by
    block to a scratch HDF5 file (:class:`chromtools.models.Scratch`).
    """
    from anndata import AnnData

    check_count_matrix(adata, layer, what=what)
    counts = get_layer(adata, layer)
    lazy = is_lazy_matrix(counts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if lazy:
            S, info = feature_map(
                adata.var,
                pd.DataFrame(index=reference_names),
                matching=matching,
                overlap_rule=overlap_rule,
                min_overlap=min_overlap,
            )
        else:
            aligned = align_features(
                adata,
                pd.DataFrame(index=reference_names),
                layer=layer,
                matching=matching,
                overlap_rule=overlap_rule,
                min_overlap=min_overlap,
            )
    for w in caught:  # re-issued here so that they point at the user's map_query call
        warnings.warn(str(w.message).replace("The query", f"The {what}"), w.category, stacklevel=4)
    obs = pd.DataFrame(index=adata.obs_names.copy())
    var = pd.DataFrame(index=reference_names.copy())
    if lazy:
        if _is_identity(S):
            X, scratch = rows_as_csr_dataset(counts, scratch_dir, what=what)
        else:
            scratch = Scratch(scratch_dir)
            try:
                X = scratch.write_csr(counts, S, name="aligned", what=what)
            except BaseException:
                scratch.close()
                raise
        out = AnnData(X=X, obs=obs, var=var)
        if out_layer is not None:
            out.layers[out_layer] = X
        return out, dict(info), scratch
    X = aligned.X
    out = AnnData(X=X, obs=obs, var=var)
    if out_layer is not None:
        out.layers[out_layer] = X.copy()
    return out, dict(aligned.uns["features"]), None


def _is_identity(S) -> bool:
    """Whether the feature map ``S`` (query x reference features) keeps every feature in place."""
    S = S.tocsr()
    n = S.shape[0]
    return (
        S.shape[1] == n
        and S.nnz == n
        and np.array_equal(S.indptr, np.arange(n + 1))
        and np.array_equal(S.indices, np.arange(n))
        and bool(np.all(S.data == 1))
    )
