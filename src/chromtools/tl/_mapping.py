"""Reference mapping (scArches): train a reference model, then map query batches onto it by surgery."""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from chromtools._docs import doc_params
from chromtools._utils import get_modality, log_time
from chromtools.models._arches import surgery_ready_kwargs
from chromtools.models._backed import is_lazy_matrix
from chromtools.models._reference import trained_epochs
from chromtools.pp import align_features, feature_map

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Query features must cover at least this fraction of the reference's features, else map_query refuses.
MIN_FEATURE_OVERLAP = 0.5

Matching = Literal["auto", "names", "overlap"]
OverlapRule = Literal["sum", "largest"]
ReferenceKind = Literal["peakscanvi", "peaktrvae", "peakvi", "poissonvi", "multivi"]
REFERENCE_KINDS = ("peakscanvi", "peaktrvae", "peakvi", "poissonvi", "multivi")


_SCVI_BATCH_PLACEHOLDER = "_scvi_batch"


# ----------------------------------------------------------------------------------------------
# building and training a reference
# ----------------------------------------------------------------------------------------------
def _model_classes() -> dict[str, type]:
    from chromtools.models import PeakSCANVI, PeakTRVAE

    return {"peakscanvi": PeakSCANVI, "peaktrvae": PeakTRVAE}


def _scvi_class(kind: str) -> type:
    import scvi

    if kind == "peakvi":
        return scvi.model.PEAKVI
    if kind == "poissonvi":
        return scvi.external.POISSONVI
    if kind == "multivi":
        return scvi.model.MULTIVI
    msg = f"model must be one of {REFERENCE_KINDS}, got {kind!r}."
    raise ValueError(msg)


@doc_params
def train_reference(
    data: AnnData | MuData,
    batch_key: str | None = None,
    labels_key: str | None = None,
    *,
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
):
    """Train a reference model on labelled chromatin data, ready for query mapping by surgery.

    Parameters
    ----------
    {data}
    batch_key
        ``obs`` column of the batches (donors, libraries); query batches are added to these.
    labels_key
        ``obs`` column of cell-type labels (used by ``'peakscanvi'`` for training, and stored in
        the model for label transfer).
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

    Returns
    -------
    The trained model. Writes ``obsm['X_reference' | key_added]`` (latent space) and
    ``uns[key_added]['params']`` into ``data`` (the MuData for ``'multivi'``, else the ATAC
    modality).

    Notes
    -----
    **Out of core.** ``data`` may be opened with ``anndata.read_h5ad(path, backed="r")`` (or hold
    a lazily loaded matrix, e.g. ``AnnData(X=anndata.io.sparse_dataset(group))``): the counts stay
    on disk, minibatches are read by scvi-tools' data loader and every other pass (count check,
    IDF) reads row blocks, so memory is bounded by a block, not by the matrix. The model is then
    set up on a light in-memory AnnData that shares the on-disk matrix (``model.adata``), so
    scvi-tools' registration columns are not added to ``data.obs``. Results are written to
    ``data.obsm``/``data.uns`` in memory; a file opened read-only is not modified, so write them
    out yourself (e.g. ``data.write_h5ad(new_path)``). In backed mode anndata keeps only ``X`` on
    disk (layers are read into memory). A matrix stored as CSC on disk, and ``model='multivi'``,
    are refused with the fix.
    """
    from mudata import MuData

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
    import scvi

    from chromtools.models._reference import _quiet_lightning, _silence_training_warnings, check_count_matrix

    _quiet_lightning()
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
        from chromtools.models._reference import _layer_matrix

        counts = _layer_matrix(target, layer)
        if is_lazy_matrix(counts):
            work, scratch = _light_anndata(target, counts, layer, what="reference")
    scvi.settings.seed = int(random_state)
    ctx = _silence_training_warnings()
    try:
        if model in ("peakscanvi", "peaktrvae"):
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
            from chromtools.models._reference import ModuleModeCallback

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
            from chromtools import __version__
            from chromtools.models._reference import MODEL_FORMAT_VERSION

            ref_model.chromtools_version_ = __version__
            ref_model.chromtools_format_ = MODEL_FORMAT_VERSION
    except BaseException:
        if scratch is not None:
            scratch.close()
        raise
    finally:
        ctx.__exit__(None, None, None)
    if scratch is not None:  # the on-disk copy lives as long as the model that reads it
        ref_model._chromtools_scratch = scratch
    latent = ref_model.get_latent_representation()
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
        }
    }
    if store_labels and hasattr(ref_model, "store_reference"):
        ref_model.store_reference(work, obs_keys=obs_keys)
    return ref_model


