"""``icp grid --cost``: the GPU-hours a grid will take, before it is launched.

For every run of the grid: GPU-hours = training images ÷ images/s ÷ 3600 ÷ the packing speed-up, where

* **images** = training images per epoch × epochs, as the engine feeds them. Both come from the run's resolved
  config (its recipe and the grid's ``--set`` items, so the few-shot ``optimizer_steps`` budget and the
  compute-matched control's stretched epochs are those the grid gives it): the training split of the dataset
  (:data:`TRAIN_IMAGES`), or ``data.train_subset``, less ``data.val_fraction``; a few-shot run's shots × classes;
  ``data.drop_last`` drops the partial batch. ICP's warm-up epochs (``int(warmup · epochs)``, plain CE: its
  Options' :meth:`~icp.methods.options.Cost.baseline_epochs`) are counted at the baseline's speed. Not counted:
  evaluation passes, FID, start-up, requeues, and data loading beyond what the bench rows include (the authors'
  study's RandAugment is per-image CPU work).
* **images/s** come from a committed bench table of the GPU, ``results/reference/<gpu>/throughput.csv``
  (:func:`icp.bench_tables.build_table` writes it from the ``icp bench`` outputs listed in
  :data:`icp.bench_tables.SOURCES`; ``python -m icp.bench_tables`` rewrites it; numbers are never typed by hand;
  :mod:`icp.throughput` reads it and applies the rules below). A run uses the row of its model, method (with the
  options that change a step's cost, which its Options declare: :attr:`icp.methods.options.Cost.cost_options`),
  configuration (``eager``: ``train.compile=none``, fp32, as the paper grid trains; or ``compile=<mode>``) and
  image size. Where the table has no such row, the estimate follows these rules, and the output counts the
  GPU-hours that rest on them as *estimated*:

  1. **Another batch or image size.** A step costs the measured step time, or more in proportion to batch ×
     image area (H·W) when the run's batch holds more pixels: a GPU step of these small models is launch-bound, so
     a smaller batch or image is not assumed to be faster per step (the authors' batch 32 trains at a quarter of
     the images/s of batch 128, and an epoch's last, partial batch costs a full step).
  2. **Another method than the baseline** (``ce``; ``vae`` for the VAE): the baseline's images/s at the run's size
     ÷ the method's step-time ratio to the baseline, measured on the same model in one bench process. A method
     at another count of its passes than measured (its Options' ``pass_count``: ICP's K): its extra cost over the
     baseline scaled by the ratio of the two steps' extra FLOPs over a ce step (the FLOP ratio of rule 3 at K and
     at the measured K': (2K + 1)/(2K' + 1) as declared); K = 0 (the α-only control) costs its FLOPs, a ce step.
  3. **A model without rows for the method** (every method, ICP's variants included): the method's **FLOP
     ratio** to the baseline, the one every method's Options declares and ``python -m icp.flops`` counts
     (:func:`icp.methods.options.step_flops` of the run's options and model, past any warm-up: counted where
     ``results/reference/flops.csv`` counts the method on the model and differs from the declaration by more than
     1 %, else declared; ICP (2K + 4)/3, + 1 with ``authors_eval_ce``). A step costs its FLOPs on a compute-bound
     model (what the compute-matched control assumes); on a launch-bound one (ResNet-20 on a GPU) the measured
     rows of rule 2 cost more. No method is costed as ``ce`` unless its FLOPs are a ce step's.
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
  (``results/reference/<gpu>/packing.csv``, :data:`icp.bench_tables.PACKING_SOURCES`: the aggregate images/s of k
  runs at once of one method, ``tools/gpu_lease.sh``): the speed-up at k is the best aggregate at any measured
  k' <= k over the method's single-run rate, for the method measured, or a method of its Options' ``family`` (an
  ICP variant: the ICP method measured, a CUDA-graph refinement loop fills the GPU alike), the grid's GPU's
  measurement first, else another GPU's (named). A k = 1 row measured first in its call ran on a GPU just started
  (idle clocks, lazy CUDA set-up: 2.9x slower than the same row later on the H200) and is no single-run rate: a
  method without a warm k = 1 row falls back on the **assumed** rule: min(k, C), C the reference model's baseline
  images/s compiled with ``train.compile=reduce-overhead`` ÷ eager, from one bench file (packed eager runs fill
  each other's launch gaps, but together cannot outrun one launch-free run); C is 1 on a table without compiled
  rows, and runs compiled already gain nothing.

Nothing here imports torch at module level (resolving a run's config does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from icp import run_config
from icp.methods.options import declared_options
from icp.schema import ConfigError
from icp.throughput import (EAGER, REFERENCE, REPO, TABLE, Plan, Speed, Throughput, declared, flop_ratio,
                            read_packing, read_table)

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
# Training-split sizes (the official splits; CUB-200-2011's as icp.data.prepare_cub links them)
TRAIN_IMAGES = {"fashion-mnist": 60000, "cifar10": 50000, "cifar100": 50000, "cub": 5994}
CLASSES = {"cub": 200}  # the others: icp.data.INFO


# ------------------------------------------------------------------------------------------ runs
def default_runs_per_gpu(profile: Path = PROFILE) -> int:
    try:
        return int(yaml.safe_load(profile.read_text())["default-resources"].get("runs_per_gpu", 1))
    except (OSError, KeyError, TypeError, ValueError):
        return 1


_PLANS: dict = {}


def plan(run) -> Plan:
    """A grid run's :class:`Plan`, from its resolved config (cached across seeds)."""
    from icp import data

    key = (run.recipe, tuple(o for o in run.overrides
                             if not o.startswith(("train.seed=", "method.options.teacher=", "train.fid_features="))))
    if key not in _PLANS:
        cfg = run_config.resolve(run.recipe, run.overrides)
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
        warmup = declared_options(cfg.method.name, opts).baseline_epochs(cfg.train.epochs)
        keys = declared(cfg.method.name, "cost_options", ())  # the options its Options say change a step's time
        _PLANS[key] = Plan(cfg.model.name, cfg.method.name, tuple((o, opts[o]) for o in keys if o in opts),
                           flop_ratio(cfg.method.name, opts, cfg.train.epochs, cfg.model.name),
                           EAGER if cfg.train.compile == "none" else f"compile={cfg.train.compile}", b,
                           data.input_size(d.dataset, d.image_size) ** 2, per_epoch, steps, cfg.train.epochs, warmup,
                           dict(opts))
    return _PLANS[key]


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


def hours_text(hours: float) -> str:
    """Hours with one decimal, and two significant digits below 0.1 (a laptop grid's CPU-hours are not 0.0)."""
    return f"{hours:.1f}" if hours >= 0.1 or hours == 0 else f"{hours:.2g}"


def images_text(images: float) -> str:
    """Training images in billions (G) with two decimals, in millions (M) below 0.01 G."""
    return f"{images / 1e9:.2f}G" if images >= 1e7 or images == 0 else f"{images / 1e6:.2f}M"


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
        return (f"{name:12s} {len(runs):6d} {le + images_text(sum(r.images for r in runs)):>10s} "
                f"{le + hours_text(hours):>10s} {share:>10s}")

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
        lines.append(f"longest run: {hours_text(longest.gpu_hours)} {unit} ({longest.run_id})")
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
            count = declared(method, "pass_count")  # ICP's K
            shown = method + "".join(f":{k}={v}" for k, v in opts if count and k == count[0])
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
