"""Reference models as map_query sees them: the model classes, and a trained model or saved folder resolved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

REFERENCE_KINDS = ("peakscanvi", "peaktrvae", "peakvi", "poissonvi", "multivi")


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