def _light_anndata(adata: AnnData, counts, layer: str | None, *, what: str, scratch_dir=None):
    """An in-memory AnnData with ``adata``'s obs and var whose counts are the on-disk matrix ``counts``.

    scvi-tools reads minibatches from it without loading the matrix; registration writes its
    columns into this AnnData's obs, not into the user's backed object.
    """
    from anndata import AnnData

    from chromtools.models._backed import rows_as_csr_dataset

    matrix, scratch = rows_as_csr_dataset(counts, scratch_dir, what=what)
    light = AnnData(X=matrix if layer is None else None, obs=adata.obs.copy(), var=adata.var.copy())
    if layer is not None:
        light.layers[layer] = matrix
    return light, scratch


def _refuse_lazy_mudata(mdata: MuData, layers: dict[str, str | None]) -> None:
    """Multimodal models need their modalities in memory: refuse backed ones with the fix."""
    from chromtools.models._reference import _layer_matrix

    for name, layer in layers.items():
        if name in mdata.mod and is_lazy_matrix(_layer_matrix(mdata.mod[name], layer)):
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


# ----------------------------------------------------------------------------------------------
# the reference as seen by map_query
# ----------------------------------------------------------------------------------------------
@dataclass
class _Reference:
    cls: type
    source: Any  # the model instance, or the folder as str
    registry: dict
    var_names: pd.Index | dict[str, pd.Index]
    state: dict[str, torch.Tensor]

    @property
    def is_mudata(self) -> bool:
        return self.registry.get("setup_method_name") == "setup_mudata"

    @property
    def setup_args(self) -> dict:
        return self.registry.get("setup_args", {})

    def field_state(self, key: str) -> dict | None:
        field = self.registry.get("field_registries", {}).get(key)
        return None if field is None else field.get("state_registry", {})


def _find_model_class(name: str) -> type:
    import scvi

    ours = {cls.__name__: cls for cls in _model_classes().values()}
    if name in ours:
        return ours[name]
    for ns in (scvi.model, scvi.external):
        cls = getattr(ns, name, None)
        if isinstance(cls, type):
            return cls
    msg = f"Unknown reference model class '{name}'; it is neither a chromtools nor an scvi-tools model."
    raise ValueError(msg)


def _resolve_reference(reference) -> _Reference:
    from scvi.model.base import ArchesMixin, BaseModelClass

    from chromtools.models._arches import reference_state_dict
    from chromtools.models._reference import check_saved_reference

    if isinstance(reference, str | os.PathLike):
        path = str(reference)
        attrs = check_saved_reference(path)
        registry = attrs["registry_"]
        cls = _find_model_class(registry["model_name"])
        saved = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=False)
        var_names = saved["var_names"]
        var_names = (
            {k: pd.Index(v) for k, v in var_names.items()} if isinstance(var_names, dict) else pd.Index(var_names)
        )
        state = {k: v.detach().clone() for k, v in saved["model_state_dict"].items() if isinstance(v, torch.Tensor)}
        source: Any = path
    elif isinstance(reference, BaseModelClass):
        cls = type(reference)
        registry = reference.registry
        names = reference.get_var_names()
        var_names = {k: pd.Index(v) for k, v in names.items()} if isinstance(names, dict) else pd.Index(names)
        state = reference_state_dict(reference)
        source = reference
        if not getattr(reference, "is_trained_", True):
            msg = "The reference model is not trained; train it first (chromtools.tl.train_reference)."
            raise ValueError(msg)
    else:
        msg = f"reference must be a trained scvi-tools/chromtools model or a saved model folder, got {type(reference).__name__}."
        raise TypeError(msg)
    if not issubclass(cls, ArchesMixin):
        msg = f"{cls.__name__} does not support architecture surgery (it has no ArchesMixin); use another reference model."
        raise TypeError(msg)
    return _Reference(cls=cls, source=source, registry=registry, var_names=var_names, state=state)


