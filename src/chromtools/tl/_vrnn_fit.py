"""Gene features of the temporal-module tools: a VRNN fit (or the standardised profiles of a baseline) and module assignment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from chromtools._utils import log_time, seeded
from chromtools.tl._profile_clustering import (
    KMEANS_INIT,
    fuzzy_cmeans,
    gaussian_memberships,
    kmeans,
    kshape,
    sample_memberships,
)

if TYPE_CHECKING:
    from chromtools.models import VRNN

logger = logging.getLogger(__name__)


@dataclass
class _Fit:
    """Everything one VRNN fit produces for the selected genes."""

    summary: AnnData
    features: np.ndarray
    reconstruction: np.ndarray
    history: dict[str, np.ndarray]
    model_summary: str
    model: VRNN | None  # None for the baselines on the standardised profiles


def _history(model) -> dict[str, np.ndarray]:
    out = {}
    for key, frame in (model.history or {}).items():
        values = np.asarray(frame.astype(float)).ravel()
        if values.size:
            out[key] = values
    return out


def _fit_vrnn(
    summary: AnnData,
    *,
    model_kwargs: Mapping,
    train_kwargs: Mapping,
    random_state: int,
    accelerator: str,
    devices,
    progress: bool,
) -> _Fit:
    from chromtools.models import VRNN

    with seeded(random_state):
        VRNN.setup_anndata(summary)
        model = VRNN(summary, random_state=random_state, **model_kwargs)
        with log_time(f"Training the VRNN on {summary.n_obs} genes x {summary.n_vars} time points", logger):
            model.train(
                accelerator=accelerator, devices=devices, random_state=random_state, progress=progress, **train_kwargs
            )
        features = model.get_latent_representation()
        recon = model.get_reconstruction()
    return _Fit(summary, features, recon, _history(model), model._model_summary_string, model)


def _kmeans(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return kmeans(features, k, seed, KMEANS_INIT)


def _embed(
    summary: AnnData,
    method: str,
    *,
    model_kwargs: Mapping,
    train_kwargs: Mapping,
    random_state: int,
    accelerator: str,
    devices,
    progress: bool,
) -> _Fit:
    """Features of every gene: VRNN posterior means, or the standardised profiles themselves for the baselines."""
    if method == "vrnn":
        return _fit_vrnn(
            summary,
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
            random_state=random_state,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
        )
    X = np.asarray(summary.X, float)
    return _Fit(summary, X, X, {}, f"{method} on the standardised profiles", None)


def _assign(fit: _Fit, method: str, k: int, seed: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Hard labels and soft memberships ``(genes, k)`` of one clustering method."""
    features = fit.features
    if method == "fcm":
        U, _, _ = fuzzy_cmeans(features, k, seed)
        return U.argmax(1).astype(np.int64), U
    if method == "kshape":
        labels, _ = kshape(features, k, seed)
        used = np.unique(labels)
        labels = np.searchsorted(used, labels)
        k_found = used.size
        centers = np.stack([features[labels == i].mean(0) for i in range(k_found)])
        memberships = np.zeros((labels.size, k))
        memberships[:, :k_found] = gaussian_memberships(features, labels, centers)
        return labels, memberships
    labels, centers = _kmeans(features, k, seed)
    if method == "vrnn" and n_samples > 0:
        assert fit.model is not None  # _embed trains a VRNN for method 'vrnn'
        samples = fit.model.get_latent_samples(n_samples=n_samples, random_state=seed)
        return labels, sample_memberships(samples, centers)
    return labels, gaussian_memberships(features, labels, centers)
