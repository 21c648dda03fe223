"""Reference models of mapping: their classes, saving and loading a model folder, and a reference resolved for surgery."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

REFERENCE_KINDS = ("peakscanvi", "peaktrvae", "peakvi", "poissonvi", "multivi")


def _model_classes() -> dict[str, type[BaseModelClass]]:
    from chromtools.models import PeakSCANVI, PeakTRVAE

    return {"peakscanvi": PeakSCANVI, "peaktrvae": PeakTRVAE}


def _scvi_class(kind: str) -> type[BaseModelClass]:
    import scvi

    if kind == "peakvi":
        return scvi.model.PEAKVI
    if kind == "poissonvi":
        return scvi.external.POISSONVI
    if kind == "multivi":
        return scvi.model.MULTIVI
    msg = f"model must be one of {REFERENCE_KINDS}, got {kind!r}."
    raise ValueError(msg)


@dataclass
class _Reference:
    cls: type[BaseModelClass]  # an scvi-tools model class with ArchesMixin (load_query_data)
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


def _find_model_class(name: str) -> type[BaseModelClass]:
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

    from chromtools.models import check_saved_reference, reference_state_dict

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


def _check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder a model is saved to: an existing folder, or a new one in an existing folder."""
    folder = Path(model_dir)
    if folder.exists() and not folder.is_dir():
        msg = f"model_dir '{folder}' is a file; pass a folder to save the model in."
        raise NotADirectoryError(msg)
    if not folder.parent.is_dir():
        msg = f"The folder '{folder.parent}' of model_dir does not exist; create it first or pass another model_dir."
        raise FileNotFoundError(msg)
    return folder


def _save_model(model, model_dir: str | os.PathLike) -> None:
    """Save ``model`` (without its data) to ``model_dir``: written to a temporary folder inside it, then renamed.

    A model already saved there is replaced; a failed save leaves it untouched.
    """
    folder = _check_model_dir(model_dir)
    folder.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".saving.", dir=folder))
    try:
        model.save(str(tmp), overwrite=True, save_anndata=False)
        for f in tmp.iterdir():
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(model_dir: str | os.PathLike, adata=None, *, accelerator: str = "auto", device: int | str = "auto"):
    """Load a model that :func:`~chromtools.tl.train_reference` or :func:`~chromtools.tl.map_query` saved.

    The model's class (a chromtools model such as :class:`~chromtools.models.PeakSCANVI`, or an
    scvi-tools model such as PEAKVI or MULTIVI) is read from the folder, and a model saved by an
    incompatible chromtools version is refused (:func:`chromtools.models.check_saved_reference`).

    Parameters
    ----------
    model_dir
        The folder given as ``model_dir=`` to :func:`~chromtools.tl.train_reference` or
        :func:`~chromtools.tl.map_query`.
    adata
        Data to attach to the model (set up like the data it was trained on), e.g. the query to
        predict on with :meth:`chromtools.models.PeakSCANVI.predict`; ``None`` loads the model
        without data (chromtools models; scvi-tools models such as PEAKVI need their data).
    accelerator, device
        Where to load the weights (scvi-tools' ``load`` arguments).

    Returns
    -------
    The model.
    """
    from chromtools.models import check_saved_reference

    attrs = check_saved_reference(model_dir)
    cls: Any = _find_model_class(attrs["registry_"]["model_name"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no saved anndata.*")
        return cls.load(str(model_dir), adata=adata, accelerator=accelerator, device=device)
