"""Choosing the number of temporal modules: silhouette or subsampling stability of k-means on the gene features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from chromtools.tl._vrnn_fit import _kmeans


def _subsample_stability(features: np.ndarray, k: int, seed: int, n_boot: int = 10, frac: float = 0.8) -> float:
    """Mean ARI between k-means on all genes and k-means fitted on random 80 % subsets (assigning every gene)."""
    rng = np.random.default_rng(seed)
    full, _ = _kmeans(features, k, seed)
    scores = []
    for _ in range(n_boot):
        idx = rng.choice(features.shape[0], size=max(int(frac * features.shape[0]), k + 1), replace=False)
        km = KMeans(n_clusters=k, n_init=5, random_state=int(rng.integers(2**31 - 1))).fit(features[idx])
        scores.append(adjusted_rand_score(full, km.predict(features)))
    return float(np.mean(scores))


def _choose_k(features: np.ndarray, k_range: Sequence[int], criterion: str, seed: int) -> tuple[int, pd.DataFrame]:
    ks = sorted({int(k) for k in k_range if 2 <= int(k) < features.shape[0]})
    if not ks:
        msg = f"k_range {list(k_range)} holds no usable number of clusters for {features.shape[0]} genes (need 2 <= k < genes)."
        raise ValueError(msg)
    rows = []
    sample = min(features.shape[0], 3_000)
    for k in ks:
        labels, _ = _kmeans(features, k, seed)
        sil = silhouette_score(features, labels, sample_size=sample, random_state=seed)
        rows.append({"k": k, "silhouette": float(sil), "stability": _subsample_stability(features, k, seed)})
    table = pd.DataFrame(rows)
    best = int(table.loc[table[criterion].idxmax(), "k"])
    return best, table
