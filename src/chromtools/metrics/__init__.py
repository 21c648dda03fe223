"""Metrics for tracks, peaks, label transfer and integration."""

from ._labels import (
    accuracy,
    classification_report,
    label_transfer_scores,
    macro_f1,
    unknown_detection_auroc,
)
from ._scib import scib_scores

__all__ = [
    "accuracy",
    "classification_report",
    "label_transfer_scores",
    "macro_f1",
    "scib_scores",
    "unknown_detection_auroc",
]
