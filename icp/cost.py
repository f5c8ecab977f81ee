"""``icp grid --cost``: the GPU-hours a grid will take, before it is launched.

For every run of the grid: GPU-hours = training images ÷ images/s ÷ 3600 ÷ the packing speed-up, where

* **images** = training images per epoch × epochs, as the engine feeds them. Both come from the run's resolved
  config (its recipe and the grid's ``--set`` items, so the few-shot ``optimizer_steps`` budget and the
  compute-matched control's stretched epochs are those the grid gives it): the training split of the dataset
  (:data:`TRAIN_IMAGES`), or ``data.train_subset``, less ``data.val_fraction``; a few-shot run's shots × classes;
  ``data.drop_last`` drops the partial batch. ICP's warm-up epochs (``int(warmup · epochs)``, plain CE) are
  counted at the baseline's speed. Not counted: evaluation passes, FID, start-up, requeues, and data loading
  beyond what the bench rows include (the authors' study's RandAugment is per-image CPU work).
* **images/s** come from a committed bench table of the GPU, ``results/reference/<gpu>/throughput.csv``
  (:func:`build_table` writes it from the ``icp bench`` outputs listed in :data:`SOURCES`; ``python -m icp.cost``
  rewrites it; numbers are never typed by hand). A run uses the row of its model, method (with the options that
  change a step's cost, :data:`COST_OPTIONS`), configuration (``eager``: ``train.compile=none``, fp32, as the paper
  grid trains; or ``compile=<mode>``) and image size. Where the table has no such row, the estimate follows these
  rules, and the output counts the GPU-hours that rest on them as *estimated*:

  1. **Another batch or image size.** A step costs the measured step time, or more in proportion to batch ×
     image area (H·W) when the run's batch holds more pixels: a GPU step of these small models is launch-bound, so
     a smaller batch or image is not assumed to be faster per step (the authors' batch 32 trains at a quarter of
     the images/s of batch 128, and an epoch's last, partial batch costs a full step).
  2. **Another method than the baseline** (``ce``; ``vae`` for the VAE): the baseline's images/s at the run's size
     ÷ the method's step-time ratio to the baseline, measured on the same model in one bench process. ICP at
     another K than measured: its extra cost over the baseline scaled by (2K + 1)/(2K' + 1), the FLOP count of K
     refinement steps (``icp/methods/icp.py``: (2K + 4)/3 ce steps); K = 0 (the α-only control) costs a ce step.
  3. **A model without rows for the method:** ICP variants cost their FLOP ratio (2K + 4)/3, + 1 with
     ``authors_eval_ce`` (its eval-mode forward + backward; no bench row measures it) (a compute-bound model;
     what the paper grid's ``compute_matched.cost_ratio`` assumes for PreAct ResNet-18); other methods the
     step-time ratio measured on the reference model (:data:`REFERENCE_MODEL`).
  4. **A model without a baseline row** (the VAE): the reference model's ``ce`` images/s. A model measured only in
     another configuration (PreAct ResNet-18 compiled) gets a baseline row in the table scaled by the reference
     model's eager/compiled ratio from the same file (``estimated`` in the csv).
  5. **A configuration without rows:** the ``eager`` rows.

* **Tuned studies** (``tune: true``, :mod:`icp.tuning`): a tuned cell's trials are runs of the grid, costed as
  any run. Its final runs (the chosen trial's configuration at each of the block's seeds) are not known before the
  selection, but their number is; until a selection chooses a trial they are costed as an **upper bound**: the
  final runs of the cell's priciest trial (the most GPU-hours at its seeds: a trial's options, ICP's K or warm-up,
  change what a step costs). A cell whose selection is in the grid (:meth:`icp.grid.Grid.with_selections`)
  counts its chosen finals, as any run. The study's row and the total include the finals.
* **Packing** (``runs_per_gpu`` of ``profiles/slurm/config.yaml``, or ``--runs-per-gpu``): k runs share a GPU, and
  each eager run's GPU-hours are divided by a packing speed-up. **Measured** where a lent GPU measured it
  (``results/reference/<gpu>/packing.csv``, :data:`PACKING_SOURCES`: the aggregate images/s of k runs at once of one
  method, ``tools/gpu_lease.sh``): the speed-up at k is the best aggregate at any measured k' <= k over the method's
  single-run rate, for the method measured, or for an ICP variant the ICP method measured (a CUDA-graph refinement
  loop fills the GPU alike), the grid's GPU's measurement first, else another GPU's (named). A k = 1 row measured
  first in its call ran on a GPU just started (idle clocks, lazy CUDA set-up: 2.9x slower than the same row later
  on the H200) and is no single-run rate: a method without a warm k = 1 row falls back on the **assumed** rule:
  min(k, C), C the reference model's baseline images/s compiled with ``train.compile=reduce-overhead`` ÷ eager,
  from one bench file (packed eager runs fill each other's launch gaps, but together cannot outrun one launch-free
  run); C is 1 on a table without compiled rows, and runs compiled already gain nothing.

Nothing here imports torch at module level (resolving a run's config does).
"""
from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from icp.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
TABLE = "throughput.csv"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
COLUMNS = ("gpu", "model", "method", "data", "config", "batch", "img_per_s", "estimated", "source")
BENCH_COLUMNS = ("model", "method", "data", "device", "batch", "step_ms", "img_per_s", "ratio")  # header-less files
EAGER = "eager"  # train.compile=none, fp32: how the paper grid trains
REFERENCE_MODEL = "resnet20"
# Method options that change what a step costs (others, e.g. step_size, reduction, target_mode, do not)
COST_OPTIONS = ("steps", "reuse_clean_grad", "cuda_graph", "warm_start", "authors_eval_ce")
# (bench output under results/reference, its section or None for the whole file, configuration), first wins when
# two give the same model, method, data and configuration. Left out: bench_fp32.txt, bench_compile_ro.txt and
# bench_compile_ro_fmnist.txt (single-round predecessors of bench_rounds.txt and icp_bench_compile_ro.txt), and
# the bf16 / channels_last / compile=default tables (no grid trains so).
SOURCES: dict[str, list[tuple[str, Optional[str], str]]] = {
    "h100": [
        ("h100/bench_all_methods_fp32.txt", None, EAGER),
        ("h100/bench_rounds.txt", "train.compile=none", EAGER),
        ("h100/bench_rounds.txt", "train.compile=reduce-overhead", "compile=reduce-overhead"),
        ("h100/bench_rounds.txt", "--models resnet56 preact_resnet18 --steps 100, train.compile=reduce-overhead",
         "compile=reduce-overhead"),
        ("h100/icp_bench_compile_ro.txt", None, "compile=reduce-overhead"),
    ],
    "cpu": [("cpu_bench_all_methods.txt", None, EAGER)],
}
# Packing measured on a lent GPU: (the packing output of tools/gpu_lease.sh, which call of the GPU made it); the
# first row of each call ran on a just-started GPU (see the docstring). The H200's first call measured icp-adam's
# k = 1 only (its k = 2 ran out of time): its throughput.log holds it.
PACKING_SOURCES: dict[str, list[tuple[str, str]]] = {
    "h200": [("h200/fmnist-5ep/throughput.log", "call 1"), ("h200/lease2/throughput.log", "call 2")],
}
PACKING_TABLE = "packing.csv"
PACKING_COLUMNS = ("gpu", "model", "method", "data", "config", "k", "aggregate_img_per_s", "cold", "source")
ICP_METHODS = ("icp", "icp-sgd", "icp-adam", "icp-ademamix", "ifgsm")  # CUDA-graph refinement: packed alike