# ----------------------------------------------------------------------------------------------
# feature alignment
# ----------------------------------------------------------------------------------------------
def feature_indexer(
    query_names: pd.Index, reference_names: pd.Index, *, min_overlap: float = MIN_FEATURE_OVERLAP, what: str = "query"
) -> tuple[np.ndarray, float, str]:
    """Position in the query of every reference feature (-1: missing), the overlap and how it matched.

    Features are matched by name; when fewer than 80 % match and both sides are peak names in
    different styles (``chr1:100-200`` / ``chr1-100-200`` / ``chr1_100_200``), by coordinates.
    Raises when no feature, or fewer than ``min_overlap`` of the reference's features, are found.
    (Exact matching only; :func:`chromtools.pp.feature_map` also matches overlapping peaks.)
    """
    S, info = feature_map(
        pd.Index(query_names), pd.Index(reference_names), matching="names", min_overlap=min_overlap, what=what
    )
    S = S.tocsc()
    idx = np.full(S.shape[1], -1, np.int64)
    has = np.diff(S.indptr) > 0
    idx[has] = S.indices[S.indptr[:-1][has]]
    return idx, info["overlap"], info["matched_by"]


def _align_anndata(
    adata: AnnData,
    reference_names: pd.Index,
    *,
    layer: str | None,
    out_layer: str | None,
    min_overlap: float,
    what: str,
    matching: Matching = "auto",
    overlap_rule: OverlapRule = "sum",
    scratch_dir=None,
) -> tuple[AnnData, dict, Any]:
    """The query in the reference's features, its alignment report, and the scratch copy (or None).

    A backed query stays on disk: when its features are the reference's, in order, the aligned
    AnnData reads the query's own matrix; otherwise the aligned counts are written block by
    block to a scratch HDF5 file (:class:`chromtools.models._backed.Scratch`).
    """
    from anndata import AnnData

    from chromtools.models._reference import _layer_matrix, check_count_matrix

    check_count_matrix(adata, layer, what=what)
    counts = _layer_matrix(adata, layer)
    lazy = is_lazy_matrix(counts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if lazy:
            S, info = feature_map(
                adata.var,
                pd.DataFrame(index=reference_names),
                matching=matching,
                overlap_rule=overlap_rule,
                min_overlap=min_overlap,
            )
        else:
            aligned = align_features(
                adata,
                pd.DataFrame(index=reference_names),
                layer=layer,
                matching=matching,
                overlap_rule=overlap_rule,
                min_overlap=min_overlap,
            )
    for w in caught:  # re-issued here so that they point at the user's map_query call
        warnings.warn(str(w.message).replace("The query", f"The {what}"), w.category, stacklevel=4)
    obs = pd.DataFrame(index=adata.obs_names.copy())
    var = pd.DataFrame(index=reference_names.copy())
    if lazy:
        from chromtools.models._backed import Scratch, check_rows_readable, rows_as_csr_dataset

        check_rows_readable(counts, what)
        if _is_identity(S):
            X, scratch = rows_as_csr_dataset(counts, scratch_dir, what=what)
        else:
            scratch = Scratch(scratch_dir)
            try:
                X = scratch.write_csr(counts, S, name="aligned", what=what)
            except BaseException:
                scratch.close()
                raise
        out = AnnData(X=X, obs=obs, var=var)
        if out_layer is not None:
            out.layers[out_layer] = X
        return out, dict(info), scratch
    X = aligned.X
    out = AnnData(X=X, obs=obs, var=var)
    if out_layer is not None:
        out.layers[out_layer] = X.copy()
    return out, dict(aligned.uns["features"]), None


def _is_identity(S) -> bool:
    """Whether the feature map ``S`` (query x reference features) keeps every feature in place."""
    S = S.tocsr()
    n = S.shape[0]
    return (
        S.shape[1] == n
        and S.nnz == n
        and np.array_equal(S.indptr, np.arange(n + 1))
        and np.array_equal(S.indices, np.arange(n))
        and bool(np.all(S.data == 1))
    )


# ----------------------------------------------------------------------------------------------
# map_query
# ----------------------------------------------------------------------------------------------
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


def _train_query(
    qm, ref: _Reference, *, max_epochs, lr, batch_size, early_stopping, accelerator, devices, random_state, progress
):
    from chromtools.models._reference import (
        ModuleModeCallback,
        PeakReferenceModel,
        _quiet_lightning,
        _silence_training_warnings,
        default_max_epochs,
    )

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
    import scvi

    _quiet_lightning()
    scvi.settings.seed = int(random_state)
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
    ctx = _silence_training_warnings()
    try:
        qm.train(**kwargs)
    finally:
        ctx.__exit__(None, None, None)
    qm.module.eval()


def default_query_epochs(n_obs: int) -> int:
    """Surgery epochs by query size: about 50,000 cell passes, between 5 and 20 epochs.

    Only a few hundred parameters per batch train; on Granja 2019 (3,790 query cells) label
    transfer was the same after 5, 10, 20 or 40 epochs, so a short budget suffices.
    """
    return int(min(20, max(5, round(50_000 / max(n_obs, 1)))))


@doc_params
def map_query(
    query: AnnData | MuData,
    reference,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    rna_layer: str | None = None,
    mod: str | None = None,
    max_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 256,
    early_stopping: bool = True,
    min_overlap: float = MIN_FEATURE_OVERLAP,
    feature_matching: Matching = "auto",
    overlap_rule: OverlapRule = "sum",
    key_added: str = "X_reference",
    return_model: bool = False,
    scratch_dir: str | os.PathLike | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    random_state: int = 0,
    progress: bool = False,
    copy: bool = False,
):
    """Map query cells onto a reference model by architecture surgery (scArches).

    The query's features are aligned to the reference's (reordered; missing peaks filled with
    zeros; peak names in another style are matched by coordinates; a query with its own peak
    set is matched by peak overlap, see ``feature_matching``), its batches are added to
    the model as new batch parameters, and only those are trained on the query — every
    reference weight stays bit-identical (checked after training and recorded in ``uns``).
    The query's coordinates in the reference latent space are then written to ``obsm``.

    Works with chromtools' reference models (:class:`~chromtools.models.PeakSCANVI`,
    :class:`~chromtools.models.PeakTRVAE`) and with any scvi-tools model that has
    :class:`~scvi.model.base.ArchesMixin` (PEAKVI, POISSONVI, MULTIVI, SCVI, SCANVI, TOTALVI...),
    given as a trained model or as the folder it was saved to — the reference data is not
    needed.

    Parameters
    ----------
    query
        Query cells: an AnnData of peak counts, a MuData (its ``mod`` modality, ``'atac'`` by
        default), or a MuData with the modalities of a multimodal reference (MULTIVI, TOTALVI).
    reference
        Trained reference model, or the folder it was saved to (``model.save(dir)``).
    batch_key
        Query ``obs`` column naming the query's batches; default the reference's batch column.
    layer
        Query layer with raw counts; default ``X`` (or the reference's layer name when the query
        has it).
    rna_layer
        Query RNA layer with raw counts (multimodal references).
    {mod}
    max_epochs
        Upper bound on surgery epochs (early stopping on the query's validation loss); default by
        query size.
    lr
        Learning rate of the surgery (default: the model's).
    batch_size
        Minibatch size.
    early_stopping
        Stop surgery when the query's validation loss stops improving.
    min_overlap
        Smallest fraction of the reference's features that must be present in the query (the
        documented minimum is 0.5: below it the mapping is refused; below 0.8 a warning is
        given).
    feature_matching
        ``'names'`` (identical names, else identical coordinates), ``'overlap'`` (overlapping
        peaks) or ``'auto'`` (names; peak overlap when names match fewer than 80 % of the
        reference's features and overlap matches more). A query called on its own peaks is
        matched by overlap with a warning: counting its fragments in the reference's peaks
        (:func:`chromtools.pp.peak_matrix`) is better, since overlap can only approximate the
        reference's features.
    overlap_rule
        One-to-many rule of overlap matching: ``'sum'`` (a reference peak gets the sum of every
        overlapping query peak; a query peak overlapping several reference peaks counts in
        each) or ``'largest'`` (the query peak with the largest overlap); see
        :func:`chromtools.pp.feature_map`.
    key_added
        ``obsm`` key of the query latent space (use the key of the reference's latent space so
        that both can be joined).
    return_model
        Also return the query model (e.g. to save it or to predict with its classifier).
    scratch_dir
        Folder for the on-disk copy of a backed query whose features are not the reference's,
        in order (see Notes); default the system temporary folder (``TMPDIR``).
    {accelerator}
    {devices}
    {random_state}
    {progress}
    {copy}

    Returns
    -------
    ``None`` (or the copy with ``copy=True``; plus the query model with ``return_model=True``).
    Writes to the query (the MuData for multimodal references, else the mapped modality):

    ``obsm['X_reference' | key_added]``
        Query cells in the reference latent space.
    ``uns[key_added]``
        ``params``, the feature alignment ``features`` (``n_features``, ``n_shared``, ``overlap``,
        ``matched_by`` — ``'names'``, ``'peak coordinates'`` or ``'peak overlap'`` — and, for
        overlap, ``overlap_rule`` and its one-to-many counts), the new
        batches, the surgery epochs, the number of trained entries and ``frozen_identical``
        (every reference weight bit-identical after surgery).

    Notes
    -----
    **Out of core.** A query opened with ``anndata.read_h5ad(path, backed="r")`` (or holding a
    lazily loaded matrix) maps in bounded memory: its counts stay on disk and surgery and
    encoding read one minibatch at a time (scvi-tools' data loader); the count check reads a
    sample of row blocks. When the query's features are the reference's, in order, nothing is
    copied; otherwise the aligned counts are written block by block to a scratch HDF5 file in
    ``scratch_dir`` (removed when the call returns, or with the query model when
    ``return_model=True``). Results go to the query's ``obsm``/``uns`` in memory; a file opened
    read-only is not modified, so write them out yourself (``query.write_h5ad(new_path)``, or
    save ``query.obsm[key_added]``). ``copy=True`` and multimodal references are refused for a
    backed query (they would load it).
    """
    from anndata import AnnData
    from mudata import MuData

    if scratch_dir is not None and not os.path.isdir(scratch_dir):
        msg = f"scratch_dir '{scratch_dir}' is not an existing folder; create it or pass None (the system temp folder)."
        raise FileNotFoundError(msg)
    if copy:
        _refuse_backed_copy(query, "map_query")
        query = query.copy()
    ref = _resolve_reference(reference)
    if ref.is_mudata and isinstance(query, MuData):
        _refuse_lazy_mudata(query, {"atac": layer, "rna": rna_layer})

    # -- build the aligned query -------------------------------------------------------------
    if ref.is_mudata:
        if not isinstance(query, MuData):
            msg = f"The reference {ref.cls.__name__} was trained on a MuData; pass the query as a MuData too."
            raise TypeError(msg)
        modalities = ref.setup_args.get("modalities", {})
        layer_args = {"rna_layer": rna_layer, "atac_layer": layer}
        mods: dict[str, AnnData] = {}
        infos = {}
        for arg, name in modalities.items():
            if not arg.endswith("_layer") or name is None:
                continue
            if name not in query.mod:
                msg = f"The reference uses modality '{name}', which the query MuData lacks (it has {list(query.mod)})."
                raise KeyError(msg)
            ref_layer = ref.setup_args.get(arg)
            q_layer = layer_args.get(arg)
            if q_layer is None and ref_layer is not None and ref_layer in query.mod[name].layers:
                q_layer = ref_layer
            names = ref.var_names[name] if isinstance(ref.var_names, dict) else ref.var_names
            mods[name], infos[name], _ = _align_anndata(
                query.mod[name],
                names,
                layer=q_layer,
                out_layer=ref_layer,
                min_overlap=min_overlap,
                what=f"query '{name}'",
                matching=feature_matching,
                overlap_rule=overlap_rule,
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*update\\(\\) will not pull.*")
            aligned = MuData(mods)
        source_obs = query.obs.copy()
        for ad in query.mod.values():
            for c in ad.obs.columns:
                if c not in source_obs:
                    source_obs[c] = ad.obs[c].reindex(source_obs.index)
        target = query
        align_info: dict = {"modalities": infos}
    else:
        target = get_modality(query, mod)
        ref_layer = ref.setup_args.get("layer")
        q_layer = layer
        if q_layer is None and ref_layer is not None and ref_layer in target.layers:
            q_layer = ref_layer
        names = ref.var_names if not isinstance(ref.var_names, dict) else next(iter(ref.var_names.values()))
        aligned, align_info, scratch = _align_anndata(
            target,
            names,
            layer=q_layer,
            out_layer=ref_layer,
            min_overlap=min_overlap,
            what="query",
            matching=feature_matching,
            overlap_rule=overlap_rule,
            scratch_dir=scratch_dir,
        )
        source_obs = target.obs
    if ref.is_mudata:
        scratch = None
    try:
        qm, n_epochs, n_trainable, drift, new_batches, ref_batch_key = _surgery(
            aligned,
            ref,
            source_obs,
            target,
            batch_key=batch_key,
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            early_stopping=early_stopping,
            accelerator=accelerator,
            devices=devices,
            random_state=random_state,
            progress=progress,
        )
        latent = qm.get_latent_representation()
    finally:
        if scratch is not None and not return_model:
            scratch.close()
    if scratch is not None:  # the scratch copy lives as long as the query model that reads it
        qm._chromtools_scratch = scratch
    identical = bool(drift["identical"].all())
    if not identical:
        moved = drift.loc[~drift["identical"], "tensor"].tolist()
        warnings.warn(
            f"Reference weights changed during surgery: {moved[:5]}. The mapping is still written, but the "
            "reference is no longer frozen.",
            RuntimeWarning,
            stacklevel=2,
        )
    out_target = target if not ref.is_mudata else query
    out_target.obsm[key_added] = latent
    out_target.uns[key_added] = {
        "params": {
            "reference": ref.cls.__name__,
            "batch_key": batch_key or ref_batch_key,
            "layer": layer,
            "max_epochs": max_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "early_stopping": early_stopping,
            "min_overlap": min_overlap,
            "feature_matching": feature_matching,
            "overlap_rule": overlap_rule,
            "random_state": random_state,
            "out_of_core": isinstance(aligned, AnnData) and is_lazy_matrix(aligned.X),
        },
        "features": align_info,
        "new_batches": list(new_batches),
        "n_epochs": n_epochs,
        "n_trained_parameters": n_trainable,
        "frozen_identical": identical,
        "frozen_max_abs_diff": float(np.nan_to_num(drift["max_abs_diff"].to_numpy(), nan=np.inf).max())
        if len(drift)
        else 0.0,
    }
    result = query if copy else None
    if return_model:
        return (result, qm) if copy else qm
    return result


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
    from chromtools.models._arches import freeze_for_surgery, frozen_weight_drift
    from chromtools.models._reference import _silence_training_warnings

    ref_batch_key, new_batches = _fill_obs(aligned, source_obs, ref, batch_key)
    if not ref.is_mudata:
        _copy_obsm_fields(aligned, target, ref)
    if ref.is_mudata:
        for c in aligned.obs.columns:
            for ad in aligned.mod.values():
                ad.obs[c] = aligned.obs[c].to_numpy()

    # -- surgery -----------------------------------------------------------------------------
    source = ref.source
    ctx = _silence_training_warnings()
    try:
        with log_time(f"Surgery of {ref.cls.__name__} for {aligned.n_obs} query cells", logger):
            import scvi

            verbosity = scvi.settings.verbosity
            scvi.settings.verbosity = logging.WARNING
            scvi.settings.seed = int(random_state)  # the new batch parameters' initial values
            try:
                qm = ref.cls.load_query_data(
                    aligned, source, freeze_dropout=True, accelerator=accelerator, device=_single_device(devices)
                )
            finally:
                scvi.settings.verbosity = verbosity
    finally:
        ctx.__exit__(None, None, None)
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
