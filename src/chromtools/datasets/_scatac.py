"""Simulated scATAC peak counts with cell types, batches and an optional query-only cell type."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from chromtools._docs import doc_params

logger = logging.getLogger(__name__)


def _peak_var(n_peaks: int, rng: np.random.Generator) -> pd.DataFrame:
    """Non-overlapping 500-bp peaks spread over a few chromosomes."""
    chroms = np.array([f"chr{i}" for i in range(1, 6)])
    chrom = np.sort(rng.choice(chroms.size, size=n_peaks, p=np.linspace(1.4, 0.6, chroms.size) / chroms.size))
    starts = np.zeros(n_peaks, np.int64)
    for c in range(chroms.size):
        idx = np.flatnonzero(chrom == c)
        gaps = rng.integers(1_000, 40_000, size=idx.size)
        starts[idx] = np.cumsum(gaps)
    ends = starts + 500
    names = [f"{chroms[c]}:{s}-{e}" for c, s, e in zip(chrom, starts, ends, strict=True)]
    return pd.DataFrame(
        {"chrom": pd.Categorical(chroms[chrom]), "start": starts, "end": ends}, index=pd.Index(names, name=None)
    )


@doc_params
def simulate_scatac(
    n_cells: int = 3_000,
    n_peaks: int = 5_000,
    *,
    n_cell_types: int = 6,
    n_batches: int = 3,
    absent_cell_type: str | None = None,
    reference_batches: Sequence[str] | None = None,
    median_counts: float = 300.0,
    batch_depth: Sequence[float] | None = None,
    batch_effect: float = 0.6,
    random_state: int = 0,
) -> AnnData:
    """Simulate scATAC peak counts with a cell-type hierarchy and batch effects.

    Cell types descend from a few lineages: each lineage opens its own set of peaks and each type
    opens (and closes) further peaks; every type has two sub-states, so cells of a type are not
    identical. Batches differ in sequencing depth (a per-batch factor on library size) and in
    accessibility (per-batch log-fold changes on all peaks, strong on a few "technical" peaks).
    Fragment counts of a cell are a multinomial draw over peaks, so data are as sparse as real
    scATAC (a few % non-zero) and counts are mostly 1.

    Parameters
    ----------
    n_cells, n_peaks
        Size of the matrix.
    n_cell_types
        Number of cell types (``type_0`` ...), spread over ``max(2, n_cell_types // 3)`` lineages.
    n_batches
        Number of batches (``batch_0`` ...).
    absent_cell_type
        A cell type (e.g. ``'type_5'``) that is only present in batches outside
        ``reference_batches``, for testing unknown-cell detection.
    reference_batches
        Batches from which ``absent_cell_type`` is removed; default all but the last batch.
    median_counts
        Median number of fragments in peaks per cell (in a batch of depth factor 1).
    batch_depth
        Depth factor of each batch; default evenly spaced from 0.6 to 1.5.
    batch_effect
        Standard deviation of the per-batch, per-peak log-fold change.
    {random_state}

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR, int32) and ``layers['counts']``; ``obs['cell_type']``,
    ``obs['batch']``, ``obs['lineage']``, ``obs['n_counts']``; ``var`` chrom/start/end
    (0-based half-open) with names ``chrom:start-end``; ``uns['simulation']`` with the parameters.
    """
    rng = np.random.default_rng(random_state)
    types = [f"type_{i}" for i in range(n_cell_types)]
    batches = [f"batch_{i}" for i in range(n_batches)]
    if absent_cell_type is not None and absent_cell_type not in types:
        msg = f"absent_cell_type {absent_cell_type!r} is not one of the simulated types {types}."
        raise ValueError(msg)
    if reference_batches is None:
        reference_batches = batches[:-1]
    unknown = [b for b in reference_batches if b not in batches]
    if unknown:
        msg = f"reference_batches {unknown} are not simulated batches {batches}."
        raise ValueError(msg)
    if absent_cell_type is not None and set(reference_batches) == set(batches):
        msg = "absent_cell_type needs at least one batch outside reference_batches to live in."
        raise ValueError(msg)
    depth = np.asarray(batch_depth if batch_depth is not None else np.linspace(0.6, 1.5, n_batches), float)
    if depth.size != n_batches:
        msg = f"batch_depth needs one factor per batch ({n_batches}), got {depth.size}."
        raise ValueError(msg)

    var = _peak_var(n_peaks, rng)
    # Accessibility (log scale) of every peak for every type and sub-state.
    base = rng.normal(0.0, 1.0, size=n_peaks)
    n_lineages = max(2, n_cell_types // 3)
    lineage_of = np.sort(rng.integers(0, n_lineages, size=n_cell_types))
    lineage_of[:n_lineages] = np.arange(n_lineages)  # every lineage has at least one type
    lineage_of = np.sort(lineage_of)
    lineage_fx = np.zeros((n_lineages, n_peaks))
    for lin in range(n_lineages):
        open_ = rng.choice(n_peaks, size=n_peaks // 8, replace=False)
        lineage_fx[lin, open_] = rng.normal(2.0, 0.5, size=open_.size)
    logits = np.zeros((n_cell_types, 2, n_peaks))
    for t in range(n_cell_types):
        type_fx = np.zeros(n_peaks)
        open_ = rng.choice(n_peaks, size=n_peaks // 15, replace=False)
        closed = rng.choice(n_peaks, size=n_peaks // 30, replace=False)
        type_fx[open_] += rng.normal(2.2, 0.5, size=open_.size)
        type_fx[closed] -= rng.normal(1.5, 0.4, size=closed.size)
        for s in range(2):
            state = np.zeros(n_peaks)
            sub = rng.choice(n_peaks, size=n_peaks // 50, replace=False)
            state[sub] = rng.normal(1.0, 0.3, size=sub.size)
            logits[t, s] = base + lineage_fx[lineage_of[t]] + type_fx + state
    batch_fx = rng.normal(0.0, batch_effect, size=(n_batches, n_peaks))
    for b in range(n_batches):
        tech = rng.choice(n_peaks, size=n_peaks // 30, replace=False)
        batch_fx[b, tech] += rng.choice([-1.5, 1.5], size=tech.size)

    # Cell assignments: type proportions differ between batches, as between donors.
    props = rng.dirichlet(np.full(n_cell_types, 3.0))
    batch_of = rng.integers(0, n_batches, size=n_cells)
    type_of = np.empty(n_cells, np.int64)
    for b in range(n_batches):
        idx = np.flatnonzero(batch_of == b)
        p = props * rng.uniform(0.7, 1.3, size=n_cell_types)
        if absent_cell_type is not None and batches[b] in reference_batches:
            p[types.index(absent_cell_type)] = 0.0
        type_of[idx] = rng.choice(n_cell_types, size=idx.size, p=p / p.sum())
    state_of = rng.integers(0, 2, size=n_cells)
    lib = np.maximum(rng.lognormal(np.log(median_counts), 0.5, size=n_cells) * depth[batch_of], 20).astype(np.int64)

    rows, cols = [], []
    for t in range(n_cell_types):
        for s in range(2):
            for b in range(n_batches):
                cells = np.flatnonzero((type_of == t) & (state_of == s) & (batch_of == b))
                if cells.size == 0:
                    continue
                z = logits[t, s] + batch_fx[b]
                p = np.exp(z - z.max())
                p /= p.sum()
                draws = rng.choice(n_peaks, size=int(lib[cells].sum()), p=p)
                rows.append(np.repeat(cells, lib[cells]))
                cols.append(draws)
    r, c = np.concatenate(rows), np.concatenate(cols)
    X = sp.csr_matrix((np.ones(r.size, np.int32), (r, c)), shape=(n_cells, n_peaks))
    X.sum_duplicates()
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.asarray(types)[type_of], categories=types),
            "batch": pd.Categorical(np.asarray(batches)[batch_of], categories=batches),
            "lineage": pd.Categorical([f"lineage_{lineage_of[t]}" for t in type_of]),
            "n_counts": np.asarray(X.sum(axis=1)).ravel(),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    adata = AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    adata.uns["simulation"] = {
        "kind": "scatac",
        "random_state": random_state,
        "absent_cell_type": absent_cell_type or "",
        "reference_batches": list(reference_batches),
        "batch_depth": depth.tolist(),
        "batch_effect": batch_effect,
    }
    logger.info("Simulated %d cells x %d peaks (%.1f%% non-zero)", n_cells, n_peaks, 100 * X.nnz / (n_cells * n_peaks))
    return adata
