"""A grid file: reading it, its ``params`` section and its validation against the grid schema
(``workflow/schemas/grid.schema.yaml``; what a grid file holds: :mod:`icp.grid`).

The Snakefile reads a grid file without the check and validates it with Snakemake's ``validate`` against the same
schema; ``icp`` commands read it with :func:`load`, where a bad grid is one line: file, item, what is accepted and
the nearest spelling.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from icp.naming import scenario_spellings
from icp.schema import ConfigError, did_you_mean, read_yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "grid.schema.yaml"


def load(path: str | Path, check: bool = True, apply_params: bool = True) -> dict:
    """Read a grid file and (``check``) validate it with its schema (the Snakefile validates it with Snakemake's
    ``validate`` instead, against the same schema)."""
    grid = read_yaml(path, "grid file")
    if check:
        validate_schema(grid, str(path))
    return with_params(grid, str(path)) if apply_params else grid


def with_params(grid: dict, where: str = "grid") -> dict:
    """Apply the grid's ``params`` section: ``seeds`` and ``set`` from a section of another YAML file (the laptop
    grid's knobs live in DVC's ``params.yaml``, so that ``dvc params diff`` shows them). ``seeds`` replaces the
    grid's, ``set`` items come after the grid's own."""
    ref = grid.get("params")
    if not ref:
        return grid
    section = read_yaml(ref["file"], "params file")
    for part in str(ref["key"]).split("."):
        if not isinstance(section, dict) or part not in section:
            raise ConfigError(f"{where}: params: {ref['file']} has no section '{ref['key']}'")
        section = section[part]
    unknown = sorted(set(section) - {"seeds", "set"})
    if unknown:
        raise ConfigError(f"{where}: params: {ref['file']}:{ref['key']} may set seeds and set only, not {unknown}")
    out = {k: v for k, v in grid.items() if k != "params"}
    if "seeds" in section:
        out["seeds"] = list(section["seeds"])
    out["set"] = [*grid.get("set", []), *section.get("set", [])]
    return out


def validate_schema(grid: dict, where: str = "grid") -> None:
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(grid), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        at = ".".join(str(p) for p in e.path) or "(top level)"
        message = e.message
        if e.validator == "pattern" and "description" in e.schema:  # say what is accepted, not the regex
            message = f"{e.instance!r} is not {e.schema['description']}"
            if e.path and "scenarios" in e.path:
                message += did_you_mean(str(e.instance), scenario_spellings(str(e.instance)))
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):  # a key typo: the nearest key
            known = set(e.schema.get("properties") or {})
            unexpected = sorted(k for k in e.instance if k not in known)
            if unexpected and known:
                message = (f"unknown key '{unexpected[0]}'{did_you_mean(str(unexpected[0]), known)}"
                           + (f" (also unknown: {', '.join(map(str, unexpected[1:]))})" if unexpected[1:] else ""))
        raise ConfigError(f"{where}: {at}: {message}")


def grid_files(folder: str | Path = "config") -> list[str]:
    """The grid files in ``folder`` (``config/paper.yaml``, ``config/laptop.yaml``, ...): its YAML files whose
    mapping declares ``studies`` (a training config or recipe never does), sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []:
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(tree, dict) and isinstance(tree.get("studies"), dict):
            out.append(str(path))
    return out
