"""Metrics for tracks, peaks, label transfer and integration."""

__all__: list[str] = []
