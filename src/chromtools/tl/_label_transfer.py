"""Label transfer from a reference to a query by distance-weighted k-nearest neighbours in a shared space."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
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
LabelPrior = Literal["balanced", "reference"]
LABEL_PRIORS: tuple[str, ...] = ("balanced", "reference")
WEIGHTINGS = ("gaussian", "scarches", "distance", "uniform")
KnnMethod = Literal["auto", "exact", "pynndescent"]
KNN_METHODS = ("auto", "exact", "pynndescent")

#: With ``knn_method='auto'``, references of at least this many cells are searched with
#: pynndescent's approximate index instead of scikit-learn's exact search.
APPROX_KNN_MIN_CELLS = 50_000
#: Neighbours per point in pynndescent's graph (more than the usual 15 votes: better recall).
_PYNNDESCENT_GRAPH_K = 30


def resolve_knn_method(knn_method: KnnMethod, n_reference: int) -> KnnMethod:
    """``'exact'`` or ``'pynndescent'``: ``'auto'`` picks pynndescent from :data:`APPROX_KNN_MIN_CELLS` cells."""
    if knn_method not in KNN_METHODS:
        msg = f"knn_method must be one of {KNN_METHODS}, got {knn_method!r}."
        raise ValueError(msg)
    if knn_method == "auto":
        return "pynndescent" if n_reference >= APPROX_KNN_MIN_CELLS else "exact"
    return knn_method


class _KnnIndex:
    """Nearest reference cells: scikit-learn's exact search or a seeded pynndescent index, built once.

    pynndescent (a dependency of umap-learn, hence of scanpy) builds an approximate
    nearest-neighbour graph by random-projection trees and neighbour descent; with a fixed
    ``random_state`` it returns the same neighbours on every run. Its first use in a Python
    process compiles it with numba (tens of seconds), which is why ``'auto'`` keeps the exact
    search for references below :data:`APPROX_KNN_MIN_CELLS` cells.
    """

    def __init__(self, reference: np.ndarray, method: str, random_state: int = 0):
        self.data = np.ascontiguousarray(reference, dtype=np.float32)
        self.method = method
        self.random_state = random_state
        self._index = None

    def _nndescent(self, k: int):
        from pynndescent import NNDescent

        n_graph = int(min(max(_PYNNDESCENT_GRAPH_K, k), self.data.shape[0]))
        if self._index is None or self._index.n_neighbors < n_graph:
            self._index = NNDescent(
                self.data, metric="euclidean", n_neighbors=n_graph, random_state=self.random_state, low_memory=True
            )
        return self._index

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices (cells x k) of the ``k`` nearest reference cells of each query cell."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.method == "pynndescent" and self.data.shape[0] > k:
            idx, dist = self._nndescent(k).query(queries, k=k)
            return dist.astype(np.float64), idx.astype(np.int64)
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=k).fit(self.data).kneighbors(queries)

    def self_neighbors(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of each reference cell's ``k`` nearest other reference cells."""
        n = self.data.shape[0]
        kk = min(k + 1, n)
        if self.method == "pynndescent" and n > kk:
            idx, dist = self._nndescent(kk).neighbor_graph
            idx, dist = idx[:, :kk].astype(np.int64), dist[:, :kk].astype(np.float64)
        else:
            from sklearn.neighbors import NearestNeighbors

            dist, idx = NearestNeighbors(n_neighbors=kk).fit(self.data).kneighbors(self.data)
        # drop the cell itself; it need not come first: a twin at distance 0 may be listed before
        # it, and then the cell is where the list ends or beyond it (its last entry is dropped)
        is_self = idx == np.arange(n)[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        return dist[keep].reshape(n, kk - 1), idx[keep].reshape(n, kk - 1)


def _reference_arrays(
    reference, labels_key: str, use_rep: str, mod: str | None
) -> tuple[np.ndarray, pd.Series, pd.DataFrame, str | None]:
    """Latent codes, labels, obs and batch column of the reference: from AnnData/MuData, a model or a folder."""
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
        params = ref.uns.get(use_rep, {}).get("params", {}) if isinstance(ref.uns.get(use_rep), dict) else {}
        return np.asarray(ref.obsm[use_rep]), ref.obs[labels_key], ref.obs, params.get("batch_key")
    store = None
    registry: dict = {}
    if isinstance(reference, str | os.PathLike):
        from chromtools.models import check_saved_reference

        attrs = check_saved_reference(reference)
        store = attrs.get("reference_")
        registry = attrs.get("registry_") or {}
    else:
        store = getattr(reference, "reference_", None)
        registry = getattr(reference, "registry", None) or {}
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
    batch_state = registry.get("field_registries", {}).get("batch", {}).get("state_registry", {})
    return np.asarray(store["latent"]), obs[labels_key], obs, batch_state.get("original_key")


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
    reference_latent: np.ndarray | _KnnIndex,
    reference_labels,
    query_latent: np.ndarray,
    *,
    n_neighbors: int = 15,
    weighting: Weighting = "gaussian",
    knn_method: KnnMethod = "auto",
    random_state: int = 0,
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
    knn_method
        ``'exact'`` (scikit-learn), ``'pynndescent'`` (approximate index) or ``'auto'``
        (pynndescent from :data:`APPROX_KNN_MIN_CELLS` reference cells).
    random_state
        Seed of the pynndescent index.

    Returns
    -------
    Probabilities (query cells × labels), and the neighbours' distances and indices (query
    cells × k).
    """
    if weighting not in WEIGHTINGS:
        msg = f"weighting must be one of {WEIGHTINGS}, got {weighting!r}."
        raise ValueError(msg)
    codes, classes = pd.factorize(pd.Series(reference_labels).astype(str), sort=True)
    index = (
        reference_latent
        if isinstance(reference_latent, _KnnIndex)
        else _KnnIndex(reference_latent, resolve_knn_method(knn_method, len(reference_latent)), random_state)
    )
    k = int(min(n_neighbors, index.data.shape[0]))
    if k < 1:
        msg = "The reference has no cells."
        raise ValueError(msg)
    dist, idx = index.query(query_latent, k)
    P = _vote(dist, idx, codes, classes.size, weighting)
    return pd.DataFrame(P, columns=pd.Index(classes, name="label")), dist, idx


def _vote(dist: np.ndarray, idx: np.ndarray, codes: np.ndarray, n_classes: int, weighting: Weighting) -> np.ndarray:
    """Weighted vote shares (cells × labels) from each cell's neighbours (``dist``, ``idx``) and label codes."""
    w = _weights(dist, weighting)
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((w.ravel(), (rows, codes[idx].ravel())), shape=(n, n_classes)).toarray()


