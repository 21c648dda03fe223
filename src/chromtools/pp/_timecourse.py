"""From cells × genes to genes × time points: per-time mean, variance and cell count, dynamic-gene ranking."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats
from scipy.stats import false_discovery_control

from chromtools._docs import doc_params
from chromtools._utils import get_modality

if TYPE_CHECKING:
    from mudata import MuData

logger = logging.getLogger(__name__)

#: A numeric time column with at most this many distinct values is taken as discrete time points.
MAX_DISCRETE_TIMES = 50
#: Number of pseudotime bins when a continuous time column is binned and ``n_bins`` is not given.
DEFAULT_N_BINS = 10
#: Pseudo-observations of the pooled within-time variance added to each time point's variance.
VARIANCE_PRIOR_WEIGHT = 2.0

_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


@dataclass
class TimePoints:
    """Time point of every cell and the time points' values and labels (made by :func:`time_points`).

    Attributes
    ----------
    index
        Time point of each cell (integers ``0..T-1``).
    times
        Real time of each time point, increasing.
    labels
        Label of each time point.
    binned
        Whether a continuous time column was cut into bins.
    edges
        Bin edges when binned.
    """

    index: np.ndarray  # (n_cells,) int, time point of each cell
    times: np.ndarray  # (T,) float, real time of each time point
    labels: list[str]  # (T,)
    binned: bool
    edges: np.ndarray | None = None

    @property
    def n_cells(self) -> np.ndarray:
        """Cells per time point."""
        return np.bincount(self.index, minlength=len(self.labels))


@dataclass
class GeneTimeStats:
    """Per-gene statistics over time points for every gene of the input (made by :func:`gene_time_stats`).

    Attributes
    ----------
    mean, variance, counts, filled
        Genes × time points: per-time means (NaN where not measured), variances (shrunk towards
        the pooled one), cells measured, and means interpolated in time where not measured.
    n_cells
        Cells per time point.
    baseline, scale
        Mean and standard deviation over time of the filled means (scale 0: constant gene).
    score, pval
        Dynamic score (ANOVA F, or von Neumann z for bulk data) and its p-value.
    test
        ``'anova'`` or ``'von_neumann'``.
    """

    mean: np.ndarray  # (genes, T) per-time means, NaN where the gene was not measured
    variance: np.ndarray  # (genes, T) per-time variance (shrunk towards the pooled one; 0 where not measured)
    n_cells: np.ndarray  # (T,) cells per time point
    counts: np.ndarray  # (genes, T) cells in which the gene was measured (0: missing time point)
    filled: np.ndarray  # (genes, T) means, linearly interpolated in time where not measured
    baseline: np.ndarray  # (genes,) mean of the filled per-time means
    scale: np.ndarray  # (genes,) standard deviation of the filled per-time means (0: constant gene)
    score: np.ndarray  # (genes,) dynamic score (ANOVA F, or von Neumann z for bulk data)
    pval: np.ndarray  # (genes,)
    test: str  # 'anova' or 'von_neumann'

    @property
    def observed(self) -> np.ndarray:
        """(genes, T) whether the gene was measured at each time point."""
        return self.counts > 0


def interpolate_missing(values: np.ndarray, times: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Fill the unobserved entries of each row by linear interpolation in real time (constant beyond the ends).

    Rows with no observed entry stay NaN.
    """
    out = np.array(values, dtype=float, copy=True)
    for g in np.flatnonzero(~observed.all(1)):
        ok = observed[g]
        if ok.any():
            out[g] = np.interp(times, times[ok], out[g, ok])
        else:
            out[g] = np.nan
    return out


def time_column(data: AnnData | MuData, adata: AnnData, time_key: str) -> pd.Series:
    """Each cell's time: column ``time_key`` of the modality's ``obs``, else of the MuData's.

    Parameters
    ----------
    data
        The AnnData or MuData given by the user.
    adata
        The modality of ``data`` being summarised (``data`` itself for an AnnData).
    time_key
        Column name.

    Returns
    -------
    The column, indexed like ``adata.obs``.
    """
    if time_key in adata.obs:
        return adata.obs[time_key]
    obs = getattr(data, "obs", None)
    if data is not adata and obs is not None and time_key in obs:
        return obs[time_key].reindex(adata.obs_names)
    msg = f"Time column '{time_key}' is not in obs (columns: {list(adata.obs.columns)}); pass time_key=<column>."
    raise KeyError(msg)


