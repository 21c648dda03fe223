"""Label transfer from a reference to a query by distance-weighted k-nearest neighbours in a shared space."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from chromtools._docs import doc_params
from chromtools._utils import get_modality

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

Weighting = Literal["gaussian", "scarches", "distance", "uniform"]
WEIGHTINGS = ("gaussian", "scarches", "distance", "uniform")


def _reference_arrays(reference, labels_key: str, use_rep: str, mod: str | None) -> tuple[np.ndarray, pd.Series]:
    """Latent codes and labels of the reference: from AnnData/MuData, a model, or a saved model folder."""
    from anndata import AnnData
    from mudata import MuData

    if isinstance(reference, AnnData | MuData):
        ref = reference if isinstance(reference, MuData) and use_rep in reference.obsm else get_modality(reference, mod)
        if use_rep not in ref.obsm:
            msg = (
                f"The reference has no obsm['{use_rep}']; map it first (chromtools.tl.train_reference writes "
                f"obsm['X_reference']) or pass use_rep=<an obsm key present in both reference and query>."
            )
            raise KeyError(msg)
        if labels_key not in ref.obs:
            msg = f"The reference has no obs column '{labels_key}'; pass labels_key=<a reference obs column>."
            raise KeyError(msg)
        return np.asarray(ref.obsm[use_rep]), ref.obs[labels_key]
    store = None
    if isinstance(reference, str | os.PathLike):
        from chromtools.models._reference import check_saved_reference

        store = check_saved_reference(reference).get("reference_")
    else:
        store = getattr(reference, "reference_", None)
    if store is None:
        msg = (
            "This reference model stores no reference cells. Call model.store_reference(reference_adata) "
            "before saving it (chromtools.tl.train_reference does), or pass the reference AnnData."
        )
        raise ValueError(msg)
    obs = store["obs"]
    if labels_key not in obs:
        msg = f"The stored reference has no label column '{labels_key}'; it has {list(obs.columns)}."
        raise KeyError(msg)
    return np.asarray(store["latent"]), obs[labels_key]


def _weights(dist: np.ndarray, weighting: Weighting) -> np.ndarray:
    """Neighbour weights (rows sum to 1) from distances (cells × k), fully vectorised."""
    if weighting == "uniform":
        w = np.ones_like(dist)
    elif weighting == "distance":
        w = 1.0 / np.maximum(dist, 1e-12)
    elif weighting == "scarches":
        # scArches' rule: w = exp(-d / (2 / std(d))**2), std over the cell's k distances
        s = dist.std(axis=1, keepdims=True)
        w = np.exp(-dist / np.maximum((2.0 / np.maximum(s, 1e-12)) ** 2, 1e-12))
    else:
        # Gaussian kernel with a per-cell bandwidth: the distance to the cell's median neighbour
        sigma = np.maximum(np.median(dist, axis=1, keepdims=True), 1e-12)
        w = np.exp(-0.5 * (dist / sigma) ** 2)
    total = w.sum(axis=1, keepdims=True)
    bad = total[:, 0] <= 0
    if bad.any():
        w[bad] = 1.0
        total[bad] = dist.shape[1]
    return w / total


def knn_label_probabilities(
    reference_latent: np.ndarray,
    reference_labels,
    query_latent: np.ndarray,
    *,
    n_neighbors: int = 15,
    weighting: Weighting = "gaussian",
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Label probabilities of query cells from their nearest reference cells.

    Parameters
    ----------
    reference_latent, query_latent
        Coordinates (cells × dimensions) in one shared space.
    reference_labels
        One label per reference cell.
    n_neighbors
        Number of reference neighbours per query cell.
    weighting
        Neighbour weights: ``'gaussian'`` (kernel with a per-cell bandwidth, the median
        neighbour distance), ``'scarches'`` (scArches' rule), ``'distance'`` (inverse distance)
        or ``'uniform'``.

    Returns
    -------
    Probabilities (query cells × labels), and the neighbours' distances and indices (query
    cells × k).
    """
    from sklearn.neighbors import NearestNeighbors

    if weighting not in WEIGHTINGS:
        msg = f"weighting must be one of {WEIGHTINGS}, got {weighting!r}."
        raise ValueError(msg)
    codes, classes = pd.factorize(pd.Series(reference_labels).astype(str), sort=True)
    k = int(min(n_neighbors, reference_latent.shape[0]))
    if k < 1:
        msg = "The reference has no cells."
        raise ValueError(msg)
    nn = NearestNeighbors(n_neighbors=k).fit(np.asarray(reference_latent, np.float32))
    dist, idx = nn.kneighbors(np.asarray(query_latent, np.float32))
    w = _weights(dist, weighting)
    n_q = query_latent.shape[0]
    rows = np.repeat(np.arange(n_q), k)
    P = sp.csr_matrix((w.ravel(), (rows, codes[idx].ravel())), shape=(n_q, classes.size)).toarray()
    return pd.DataFrame(P, columns=pd.Index(classes, name="label")), dist, idx


