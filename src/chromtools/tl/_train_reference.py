"""Reference training for mapping: ct.tl.train_reference, on a light AnnData when the counts stay on disk."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from chromtools._docs import doc_params
from chromtools._utils import get_layer, get_modality, log_time, quiet_lightning, quiet_training_warnings, seed_all
from chromtools.models import (
    ModuleModeCallback,
    check_count_matrix,
    is_lazy_matrix,
    rows_as_csr_dataset,
    set_model_format,
    surgery_ready_kwargs,
    trained_epochs,
)
from chromtools.tl._reference_models import REFERENCE_KINDS, _check_model_dir, _model_classes, _save_model, _scvi_class

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

ReferenceKind = Literal["peakscanvi", "peaktrvae", "peakvi", "poissonvi", "multivi"]


@doc_params
def train_reference(
    data: AnnData | MuData,
    batch_key: str | None = None,
    labels_key: str | None = None,
    *,
    model_dir: str | os.PathLike,
    model: ReferenceKind | None = None,
    layer: str | None = None,
    rna_layer: str | None = None,
    unlabeled_category: str = "Unknown",
    mod: str | None = None,
    max_epochs: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    key_added: str = "X_reference",
    store_labels: bool = True,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    random_state: int = 0,
    progress: bool = False,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Train a reference model on labelled chromatin data and save it, ready for query mapping by surgery.

    The trained model is saved to ``model_dir``; map queries onto it with
    ``ct.tl.map_query(query, model_dir)``, transfer labels with
    ``ct.tl.transfer_labels(query, model_dir, ...)``, and load it with
    :func:`chromtools.tl.load_model` to use it directly.

    Parameters
    ----------
    {data}
    batch_key
        ``obs`` column of the batches (donors, libraries); query batches are added to these.
    labels_key
        ``obs`` column of cell-type labels (used by ``'peakscanvi'`` for training, and stored in
        the model for label transfer).
    model_dir
        Folder the trained model is saved to (``model.pt``, created if needed; a model already
        saved there is replaced). The data are not saved with it.
    model
        ``'peakscanvi'`` (semi-supervised, chromtools' default when labels are given),
        ``'peaktrvae'`` (MMD between batches, the default without labels), scvi-tools'
        ``'peakvi'`` or ``'poissonvi'`` (ATAC) or ``'multivi'`` (RNA+ATAC MuData, the default for
        a MuData with ``'rna'`` and ``'atac'``), configured for surgery
        (:func:`chromtools.models.surgery_ready_kwargs`).
    layer
        Layer of raw peak counts (default ``X``).
    rna_layer
        Layer of raw RNA counts (``'multivi'`` only).
    unlabeled_category
        Label value of unlabelled cells (``'peakscanvi'``).
    {mod}
    max_epochs
        Upper bound on training epochs (early stopping usually ends sooner); default by size.
    model_kwargs
        Further arguments of the model's constructor.
    train_kwargs
        Further arguments of the model's ``train``.
    key_added
        ``obsm`` key of the reference latent space.
    store_labels
        Keep the latent codes and labels of the reference cells in the model
        (:meth:`~chromtools.models.PeakSCANVI.store_reference`), so that a saved reference can
        annotate queries without the reference data (chromtools models only).
    {accelerator}
    {devices}
    {random_state}
    {progress}
    {copy}

    Returns
    -------
    ``None``, or the copy of ``data`` with ``copy=True``. Writes into ``data`` (the MuData for
    ``'multivi'``, else the ATAC modality):

    ``obsm['X_reference' | key_added]``
        The reference cells in the latent space.
    ``uns[key_added]['params']``
        The parameters of the run, ``model_dir`` and the epochs trained (``n_epochs``).

    Notes
    -----
    **Out of core.** ``data`` may be opened with ``anndata.read_h5ad(path, backed="r")`` (or hold
    a lazily loaded matrix, e.g. ``AnnData(X=anndata.io.sparse_dataset(group))``): the counts stay
    on disk, minibatches are read by scvi-tools' data loader and every other pass (count check,
    IDF) reads row blocks, so memory is bounded by a block, not by the matrix. The model is then
    set up on a light in-memory AnnData that shares the on-disk matrix, so scvi-tools'
    registration columns are not added to ``data.obs``. Results are written to
    ``data.obsm``/``data.uns`` in memory; a file opened read-only is not modified, so write them
    out yourself (e.g. ``AnnData(obs=data.obs, obsm=dict(data.obsm)).write_h5ad(new_path)``). In backed mode anndata keeps only ``X`` on
    disk (layers are read into memory). A matrix stored as CSC on disk, and ``model='multivi'``,
    are refused with the fix.
    """
    from mudata import MuData

    _check_model_dir(model_dir)
    if copy:
        _refuse_backed_copy(data, "train_reference")
        data = data.copy()
    model_kwargs = dict(model_kwargs or {})
    train_kwargs = dict(train_kwargs or {})
    if model is None:
        if isinstance(data, MuData) and "rna" in data.mod and "atac" in data.mod and mod is None:
            model = "multivi"
        else:
            model = "peakscanvi" if labels_key is not None else "peaktrvae"
    if model not in REFERENCE_KINDS:
        msg = f"model must be one of {REFERENCE_KINDS}, got {model!r}."
        raise ValueError(msg)
    quiet_lightning(logging.ERROR)
    if model == "multivi":
        if not isinstance(data, MuData):
            msg = "model='multivi' needs a MuData with 'rna' and 'atac' modalities."
            raise TypeError(msg)
        target = data
        for name in ("rna", "atac"):
            if name not in data.mod:
                msg = f"model='multivi' needs modalities 'rna' and 'atac'; this MuData has {list(data.mod)}."
                raise KeyError(msg)
        _refuse_lazy_mudata(data, {"atac": layer, "rna": rna_layer})
        check_count_matrix(data.mod["atac"], layer, what="mdata['atac']")
        check_count_matrix(data.mod["rna"], rna_layer, what="mdata['rna']")
        _pull_obs_columns(data, [c for c in (batch_key, labels_key) if c is not None])
    else:
        target = get_modality(data, mod)
    obs_keys = [c for c in (batch_key, labels_key) if c is not None]
    for col in obs_keys:
        if col not in target.obs:
            msg = f"obs has no column '{col}'; pass an existing obs column."
            raise KeyError(msg)
    if labels_key is not None and pd.isna(target.obs[labels_key]).any():
        n = int(pd.isna(target.obs[labels_key]).sum())
        msg = (
            f"Label column '{labels_key}' has {n} missing values (NaN). Mark cells without a label with "
            f"unlabeled_category={unlabeled_category!r} or drop them."
        )
        raise ValueError(msg)

    # out of core: set the model up on a light AnnData sharing the on-disk counts
    work, scratch = target, None
    if model != "multivi":
        counts = get_layer(target, layer)
        if is_lazy_matrix(counts):
            work, scratch = _light_anndata(target, counts, layer, what="reference")
    seed_all(random_state)
    try:
        with quiet_training_warnings():
            if model == "peakscanvi" or model == "peaktrvae":  # (`in` would not narrow the Literal for mypy)
                cls = _model_classes()[model]
                setup = {"layer": layer, "batch_key": batch_key}
                if model == "peakscanvi":
                    if labels_key is None:
                        msg = "model='peakscanvi' learns from labels: pass labels_key=<obs column of cell types>."
                        raise ValueError(msg)
                    setup.update(labels_key=labels_key, unlabeled_category=unlabeled_category)
                cls.setup_anndata(work, **setup)
                ref_model = cls(work, **model_kwargs)
                with log_time(f"Training {cls.__name__} reference on {target.n_obs} cells", logger):
                    ref_model.train(
                        max_epochs=max_epochs,
                        accelerator=accelerator,
                        devices=devices,
                        random_state=random_state,
                        progress=progress,
                        **train_kwargs,
                    )
            else:
                cls = _scvi_class(model)
                kwargs = {**surgery_ready_kwargs(model), **model_kwargs}
                if model == "multivi":
                    cls.setup_mudata(
                        target,
                        rna_layer=rna_layer,
                        atac_layer=layer,
                        batch_key=batch_key,
                        modalities={"rna_layer": "rna", "atac_layer": "atac"},
                    )
                    ref_model = cls(target, **kwargs)
                else:
                    check_count_matrix(work, layer)
                    cls.setup_anndata(work, batch_key=batch_key, layer=layer)
                    ref_model = cls(work, **kwargs)
                callbacks = [*train_kwargs.pop("callbacks", []), ModuleModeCallback("train")]
                with log_time(f"Training {cls.__name__} reference on {target.n_obs} cells", logger):
                    ref_model.train(
                        max_epochs=max_epochs or 200,
                        accelerator=accelerator,
                        devices=devices,
                        enable_progress_bar=progress,
                        callbacks=callbacks,
                        **train_kwargs,
                    )
                ref_model.module.eval()
                set_model_format(ref_model)
        latent = ref_model.get_latent_representation()
        if store_labels and hasattr(ref_model, "store_reference"):
            ref_model.store_reference(work, obs_keys=obs_keys)
        _save_model(ref_model, model_dir)
    finally:
        if scratch is not None:  # the on-disk copy is read until the model is saved
            scratch.close()
    target.obsm[key_added] = latent
    target.uns[key_added] = {
        "params": {
            "model": model,
            "batch_key": batch_key,
            "labels_key": labels_key,
            "layer": layer,
            "random_state": random_state,
            "n_epochs": trained_epochs(ref_model),
            "out_of_core": work is not target,
            "model_dir": str(model_dir),
        }
    }
    return data if copy else None


