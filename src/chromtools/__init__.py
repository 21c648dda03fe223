"""chromtools: chromatin accessibility tools for AnnData and MuData.

The namespaces (``ct.pp``, ``ct.tl``, ``ct.pl``, ``ct.io``, ``ct.datasets``, ``ct.models``,
``ct.metrics``) are imported on first use, so ``import chromtools`` costs almost nothing.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._lazy import attach

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the namespaces load on first access
    from . import datasets, io, metrics, models, pl, pp, tl

try:
    __version__ = version("chromtools")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__getattr__, __dir__, _namespaces = attach(
    __name__, {name: [] for name in ("datasets", "io", "metrics", "models", "pl", "pp", "tl")}
)
__all__ = ["__version__", *_namespaces]