def reference_self_consistency(
    dist: np.ndarray | list[np.ndarray],
    idx: np.ndarray | list[np.ndarray],
    reference_labels,
    *,
    weighting: Weighting = "gaussian",
    label_prior: LabelPrior = "balanced",
) -> tuple[float, pd.DataFrame]:
    """Leave-one-out label transfer within the reference: how well the shared space separates its types.

    Each reference cell is labelled by the same weighted vote (and ``label_prior``) from its
    nearest *other* reference cells.

    Parameters
    ----------
    dist, idx
        Distances and indices (reference cells × k) of each reference cell's nearest other
        reference cells (itself excluded); or lists of them, one per space of an ensemble,
        whose vote shares are averaged as in :func:`transfer_labels`.
    reference_labels
        One label per reference cell.
    weighting, label_prior
        As in :func:`transfer_labels`.

    Returns
    -------
    The accuracy over all reference cells, and a DataFrame indexed by label with each label's
    ``n_cells`` and ``recall`` (a DataFrame, not a dict: labels such as ``'G/M prog'`` cannot be
    keys of an h5ad group).
    """
    labels = pd.Series(reference_labels).astype(str)
    codes, classes = pd.factorize(labels, sort=True)
    dists = list(dist) if isinstance(dist, list | tuple) else [dist]
    idxs = list(idx) if isinstance(idx, list | tuple) else [idx]
    spaces: list[tuple[np.ndarray, np.ndarray]] = list(zip(dists, idxs, strict=True))
    votes = []
    for d, i in spaces:
        P = pd.DataFrame(_vote(d, i, codes, classes.size, weighting), columns=classes)
        votes.append(balance_label_prior(P, labels.to_numpy()) if label_prior == "balanced" else P)
    hit = np.mean([v.to_numpy() for v in votes], axis=0).argmax(axis=1) == codes
    per_label = pd.DataFrame({"label": labels.to_numpy(), "hit": hit}).groupby("label")["hit"].agg(["size", "mean"])
    per_label.columns = ["n_cells", "recall"]
    per_label.index = per_label.index.astype(str)
    return float(hit.mean()), per_label


