"""Images/s of a run's step on a GPU, for ``icp grid --cost`` (:mod:`icp.cost`, whose docstring states the rules):
the committed bench tables (``results/reference/<gpu>/throughput.csv`` and ``packing.csv``, written by ``python -m
icp.bench_tables``) and the rules that estimate what they do not measure (another batch or image size, method,
model or configuration; the packing speed-up).

What a method's step time depends on is the method's to declare (:class:`icp.methods.options.Cost`): the options
that change it (``cost_options``), the one that counts its passes (``pass_count``), the methods that run alike
(``family``); nothing here names a method but the baseline.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from icp.matching import baseline
from icp.methods import option_defaults, options_of
from icp.methods.options import OPTIONS, step_flops
from icp.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
TABLE = "throughput.csv"
PACKING_TABLE = "packing.csv"
EAGER = "eager"  # train.compile=none, fp32: how the paper grid trains
REFERENCE_MODEL = "resnet20"
DATA_AREA = {"fashion-mnist": 28 * 28, "cifar10": 32 * 32, "cifar100": 32 * 32}  # bench rows' image area (H·W)


def available(reference: Path = REFERENCE) -> list[str]:
    return sorted(p.parent.name for p in reference.glob(f"*/{TABLE}"))


def read_table(gpu: str, reference: Path = REFERENCE) -> list[dict]:
    path = reference / gpu / TABLE
    if not path.is_file():
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        raise ConfigError(f"--gpu {gpu}: no bench table {shown}; tables: {', '.join(available(reference)) or 'none'}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update(batch=int(r["batch"]), img_per_s=float(r["img_per_s"]), estimated=bool(int(r["estimated"])))
    return rows


def read_packing(reference: Path = REFERENCE) -> dict[str, list[dict]]:
    """The measured packing rows of every GPU that has them: {gpu: rows}."""
    out = {}
    for path in sorted(reference.glob(f"*/{PACKING_TABLE}")):
        with path.open() as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r.update(k=int(r["k"]), aggregate_img_per_s=float(r["aggregate_img_per_s"]), cold=bool(int(r["cold"])))
        out[path.parent.name] = rows
    return out


def _area(data_name: str) -> Optional[int]:
    """A bench row's image area (H·W): the dataset's, or that of ``synthetic-CxHxW``."""
    if data_name in DATA_AREA:
        return DATA_AREA[data_name]
    if data_name.startswith("synthetic-"):
        _, h, w = data_name.removeprefix("synthetic-").split("x")
        return int(h) * int(w)
    return None


@dataclass(frozen=True)
class Plan:
    """What a run trains: images per epoch, epochs (of which warm-up epochs at the baseline's cost), and what sets
    its speed."""

    model: str
    method: str
    cost_options: tuple  # ((key, value), ...) of the method's declared cost_options
    flops: tuple  # (FLOP ratio of a step past warm-up to the baseline's, its basis): icp.methods.options.step_flops
    config: str
    batch: int
    area: int
    per_epoch: int  # images
    steps_per_epoch: int
    epochs: int
    warmup_epochs: int = 0
    options: dict = field(default_factory=dict, compare=False, hash=False)  # the run's method options, resolved

    @property
    def images(self) -> int:
        return self.per_epoch * self.epochs


def flop_ratio(method: str, options: dict, epochs: int, model: str) -> tuple[float, str]:
    """A step's FLOP ratio to the baseline past any warm-up, counted or declared (the one rule,
    :func:`icp.methods.options.step_flops`; AI-KD's teacher run is a run of its own)."""
    return step_flops(method, {k: v for k, v in options.items() if k != "teacher"}, max(1, epochs), model)


def declared(method: str, name: str, default=None):
    """What a method's ``Options`` declares of its step time (:class:`icp.methods.options.Cost`): ``cost_options``,
    ``pass_count``, ``family``."""
    return getattr(options_of(method), name, default)


# ------------------------------------------------------------------------------------------ images/s
def parse_method(spec: str) -> tuple[str, dict]:
    """A bench row's method, ``NAME[:key=value,...]`` (icp.bench.parse_variant), as (name, options)."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        options[k] = yaml.safe_load(v)
    return name, options


def _label(r: dict) -> str:
    """A table row as ``--detail`` names it: its bench file, ``(est.)`` for a row of rule 4."""
    file = r["source"].split(" [")[0].split(" x ")[0]
    return f"{r['model']} {r['method']} {file}{' (est. row, rule 4)' if r['estimated'] else ''}"


@dataclass
class Speed:
    img_per_s: float
    basis: str
    estimated: bool


@dataclass
class Throughput:
    """Images/s of a run's step on one GPU, from its bench table and the rules of :mod:`icp.cost`'s docstring."""

    rows: list[dict]
    _cache: dict = field(default_factory=dict)
    gpu: str = ""
    packing: dict = field(default_factory=dict)  # {gpu: measured packing rows} (read_packing)

    def _effective(self, method: str, options: dict) -> tuple:
        full = {**option_defaults(method), **options}
        return tuple((k, full[k]) for k in declared(method, "cost_options", ()) if k in full)

    def _rows(self, model: str, config: str) -> list[dict]:
        out = [r for r in self.rows if r["model"] == model and r["config"] == config]
        for r in out:
            r.setdefault("_name", parse_method(r["method"]))
        return out

    def speed(self, p: Plan, baseline_only: bool = False) -> Speed:
        key = (p.model, p.method, p.cost_options, p.flops, p.config, p.batch, p.area, baseline_only)
        if key not in self._cache:
            self._cache[key] = self._speed(p, baseline_only)
        return self._cache[key]

    def _speed(self, p: Plan, baseline_only: bool) -> Speed:
        config = p.config if any(r["config"] == p.config for r in self.rows) else EAGER  # rule 5
        note = [] if config == p.config else [f"{p.config} not measured: {EAGER} rows"]
        method = baseline(p.model) if baseline_only else p.method
        cost = dict(p.cost_options) if not baseline_only else {}
        rows = self._rows(p.model, config)
        want = self._effective(method, cost)
        for r in rows:  # a measured row of this method at this image size
            name, opts = r["_name"]
            if name == method and _area(r["data"]) == p.area and self._effective(name, opts) == want:
                v, scaled = self._scaled(r, p)
                return Speed(v, "; ".join([_label(r), *note, *(["rule 1"] if scaled else [])]),
                             r["estimated"] or scaled or bool(note))
        base = [r for r in rows if r["_name"] == (baseline(p.model), {})]
        if not base:  # rule 4
            base = [r for r in self._rows(REFERENCE_MODEL, config) if r["_name"] == ("ce", {})]
            note.append(f"{REFERENCE_MODEL} ce (rule 4)")
        if not base:
            raise ConfigError(f"bench table: no {REFERENCE_MODEL} ce row for {config} to estimate {p.model}")
        r = min(base, key=lambda r: (abs(math.log(_area(r["data"]) / p.area)), -_area(r["data"])))
        v, scaled = self._scaled(r, p)
        note = [_label(r), *note, *(["rule 1"] if scaled else [])]
        ratio, how = (1.0, None) if method == baseline(p.model) else self._ratio(p, cost, config)
        return Speed(v / ratio, "; ".join(note + ([how] if how else [])), True)

    def _scaled(self, r: dict, p: Plan) -> tuple[float, bool]:
        """Rule 1: the row's images/s at the run's batch and image size."""
        step = r["batch"] / r["img_per_s"] * max(1.0, p.batch * p.area / (r["batch"] * _area(r["data"])))
        return p.batch / step, (p.batch, p.area) != (r["batch"], _area(r["data"]))

    def _groups(self, model: str, config: str) -> list[tuple[float, list[dict]]]:
        """Rows of one bench process (source, data, batch) with the model's baseline: (baseline img/s, rows)."""
        by: dict = {}
        for r in self._rows(model, config):
            by.setdefault((r["source"], r["data"], r["batch"]), []).append(r)
        out = []
        for rows in by.values():
            base = [r for r in rows if r["_name"] == (baseline(model), {})]
            if base:
                out.append((base[0]["img_per_s"], rows))
        return out

    def _ratio(self, p: Plan, cost: dict, config: str) -> tuple[float, str]:
        """Rules 2 and 3: the method's step-time ratio to the baseline, and what it rests on."""
        model, method = p.model, p.method
        want = self._effective(method, cost)
        count = declared(method, "pass_count")  # (option, symbol): ICP's K
        k = dict(want).get(count[0], 0) if count else None
        flops, basis = p.flops
        for base, rows in self._groups(model, config):  # rule 2: measured on this model
            for r in rows:
                name, opts = r["_name"]
                if name == method and self._effective(name, opts) == want:
                    return base / r["img_per_s"], f"ratio {base / r['img_per_s']:.2f} (rule 2, {_label(r)})"
        if count and k == 0:  # no extra pass (ICP's α-only control): its FLOPs
            return flops, f"{count[1]} = 0: ratio {flops:.2f}, FLOPs, {basis} (rule 3)"
        if count:  # rule 2: at another count, its extra time scaled by its extra FLOPs
            key, symbol = count
            best = None
            for base, rows in self._groups(model, config):
                for r in rows:
                    name, opts = r["_name"]
                    eff = dict(self._effective(name, opts))
                    if name == method and tuple({**eff, key: k}.items()) == want and eff.get(key):
                        if best is None or abs(eff[key] - k) < abs(best[0] - k):
                            best = (eff[key], base / r["img_per_s"], _label(r))
            if best:
                kk, ratio, src = best
                measured, _ = flop_ratio(method, {**p.options, key: kk}, p.epochs, model)
                if measured > 1:
                    scaled = 1 + (ratio - 1) * (flops - 1) / (measured - 1)
                    return scaled, (f"ratio {scaled:.2f}: {symbol} = {kk}'s {ratio:.2f}, its extra scaled by FLOPs "
                                    f"{flops:.2f} / {measured:.2f} at {symbol} = {k} (rule 2, {src})")
        return flops, f"ratio {flops:.2f}: FLOPs, {basis} (rule 3)"

    def pack_speedup(self, method: str, k: int, model: str, cap: float, cap_basis: str) -> tuple[float, str]:
        """The packing speed-up of an eager run of ``method`` at k runs per GPU: measured (a warm k = 1 row and
        the best aggregate at k' <= k of the method, or of a measured method of its declared ``family``: an ICP
        variant's, ICP's), else the assumed min(k, C) (:mod:`icp.cost`'s docstring)."""
        if k <= 1:
            return 1.0, "one run per GPU"
        family = declared(method, "family")  # ICP's presets: one CUDA-graph refinement loop, packed alike
        own = [method, *(m for m in OPTIONS if family and m != method and declared(m, "family") == family)]
        for gpu in sorted(self.packing, key=lambda g: g != self.gpu):
            for name in own:
                rows = [r for r in self.packing[gpu] if r["method"] == name and r["config"] == EAGER
                        and r["model"] == model]
                single = [r["aggregate_img_per_s"] for r in rows if r["k"] == 1 and not r["cold"]]
                if not single:
                    continue
                best = max([single[0], *(r["aggregate_img_per_s"] for r in rows if 1 < r["k"] <= k)])
                where = "" if gpu == self.gpu else f" on {gpu}"
                return max(1.0, best / single[0]), f"measured{where}: {name} best of k <= {k} {best:g} / k = 1 {single[0]:g}"
        return min(k, cap), f"assumed min(k, C), C = {cap:.2f} ({cap_basis})"

    def pack_cap(self) -> tuple[float, str]:
        """C of the packing rule: the reference model's compiled ÷ eager baseline images/s from one file."""
        ref = [r for r in self.rows if r["model"] == REFERENCE_MODEL and r["method"] == "ce" and not r["estimated"]]
        for e in (r for r in ref if r["config"] == EAGER):
            for c in ref:
                if c["config"] != EAGER and c["data"] == e["data"] and \
                        c["source"].split(" [")[0] == e["source"].split(" [")[0]:
                    return c["img_per_s"] / e["img_per_s"], (f"{REFERENCE_MODEL} ce {c['config']}/{EAGER} "
                                                             f"{c['img_per_s']:g}/{e['img_per_s']:g}, "
                                                             f"{e['source'].split(' [')[0]}")
        return 1.0, "no compiled row: no gain assumed"
