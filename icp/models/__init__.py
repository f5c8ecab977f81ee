"""The model registry, without torch: every model's name, kind (classifier or generative), options with their
defaults and the checks of their values. Grid expansion and config validation read only this (the Snakefile
imports no torch); :func:`build_model` imports a model's file in full when it builds one.

**A model is one file.** A module in ``icp/models/`` defines, at its top and without torch, a function whose
parameters are the model's options with their defaults and whose body checks their values (``ValueError`` naming
the option), then calls :func:`declare` with the model's name(s), and only after that imports torch, defines the
network and ``@register``-s its constructor, ``(num_classes, in_channels, **options)``::

    def options(width: int = 16) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")

    declare({"mine": options})   # the torch-free registry reads this file up to here

    import torch ...

    @register("mine")
    def mine(num_classes: int, in_channels: int = 3, width: int = 16) -> ClassifierNet: ...

:data:`MODELS` (name -> its options function) finds every such module without importing torch: it imports each
one in *declaring* mode (:mod:`icp.declaring`), where :func:`declare` records the declaration and stops the module
there; :func:`build_model` later imports the whole file. Nothing else lists the models.
``icp/models/base.py`` (:data:`NOT_MODELS`) holds what the networks share: :class:`~icp.models.base.ClassifierNet`,
the base of every classifier (stage taps, ``feature_channels``, the ``classifier`` head), and the pre-activation
blocks.

FID's Inception-v3 feature network is named here too (:data:`INCEPTION_URL`, :func:`torch_hub_dir`), torch-free, so
that :mod:`icp.preflight` checks for its file.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Callable, Iterator

from icp import declaring
from icp.plugins import plugin_modules
from icp.schema import ConfigError, nearest  # the one notion of a near name

# FID's Inception-v3 feature network (torch-fidelity's weights, as published FIDs use): where it comes from and the
# file name it has in torch hub's cache (icp.metrics.inception_weights loads it; icp.preflight checks for it)
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``,
    else ``~/.cache/torch/hub``."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


# ------------------------------------------------------------------------------------------ the catalogue
NOT_MODELS = ("base",)  # modules of this package that hold no model: what the networks share (torch)
ENTRY_POINTS = "icp.models"  # the entry point group of models in other installed packages
BUILD_ARGS = ("num_classes", "in_channels")  # a constructor's arguments that are not options
_FOUND: dict[str, Callable[..., None]] = {}  # model name -> its options function, as declared
_KINDS: dict[str, bool] = {}  # model name -> generative
SOURCES: dict[str, str] = {}  # model name -> the module that declares it
_CONSTRUCTORS: dict[str, Callable] = {}  # model name -> its @register-ed constructor (the module imported in full)
_SCANNED: list[bool] = []


def _options(fn: Callable, skip: tuple = ()) -> list[tuple[str, object]]:
    return [(k, p.default) for k, p in inspect.signature(fn).parameters.items() if k not in skip]


def declare(options: dict[str, Callable[..., None]], generative: bool = False) -> None:
    """Declare the models a module defines: name -> its options function (the options are its parameters, each
    with its default; it raises ``ValueError`` on a bad value). ``generative``: no classifier head, its own
    objective (the VAE). Call it before any torch import: in declaring mode (:data:`MODELS` reading the module) it
    stops the module here."""
    module = sys._getframe(1).f_globals["__name__"]
    for name, check in options.items():
        if SOURCES.get(name, module) != module:
            raise ConfigError(f"model '{name}' is declared twice: in {SOURCES[name]} and in {module}")
        if any(default is inspect.Parameter.empty for _, default in _options(check)):
            raise ConfigError(f"model '{name}' ({module}): every option of {check.__name__} needs a default")
        _FOUND[name], _KINDS[name], SOURCES[name] = check, generative, module
    declaring.stop_here(module)


def register(name: str):
    """Decorator: the constructor of the declared model ``name``, ``(num_classes, in_channels, **options)``, its
    options those of the declaration with the same defaults."""
    def deco(fn: Callable) -> Callable:
        if SOURCES.get(name) != fn.__module__:
            raise ConfigError(f"model '{name}': {fn.__module__} must declare it first (icp.models.declare)")
        if _options(fn, BUILD_ARGS) != _options(_FOUND[name]):
            raise ConfigError(f"model '{name}': {fn.__name__} takes the options {_options(fn, BUILD_ARGS)}, its "
                              f"declaration {_options(_FOUND[name])}")
        _CONSTRUCTORS[name] = fn
        return fn
    return deco


def _scan() -> dict[str, Callable[..., None]]:
    """Every model: the modules of this package (of each folder on its ``__path__``) in name order, then those of
    the ``icp.models`` entry points of other installed packages (:func:`icp.plugins.plugin_modules`)."""
    if not _SCANNED:
        for module in plugin_modules(__name__, ENTRY_POINTS, NOT_MODELS):
            declaring.read(module, "model declaration")
        _SCANNED.append(True)
    return _FOUND


class _Catalogue(Mapping):
    """name -> options function of every model, discovered on first use (:func:`_scan`)."""

    def __getitem__(self, name: str) -> Callable[..., None]:
        return _scan()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(_scan()))

    def __len__(self) -> int:
        return len(_scan())


class _Generative(Set):
    """The names of the generative models (:func:`declare`'s ``generative``), discovered on first use."""

    def __contains__(self, name) -> bool:
        _scan()
        return _KINDS.get(name, False)

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in _scan() if _KINDS[n]])

    def __len__(self) -> int:
        return len(list(iter(self)))


