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


@doc_params
def simulate_timecourse(
    n_genes: int = 1_000,
    *,
    time_points: Sequence[float] = (0, 1, 3, 6, 12, 24, 48),
    cells_per_time: int = 100,
    modules: Mapping[str, float] | None = None,
    dispersion: float = 5.0,
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
        Cells per time point.
    modules
        Module name → share of genes; default 15 % each of ``fast_transient``, ``fast_sustained``,
        ``delayed`` and ``down``, and 40 % ``flat``.
    dispersion
        Negative-binomial inverse dispersion (larger = less noise).
    {random_state}

    Returns
    -------
    AnnData (cells × genes) with counts in ``layers['counts']`` and log-normalised values in ``X``;
    ``obs['time']`` (hours, float) and ``obs['time_point']`` (ordered categorical);
    ``var['module']`` (the planted truth), ``var['baseline']``, ``var['amplitude']``,
    ``var['tau']``, ``var['onset']``.
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
    counts_per_module = np.floor(share / share.sum() * n_genes).astype(int)
    counts_per_module[np.argmax(share)] += n_genes - counts_per_module.sum()
    module_of = rng.permutation(np.repeat(np.arange(len(names)), counts_per_module))

    span = times.max() - times.min()
    baseline = rng.normal(np.log(2.0), 1.0, size=n_genes)
    amplitude = rng.lognormal(np.log(1.3), 0.3, size=n_genes)
    tau = span / 24.0 * rng.lognormal(np.log(1.5), 0.25, size=n_genes)
    onset = span / 4.0 * rng.lognormal(0.0, 0.2, size=n_genes)

    cell_time = np.repeat(times, cells_per_time)
    n_cells = cell_time.size
    size_factor = rng.lognormal(0.0, 0.35, size=n_cells)
    curves = np.empty((times.size, n_genes))
    for g in range(n_genes):
        curves[:, g] = module_curve(names[module_of[g]], times - times.min(), tau[g], onset[g])
    log_mu_time = baseline[None, :] + amplitude[None, :] * curves  # time points x genes
    time_idx = np.repeat(np.arange(times.size), cells_per_time)
    mu = np.exp(log_mu_time[time_idx]) * size_factor[:, None]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float32)
    order = rng.permutation(n_cells)
    counts, cell_time, time_idx = counts[order], cell_time[order], time_idx[order]

    X = sp.csr_matrix(counts)
    lib = counts.sum(axis=1, keepdims=True)
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
        },
        index=pd.Index([f"gene_{g}" for g in range(n_genes)]),
    )
    adata = AnnData(X=norm.astype(np.float32), obs=obs, var=var, layers={"counts": X})
    adata.uns["simulation"] = {"kind": "timecourse", "random_state": random_state, "time_points": times.tolist()}
    logger.info("Simulated %d cells x %d genes at %d time points", n_cells, n_genes, times.size)
    return adata
