"""Power by design: the comparisons a study declares before it runs, the smallest difference they can detect, and
the seeds a target difference needs.

A study's **primary family** is the list of comparisons its grid declares (``analysis.primary.<study>``, each
``"A vs B"`` of two variants, as run ids name them: ``icp-adam vs ce``, ``icp-adam vs icp+steps=0``); a study that
declares none has every variant against its baseline as its family. Holm's correction (:func:`icp.stats.holm`)
runs over the family within one condition (dataset, model, scenario) of the study, so its size ``m`` is what a
comparison pays for the others. Every other difference to the baseline is still printed, with its interval and
raw p, labelled exploratory and never bold.

**Detectable difference** (:func:`detectable`): the smallest true mean paired difference that a comparison of the
family detects with probability ``power`` (0.8) at ``n`` seeds, after Holm at family level ``level`` (0.05). Holm
rejects a comparison at least whenever its p is below level / m (the first step of Holm's procedure, Bonferroni's
threshold), and where only this comparison has a true effect hardly more often (another p must fall below
level / m first), so the power at level / m is what Holm gives such a comparison, and a lower bound where others
have effects too (``tests/test_power.py`` checks it against simulated Holm families). The test is the tables' own:
a paired t-test with n − 1 degrees of freedom (:func:`icp.stats.detectable_difference`); below
:data:`icp.stats.MIN_T_PAIRS` seeds the tables use the exact sign-flip p, which never falls below 2 / 2ⁿ: when
that exceeds level / m no difference is detectable at all (``inf``).

**The SD of the seed-paired differences** comes from the grid's own records where they hold at least
:data:`MIN_DF` degrees of freedom (the family's differences in one condition, their variances pooled: each
comparison of n pairs adds n − 1), else from the pilot the grid declares (``analysis.pilot``, per
``dataset/model`` or ``dataset``: an ``sd`` in percentage points with its ``source``, or a ``summary`` file whose
records give it by the same pooling). :func:`seeds_for` inverts :func:`detectable`: the fewest seeds at which a
declared target (``analysis.targets``) is detectable. ``icp grid --power`` prints all of it per study and
condition of a grid (:mod:`icp.results.power_plan`); the study tables give it under every table.

Torch-free; scipy is imported on use.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

from icp import stats

LEVEL = 0.05  # Holm's family-wise level
POWER = 0.8
MIN_DF = 2  # records give the SD of paired differences from at least this many degrees of freedom; else the pilot
MAX_SEEDS = 100  # seeds_for looks no further


@dataclass(frozen=True)
class Comparison:
    """``variant`` minus ``against`` over the seeds both have complete, in one condition and setting."""

    variant: str
    against: str

    def __str__(self) -> str:
        return f"{self.variant} vs {self.against}"


def parse(text: str) -> Comparison:
    """``"icp-adam vs ce"`` -> Comparison("icp-adam", "ce")."""
    m = re.fullmatch(r"\s*(\S+)\s+vs\s+(\S+)\s*", str(text))
    if not m or m[1] == m[2]:
        raise ValueError(f"a comparison is 'A vs B' of two different variants, got {text!r}")
    return Comparison(m[1], m[2])


def family(analysis: Optional[dict], study: str, variants: Iterable[tuple[str, str]]) -> list[Comparison]:
    """The study's primary family: its declared comparisons, else every variant against its baseline
    (``variants``: (variant, baseline) pairs, as the study's cells have them)."""
    declared = ((analysis or {}).get("primary") or {}).get(study)
    if declared:
        return [parse(c) for c in declared]
    return [Comparison(v, b) for v, b in dict.fromkeys(variants) if v != b]


def settings(analysis: Optional[dict]) -> tuple[float, float]:
    """(level, power) of the grid's ``analysis`` section, defaults :data:`LEVEL` and :data:`POWER`."""
    analysis = analysis or {}
    return float(analysis.get("level", LEVEL)), float(analysis.get("power", POWER))


def min_p(n: int) -> float:
    """The smallest p the tables' test can give at ``n`` pairs: the sign-flip's 2 / 2ⁿ below three pairs, else 0."""
    return 2.0 / 2 ** n if n < stats.MIN_T_PAIRS else 0.0


@lru_cache(maxsize=4096)
def detectable(n: int, sd: float, m: int, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true mean difference (units of ``sd``) that one of ``m`` comparisons under Holm at ``level``
    detects with probability ``power`` at ``n`` seeds (see the module); ``inf`` where no p can be small enough."""
    alpha = level / max(1, m)
    if n < 2 or min_p(n) > alpha or sd != sd:
        return math.inf
    if n < stats.MIN_T_PAIRS:  # only reached with an alpha above 2/2ⁿ (0.5 at two seeds): not a design anyone uses
        return math.inf
    return 0.0 if sd == 0 else stats.detectable_difference(n, sd, alpha, power)


def seeds_for(target: float, sd: float, m: int, level: float = LEVEL, power: float = POWER) -> Optional[int]:
    """The fewest seeds at which ``target`` is detectable (:func:`detectable` ≤ target); None beyond
    :data:`MAX_SEEDS`."""
    for n in range(2, MAX_SEEDS + 1):
        if detectable(n, sd, m, level, power) <= target:
            return n
    return None


def pooled_sd(differences: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The pooled standard deviation of several comparisons' paired differences (each about its own mean) and its
    degrees of freedom: sqrt(Σ (nᵢ − 1) sᵢ² / Σ (nᵢ − 1)); (nan, 0) without any comparison of two pairs."""
    ss, df = 0.0, 0
    for d in differences:
        d = [float(x) for x in d]
        if len(d) < 2:
            continue
        mean = sum(d) / len(d)
        ss += sum((x - mean) ** 2 for x in d)
        df += len(d) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def paired_differences(runs, comparisons: Sequence[Comparison], metric: str = "top1",
                       scale: float = 100.0) -> dict[tuple, list[list[float]]]:
    """Per condition (dataset, model, scenario), the seed-paired differences of each comparison's complete runs
    that share a setting (``setting_key``), in ``metric`` × ``scale`` (percentage points)."""
    done = runs[runs.status == "complete"]
    out: dict[tuple, list[list[float]]] = {}
    for cond, group in done.groupby(["dataset", "model", "scenario"], sort=False):
        for c in comparisons:
            a = group[group.variant == c.variant].set_index(["setting_key", "seed"])[metric]
            b = group[group.variant == c.against].set_index(["setting_key", "seed"])[metric]
            both = a.to_frame("a").join(b.to_frame("b"), how="inner").dropna()
            if len(both):
                out.setdefault(tuple(cond), []).append(((both.a - both.b) * scale).tolist())
    return out


@dataclass(frozen=True)
class Spread:
    """The SD of paired differences used for a condition, and where it came from."""

    sd: float
    source: str


def pilot(analysis: Optional[dict], dataset: str, model: str, comparisons: Sequence[Comparison],
          base_dir: str | Path = ".") -> Optional[Spread]:
    """The grid's declared pilot SD for ``dataset/model`` (else ``dataset``): an ``sd`` with its ``source``, or a
    ``summary`` CSV of records pooled as :func:`pooled_sd` over ``comparisons``."""
    pilots = (analysis or {}).get("pilot") or {}
    entry = pilots.get(f"{dataset}/{model}") or pilots.get(dataset)
    if not entry:
        return None
    if "sd" in entry:
        return Spread(float(entry["sd"]), f"pilot: {entry['source']}")
    import pandas as pd

    runs = pd.read_csv(Path(base_dir) / entry["summary"])
    diffs = [d for (ds, mo, _), ds_diffs in paired_differences(runs, comparisons).items()
             if ds == dataset for d in ds_diffs]
    sd, df = pooled_sd(diffs)
    return None if sd != sd else Spread(sd, f"pilot: {entry['source']} ({entry['summary']}, df {df})")


def spread(analysis: Optional[dict], condition: tuple, differences: Sequence[Sequence[float]],
           comparisons: Sequence[Comparison], base_dir: str | Path = ".") -> Optional[Spread]:
    """The SD for one condition: from ``differences`` (this grid's records) at :data:`MIN_DF` degrees of freedom
    or more, else the declared pilot, else the records' thinner estimate, else None."""
    sd, df = pooled_sd(differences)
    if df >= MIN_DF:
        return Spread(sd, f"records: {df} df")
    declared = pilot(analysis, condition[0], condition[1], comparisons, base_dir)
    if declared is not None:
        return declared
    return Spread(sd, f"records: only {df} df") if df else None


def detectable_text(n: int, sd: Optional[Spread], m: int, level: float = LEVEL, power: float = POWER) -> str:
    """``1.23 pp (SD of paired differences 0.42 pp, records: 4 df)``, or why there is none."""
    if n <= 1:
        return "none: one seed, descriptive, no test"
    if n < stats.MIN_T_PAIRS and min_p(n) > level / max(1, m):
        return f"none at {n} seed{'s' if n != 1 else ''} (the smallest p is {min_p(n):.2g} > {level:g}/{m})"
    if sd is None or sd.sd != sd.sd:
        return "unknown (no SD of paired differences: no records with two pairs, no pilot declared)"
    return f"{detectable(n, sd.sd, m, level, power):.2f} pp (SD of paired differences {sd.sd:.2f} pp, {sd.source})"


def target(analysis: Optional[dict], dataset: str, model: str) -> Optional[float]:
    """The declared target difference (pp) for ``dataset/model``, else for ``dataset``; None if none."""
    targets = (analysis or {}).get("targets") or {}
    value = targets.get(f"{dataset}/{model}", targets.get(dataset))
    return None if value is None else float(value)
