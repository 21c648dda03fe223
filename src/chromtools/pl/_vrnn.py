"""Figures of temporal gene modules found by :func:`chromtools.tl.vrnn_cluster`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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

_PALETTE = [to_hex(c) for c in (*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors)]  # type: ignore[attr-defined]


def _fitted(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or f"{key}_cluster" not in adata.var:
        msg = f"No VRNN clustering under key '{key}'; run ct.tl.vrnn_cluster(adata, key_added='{key}') first."
        raise KeyError(msg)
    return adata.uns[key]


def _time_label(uns: dict, time_label: str | None) -> str:
    if time_label is not None:
        return time_label
    return f"time ({uns['params'].get('time_key', 'time')})"


def _axes_grid(n: int, ncols: int, ax, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    if ax is not None:
        axes = list(np.ravel(ax)) if isinstance(ax, Sequence | np.ndarray) else [ax]
        if len(axes) < n:
            msg = f"ax needs {n} axes (one per panel), got {len(axes)}."
            raise ValueError(msg)
        return figure_of(axes[0]), axes[:n]
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, grid = plt.subplots(
        nrows,
        ncols,
        figsize=(panel[0] * ncols, panel[1] * nrows + 0.4),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, axes[:n]


def _label_outer(axes: list[Axes], xlabel: str) -> None:
    """Label the x axis of the bottom row and the y axis of the first column (every panel when not in a grid)."""
    for a in axes:
        spec = a.get_subplotspec()
        if spec is None or spec.is_last_row():
            a.set_xlabel(xlabel)
        if spec is None or spec.is_first_col():
            a.set_ylabel("standardised activity")


@doc_params
def vrnn_trajectories(
    data: AnnData | MuData,
    *,
    key: str = "vrnn",
    mod: str | None = None,
    clusters: Sequence[str] | None = None,
    n_genes: int = 3,
    spread: float = 1.0,
    ncols: int = 5,
    time_label: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """Mean trajectory of every module over real time, with its spread and a few member genes.

    Parameters
    ----------
    data
        AnnData or MuData clustered by :func:`chromtools.tl.vrnn_cluster`.
    key
        Key of the clustering.
    mod
        Modality of a MuData.
    clusters
        Modules to show; default all.
    n_genes
        Member genes drawn (and named) per module: those closest to the module mean.
    spread
        Band of ``spread`` standard deviations around the module mean.
    ncols
        Panels per row.
    time_label
        x-axis label; default the time column's name.
    ax
        Axes to draw into, one per module.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``.
    """
    adata = get_modality(data, mod)
    uns = _fitted(adata, key)
    times = np.asarray(uns["time_points"], float)
    names = [str(c) for c in uns["cluster_names"]]
    chosen = names if clusters is None else [str(c) for c in clusters]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        msg = f"Unknown modules {unknown}; the clustering has {names}."
        raise ValueError(msg)
    cluster = adata.var[f"{key}_cluster"].astype(object).to_numpy()
    curves = np.asarray(adata.varm[f"{key}_input"])
    fig, axes = _axes_grid(len(chosen), ncols, ax, (3.0, 2.4))
    for a, name in zip(axes, chosen, strict=True):
        i = names.index(name)
        color = _PALETTE[i % len(_PALETTE)]
        members = np.flatnonzero(cluster == name)
        mean = np.asarray(uns["cluster_means"])[i]
        sd = np.asarray(uns["cluster_sd"])[i]
        a.fill_between(times, mean - spread * sd, mean + spread * sd, color=color, alpha=0.2, linewidth=0)
        a.plot(times, mean, color=color, linewidth=2.2, marker="o", markersize=3)
        if n_genes > 0 and members.size:
            dist = ((curves[members] - mean) ** 2).sum(1)
            for j, g in enumerate(members[np.argsort(dist)[:n_genes]]):
                a.plot(
                    times,
                    curves[g],
                    color=color,
                    linewidth=0.8,
                    alpha=0.9,
                    linestyle=("-", "--", ":", "-.")[j % 4],
                    label=str(adata.var_names[g]),
                )
            a.legend(fontsize=6, frameon=False, loc="best", handlelength=1.5)
        a.axhline(0, color="0.7", linewidth=0.6, zorder=0)
        # sampled time points as a rug along the bottom of the panel
        a.plot(times, np.zeros(times.size), "|", color="0.4", markersize=5, transform=a.get_xaxis_transform())
        a.set_title(f"module {name} ({members.size} genes)", fontsize=9)
        a.spines[["top", "right"]].set_visible(False)
    _label_outer(axes, _time_label(uns, time_label))
    return show_or_return(fig, show=show, save=save)


@doc_params
def vrnn_umap(
    data: AnnData | MuData,
    *,
    key: str = "vrnn",
    mod: str | None = None,
    genes: Sequence[str] | None = None,
    color: str | None = None,
    basis: str | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    point_size: float = 12.0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """UMAP of the genes' VRNN latents, coloured by module; only the genes in ``genes`` are labelled.

    The embedding of the modelled genes (rows of ``adata.varm['X_' + key]`` without NaN) is
    computed by :func:`scanpy.pp.neighbors` and :func:`scanpy.tl.umap` on a temporary AnnData
    with one observation per gene, and drawn by :func:`scanpy.pl.embedding`.

    Parameters
    ----------
    data
        AnnData or MuData clustered by :func:`chromtools.tl.vrnn_cluster`.
    key
        Key of the clustering.
    {mod}
    genes
        Genes to name on the plot (e.g. known markers); no other gene is labelled.
    color
        Column of ``var`` to colour by; default the module.
    basis
        ``varm`` key of 2-D gene coordinates. When present it is drawn as is and nothing is
        computed; when missing, the UMAP is computed and written there (NaN for genes that were
        not modelled). Default: the UMAP is computed and not stored.
    n_neighbors, min_dist
        UMAP parameters (``n_neighbors`` is capped at the number of modelled genes minus one).
    random_state
        Seed of the UMAP layout.
    point_size
        Marker size.
    ax
        Axes to draw into.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``. Writes
    ``adata.varm[basis]`` only when ``basis`` is given and missing.
    """
    adata = get_modality(data, mod)
    _fitted(adata, key)
    X = np.asarray(adata.varm[f"X_{key}"])
    modelled = np.flatnonzero(np.isfinite(X).all(1))
    if modelled.size < 4:
        msg = f"UMAP needs at least 4 modelled genes, the clustering has {modelled.size}."
        raise ValueError(msg)
    genes = list(genes or [])
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"Genes {missing[:5]} are not in var_names."
        raise KeyError(msg)
    column = color or f"{key}_cluster"
    if column not in adata.var:
        msg = f"var has no column '{column}'."
        raise KeyError(msg)
    if basis is not None and basis in adata.varm:
        emb = np.asarray(adata.varm[basis], dtype=float)[modelled, :2]
        if not np.isfinite(emb).all():
            msg = f"varm['{basis}'] has no coordinates for some modelled genes; pass another basis= to recompute."
            raise ValueError(msg)
    else:
        genes_obs = pd.DataFrame(index=adata.var_names[modelled].astype(str))
        emb = umap_coords(genes_obs, X[modelled], n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)
        if basis is not None:
            stored = np.full((adata.n_vars, 2), np.nan)
            stored[modelled] = emb
            adata.varm[basis] = stored
    values = adata.var[column].iloc[modelled]
    numeric = values.dtype.kind in "fiu"
    values = values.astype(float) if numeric else values.astype("category")
    if not numeric:
        values = values.cat.rename_categories([str(c) for c in values.cat.categories])
    frame = embedding_frame(pd.DataFrame({column: values.set_axis(values.index.astype(str))}), emb, "X_umap")
    if not numeric:
        n_categories = len(frame.obs[column].cat.categories)
        frame.uns[f"{column}_colors"] = [_PALETTE[i % len(_PALETTE)] for i in range(n_categories)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
    else:
        fig = figure_of(ax)
    draw_embedding(frame, ax, color=column, size=point_size, cmap="viridis", legend_fontsize=7)
    names = adata.var_names[modelled]
    for g in genes:
        where = np.flatnonzero(names == g)
        if where.size == 0:
            continue  # named but not modelled: nothing to label
        x, y = emb[where[0]]
        ax.scatter([x], [y], s=point_size * 3, facecolors="none", edgecolors="black", linewidths=0.8)
        ax.annotate(g, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    return show_or_return(fig, show=show, save=save)


@doc_params
def vrnn_genes(
    data: AnnData | MuData,
    genes: Sequence[str],
    *,
    key: str = "vrnn",
    mod: str | None = None,
    ncols: int = 4,
    time_label: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """Chosen genes over real time: the modelled means (± standard error) and the VRNN reconstruction.

    Time points where a gene was not measured are hollow markers at the linearly interpolated
    value (what the profile methods cluster); there the VRNN curve is the model's own estimate.
    For a baseline clustering (``method`` other than ``'vrnn'``) the curve is the profile itself.

    Parameters
    ----------
    data
        AnnData or MuData clustered by :func:`chromtools.tl.vrnn_cluster`.
    genes
        Genes to show, one panel each; they must have been modelled.
    key
        Key of the clustering.
    mod
        Modality of a MuData.
    ncols
        Panels per row.
    time_label
        x-axis label; default the time column's name.
    ax
        Axes to draw into, one per gene.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``.
    """
    adata = get_modality(data, mod)
    uns = _fitted(adata, key)
    genes = [str(g) for g in genes]
    if not genes:
        msg = "Name at least one gene to plot."
        raise ValueError(msg)
    pos = adata.var_names.get_indexer(genes)
    if (pos < 0).any():
        msg = f"Genes {[g for g, p in zip(genes, pos, strict=True) if p < 0][:5]} are not in var_names."
        raise KeyError(msg)
    selected = np.asarray(adata.var[f"{key}_selected"], bool)
    if not selected[pos].all():
        missing = [g for g, p in zip(genes, pos, strict=True) if not selected[p]]
        msg = f"Genes {missing[:5]} were not modelled (not among the dynamic genes); pass them with vrnn_cluster(genes=...)."
        raise ValueError(msg)
    times = np.asarray(uns["time_points"], float)
    names = [str(c) for c in uns["cluster_names"]]
    mean = np.asarray(adata.varm[f"{key}_input"])
    se = np.asarray(adata.varm[f"{key}_se"])
    recon = np.asarray(adata.varm[f"{key}_recon"])
    observed_key = f"{key}_observed"
    observed = np.asarray(adata.varm[observed_key]) > 0 if observed_key in adata.varm else np.ones_like(mean, bool)
    method = str(uns.get("method", "vrnn"))
    cluster = adata.var[f"{key}_cluster"].astype(object).to_numpy()
    response = adata.var[f"{key}_response"].astype(object).to_numpy()
    fig, axes = _axes_grid(len(genes), ncols, ax, (3.0, 2.3))
    for a, g, p in zip(axes, genes, pos, strict=True):
        color = _PALETTE[names.index(str(cluster[p])) % len(_PALETTE)]
        seen = observed[p]
        a.errorbar(
            times[seen], mean[p][seen], yerr=se[p][seen], fmt="o", color="0.25", markersize=3.5, capsize=2, label="data"
        )
        if not seen.all():
            a.plot(times[~seen], mean[p][~seen], "o", mfc="none", color="0.55", markersize=3.5, label="not measured")
        a.plot(times, recon[p], color=color, linewidth=2, label="VRNN" if method == "vrnn" else f"{method} profile")
        a.set_title(f"{g} · module {cluster[p]} · {response[p]}", fontsize=9)
        a.spines[["top", "right"]].set_visible(False)
        a.axhline(0, color="0.8", linewidth=0.6, zorder=0)
    axes[0].legend(fontsize=7, frameon=False)
    _label_outer(axes, _time_label(uns, time_label))
    return show_or_return(fig, show=show, save=save)


@doc_params
def vrnn_module_timing(
    data: AnnData | MuData,
    *,
    key: str = "vrnn",
    mod: str | None = None,
    time_label: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: PathLike | None = None,
) -> Figure | None:
    """Consensus onset and peak time of every module with their bootstrap intervals.

    One row per module (numbered by peak time): a bar from the onset interval's low end to
    the peak interval's high end in light colour, the onset (circle) and the peak (diamond) of
    the module's mean profile with their 95 % intervals over resampled genes, from
    ``adata.uns[key]['module_timing']`` written by :func:`chromtools.tl.vrnn_cluster`.

    Parameters
    ----------
    data
        AnnData or MuData clustered by :func:`chromtools.tl.vrnn_cluster`.
    key
        Key of the clustering.
    mod
        Modality of a MuData.
    time_label
        x-axis label; default ``'time (<time_key>)'``.
    ax
        Axes to draw into; default a new figure.
    {show}
    {save}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` when not shown, else ``None``.
    """
    adata = get_modality(data, mod)
    uns = _fitted(adata, key)
    if "module_timing" not in uns:
        msg = f"The clustering under '{key}' has no module timing; re-run ct.tl.vrnn_cluster with this version."
        raise KeyError(msg)
    table = uns["module_timing"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 0.45 * len(table) + 1.0), layout="constrained")
    else:
        fig = figure_of(ax)
    for i, row in enumerate(table.itertuples(index=False)):
        color = _PALETTE[i % len(_PALETTE)]
        y = len(table) - 1 - i
        if not np.isfinite(getattr(row, "onset", np.nan)):
            ax.text(float(np.asarray(uns["time_points"])[0]), y, "  no change", va="center", fontsize=8, color="0.4")
            continue
        ax.plot([row.onset_low, row.peak_high], [y, y], color=color, alpha=0.25, linewidth=6, solid_capstyle="butt")
        for value, low, high, marker in (
            (row.onset, row.onset_low, row.onset_high, "o"),
            (row.peak, row.peak_low, row.peak_high, "D"),
        ):
            ax.errorbar(
                [value], [y], xerr=[[value - low], [high - value]], fmt=marker, color=color, capsize=3, markersize=5
            )
    ax.set_yticks(range(len(table)))
    ax.set_yticklabels(
        [f"module {m} ({n})" for m, n in zip(table["module"][::-1], table["n_genes"][::-1], strict=True)]
    )
    ax.set_xlabel(_time_label(uns, time_label))
    ax.set_title("onset (●) and peak (◆) with 95 % intervals", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return show_or_return(fig, show=show, save=save)
