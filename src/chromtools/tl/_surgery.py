"""Architecture surgery: the query model built from the reference, and only its new batch parameters trained."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pandas as pd

from chromtools._utils import log_time, quiet_lightning, quiet_scvi, quiet_training_warnings, seed_all
from chromtools.models import (
    ModuleModeCallback,
    PeakReferenceModel,
    default_max_epochs,
    freeze_for_surgery,
    frozen_weight_drift,
    trained_epochs,
)
from chromtools.tl._query_obs import _copy_obsm_fields, _fill_obs
from chromtools.tl._reference_models import _Reference

logger = logging.getLogger(__name__)


def _train_query(
    qm, ref: _Reference, *, max_epochs, lr, batch_size, early_stopping, accelerator, devices, random_state, progress
):
    n_obs = qm.adata.n_obs
    if isinstance(qm, PeakReferenceModel):
        qm.train(
            max_epochs=max_epochs or default_query_epochs(n_obs),
            lr=lr or 1e-3,
            batch_size=batch_size,
            weight_decay=0.0,
            early_stopping=early_stopping,
            n_epochs_kl_warmup=None,
            accelerator=accelerator,
            devices=devices,
            random_state=random_state,
            progress=progress,
            module_mode="eval",
        )
        return
    quiet_lightning(logging.ERROR)
    seed_all(random_state)
    params = inspect.signature(qm.train).parameters
    kwargs: dict[str, Any] = {
        "max_epochs": max_epochs or default_max_epochs(n_obs, cap=200),
        "accelerator": accelerator,
        "devices": devices,
        "batch_size": batch_size,
        "callbacks": [ModuleModeCallback("eval")],
        "enable_progress_bar": progress,
    }
    plan_kwargs: dict[str, Any] = {"weight_decay": 0.0}
    if "weight_decay" in params:  # PEAKVI/MULTIVI override plan_kwargs with their own weight_decay
        kwargs["weight_decay"] = 0.0
    if lr is not None:
        if "lr" in params:
            kwargs["lr"] = lr
        else:
            plan_kwargs["lr"] = lr
    kwargs["plan_kwargs"] = plan_kwargs
    kwargs["early_stopping"] = early_stopping
    if early_stopping:
        kwargs["check_val_every_n_epoch"] = 1
    with quiet_training_warnings():
        qm.train(**kwargs)
    qm.module.eval()


def default_query_epochs(n_obs: int) -> int:
    """Surgery epochs by query size: about 50,000 cell passes, between 5 and 20 epochs.

    Only a few hundred parameters per batch train; on Granja 2019 (3,790 query cells) label
    transfer was the same after 5, 10, 20 or 40 epochs, so a short budget suffices.
    """
    return int(min(20, max(5, round(50_000 / max(n_obs, 1)))))


def _surgery(
    aligned,
    ref: _Reference,
    source_obs: pd.DataFrame,
    target,
    *,
    batch_key,
    max_epochs,
    lr,
    batch_size,
    early_stopping,
    accelerator,
    devices,
    random_state,
    progress,
):
    """Fill the aligned query's obs, build the query model by surgery and train its new batch parameters."""
    ref_batch_key, new_batches = _fill_obs(aligned, source_obs, ref, batch_key)
    if not ref.is_mudata:
        _copy_obsm_fields(aligned, target, ref)
    if ref.is_mudata:
        for c in aligned.obs.columns:
            for ad in aligned.mod.values():
                ad.obs[c] = aligned.obs[c].to_numpy()

    # -- surgery -----------------------------------------------------------------------------
    source = ref.source
    with (
        quiet_training_warnings(),
        log_time(f"Surgery of {ref.cls.__name__} for {aligned.n_obs} query cells", logger),
        quiet_scvi(),
    ):
        seed_all(random_state)  # the new batch parameters' initial values
        qm = ref.cls.load_query_data(
            aligned, source, freeze_dropout=True, accelerator=accelerator, device=_single_device(devices)
        )
    table = freeze_for_surgery(qm, ref.state)
    n_trainable = int(table["n_trainable"].sum())
    if n_trainable == 0:
        logger.warning("The query adds no new batch: it is encoded with the reference weights, without training.")
        qm.is_trained_ = True
        n_epochs = 0
    else:
        with log_time(f"Training {n_trainable} new batch parameters on the query", logger):
            _train_query(
                qm,
                ref,
                max_epochs=max_epochs,
                lr=lr,
                batch_size=batch_size,
                early_stopping=early_stopping,
                accelerator=accelerator,
                devices=devices,
                random_state=random_state,
                progress=progress,
            )
        n_epochs = trained_epochs(qm)
    drift = frozen_weight_drift(ref.state, qm)
    return qm, n_epochs, n_trainable, drift, new_batches, ref_batch_key


def _single_device(devices) -> int | str:
    """``load_query_data`` takes one device: the first listed index, else 'auto'."""
    if isinstance(devices, list | tuple) and devices:
        return devices[0]
    return "auto"
