"""scIB batch-correction and bio-conservation scores of a joint embedding (wraps scib-metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


def _exact_neighbors(X: np.ndarray, k: int):
    """Exact neighbours with scikit-learn (no numba compilation, deterministic)."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)
    return NeighborsResults(indices=idx, distances=dist)


def scib_scores(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    embedding_keys: Sequence[str],
    *,
    unintegrated_key: str | None = None,
    fast: bool = False,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """ScIB scores of embeddings in ``obsm`` with scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker`.

    Needs the optional dependency ``scib-metrics`` (``pip install chromtools[metrics]``).

    Parameters
    ----------
    adata
        Cells (e.g. reference and query concatenated) with the embeddings in ``obsm``.
    batch_key
        ``obs`` column of the batches.
    label_key
        ``obs`` column of the cell types.
    embedding_keys
        ``obsm`` keys of the embeddings to score.
    unintegrated_key
        ``obsm`` key of an embedding without batch correction (the reference point of the
        principal-component-regression score). Default: an LSI of ``adata.X`` (TF-IDF and SVD,
        chromatin's PCA).
    fast
        Skip the slowest metrics (kBET, BRAS; the isolated-label and cLISI scores stay).
    n_jobs
        Threads of the neighbour search.

    Returns
    -------
    One row per embedding: every metric, the ``Batch correction`` and ``Bio conservation``
    means, and scIB's ``Total`` (0.4 batch + 0.6 bio).
    """
    try:
        from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "scib_scores needs scib-metrics: pip install 'chromtools[metrics]' (or pip install scib-metrics)."
        raise ImportError(msg) from err
    from anndata import AnnData

    for key in (batch_key, label_key):
        if key not in adata.obs:
            msg = f"obs has no column '{key}'."
            raise KeyError(msg)
        if pd.isna(adata.obs[key]).any():
            msg = f"obs['{key}'] has missing values; drop or fill them before scoring."
            raise ValueError(msg)
    for key in embedding_keys:
        if key not in adata.obsm:
            msg = f"obsm has no embedding '{key}'."
            raise KeyError(msg)
    work = AnnData(
        X=np.zeros((adata.n_obs, 1), np.float32),
        obs=adata.obs[[batch_key, label_key]].astype(str).astype("category"),
    )
    for key in embedding_keys:
        work.obsm[key] = np.asarray(adata.obsm[key], np.float32)
    if unintegrated_key is None:
        from chromtools.pp import lsi

        tmp = AnnData(X=adata.X)
        lsi(tmp, n_comps=31, key_added="X_lsi")
        work.obsm["_unintegrated"] = tmp.obsm["X_lsi"]
    else:
        work.obsm["_unintegrated"] = np.asarray(adata.obsm[unintegrated_key], np.float32)
    batch = BatchCorrection(bras=not fast, kbet_per_label=not fast)
    bio = BioConservation()
    bm = Benchmarker(
        work,
        batch_key=batch_key,
        label_key=label_key,
        embedding_obsm_keys=list(embedding_keys),
        pre_integrated_embedding_obsm_key="_unintegrated",
        bio_conservation_metrics=bio,
        batch_correction_metrics=batch,
        n_jobs=n_jobs,
        progress_bar=False,
    )
    bm.prepare(neighbor_computer=_exact_neighbors)
    bm.benchmark()
    res = bm.get_results(min_max_scale=False)
    res = res.loc[[k for k in res.index if k in set(embedding_keys)]]
    return res.apply(pd.to_numeric, errors="coerce")
