"""The one method registry: ``@register`` a :class:`Method` subclass and it is trainable by name.

Adding a method = one new file in this package defining a ``Method`` subclass with ``name``, an ``Options``
dataclass (documented fields with defaults) and ``forward_train``; import it in ``_BUILTIN`` below.
"""
from __future__ import annotations

import dataclasses
import importlib

from icp.methods.base import Batch, Method, MethodContext, NoOptions, TrainOutput

METHODS: dict[str, type[Method]] = {}

_BUILTIN = ("ce", "ls", "icp", "pskd", "aikd", "cskd", "tfkd", "byot", "vae")


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise TypeError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    for mod in _BUILTIN:
        importlib.import_module(f"icp.methods.{mod}")


def get(name: str) -> type[Method]:
    _load_builtin()
    if name not in METHODS:
        from icp.config import ConfigError, did_you_mean

        raise ConfigError(f"method.name: unknown method '{name}'{did_you_mean(name, METHODS)}")
    return METHODS[name]


def list_methods() -> list[str]:
    _load_builtin()
    return sorted(METHODS)


def validate_options(name: str, options: dict) -> dict:
    """Validate ``method.options`` against the method's Options dataclass; return it with defaults filled in."""
    from icp.config import dataclass_from_options

    return dataclasses.asdict(dataclass_from_options(get(name).Options, options, "method.options."))


def build_method(name: str, model, options: dict, ctx: MethodContext) -> Method:
    cls = get(name)
    from icp.config import ConfigError, dataclass_from_options

    kind = "generative" if getattr(model, "generative", False) else "classifier"
    if kind not in cls.supports:
        fits = [m for m in list_methods() if kind in get(m).supports]
        raise ConfigError(f"method.name: '{name}' trains {' or '.join(cls.supports)} models, and model "
                          f"'{ctx.model_name}' is a {kind}; methods for it: {', '.join(fits)}")
    return cls(model, dataclass_from_options(cls.Options, options, "method.options."), ctx)


__all__ = ["Batch", "Method", "MethodContext", "NoOptions", "TrainOutput", "METHODS", "register", "get",
           "list_methods", "validate_options", "build_method"]
