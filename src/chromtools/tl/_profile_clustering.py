"""Clustering of gene features or profiles for temporal modules: k-means, k-Shape, fuzzy c-means, soft memberships.

Fuzzy c-means is written here (about 30 lines) because none of our dependencies has it (scikit-learn
does not; scikit-fuzzy would be a new dependency for one function). It follows Mfuzz (Kumar &
Futschik 2007): the fuzzifier is Schwämmle & Jensen's (2010) estimate from the data size.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

#: Restarts of k-means (and of fuzzy c-means).
KMEANS_INIT = 20


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int = KMEANS_INIT) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centres of k-means with ``n_init`` restarts."""
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(features)
    return km.labels_.astype(np.int64), km.cluster_centers_


def gaussian_memberships(features: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Posterior module probabilities of a mixture of spherical Gaussians with one shared variance.

    ``P(k | x) ∝ π_k exp(-||x - c_k||² / 2σ²)`` at the clustering's own centres ``c_k``, weights
    ``π_k`` (module sizes) and pooled within-module variance ``σ²`` per feature: the soft version
    of the k-means assignment (argmax equals the nearest centre when modules are equal in size).
    """
    k = centers.shape[0]
    d2 = ((features[:, None, :] - centers[None]) ** 2).sum(-1)
    sigma2 = max(float(d2[np.arange(labels.size), labels].mean() / features.shape[1]), 1e-12)
    log_pi = np.log(np.maximum(np.bincount(labels, minlength=k), 1) / labels.size)
    logit = log_pi[None, :] - d2 / (2.0 * sigma2)
    logit -= logit.max(1, keepdims=True)
    p = np.exp(logit)
    return p / p.sum(1, keepdims=True)


def sample_memberships(samples: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Share of posterior samples ``(S, genes, d)`` nearest to each centre: ``(genes, k)``."""
    k = centers.shape[0]
    out = np.zeros((samples.shape[1], k))
    for draw in samples:
        nearest = ((draw[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
        out[np.arange(nearest.size), nearest] += 1.0
    return out / samples.shape[0]


def mfuzz_fuzzifier(n: int, d: int) -> float:
    """Schwämmle & Jensen's (2010) fuzzifier for ``n`` profiles of ``d`` time points (Mfuzz ``mestimate``)."""
    return float(1.0 + (1418.0 / n + 22.05) * d**-2.0 + (12.33 / n + 0.243) * d ** (-0.0406 * np.log(n) - 0.1134))


def fuzzy_cmeans(
    X: np.ndarray,
    k: int,
    seed: int,
    *,
    m: float | None = None,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fuzzy c-means (Bezdek): memberships ``(n, k)``, centres ``(k, d)`` and the fuzzifier used.

    Memberships start from random Dirichlet draws; of ``n_init`` starts the one with the lowest
    objective ``Σ u^m ||x - c||²`` is kept. ``m`` defaults to :func:`mfuzz_fuzzifier`.
    """
    X = np.asarray(X, float)
    n = X.shape[0]
    m = mfuzz_fuzzifier(n, X.shape[1]) if m is None else float(m)
    if m <= 1.0:
        msg = f"The fuzzifier m must be above 1, got {m}."
        raise ValueError(msg)
    if n_init < 1:
        msg = f"n_init must be at least 1, got {n_init}."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        U = rng.dirichlet(np.ones(k), size=n)
        for _ in range(max_iter):
            W = U**m
            C = (W.T @ X) / W.sum(0)[:, None]
            d2 = np.maximum(((X[:, None, :] - C[None]) ** 2).sum(-1), 1e-12)
            inv = d2 ** (-1.0 / (m - 1.0))
            U_new = inv / inv.sum(1, keepdims=True)
            done = np.abs(U_new - U).max() < tol
            U = U_new
            if done:
                break
        objective = float(((U**m) * d2).sum())
        if best is None or objective < best[2]:
            best = (U, C, objective)
    assert best is not None  # n_init >= 1 starts ran
    return best[0], best[1], m


def kshape(X: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-Shape (Paparrizos & Gravano 2015, tslearn) on z-normalised profiles: labels and centroid shapes."""
    try:
        from tslearn.clustering import KShape
        from tslearn.preprocessing import TimeSeriesScalerMeanVariance
    except ImportError as err:  # an optional dependency
        msg = "method='kshape' needs tslearn; install it with pip install 'chromtools[bench]' or pip install tslearn."
        raise ImportError(msg) from err
    series = TimeSeriesScalerMeanVariance().fit_transform(np.asarray(X, float)[:, :, None])
    model = KShape(n_clusters=k, random_state=seed, n_init=3).fit(series)
    return np.asarray(model.labels_, np.int64), model.cluster_centers_[:, :, 0]