# Training-split sizes (the official splits; CUB-200-2011's as icp.data.prepare_cub links them)
TRAIN_IMAGES = {"fashion-mnist": 60000, "cifar10": 50000, "cifar100": 50000, "cub": 5994}
CLASSES = {"cub": 200}  # the others: icp.data.INFO
DATA_AREA = {"fashion-mnist": 28 * 28, "cifar10": 32 * 32, "cifar100": 32 * 32}  # bench rows' image area (H·W)


# ------------------------------------------------------------------------------------------ bench tables
def parse_bench(text: str) -> list[tuple[Optional[str], list[dict]]]:
    """An ``icp bench`` output (or several, as ``== title`` sections) as [(section title or None, rows)]. A table
    without its header line is read with :data:`BENCH_COLUMNS`; ``#`` lines are comments."""
    sections: list[tuple[Optional[str], list[dict]]] = [(None, [])]
    columns = BENCH_COLUMNS
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("=="):
            sections.append((line.strip("= ").strip(), []))
            columns = BENCH_COLUMNS
            continue
        tokens = line.split()
        if tokens[0] == "model":
            columns = tuple("ratio" if t == "ratio_to_ce" else t for t in tokens)
            continue
        if len(tokens) == len(columns):
            sections[-1][1].append(dict(zip(columns, tokens)))
    return [(title, rows) for title, rows in sections if rows]


