"""The compute-matched control: a baseline run given the training FLOPs of another run of its cell.

A grid block's ``controls: [compute_matched]`` adds, for each of its datasets, models, scenarios and seeds,
``ce+budget=<method>`` (``vae+budget=<method>`` for a generative model: the model's :func:`baseline`), the
baseline given the training FLOPs of the ``<method>`` run of the same dataset, model, scenario, seed and step
budget, for each method the block's or the grid's ``compute_matched`` names (:func:`control_spec`: ``like: METHOD`` or a
list; ``above: 1.1``: every method of the block that costs more than 1.1 times the baseline; the matched run is
added to the study too, :func:`matched_methods`): as many baseline epochs as that run's cost in baseline epochs
(:func:`icp.methods.options.training_cost`, FLOPs, the same on every machine; ICP-Adam's warm-up epochs count as
one; a method's declared step cost, or the count of ``results/reference/flops.csv`` on the run's model where it
differs from the declaration by more than 1 %), rounded, with the schedule stretched alike (:func:`matched_epochs`,
:func:`stretched`), so "better than ce" can be told from "trained longer".
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from icp import run_config
from icp.methods.options import training_cost
from icp.model_registry import is_generative
from icp.schema import ConfigError


def baseline(model: str) -> str:
    """The baseline method of a model, every other method's reference: ``ce``, or ``vae`` for a generative one."""
    return "vae" if is_generative(model) else "ce"


def control_spec(grid: dict, block: dict, where: str) -> dict:
    """The ``compute_matched`` spec of a block: its own, else the grid's (``like``: a method or a list of them;
    ``above``: every method of the block whose training cost exceeds the baseline's by more than this ratio)."""
    out = block.get("compute_matched") or grid.get("compute_matched")
    if not out or not (out.get("like") or out.get("above")):
        raise ConfigError(f"{where}: controls: compute_matched needs a 'compute_matched' section (like: METHOD, "
                          "a list of them, or above: RATIO), the grid's or the block's")
    return out


def matched_methods(spec: dict, methods: Sequence[str], base: str, run_of: Callable) -> list[tuple[str, str, dict]]:
    """(name, method, options) of each run whose FLOPs a matched-baseline control is given: ``like`` (a method, or
    a list of methods and ``{name, method, options}`` for a run with options: the control is ``ce+budget=<name>``),
    then with ``above`` every other method of the block whose training cost (:func:`matched_epochs` of
    ``run_of(method, {})``, its default run in the cell) exceeds the baseline's by more than that ratio, unless a
    control already chosen trains the same number of epochs (that control serves both: the ICP variants cost
    alike)."""
    like = spec.get("like") or []
    chosen = [(m, m, {}) if isinstance(m, str) else (str(m["name"]), str(m["method"]), dict(m.get("options") or {}))
              for m in ([like] if isinstance(like, str) else like)]
    if spec.get("above"):
        budgets = {matched_epochs(run_of(m, o))[0] for _, m, o in chosen}
        for m in methods:
            if m == base or m in {name for name, _, _ in chosen}:
                continue
            epochs, ratio = matched_epochs(run_of(m, {}))
            if ratio > float(spec["above"]) and epochs not in budgets:  # one control per budget: icp-sgd and
                chosen.append((m, m, {}))                                # icp-ademamix cost what icp-adam does
                budgets.add(epochs)
    return chosen


def matched_epochs(run) -> tuple[int, float]:
    """(ce epochs, FLOP ratio to ce) that give a ``ce`` run the training FLOPs of ``run`` (an :class:`icp.grid.Run`):
    its cost (:func:`icp.methods.options.training_cost` on the run's model: counted where
    results/reference/flops.csv counts the method on it and the count differs from the declaration by over 1 %,
    else declared; in ce epochs of the same data, scenario and batch) rounded to whole epochs, and that cost over
    the run's epochs."""
    # the seed changes no cost: runs that differ by seed alone resolve once
    return _matched_epochs(run.recipe, tuple(o for o in run.overrides if not o.startswith("train.seed=")))


@functools.lru_cache(maxsize=None)
def _matched_epochs(recipe: str, overrides: tuple[str, ...]) -> tuple[int, float]:
    cfg = run_config.resolve(recipe, overrides)
    cost = training_cost(cfg.method.name, cfg.method.options, cfg.train.epochs, cfg.model.name)
    return max(1, round(cost)), cost / cfg.train.epochs


def stretched(recipe: str, overrides: list[str], epochs: int) -> list[str]:
    """``--set`` items that train the run ``overrides`` describes for ``epochs`` epochs with its schedule stretched
    alike (milestones given in epochs and the warm-up scaled by the ratio of epochs; those given as fractions of
    the run stretch with it)."""
    cfg = run_config.resolve(recipe, overrides)
    ratio = epochs / cfg.train.epochs
    out = [f"train.epochs={epochs}"]
    milestones = cfg.schedule.milestones
    if any(m >= 1 for m in milestones):
        scaled = [round(m * ratio) if m >= 1 else m for m in milestones]
        out.append(f"schedule.milestones={run_config.yaml_value(scaled)}")
    if cfg.schedule.warmup_epochs:
        out.append(f"schedule.warmup_epochs={cfg.schedule.warmup_epochs * ratio:g}")
    return out
