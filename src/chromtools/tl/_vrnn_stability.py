"""``vrnn_stability``: how stable stored temporal modules are under new seeds, resampled cells or resampled genes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score

from chromtools._docs import doc_params
from chromtools._utils import get_modality
from chromtools.pp import (
    TimePoints,
    gene_time_stats,
    summary_anndata,
    timecourse_matrix,
)
from chromtools.tl._vrnn_cluster import _check_fitted, _prepare
from chromtools.tl._vrnn_fit import _assign, _embed, _Fit

if TYPE_CHECKING:
    from mudata import MuData

logger = logging.getLogger(__name__)


def _match_labels(reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Relabel ``labels`` to the reference clusters they overlap most (Hungarian matching)."""
    from scipy.optimize import linear_sum_assignment

    ref_ids, lab_ids = np.unique(reference), np.unique(labels)
    overlap = np.zeros((lab_ids.size, ref_ids.size))
    for i, a in enumerate(lab_ids):
        for j, b in enumerate(ref_ids):
            overlap[i, j] = np.sum((labels == a) & (reference == b))
    rows, cols = linear_sum_assignment(-overlap)
    mapping = {lab_ids[r]: ref_ids[c] for r, c in zip(rows, cols, strict=True)}
    return np.asarray([mapping.get(v, -1) for v in labels])


@doc_params
def vrnn_stability(
    data: AnnData | MuData,
    n_runs: int = 5,
    *,
    method: Literal["seed", "cells", "genes"] = "seed",
    key: str = "vrnn",
    mod: str | None = None,
    random_state: int = 1,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Stability of a :func:`vrnn_cluster` result: retrain and re-cluster, compare with ARI.

    Every run repeats the clustering (same ``method``, VRNN or baseline) with the stored
    parameters on the same genes and scores
    its agreement with the stored modules (adjusted Rand index), and every gene gets the share
    of runs that put it in its module (after matching module labels).

    Parameters
    ----------
    {data}
    n_runs
        Number of re-runs.
    method
        ``'seed'``: new random seeds (training noise); ``'cells'``: bootstrap cells within each
        time point (sampling noise; needs several cells per time point); ``'genes'``: train on
        a bootstrap sample of the genes, then embed and cluster all of them (VRNN only).
    key
        Key of the clustering (``key_added`` of :func:`vrnn_cluster`).
    {mod}
    random_state
        Seed of the re-runs (run ``i`` uses ``random_state + i``).
    {accelerator}
    {devices}
    {progress}

    Returns
    -------
    One row per run: ``run``, ``seed``, ``ari`` (to the stored modules). Also writes
    ``adata.uns[key]['stability']`` (``params``, ``method``, ``ari``, ``mean_ari``, ``pairwise_ari``
    between runs) and ``adata.var[key + '_stability']`` (per-gene agreement, NaN for genes not
    modelled).
    """
    if method not in ("seed", "cells", "genes"):
        msg = f"method must be 'seed', 'cells' or 'genes', got {method!r}."
        raise ValueError(msg)
    if n_runs < 1:
        msg = f"n_runs must be at least 1, got {n_runs}."
        raise ValueError(msg)
    adata = get_modality(data, mod)
    uns = _check_fitted(adata, key)
    params = uns["params"]
    none = lambda v: None if isinstance(v, str) and v == "None" else v
    layer = none(params["layer"])
    selected = np.asarray(adata.var[f"{key}_selected"], bool)
    pos = np.flatnonzero(selected)
    reference = adata.var[f"{key}_cluster"].cat.codes.to_numpy()[pos]
    k = int(uns["n_clusters"])
    adata_, tp, st = _prepare(data, params["time_key"], layer=layer, mod=mod, n_bins=none(params["n_bins"]))
    X = timecourse_matrix(adata_, layer)
    model_kwargs = dict(params["model_kwargs"])
    train_kwargs = dict(params["train_kwargs"])
    shrink = bool(params.get("shrink", True))
    cluster_method = str(params.get("method", "vrnn"))
    if method == "genes" and cluster_method != "vrnn":
        msg = f"method='genes' retrains the VRNN on a bootstrap of genes; the clustering under '{key}' used {cluster_method!r}. Use 'seed' or 'cells'."
        raise ValueError(msg)
    if method == "cells" and np.all(tp.n_cells < 2):
        msg = "method='cells' resamples cells within time points, but every time point has a single sample; use 'seed' or 'genes'."
        raise ValueError(msg)

    runs, all_labels = [], []
    for i in range(n_runs):
        seed = int(random_state) + i
        rng = np.random.default_rng(seed)
        if method == "cells":
            idx = np.concatenate(
                [
                    rng.choice(np.flatnonzero(tp.index == t), size=int((tp.index == t).sum()))
                    for t in range(len(tp.labels))
                ]
            )
            boot_tp = TimePoints(tp.index[idx], tp.times, tp.labels, tp.binned, tp.edges)
            boot_st = gene_time_stats(X[idx], boot_tp)
            ok = boot_st.scale[pos] > 0
            use = pos[ok]
            summary = summary_anndata(adata_.var_names, boot_st, boot_tp, use, shrink=shrink)
        else:
            ok = np.ones(pos.size, bool)
            summary = summary_anndata(adata_.var_names, st, tp, pos, shrink=shrink)
        fit = _embed(
            summary[np.unique(rng.choice(summary.n_obs, size=summary.n_obs))].copy() if method == "genes" else summary,
            cluster_method,
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
            random_state=seed,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
        )
        if method == "genes":  # embed every gene with the model trained on the bootstrap sample
            from chromtools.models import VRNN

            VRNN.setup_anndata(summary)
            assert fit.model is not None  # method='genes' requires the 'vrnn' clustering (checked above)
            fit = _Fit(summary, fit.model.get_latent_representation(summary), fit.reconstruction, {}, "", fit.model)
        labels, _ = _assign(fit, cluster_method, k, seed, n_samples=0)
        full = np.full(pos.size, -1)
        full[ok] = labels
        all_labels.append(full)
        runs.append({"run": i, "seed": seed, "ari": float(adjusted_rand_score(reference[ok], labels))})

    table = pd.DataFrame(runs)
    pairwise = np.eye(n_runs)
    for a in range(n_runs):
        for b in range(a + 1, n_runs):
            both = (all_labels[a] >= 0) & (all_labels[b] >= 0)
            pairwise[a, b] = pairwise[b, a] = adjusted_rand_score(all_labels[a][both], all_labels[b][both])
    agree = np.zeros(pos.size)
    counted = np.zeros(pos.size)
    for labels in all_labels:
        ok = labels >= 0
        matched = _match_labels(reference[ok], labels[ok])
        agree[ok] += matched == reference[ok]
        counted[ok] += 1
    per_gene = np.full(adata.n_vars, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_gene[pos] = agree / counted
    adata.var[f"{key}_stability"] = per_gene
    uns["stability"] = {
        "method": method,
        "ari": table["ari"].to_numpy(float),
        "mean_ari": float(table["ari"].mean()),
        "pairwise_ari": pairwise,
        "seeds": table["seed"].to_numpy(np.int64),
        "params": {"n_runs": int(n_runs), "method": method, "random_state": int(random_state)},
    }
    logger.info("VRNN module stability (%s, %d runs): mean ARI %.3f", method, n_runs, table["ari"].mean())
    return table
