"""Inference windows along a chromosome."""

from __future__ import annotations

import numpy as np


def tile(size: int, window: int) -> np.ndarray:
    """Window starts covering ``[0, size)``; the last window may overhang the end (it is not dropped)."""
    return np.arange(0, size, window, dtype=np.int64)