def _label_number(label: str) -> float | None:
    found = _NUMBER.findall(str(label))
    return float(found[0]) if len(found) == 1 else None


def time_points(column: pd.Series, *, n_bins: int | None = None, time_key: str = "time") -> TimePoints:
    """Assign cells to ordered time points.

    A categorical or text column gives one time point per category (in category order for an
    ordered categorical, else by the number in each label such as ``'24h'``); a numeric column
    with at most 50 distinct values gives one time point per value; a continuous column
    (pseudotime), or any numeric column when ``n_bins`` is set, is cut into ``n_bins``
    quantile bins placed at the mean time of their cells.
    """
    if column.isna().any():
        n = int(column.isna().sum())
        msg = (
            f"{n} of {column.size} cells have no value in the time column '{time_key}'; drop them first "
            f"(adata = adata[adata.obs['{time_key}'].notna()].copy()) or fill them in."
        )
        raise ValueError(msg)
    is_numeric = pd.api.types.is_numeric_dtype(column) and not isinstance(column.dtype, pd.CategoricalDtype)
    if is_numeric:
        values = column.to_numpy(float)
        if not np.isfinite(values).all():
            msg = f"The time column '{time_key}' holds infinite values; give finite times."
            raise ValueError(msg)
        distinct = np.unique(values)
        if n_bins is None and distinct.size <= MAX_DISCRETE_TIMES:
            index = np.searchsorted(distinct, values)
            return TimePoints(index, distinct, [f"{t:g}" for t in distinct], binned=False)
        n_bins = DEFAULT_N_BINS if n_bins is None else int(n_bins)
        if n_bins < 2:
            msg = f"n_bins must be at least 2, got {n_bins}."
            raise ValueError(msg)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(edges.size - 2, 0))
        used = np.unique(index)
        index = np.searchsorted(used, index)
        times = np.array([values[index == i].mean() for i in range(used.size)])
        labels = [f"bin{i} ({edges[b]:.3g}-{edges[min(b + 1, edges.size - 1)]:.3g})" for i, b in enumerate(used)]
        return TimePoints(index, times, labels, binned=True, edges=edges)
    cat = column.astype("category") if not isinstance(column.dtype, pd.CategoricalDtype) else column
    cat = cat.cat.remove_unused_categories()
    categories = [str(c) for c in cat.cat.categories]
    numbers = [_label_number(c) for c in categories]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        times = np.asarray(numbers, float)
        if not cat.cat.ordered:
            order = np.argsort(times, kind="stable")
            categories = [categories[i] for i in order]
            times = times[order]
            cat = cat.cat.reorder_categories([cat.cat.categories[i] for i in order])
        elif np.any(np.diff(times) <= 0):
            logger.warning(
                "The ordered time categories %s do not increase with the numbers in their labels; "
                "using their positions 0..%d as times.",
                categories,
                len(categories) - 1,
            )
            times = np.arange(len(categories), dtype=float)
    else:
        if not cat.cat.ordered:
            logger.warning(
                "The time column '%s' is unordered text; time points are taken in the order %s. "
                "Pass an ordered categorical or a numeric column to control the order.",
                time_key,
                categories,
            )
        logger.info("Time labels carry no numbers; using positions 0..%d as times.", len(categories) - 1)
        times = np.arange(len(categories), dtype=float)
    return TimePoints(cat.cat.codes.to_numpy().astype(np.int64), times, categories, binned=False)


def timecourse_matrix(adata: AnnData, layer: str | None) -> np.ndarray | sp.spmatrix:
    """The cells × genes matrix to summarise over time: ``X`` or ``layers[layer]``, checked.

    NaN marks a value that was not measured; infinite values are an error.

    Parameters
    ----------
    adata
        Cells × genes.
    layer
        Layer to use; ``None`` for ``X``.

    Returns
    -------
    The matrix itself (dense or sparse, not copied).
    """
    if layer is None:
        X = adata.X
    else:
        if layer not in adata.layers:
            msg = f"Layer '{layer}' does not exist (layers: {list(adata.layers)}); pass layer=None to use X."
            raise KeyError(msg)
        X = adata.layers[layer]
    if X is None:
        msg = "The AnnData has no X; pass layer=<name of a layer>."
        raise ValueError(msg)
    values = X.data if sp.issparse(X) else np.asarray(X)
    if np.isinf(values).any():
        where = "X" if layer is None else f"layer '{layer}'"
        msg = (
            f"{where} contains infinite values; replace them (NaN marks a value that was not measured) "
            "before summarising over time."
        )
        raise ValueError(msg)
    return X


