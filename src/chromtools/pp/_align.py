"""Align a query's features to a reference's: by name, by peak coordinates, or by peak overlap."""

from __future__ import annotations

import logging
import warnings
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

Matching = Literal["auto", "names", "overlap"]
MATCHINGS = ("auto", "names", "overlap")
OverlapRule = Literal["sum", "largest"]
OVERLAP_RULES = ("sum", "largest")

#: Query features must cover at least this fraction of the reference's features, else alignment is refused.
MIN_FEATURE_OVERLAP = 0.5
#: Below this fraction of shared features a warning is given (and ``matching='auto'`` tries peak overlap).
WARN_FEATURE_OVERLAP = 0.8

RECOUNT_HINT = (
    "Re-counting the query's fragments in the reference's peaks is better: "
    "chromtools.pp.peak_matrix(query_or_fragments, reference_adata)."
)


def _coordinates(var: pd.DataFrame | pd.Index) -> pd.DataFrame | None:
    """chrom/start/end of features: ``var`` columns when present, else parsed from the names; None if neither."""
    from chromtools.io import parse_peak_names

    if isinstance(var, pd.DataFrame) and {"chrom", "start", "end"} <= set(var.columns):
        return pd.DataFrame(
            {
                "chrom": var["chrom"].astype(str).to_numpy(),
                "start": var["start"].astype(np.int64).to_numpy(),
                "end": var["end"].astype(np.int64).to_numpy(),
            },
            index=var.index.astype(str),
        )
    names = var.index if isinstance(var, pd.DataFrame) else pd.Index(var)
    try:
        return parse_peak_names(names)
    except ValueError:
        return None


def _exact_index(query_names: pd.Index, reference_names: pd.Index) -> tuple[np.ndarray, float, str]:
    """Position in the query of every reference feature (-1: missing) by name, else by identical coordinates."""
    idx = query_names.get_indexer(reference_names)
    how = "names"
    frac = float((idx >= 0).mean()) if idx.size else 0.0
    if frac < WARN_FEATURE_OVERLAP:
        cq, cr = _coordinates(query_names), _coordinates(reference_names)
        if cq is not None and cr is not None:
            kq = pd.Index(cq["chrom"].astype(str) + ":" + cq["start"].astype(str) + "-" + cq["end"].astype(str))
            kr = pd.Index(cr["chrom"].astype(str) + ":" + cr["start"].astype(str) + "-" + cr["end"].astype(str))
            if not kq.has_duplicates:
                idx_c = kq.get_indexer(kr)
                frac_c = float((idx_c >= 0).mean())
                if frac_c > frac:
                    idx, frac, how = idx_c, frac_c, "peak coordinates"
    return idx, frac, how


def _index_matrix(idx: np.ndarray, n_query: int) -> sp.csr_matrix:
    present = np.flatnonzero(idx >= 0)
    return sp.csr_matrix(
        (np.ones(present.size, np.float32), (idx[present], present)), shape=(n_query, idx.size), dtype=np.float32
    )


def _overlap_matrix(
    q: pd.DataFrame, r: pd.DataFrame, rule: OverlapRule, min_overlap_bp: int
) -> tuple[sp.csr_matrix, dict]:
    from ._peak_matrix import peak_overlaps

    pairs = peak_overlaps(q, r, min_overlap_bp=min_overlap_bp)
    if rule == "largest" and len(pairs):
        pairs = pairs.sort_values(["reference", "overlap_bp"], ascending=[True, False], kind="stable")
        pairs = pairs.drop_duplicates("reference", keep="first")
    qi, ri = pairs["query"].to_numpy(), pairs["reference"].to_numpy()
    S = sp.csr_matrix((np.ones(qi.size, np.float32), (qi, ri)), shape=(len(q), len(r)), dtype=np.float32)
    per_ref = np.bincount(ri, minlength=len(r))
    per_q = np.bincount(qi, minlength=len(q))
    covered = np.bincount(ri, weights=pairs["overlap_bp"].to_numpy(), minlength=len(r))
    frac_bp = np.minimum(covered[per_ref > 0] / (r["end"] - r["start"]).to_numpy()[per_ref > 0], 1.0)
    info = {
        "overlap_rule": rule,
        "min_overlap_bp": int(min_overlap_bp),
        "n_pairs": int(qi.size),
        "n_reference_with_several_query_peaks": int((per_ref > 1).sum()),
        "n_query_peaks_used": int((per_q > 0).sum()),
        "n_query_peaks_in_several_reference_peaks": int((per_q > 1).sum()),
        "median_reference_bp_covered": float(np.median(frac_bp)) if frac_bp.size else 0.0,
    }
    return S, info


