"""The generic option machinery, ground floor: it imports nothing from ``icp``, so every module may import it.

Typed option sets are dataclasses; a mapping read from YAML (plus ``--set key=value`` overrides, dotted keys,
YAML-parsed values) is checked against one field by field and built into it. Each problem is a one-line
:class:`ConfigError` that names the dotted key:

* an unknown key names the nearest valid one (:func:`nearest`, :func:`did_you_mean`);
* a wrong type or choice names the expected value (:func:`coerce`, from the field's annotation);
* a value out of range names the range (``ranges`` of :func:`build_dataclass`: dotted key -> check).

The training run's schema (:mod:`icp.config`), the methods' options (:mod:`icp.methods`) and the model registry
(:mod:`icp.models`) are built on it; each schema states its own fields, here is only how any is read.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml

# A range check of one dotted key: (predicate, description of the expected value).
Range = tuple[typing.Callable[[Any], bool], str]


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


def nearest(word: str, valid: typing.Iterable[str]) -> Optional[str]:
    """The valid word nearest to ``word``, never ``word`` itself, or None where none is near. Nearest by the
    longest run of characters they share (as a share of ``word``: ``resnet18x`` is nearer ``preact_resnet18`` than
    ``resnet56``), then by difflib's ratio; near enough when they share a run of over half of ``word``, or have a
    ratio of at least 0.5. Case is ignored: a word that differs from a valid one only in case gets that one."""
    best, best_key = None, None
    w = str(word).lower()
    for candidate in valid:
        c = str(candidate).lower()
        if str(candidate) == str(word):
            continue
        if c == w:  # the same word in another case ('ICP-adam'): that one
            return candidate
        m = difflib.SequenceMatcher(None, w, c)
        run = max((b.size for b in m.get_matching_blocks()), default=0) / max(1, len(w))
        key = (run, m.ratio())
        if (run > 0.5 or key[1] >= 0.5) and (best_key is None or key > best_key):
            best, best_key = candidate, key
    return best


def did_you_mean(word: str, valid: typing.Iterable[str]) -> str:
    """'; did you mean 'x'?' for the nearest valid word (:func:`nearest`), else the list of valid words."""
    valid = sorted(valid)
    if not valid:
        return "; nothing is accepted here"
    close = nearest(word, valid)
    return f"; did you mean '{close}'?" if close else f"; valid: {', '.join(valid)}"


def unknown_key_error(key: str, valid: typing.Iterable[str]) -> ConfigError:
    """The error for an unknown dotted ``key``: its last part and the nearest of the ``valid`` keys beside it."""
    return ConfigError(f"unknown key '{key}'{did_you_mean(key.rsplit('.', 1)[-1], valid)}")


def existing_dir(path: str | Path, what: str) -> Path:
    """``path`` if it is a directory, else a one-line error naming it (and the nearest sibling that exists)."""
    path = Path(path)
    if path.is_dir():
        return path
    parent = next((p for p in path.parents if p.is_dir()), Path("."))
    rest = path.relative_to(parent).parts[0]
    siblings = [c.name for c in parent.iterdir() if c.is_dir()] if parent.is_dir() else []
    close = difflib.get_close_matches(rest, siblings, n=1, cutoff=0.6)
    hint = f"; did you mean {parent / close[0]}?" if close else ""
    raise ConfigError(f"{path}: no such {what}{hint}")


def type_name(tp: Any) -> str:
    """How an error names the values an annotation accepts: 'an integer', 'one of 'a', 'b'', 'a number or null'."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def field_docs(cls: type) -> list[tuple[str, Any, Any, str]]:
    """Each field of dataclass ``cls`` as (name, annotation, default, its comment): the comment lines right above the
    field and the one at the end of its line, from the class's source, so that a reference page generated from the
    schema says what the source says (tools/readme.py's ``config-reference``)."""
    import inspect
    import re
    import sys

    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    lines, above, notes = inspect.getsource(cls).splitlines(), [], {}
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m and m[1] in hints:
            inline = text.split("  # ", 1)[1] if "  # " in text else ""
            notes[m[1]] = " ".join(filter(None, [" ".join(above), inline]))
        above = []
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append((f.name, hints[f.name], default, notes.get(f.name, "")))
    return out


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            if arg is not type(None):
                try:
                    return coerce(value, arg, key)
                except ConfigError:
                    pass
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (bool, str, dict, list):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - schema author error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    hint = ""
    if origin is Literal and isinstance(value, str):  # a typo of one of the choices: the nearest of them
        close = nearest(value, [str(a) for a in typing.get_args(tp)])
        hint = f"; did you mean '{close}'?" if close else ""
    raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}{hint}")


def build_dataclass(cls: type, data: dict, prefix: str, ranges: Mapping[str, Range] | None = None) -> Any:
    """Build the dataclass ``cls`` from the mapping ``data``, whose keys are named ``prefix`` + field name in errors:
    every key must be a field, every value fit the field's annotation (:func:`coerce`) and the range that
    ``ranges`` gives its dotted key, if any. A field whose annotation is a dataclass is built from its sub-mapping,
    recursively; fields not given keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    ranges = ranges or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise unknown_key_error(f"{prefix}{key}", fields)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, data[name], f"{prefix}{name}.", ranges)
        else:
            key = f"{prefix}{name}"
            value = coerce(data[name], tp, key)
            check = ranges.get(key)
            if check is not None and not check[0](value):
                raise ConfigError(f"{key}: expected {check[1]}, got {value!r}")
            kwargs[name] = value
    return cls(**kwargs)


def dataclass_from_options(cls: type, options: dict, prefix: str) -> Any:
    """Validate a method's option mapping against its ``Options`` dataclass (shared by every method)."""
    return build_dataclass(cls, options, prefix)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_dotted(tree: dict, path: list[str], value: Any) -> None:
    """Set ``tree[path[0]][path[1]]... = value`` (an override), making the sections on the way; a part that is a
    value, not a section, is a one-line error."""
    node = tree
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a section")
        node = nxt
    node[path[-1]] = value


def yaml_error_line(path: str | Path, exc: Exception) -> str:
    """``FILE:LINE:COLUMN: not valid YAML (what is wrong)``, 1-based as editors count, from PyYAML's marks."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or \
        str(exc).splitlines()[0]
    return f"{where}: not valid YAML ({what})"


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file's mapping; a missing file or invalid YAML is a one-line ConfigError naming ``what``."""
    p = Path(path)
    if not p.is_file():
        near = p.parent.glob("*.y*ml") if p.parent.is_dir() else ()
        hint = nearest(p.name, [f.name for f in near])
        raise ConfigError(f"{what} not found: {p}" + (f"; did you mean '{p.with_name(hint)}'?" if hint else ""))
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(p, exc)) from None