def _von_neumann(curve: np.ndarray) -> float:
    """Von Neumann z-score of one ordered series (large for smooth change, about 0 for noise)."""
    T = curve.size
    dev = ((curve - curve.mean()) ** 2).sum()
    if T < 3 or dev <= 0:
        return 0.0
    ratio = (np.diff(curve) ** 2).sum() / dev
    return float((2.0 - ratio) / np.sqrt(4.0 * (T - 2) / (T**2 - 1.0)))


def gene_time_stats(X, tp: TimePoints) -> GeneTimeStats:
    """Per-gene mean, variance and dynamic score over the time points of ``tp`` (``X`` is cells × genes).

    NaN entries of ``X`` are values that were not measured: they are left out of every statistic,
    and a gene with no measured cell at a time point has a missing time point there.
    """
    n_t = tp.n_cells.astype(float)
    T = n_t.size
    n = int(n_t.sum())
    G = sp.csr_matrix((np.ones(n), (tp.index, np.arange(n))), shape=(T, n))
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        nan = np.isnan(X.data)
        if nan.any():
            missing = X.copy()
            missing.data = nan.astype(np.float64)
            counts = n_t[:, None] - np.asarray((G @ missing).todense())
            X.data[nan] = 0.0
        else:
            counts = np.broadcast_to(n_t[:, None], (T, X.shape[1])).copy()
        sums = np.asarray((G @ X).todense())
        sq = np.asarray((G @ X.multiply(X)).todense())
    else:
        X = np.asarray(X, dtype=np.float64)
        valid = ~np.isnan(X)
        X = np.where(valid, X, 0.0)
        counts = G @ valid.astype(np.float64)
        sums = G @ X
        sq = G @ (X * X)
    counts = counts.T  # genes × T
    observed = counts > 0
    safe = np.maximum(counts, 1.0)
    mean = np.where(observed, sums.T / safe, np.nan)
    ss_within_t = np.where(observed, np.maximum(sq.T - sums.T**2 / safe, 0.0), 0.0)  # Σ (x - m_t)² per time
    filled = interpolate_missing(mean, tp.times, observed)
    n_obs_points = observed.sum(1)
    usable = n_obs_points >= 2
    filled_safe = np.where(usable[:, None], filled, 0.0)
    baseline = filled_safe.mean(1)
    scale = filled_safe.std(1)
    scale[~usable | (scale < 1e-12 * np.maximum(np.abs(baseline), 1.0))] = 0.0
    n_g = counts.sum(1)
    df_within = n_g - n_obs_points
    if np.any(counts > 1):
        ss_within = ss_within_t.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            pooled = np.where(df_within > 0, ss_within / np.maximum(df_within, 1), 0.0)
            df_t = np.maximum(counts - 1.0, 0.0)
            variance = np.where(
                observed, (ss_within_t + VARIANCE_PRIOR_WEIGHT * pooled[:, None]) / (df_t + VARIANCE_PRIOR_WEIGHT), 0.0
            )
            grand = sums.sum(0) / np.maximum(n_g, 1)
            ss_between = np.where(observed, counts * (np.nan_to_num(mean) - grand[:, None]) ** 2, 0.0).sum(1)
            score = (ss_between / np.maximum(n_obs_points - 1, 1)) / pooled
        score = np.where(pooled > 0, score, np.where(ss_between > 0, np.inf, 0.0))
        ok = (df_within > 0) & (n_obs_points >= 2)
        pval = np.where(ok, stats.f.sf(score, np.maximum(n_obs_points - 1, 1), np.maximum(df_within, 1)), 1.0)
        test = "anova"
    else:
        # Bulk data (one sample per time point): no within-time variance. Rank genes by the von Neumann
        # ratio of successive differences to the variance of their measured points, which is small for
        # smooth temporal change and about 2 for noise without temporal structure.
        variance = np.zeros_like(mean)
        score = np.array([_von_neumann(np.nan_to_num(mean[g][observed[g]])) for g in range(mean.shape[0])])
        pval = stats.norm.sf(score)
        test = "von_neumann"
    score = np.where(scale > 0, score, -np.inf)
    pval = np.where(scale > 0, pval, 1.0)
    return GeneTimeStats(mean, variance, n_t, counts, filled, baseline, scale, score, pval, test)