def feature_map(
    query_var: pd.DataFrame | pd.Index,
    reference_var: pd.DataFrame | pd.Index,
    *,
    matching: Matching = "auto",
    overlap_rule: OverlapRule = "sum",
    min_overlap_bp: int = 1,
    min_overlap: float = MIN_FEATURE_OVERLAP,
    what: str = "query",
) -> tuple[sp.csr_matrix, dict]:
    """Matrix ``S`` (query features × reference features) such that ``X_query @ S`` is in the reference's features.

    Matching (``matching``):

    ``'names'``
        Identical feature names; when fewer than 80 % match and both sides are peak names in
        different styles (``chr1:100-200`` / ``chr1-100-200`` / ``chr1_100_200``), identical
        coordinates.
    ``'overlap'``
        Peak overlap (at least ``min_overlap_bp`` shared bases), for a query with its own peaks.
        The one-to-many rule (``overlap_rule``): with ``'sum'`` a reference peak gets the sum of
        the counts of every query peak overlapping it, and a query peak overlapping several
        reference peaks is counted in each of them; with ``'largest'`` a reference peak takes the
        counts of the single query peak that overlaps it most (ties: the first), and a query
        peak may still serve several reference peaks.
    ``'auto'``
        ``'names'``; if fewer than 80 % of the reference's features are found that way and both
        sides have coordinates (``var`` chrom/start/end or parseable names), ``'overlap'`` when it
        matches more features.

    Reference features without a match are zero-filled. Raises when no feature, or fewer than
    ``min_overlap`` of the reference's features, are matched; warns below 80 %, and whenever the
    overlap rule is used (re-counting fragments in the reference's peaks with
    :func:`chromtools.pp.peak_matrix` is better).

    Returns
    -------
    ``S`` (sparse, 0/1) and a dict: ``n_features``, ``n_shared`` (reference features matched),
    ``overlap`` (their fraction), ``matched_by`` (``'names'``, ``'peak coordinates'`` or
    ``'peak overlap'``) and, for overlap matching, the rule and its one-to-many counts.
    """
    if matching not in MATCHINGS:
        msg = f"matching must be one of {MATCHINGS}, got {matching!r}."
        raise ValueError(msg)
    if overlap_rule not in OVERLAP_RULES:
        msg = f"overlap_rule must be one of {OVERLAP_RULES}, got {overlap_rule!r}."
        raise ValueError(msg)
    q_names = (query_var.index if isinstance(query_var, pd.DataFrame) else pd.Index(query_var)).astype(str)
    r_names = (reference_var.index if isinstance(reference_var, pd.DataFrame) else pd.Index(reference_var)).astype(str)
    if q_names.has_duplicates:
        dup = q_names[q_names.duplicated()][:3].tolist()
        msg = f"The {what} has duplicated feature names (e.g. {dup}); make var_names unique first."
        raise ValueError(msg)
    S, extra = None, {}
    frac, how = 0.0, "names"
    if matching in ("auto", "names"):
        idx, frac, how = _exact_index(q_names, r_names)
        S = _index_matrix(idx, q_names.size)
    if matching == "overlap" or (matching == "auto" and frac < WARN_FEATURE_OVERLAP):
        cq = _coordinates(query_var if isinstance(query_var, pd.DataFrame) else q_names)
        cr = _coordinates(reference_var if isinstance(reference_var, pd.DataFrame) else r_names)
        if cq is None or cr is None:
            if matching == "overlap":
                side = "query" if cq is None else "reference"
                msg = (
                    f"matching='overlap' needs peak coordinates, but the {side} has neither var chrom/start/end "
                    "columns nor peak names like 'chr1:100-200'; add them (chromtools.io.add_peak_coordinates)."
                )
                raise ValueError(msg)
        else:
            S_o, extra_o = _overlap_matrix(cq, cr, overlap_rule, min_overlap_bp)
            frac_o = float((np.asarray(S_o.sum(axis=0)).ravel() > 0).mean())
            if matching == "overlap" or frac_o > frac:
                S, frac, how, extra = S_o, frac_o, "peak overlap", extra_o
    n_shared = int(round(frac * r_names.size))
    if n_shared == 0:
        msg = (
            f"The {what} shares no features with the reference ({r_names.size} features, e.g. "
            f"{r_names[:2].tolist()}; {what}: {q_names[:2].tolist()}), by name, coordinates or peak overlap. "
            "Count the query's fragments in the reference's peaks (chromtools.pp.peak_matrix), or use the same "
            "genome build and chromosome naming."
        )
        raise ValueError(msg)
    if frac < min_overlap:
        msg = (
            f"Only {frac:.1%} of the reference's {r_names.size} features are in the {what} (matched by {how}); "
            f"at least {min_overlap:.0%} are needed. Count the query in the reference's peaks "
            "(chromtools.pp.peak_matrix), or lower min_overlap= if you accept a poorer mapping."
        )
        raise ValueError(msg)
    if how == "peak overlap":
        warnings.warn(
            f"The {what}'s peaks differ from the reference's: {frac:.1%} of the reference's peaks are filled from "
            f"overlapping {what} peaks (rule '{overlap_rule}'), the rest with zeros. {RECOUNT_HINT}",
            UserWarning,
            stacklevel=3,
        )
    elif frac < WARN_FEATURE_OVERLAP:
        warnings.warn(
            f"Only {frac:.1%} of the reference's features are in the {what}; the {r_names.size - n_shared} "
            f"missing features are filled with zeros, which degrades the mapping. {RECOUNT_HINT}",
            UserWarning,
            stacklevel=3,
        )
    info = {
        "n_features": int(r_names.size),
        "n_shared": n_shared,
        "overlap": float(frac),
        "matched_by": how,
        **extra,
    }
    return S, info


