"""Saved reference models: the format version written with a model and the check that refuses another one."""

from __future__ import annotations

import os

import torch

#: Version of the saved-model format. A reference saved with another format is refused on load.
MODEL_FORMAT_VERSION = 1


def set_model_format(model) -> None:
    """Record chromtools' version and saved-model format on ``model`` (any scvi-tools model).

    Saved with the model, they let :func:`check_saved_reference` refuse the model when a later
    chromtools cannot read it.
    """
    from chromtools import __version__

    model.chromtools_version_ = __version__
    model.chromtools_format_ = MODEL_FORMAT_VERSION


def read_saved_attributes(dir_path: str | os.PathLike, prefix: str | None = None) -> dict:
    """The ``attr_dict`` of a model saved by scvi-tools' ``save`` (without building the model)."""
    path = os.path.join(str(dir_path), f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        msg = (
            f"'{dir_path}' holds no saved model ({os.path.basename(path)} is missing); pass the folder given to save()."
        )
        raise FileNotFoundError(msg)
    return torch.load(path, map_location="cpu", weights_only=False)["attr_dict"]


def check_saved_reference(dir_path, *, prefix: str | None = None, model_name: str | None = None) -> dict:
    """Refuse a reference saved by an incompatible chromtools version; return its attributes."""
    from chromtools import __version__

    attrs = read_saved_attributes(dir_path, prefix)
    saved_name = attrs.get("registry_", {}).get("model_name")
    if model_name is not None and saved_name is not None and saved_name != model_name:
        msg = f"The reference in '{dir_path}' is a {saved_name}, not a {model_name}; load it with {saved_name}.load()."
        raise ValueError(msg)
    if "chromtools_version_" not in attrs:
        return attrs  # a plain scvi-tools model: nothing chromtools-specific to check
    fmt = attrs.get("chromtools_format_")
    if fmt != MODEL_FORMAT_VERSION:
        msg = (
            f"The reference in '{dir_path}' was saved by chromtools {attrs['chromtools_version_']} "
            f"(model format {fmt}); this chromtools {__version__} reads format {MODEL_FORMAT_VERSION} only. "
            f"Retrain the reference with this version, or map the query with chromtools {attrs['chromtools_version_']}."
        )
        raise ValueError(msg)
    return attrs
