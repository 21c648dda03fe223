"""Docstring fragments for parameters that recur across chromtools, so the docs say the same thing everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

doc_random_state = """\
random_state
    Seed for every random choice made by this function. The same seed gives the same result."""

doc_copy = """\
copy
    Return a modified copy instead of writing into ``adata``."""

doc_key_added = """\
key_added
    Name of the slot(s) the results are written to (see *Returns*)."""

doc_accelerator = """\
accelerator
    Lightning accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"mps"`` ... ``"auto"`` picks a GPU when one is visible."""

doc_devices = """\
devices
    Lightning devices: ``"auto"``, a number of devices, or a list of device indices."""

doc_progress = """\
progress
    Show a progress bar."""

doc_data = """\
data
    An :class:`~anndata.AnnData`, or a :class:`~mudata.MuData` whose modality ``mod`` is used."""

doc_mod = """\
mod
    Modality of a MuData to use (muon's convention: ``'atac'`` by default). Ignored for AnnData."""

_FRAGMENTS = {
    "random_state": doc_random_state,
    "copy": doc_copy,
    "key_added": doc_key_added,
    "accelerator": doc_accelerator,
    "devices": doc_devices,
    "progress": doc_progress,
    "data": doc_data,
    "mod": doc_mod,
}


def _indent(text: str, indent: str) -> str:
    lines = text.splitlines()
    return "\n".join([lines[0], *[indent + line if line else line for line in lines[1:]]])


def doc_params(func: F) -> F:
    """Replace ``{name}`` placeholders of known fragments in ``func.__doc__``.

    Only the names defined in this module are substituted, so other braces in a docstring are
    left alone. Each fragment is indented like the placeholder it replaces.
    """
    doc = func.__doc__
    if doc:
        for name, fragment in _FRAGMENTS.items():
            token = "{" + name + "}"
            while token in doc:
                at = doc.index(token)
                line_start = doc.rfind("\n", 0, at) + 1
                indent = doc[line_start:at]
                doc = doc[:at] + _indent(fragment, indent) + doc[at + len(token) :]
        func.__doc__ = doc
    return func