def build_table(gpu: str) -> list[dict]:
    """The rows of ``results/reference/<gpu>/throughput.csv`` from the bench outputs of :data:`SOURCES`, plus a
    baseline row (``estimated``) for each model measured only in another configuration (rule 4)."""
    out: list[dict] = []
    seen = set()
    for path, section, cfg in SOURCES[gpu]:
        found = [rows for title, rows in parse_bench((REFERENCE / path).read_text()) if title == section]
        if not found:
            raise ValueError(f"{path}: no section {section!r}")
        for r in found[0]:
            key = (r["model"], r["method"], r["data"], cfg)
            if key not in seen:
                seen.add(key)
                out.append({"gpu": gpu, "model": r["model"], "method": r["method"], "data": r["data"], "config": cfg,
                            "batch": int(r["batch"]), "img_per_s": float(r["img_per_s"]), "estimated": 0,
                            "source": path + (f" [{section}]" if section else "")})
    for r in list(out):
        if r["config"] == EAGER or r["method"] != "ce" or (r["model"], "ce", r["data"], EAGER) in seen:
            continue
        file = r["source"].split(" [")[0]
        ref = {c: x for x in out for c in (EAGER, r["config"]) if x["config"] == c and x["model"] == REFERENCE_MODEL
               and x["method"] == "ce" and x["data"] == r["data"] and x["source"].split(" [")[0] == file}
        if len(ref) == 2:
            factor = ref[EAGER]["img_per_s"] / ref[r["config"]]["img_per_s"]
            seen.add((r["model"], "ce", r["data"], EAGER))
            out.append({**r, "config": EAGER, "img_per_s": round(r["img_per_s"] * factor, 1), "estimated": 1,
                        "source": f"{r['source']} x {REFERENCE_MODEL} ce {EAGER}/{r['config']} "
                                  f"({ref[EAGER]['img_per_s']:g}/{ref[r['config']]['img_per_s']:g})"})
    return out


def parse_packing(text: str, gpu: str, source: str) -> list[dict]:
    """The k rows of a ``tools/gpu_reference.py packing`` log (``packing: <method> steps of <run id> (<recipe>)
    [<set>], ...`` then ``  k=<k>: <img/s> img/s`` lines); the first k row of the file is ``cold``."""
    import re

    rows, head = [], None
    for line in text.splitlines():
        m = re.match(r"packing: (\S+) steps of (\S+) \((\S+)\)\s*(.*?), [\d.]+ s per k", line)
        if m:
            compiled = re.search(r"train\.compile=(\S+)", m[4])
            head = {"method": m[1], "model": m[2].split("/")[1], "data": m[2].split("/")[0],
                    "config": f"compile={compiled[1]}" if compiled and compiled[1] != "none" else EAGER}
            continue
        m = re.match(r"\s+k=(\d+): ([\d.]+) img/s", line)
        if m and head:
            rows.append({"gpu": gpu, **head, "k": int(m[1]), "aggregate_img_per_s": float(m[2]),
                         "cold": int(not rows), "source": source})
    return rows


