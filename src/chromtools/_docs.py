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

doc_show = """\
show
    Show the figure and return ``None``. Default: show it when matplotlib is in interactive mode
    (as in Jupyter), otherwise return it."""

doc_save = """\
save
    Also write the figure to this path (format from its suffix, e.g. ``.png`` or ``.pdf``; the
    folder must exist). Unlike scanpy's ``save=``, this is the whole path, not a suffix."""

_FRAGMENTS = {
    "random_state": doc_random_state,
    "copy": doc_copy,
    "key_added": doc_key_added,
    "accelerator": doc_accelerator,
    "devices": doc_devices,
    "progress": doc_progress,
    "data": doc_data,
    "mod": doc_mod,
    "show": doc_show,
    "save": doc_save,
}


def _indent(text: str, indent: str) -> str:
    lines = text.splitlines()
    return "\n".join([lines[0], *[indent + line if line else line for line in lines[1:]]])


# Ours, not scanpy's `_doc_params` (private API) or docrep (no direct dependency): it fills only known names, indented.
def doc_params(func: F) -> F:
    """Replace ``{name}`` placeholders of known fragments in ``func.__doc__``.

    Only the names defined in this module are substituted, so other single braces in a docstring
    are left alone. Each fragment is indented like the placeholder it replaces. Doubled braces
    (``{{out_prefix}}``, written as in :meth:`str.format`) become single ones.
    """
    doc = func.__doc__
    if doc:
        doc = doc.replace("{{", "\x00").replace("}}", "\x01")  # escaped braces are never placeholders
        for name, fragment in _FRAGMENTS.items():
            token = "{" + name + "}"
            while token in doc:
                at = doc.index(token)
                line_start = doc.rfind("\n", 0, at) + 1
                indent = doc[line_start:at]
                doc = doc[:at] + _indent(fragment, indent) + doc[at + len(token) :]
        func.__doc__ = doc.replace("\x00", "{").replace("\x01", "}")
    return func
