"""TF-IDF and latent semantic indexing (LSI) of peak counts, with projection of a query onto a reference LSI."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from chromtools._docs import doc_params
from chromtools._utils import get_modality
from chromtools._utils import idf as inverse_document_frequency

from ._align import Matching

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


def tfidf_matrix(X, idf: np.ndarray | None = None, *, scale_factor: float = 1e4) -> tuple[sp.csr_matrix, np.ndarray]:
    """TF-IDF of a cells × peaks matrix: ``log1p(tf · idf · scale_factor)`` on binarised counts.

    Parameters
    ----------
    X
        Counts (dense or sparse).
    idf
        Inverse document frequency per peak; computed from ``X`` when ``None``
        (``log(1 + n_cells / (1 + n_cells_open))``).
    scale_factor
        Multiplier before the logarithm (Signac's default).

    Returns
    -------
    The TF-IDF matrix (CSR, float32) and the IDF used.
    """
    # Ours, not muon.atac.pp.tfidf: muon's IDF is n_cells / n_counts of unbinarised counts, another transform.
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data[:] = 1.0
    n_open = np.asarray(X.sum(axis=1)).ravel()
    if idf is None:
        idf = inverse_document_frequency(np.asarray(X.sum(axis=0)).ravel(), X.shape[0])
    tf = sp.diags(1.0 / np.maximum(n_open, 1.0)).astype(np.float32) @ X
    out = (tf @ sp.diags(np.asarray(idf, np.float32))).tocsr()
    out.data = np.log1p(out.data * scale_factor).astype(np.float32)
    return out, np.asarray(idf, np.float32)


@doc_params
def lsi(
    data: AnnData | MuData,
    n_comps: int = 50,
    *,
    layer: str | None = None,
    reference: AnnData | MuData | None = None,
    matching: Matching = "auto",
    drop_first: bool = True,
    normalize: bool = True,
    mod: str | None = None,
    key_added: str = "X_lsi",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Latent semantic indexing of peak counts (TF-IDF, then truncated SVD), or projection onto a reference's LSI.

    The standard linear embedding of scATAC (Signac, ArchR) and the baseline of reference
    mapping: fit on the reference, project the query with the reference's IDF and loadings,
    and transfer labels with :func:`chromtools.tl.transfer_labels` (``use_rep='X_lsi'``).

    Parameters
    ----------
    {data}
    n_comps
        Number of SVD components computed.
    layer
        Layer of counts (default ``X``).
    reference
        Project onto the LSI of this reference (it must have been through :func:`lsi`):
        features are matched as :func:`chromtools.pp.feature_map` does, missing ones count as zero.
    matching
        How query features are matched to the reference's (``'auto'``, ``'names'``,
        ``'overlap'``; see :func:`chromtools.pp.feature_map`).
    drop_first
        Drop the first component, which mostly tracks sequencing depth.
    normalize
        Scale each cell's coordinates to unit length (cosine geometry, which suits kNN on LSI).
    {mod}
    {key_added}
    {random_state}
    {copy}

    Returns
    -------
    Writes ``obsm['X_lsi' | key_added]`` (cells × components), and — when fitted here —
    ``varm[key_added]`` (loadings) and ``uns[key_added]`` (``idf``, ``singular_values``,
    ``params``).
    """
    # Ours, not muon.atac.tl.lsi: muon runs an unseeded ARPACK SVD on adata.X with standardised
    # embeddings and no projection of a query, so its coordinates differ from these.
    from sklearn.utils.extmath import randomized_svd

    if copy:
        data = data.copy()
    adata = get_modality(data, mod)
    X = adata.X if layer is None else adata.layers[layer]
    if reference is None:
        if n_comps < 2 or n_comps >= min(adata.shape):
            msg = f"n_comps must be between 2 and {min(adata.shape) - 1}, got {n_comps}."
            raise ValueError(msg)
        T, idf = tfidf_matrix(X)
        _, S, Vt = randomized_svd(T, n_components=n_comps, random_state=random_state, n_iter=5)
        loadings = Vt.T.astype(np.float32)
        adata.varm[key_added] = loadings
        adata.uns[key_added] = {
            "idf": idf,
            "singular_values": S.astype(np.float32),
            "params": {
                "n_comps": n_comps,
                "layer": layer,
                "drop_first": drop_first,
                "normalize": normalize,
                "random_state": random_state,
            },
        }
        # T @ V (= U S for an exact SVD) is exactly what a projected query gets
        coords = np.asarray(T @ loadings, dtype=np.float32)
    else:
        from ._align import apply_feature_map, feature_map

        ref = get_modality(reference, mod)
        if key_added not in ref.uns or key_added not in ref.varm:
            msg = f"The reference has no LSI under '{key_added}'; run chromtools.pp.lsi on it first."
            raise KeyError(msg)
        params = ref.uns[key_added]["params"]
        drop_first, normalize = params["drop_first"], params["normalize"]
        S, _ = feature_map(adata.var, ref.var, matching=matching, min_overlap=0.0, what="query")
        T, _ = tfidf_matrix(apply_feature_map(X, S), np.asarray(ref.uns[key_added]["idf"]))
        coords = np.asarray(T @ np.asarray(ref.varm[key_added]), dtype=np.float32)
        adata.uns[key_added] = {"params": {**params, "projected": True}}
    if drop_first:
        coords = coords[:, 1:]
    if normalize:
        coords = coords / np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-12)
    adata.obsm[key_added] = coords
    logger.info("LSI: %d cells x %d components", coords.shape[0], coords.shape[1])
    return data if copy else None