def build_packing(gpu: str) -> list[dict]:
    out = []
    for path, call in PACKING_SOURCES[gpu]:
        out += parse_packing((REFERENCE / path).read_text(), gpu, f"{path} ({call})")
    return out


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


def table_text(rows: list[dict], columns: tuple = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_tables() -> list[Path]:
    paths = []
    for gpu in SOURCES:
        path = REFERENCE / gpu / TABLE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_text(build_table(gpu)))
        paths.append(path)
    for gpu in PACKING_SOURCES:
        path = REFERENCE / gpu / PACKING_TABLE
        path.write_text(table_text(build_packing(gpu), PACKING_COLUMNS))
        paths.append(path)
    return paths


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


# ------------------------------------------------------------------------------------------ runs
def default_runs_per_gpu(profile: Path = PROFILE) -> int:
    try:
        return int(yaml.safe_load(profile.read_text())["default-resources"].get("runs_per_gpu", 1))
    except (OSError, KeyError, TypeError, ValueError):
        return 1


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
    cost_options: tuple  # ((key, value), ...) of COST_OPTIONS
    config: str
    batch: int
    area: int
    per_epoch: int  # images
    steps_per_epoch: int
    epochs: int
    warmup_epochs: int = 0

    @property
    def images(self) -> int:
        return self.per_epoch * self.epochs


_PLANS: dict = {}


def plan(run) -> Plan:
    """A grid run's :class:`Plan`, from its resolved config (cached across seeds)."""
    from icp import config, data, grid

    key = (run.recipe, tuple(o for o in run.overrides
                             if not o.startswith(("train.seed=", "method.options.teacher=", "train.fid_features="))))
    if key not in _PLANS:
        cfg = config.resolve(grid._recipe_tree(run.recipe), list(run.overrides))
        d = cfg.data
        if d.dataset not in TRAIN_IMAGES:
            raise ConfigError(f"run {run.run_id}: the cost needs the training-set size of '{d.dataset}' "
                              f"(known: {', '.join(TRAIN_IMAGES)})")
        n = min(TRAIN_IMAGES[d.dataset], d.train_subset or TRAIN_IMAGES[d.dataset])
        n -= round(d.val_fraction * n)
        if cfg.scenario.kind == "fewshot":
            n = cfg.scenario.shots * (CLASSES.get(d.dataset) or data.INFO[d.dataset].num_classes)
        b = cfg.train.batch_size
        steps = n // b if d.drop_last else -(-n // b)
        per_epoch = min(n, steps * b)
        opts = cfg.method.options
        k = opts.get("steps") if cfg.method.name in grid.ICP_FAMILY else None
        warmup = int(opts.get("warmup", 0) * cfg.train.epochs) if k else 0
        _PLANS[key] = Plan(cfg.model.name, cfg.method.name, tuple((o, opts[o]) for o in COST_OPTIONS if o in opts),
                           EAGER if cfg.train.compile == "none" else f"compile={cfg.train.compile}", b,
                           data.input_size(d.dataset, d.image_size) ** 2, per_epoch, steps, cfg.train.epochs, warmup)
    return _PLANS[key]


# ------------------------------------------------------------------------------------------ images/s
def _method_options(spec: str) -> tuple[str, dict]:
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


def _generative(model: str) -> bool:
    from icp import grid

    return grid._generative(model)


def _baseline(model: str) -> str:
    return "vae" if _generative(model) else "ce"


@dataclass
class Speed:
    img_per_s: float
    basis: str
    estimated: bool


