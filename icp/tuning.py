"""Equal tuning: every method of a tuned study cell gets the same number of trials, drawn quasi-randomly from its
declared search space, trained at one seed on the cell's recipe, and chosen on the validation split.

The grid's ``tuning`` section (``workflow/schemas/grid.schema.yaml``) holds::

    tuning:
      trials: 5            # trials of every method of every tuned cell: one number, so no method gets more
      seed: 0              # the seed every trial trains at
      draw_seed: 0         # the seed of the scrambled Halton sequence the trials are drawn from
      spaces:              # method -> config key -> range; each range names its source
        ce:
          optim.lr: {low: 0.02, high: 0.5, log: true, source: "..."}
        icp-adam:
          optim.lr: {...}
          method.options.steps: {low: 1, high: 10, int: true, source: "..."}

A study block with ``tune: true`` gets, per dataset, model, scenario and method, ``trials`` trial runs
(``<method>+trial=<i>``, seed ``tuning.seed``), a selection (a Snakemake checkpoint: :func:`select`) and the
final runs at the block's seeds (``<method>+tuned=<i>``: trial i's configuration, chosen on validation).

A trial that diverges, or whose training raises an error of its own (not a fault of the machine or the scheduler:
:func:`icp.launch.lost_trial`), is a trial that lost: its record stays, final, its job succeeds, and the selection
lists it as lost; it is never silently dropped and never drawn again. A trial stopped by a fault (cancelled, time
limit, full disk, out of memory) resumes from its checkpoint when the workflow runs again, as any run.

The draws (:func:`unit_points`) are one scrambled Halton sequence (``scipy.stats.qmc.Halton``, seeded by
``draw_seed``: the same points on every machine and in every expansion) of :data:`MAX_DIM` dimensions, with
**common random numbers**: the keys every space shares (:data:`COMMON_KEYS`, the optimizer's learning rate and
weight decay) take the same columns in every space, so trial i of ``ce`` and of ``icp-adam`` try the same lr and
wd, and a method's own keys take the columns after them in sorted order. **Trial 0 is the method's published
default** (each key's value in the cell's resolved config: the recipe and the method's defaults), so tuning can
only add to the default; trials 1.. are the sequence's points 0... A point maps into a range linearly, or in log
space with ``log: true``; ``int: true`` rounds to an integer, and a ``values`` list picks one of its items. Drawn
floats keep 3 significant digits, so a trial's settings print as they train. Trials train at ``tuning.seed``,
which must not be a seed of the finals (a final at the trial's seed would be the max-of-k winner itself).
"""
from __future__ import annotations

import math
from typing import Any, Optional

from icp import run_config
from icp.schema import ConfigError

MAX_DIM = 12  # the Halton sequence's dimension: the common keys' columns and a space's own keys fit in it
DEFAULT_SEED = 100  # tuning.seed when the grid gives none: apart from the usual final seeds 0, 1, 2, ...
COMMON_KEYS = ("optim.lr", "optim.weight_decay")  # the same Halton columns (0, 1) in every space
RULE = "best last-epoch validation top-1; ties broken by the earlier trial; a failed or diverged trial loses"


def unit_points(n: int, draw_seed: int) -> list[list[float]]:
    """The first ``n`` points of the scrambled Halton sequence of :data:`MAX_DIM` dimensions seeded by
    ``draw_seed``, each a list of floats in [0, 1)."""
    from scipy.stats import qmc

    return qmc.Halton(d=MAX_DIM, scramble=True, seed=draw_seed).random(n).tolist()


