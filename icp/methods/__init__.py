"""The one method registry: ``@register`` a :class:`Method` subclass and it is trainable by name.

Adding a method = one new file in this package defining a ``Method`` subclass with ``name`` and
``forward_train``, imported in ``_BUILTIN`` below, and its name and ``Options`` dataclass (documented fields with
defaults) in :data:`icp.methods.options.OPTIONS`, which knows every method's name and options without torch.

This module imports no torch: the grid's expansion and config validation (:func:`validate_options`,
:func:`options_of`, :func:`list_methods`) read only :mod:`icp.methods.options`; :func:`get` imports the methods.
"""
from __future__ import annotations

import dataclasses
import importlib

from icp.methods.options import OPTIONS, NoOptions

METHODS: dict[str, type[Method]] = {}

_BUILTIN = ("ce", "ls", "icp", "pskd", "aikd", "cskd", "tfkd", "byot", "vae")
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
        raise TypeError(f"method '{cls.name}': its name and Options must be in icp.methods.options.OPTIONS")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise TypeError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    for mod in _BUILTIN:
        importlib.import_module(f"icp.methods.{mod}")


def options_of(name: str) -> type:
    """A method's ``Options`` dataclass, without importing the method (nor torch)."""
    if name not in OPTIONS:
        from icp.config import ConfigError, did_you_mean

        raise ConfigError(f"method.name: unknown method '{name}'{did_you_mean(name, OPTIONS)}")
    return OPTIONS[name]


def get(name: str) -> type[Method]:
    options_of(name)  # an unknown name: the one-line error
    _load_builtin()
    return METHODS[name]


def list_methods() -> list[str]:
    return sorted(OPTIONS)


def validate_options(name: str, options: dict) -> dict:
    """Validate ``method.options`` against the method's Options dataclass; return it with defaults filled in."""
    from icp.config import dataclass_from_options

    return dataclasses.asdict(dataclass_from_options(options_of(name), options, "method.options."))


def build_method(name: str, model, options: dict, ctx: MethodContext) -> Method:
    cls = get(name)
    from icp.config import ConfigError, dataclass_from_options

    kind = "generative" if getattr(model, "generative", False) else "classifier"
    if kind not in cls.supports:
        fits = [m for m in list_methods() if kind in get(m).supports]
        raise ConfigError(f"method.name: '{name}' trains {' or '.join(cls.supports)} models, and model "
                          f"'{ctx.model_name}' is a {kind}; methods for it: {', '.join(fits)}")
    return cls(model, dataclass_from_options(cls.Options, options, "method.options."), ctx)


__all__ = ["Batch", "Method", "MethodContext", "NoOptions", "TrainOutput", "METHODS", "OPTIONS",
           "register", "get", "options_of", "list_methods", "validate_options", "build_method"]