def select_genes(
    var_names: pd.Index,
    st: GeneTimeStats,
    *,
    n_top_genes: int | None,
    genes: Sequence[str] | None,
) -> np.ndarray:
    """Integer positions of the genes to model: ``genes`` as given, else the top dynamic non-constant genes."""
    constant = st.scale == 0
    if genes is not None:
        genes = list(genes)
        pos = var_names.get_indexer(genes)
        if (pos < 0).any():
            missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
            msg = f"{len(missing)} requested genes are not in var_names, e.g. {missing[:5]}."
            raise KeyError(msg)
        if constant[pos].any():
            flat = [g for g, p in zip(genes, pos, strict=True) if constant[p]]
            msg = (
                f"{len(flat)} requested genes have the same mean at every time point, so they cannot be standardised "
                f"or clustered by shape: {flat[:5]}. Leave them out."
            )
            raise ValueError(msg)
        return pos
    candidates = np.flatnonzero(~constant)
    if candidates.size == 0:
        msg = "Every gene has the same mean at every time point: there is no temporal change to model."
        raise ValueError(msg)
    if constant.any():
        logger.info("Left out %d genes whose mean does not change over time.", int(constant.sum()))
    order = candidates[np.argsort(-st.score[candidates], kind="stable")]
    if n_top_genes is not None:
        if n_top_genes < 1:
            msg = f"n_top_genes must be positive, got {n_top_genes}."
            raise ValueError(msg)
        order = order[:n_top_genes]
    return np.sort(order)


