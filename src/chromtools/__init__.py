"""chromtools: chromatin accessibility tools for AnnData and MuData."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, metrics, models, pl, pp, tl

try:
    __version__ = version("chromtools")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__", "datasets", "io", "metrics", "models", "pl", "pp", "tl"]
