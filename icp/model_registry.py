"""The model registry, without torch: every model's name, kind (classifier or generative), options with their
defaults (its constructor's signature, ``(num_classes, in_channels=3, **options)``) and the checks of their values.
Grid expansion and config validation read only this module (the Snakefile imports no torch); a constructor imports
its network from :mod:`icp.models` (torch, where the models are described) when it builds one. ``icp.models``
re-exports this registry.
"""
from __future__ import annotations

import inspect
import numbers
import os
from pathlib import Path
from typing import Callable, Dict, Optional

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


MODELS: Dict[str, Callable] = {}
GENERATIVE: set = set()  # names of generative models (a VAE: no classifier head, its own objective)
_CHECKS: Dict[str, Callable[..., None]] = {}  # name -> check of its option values (keyword arguments; ValueError)


def register(name: str, generative: bool = False, check: Optional[Callable[..., None]] = None):
    """Decorator adding a model constructor to ``MODELS`` under ``name``; ``check`` is called with its options."""
    def deco(fn):
        if name in MODELS:
            raise ValueError(f"model '{name}' is already registered")
        MODELS[name] = fn
        if generative:
            GENERATIVE.add(name)
        if check is not None:
            _CHECKS[name] = check
        return fn
    return deco


def list_models(kind: str | None = None) -> list:
    """Registered model names: all, or only ``classifier`` or ``generative`` ones."""
    return sorted(n for n in MODELS if kind is None or (n in GENERATIVE) == (kind == "generative"))


def check_options(name: str, options: dict) -> dict:
    """Validate a model name, its options and their values; return the options with the constructor's defaults
    filled in."""
    if name not in MODELS:
        from icp.config import nearest  # the one notion of a near name

        close = nearest(str(name), MODELS)
        hint = f"; did you mean '{close}'?" if close else ""
        raise ValueError(f"unknown model '{name}'{hint} (known: {', '.join(list_models())})")
    params = {k: p for k, p in inspect.signature(MODELS[name]).parameters.items()
              if k not in ("num_classes", "in_channels")}
    bad = sorted(set(options) - set(params))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for model '{name}' (valid options: {list(params) or 'none'})")
    options = {k: options.get(k, p.default) for k, p in params.items()}
    if name in _CHECKS:
        _CHECKS[name](**options)
    return options


def build_model(name: str, num_classes: int, in_channels: int = 3, input_size: int | None = None,
                **options) -> "ClassifierNet":  # noqa: F821 (icp.models.ClassifierNet)
    """Build a registered model; unknown names and options raise ``ValueError``. ``input_size`` (the data's
    height) fills ``image_size`` for models that need it (the VAE) unless the options set it."""
    if input_size is not None and "image_size" in inspect.signature(MODELS.get(name, build_model)).parameters:
        options = {"image_size": input_size, **options}
    options = check_options(name, options)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)


# ------------------------------------------------------------------ option checks (the networks call them too)
def check_shortcut(shortcut: str) -> None:
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def check_stem(stem: str) -> None:
    if stem not in ("3x3", "authors"):
        raise ValueError(f"stem must be '3x3' or 'authors', got {stem!r}")


def check_vae(image_size: int, latent: int, width: int, beta: float) -> None:
    if not all(isinstance(v, numbers.Integral) for v in (image_size, latent, width)):
        raise ValueError(f"image_size, latent and width must be integers, got {image_size!r}, {latent!r}, {width!r}")
    if image_size % 4 or image_size < 8:
        raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {image_size}")
    if latent < 1 or width < 1 or not beta >= 0:
        raise ValueError(f"latent and width must be >= 1 and beta >= 0, got {latent}, {width}, {beta}")


# ------------------------------------------------------------------ the models (icp.models describes them)
@register("resnet20", check=check_shortcut)
def resnet20(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> "CifarResNet":  # noqa: F821
    from icp.models import CifarResNet

    return CifarResNet(20, num_classes, in_channels, shortcut)


@register("resnet32", check=check_shortcut)
def resnet32(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> "CifarResNet":  # noqa: F821
    from icp.models import CifarResNet

    return CifarResNet(32, num_classes, in_channels, shortcut)


@register("resnet56", check=check_shortcut)
def resnet56(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> "CifarResNet":  # noqa: F821
    from icp.models import CifarResNet

    return CifarResNet(56, num_classes, in_channels, shortcut)


@register("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int = 3) -> "PreActResNet":  # noqa: F821
    from icp.models import PreActResNet

    return PreActResNet(num_classes, in_channels, (2, 2, 2, 2))


@register("wrn16_4", check=check_dropout)
def wrn16_4(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> "WideResNet":  # noqa: F821
    from icp.models import WideResNet

    return WideResNet(16, 4, num_classes, in_channels, dropout)


@register("resnet50_cifar", check=check_stem)
def resnet50_cifar(num_classes: int, in_channels: int = 3, stem: str = "3x3") -> "ResNet50Cifar":  # noqa: F821
    from icp.models import ResNet50Cifar

    return ResNet50Cifar(num_classes, in_channels, stem)


@register("vae", generative=True, check=check_vae)
def vae(num_classes: int = 0, in_channels: int = 1, image_size: int = 28, latent: int = 32, width: int = 32,
        beta: float = 1.0) -> "ConvVAE":  # noqa: F821
    from icp.models import ConvVAE

    return ConvVAE(num_classes, in_channels, image_size, latent, width, beta)
