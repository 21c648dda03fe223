"""Metrics for denoised tracks and peak calls: correlation, per-base classification, peak overlap."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chromtools._utils import PathLike
from chromtools.io import BigWigReader, read_peaks


def _one_class_nan(what: str) -> float:
    warnings.warn(f"{what} is undefined when all labels are of one class; returning NaN.", RuntimeWarning, stacklevel=3)
    return float("nan")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    if a.size < 2:
        return float("nan")
    return _pearson(rankdata(a), rankdata(b))


def track_correlation(pred: np.ndarray, target: np.ndarray, in_peaks: np.ndarray | None = None) -> dict[str, float]:
    """Pearson, Spearman and MSE between two tracks, overall and inside/outside peaks.

    Parameters
    ----------
    pred, target
        Per-base values (same length).
    in_peaks
        Boolean per-base mask of (true) peak bases; adds ``*_in_peaks`` and ``*_outside_peaks``.

    Returns
    -------
    ``pearson``, ``spearman``, ``mse`` (and the in/outside-peak versions).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        msg = f"pred and target must have the same shape, got {pred.shape} and {target.shape}."
        raise ValueError(msg)
    out = {
        "pearson": _pearson(pred, target),
        "spearman": _spearman(pred, target),
        "mse": float(np.mean((pred - target) ** 2)),
    }
    if in_peaks is not None:
        in_peaks = np.asarray(in_peaks, dtype=bool)
        for name, sel in (("in_peaks", in_peaks), ("outside_peaks", ~in_peaks)):
            p, t = pred[sel], target[sel]
            out[f"pearson_{name}"] = _pearson(p, t)
            out[f"spearman_{name}"] = _spearman(p, t)
            out[f"mse_{name}"] = float(np.mean((p - t) ** 2)) if p.size else float("nan")
    return out


