"""The ``__init__`` policy of every occo subpackage: names resolve on first use (PEP 562).

A package lists where each public name lives; nothing is imported until a name is asked
for, so ``import occo.data.version`` (or the metric registry) loads no torch, numpy or
OpenCV and ``occo --help`` starts fast::

    from occo.data.lazy import lazy_exports

    __getattr__, __all__ = lazy_exports(__name__, {"occo.data.io": ("read_image",)})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """A package's module ``__getattr__`` and ``__all__`` from where its names live.

    Args:
        package: the package's ``__name__`` (named in the error for an unknown name).
        modules: ``{module: names it defines}``.

    Returns:
        ``(__getattr__, __all__)``: the first imports a name's module when the name is
        first asked for; the second lists every name, sorted.
    """
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__, sorted(where)


def refuse_bare_import(package: str) -> None:
    """Raise ImportError unless ``package`` was imported as ``occo.<name>``.

    The repository root is the package ``occo`` itself, so from a clone's root
    ``import models`` would load a second copy of occo's classes (a network the Fuser
    would not recognise). Every subpackage's ``__init__`` calls this first.
    """
    if not package.startswith("occo."):
        raise ImportError(
            f"import occo.{package}, not {package}: from the repository root, a bare "
            "subpackage name would load a second copy of occo's classes"
        )
