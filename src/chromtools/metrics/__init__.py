"""Metrics for tracks, peaks, label transfer and integration."""

from ._tracks import evaluate_denoising, peak_classification, peak_mask, peak_overlap, track_correlation

__all__ = ["evaluate_denoising", "peak_classification", "peak_mask", "peak_overlap", "track_correlation"]