def balance_label_prior(probs: pd.DataFrame, reference_labels) -> pd.DataFrame:
    """Divide each label's vote shares by its share of the reference, then renormalise each row.

    Parameters
    ----------
    probs
        Vote shares (query cells × labels), as from :func:`knn_label_probabilities`.
    reference_labels
        One label per reference cell (every column of ``probs`` must occur).

    Returns
    -------
    Shares with a uniform label prior (rows sum to 1; a row of zeros stays zero).
    """
    freq = pd.Series(reference_labels).astype(str).value_counts(normalize=True)
    share = freq.reindex(probs.columns.astype(str)).to_numpy(dtype=np.float64)
    if np.isnan(share).any():  # a label with votes that no reference cell carries
        missing = list(probs.columns[np.isnan(share)])
        msg = f"Labels {missing} have votes but no reference cell; the reference labels do not match the votes."
        raise ValueError(msg)
    P = probs.to_numpy(dtype=np.float64) / share
    total = P.sum(axis=1, keepdims=True)
    P = np.divide(P, total, out=np.zeros_like(P), where=total > 0)
    return pd.DataFrame(P, index=probs.index, columns=probs.columns)


def _radius(latent, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell's median distance to its ``k`` nearest other cells, and those distances and indices.

    ``latent`` is an array (exact search) or a :class:`_KnnIndex` (its method).
    """
    index = latent if isinstance(latent, _KnnIndex) else _KnnIndex(latent, "exact")
    d, i = index.self_neighbors(k)
    return np.maximum(np.median(d, axis=1), 1e-12), d, i


def _ratio(dist: np.ndarray, idx: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Median distance to the k neighbours over the median radius of those neighbours."""
    return np.median(dist, axis=1) / np.median(radius[idx], axis=1)


CalibrationMethod = Literal["auto", "leave-one-batch-out", "leave-one-out"]
CALIBRATIONS = ("auto", "leave-one-batch-out", "leave-one-out")


def novelty_calibration(
    reference_latent: np.ndarray,
    *,
    n_neighbors: int = 15,
    batches=None,
    method: CalibrationMethod = "auto",
    knn_method: KnnMethod = "auto",
    random_state: int = 0,
    _radius_all: tuple | None = None,
) -> tuple[np.ndarray, str]:
    """Novelty scores of reference cells scored as if they were query cells: the null distribution.

    The novelty of a cell is its median distance to its ``n_neighbors`` nearest reference cells
    divided by the median "radius" of those neighbours (each one's median distance to its own
    nearest reference cells), which adapts to dense and sparse regions of the space.

    ``'leave-one-batch-out'`` scores the cells of each reference batch against the reference
    without that batch (a held-out batch looks like a query, batch effect included);
    ``'leave-one-out'`` scores each cell against all other reference cells (tighter: a query
    from a new batch lies a little farther). ``'auto'`` takes the first when ``batches`` has at
    least two batches of ``n_neighbors`` cells or more, else the second.

    Neighbours are searched with ``knn_method`` (see :func:`knn_label_probabilities`).

    Returns
    -------
    One score per reference cell, and the method used.
    """
    if method not in CALIBRATIONS:
        msg = f"calibration must be one of {CALIBRATIONS}, got {method!r}."
        raise ValueError(msg)
    ref = np.asarray(reference_latent, np.float32)
    knn = resolve_knn_method(knn_method, ref.shape[0])
    k = int(min(n_neighbors, ref.shape[0] - 1))
    if k < 1:
        msg = "Novelty needs at least 2 reference cells."
        raise ValueError(msg)
    usable = None
    if batches is not None:
        b = pd.Series(np.asarray(batches)).astype(str)
        counts = b.value_counts()
        usable = b.to_numpy() if (counts >= k).sum() >= 2 and (counts.size >= 2) else None
    if method == "leave-one-batch-out" and usable is None:
        msg = (
            "calibration='leave-one-batch-out' needs the reference's batches (batch_key=...) with at least two "
            f"batches of {k} cells or more; use calibration='leave-one-out'."
        )
        raise ValueError(msg)
    if method == "leave-one-out" or (method == "auto" and usable is None):
        radius, d, i = _radius_all if _radius_all is not None else _radius(_KnnIndex(ref, knn, random_state), k)
        return _ratio(d, i, radius), "leave-one-out"
    scores = np.empty(ref.shape[0])
    for batch in pd.unique(usable):
        held = usable == batch
        rest = _KnnIndex(ref[~held], knn, random_state)
        kk = min(k, rest.data.shape[0] - 1)
        radius, _, _ = _radius(rest, kk)
        d, i = rest.query(ref[held], kk)
        scores[held] = _ratio(d, i, radius)
    return scores, "leave-one-batch-out"


def distance_ratio(
    reference_latent: np.ndarray,
    query_dist: np.ndarray,
    query_idx: np.ndarray,
    *,
    quantile: float = 0.99,
) -> np.ndarray:
    """How far each query cell lies from the reference, relative to the reference's own spacing.

    The novelty score of :func:`novelty_calibration` of each query cell (neighbours given by
    ``query_dist``/``query_idx``), divided by the ``quantile`` of the same score over reference
    cells left out one at a time: values above 1 mean "farther from the reference than 99 % of
    reference cells are from the rest".

    Returns
    -------
    The calibrated distance ratio of every query cell.
    """
    k = query_idx.shape[1]
    n_ref = reference_latent.shape[0]
    if n_ref < 3:
        return np.ones(query_idx.shape[0])
    ref = np.asarray(reference_latent, np.float32)
    radius, _, _ = _radius(ref, min(k, n_ref - 1))
    null, _ = novelty_calibration(ref, n_neighbors=k, method="leave-one-out")
    unit = max(float(np.quantile(null, quantile)), 1e-12)
    return _ratio(query_dist, query_idx, radius) / unit


@doc_params
def transfer_labels(
    query: AnnData | MuData,
    reference,
    labels_key: str,
    *,
    use_rep: str | Sequence[str] = "X_reference",
    n_neighbors: int = 15,
    weighting: Weighting = "gaussian",
    label_prior: LabelPrior = "balanced",
    threshold: float = 0.0,
    novelty: bool = True,
    novelty_quantile: float = 0.99,
    calibration: CalibrationMethod = "auto",
    batch_key: str | None = None,
    unknown_label: str = "Unknown",
    knn_method: KnnMethod = "auto",
    random_state: int = 0,
    mod: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Transfer cell-type labels from a reference to a query by weighted k-nearest neighbours.

    For each query cell, the ``n_neighbors`` nearest reference cells in the shared space
    ``obsm[use_rep]`` vote for their label with weights that decrease with distance; the vote
    share of the winning label is its probability (as in scArches). By default each label's
    votes are divided by that label's share of the reference cells (``label_prior='balanced'``):
    a kNN vote share is a posterior under the reference's own composition, so a type that is
    rare in the reference loses cells it should win whenever the query holds more of it (another
    donor, tissue or sorting gate); dividing the prior out gives every known type the same prior.
    Two further numbers per cell tell apart two reasons to doubt a label:

    **ambiguity** — the cell lies *between known types*: ``1 - (p1 - p2)``, one minus the margin
    between the two largest vote shares (0: unanimous neighbours, 1: a tie).

    **novelty** — the cell is *unlike anything in the reference*: its median distance to its
    reference neighbours divided by those neighbours' own median distance to their nearest
    reference cells. Votes cannot see this — the nearest reference cells of a cell of an absent
    type may all agree although they are far away. The score is calibrated on the reference
    itself (:func:`novelty_calibration`): reference cells are scored the same way with their
    own batch left out (``'leave-one-batch-out'``, when the reference has two or more batches)
    or themselves left out (``'leave-one-out'``), and the ``novelty_quantile`` of those scores
    is the threshold. This is a split-conformal test: a query cell like the reference exceeds
    it with probability about ``1 - novelty_quantile``, and its conformal p-value is written
    too. Cells above the threshold are called ``unknown_label``.

    Cells whose vote share is below ``threshold`` are also called ``unknown_label`` (default 0:
    never — ambiguity alone does not make a cell unknown). The computation is vectorised
    (neighbour searches and one sparse product).

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
        A list of keys is an **ensemble**: each space votes (after ``label_prior``), is scored
        for novelty and has its reference cells scored for calibration on its own, and the
        vote shares, novelty scores and calibration scores (per reference cell) are averaged
        over the spaces before the label, threshold and p-values are taken. Typical members are
        reference models trained with different seeds, each with the query mapped onto it
        (``train_reference(..., random_state=m, key_added=f'X_reference_{{m}}')`` and
        ``map_query(..., key_added=f'X_reference_{{m}}')``, see the example). Each seed's
        space carries its own sampling noise, which the average cancels: on the Granja
        D5T1 → D6T1 choose split 3 seeds' averaged votes beat the mean single seed by about 0.03
        accuracy and 0.02 macro-F1 (two groups of 3 seeds, a scratch analysis; the mapping
        benchmark records its own comparison). Concatenating the spaces instead did not help.
        Every member costs one reference training and one query mapping.
    n_neighbors
        Number of reference neighbours per query cell.
    weighting
        Neighbour weights: ``'gaussian'`` (kernel with per-cell bandwidth, default),
        ``'scarches'`` (scArches' rule), ``'distance'`` (inverse distance) or ``'uniform'``.
    label_prior
        ``'balanced'`` (default): each label's vote share is divided by its share of the
        reference cells and the shares renormalised, so that every known type has the same
        prior; ``'reference'``: the vote shares as cast, whose prior is the reference's
        composition (right when the query is known to have that composition). On the Granja
        D5T1 → D6T1 choose split, whose donors differ in composition, ``'balanced'`` raised a
        single PeakSCANVI's accuracy from 0.579 to 0.617 and macro-F1 from 0.461 to 0.520
        (3 seeds, ``benchmarks/results/label_prior.json``), which made it the default. It
        trades cells of common types for rare ones: ``benchmarks/mapping.py`` records both
        priors for every method on the report split (README, "Reference mapping").

        On an embedding that barely separates the types, each vote is close to a random draw,
        and dividing by the shares lifts the few chance votes of types of a handful of cells
        above the common ones: in the tutorial's 221-cell multiome reference (MULTIVI,
        ``reference_loo_accuracy`` 0.21 with ``label_prior='reference'``, largest type 0.14 of
        the cells) accuracy fell from 0.18 to 0.04. Floors and pseudo-counts on the shares of
        small types did not beat the unguarded prior on the choose split: a tie at best on the
        whole reference, losses with four types cut to 1-5 cells and on random 225-cell
        references (``benchmarks/results/label_prior.json``). So there is no such guard: check
        ``uns[key]['reference_loo_accuracy']`` and use ``'reference'``, or a better embedding,
        when it is low.
    threshold
        Cells whose best label has a vote share below this value also get ``unknown_label``.
    novelty
        Score novelty and call novel cells ``unknown_label``.
    novelty_quantile
        Quantile of the reference's calibration scores used as the novelty threshold (1 minus
        the false-Unknown rate aimed at on cells of known types).
    calibration
        ``'auto'``, ``'leave-one-batch-out'`` or ``'leave-one-out'`` (see above).
    batch_key
        Reference ``obs`` column of batches for leave-one-batch-out; default the batch column
        recorded by :func:`chromtools.tl.train_reference` (``uns[use_rep]['params']``) or the
        reference model's.
    unknown_label
        Label of novel cells (and of cells below ``threshold``).
    knn_method
        Nearest-neighbour search: ``'exact'`` (scikit-learn), ``'pynndescent'`` (an approximate
        index, seeded by ``random_state``; its first use in a process compiles it, tens of
        seconds) or ``'auto'``: pynndescent when the reference has at least 50,000 cells
        (``APPROX_KNN_MIN_CELLS``), where exact search becomes the slow part. The method used is
        recorded in ``uns[...]['params']``.
    random_state
        Seed of the pynndescent index.
    {mod}
    key_added
        Prefix of the written columns; default ``f'{labels_key}_pred'``.
    {copy}

    Returns
    -------
    Writes to the query (``None``, or the copy when ``copy=True``):

    ``obs['{labels_key}_pred' | key_added]``
        Predicted label (categorical), ``unknown_label`` for novel cells.
    ``obs[... + '_probability']``
        Weighted vote share of the best label (after the ``label_prior`` correction).
    ``obs[... + '_ambiguity']``
        ``1 - (p1 - p2)``: between known types.
    ``obs[... + '_novelty']``
        The novelty score (``novelty=True``).
    ``obs[... + '_novelty_pvalue']``
        Conformal p-value of the novelty score against the reference's calibration scores.
    ``obs[... + '_distance_ratio']``
        Novelty divided by the calibrated threshold (above 1: called unknown).
    ``obs[... + '_uncertainty']``
        One derived number, ``1 - probability · exp(-max(distance_ratio - 1, 0))`` (``1 -
        probability`` with ``novelty=False``), for plots that want a single score.
    ``obsm[... + '_probabilities']``
        Vote share of every reference label (an array, cells × labels; rows sum to 1), its
        columns named in ``uns[...]['labels']``. For a DataFrame:
        ``pd.DataFrame(obsm[k], index=obs_names, columns=uns[key]['labels'])``. (Not stored as a
        DataFrame because its column names would be h5ad keys, and labels such as
        ``'G/M prog'`` are refused there by anndata's ``disallow_forward_slash_in_h5ad``.)
    ``uns[...]``
        ``labels`` (the columns of the probabilities); ``params``; with novelty,
        ``novelty_threshold``, ``calibration`` (the method used) and ``n_calibration_cells``;
        ``reference_loo_accuracy`` and ``reference_loo_recall`` (a DataFrame: ``n_cells`` and
        ``recall`` per label): the same rule applied within the reference, each reference cell labelled by its nearest other reference cells (written
        when the reference has two cells or more). They say how well the shared space separates
        the reference's own types. It is a warning sign, not an estimate of the query's
        accuracy: near chance — the largest type's share with ``label_prior='reference'``,
        about one over the number of types with ``'balanced'`` — the space carries little type
        signal and transferred labels are little better than the prior; a high value is
        optimistic, above all for a space trained with these labels (PeakSCANVI on Granja D5T1:
        0.98, while the D6T1 query got about 0.6). A label of a single reference cell always
        has recall 0 here (no other cell can vote for it).

    Examples
    --------
    An ensemble of three reference models (``ref`` and ``query`` share peaks; ``model_{{m}}``
    are folders):

    >>> keys = [f"X_reference_{{m}}" for m in range(3)]  # doctest: +SKIP
    >>> for m, key in enumerate(keys):  # doctest: +SKIP
    ...     ct.tl.train_reference(ref, "batch", "cell_type", model_dir=f"model_{{m}}", random_state=m, key_added=key)
    ...     ct.tl.map_query(query, f"model_{{m}}", random_state=m, key_added=key)
    >>> ct.tl.transfer_labels(query, ref, "cell_type", use_rep=keys)  # doctest: +SKIP

    Notes
    -----
    Only ``obsm[use_rep]`` and ``obs`` are read, so a query (or reference) opened with
    ``anndata.read_h5ad(path, backed="r")`` works as it is: the results are written to its
    ``obs``/``obsm`` in memory (a file opened read-only is not modified; write them out yourself).
    """
    if label_prior not in LABEL_PRIORS:
        msg = f"label_prior must be one of {LABEL_PRIORS}, got {label_prior!r}."
        raise ValueError(msg)
    if not 0.0 <= threshold <= 1.0:
        msg = f"threshold must be between 0 and 1 (a probability), got {threshold}."
        raise ValueError(msg)
    if not 0.0 < novelty_quantile <= 1.0:
        msg = f"novelty_quantile must be in (0, 1], got {novelty_quantile}."
        raise ValueError(msg)
    if copy:
        from chromtools.tl._train_reference import _refuse_backed_copy

        _refuse_backed_copy(query, "transfer_labels")
        query = query.copy()
    from anndata import AnnData
    from mudata import MuData

    reps = [use_rep] if isinstance(use_rep, str) else [str(r) for r in use_rep]
    if not reps or len(set(reps)) != len(reps):
        msg = f"use_rep must be an obsm key or a list of distinct obsm keys, got {use_rep!r}."
        raise ValueError(msg)
    if len(reps) > 1 and not isinstance(reference, AnnData | MuData):
        msg = (
            "An ensemble (use_rep=[several obsm keys]) needs the reference as an AnnData/MuData holding every "
            "key; a saved reference model stores one space."
        )
        raise TypeError(msg)
    target = query if isinstance(query, MuData) and reps[0] in query.obsm else get_modality(query, mod)
    spaces = []
    for rep in reps:
        if rep not in target.obsm:
            msg = (
                f"The query has no obsm['{rep}']; map it onto the reference first (chromtools.tl.map_query) "
                "or pass use_rep=<an obsm key present in both>."
            )
            raise KeyError(msg)
        ref_latent, ref_labels, ref_obs, rep_batch = _reference_arrays(reference, labels_key, rep, mod)
        q_latent = np.asarray(target.obsm[rep])
        if q_latent.shape[1] != ref_latent.shape[1]:
            msg = (
                f"obsm['{rep}'] has {q_latent.shape[1]} dimensions in the query but {ref_latent.shape[1]} in the "
                "reference; both must be coordinates in the same space."
            )
            raise ValueError(msg)
        if not (np.all(np.isfinite(q_latent)) and np.all(np.isfinite(ref_latent))):
            msg = f"obsm['{rep}'] contains NaN or infinite values."
            raise ValueError(msg)
        spaces.append((ref_latent, q_latent))
        if len(spaces) == 1:
            default_batch = rep_batch
    n_missing = int(pd.isna(ref_labels).sum())
    if n_missing:
        msg = (
            f"Reference label column '{labels_key}' has {n_missing} missing values (NaN); drop those cells or "
            "give them a label before transferring labels."
        )
        raise ValueError(msg)
    if batch_key is not None and batch_key not in ref_obs:
        msg = f"The reference has no obs column '{batch_key}' (batch_key); pass an existing column or None."
        raise KeyError(msg)
    n_ref = spaces[0][0].shape[0]
    knn = resolve_knn_method(knn_method, n_ref)
    key = key_added or f"{labels_key}_pred"
    info: dict = {}
    col = batch_key or default_batch
    batches = ref_obs[col].to_numpy() if col is not None and col in ref_obs else None
    # each space votes, is scored for novelty and calibrated on its own; the ensemble averages them
    votes, scores, nulls, self_nbs, method = [], [], [], [], None
    for ref_latent, q_latent in spaces:
        index = _KnnIndex(ref_latent, knn, random_state)
        probs, dist, idx = knn_label_probabilities(
            index, ref_labels.to_numpy(), q_latent, n_neighbors=n_neighbors, weighting=weighting
        )
        probs.index = target.obs_names
        votes.append(balance_label_prior(probs, ref_labels.to_numpy()) if label_prior == "balanced" else probs)
        k_self = min(dist.shape[1], n_ref - 1)
        if novelty and n_ref >= 3:
            radius_all = _radius(index, k_self)
            null, method = novelty_calibration(
                ref_latent,
                n_neighbors=dist.shape[1],
                batches=batches,
                method=calibration,
                knn_method=knn,
                random_state=random_state,
                _radius_all=radius_all,
            )
            scores.append(_ratio(dist, idx, radius_all[0]))
            nulls.append(null)
            self_nbs.append((radius_all[1], radius_all[2]))
        elif n_ref >= 2:
            self_nbs.append(index.self_neighbors(k_self))
    probs = votes[0] if len(votes) == 1 else sum(votes[1:], votes[0]) / len(votes)
    P = probs.to_numpy()
    best = P.argmax(axis=1)
    p_best = np.clip(P[np.arange(best.size), best], 0.0, 1.0)
    top2 = -np.sort(-P, axis=1)[:, :2] if P.shape[1] > 1 else np.c_[P, np.zeros(P.shape[0])]
    ambiguity = 1.0 - (top2[:, 0] - top2[:, 1])
    labels = probs.columns.to_numpy()[best].astype(object)
    unknown = p_best < threshold
    uncertainty = 1.0 - p_best
    novelty_cols: dict[str, np.ndarray] = {}
    if scores:
        score, null = np.mean(scores, axis=0), np.mean(nulls, axis=0)  # nulls: one score per reference cell
        cutoff = max(float(np.quantile(null, novelty_quantile, method="higher")), 1e-12)
        null_sorted = np.sort(null)
        n_ge = null.size - np.searchsorted(null_sorted, score, side="left")
        ratio = score / cutoff
        novel = score > cutoff
        unknown |= novel
        uncertainty = 1.0 - p_best * np.exp(-np.maximum(ratio - 1.0, 0.0))
        novelty_cols = {
            "novelty": score,
            "novelty_pvalue": (1.0 + n_ge) / (null.size + 1.0),
            "distance_ratio": ratio,
        }
        info = {
            "novelty_threshold": cutoff,
            "calibration": method,
            "calibration_batch_key": col if method == "leave-one-batch-out" else None,
            "n_calibration_cells": int(null.size),
            "n_novel": int(novel.sum()),
        }
    if self_nbs:
        info["reference_loo_accuracy"], info["reference_loo_recall"] = reference_self_consistency(
            [d for d, _ in self_nbs],
            [i for _, i in self_nbs],
            ref_labels.to_numpy(),
            weighting=weighting,
            label_prior=label_prior,
        )
    labels[unknown] = unknown_label
    order = list(pd.unique(ref_labels.astype(str)))
    if isinstance(ref_labels.dtype, pd.CategoricalDtype):
        order = [str(c) for c in ref_labels.cat.categories]
    categories = [c for c in order if c in set(probs.columns)] + [unknown_label]
    categories = list(dict.fromkeys(categories))
    target.obs[key] = pd.Categorical(labels, categories=categories)
    target.obs[f"{key}_probability"] = p_best
    target.obs[f"{key}_ambiguity"] = ambiguity
    for name, values in novelty_cols.items():
        target.obs[f"{key}_{name}"] = values
    target.obs[f"{key}_uncertainty"] = uncertainty
    target.obsm[f"{key}_probabilities"] = probs.to_numpy(dtype=np.float64)
    target.uns[key] = {
        "labels": np.asarray(probs.columns.astype(str), dtype=object),
        "params": {
            "labels_key": labels_key,
            "use_rep": reps[0] if len(reps) == 1 else np.asarray(reps, dtype=object),
            "n_neighbors": int(n_neighbors),
            "weighting": weighting,
            "label_prior": label_prior,
            "threshold": float(threshold),
            "novelty": bool(novelty),
            "novelty_quantile": float(novelty_quantile),
            "calibration": calibration,
            "batch_key": batch_key,
            "unknown_label": unknown_label,
            "knn_method": knn_method,
            "knn_method_used": knn,
            "random_state": int(random_state),
        },
        **info,
    }
    logger.info("Transferred '%s' to %d cells (%d called %s)", labels_key, best.size, int(unknown.sum()), unknown_label)
    return query if copy else None