def distance_ratio(
    reference_latent: np.ndarray,
    query_dist: np.ndarray,
    query_idx: np.ndarray,
    *,
    quantile: float = 0.99,
) -> np.ndarray:
    """How far each query cell lies from the reference, relative to the reference's own spacing.

    For a query cell, the median distance to its k reference neighbours is divided by the
    median "radius" of those neighbours (each reference cell's median distance to its own k
    nearest reference cells), which adapts to dense and sparse regions of the space. The ratio
    is then divided by the ``quantile`` of the same ratio over reference cells (leave-one-out),
    so that values above 1 mean "farther from the reference than 99 % of reference cells are
    from theirs": a cell of a type absent from the reference.

    Parameters
    ----------
    reference_latent
        Reference coordinates.
    query_dist, query_idx
        Distances to and indices of each query cell's k reference neighbours.
    quantile
        Quantile of the reference's own ratios used as the unit.

    Returns
    -------
    The calibrated distance ratio of every query cell.
    """
    from sklearn.neighbors import NearestNeighbors

    k = query_idx.shape[1]
    n_ref = reference_latent.shape[0]
    if n_ref < 3:
        return np.ones(query_idx.shape[0])
    kk = min(k + 1, n_ref)
    ref = np.asarray(reference_latent, np.float32)
    d_ref, i_ref = NearestNeighbors(n_neighbors=kk).fit(ref).kneighbors(ref)
    radius = np.maximum(np.median(d_ref[:, 1:], axis=1), 1e-12)
    ratio_ref = radius / np.median(radius[i_ref[:, 1:]], axis=1)
    unit = max(float(np.quantile(ratio_ref, quantile)), 1e-12)
    ratio = np.median(query_dist, axis=1) / np.median(radius[query_idx], axis=1)
    return ratio / unit


