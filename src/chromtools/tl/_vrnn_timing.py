"""Timing of genes and modules: onset, peak, response class, bootstrap intervals, and modules numbered by peak time."""

from __future__ import annotations

import numpy as np
import pandas as pd

RESPONSE_CLASSES = ["fast", "delayed", "transient", "down", "flat"]
#: Bootstrap resamples of a module's genes for the interval of its consensus timing.
TIMING_BOOTSTRAP = 200


def _order_clusters(labels: np.ndarray, curves: np.ndarray, times: np.ndarray, k: int) -> np.ndarray:
    """New number of each cluster ``0..k-1``, by the time of the peak of its mean trajectory (earliest first).

    Empty clusters go last.
    """
    ks = np.unique(labels)
    key = []
    for c in ks:
        mean = curves[labels == c].mean(0)
        peak = int(np.argmax(np.abs(mean - mean[0])))
        key.append((times[peak], -np.sign(mean[peak] - mean[0]), float(mean[0])))
    order = sorted(range(ks.size), key=lambda i: key[i])
    mapping = np.empty(k, dtype=np.int64)
    for new, i in enumerate(order):
        mapping[ks[i]] = new
    empty = [c for c in range(k) if c not in set(ks.tolist())]
    for j, c in enumerate(empty):
        mapping[c] = ks.size + j
    return mapping


def module_timing(
    curves: np.ndarray,
    labels: np.ndarray,
    times: np.ndarray,
    k: int,
    *,
    n_boot: int = TIMING_BOOTSTRAP,
    level: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """Consensus onset and peak time of every module, with a bootstrap interval over its genes.

    The consensus is the onset and peak (as in :func:`response_timing`) of the module's mean
    standardised profile; the interval is the central ``level`` range of the same quantities
    over ``n_boot`` resamples (with replacement) of the module's genes.
    """
    rng = np.random.default_rng(random_state)
    rows = []
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    for i in range(k):
        members = curves[labels == i]
        row = {"module": str(i), "n_genes": int(members.shape[0])}
        if members.shape[0] == 0:
            rows.append(row)
            continue
        consensus = response_timing(members.mean(0, keepdims=True), times, np.array([True]))
        boots = members[rng.integers(0, members.shape[0], size=(n_boot, members.shape[0]))].mean(1)
        boot = response_timing(boots, times, np.ones(n_boot, bool))
        for name, col in (("onset", "onset"), ("peak", "peak_time")):
            values = boot[col].to_numpy(float)
            row[name] = float(consensus[col].iloc[0])
            row[f"{name}_low"] = float(np.nanpercentile(values, lo)) if np.isfinite(values).any() else np.nan
            row[f"{name}_high"] = float(np.nanpercentile(values, hi)) if np.isfinite(values).any() else np.nan
        row["response"] = str(consensus["response"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def response_timing(
    mean: np.ndarray,
    times: np.ndarray,
    responding: np.ndarray,
    *,
    fast_window: float | None = None,
) -> pd.DataFrame:
    """Onset time, peak time and response class of each gene from its per-time means.

    The change from the first time point ``d_t = m_t - m_0`` is followed to its largest absolute
    value (the peak). The onset is the first time ``|d_t|`` reaches half of that (linearly
    interpolated in real time). Classes: ``flat`` (no significant time effect), ``down``
    (largest change is a decrease), ``transient`` (rises, then falls back by at least half
    before the last time point), ``fast`` (onset within ``fast_window`` of the first time point)
    and ``delayed`` (later onset). ``fast_window`` defaults to a sixth of the time span.
    """
    mean = np.asarray(mean, float)
    times = np.asarray(times, float)
    if fast_window is None:
        fast_window = (times[-1] - times[0]) / 6.0
    d = mean - mean[:, :1]
    peak_idx = np.argmax(np.abs(d[:, 1:]), axis=1) + 1
    rows = np.arange(mean.shape[0])
    peak_change = d[rows, peak_idx]
    half = 0.5 * np.abs(peak_change)
    reached = np.abs(d) >= half[:, None]
    reached[:, 0] = False
    first = np.argmax(reached, axis=1)
    prev = np.clip(first - 1, 0, None)
    a = np.abs(d[rows, prev])
    b = np.abs(d[rows, first])
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(b > a, (half - a) / (b - a), 1.0)
    onset = times[prev] + np.clip(frac, 0.0, 1.0) * (times[first] - times[prev])
    peak_time = times[peak_idx]
    last_change = d[:, -1]
    returns = (peak_idx < mean.shape[1] - 1) & (np.abs(last_change) <= 0.5 * np.abs(peak_change))
    response = np.where(
        peak_change < 0,
        "down",
        np.where(returns, "transient", np.where(onset <= times[0] + fast_window, "fast", "delayed")),
    )
    response = np.where(responding & (peak_change != 0), response, "flat")
    onset = np.where(response == "flat", np.nan, onset)
    peak_time = np.where(response == "flat", np.nan, peak_time)
    return pd.DataFrame(
        {
            "onset": onset,
            "peak_time": peak_time,
            "peak_change": peak_change,
            "response": pd.Categorical(response, categories=RESPONSE_CLASSES),
        }
    )
