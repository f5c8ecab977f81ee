"""The one method registry: ``@register`` a :class:`Method` subclass and it is trainable by name.

Adding a method = one new file in this package (or in another installed package, named under the ``icp.methods``
entry point group): its ``Options`` dataclass and :func:`~icp.methods.options.declare` first, then its ``Method``
subclass with ``name`` and ``forward_train`` (see :mod:`icp.methods.options`). Nothing else names it.

This module imports no torch: the grid's expansion and config validation (:func:`validate_options`,
:func:`options_of`, :func:`list_methods`) read only the declarations (:data:`icp.methods.options.OPTIONS`);
:func:`get` imports the method's module in full.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from icp.methods.options import OPTIONS, SOURCES, NoOptions
from icp.schema import ConfigError, dataclass_from_options, did_you_mean

METHODS: dict[str, type[Method]] = {}

_BASE = ("Batch", "Method", "MethodContext", "TrainOutput")  # from icp.methods.base (torch), on first use


def __getattr__(name: str):
    if name in _BASE:
        from icp.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if OPTIONS.get(cls.name) is not cls.Options:
        raise TypeError(f"method '{cls.name}': its name and Options must be declared first "
                        "(icp.methods.options.declare)")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise TypeError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def options_of(name: str) -> type:
    """A method's ``Options`` dataclass, without importing the method (nor torch)."""
    if name not in OPTIONS:
        raise ConfigError(f"method.name: unknown method '{name}'{did_you_mean(name, OPTIONS)}")
    return OPTIONS[name]


@functools.lru_cache(maxsize=None)
def option_defaults(name: str) -> dict[str, Any]:
    """A method's options at their defaults (its ``Options`` fields that have one), without importing the method."""
    out = {}
    for f in dataclasses.fields(options_of(name)):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def get(name: str) -> type[Method]:
    """The Method class of ``name``, its module imported in full (torch); one line if the module registers none."""
    options_of(name)  # an unknown name: the one-line error
    if name not in METHODS:
        importlib.import_module(SOURCES[name])
    if name not in METHODS:
        raise ConfigError(f"method.name: {SOURCES[name]} declares '{name}' but registers no Method class with "
                          f"that name (@register, name = '{name}')")
    return METHODS[name]


def list_methods() -> list[str]:
    return sorted(OPTIONS)


def validate_options(name: str, options: dict) -> dict:
    """Validate ``method.options`` against the method's Options dataclass; return it with defaults filled in."""
    return dataclasses.asdict(dataclass_from_options(options_of(name), options, "method.options."))


def build_method(name: str, model, options: dict, ctx: MethodContext) -> Method:
    cls = get(name)
    kind = "generative" if getattr(model, "generative", False) else "classifier"
    if kind not in cls.supports:
        fits = [m for m in list_methods() if kind in get(m).supports]
        raise ConfigError(f"method.name: '{name}' trains {' or '.join(cls.supports)} models, and model "
                          f"'{ctx.model_name}' is a {kind}; methods for it: {', '.join(fits)}")
    return cls(model, dataclass_from_options(cls.Options, options, "method.options."), ctx)


__all__ = ["Batch", "Method", "MethodContext", "NoOptions", "TrainOutput", "METHODS", "OPTIONS",
           "register", "get", "options_of", "option_defaults", "list_methods", "validate_options", "build_method"]
