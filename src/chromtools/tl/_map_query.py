"""Query mapping (scArches): ct.tl.map_query aligns a query, adds its batches by surgery and writes its latent space."""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from chromtools._docs import doc_params
from chromtools._utils import get_modality
from chromtools.models import is_lazy_matrix
from chromtools.tl._query_alignment import MIN_FEATURE_OVERLAP, Matching, OverlapRule, _align_anndata
from chromtools.tl._reference_models import _check_model_dir, _resolve_reference, _save_model
from chromtools.tl._surgery import _surgery
from chromtools.tl._train_reference import _refuse_backed_copy, _refuse_lazy_mudata

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


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
    model_dir: str | os.PathLike | None = None,
    scratch_dir: str | os.PathLike | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    random_state: int = 0,
    progress: bool = False,
    copy: bool = False,
) -> AnnData | MuData | None:
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
    model_dir
        Folder to save the query model to (the reference with the query's batches added), e.g.
        to predict with its classifier; load it with :func:`chromtools.tl.load_model`.
        ``None``: the query model is not kept.
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
    ``None``, or the copy of the query with ``copy=True``. Writes to the query (the MuData for multimodal references, else the mapped modality):

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
    ``scratch_dir`` (removed when the call returns). Results go to the query's ``obsm``/``uns``
    in memory; a file opened read-only is not modified, so write them out yourself (e.g.
    ``AnnData(obs=query.obs, obsm=dict(query.obsm)).write_h5ad(new_path)``). ``copy=True`` and
    multimodal references are refused for a backed query (they would load it).
    """
    from anndata import AnnData
    from mudata import MuData

    if scratch_dir is not None and not os.path.isdir(scratch_dir):
        msg = f"scratch_dir '{scratch_dir}' is not an existing folder; create it or pass None (the system temp folder)."
        raise FileNotFoundError(msg)
    if model_dir is not None:
        _check_model_dir(model_dir)
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
        if model_dir is not None:
            _save_model(qm, model_dir)
    finally:
        if scratch is not None:  # the scratch copy is read until the query is encoded and its model saved
            scratch.close()
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
            "model_dir": None if model_dir is None else str(model_dir),
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
    return query if copy else None