@dataclass
class Throughput:
    """Images/s of a run's step on one GPU, from its bench table and the rules of the module's docstring."""

    rows: list[dict]
    _cache: dict = field(default_factory=dict)
    gpu: str = ""
    packing: dict = field(default_factory=dict)  # {gpu: measured packing rows} (read_packing)

    def _effective(self, method: str, options: dict) -> tuple:
        from icp import grid

        full = {**grid._option_defaults(method), **options}
        return tuple((k, full[k]) for k in COST_OPTIONS if k in full)

    def _rows(self, model: str, config: str) -> list[dict]:
        out = [r for r in self.rows if r["model"] == model and r["config"] == config]
        for r in out:
            r.setdefault("_name", _method_options(r["method"]))
        return out

    def speed(self, p: Plan, baseline_only: bool = False) -> Speed:
        key = (p.model, p.method, p.cost_options, p.config, p.batch, p.area, baseline_only)
        if key not in self._cache:
            self._cache[key] = self._speed(p, baseline_only)
        return self._cache[key]

    def _speed(self, p: Plan, baseline_only: bool) -> Speed:
        config = p.config if any(r["config"] == p.config for r in self.rows) else EAGER  # rule 5
        note = [] if config == p.config else [f"{p.config} not measured: {EAGER} rows"]
        method = _baseline(p.model) if baseline_only else p.method
        cost = dict(p.cost_options) if not baseline_only else {}
        rows = self._rows(p.model, config)
        want = self._effective(method, cost)
        for r in rows:  # a measured row of this method at this image size
            name, opts = r["_name"]
            if name == method and _area(r["data"]) == p.area and self._effective(name, opts) == want:
                v, scaled = self._scaled(r, p)
                return Speed(v, "; ".join([_label(r), *note, *(["rule 1"] if scaled else [])]),
                             r["estimated"] or scaled or bool(note))
        base = [r for r in rows if r["_name"] == (_baseline(p.model), {})]
        if not base:  # rule 4
            base = [r for r in self._rows(REFERENCE_MODEL, config) if r["_name"] == ("ce", {})]
            note.append(f"{REFERENCE_MODEL} ce (rule 4)")
        if not base:
            raise ConfigError(f"bench table: no {REFERENCE_MODEL} ce row for {config} to estimate {p.model}")
        r = min(base, key=lambda r: (abs(math.log(_area(r["data"]) / p.area)), -_area(r["data"])))
        v, scaled = self._scaled(r, p)
        note = [_label(r), *note, *(["rule 1"] if scaled else [])]
        ratio, how = (1.0, None) if method == _baseline(p.model) else self._ratio(p.model, method, cost, config)
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
            base = [r for r in rows if r["_name"] == (_baseline(model), {})]
            if base:
                out.append((base[0]["img_per_s"], rows))
        return out

    def _ratio(self, model: str, method: str, cost: dict, config: str) -> tuple[float, str]:
        """Rules 2 and 3: the method's step-time ratio to the baseline, and what it rests on."""
        from icp import grid

        want = self._effective(method, cost)
        icp = method in grid.ICP_FAMILY
        k = dict(want).get("steps", 0) if icp else None
        eval_ce = 1.0 if icp and dict(want).get("authors_eval_ce") else 0.0  # + an eval-mode forward + backward
        if icp and k == 0:
            return 1.0 + eval_ce, "K = 0: a ce step" + (" + authors_eval_ce's (rule 3)" if eval_ce else "")
        for m in ([model] if icp else [model, REFERENCE_MODEL]):
            for base, rows in self._groups(m, config):
                for r in rows:
                    name, opts = r["_name"]
                    if name == method and self._effective(name, opts) == want:
                        rule = "rule 2" if m == model else "rule 3"
                        return base / r["img_per_s"], f"ratio {base / r['img_per_s']:.2f} ({rule}, {_label(r)})"
            if icp:  # rule 2: ICP at another K
                best = None
                for base, rows in self._groups(m, config):
                    for r in rows:
                        name, opts = r["_name"]
                        eff = dict(self._effective(name, opts))
                        other = {**eff, "steps": k}
                        if name == method and tuple(other.items()) == want and eff.get("steps"):
                            if best is None or abs(eff["steps"] - k) < abs(best[0] - k):
                                best = (eff["steps"], base / r["img_per_s"], _label(r))
                if best:
                    kk, ratio, src = best
                    scaled = 1 + (ratio - 1) * (2 * k + 1) / (2 * kk + 1)
                    return scaled, f"ratio {scaled:.2f}: K = {kk}'s {ratio:.2f} scaled to K = {k} (rule 2, {src})"
        if icp:  # rule 3
            if eval_ce:
                return (2 * k + 4) / 3 + 1, f"ratio {(2 * k + 4) / 3 + 1:.2f}: FLOPs (2K + 4)/3 + 1 (rule 3)"
            return (2 * k + 4) / 3, f"ratio {(2 * k + 4) / 3:.2f}: FLOPs (2K + 4)/3 (rule 3)"
        return 1.0, f"{method} unmeasured: as ce"

    def pack_speedup(self, method: str, k: int, model: str, cap: float, cap_basis: str) -> tuple[float, str]:
        """The packing speed-up of an eager run of ``method`` at k runs per GPU: measured (a warm k = 1 row and
        the best aggregate at k' <= k of the method, or of the measured ICP method for an ICP variant), else the
        assumed min(k, C) (the module's docstring)."""
        if k <= 1:
            return 1.0, "one run per GPU"
        own = [method, *(m for m in ICP_METHODS if method in ICP_METHODS and m != method)]
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


