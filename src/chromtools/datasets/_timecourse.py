"""Simulated time-course gene activity with planted temporal response modules."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from chromtools._docs import doc_params

logger = logging.getLogger(__name__)

#: Planted modules and the share of genes in each.
DEFAULT_MODULES = {
    "fast_transient": 0.15,
    "fast_sustained": 0.15,
    "delayed": 0.15,
    "down": 0.15,
    "flat": 0.40,
}


def module_curve(module: str, t: np.ndarray, tau: float, onset: float) -> np.ndarray:
    """Response shape in [0, 1] (or [-1, 0] for ``down``) of a planted module at times ``t`` (h).

    ``fast_transient`` rises and falls back with peak at ``tau``; ``fast_sustained`` rises with
    time constant ``tau`` and stays; ``delayed`` switches on around ``onset``; ``down`` decays
    with time constant ``tau``; ``flat`` stays at 0.
    """
    t = np.asarray(t, float)
    if module == "fast_transient":
        return (t / tau) * np.exp(1.0 - t / tau)
    if module == "fast_sustained":
        return 1.0 - np.exp(-t / tau)
    if module == "delayed":
        width = max(onset / 5.0, 1.0)
        return 1.0 / (1.0 + np.exp(-(t - onset) / width)) - 1.0 / (1.0 + np.exp(onset / width))
    if module == "down":
        return -(1.0 - np.exp(-t / tau))
    if module == "flat":
        return np.zeros_like(t)
    msg = f"Unknown module {module!r}; use one of {list(DEFAULT_MODULES)}."
    raise ValueError(msg)


#: Named simulation variants of :func:`simulate_timecourse_variant`: the arguments each one sets.
TIMECOURSE_VARIANTS: dict[str, dict] = {
    # 7 unevenly spaced time points, 100 cells each, every gene measured everywhere.
    "standard": {},
    # The same design with very different numbers of cells per time point.
    "uneven_cells": {"cells_per_time": (200, 12, 150, 8, 100, 10, 60)},
    # Irregular sampling: 12 unevenly spaced time points, each gene measured at ~half of them (a different
    # half per gene), and uneven numbers of cells per time point.
    "irregular": {
        "time_points": (0, 0.5, 1, 2, 3, 4.5, 6, 9, 12, 18, 30, 48),
        "cells_per_time": (80, 30, 60, 20, 50, 15, 60, 25, 40, 20, 50, 30),
        "missing": 0.5,
    },
    # The same response shape starting up to 8 h later in some genes than in others.
    "shifted": {"time_shift": 8.0},
    # Low counts: ~0.3 reads per gene and cell at baseline, over-dispersed (scATAC gene activity).
    "sparse": {"mean_count": 0.3, "dispersion": 2.0},
}


def simulate_timecourse_variant(variant: str, n_genes: int = 1_000, *, random_state: int = 0) -> AnnData:
    """One of the named simulation designs of :data:`TIMECOURSE_VARIANTS`, from :func:`simulate_timecourse`.

    ``'standard'`` (7 uneven time points, 100 cells each), ``'uneven_cells'`` (8 to 200 cells per
    time point), ``'irregular'`` (12 uneven time points, each gene measured at about half of them,
    15 to 80 cells per time point), ``'shifted'`` (the whole response of a gene delayed by 0-8 h)
    and ``'sparse'`` (about 0.3 counts per gene and cell, over-dispersed).

    Parameters
    ----------
    variant
        Name of the design.
    n_genes
        Number of genes.
    random_state
        Seed.

    Returns
    -------
    As :func:`simulate_timecourse`, with ``uns['simulation']['variant']``.
    """
    if variant not in TIMECOURSE_VARIANTS:
        msg = f"Unknown time-course variant {variant!r}; use one of {list(TIMECOURSE_VARIANTS)}."
        raise ValueError(msg)
    adata = simulate_timecourse(n_genes, random_state=random_state, **TIMECOURSE_VARIANTS[variant])
    adata.uns["simulation"]["variant"] = variant
    return adata


@doc_params
def simulate_timecourse(
    n_genes: int = 1_000,
    *,
    time_points: Sequence[float] = (0, 1, 3, 6, 12, 24, 48),
    cells_per_time: int | Sequence[int] = 100,
    modules: Mapping[str, float] | None = None,
    dispersion: float = 5.0,
    mean_count: float = 2.0,
    time_shift: float = 0.0,
    missing: float = 0.0,
    random_state: int = 0,
) -> AnnData:
    """Simulate single-cell gene activity after a stimulus, with planted temporal modules.

    Each gene belongs to a module (fast transient, fast sustained, delayed, down-regulated or flat,
    see :func:`module_curve`) with gene-specific timing jitter. Genes differ widely in baseline
    level and amplitude, so a method that does not standardise genes splits clusters by magnitude.
    Counts are negative binomial around ``exp(baseline + amplitude * curve(t))`` times a cell size
    factor, as gene-activity counts from scATAC are. Cells come shuffled, not sorted by time.

    Parameters
    ----------
    n_genes
        Number of genes.
    time_points
        Sampling times in hours; uneven gaps are the point.
    cells_per_time
        Cells per time point: one number, or one per time point.
    modules
        Module name → share of genes; default 15 % each of ``fast_transient``, ``fast_sustained``,
        ``delayed`` and ``down``, and 40 % ``flat``.
    dispersion
        Negative-binomial inverse dispersion (larger = less noise).
    mean_count
        Geometric mean over genes of the baseline count per cell (lower = sparser).
    time_shift
        Delay every gene's whole response by a uniform random time in ``[0, time_shift]``
        hours: the same shape with shifted onsets (``var['shift']``).
    missing
        Share of (gene, time point) pairs that are not measured: for each gene a random set of
        time points other than the first (keeping at least three measured ones) is ``NaN`` in
        every cell, in ``X`` and ``layers['counts']`` (``varm['observed']`` holds the truth).
    {random_state}

    Returns
    -------
    AnnData (cells × genes) with counts in ``layers['counts']`` and log-normalised values in ``X``;
    ``obs['time']`` (hours, float) and ``obs['time_point']`` (ordered categorical);
    ``var['module']`` (the planted truth), ``var['baseline']``, ``var['amplitude']``,
    ``var['tau']``, ``var['onset']``, ``var['shift']``; ``varm['observed']`` (genes × time
    points, whether measured) and ``varm['truth']`` (the noiseless log-mean curve).
    """
    rng = np.random.default_rng(random_state)
    modules = dict(modules if modules is not None else DEFAULT_MODULES)
    names = list(modules)
    share = np.asarray([modules[m] for m in names], float)
    if np.any(share < 0) or share.sum() <= 0:
        msg = "modules must map module names to non-negative shares with a positive sum."
        raise ValueError(msg)
    times = np.asarray(sorted(float(t) for t in time_points))
    if times.size < 2:
        msg = "A time course needs at least two time points."
        raise ValueError(msg)
    if np.ndim(cells_per_time) and np.shape(cells_per_time)[0] != times.size:
        msg = f"cells_per_time has {np.shape(cells_per_time)[0]} values for {times.size} time points; give one per time point."
        raise ValueError(msg)
    per_time = np.broadcast_to(np.asarray(cells_per_time, dtype=np.int64), times.shape)
    if np.any(per_time < 1):
        msg = "cells_per_time must be at least 1 at every time point."
        raise ValueError(msg)
    if not 0.0 <= missing < 1.0 or mean_count <= 0 or time_shift < 0:
        msg = "missing must be in [0, 1), mean_count positive and time_shift non-negative."
        raise ValueError(msg)
    counts_per_module = np.floor(share / share.sum() * n_genes).astype(int)
    counts_per_module[np.argmax(share)] += n_genes - counts_per_module.sum()
    module_of = rng.permutation(np.repeat(np.arange(len(names)), counts_per_module))

    span = times.max() - times.min()
    baseline = rng.normal(np.log(mean_count), 1.0, size=n_genes)
    amplitude = rng.lognormal(np.log(1.3), 0.3, size=n_genes)
    tau = span / 24.0 * rng.lognormal(np.log(1.5), 0.25, size=n_genes)
    onset = span / 4.0 * rng.lognormal(0.0, 0.2, size=n_genes)

    cell_time = np.repeat(times, per_time)
    n_cells = cell_time.size
    size_factor = rng.lognormal(0.0, 0.35, size=n_cells)
    # Extra draws come from a second stream so that the default design is unchanged by these options.
    extra = np.random.default_rng([int(random_state), 1])
    shift = extra.uniform(0.0, time_shift, size=n_genes) if time_shift > 0 else np.zeros(n_genes)
    curves = np.empty((times.size, n_genes))
    for g in range(n_genes):
        local = np.clip(times - times.min() - shift[g], 0.0, None)
        curves[:, g] = module_curve(names[module_of[g]], local, tau[g], onset[g])
    log_mu_time = baseline[None, :] + amplitude[None, :] * curves  # time points x genes
    time_idx = np.repeat(np.arange(times.size), per_time)
    mu = np.exp(log_mu_time[time_idx]) * size_factor[:, None]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float32)
    order = rng.permutation(n_cells)
    counts, cell_time, time_idx = counts[order], cell_time[order], time_idx[order]
    observed = np.ones((n_genes, times.size), bool)
    if missing > 0:
        n_drop = min(int(round(missing * times.size)), times.size - 3)
        for g in range(n_genes):
            if n_drop > 0:
                observed[g, 1 + extra.choice(times.size - 1, size=n_drop, replace=False)] = False
        counts[~observed.T[time_idx]] = np.nan

    X = sp.csr_matrix(counts)
    lib = np.nansum(counts, axis=1, keepdims=True)
    norm = np.log1p(counts / np.maximum(lib, 1) * np.median(lib))
    labels = [f"{t:g}h" for t in times]
    obs = pd.DataFrame(
        {
            "time": cell_time,
            "time_point": pd.Categorical(np.asarray(labels)[time_idx], categories=labels, ordered=True),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(
        {
            "module": pd.Categorical(np.asarray(names)[module_of], categories=names),
            "baseline": baseline,
            "amplitude": amplitude,
            "tau": tau,
            "onset": onset,
            "shift": shift,
        },
        index=pd.Index([f"gene_{g}" for g in range(n_genes)]),
    )
    adata = AnnData(X=norm.astype(np.float32), obs=obs, var=var, layers={"counts": X})
    adata.varm["observed"] = observed
    adata.varm["truth"] = log_mu_time.T.astype(np.float32)
    adata.uns["simulation"] = {
        "kind": "timecourse",
        "random_state": random_state,
        "time_points": times.tolist(),
        "cells_per_time": per_time.tolist(),
        "mean_count": float(mean_count),
        "dispersion": float(dispersion),
        "time_shift": float(time_shift),
        "missing": float(missing),
    }
    logger.info("Simulated %d cells x %d genes at %d time points", n_cells, n_genes, times.size)
    return adata
