"""Reading a registry module in *declaring* mode, without torch: the module declares what it defines at its top
(a model's options, :mod:`icp.models`), then imports torch; a registry that only needs the declaration imports it
with :func:`read`, and the module's ``declare`` calls :func:`stop_here`, which ends the import right there
(:class:`Declared`). A failed import leaves ``sys.modules``, so a later import (to build or train) runs the whole
file. Imports nothing from ``icp`` but :mod:`icp.schema`, so that every registry (the models', the methods') uses it."""
from __future__ import annotations

import importlib
import importlib.util
import sys

from icp.schema import ConfigError

_DECLARING: list[str] = []  # the modules being read for their declarations (innermost last)


class Declared(BaseException):
    """Stops a module read in declaring mode right after its declaration (a BaseException, so that no
    ``except Exception`` of the module swallows it)."""


def stop_here(module: str) -> None:
    """Called by a registry's ``declare`` once it has recorded ``module``'s declaration: ends the module's import
    where :func:`read` reads it; a full import goes on."""
    if _DECLARING and _DECLARING[-1] == module:
        raise Declared


def read(module: str, what: str) -> None:
    """Import ``module`` up to its declaration (all of it where it has none); nothing where it is imported already
    (in full: its declaration ran). A module that fails is one :class:`~icp.schema.ConfigError` line naming its
    file and ``what`` could not be read (``model declaration``)."""
    if module in sys.modules:
        return
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec else module
    _DECLARING.append(module)
    try:
        importlib.import_module(module)
    except Declared:
        pass
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file: one line naming it, wherever it is read
        raise ConfigError(f"{origin}: its {what} cannot be read ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        _DECLARING.pop()