# The models: name -> options function (its parameters: the options and their defaults). The one list of names.
MODELS: Mapping[str, Callable[..., None]] = _Catalogue()
GENERATIVE: Set = _Generative()  # names of generative models (a VAE: no classifier head, its own objective)


def is_generative(name: str) -> bool:
    """Whether model ``name`` is generative (a VAE: no classifier head, its own objective and baseline)."""
    return name in GENERATIVE


def list_models(kind: str | None = None) -> list:
    """Model names: all, or only ``classifier`` or ``generative`` ones."""
    return sorted(n for n in MODELS if kind is None or (n in GENERATIVE) == (kind == "generative"))


def check_options(name: str, options: dict) -> dict:
    """Validate a model name, its options and their values; return the options with the declared defaults filled
    in."""
    if name not in MODELS:
        close = nearest(str(name), MODELS)
        hint = f"; did you mean '{close}'?" if close else ""
        raise ValueError(f"unknown model '{name}'{hint} (known: {', '.join(list_models())})")
    params = inspect.signature(MODELS[name]).parameters
    bad = sorted(set(options) - set(params))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for model '{name}' (valid options: {list(params) or 'none'})")
    options = {k: options.get(k, p.default) for k, p in params.items()}
    MODELS[name](**options)
    return options


def constructor(name: str) -> Callable:
    """The constructor of model ``name``, its file imported in full (torch)."""
    check_options(name, {})  # an unknown name: the one-line error
    if name not in _CONSTRUCTORS:
        importlib.import_module(SOURCES[name])
    if name not in _CONSTRUCTORS:
        raise ConfigError(f"{SOURCES[name]} declares model '{name}' but registers no constructor for it "
                          f"(@register({name!r}))")
    return _CONSTRUCTORS[name]


def build_model(name: str, num_classes: int, in_channels: int = 3, input_size: int | None = None,
                **options) -> "ClassifierNet":  # noqa: F821 (icp.models.base.ClassifierNet, or the VAE)
    """Build a model by name; unknown names and options raise ``ValueError``. ``input_size`` (the data's height)
    fills ``image_size`` for models that take it (the VAE) unless the options set it."""
    if input_size is not None and name in MODELS and "image_size" in inspect.signature(MODELS[name]).parameters:
        options = {"image_size": input_size, **options}
    options = check_options(name, options)
    return constructor(name)(num_classes=num_classes, in_channels=in_channels, **options)


__all__ = ["MODELS", "GENERATIVE", "is_generative", "SOURCES", "INCEPTION_URL", "INCEPTION_FILE", "torch_hub_dir", "declare",
           "register", "list_models", "check_options", "constructor", "build_model"]