def peak_classification(scores: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Per-base classification quality of peak scores against 0/1 labels.

    Returns AUROC, AUPRC (average precision), and precision, recall and F1 of ``scores >=
    threshold``. With labels of one class only, AUROC and AUPRC are NaN (with a warning), not an
    error.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        msg = f"scores and labels must have the same length, got {scores.size} and {labels.size}."
        raise ValueError(msg)
    one_class = labels.all() or not labels.any()
    out = {
        "auroc": _one_class_nan("AUROC") if one_class else float(roc_auc_score(labels, scores)),
        "auprc": _one_class_nan("AUPRC") if one_class else float(average_precision_score(labels, scores)),
    }
    called = scores >= threshold
    tp = float(np.sum(called & labels))
    precision = tp / called.sum() if called.any() else float("nan")
    recall = tp / labels.sum() if labels.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    out.update({"precision": precision, "recall": recall, "f1": f1, "threshold": threshold})
    return out


def _overlap_pairs(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of intervals ``a.iloc[i]`` and ``b.iloc[j]`` that overlap by >= 1 bp."""
    rows, cols = [], []
    a_chrom, b_chrom = a["chrom"].astype(str).to_numpy(), b["chrom"].astype(str).to_numpy()
    for chrom in np.intersect1d(a_chrom, b_chrom):
        ai, bi = np.flatnonzero(a_chrom == chrom), np.flatnonzero(b_chrom == chrom)
        bi = bi[np.argsort(b["start"].to_numpy()[bi], kind="stable")]
        bs, be = b["start"].to_numpy()[bi], b["end"].to_numpy()[bi]
        longest = int((be - bs).max())
        for i in ai:
            s, e = a["start"].iat[i], a["end"].iat[i]
            # candidates start before a's end and no earlier than a's start minus the longest b
            lo = np.searchsorted(bs, s - longest, side="left")
            hi = np.searchsorted(bs, e, side="left")
            hit = bi[lo:hi][be[lo:hi] > s]
            rows.extend([i] * hit.size)
            cols.extend(hit.tolist())
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64)


def match_peaks(predicted: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Match predicted peaks to true peaks one to one, as many as possible.

    Two peaks can match when they overlap by at least 1 bp; the matching is a maximum bipartite
    matching of that overlap graph (:func:`scipy.sparse.csgraph.maximum_bipartite_matching`).

    Parameters
    ----------
    predicted, truth
        Peak tables with chrom/start/end columns.

    Returns
    -------
    For each predicted peak (in row order), the row position of its matched true peak, or -1.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    if not len(predicted) or not len(truth):
        return np.full(len(predicted), -1, np.int64)
    rows, cols = _overlap_pairs(predicted.reset_index(drop=True), truth.reset_index(drop=True))
    if not rows.size:
        return np.full(len(predicted), -1, np.int64)
    graph = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(predicted), len(truth)))
    return np.asarray(maximum_bipartite_matching(graph, perm_type="column"), np.int64)


def peak_overlap(
    predicted: pd.DataFrame | PathLike,
    truth: pd.DataFrame | PathLike,
    *,
    chroms: Sequence[str] | None = None,
    one_to_one: bool = True,
) -> dict[str, float]:
    """Peak-level precision, recall and F1 of predicted peaks against true peaks.

    Two peaks can match when they overlap by at least 1 bp. With ``one_to_one=True`` (default)
    each peak is used at most once: the matches are a maximum bipartite matching of the overlap
    graph (:func:`scipy.sparse.csgraph.maximum_bipartite_matching`), so one wide predicted peak that
    spans three true peaks finds one of them, not three, and three fragments of one true peak count
    once. ``one_to_one=False`` counts any overlap, both ways (the looser, older definition).

    Parameters
    ----------
    predicted, truth
        Peak tables (chrom/start/end) or BED/narrowPeak files.
    chroms
        Only peaks on these chromosomes.
    one_to_one
        Match peaks one to one (see above).

    Returns
    -------
    ``precision`` (share of predicted peaks matched to a true peak), ``recall`` (share of true
    peaks matched), ``f1``, ``n_matched`` and the peak counts.
    """
    pred = predicted if isinstance(predicted, pd.DataFrame) else read_peaks(predicted)
    true = truth if isinstance(truth, pd.DataFrame) else read_peaks(truth)
    if chroms is not None:
        pred = pred.loc[pred["chrom"].isin(chroms)]
        true = true.loc[true["chrom"].isin(chroms)]
    pred = pred.reset_index(drop=True)
    true = true.reset_index(drop=True)
    if one_to_one:
        n_pred_hit = n_true_hit = int(np.sum(match_peaks(pred, true) >= 0))
    else:
        rows, cols = _overlap_pairs(pred, true) if len(pred) and len(true) else (np.zeros(0, int), np.zeros(0, int))
        n_pred_hit, n_true_hit = np.unique(rows).size, np.unique(cols).size
    precision = n_pred_hit / len(pred) if len(pred) else float("nan")
    recall = n_true_hit / len(true) if len(true) else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n_matched": int(n_pred_hit if one_to_one else min(n_pred_hit, n_true_hit)),
        "n_predicted": len(pred),
        "n_true": len(true),
    }


def peak_mask(peaks: pd.DataFrame | PathLike, chrom: str, size: int, start: int = 0) -> np.ndarray:
    """Boolean per-base mask of ``peaks`` on ``chrom:[start, start + size)``."""
    df = peaks if isinstance(peaks, pd.DataFrame) else read_peaks(peaks)
    mask = np.zeros(size, bool)
    sel = df.loc[(df["chrom"] == chrom) & (df["end"] > start) & (df["start"] < start + size)]
    for s, e in zip(sel["start"].to_numpy(), sel["end"].to_numpy(), strict=True):
        mask[max(s - start, 0) : min(e - start, size)] = True
    return mask


def evaluate_denoising(
    clean: PathLike,
    true_peaks: PathLike | pd.DataFrame,
    *,
    track: PathLike | None = None,
    peakprob: PathLike | None = None,
    peaks: PathLike | pd.DataFrame | None = None,
    chroms: Sequence[str],
    threshold: float = 0.5,
    scale_track: float = 1.0,
) -> dict[str, float]:
    """Score a denoising run (or a baseline) on chosen chromosomes against the clean data.

    Parameters
    ----------
    clean
        The high-coverage bigWig.
    true_peaks
        The clean (label) peaks.
    track
        Predicted (or noisy, for the baseline) coverage bigWig: correlation metrics.
    peakprob
        Per-base peak scores bigWig: AUROC, AUPRC and per-base precision/recall/F1 at ``threshold``.
    peaks
        Called peaks: peak-level precision/recall/F1.
    chroms
        Chromosomes to evaluate on (e.g. the held-out ones).
    threshold
        Score threshold for per-base calls.
    scale_track
        Multiply ``track`` by this before computing MSE (e.g. the depth ratio for a noisy baseline).

    Returns
    -------
    Flat dictionary of metrics (``pearson``, ``spearman_outside_peaks``, ``auprc``, ``peak_f1`` ...).
    """
    labels = true_peaks if isinstance(true_peaks, pd.DataFrame) else read_peaks(true_peaks)
    out: dict[str, float] = {}
    with BigWigReader(clean) as bw:
        sizes = {c: bw.chrom_sizes[c] for c in chroms}
        truth = {c: bw.values(c) for c in chroms}
    masks = {c: peak_mask(labels, c, sizes[c]) for c in chroms}
    y = np.concatenate([truth[c] for c in chroms])
    m = np.concatenate([masks[c] for c in chroms])
    if track is not None:
        with BigWigReader(track) as bw:
            x = np.concatenate([bw.values(c, 0, sizes[c]) for c in chroms]) * scale_track
        out.update(track_correlation(x, y, m))
    if peakprob is not None:
        with BigWigReader(peakprob) as bw:
            s = np.concatenate([bw.values(c, 0, sizes[c]) for c in chroms])
        out.update(
            {
                f"base_{k}" if k in ("precision", "recall", "f1") else k: v
                for k, v in peak_classification(s, m, threshold=threshold).items()
            }
        )
    if peaks is not None:
        out.update({f"peak_{k}": v for k, v in peak_overlap(peaks, labels, chroms=chroms).items()})
    return out