def apply_feature_map(X, S: sp.csr_matrix) -> sp.csr_matrix:
    """``X @ S`` as a sorted CSR matrix in the data type of ``X`` (counts stay integers)."""
    X = sp.csr_matrix(X)
    out = (X @ S.astype(X.dtype)).tocsr()
    out.sort_indices()
    return out


@doc_params
def align_features(
    data: AnnData | MuData,
    reference,
    *,
    layer: str | None = None,
    matching: Matching = "auto",
    overlap_rule: OverlapRule = "sum",
    min_overlap_bp: int = 1,
    min_overlap: float = MIN_FEATURE_OVERLAP,
    mod: str | None = None,
) -> AnnData:
    """A copy of the query's counts in the reference's features (see :func:`feature_map` for the rules).

    Parameters
    ----------
    {data}
    reference
        The reference's features: an AnnData/MuData (its ``var``), a ``var`` DataFrame, or names.
    layer
        Query layer of counts (default ``X``).
    matching, overlap_rule, min_overlap_bp, min_overlap
        See :func:`feature_map`.
    {mod}

    Returns
    -------
    A new AnnData (query cells × reference features) with the query's ``obs``, the reference
    features as ``var`` and ``uns['features']`` holding the alignment report.
    """
    from anndata import AnnData
    from mudata import MuData

    adata = get_modality(data, mod)
    if isinstance(reference, AnnData | MuData):
        ref_var = get_modality(reference, mod).var
    elif isinstance(reference, pd.DataFrame):
        ref_var = reference
    else:
        ref_var = pd.DataFrame(index=pd.Index(reference).astype(str))
    S, info = feature_map(
        adata.var,
        ref_var,
        matching=matching,
        overlap_rule=overlap_rule,
        min_overlap_bp=min_overlap_bp,
        min_overlap=min_overlap,
    )
    X = adata.X if layer is None else adata.layers[layer]
    out = AnnData(
        X=apply_feature_map(X, S), obs=adata.obs.copy(), var=pd.DataFrame(index=ref_var.index.astype(str).copy())
    )
    for col in ("chrom", "start", "end"):
        if col in ref_var:
            out.var[col] = ref_var[col].to_numpy()
    out.uns["features"] = info
    return out
