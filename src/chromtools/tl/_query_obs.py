"""Obs plumbing of a query: the registered batch, label, covariate and obsm fields copied into the aligned query."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from chromtools.tl._reference_models import _Reference

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

_SCVI_BATCH_PLACEHOLDER = "_scvi_batch"


def _fill_obs(
    aligned, source_obs: pd.DataFrame, ref: _Reference, batch_key: str | None
) -> tuple[str | None, list[str]]:
    """Copy the registered obs columns into the aligned query: batch, labels (unlabelled), covariates."""
    batch_state = ref.field_state("batch") or {}
    ref_batch_key = batch_state.get("original_key")
    ref_batches = [str(b) for b in batch_state.get("categorical_mapping", [])]
    new_batches: list[str] = []
    if ref_batch_key is None or ref_batch_key == _SCVI_BATCH_PLACEHOLDER:
        logger.warning("The reference has no batch covariate: the query is encoded without surgery.")
        ref_batch_key = None
    else:
        col = batch_key or ref_batch_key
        if col not in source_obs:
            msg = (
                f"The query has no batch column '{col}' (the reference's batches are in obs['{ref_batch_key}']). "
                f"Add obs['{ref_batch_key}'] naming the query's batches, or pass batch_key=<query obs column>."
            )
            raise KeyError(msg)
        values = source_obs[col]
        if pd.isna(values).any():
            msg = f"The query's batch column '{col}' has missing values; every query cell needs a batch."
            raise ValueError(msg)
        values = values.astype(str).to_numpy()
        aligned.obs[ref_batch_key] = pd.Categorical(values)
        new_batches = sorted(set(values) - set(ref_batches))
        shared = sorted(set(values) & set(ref_batches))
        if shared:
            logger.info("Query batches %s are reference batches: their cells use the reference's batch weights", shared)
    labels_state = ref.field_state("labels") or {}
    labels_key = labels_state.get("original_key")
    if labels_key is not None and not labels_key.startswith("_scvi"):
        unlabeled = labels_state.get("unlabeled_category")
        if unlabeled is not None:
            aligned.obs[labels_key] = pd.Categorical([unlabeled] * aligned.n_obs)  # the query is never labelled
        elif labels_key in source_obs:
            aligned.obs[labels_key] = source_obs[labels_key].to_numpy()
        else:
            first = labels_state["categorical_mapping"][0]
            aligned.obs[labels_key] = pd.Categorical([first] * aligned.n_obs)
    for reg_key in ("extra_categorical_covs", "extra_continuous_covs", "size_factor"):
        state = ref.field_state(reg_key)
        if not state:
            continue
        cols = state.get("field_keys") or ([state["original_key"]] if state.get("original_key") else [])
        for c in cols:
            if c not in source_obs:
                msg = f"The reference was set up with covariate obs['{c}'], which the query lacks; add it."
                raise KeyError(msg)
            aligned.obs[c] = source_obs[c].to_numpy()
    return ref_batch_key, new_batches


def _copy_obsm_fields(aligned: AnnData, source: AnnData, ref: _Reference) -> None:
    """Copy ``obsm`` arrays the reference registered (e.g. TOTALVI's protein counts) into the aligned query."""
    for key, field in ref.registry.get("field_registries", {}).items():
        data_registry = field.get("data_registry", {})
        if data_registry.get("attr_name") != "obsm":
            continue
        obsm_key = data_registry["attr_key"]
        if obsm_key not in source.obsm:
            msg = f"The reference was set up with obsm['{obsm_key}'] ({key}), which the query lacks; add it."
            raise KeyError(msg)
        aligned.obsm[obsm_key] = source.obsm[obsm_key]