# ------------------------------------------------------------------------------------------ the estimate
@dataclass
class RunCost:
    run_id: str
    studies: tuple
    images: int
    gpu_hours: float
    estimated: bool
    speed: Speed
    plan: Plan
    speedup: float = 1.0  # the packing speed-up its GPU-hours are divided by
    pack_basis: str = ""


@dataclass
class TunedCost:
    """One tuned cell and method of a study: its trials' costs and its final runs' (the chosen trial's, or, before
    a selection, those of the priciest trial: an upper bound)."""

    study: str
    name: str  # <dataset>/<model>/<scenario>/<method>
    trials: list[RunCost]
    finals: list[RunCost]  # one per seed of the block
    trial: int  # the trial whose final runs are costed
    chosen: bool  # True: the selection chose ``trial`` (its finals are runs of the grid); False: the upper bound


@dataclass
class Estimate:
    gpu: str
    table: str
    runs_per_gpu: int
    cap: float
    cap_basis: str
    runs: list[RunCost]
    studies: dict  # study -> run ids (of the runs estimated)
    tuned: list[TunedCost] = field(default_factory=list)  # the tuned cells of the studies estimated

    @property
    def bounds(self) -> list[RunCost]:
        """The final runs of the tuned cells no selection has chosen yet, as their upper bound: not runs of the
        grid yet, counted in their study's row and the total (once where two studies tune the same cell)."""
        return list({r.run_id: r for t in self.tuned if not t.chosen for r in t.finals}.values())


def _run_cost(run, tp: "Throughput", runs_per_gpu: int, cap: tuple[float, str],
              studies: Optional[tuple] = None) -> RunCost:
    p = plan(run)
    s = tp.speed(p)
    # a step costs batch / img_per_s, full or the epoch's last partial batch alike (rule 1)
    seconds = (p.epochs - p.warmup_epochs) * p.steps_per_epoch * p.batch / s.img_per_s
    estimated = s.estimated
    if p.warmup_epochs:
        b = tp.speed(p, baseline_only=True)
        seconds += p.warmup_epochs * p.steps_per_epoch * p.batch / b.img_per_s
        estimated = estimated or b.estimated
    speedup, basis = tp.pack_speedup(p.method, runs_per_gpu, p.model, *cap) if p.config == EAGER else (1.0, "compiled")
    return RunCost(run.run_id, run.studies if studies is None else studies, p.images, seconds / 3600 / speedup,
                   estimated, s, p, speedup, basis)


