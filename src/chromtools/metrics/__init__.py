"""Metrics for tracks, peaks, label transfer and integration."""

from ._labels import (
    accuracy,
    classification_report,
    label_transfer_scores,
    macro_f1,
    unknown_detection_auroc,
)
from ._scib import scib_scores
from ._tracks import (
    evaluate_denoising,
    match_peaks,
    peak_classification,
    peak_mask,
    peak_overlap,
    track_correlation,
)

__all__ = [
    "accuracy",
    "classification_report",
    "evaluate_denoising",
    "label_transfer_scores",
    "macro_f1",
    "match_peaks",
    "peak_classification",
    "peak_mask",
    "peak_overlap",
    "scib_scores",
    "track_correlation",
    "unknown_detection_auroc",
]
