"""Gene activity: cells × genes scores from peak counts or fragments over promoter + gene body windows."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from chromtools._docs import doc_params
from chromtools._utils import PathLike, get_modality

if TYPE_CHECKING:
    from mudata import MuData

logger = logging.getLogger(__name__)

_GENE_KEYS = ("gene_name", "symbol", "gene_symbol", "gene_id", "gene", "name")
_GTF_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')


def _read_gtf(path: Path) -> pd.DataFrame:
    cols = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attributes"]
    df = pd.read_csv(path, sep="\t", comment="#", header=None, names=cols, dtype={"chrom": str}, low_memory=False)
    if df.empty:
        msg = f"Annotation '{path}' holds no features."
        raise ValueError(msg)
    if (df["feature"] == "gene").any():
        df = df.loc[df["feature"] == "gene"]
    elif (df["feature"] == "exon").any():
        df = df.loc[df["feature"] == "exon"]
    attrs = df["attributes"].astype(str).map(lambda s: dict(_GTF_ATTR.findall(s)))
    for key in ("gene_name", "gene_id"):
        df[key] = attrs.map(lambda d, k=key: d.get(k))
    df["start"] = df["start"].astype(np.int64) - 1  # GTF: 1-based closed
    return df.drop(columns=["attributes", "source", "score", "frame"])


def _read_annotation(annotation: pd.DataFrame | PathLike) -> pd.DataFrame:
    if isinstance(annotation, pd.DataFrame):
        return annotation.copy()
    path = Path(annotation)
    if not path.exists():
        msg = f"Gene annotation '{path}' does not exist."
        raise FileNotFoundError(msg)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".gtf", ".gff", ".gff3")):
        return _read_gtf(path)
    if name.endswith(".bed"):
        df = pd.read_csv(path, sep="\t", header=None, comment="#", dtype={0: str})
        names = ["chrom", "start", "end", "name", "score", "strand"][: df.shape[1]]
        df = df.iloc[:, : len(names)]
        df.columns = names
        return df
    return pd.read_csv(path, sep="\t" if name.endswith((".tsv", ".txt")) else ",")


def gene_table(annotation: pd.DataFrame | PathLike, *, gene_key: str | None = None) -> pd.DataFrame:
    """One row per gene (chrom, start, end, strand), from gene rows or from exon/transcript rows.

    Rows sharing the gene name (``gene_key``) are merged into the span from their smallest start
    to their largest end, so an exon table (such as the HSMM chr18 annotation) gives gene bodies.
    Coordinates are 0-based half-open; a GTF/GFF is converted from 1-based.

    Parameters
    ----------
    annotation
        DataFrame with ``chrom`` (or ``chromosome``/``seqnames``), ``start``, ``end``, ``strand``
        and a gene-name column; or a path to a GTF/GFF, BED6 or CSV/TSV file.
    gene_key
        Column with gene names; default the first of ``gene_name``, ``symbol``, ``gene_symbol``,
        ``gene_id``, ``gene``, ``name`` that exists.
    """
    df = _read_annotation(annotation)
    df = df.rename(columns={"chromosome": "chrom", "seqnames": "chrom", "seqname": "chrom"})
    missing = [c for c in ("chrom", "start", "end") if c not in df]
    if missing:
        msg = f"The gene annotation lacks column(s) {missing} (it has {list(df.columns)})."
        raise KeyError(msg)
    if gene_key is None:
        gene_key = next((k for k in _GENE_KEYS if k in df and df[k].notna().any()), None)
        if gene_key is None:
            msg = f"No gene-name column in the annotation (looked for {list(_GENE_KEYS)}); pass gene_key=<column>."
            raise KeyError(msg)
    elif gene_key not in df:
        msg = f"gene_key '{gene_key}' is not a column of the annotation (columns: {list(df.columns)})."
        raise KeyError(msg)
    if "strand" not in df:
        df["strand"] = "+"
        logger.warning("The annotation has no strand column; every gene is taken as '+' (TSS at the start).")
    df = df.loc[df[gene_key].notna()].copy()
    df["start"] = pd.to_numeric(df["start"], errors="coerce")
    df["end"] = pd.to_numeric(df["end"], errors="coerce")
    if df[["start", "end"]].isna().any().any() or (df["end"] <= df["start"]).any():
        msg = "The gene annotation has rows with missing, non-numeric or inverted start/end; fix or drop them."
        raise ValueError(msg)
    df["chrom"] = df["chrom"].astype(str)
    df["strand"] = df["strand"].astype(str).where(df["strand"].isin(["+", "-"]), "+")
    # A name on several chromosomes (e.g. PAR genes): keep the chromosome with most rows.
    key = df[gene_key].astype(str)
    counts = df.assign(_g=key).groupby(["_g", "chrom"], observed=True).size().rename("n").reset_index()
    best = counts.sort_values(["_g", "n"], ascending=[True, False]).drop_duplicates("_g")
    df = df.assign(_g=key).merge(best[["_g", "chrom"]], on=["_g", "chrom"])
    genes = df.groupby("_g", sort=False).agg(
        chrom=("chrom", "first"),
        start=("start", "min"),
        end=("end", "max"),
        strand=("strand", lambda s: s.value_counts().index[0]),
    )
    genes["start"] = genes["start"].astype(np.int64)
    genes["end"] = genes["end"].astype(np.int64)
    genes.index = genes.index.astype(str)
    genes.index.name = None
    return genes


def gene_windows(
    genes: pd.DataFrame, *, upstream: int = 2_000, downstream: int = 0, gene_body: bool = True
) -> pd.DataFrame:
    """Add ``tss`` and the scoring window ``window_start``/``window_end`` to a gene table.

    With ``gene_body`` the window runs from ``upstream`` bp before the TSS to the gene end;
    otherwise it is the promoter, ``upstream`` bp before to ``downstream`` bp after the TSS.
    Strand-aware; windows are clipped at 0.
    """
    if upstream < 0 or downstream < 0:
        msg = f"upstream and downstream are distances and must be >= 0, got {upstream} and {downstream}."
        raise ValueError(msg)
    out = genes.copy()
    plus = out["strand"].to_numpy() != "-"
    start, end = out["start"].to_numpy(np.int64), out["end"].to_numpy(np.int64)
    tss = np.where(plus, start, end - 1)
    if gene_body:
        ws = np.where(plus, tss - upstream, start - downstream)
        we = np.where(plus, end + downstream, tss + 1 + upstream)
    else:
        ws = np.where(plus, tss - upstream, tss - downstream)
        we = np.where(plus, tss + 1 + downstream, tss + 1 + upstream)
    out["tss"] = tss
    out["window_start"] = np.maximum(ws, 0)
    out["window_end"] = we
    return out


def _overlap_pairs(
    w_start: np.ndarray, w_end: np.ndarray, f_start: np.ndarray, f_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(window, feature) index pairs of half-open intervals that overlap (one chromosome)."""
    order = np.argsort(f_start, kind="stable")
    fs, fe = f_start[order], f_end[order]
    max_len = int((fe - fs).max()) if fs.size else 0
    lo = np.searchsorted(fs, w_start - max_len, side="left")
    hi = np.searchsorted(fs, w_end, side="left")
    n = np.maximum(hi - lo, 0)
    total = int(n.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    win = np.repeat(np.arange(w_start.size), n)
    offsets = np.repeat(np.cumsum(n) - n, n)
    feat = np.repeat(lo, n) + (np.arange(total) - offsets)
    keep = fe[feat] > w_start[win]
    return win[keep], order[feat[keep]]


def _peak_coordinates(adata: AnnData) -> pd.DataFrame:
    if {"chrom", "start", "end"} <= set(adata.var.columns):
        return adata.var[["chrom", "start", "end"]]
    from chromtools.io import parse_peak_names

    try:
        return parse_peak_names(adata.var_names)
    except ValueError as err:
        msg = f"Peak coordinates are needed: set var chrom/start/end or use names like 'chr1:100-200' ({err})."
        raise ValueError(msg) from None


def _from_peaks(adata: AnnData, windows: pd.DataFrame, layer: str | None) -> tuple[sp.csr_matrix, np.ndarray]:
    peaks = _peak_coordinates(adata)
    X = adata.X if layer is None else adata.layers[layer]
    chrom = peaks["chrom"].astype(str).to_numpy()
    ps, pe = peaks["start"].to_numpy(np.int64), peaks["end"].to_numpy(np.int64)
    wchrom = windows["chrom"].astype(str).to_numpy()
    ws, we = windows["window_start"].to_numpy(np.int64), windows["window_end"].to_numpy(np.int64)
    row_parts: list[np.ndarray] = []
    col_parts: list[np.ndarray] = []
    for c in np.intersect1d(np.unique(wchrom), np.unique(chrom)):
        wi = np.flatnonzero(wchrom == c)
        pi = np.flatnonzero(chrom == c)
        w, p = _overlap_pairs(ws[wi], we[wi], ps[pi], pe[pi])
        row_parts.append(pi[p])
        col_parts.append(wi[w])
    rows = np.concatenate(row_parts) if row_parts else np.empty(0, np.int64)
    cols = np.concatenate(col_parts) if col_parts else np.empty(0, np.int64)
    M = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(adata.n_vars, len(windows)))
    X = sp.csr_matrix(X) if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    n_features = np.asarray(M.sum(0)).ravel().astype(np.int64)
    return sp.csr_matrix(X.astype(np.float32) @ M), n_features


