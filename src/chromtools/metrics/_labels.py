"""Scores of label transfer: accuracy, macro-F1, per-class report, unknown-cell detection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike


def _as_str(values, name: str) -> np.ndarray:
    s = pd.Series(np.asarray(values, dtype=object))
    if s.isna().any():
        msg = f"{name} has {int(s.isna().sum())} missing values (NaN); drop those cells or label them."
        raise ValueError(msg)
    return s.astype(str).to_numpy()


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_str(y_true, "y_true"), _as_str(y_pred, "y_pred")
    if t.shape != p.shape:
        msg = f"y_true and y_pred differ in length ({t.size} vs {p.size})."
        raise ValueError(msg)
    if t.size == 0:
        msg = "No cells to score."
        raise ValueError(msg)
    return t, p


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of cells whose predicted label equals the true label.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels (compared as strings; a prediction of ``'Unknown'`` counts as
        wrong unless the true label is ``'Unknown'``).
    """
    from sklearn.metrics import accuracy_score

    t, p = _pair(y_true, y_pred)
    return float(accuracy_score(t, p))


def classification_report(y_true: ArrayLike, y_pred: ArrayLike) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, with each class's most frequent confusion.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels.

    Returns
    -------
    One row per true class (sorted by support): ``precision``, ``recall``, ``f1``, ``support``,
    ``n_predicted``, ``most_confused_with`` and its share ``confused_fraction``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    t, p = _pair(y_true, y_pred)
    classes = pd.Index(np.unique(t))
    precision, recall, f1, support = precision_recall_fscore_support(t, p, labels=classes, zero_division=0)
    rows = []
    for i, c in enumerate(classes):
        # sklearn has no "most confused with"; that column is ours
        is_t, is_p = t == c, p == c
        wrong = pd.Series(p[is_t & ~is_p]).value_counts()
        confused = str(wrong.index[0]) if len(wrong) else ""
        frac = float(wrong.iloc[0] / support[i]) if len(wrong) else 0.0
        rows.append((c, precision[i], recall[i], f1[i], int(support[i]), int(is_p.sum()), confused, frac))
    df = pd.DataFrame(
        rows,
        columns=[
            "label",
            "precision",
            "recall",
            "f1",
            "support",
            "n_predicted",
            "most_confused_with",
            "confused_fraction",
        ],
    ).set_index("label")
    return df.sort_values("support", ascending=False)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unweighted mean over the true classes of the per-class F1 score.

    Classes that occur only among the predictions (e.g. ``'Unknown'``) are not averaged
    over; predicting them still lowers the recall of the true classes.
    """
    from sklearn.metrics import f1_score

    t, p = _pair(y_true, y_pred)
    return float(f1_score(t, p, labels=np.unique(t), average="macro", zero_division=0))


def unknown_detection_auroc(is_unknown: ArrayLike, uncertainty: ArrayLike) -> float:
    """Area under the ROC curve of ``uncertainty`` for telling unknown cells from known ones.

    Parameters
    ----------
    is_unknown
        ``True`` for cells of a type absent from the reference.
    uncertainty
        Per-cell uncertainty (higher = more likely unknown), e.g. written by
        :func:`chromtools.tl.transfer_labels`.

    Returns
    -------
    AUROC in [0, 1] (0.5: no better than chance); ties count half (Mann-Whitney).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_unknown, dtype=bool)
    u = np.asarray(uncertainty, dtype=float)
    if y.shape != u.shape:
        msg = f"is_unknown and uncertainty differ in length ({y.size} vs {u.size})."
        raise ValueError(msg)
    if not np.all(np.isfinite(u)):
        msg = "uncertainty contains NaN or infinite values."
        raise ValueError(msg)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        msg = "AUROC needs both unknown and known cells; is_unknown is all True or all False."
        raise ValueError(msg)
    return float(roc_auc_score(y, u))


def label_transfer_scores(
    adata: AnnData,
    true_key: str,
    pred_key: str,
    *,
    reference_labels: Sequence[str] | None = None,
    uncertainty_key: str | None = None,
    unknown_label: str = "Unknown",
) -> dict[str, float]:
    """Accuracy, macro-F1 and unknown-detection AUROC of a label transfer, from ``adata.obs``.

    Parameters
    ----------
    adata
        Query cells with true and predicted labels in ``obs``.
    true_key, pred_key
        ``obs`` columns of the true and the predicted labels.
    reference_labels
        Labels present in the reference. Cells whose true label is not among them are
        "unknown": they are left out of accuracy and F1 and are the positives of the AUROC.
        Default: every true label is known.
    uncertainty_key
        ``obs`` column scoring how likely a cell is unknown (default ``pred_key + '_novelty'``
        if present — written by :func:`chromtools.tl.transfer_labels` — else
        ``pred_key + '_uncertainty'``).
    unknown_label
        The label given to cells called unknown.

    Returns
    -------
    ``accuracy`` and ``macro_f1`` over known cells, ``fraction_unknown_called`` (known cells
    called ``unknown_label``), and — when unknown cells are present — ``unknown_auroc`` and
    ``unknown_recall`` (unknown cells called ``unknown_label``).
    """
    for key in (true_key, pred_key):
        if key not in adata.obs:
            msg = f"obs has no column '{key}'."
            raise KeyError(msg)
    t = _as_str(adata.obs[true_key], f"obs['{true_key}']")
    p = _as_str(adata.obs[pred_key], f"obs['{pred_key}']")
    known = np.ones(t.size, bool) if reference_labels is None else np.isin(t, np.asarray(reference_labels, str))
    out: dict[str, float] = {"n_cells": int(t.size), "n_unknown_cells": int((~known).sum())}
    if known.any():
        out["accuracy"] = accuracy(t[known], p[known])
        out["macro_f1"] = macro_f1(t[known], p[known])
        out["fraction_unknown_called"] = float(np.mean(p[known] == unknown_label))
    if uncertainty_key is None:
        for suffix in ("_novelty", "_uncertainty"):
            if f"{pred_key}{suffix}" in adata.obs:
                uncertainty_key = f"{pred_key}{suffix}"
                break
    if (~known).any():
        out["unknown_recall"] = float(np.mean(p[~known] == unknown_label))
        if uncertainty_key is not None and known.any():
            out["unknown_auroc"] = unknown_detection_auroc(~known, adata.obs[uncertainty_key].to_numpy())
    return out
