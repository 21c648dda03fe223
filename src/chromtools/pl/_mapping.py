"""Figures of reference mapping: joint UMAP of reference and query, and the label confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chromtools._utils import get_modality

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

_PALETTE = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
_DATASET = "dataset"


def _frame(data, mod: str | None, use_rep: str):
    from mudata import MuData

    if isinstance(data, MuData) and use_rep in data.obsm:
        return data
    return get_modality(data, mod)


def _umap(coords: np.ndarray, random_state: int) -> np.ndarray:
    import torch
    import umap

    n_neighbors = int(min(15, max(2, coords.shape[0] - 1)))
    # numba's OpenMP layer resets the OpenMP thread count that torch shares, which slows every
    # later torch computation in the session: restore it.
    threads = torch.get_num_threads()
    try:
        return umap.UMAP(n_neighbors=n_neighbors, min_dist=0.3, random_state=random_state, n_jobs=1).fit_transform(
            coords
        )
    finally:
        torch.set_num_threads(threads)


def _show(fig: Figure, show: bool | None) -> None:
    if show is None:
        show = plt.isinteractive()
    if show:
        plt.show()


def mapping_umap(
    query: AnnData | MuData,
    reference: AnnData | MuData,
    *,
    use_rep: str = "X_reference",
    color: Sequence[str] | None = None,
    basis: str | None = None,
    reference_alpha: float = 0.35,
    point_size: float | None = None,
    max_categories: int = 40,
    random_state: int = 0,
    mod: str | None = None,
    ncols: int = 4,
    figsize: tuple[float, float] | None = None,
    ax: Sequence[plt.Axes] | None = None,
    show: bool | None = None,
) -> Figure:
    """Joint UMAP of reference and query cells in the shared latent space, one panel per colour key.

    Parameters
    ----------
    query, reference
        Query and reference cells with ``obsm[use_rep]`` (written by
        :func:`chromtools.tl.map_query` and :func:`chromtools.tl.train_reference`).
    use_rep
        ``obsm`` key of the shared space (the UMAP is computed on the concatenation).
    color
        Keys to colour by: ``'dataset'`` (reference or query), or ``obs`` columns of either
        object — categorical (batch, labels, predictions) or numeric (uncertainty; reference
        cells, which have none, are drawn grey). Default: ``'dataset'``, the batch column, and
        every prediction and uncertainty column written by :func:`chromtools.tl.transfer_labels`.
    basis
        ``obsm`` key of precomputed 2-D coordinates present in both objects (skips the UMAP).
    reference_alpha
        Opacity of reference cells, so the query stays visible on top.
    point_size
        Marker size (default from the number of cells).
    max_categories
        Categorical keys with more categories show no legend.
    random_state
        Seed of the UMAP.
    mod
        Modality of MuData inputs (default ``'atac'``) when ``use_rep`` is not at the MuData level.
    ncols
        Panels per row.
    figsize
        Figure size (default from the number of panels).
    ax
        Axes to draw into, one per colour key.
    show
        Show the figure (default: in interactive mode).

    Returns
    -------
    The figure.
    """
    ref, qry = _frame(reference, mod, use_rep), _frame(query, mod, use_rep)
    for name, obj in (("reference", ref), ("query", qry)):
        key = basis or use_rep
        if key not in obj.obsm:
            msg = f"The {name} has no obsm['{key}']; map it first or pass use_rep=/basis= with an existing key."
            raise KeyError(msg)
    if basis is not None:
        xy = np.vstack([np.asarray(ref.obsm[basis])[:, :2], np.asarray(qry.obsm[basis])[:, :2]])
    else:
        coords = np.vstack([np.asarray(ref.obsm[use_rep]), np.asarray(qry.obsm[use_rep])]).astype(np.float32)
        xy = _umap(coords, random_state)
    n_ref = ref.n_obs
    if color is None:
        batch = [c for c in ("batch",) if c in ref.obs or c in qry.obs]
        preds = [c for c in qry.obs.columns if f"{c}_uncertainty" in qry.obs]
        labels = [str(qry.uns[c]["params"]["labels_key"]) for c in preds if isinstance(qry.uns.get(c), dict)]
        color = [_DATASET, *batch]
        for lab, pred in zip(labels, preds, strict=False):
            color += [c for c in (lab,) if c in ref.obs] + [pred, f"{pred}_uncertainty"]
        color = list(dict.fromkeys(color))
    color = list(color)
    for key in color:
        if key != _DATASET and key not in ref.obs and key not in qry.obs:
            msg = f"Colour key '{key}' is neither 'dataset' nor an obs column of the reference or the query."
            raise KeyError(msg)
    n = len(color)
    if ax is None:
        cols = min(ncols, n)
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=figsize or (4.6 * cols, 4.0 * rows), squeeze=False)
        axes = list(axes.ravel())
        for extra in axes[n:]:
            extra.set_axis_off()
    else:
        axes = list(ax)
        if len(axes) < n:
            msg = f"ax has {len(axes)} axes but {n} colour keys were given."
            raise ValueError(msg)
        fig = axes[0].figure
    size = point_size or float(np.clip(12_000 / max(xy.shape[0], 1), 0.5, 20))
    alpha = np.r_[np.full(n_ref, reference_alpha), np.ones(xy.shape[0] - n_ref)]
    order = np.arange(xy.shape[0])  # reference first, query drawn on top
    for key, a in zip(color, axes, strict=False):
        if key == _DATASET:
            values = pd.Series(["reference"] * n_ref + ["query"] * (xy.shape[0] - n_ref), dtype="category")
        else:
            r = ref.obs[key] if key in ref.obs else pd.Series([np.nan] * n_ref, index=ref.obs_names)
            q = qry.obs[key] if key in qry.obs else pd.Series([np.nan] * qry.n_obs, index=qry.obs_names)
            values = pd.concat([r.reset_index(drop=True).astype(object), q.reset_index(drop=True).astype(object)])
            values = values.reset_index(drop=True)
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.notna().sum() == values.notna().sum() and values.notna().any():
                _scatter_numeric(a, xy, numeric.to_numpy(float), order, size, key)
                continue
            values = values.astype("category")
        _scatter_categorical(a, xy, values, order, size, alpha, key, max_categories)
    fig.tight_layout()
    _show(fig, show)
    return fig


def _scatter_numeric(a, xy, values, order, size, key) -> None:
    missing = np.isnan(values)
    a.scatter(xy[missing, 0], xy[missing, 1], s=size, c="#d9d9d9", linewidths=0, rasterized=True)
    idx = order[~missing[order]]
    sc = a.scatter(xy[idx, 0], xy[idx, 1], s=size, c=values[idx], cmap="viridis", linewidths=0, rasterized=True)
    a.figure.colorbar(sc, ax=a, fraction=0.046, pad=0.02)
    _style(a, key)


def _scatter_categorical(a, xy, values: pd.Series, order, size, alpha, key, max_categories) -> None:
    cats = list(values.cat.categories)
    colors = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(cats)}
    if "Unknown" in colors:
        colors["Unknown"] = (0.15, 0.15, 0.15)
    codes = values.cat.codes.to_numpy()
    rgba = np.zeros((len(values), 4))
    rgba[:] = (0.85, 0.85, 0.85, 1.0)
    for i, c in enumerate(cats):
        rgba[codes == i, :3] = colors[c][:3]
    rgba[:, 3] = alpha
    a.scatter(xy[order, 0], xy[order, 1], s=size, c=rgba[order], linewidths=0, rasterized=True)
    if len(cats) <= max_categories:
        for c in cats:
            a.scatter([], [], s=25, color=colors[c], label=str(c))
        a.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=7, markerscale=1)
    _style(a, key)


def _style(a, title: str) -> None:
    a.set_title(title, fontsize=10)
    a.set_xticks([])
    a.set_yticks([])
    a.set_xlabel("UMAP 1", fontsize=8)
    a.set_ylabel("UMAP 2", fontsize=8)
    for side in ("top", "right"):
        a.spines[side].set_visible(False)


def confusion_matrix(
    data: AnnData | MuData,
    true_key: str,
    pred_key: str,
    *,
    normalize: Literal["true", "pred", "none"] = "true",
    annotate: bool | None = None,
    mod: str | None = None,
    cmap: str = "Blues",
    figsize: tuple[float, float] | None = None,
    ax: plt.Axes | None = None,
    show: bool | None = None,
) -> Figure:
    """Confusion matrix of true (rows) against predicted (columns) labels.

    Parameters
    ----------
    data
        Cells with both label columns in ``obs``.
    true_key, pred_key
        ``obs`` columns of the true and the predicted labels.
    normalize
        ``'true'``: each row sums to 1 (recall on the diagonal); ``'pred'``: each column sums to
        1 (precision on the diagonal); ``'none'``: cell counts.
    annotate
        Write the values into the cells (default: when at most 25 labels).
    mod
        Modality of a MuData (default ``'atac'``) when the columns are not at the MuData level.
    cmap
        Colour map.
    figsize
        Figure size (default from the number of labels).
    ax
        Axes to draw into.
    show
        Show the figure (default: in interactive mode).

    Returns
    -------
    The figure.
    """
    from mudata import MuData

    obj = data if isinstance(data, MuData) and true_key in data.obs else get_modality(data, mod)
    for key in (true_key, pred_key):
        if key not in obj.obs:
            msg = f"obs has no column '{key}'."
            raise KeyError(msg)
    if normalize not in ("true", "pred", "none"):
        msg = f"normalize must be 'true', 'pred' or 'none', got {normalize!r}."
        raise ValueError(msg)
    t = obj.obs[true_key].astype(str)
    p = obj.obs[pred_key].astype(str)
    rows = _ordered(obj.obs[true_key])
    cols = _ordered(obj.obs[pred_key])
    cols = [c for c in rows if c in set(cols)] + [c for c in cols if c not in set(rows)]
    table = pd.crosstab(t, p).reindex(index=rows, columns=cols, fill_value=0)
    values = table.to_numpy(float)
    if normalize == "true":
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    elif normalize == "pred":
        values = values / np.maximum(values.sum(0, keepdims=True), 1)
    if ax is None:
        w = max(4.0, 0.42 * len(cols) + 2.5)
        h = max(3.5, 0.38 * len(rows) + 2.0)
        fig, ax = plt.subplots(figsize=figsize or (w, h))
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0, vmax=1 if normalize != "none" else None)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(f"predicted ({pred_key})")
    ax.set_ylabel(f"true ({true_key})")
    if annotate is None:
        annotate = max(len(rows), len(cols)) <= 25
    if annotate:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if v == 0:
                    continue
                text = f"{v:.2f}" if normalize != "none" else f"{int(v)}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if v > 0.6 * np.nanmax(values) else "black",
                )
    fig.colorbar(
        im,
        ax=ax,
        fraction=0.046,
        pad=0.02,
        label={"true": "fraction of true", "pred": "fraction of predicted", "none": "cells"}[normalize],
    )
    fig.tight_layout()
    _show(fig, show)
    return fig


def _ordered(values: pd.Series) -> list[str]:
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.astype(str))
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(pd.unique(values.astype(str)))