def _significant(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def check_space(method: str, space: dict, where: str) -> None:
    """One line for a space that cannot be drawn from: too many keys, an empty or inverted range, a log range
    that is not positive."""
    if not space:
        raise ConfigError(f"{where}: tuning.spaces.{method}: an empty search space")
    own = [k for k in space if k not in COMMON_KEYS]
    if len(COMMON_KEYS) + len(own) > MAX_DIM:
        raise ConfigError(f"{where}: tuning.spaces.{method}: {len(own)} keys besides {', '.join(COMMON_KEYS)}, at "
                          f"most {MAX_DIM - len(COMMON_KEYS)}")
    for key, rng in space.items():
        at = f"{where}: tuning.spaces.{method}.{key}"
        if "values" in rng:
            if not rng["values"]:
                raise ConfigError(f"{at}: an empty values list")
            continue
        low, high = rng.get("low"), rng.get("high")
        if low is None or high is None or not low <= high:
            raise ConfigError(f"{at}: needs low <= high (got low={low}, high={high})")
        if rng.get("log") and low <= 0:
            raise ConfigError(f"{at}: a log range needs low > 0 (got {low})")


def value_at(rng: dict, u: float) -> Any:
    """The value of range ``rng`` at unit coordinate ``u`` in [0, 1)."""
    if "values" in rng:
        items = rng["values"]
        return items[min(len(items) - 1, int(u * len(items)))]
    low, high = float(rng["low"]), float(rng["high"])
    if rng.get("int"):
        lo, hi = math.ceil(low), math.floor(high)
        return int(min(hi, lo + math.floor(u * (hi - lo + 1))))
    if rng.get("log"):
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    return _significant(min(max(value, low), high))


def columns(space: dict) -> dict[str, int]:
    """Each key's Halton column: :data:`COMMON_KEYS` at their fixed columns in every space (common random
    numbers), the space's own keys after them in sorted order."""
    own = sorted(k for k in space if k not in COMMON_KEYS)
    fixed = {k: i for i, k in enumerate(COMMON_KEYS) if k in space}
    return {**fixed, **{k: len(COMMON_KEYS) + j for j, k in enumerate(own)}}


def draws(space: dict, trials: int, draw_seed: int, defaults: Optional[dict] = None) -> list[dict[str, Any]]:
    """The ``trials`` settings of a space: trial 0 the ``defaults`` (each key's value in the cell's resolved config)
    when given, then the Halton points in order, each key at its :func:`columns` column."""
    cols = columns(space)
    first = [{k: defaults[k] for k in sorted(space)}] if defaults is not None else []
    points = unit_points(trials - len(first), draw_seed) if trials > len(first) else []
    return (first + [{k: value_at(space[k], point[cols[k]]) for k in sorted(space)} for point in points])[:trials]


def published_defaults(recipe: Optional[str], overrides: list[str], space: dict, where: str) -> dict[str, Any]:
    """Each key of a tuning space at its value in the cell's resolved config (``recipe`` with ``overrides``: the
    grid's settings, the method's option defaults): a tuned method's trial 0, its published default."""
    if recipe is None:
        raise ConfigError(f"{where}: no recipe for the cell")
    cfg = run_config.resolved(recipe, tuple(overrides))
    out = {}
    for key in space:
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{where}.{key}: not a key of the run's config")
            node = node[part]
        out[key] = node
    return out


def check_seeds(tuning: dict, seeds, where: str, study: str) -> None:
    """Trials train at seeds disjoint from the finals': one line when ``tuning.seed`` is one of the block's seeds."""
    seed = int(tuning.get("seed", DEFAULT_SEED))
    if seed in {int(s) for s in seeds}:
        raise ConfigError(f"{where}: tuning.seed {seed} is also a seed of study '{study}''s final runs: trials "
                          f"train at seeds disjoint from the finals' (a final at its trial's seed is the max-of-k "
                          f"winner itself); pick a seed outside {sorted(int(s) for s in seeds)}")


def check(tuning: Optional[dict], tuned_methods: dict[str, set], where: str) -> None:
    """The grid's tuning section against the methods of its tuned blocks (study -> methods): every tuned method
    needs a space (a method without one would get fewer trials than the others), and ``trials`` is one number."""
    if not tuned_methods:
        return
    if not tuning:
        raise ConfigError(f"{where}: a block sets tune: true but the grid has no 'tuning' section")
    trials = tuning.get("trials")
    if isinstance(trials, dict):
        counts = sorted(set(trials.values()))
        if len(counts) > 1:
            raise ConfigError(f"{where}: tuning.trials gives methods different numbers of trials "
                              f"({', '.join(f'{m}: {n}' for m, n in sorted(trials.items()))}); every method gets "
                              "the same number")
    spaces = tuning.get("spaces", {})
    for study, methods in tuned_methods.items():
        missing = sorted(m for m in methods if m not in spaces)
        if missing:
            raise ConfigError(f"{where}: study '{study}' tunes {', '.join(missing)} but tuning.spaces has no space "
                              f"for {'it' if len(missing) == 1 else 'them'}: every tuned method gets the same "
                              "number of trials, from its own space")
    for method, space in spaces.items():
        check_space(method, space, where)


def trial_count(tuning: dict) -> int:
    trials = tuning["trials"]
    return int(next(iter(trials.values())) if isinstance(trials, dict) else trials)


def _val_top1(record: Optional[dict]) -> Optional[float]:
    """A trial's last-epoch validation top-1, or None where it lost (no record, failed, diverged, no split). The
    record's ``val``: the validation labels of the setting (noisy under a noise scenario), never ``val_clean`` (the
    oracle a noisy-label method does not have)."""
    if not record or record.get("status") != "complete":
        return None
    value = ((record.get("last") or {}).get("val") or {}).get("top1")
    return None if value is None or value != value else float(value)  # NaN loses too


def select(trials: list[tuple[str, dict]], records: list[Optional[dict]]) -> dict:
    """The selection record of one tuned cell and method, from its trials ((run id, drawn settings), in draw
    order) and their records (None: no record): every trial's settings, status and last-epoch validation top-1,
    the chosen trial (:data:`RULE`), and ``chosen: null`` where every trial lost. Reads the validation metric
    only: no test number enters the choice."""
    rows, best = [], None
    for i, ((rid, settings), record) in enumerate(zip(trials, records)):
        value = _val_top1(record)
        status = (record or {}).get("status", "missing")
        rows.append({"trial": i, "run_id": rid, "settings": settings, "status": status, "val_top1": value,
                     "lost": value is None})
        if value is not None and (best is None or value > rows[best]["val_top1"]):
            best = i
    return {"schema": 1, "rule": RULE, "metric": "last.val.top1", "trials": rows, "chosen": best,
            "chosen_settings": rows[best]["settings"] if best is not None else None}
