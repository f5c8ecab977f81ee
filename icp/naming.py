"""Run ids and variant names: how the grid names a run, and how tables and figures name a variant.

A run's id names every factor and nothing else: ``<dataset>/<model>/<scenario>/<method>[+key=value...]/s<seed>``,
e.g. ``cifar100/resnet20/sym0.4/icp-sgd+reduction=sum+step_size=0.01/s2``. It is also the run's directory under
the grid's ``runs_dir``. Options are named in key order; values equal to the method's default are dropped before
naming (:func:`normalise_options`), so a run that two studies share (``steps=5`` in ``steps`` is ``icp-adam`` in
``main``; the clean ``ce`` run) has one id and is trained once. A method's run that is another run in disguise
(ICP with ``steps: 0``, the α-only control) is named as that run (:func:`canonical_method`). The grid factors that
are not method options follow them: ``+budget=<method>`` (a FLOP-matched control), ``+recipe=<name>`` (a block's
own recipe), ``+trial=<i>`` and ``+tuned=<i>`` (a tuning trial and a final run of its configuration).

A scenario tag (``clean``, ``sym0.4``, ``asy0.2``: label noise; ``25shot``: few-shot) is the run's scenario in its
id and the ``--set`` items that make it (:func:`parse_scenario`).
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterable, Optional

from icp.methods import option_defaults, validate_options
from icp.methods.options import OPTIONS, teacher_of
from icp.schema import ConfigError

SCENARIO = re.compile(r"^(?:(?P<clean>clean)|(?P<type>sym|asy)(?P<rate>0?\.\d+)|(?P<shots>[1-9]\d*)shot)$")
SAFE = re.compile(r"^[A-Za-z0-9._+=-]+$")  # the characters of a run id's parts


def parse_scenario(tag: str) -> list[str]:
    """A scenario tag (clean, sym0.4, asy0.2, 25shot) as ``--set`` items; the inverse of records.scenario_tag."""
    m = SCENARIO.match(str(tag))
    if m is None:
        raise ConfigError(f"scenario '{tag}': expected clean, sym<rate>, asy<rate> (e.g. sym0.4) or <n>shot")
    if m["clean"]:
        return ["scenario.kind=clean"]
    if m["shots"]:
        return ["scenario.kind=fewshot", f"scenario.shots={int(m['shots'])}"]
    rate = float(m["rate"])
    if not 0 < rate < 1:
        raise ConfigError(f"scenario '{tag}': the noise rate must be in (0, 1)")
    kind = {"sym": "symmetric", "asy": "asymmetric"}[m["type"]]
    return ["scenario.kind=noisy", f"scenario.noise_type={kind}", f"scenario.noise_rate={rate:g}"]


def canonical_scenario(tag: str) -> str:
    m = SCENARIO.match(str(tag))
    if m is not None and m["rate"]:
        return f"{m['type']}{float(m['rate']):g}"
    return str(tag)


def scenario_spellings(word: str) -> list[str]:
    """Well-formed scenarios that a mistyped ``word`` may have meant, for its suggestion: its digits read as a noise
    rate (``sym04`` -> ``sym0.4``, ``sym40`` -> ``sym0.4``) in the family it names, or as a shot count, and
    ``clean``; never ``word`` itself, and each one that :data:`SCENARIO` accepts."""
    digits = "".join(re.findall(r"[0-9.]+", word))
    rates = set()
    if digits:
        if "." in digits:
            rates.add(digits)
        elif digits.startswith("0"):
            rates.add(f"0.{digits[1:] or '0'}")
        else:
            rates.update({f"0.{digits}", f"{int(digits) / 100:g}"} if int(digits) <= 100 else set())
    rates = {f"{float(r):g}" for r in rates if re.fullmatch(r"\d*\.?\d+", r)} or {"0.4"}
    families = [f for f in ("sym", "asy") if f in word.lower()] or ["sym", "asy"]
    out = ["clean", *(f"{f}{r}" for f in families for r in sorted(rates))]
    if "shot" in word.lower() or not any(f in word.lower() for f in ("sym", "asy")):
        out += [f"{int(d)}shot" for d in re.findall(r"\d+", word)[:1] if int(d) > 0]
    return [c for c in dict.fromkeys(out) if c != word and SCENARIO.match(c)]


def format_value(value: Any) -> str:
    """A method option value as it appears in run ids (and in ``--set``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    return str(value)


def variant(method: str, options: Iterable[tuple[str, Any]], factors: Iterable[tuple[str, str]] = ()) -> str:
    """``method[+key=value...]``: the method part of a run id (options non-default, sorted by key), then the grid
    factors that are not method options (``+budget=icp-adam``: compute-matched; ``+recipe=authors``)."""
    return method + "".join(f"+{k}={format_value(v)}" for k, v in (*options, *factors))


def variant_of_id(rid: str) -> Optional[str]:
    """The variant part of a grid run id (``dataset/model/scenario/variant/s<seed>``), or None for another id."""
    parts = str(rid).split("/")
    return parts[3] if len(parts) == 5 and re.fullmatch(r"s\d+", parts[4]) else None


def variant_label(name: str) -> str:
    """A variant as tables and figures name it: the controls say plainly what they are."""
    if re.fullmatch(r"icp(\+label_smoothing=[^+]+)?\+steps=0(\+warmup=[^+]+)?", name):
        return f"{name} (α-only control: α-weighted CE, K = 0)"
    if re.fullmatch(r"icp\+authors_eval_ce=true(\+label_smoothing=[^+]+)?\+steps=0(\+warmup=[^+]+)?", name):
        return f"{name} (α-only control + the authors' eval-mode CE, K = 0)"
    m = re.search(r"\+tuned=(\d+)$", name)
    if m:
        return f"{name} (tuned: trial {m[1]}'s setting, chosen on validation)"
    m = re.search(r"\+budget=([^+]+)", name)
    if m:
        return f"{name} ({name.split('+')[0]}, FLOP-matched to {m[1]})"
    if name == "icp-sgd":  # the input barely moves: each image's step is divided by the batch size
        return "icp-sgd (as published: η = 0.002 on the batch-mean loss)"
    return name


def canonical_method(method: str, options: dict) -> tuple[str, dict]:
    """The run a method's run is in disguise, as its ``Options.canonical`` declares (ICP with ``steps: 0``, the α-only
    control, is ``icp`` with the options that still act, whatever its input optimizer), so every study shares it."""
    cls = OPTIONS.get(method)
    return (cls.canonical(options) if cls is not None else None) or (method, options)


def run_id(dataset: str, model: str, scenario: str, method: str, options: Iterable[tuple[str, Any]],
           seed: int, factors: Iterable[tuple[str, str]] = ()) -> str:
    parts = [dataset, model, canonical_scenario(scenario), variant(method, options, factors), f"s{seed}"]
    for part in parts:
        if not SAFE.match(part):
            raise ConfigError(f"run id part '{part}' is not filesystem-safe (letters, digits and ._+=- only)")
    return "/".join(parts)


def normalise_options(method: str, options: dict) -> tuple[tuple[str, Any], ...]:
    """Validate options against the method's ``Options``; keep those that differ from the defaults, by key."""
    return _normalise_cached(method, json.dumps(options, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _normalise_cached(method: str, options_json: str) -> tuple[tuple[str, Any], ...]:
    options = json.loads(options_json)
    probe = dict(options)
    if teacher_of(method):
        probe.setdefault("teacher", "<teacher run>")
    validate_options(method, probe)  # unknown key, wrong type or range: one ConfigError naming it
    defaults = option_defaults(method)
    return tuple(sorted((k, v) for k, v in options.items() if not (k in defaults and defaults[k] == v)))