def _tuned_cost(g, cell, costs: dict, cost_of) -> TunedCost:
    """A tuned cell's trials (runs of the grid, in ``costs``) and final runs: the chosen trial's where the grid
    holds them (a selection chose it), else those of the trial whose finals cost the most GPU-hours (the first of
    equals)."""
    trials = [costs[rid] if rid in costs else cost_of(g[rid]) for rid in cell.trials]
    for t, ids in enumerate(cell.finals):
        if ids and all(rid in g.runs for rid in ids):
            return TunedCost(cell.study, cell.name, trials, [costs.get(rid) or cost_of(g.runs[rid]) for rid in ids],
                             t, True)
    options = [[cost_of(r, (cell.study,)) for r in g.finals(cell, t)] for t in range(len(cell.finals))]
    hours = [sum(r.gpu_hours for r in runs) for runs in options]
    t = max(range(len(options)), key=lambda i: (hours[i], -i))
    return TunedCost(cell.study, cell.name, trials, options[t], t, False)


def estimate(g, gpu: str = "h100", runs_per_gpu: Optional[int] = None, study: Optional[str] = None,
             reference: Path = REFERENCE) -> Estimate:
    """The cost of the runs of a :class:`icp.grid.Grid` (one study's, or all) on ``gpu``."""
    if runs_per_gpu is None:
        runs_per_gpu = default_runs_per_gpu()
    if runs_per_gpu < 1:
        raise ConfigError(f"--runs-per-gpu: expected an integer >= 1, got {runs_per_gpu}")
    tp = Throughput(read_table(gpu, reference), gpu=gpu, packing=read_packing(reference))
    cap, cap_basis = tp.pack_cap()
    cost_of = lambda run, studies=None: _run_cost(run, tp, runs_per_gpu, (cap, cap_basis), studies)  # noqa: E731
    out = [cost_of(run) for run in g.select(study)]
    studies = {s: ids for s, ids in g.studies.items() if study in (None, s)}
    costs = {r.run_id: r for r in out}
    tuned = [_tuned_cost(g, cell, costs, cost_of) for cell in getattr(g, "tuned", ()) if cell.study in studies]
    return Estimate(gpu, str(reference / gpu / TABLE), runs_per_gpu, cap, cap_basis, out, studies, tuned)


