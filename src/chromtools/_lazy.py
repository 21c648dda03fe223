"""Lazy attribute loading for the package namespaces (PEP 562), standard library only.

``import chromtools`` must stay cheap for scanpy users who only want ``ct.io``: the namespaces,
and inside ``ct.models`` and ``ct.tl`` each public name, are imported on first access, so torch,
scvi-tools and Lightning load only when a model is used. We keep this helper instead of the
``lazy_loader`` package because it is twenty lines and not among our dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    package: str, exports: Mapping[str, list[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``__getattr__``, ``__dir__`` and ``__all__`` for a package that loads names on demand.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Submodule name (relative, e.g. ``"_denoise"``) mapped to the public names it defines; a
        submodule mapped to an empty list is exported itself (``ct.pp`` from ``chromtools``).
    """
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names or [module]:
            where[name] = module
    public = sorted(where)

    def __getattr__(name: str) -> Any:
        if name not in where:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        module = importlib.import_module(f"{package}.{where[name]}")
        value = module if not exports[where[name]] else getattr(module, name)
        # cache it in the package so later look-ups skip __getattr__
        importlib.import_module(package).__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return [*public, "__version__"] if package == "chromtools" else list(public)

    return __getattr__, __dir__, public