def _light_anndata(adata: AnnData, counts, layer: str | None, *, what: str, scratch_dir=None):
    """An in-memory AnnData with ``adata``'s obs and var whose counts are the on-disk matrix ``counts``.

    scvi-tools reads minibatches from it without loading the matrix; registration writes its
    columns into this AnnData's obs, not into the user's backed object.
    """
    from anndata import AnnData

    matrix, scratch = rows_as_csr_dataset(counts, scratch_dir, what=what)
    light = AnnData(X=matrix if layer is None else None, obs=adata.obs.copy(), var=adata.var.copy())
    if layer is not None:
        light.layers[layer] = matrix
    return light, scratch


def _refuse_lazy_mudata(mdata: MuData, layers: dict[str, str | None]) -> None:
    """Multimodal models need their modalities in memory: refuse backed ones with the fix."""
    for name, layer in layers.items():
        if name in mdata.mod and is_lazy_matrix(get_layer(mdata.mod[name], layer)):
            msg = (
                f"Modality '{name}' is backed (on disk); multimodal references (MULTIVI, TOTALVI) map in memory "
                f"only. Load it first: mdata.mod['{name}'] = mdata.mod['{name}'].to_memory(), or map the ATAC "
                "modality alone with a peak reference (model='peakscanvi')."
            )
            raise NotImplementedError(msg)


def _pull_obs_columns(mdata: MuData, columns: list[str]) -> None:
    """Make sure MuData-level obs has ``columns`` (copied from a modality when only there)."""
    for col in columns:
        if col in mdata.obs:
            continue
        for name, ad in mdata.mod.items():
            if col in ad.obs:
                mdata.obs[col] = ad.obs[col].reindex(mdata.obs_names).to_numpy()
                logger.info("Copied obs column '%s' from modality '%s' to the MuData", col, name)
                break


def _refuse_backed_copy(data, func: str) -> None:
    """``copy=True`` would load (or duplicate) a backed AnnData: refuse it with the fix."""
    mods = getattr(data, "mod", {}) or {}
    if bool(getattr(data, "isbacked", False)) or any(bool(getattr(m, "isbacked", False)) for m in mods.values()):
        msg = (
            f"{func}(copy=True) cannot copy a backed AnnData (it would load or duplicate the file). Use copy=False: "
            "results are written to the object's obs/obsm in memory and the file is not modified; or load it "
            "first with adata = adata.to_memory()."
        )
        raise ValueError(msg)
