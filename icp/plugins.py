"""Where the registries find their plugins, torch-free: the methods (:mod:`icp.methods.options`), the models
(:mod:`icp.models`) and the figures (:mod:`icp.figures`) are each a module of their package or a module that
another installed package names under an entry point group (``icp.methods``, ``icp.models``, ``icp.figures``)."""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Collection


def plugin_modules(package: str, group: str, skip: Collection[str] = ()) -> list[str]:
    """The dotted names of a registry's modules: ``package``'s own modules by name (but private ones, ``_x``, and
    those named in ``skip``), then the modules of the entry points of ``group`` by entry point name."""
    path = importlib.import_module(package).__path__
    own = [f"{package}.{info.name}" for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)
           if not info.name.startswith("_") and info.name not in skip]
    return own + [ep.module for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name)]