@doc_params
def transfer_labels(
    query: AnnData | MuData,
    reference,
    labels_key: str,
    *,
    use_rep: str = "X_reference",
    n_neighbors: int = 15,
    weighting: Weighting = "gaussian",
    threshold: float = 0.5,
    novelty: bool = True,
    novelty_quantile: float = 0.99,
    unknown_label: str = "Unknown",
    mod: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Transfer cell-type labels from a reference to a query by weighted k-nearest neighbours.

    For each query cell, the ``n_neighbors`` nearest reference cells in the shared space
    ``obsm[use_rep]`` vote for their label with weights that decrease with distance; the vote
    share of the winning label is its probability (as in scArches). Votes alone cannot tell a
    cell of a type absent from the reference — its nearest reference cells may all agree
    although they are far away — so, with ``novelty=True``, the probability is also multiplied
    by the cell's proximity to the reference, ``exp(-max(r - 1, 0))``, where ``r`` is the
    :func:`distance_ratio` (1 = as far from the reference as the 99th percentile of reference
    cells are from their own neighbours). The uncertainty is ``1 - probability``, and cells
    whose probability is below ``threshold`` are called ``unknown_label``. The computation is
    vectorised (neighbour searches and one sparse product), so millions of query cells take
    seconds.

    Parameters
    ----------
    query
        Query cells with ``obsm[use_rep]`` (e.g. written by :func:`chromtools.tl.map_query`).
    reference
        Reference cells: an AnnData/MuData with ``obsm[use_rep]`` and ``obs[labels_key]``, or a
        chromtools reference model (or its saved folder) that stores its reference cells
        (:meth:`~chromtools.models.PeakSCANVI.store_reference`).
    labels_key
        Reference ``obs`` column of the labels to transfer.
    use_rep
        ``obsm`` key of the shared space; any embedding present in both works (e.g. an LSI).
    n_neighbors
        Number of reference neighbours per query cell.
    weighting
        Neighbour weights: ``'gaussian'`` (kernel with per-cell bandwidth, default),
        ``'scarches'`` (scArches' rule), ``'distance'`` (inverse distance) or ``'uniform'``.
    threshold
        Cells whose best label has a probability below this value get ``unknown_label``
        (0: never).
    novelty
        Lower the probability of cells far from every reference cell (see above).
    novelty_quantile
        Quantile of the reference's own distance ratios that defines ratio 1.
    unknown_label
        Label of cells below ``threshold``.
    {mod}
    key_added
        Prefix of the written columns; default ``f'{labels_key}_pred'``.
    {copy}

    Returns
    -------
    Writes to the query (``None``, or the copy when ``copy=True``):

    ``obs['{labels_key}_pred' | key_added]``
        Predicted label (categorical), ``unknown_label`` below the threshold.
    ``obs[... + '_probability']``
        Weighted vote share of the best label (times the proximity with ``novelty=True``).
    ``obs[... + '_uncertainty']``
        ``1 - probability``.
    ``obs[... + '_distance_ratio']``
        The calibrated :func:`distance_ratio` (``novelty=True`` only).
    ``obsm[... + '_probabilities']``
        Vote share of every reference label (DataFrame; rows sum to 1).
    ``uns[...]['params']``
        The parameters of this call.
    """
    if not 0.0 <= threshold <= 1.0:
        msg = f"threshold must be between 0 and 1 (a probability), got {threshold}."
        raise ValueError(msg)
    if copy:
        query = query.copy()
    from mudata import MuData

    target = query if isinstance(query, MuData) and use_rep in query.obsm else get_modality(query, mod)
    if use_rep not in target.obsm:
        msg = (
            f"The query has no obsm['{use_rep}']; map it onto the reference first (chromtools.tl.map_query) "
            "or pass use_rep=<an obsm key present in both>."
        )
        raise KeyError(msg)
    ref_latent, ref_labels = _reference_arrays(reference, labels_key, use_rep, mod)
    n_missing = int(pd.isna(ref_labels).sum())
    if n_missing:
        msg = (
            f"Reference label column '{labels_key}' has {n_missing} missing values (NaN); drop those cells or "
            "give them a label before transferring labels."
        )
        raise ValueError(msg)
    q_latent = np.asarray(target.obsm[use_rep])
    if q_latent.shape[1] != ref_latent.shape[1]:
        msg = (
            f"obsm['{use_rep}'] has {q_latent.shape[1]} dimensions in the query but {ref_latent.shape[1]} in the "
            "reference; both must be coordinates in the same space."
        )
        raise ValueError(msg)
    if not (np.all(np.isfinite(q_latent)) and np.all(np.isfinite(ref_latent))):
        msg = f"obsm['{use_rep}'] contains NaN or infinite values."
        raise ValueError(msg)
    probs, dist, idx = knn_label_probabilities(
        ref_latent, ref_labels.to_numpy(), q_latent, n_neighbors=n_neighbors, weighting=weighting
    )
    probs.index = target.obs_names
    best = probs.to_numpy().argmax(axis=1)
    p_best = np.clip(probs.to_numpy()[np.arange(best.size), best], 0.0, 1.0)
    ratio = None
    if novelty:
        if not 0.0 < novelty_quantile <= 1.0:
            msg = f"novelty_quantile must be in (0, 1], got {novelty_quantile}."
            raise ValueError(msg)
        ratio = distance_ratio(ref_latent, dist, idx, quantile=novelty_quantile)
        p_best = p_best * np.exp(-np.maximum(ratio - 1.0, 0.0))
    labels = probs.columns.to_numpy()[best].astype(object)
    labels[p_best < threshold] = unknown_label
    order = list(pd.unique(ref_labels.astype(str)))
    if isinstance(ref_labels.dtype, pd.CategoricalDtype):
        order = [str(c) for c in ref_labels.cat.categories]
    categories = [c for c in order if c in set(probs.columns)] + [unknown_label]
    categories = list(dict.fromkeys(categories))
    key = key_added or f"{labels_key}_pred"
    target.obs[key] = pd.Categorical(labels, categories=categories)
    target.obs[f"{key}_probability"] = p_best
    target.obs[f"{key}_uncertainty"] = 1.0 - p_best
    if ratio is not None:
        target.obs[f"{key}_distance_ratio"] = ratio
    target.obsm[f"{key}_probabilities"] = probs
    target.uns[key] = {
        "params": {
            "labels_key": labels_key,
            "use_rep": use_rep,
            "n_neighbors": int(n_neighbors),
            "weighting": weighting,
            "threshold": float(threshold),
            "novelty": bool(novelty),
            "novelty_quantile": float(novelty_quantile),
            "unknown_label": unknown_label,
        }
    }
    n_unknown = int((p_best < threshold).sum())
    logger.info("Transferred '%s' to %d cells (%d called %s)", labels_key, best.size, n_unknown, unknown_label)
    return query if copy else None
