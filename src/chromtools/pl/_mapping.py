"""Figures of reference mapping: joint UMAP of reference and query, and the label confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

from chromtools._docs import doc_params
from chromtools._utils import PathLike, get_modality

from ._utils import draw_embedding, embedding_frame, figure_of, show_or_return, umap_coords

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_PALETTE = [to_hex(c) for c in (*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors)]  # type: ignore[attr-defined]
_UNKNOWN = "#262626"  # the 'Unknown' label of transfer_labels, dark so that it stands out
_NA = "#d9d9d9"  # cells with no value for a key (reference cells have no uncertainty)
_DATASET = "dataset"


def _frame(data, mod: str | None, use_rep: str):
    from mudata import MuData

    if isinstance(data, MuData) and use_rep in data.obsm:
        return data
    return get_modality(data, mod)


def _joint_coords(ref, qry, *, use_rep: str, basis: str | None, random_state: int) -> np.ndarray:
    """2-D coordinates of reference then query cells: ``obsm[basis]`` where both have it, else a joint UMAP."""
    if basis is not None:
        present = [basis in ref.obsm, basis in qry.obsm]
        if all(present):
            return np.vstack([np.asarray(ref.obsm[basis])[:, :2], np.asarray(qry.obsm[basis])[:, :2]])
        if any(present):
            where = "reference" if present[0] else "query"
            msg = (
                f"Only the {where} has obsm['{basis}'], but both need coordinates from one joint embedding; "
                f"pass another basis= (or delete that key) to compute a joint UMAP of both."
            )
            raise KeyError(msg)
    for name, obj in (("reference", ref), ("query", qry)):
        if use_rep not in obj.obsm:
            msg = f"The {name} has no obsm['{use_rep}']; map it first or pass use_rep=/basis= with an existing key."
            raise KeyError(msg)
    rep = np.vstack([np.asarray(ref.obsm[use_rep]), np.asarray(qry.obsm[use_rep])])
    obs = pd.DataFrame(index=pd.RangeIndex(rep.shape[0]).astype(str))
    xy = umap_coords(obs, rep, n_neighbors=15, min_dist=0.3, random_state=random_state)
    if basis is not None:
        ref.obsm[basis] = xy[: ref.n_obs]
        qry.obsm[basis] = xy[ref.n_obs :]
    return xy


def _default_colors(ref, qry) -> list[str]:
    batch = [c for c in ("batch",) if c in ref.obs or c in qry.obs]
    preds = [c for c in qry.obs.columns if f"{c}_uncertainty" in qry.obs]
    labels = [str(qry.uns[c]["params"]["labels_key"]) for c in preds if isinstance(qry.uns.get(c), dict)]
    color = [_DATASET, *batch]
    for lab, pred in zip(labels, preds, strict=False):
        color += [c for c in (lab,) if c in ref.obs] + [pred, f"{pred}_uncertainty"]
    return list(dict.fromkeys(color))


def _joint_values(ref, qry, key: str) -> pd.Series:
    """Values of ``key`` for reference then query cells: float when every value is a number, else categorical."""
    n_ref = ref.n_obs
    if key == _DATASET:
        return pd.Series(["reference"] * n_ref + ["query"] * qry.n_obs, dtype="category")
    r = ref.obs[key] if key in ref.obs else pd.Series([np.nan] * n_ref, index=ref.obs_names)
    q = qry.obs[key] if key in qry.obs else pd.Series([np.nan] * qry.n_obs, index=qry.obs_names)
    values = pd.concat([r.reset_index(drop=True).astype(object), q.reset_index(drop=True).astype(object)])
    values = values.reset_index(drop=True)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum() and values.notna().any():
        return numeric.astype(float)
    return values.astype("category")


@doc_params
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
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """Joint UMAP of reference and query cells in the shared latent space, one panel per colour key.

    The joint UMAP is computed by :func:`scanpy.pp.neighbors` (15 neighbours) and
    :func:`scanpy.tl.umap` (``min_dist=0.3``) on ``obsm[use_rep]`` of both objects together;
    each panel is drawn by :func:`scanpy.pl.embedding`.

    Parameters
    ----------
    query, reference
        Query and reference cells with ``obsm[use_rep]`` (written by
        :func:`chromtools.tl.map_query` and :func:`chromtools.tl.train_reference`).
    use_rep
        ``obsm`` key of the shared space.
    color
        Keys to colour by: ``'dataset'`` (reference or query), or ``obs`` columns of either
        object — categorical (batch, labels, predictions) or numeric (uncertainty; reference
        cells, which have none, are drawn grey). Default: ``'dataset'``, the batch column, and
        every prediction and uncertainty column written by :func:`chromtools.tl.transfer_labels`.
    basis
        ``obsm`` key of 2-D coordinates of the joint embedding. When both objects have it, it is
        drawn as is and nothing is computed; when neither has it, the joint UMAP is computed and
        written to ``query.obsm[basis]`` and ``reference.obsm[basis]``; a key that only one of them
        has is an error (it cannot be joint). Default: the joint UMAP is computed and not stored.
    reference_alpha
        Opacity of reference cells in categorical panels, so the query stays visible on top.
    point_size
        Marker size (default from the number of cells).
    max_categories
        Categorical keys with more categories show no legend.
    {random_state}
    mod
        Modality of MuData inputs (default ``'atac'``) when ``use_rep`` is not at the MuData level.
    ncols
        Panels per row.
    figsize
        Figure size (default from the number of panels).
    ax
        Axes to draw into, one per colour key.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``. Writes
    ``query.obsm[basis]`` and ``reference.obsm[basis]`` only when ``basis`` is given and neither has it.
    """
    ref, qry = _frame(reference, mod, use_rep), _frame(query, mod, use_rep)
    color = _default_colors(ref, qry) if color is None else list(color)
    for key in color:
        if key != _DATASET and key not in ref.obs and key not in qry.obs:
            msg = f"Colour key '{key}' is neither 'dataset' nor an obs column of the reference or the query."
            raise KeyError(msg)
    n = len(color)
    if ax is not None and len(ax) < n:
        msg = f"ax has {len(ax)} axes but {n} colour keys were given."
        raise ValueError(msg)
    xy = _joint_coords(ref, qry, use_rep=use_rep, basis=basis, random_state=random_state)
    if ax is None:
        cols = min(ncols, n)
        rows = int(np.ceil(n / cols))
        fig, grid = plt.subplots(rows, cols, figsize=figsize or (4.6 * cols, 4.0 * rows), squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[n:]:
            extra.set_axis_off()
    else:
        axes = list(ax)
        fig = figure_of(axes[0])
    obs = pd.DataFrame({key: _joint_values(ref, qry, key) for key in color})
    obs.index = obs.index.astype(str)
    frame = embedding_frame(obs, xy, "X_umap")
    size = point_size or float(np.clip(12_000 / max(xy.shape[0], 1), 0.5, 20))
    alpha = np.r_[np.full(ref.n_obs, reference_alpha), np.ones(qry.n_obs)]
    for key, a in zip(color, axes, strict=False):
        values = frame.obs[key]
        categorical = isinstance(values.dtype, pd.CategoricalDtype)
        n_categories = len(values.cat.categories) if categorical else 0
        if categorical:
            frame.uns[f"{key}_colors"] = [
                _UNKNOWN if str(c) == "Unknown" else _PALETTE[i % len(_PALETTE)]
                for i, c in enumerate(values.cat.categories)
            ]
        # sort_order=False keeps the reference cells first, so that the query is drawn on top of them
        draw_embedding(
            frame,
            a,
            color=key,
            size=size,
            sort_order=False,
            alpha=alpha if categorical else None,
            na_color=_NA,
            cmap="viridis",
            legend_loc="right margin" if n_categories <= max_categories else None,
            legend_fontsize=7,
        )
    fig.tight_layout()
    return show_or_return(fig, show=show, save=save)


@doc_params
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
    ax: Axes | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
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
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``.
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
        fig = figure_of(ax)
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
    return show_or_return(fig, show=show, save=save)


def _ordered(values: pd.Series) -> list[str]:
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.astype(str))
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(pd.unique(values.astype(str)))