def summary_anndata(
    var_names: pd.Index,
    st: GeneTimeStats,
    tp: TimePoints,
    pos: np.ndarray,
    *,
    qval: np.ndarray | None = None,
    shrink: bool = True,
) -> AnnData:
    """Genes × time points AnnData of the genes at ``pos`` (standardised means in ``X``)."""
    mean = st.mean[pos]
    filled = st.filled[pos]
    observed = st.observed[pos]
    scale = st.scale[pos]
    baseline = st.baseline[pos]
    zscore = (filled - baseline[:, None]) / scale[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        se2 = np.where(observed, st.variance[pos] / np.maximum(st.counts[pos], 1.0) / scale[:, None] ** 2, 0.0)
    if shrink:
        # Posterior mean of each standardised value under a unit-variance prior: means measured no better
        # than their own spread (genes whose "change" is mostly noise) are pulled towards 0, i.e. flat.
        X = zscore / (1.0 + se2)
        noise = se2 / (1.0 + se2) ** 2
    else:
        X, noise = zscore, se2
    if not observed.all():  # profiles for methods that need every point: interpolate the measured ones
        X = interpolate_missing(X, tp.times, observed)
    gaps = np.diff(tp.times)
    positive = gaps[gaps > 0]
    unit = float(np.median(positive)) if positive.size else 1.0
    dt = np.concatenate([[0.0], gaps / unit])
    n_genes = pos.size
    obs = pd.DataFrame(
        {
            "baseline": baseline,
            "scale": scale,
            "dynamic_score": st.score[pos],
            "dynamic_pval": st.pval[pos],
        },
        index=pd.Index(var_names[pos].astype(str)),
    )
    if qval is not None:
        obs["dynamic_qval"] = qval[pos]
    var = pd.DataFrame(
        {"time": tp.times, "n_cells": st.n_cells.astype(np.int64), "dt": dt},
        index=pd.Index([str(label) for label in tp.labels]),
    )
    out = AnnData(X=X.astype(np.float32), obs=obs, var=var)
    out.layers["zscore"] = zscore.astype(np.float32)
    out.layers["mean"] = mean.astype(np.float32)
    out.layers["observed"] = observed.astype(np.float32)
    out.layers["n_cells"] = st.counts[pos].astype(np.float32)
    out.layers["variance"] = st.variance[pos].astype(np.float32)
    out.layers["noise"] = noise.astype(np.float32)
    out.layers["dt"] = np.broadcast_to(dt.astype(np.float32), (n_genes, dt.size)).copy()
    out.uns["timecourse"] = {
        "dt_unit": unit,
        "test": st.test,
        "binned": tp.binned,
        "shrink": shrink,
        "n_missing": int((~observed).sum()),
    }
    if tp.edges is not None:
        out.uns["timecourse"]["bin_edges"] = np.asarray(tp.edges, float)
    return out


@doc_params
def timecourse_summary(
    data: AnnData | MuData,
    time_key: str = "time",
    *,
    layer: str | None = None,
    mod: str | None = None,
    n_bins: int | None = None,
    n_top_genes: int | None = 2_000,
    genes: Sequence[str] | None = None,
    shrink: bool = True,
) -> AnnData:
    """Summarise cells × genes into genes × time points: mean, variance and cells of every gene at every time.

    The input of :class:`chromtools.models.VRNN`. Cells need not be sorted. Each gene's
    per-time means are standardised (mean 0, standard deviation 1 over time points) so that
    genes group by the shape of their response, not by magnitude; the magnitude is kept in
    ``obs['baseline']`` and ``obs['scale']``.

    ``NaN`` in the data marks a value that was not measured (e.g. a gene not assayed in some
    samples): it is left out of every statistic, and a gene with no measured cell at a time
    point has a *missing time point* there (``layers['observed'] == 0``). The baseline and scale
    of such a gene come from its means linearly interpolated in real time between measured
    points (constant beyond the ends); the VRNN masks missing points out of its likelihood,
    while profile methods (k-means, k-Shape, fuzzy c-means) use the interpolated ``X``.

    Parameters
    ----------
    {data}
    time_key
        Column of ``obs`` (of the modality, or of the MuData) with each cell's time: discrete
        time points (numbers, or labels such as ``'24h'``), or a continuous pseudotime.
    layer
        Layer to summarise (e.g. log-normalised gene activity); default ``X``.
    {mod}
    n_bins
        Cut the time column into this many quantile bins (pseudotime). Default: discrete time
        points when the column has at most 50 distinct values, else 10 bins.
    n_top_genes
        Keep this many genes, the most dynamic first (one-way ANOVA F over time points; for
        bulk data with one sample per time point, a von Neumann successive-difference test).
        ``None`` keeps every gene whose mean changes over time.
    genes
        Model exactly these genes instead.
    shrink
        Pull each standardised mean towards 0 by its standard error ``se``:
        ``z / (1 + se²)``, the posterior mean under a unit-variance prior. Genes whose change
        over time is mostly noise then look flat instead of taking a random shape. No effect on
        bulk data (no within-time replicates, ``se = 0``).

    Returns
    -------
    AnnData with genes as observations and time points (in time order) as variables:

    ``X``
        standardised (and shrunk) means; at missing time points, linearly interpolated in time
        from the gene's measured ones;
    ``layers['observed']``
        1 where the gene was measured at the time point, 0 where not;
    ``layers['n_cells']``
        cells in which the gene was measured at each time point;
    ``layers['zscore']``
        standardised means without shrinkage;
    ``layers['mean']``, ``layers['variance']``
        per-time mean (NaN where not measured) and variance in the input units (the variance is shrunk towards the
        gene's pooled within-time variance by two pseudo-observations; 0 for bulk data);
    ``layers['noise']``
        squared standard error of each value of ``X`` (variance / cells / scale², divided by
        ``(1 + se²)²`` when shrunk; 0 at missing time points);
    ``layers['dt']``
        time gap before each time point in units of the median gap (0 for the first);
    ``obs``
        ``baseline``, ``scale`` (magnitude), ``dynamic_score``, ``dynamic_pval``,
        ``dynamic_qval``;
    ``var``
        ``time`` (real units), ``n_cells``, ``dt``;
    ``uns['timecourse']``
        ``params`` of this call (``None`` stored as ``'None'``, or -1 for numbers), ``dt_unit``,
        ``test``, ``binned``, ``shrink``, ``n_missing`` and, when binned, ``bin_edges``.
    """
    adata = get_modality(data, mod)
    X = timecourse_matrix(adata, layer)
    tp = time_points(time_column(data, adata, time_key), n_bins=n_bins, time_key=time_key)
    if len(tp.labels) < 2:
        msg = f"The time column '{time_key}' has a single time point ({tp.labels[0]!r}); a time course needs at least two."
        raise ValueError(msg)
    st = gene_time_stats(X, tp)
    pos = select_genes(adata.var_names, st, n_top_genes=n_top_genes, genes=genes)
    out = summary_anndata(adata.var_names, st, tp, pos, qval=false_discovery_control(st.pval), shrink=shrink)
    out.uns["timecourse"]["params"] = {
        "time_key": time_key,
        "layer": "None" if layer is None else layer,
        "mod": "None" if mod is None else mod,
        "n_bins": -1 if n_bins is None else int(n_bins),
        "n_top_genes": -1 if n_top_genes is None else int(n_top_genes),
        "genes_given": genes is not None,
        "shrink": bool(shrink),
    }
    return out