def render(est: Estimate, source: str = "grid", detail: bool = False) -> str:
    unit = "CPU-hours" if est.gpu == "cpu" else "GPU-hours"
    by_id = {r.run_id: r for r in est.runs}
    table = est.table.removeprefix(str(REPO) + "/")
    lines = [f"Estimated cost of {source} on {est.gpu} (images/s from {table}), {est.runs_per_gpu} run(s) per GPU",
             f"{'study':12s} {'runs':>6s} {'images':>10s} {unit:>10s} {'estimated':>10s}"]

    def row(name: str, runs: list[RunCost], bound: bool = False) -> str:
        hours = sum(r.gpu_hours for r in runs)
        est_h = sum(r.gpu_hours for r in runs if r.estimated)
        share = f"{100 * est_h / hours:.0f} %" if hours else "-"
        le = "<=" if bound else ""
        return (f"{name:12s} {len(runs):6d} {le + f'{sum(r.images for r in runs) / 1e9:.2f}G':>10s} "
                f"{le + f'{hours:.1f}':>10s} {share:>10s}")

    for s, ids in est.studies.items():
        cells = [t for t in est.tuned if t.study == s]
        bounds = [r for t in cells if not t.chosen for r in t.finals]
        lines.append(row(s, [by_id[i] for i in ids if i in by_id] + bounds)
                     + ("   (its final runs as their upper bound: below)" if bounds else ""))
        if cells:
            trials = list({r.run_id: r for t in cells for r in t.trials}.values())
            finals = [r for t in cells for r in t.finals]
            per = lambda counts: "/".join(map(str, sorted(set(counts))))  # noqa: E731
            lines.append(row("  trials", trials) + f"   ({per(len(t.trials) for t in cells)} trials x {len(cells)} "
                         "tuned methods and cells, at one seed)")
            chosen = sum(t.chosen for t in cells)
            how = ("the chosen trial's configuration" if not bounds else
                   "an upper bound, the priciest trial's configuration" + (f" ({chosen} of {len(cells)} chosen)"
                                                                         if chosen else ""))
            lines.append(row("  finals", finals, bound=bool(bounds))
                         + f"   ({per(len(t.finals) for t in cells)} seeds x {len(cells)}: {how} at each seed)")
    note = "; tuned final runs as their upper bound" if est.bounds else ""
    lines.append(row("total", est.runs + est.bounds)
                 + f"   (distinct runs: a run in several studies counted once{note})")
    if est.runs:
        longest = max(est.runs, key=lambda r: r.gpu_hours)
        lines.append(f"longest run: {longest.gpu_hours:.1f} {unit} ({longest.run_id})")
    bases: dict = {}
    for r in est.runs + est.bounds:
        if r.pack_basis:
            bases.setdefault((round(r.speedup, 2), r.pack_basis), []).append(r)
    lines += [
        "images: training images per epoch x epochs as the engine feeds them (few-shot: shots x classes; the grid's "
        "optimizer_steps and compute-matched epochs; ICP's warm-up epochs at ce speed); evaluation, FID and "
        "start-up not counted",
        f"{unit} per run: images / the table's images/s for the run's model, method, configuration and size; "
        "'estimated': the share resting on rules for what the table does not measure (icp/cost.py; --detail "
        "lists the images/s used)",
        f"packing: k = {est.runs_per_gpu} run(s) per GPU; each eager run's {unit} / its packing speed-up:",
        *[f"  x{sp:.2f} for {len(rs)} run(s): {basis}" for (sp, basis), rs in sorted(bases.items(), key=lambda kv: -len(kv[1]))],
    ]
    if detail:
        used: dict = {}
        for r in est.runs + est.bounds:
            p = r.plan
            key = (p.model, p.area, p.batch, p.config, p.method, p.cost_options)
            u = used.setdefault(key, [r.speed, 0, 0.0])
            u[1] += 1
            u[2] += r.gpu_hours
        lines.append(f"{'model':16s} {'HxW':>5s} {'batch':>5s} {'method':28s} {'img/s':>9s} {'runs':>5s} "
                     f"{unit:>9s}  basis")
        for (model, area, batch, config, method, opts), (s, n, h) in sorted(used.items(), key=lambda kv: -kv[1][2]):
            shown = method + "".join(f":{k}={v}" for k, v in opts if k == "steps")
            side = int(round(math.sqrt(area)))
            lines.append(f"{model:16s} {side:5d} {batch:5d} {shown:28s} {s.img_per_s:9.0f} {n:5d} {h:9.1f}  "
                         f"{'(est.) ' if s.estimated else ''}{s.basis}{'' if config == EAGER else ' ' + config}")
    return "\n".join(lines)


def report(grid_file: str, gpu: str = "h100", runs_per_gpu: Optional[int] = None, study: Optional[str] = None,
           detail: bool = False) -> str:
    """``icp grid --cost``: the rendered estimate of a grid file (an unknown GPU fails before the expansion)."""
    from icp import grid

    read_table(gpu)
    return render(estimate(grid.load_expand(grid_file), gpu, runs_per_gpu, study), grid_file, detail)


if __name__ == "__main__":  # rewrite the committed tables from the bench outputs
    for path in write_tables():
        print(path.relative_to(REPO), file=sys.stderr)