def _from_fragments(
    adata: AnnData, windows: pd.DataFrame, path: Path, chunksize: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    from chromtools.io import iter_fragments

    cells = pd.Index(adata.obs_names.astype(str))
    wchrom = windows["chrom"].astype(str).to_numpy()
    by_chrom = {c: np.flatnonzero(wchrom == c) for c in np.unique(wchrom)}
    ws, we = windows["window_start"].to_numpy(np.int64), windows["window_end"].to_numpy(np.int64)
    out = sp.csr_matrix((adata.n_obs, len(windows)), dtype=np.float32)
    n_sites = np.zeros(len(windows), np.int64)
    seen = 0
    for chunk in iter_fragments(path, chunksize=chunksize):
        cell = cells.get_indexer(chunk["barcode"].astype(str))
        keep = cell >= 0
        if not keep.any():
            continue
        chunk = chunk.loc[keep]
        cell = cell[keep]
        seen += int(keep.sum())
        chrom = chunk["chrom"].astype(str).to_numpy()
        # Tn5 insertions of 10x fragments: the 0-based start and end - 1 (the shift is already applied).
        site = np.concatenate([chunk["start"].to_numpy(np.int64), chunk["end"].to_numpy(np.int64) - 1])
        site_cell = np.concatenate([cell, cell])
        site_chrom = np.concatenate([chrom, chrom])
        rows, cols = [], []
        for c in np.intersect1d(np.unique(site_chrom), list(by_chrom)):
            si = np.flatnonzero(site_chrom == c)
            wi = by_chrom[c]
            w, s = _overlap_pairs(ws[wi], we[wi], site[si], site[si] + 1)
            rows.append(site_cell[si][s])
            cols.append(wi[w])
        if rows:
            r, col = np.concatenate(rows), np.concatenate(cols)
            n_sites += np.bincount(col, minlength=len(windows))
            out = out + sp.csr_matrix(
                (np.ones(r.size, np.float32), (r, col)), shape=(adata.n_obs, len(windows)), dtype=np.float32
            )
    if seen == 0:
        msg = (
            f"No fragment in '{path}' belongs to a cell of this AnnData (barcodes such as {list(cells[:3])}); "
            "check that obs_names are the fragment barcodes."
        )
        raise ValueError(msg)
    return out.tocsr(), n_sites


@doc_params
def gene_activity(
    data: AnnData | MuData,
    annotation: pd.DataFrame | PathLike,
    *,
    mod: str | None = None,
    layer: str | None = None,
    fragments: PathLike | bool = False,
    upstream: int = 2_000,
    downstream: int = 0,
    gene_body: bool = True,
    max_width: int | None = 500_000,
    gene_key: str | None = None,
    chunksize: int = 2_000_000,
) -> AnnData:
    """Cells × genes gene-activity scores: accessibility over each gene's promoter and body.

    The score of a gene in a cell is the sum of the cell's counts in the peaks that overlap the
    gene's window (peak mode), or the number of the cell's Tn5 insertions in the window
    (fragment mode). The window spans ``upstream`` bp before the TSS through the gene body to
    the gene end (strand-aware), as Signac's ``GeneActivity`` does. Feed the result,
    normalised, to :func:`chromtools.tl.vrnn_cluster`.

    Parameters
    ----------
    {data}
    annotation
        Genes or exons: a DataFrame (chrom, start, end, strand and a name column, 0-based
        half-open) or a GTF/GFF/BED/CSV path. Exon or transcript rows of one gene are merged
        into its gene body (:func:`gene_table`).
    {mod}
    layer
        Layer of peak counts; default ``X``. Peak coordinates come from ``var``
        chrom/start/end or from names like ``'chr1:100-200'``.
    fragments
        Count insertions from a fragments file instead of peaks: a path, or ``True`` for the
        file recorded in ``uns['files']['fragments']``. Barcodes must match ``obs_names``.
    upstream
        Promoter length before the TSS (bp).
    downstream
        With ``gene_body=True``: bp added after the gene end; otherwise the promoter length
        after the TSS.
    gene_body
        Score promoter + gene body (default), or the promoter only.
    max_width
        Leave out genes whose window is longer than this (bp); ``None`` keeps all.
    gene_key
        Column of the annotation with gene names (see :func:`gene_table`).
    chunksize
        Fragments read per chunk.

    Returns
    -------
    A new AnnData (cells × genes) with the scores in ``X`` and ``layers['counts']`` (float32
    sparse), ``obs`` copied from the input, ``var`` with chrom, start, end, strand, tss,
    window_start, window_end and ``n_peaks`` (peaks in the window) or ``n_insertions``, and
    ``uns['gene_activity']['params']`` with the parameters. Genes without any peak or insertion are kept
    (all zero).
    """
    adata = get_modality(data, mod)
    if layer is not None and layer not in adata.layers:
        msg = f"Layer '{layer}' does not exist (layers: {list(adata.layers)}); pass layer=None to use X."
        raise KeyError(msg)
    windows = gene_windows(
        gene_table(annotation, gene_key=gene_key), upstream=upstream, downstream=downstream, gene_body=gene_body
    )
    if max_width is not None:
        wide = (windows["window_end"] - windows["window_start"]).to_numpy() > max_width
        if wide.any():
            logger.info("Left out %d genes with windows longer than %d bp.", int(wide.sum()), max_width)
            windows = windows.loc[~wide]
    if windows.empty:
        msg = "No gene left to score; check the annotation and max_width."
        raise ValueError(msg)
    if fragments is not False and fragments is not None:
        from chromtools.io import fragments_path

        path = fragments_path(data, mod=mod) if fragments is True else Path(fragments)
        X, n = _from_fragments(adata, windows, path, chunksize)
        count_col = "n_insertions"
        source = str(path)
    else:
        X, n = _from_peaks(adata, windows, layer)
        count_col = "n_peaks"
        source = "peaks" if layer is None else f"peaks (layer '{layer}')"
    var = windows.copy()
    var[count_col] = n
    var["chrom"] = var["chrom"].astype("category")
    out = AnnData(X=X, obs=adata.obs.copy(), var=var)
    out.layers["counts"] = X.copy()
    out.uns["gene_activity"] = {
        "params": {
            "source": source,
            "upstream": int(upstream),
            "downstream": int(downstream),
            "gene_body": bool(gene_body),
            "max_width": int(max_width) if max_width is not None else -1,
        }
    }
    covered = int((n > 0).sum())
    logger.info("Gene activity of %d genes in %d cells (%d genes with signal).", out.n_vars, out.n_obs, covered)
    if covered == 0:
        logger.warning(
            "No peak or insertion overlaps any gene window: check that the annotation and the peaks use the same "
            "genome build and chromosome names (e.g. 'chr1' vs '1')."
        )
    return out
