"""A grid run's config: its recipe file and ``--set`` items resolved into the config it trains
(:func:`icp.config.resolve`), its digest, and the ``--set`` items the grid derives from a resolved config (a few-shot
run's step budget).

A recipe file is read once per process (:func:`recipe_tree`); nothing here imports torch at module level
(resolving a config does).
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import yaml

from icp.schema import ConfigError, read_yaml


@functools.lru_cache(maxsize=None)
def recipe_tree(path: str) -> dict:
    """A recipe file's mapping, read once (never modified: :func:`icp.config.resolve` copies it)."""
    return read_yaml(path, "recipe")


def resolve(recipe: str, overrides: Sequence[str]):
    """The :class:`icp.config.Config` of a recipe file with ``overrides`` (``--set`` items) applied, validated."""
    from icp import config

    return config.resolve(recipe_tree(recipe), list(overrides))


@functools.lru_cache(maxsize=None)
def resolved(recipe: str, overrides: tuple[str, ...]) -> dict:
    """:func:`resolve` as a plain mapping, cached (the caller must not modify it)."""
    return resolve(recipe, overrides).to_dict()


def config_digest(run) -> str:
    """The digest of the config a grid's ``run`` (:class:`icp.grid.Run`) trains (:meth:`icp.config.Config.digest`):
    a record under its id with another digest is another config's run (:func:`icp.records.set_aside_stale`,
    ``icp status``)."""
    return resolve(run.recipe, run.overrides).digest()


def check_recipe(recipe: str, dataset: str, model: str) -> None:
    """A recipe of the grid: it has no ``method`` section (the grid sets the method), and it resolves for the
    dataset and model it serves."""
    if recipe_tree(recipe).get("method") is not None:
        raise ConfigError(f"recipe {recipe}: a recipe has no 'method' section (the grid sets the method)")
    resolve(recipe, [f"data.dataset={dataset}", f"model.name={model}"])


def yaml_value(value: Any) -> str:
    """A value as a ``--set`` item writes it (YAML flow style)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def few_shot_steps(budgets: dict, dataset: str, scenario: str, where: str) -> Optional[int]:
    """A block's ``optimizer_steps`` for a few-shot run of ``dataset`` (None: the recipe's epochs)."""
    if not budgets or not str(scenario).endswith("shot"):
        return None
    if dataset not in budgets:
        raise ConfigError(f"{where}: optimizer_steps has no budget for dataset '{dataset}' (has: "
                          f"{', '.join(sorted(budgets))})")
    return int(budgets[dataset])


def step_budget(recipe: str, overrides: list[str], steps: int) -> list[str]:
    """``--set`` items that train a few-shot run for ``steps`` optimizer steps: epochs = ceil(steps / steps per
    epoch), with shots × classes training images; test metrics about 50 times a run (``train.eval_every``), since
    a 5-shot run's epochs are a few steps each. Every method of a cell gets the same number of steps."""
    from icp import data

    cfg = resolve(recipe, overrides)
    images = cfg.scenario.shots * data.INFO[cfg.data.dataset].num_classes
    per_epoch = images // cfg.train.batch_size if cfg.data.drop_last else -(-images // cfg.train.batch_size)
    epochs = -(-steps // max(1, per_epoch))
    return [f"train.epochs={epochs}", f"train.eval_every={max(1, epochs // 50)}"]
